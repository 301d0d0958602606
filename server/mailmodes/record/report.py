"""The report card: for one client scope (a pytest test's own server, an audit run, or a source
address), every scenario it met, per protocol, with its outcome and the sessions behind it.

A row's outcome comes from its sessions' judgements (expectations.py): failed if any session
failed (a client that fell back once has failed, however often it refused), else passed if any
passed, else inconclusive. Rows can be asked for that no session reached (`expected`): they are
inconclusive, "no session". Our own probes and sessions still open are never on a card.

Three renderers: JSON (the API's shape), text (the CLI's), JUnit XML (CI systems show one
testcase per scenario, a testsuite per protocol; a failure's message is the reason, an
inconclusive row is skipped).
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mailmodes.protocols import PROTOCOLS
from mailmodes.record.expectations import EXPECTATIONS, OUTCOMES, Outcome, evaluate, scenario_key

if TYPE_CHECKING:
    from mailmodes.record.journal import SessionRecord

FORMATS = ("text", "json", "junit")
# Rows in a fixed order: protocol, then the catalogue's order (known-good modes last).
ORDER = {key: index for index, key in enumerate(EXPECTATIONS)}
NO_SESSION = "no session reached this scenario"
# XML 1.0 allows no C0 control character but tab, LF and CR: a reason quoting a client's bytes
# must not make the document unreadable.
XML_INVALID = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml(text: str) -> str:
    return XML_INVALID.sub("\N{REPLACEMENT CHARACTER}", text)


@dataclass(frozen=True)
class SessionResult:
    id: int
    listener: str
    tls_mode: str
    outcome: Outcome
    reason: str
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "listener": self.listener, "tls_mode": self.tls_mode, "outcome": self.outcome,
                "reason": self.reason}


@dataclass
class Row:
    protocol: str
    scenario: str
    sessions: list[SessionResult] = field(default_factory=list)

    @property
    def deciding(self) -> SessionResult | None:
        """The session whose outcome is the row's: the first failed, else the first passed."""
        for wanted in ("failed", "passed", "inconclusive"):
            for result in self.sessions:
                if result.outcome == wanted:
                    return result
        return None

    @property
    def outcome(self) -> Outcome:
        deciding = self.deciding
        return "inconclusive" if deciding is None else deciding.outcome

    @property
    def reason(self) -> str:
        deciding = self.deciding
        return NO_SESSION if deciding is None else deciding.reason

    @property
    def correct_client(self) -> str:
        expectation = EXPECTATIONS.get(self.scenario)
        return expectation.correct_client if expectation is not None else ""

    def as_dict(self) -> dict[str, Any]:
        deciding = self.deciding
        return {
            "protocol": self.protocol, "scenario": self.scenario, "outcome": self.outcome, "reason": self.reason,
            "correct_client": self.correct_client,
            "session": deciding.id if deciding is not None else None,
            "sessions": [result.as_dict() for result in self.sessions],
        }


@dataclass
class ReportCard:
    scope: dict[str, Any]
    rows: list[Row]

    def counts(self) -> dict[str, int]:
        return {outcome: sum(row.outcome == outcome for row in self.rows) for outcome in OUTCOMES}

    def row(self, scenario: str, protocol: str) -> Row:
        for row in self.rows:
            if row.scenario == scenario and row.protocol == protocol:
                return row
        raise KeyError(f"no row for {scenario} on {protocol}; rows: "
                       + ", ".join(f"{row.protocol}/{row.scenario}" for row in self.rows))

    def failed(self) -> list[Row]:
        return [row for row in self.rows if row.outcome == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "counts": self.counts(), "sessions": sum(len(r.sessions) for r in self.rows),
                "rows": [row.as_dict() for row in self.rows]}


def build(records: Iterable[SessionRecord], scope: Mapping[str, Any] | None = None,
          expected: Iterable[tuple[str, str]] = ()) -> ReportCard:
    """The card of these sessions (probes and open ones left out); `expected`: (protocol,
    scenario) rows to show even if no session reached them."""
    rows: dict[tuple[str, str], Row] = {}
    for protocol, scenario in expected:
        rows.setdefault((protocol, scenario), Row(protocol, scenario))
    for record in sorted(records, key=lambda r: r.id):
        if record.probe or record.ended is None:
            continue
        key = (record.protocol, scenario_key(record))
        judgement = evaluate(record)
        rows.setdefault(key, Row(*key)).sessions.append(SessionResult(
            record.id, record.listener, record.tls_mode, judgement.outcome, judgement.reason,
            round(record.ended - record.started, 3)))
    ordered = sorted(rows.values(), key=lambda row: (_protocol_index(row.protocol), ORDER.get(row.scenario, len(ORDER)),
                                                     row.scenario))
    return ReportCard(dict(scope or {}), ordered)


def _protocol_index(protocol: str) -> int:
    return PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS)


# --- renderers: each takes the JSON shape, so the CLI renders what the API sent -------------------


def render(card: Mapping[str, Any], format: str) -> str:
    if format == "json":
        return json.dumps(card, indent=2) + "\n"
    if format == "junit":
        return render_junit(card)
    return render_text(card)


def _scope_words(scope: Mapping[str, Any]) -> str:
    words = [f"{key} {value}" for key, value in scope.items() if value not in (None, "")]
    return ", ".join(words) or "every client"


def render_text(card: Mapping[str, Any]) -> str:
    rows = card["rows"]
    lines = [f"Report card: {_scope_words(card['scope'])} ({card['sessions']} sessions)"]
    if not rows:
        return "\n".join([*lines, "no sessions in this scope"]) + "\n"
    width = max(len(row["scenario"]) for row in rows)
    for row in rows:
        sessions = ",".join(f"#{result['id']}" for result in row["sessions"]) or "-"
        lines.append(f"  {row['protocol']:<5} {row['scenario']:<{width}}  {row['outcome'].upper():<12} "
                     f"{sessions:<10} {row['reason']}")
    counts = card["counts"]
    lines.append(", ".join(f"{counts[outcome]} {outcome}" for outcome in OUTCOMES))
    return "\n".join(lines) + "\n"


def render_junit(card: Mapping[str, Any]) -> str:
    """JUnit XML (the Ant/Jenkins schema): a testsuite per protocol, a testcase per scenario."""
    rows = card["rows"]
    root = ET.Element("testsuites", name=_xml(f"mailmodes report card: {_scope_words(card['scope'])}"))
    totals = dict.fromkeys(("tests", "failures", "skipped"), 0)
    for protocol in dict.fromkeys(row["protocol"] for row in rows):
        chosen = [row for row in rows if row["protocol"] == protocol]
        counts = {"tests": len(chosen), "failures": sum(r["outcome"] == "failed" for r in chosen),
                  "skipped": sum(r["outcome"] == "inconclusive" for r in chosen)}
        suite = ET.SubElement(root, "testsuite", {"name": f"mailmodes.{protocol}", "errors": "0",
                                                  **{key: str(value) for key, value in counts.items()}})
        for key, value in counts.items():
            totals[key] += value
        for row in chosen:
            case = ET.SubElement(suite, "testcase", classname=f"mailmodes.{protocol}", name=row["scenario"])
            sessions = "; ".join(f"#{r['id']} ({r['listener']}) {r['outcome']}: {r['reason']}" for r in row["sessions"])
            detail = f"a correct client {row['correct_client']}\nsessions: {sessions or 'none'}"
            if row["outcome"] == "failed":
                ET.SubElement(case, "failure", message=_xml(row["reason"]), type="failed").text = _xml(detail)
            elif row["outcome"] == "inconclusive":
                ET.SubElement(case, "skipped", message=_xml(row["reason"]))
            ET.SubElement(case, "system-out").text = _xml(detail)
    root.attrib.update({key: str(value) for key, value in totals.items()})
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
