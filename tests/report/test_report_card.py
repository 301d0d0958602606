"""The report card (record/report.py): rows per protocol and scenario, outcomes from the sessions'
judgements, and its three renderers; junitparser reads the JUnit XML with one testcase per scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import junitparser

from mailmodes.config import parse_config
from mailmodes.record.journal import Journal, SessionRecord
from mailmodes.record.report import NO_SESSION, build, render


def finished(journal: Journal, scenario: str | None, protocol: str = "smtp", tls: str = "starttls-required",
             **facts: Any) -> SessionRecord:
    listener = parse_config({"hostname": "h.test", "listeners": [
        {"name": f"{protocol}-{scenario}", "protocol": protocol, "port": 0, "tls": tls,
         **({"scenario": scenario} if scenario else {})}]}).listeners[0]
    record = journal.open(listener, ("127.0.0.1", 1))
    for name, value in facts.items():
        setattr(record, name, value)
    journal.finish(record)
    return record


STRIPPED_FAULT = {"verbs_before_tls": ["EHLO", "AUTH"], "credentials": [(False, True, "AUTH PLAIN")],
                  "first_client_bytes": b"EHLO x\r\n", "lines": [(0.0, "client", False, "EHLO x")]}
REFUSED = {"tls_alert": "certificate_expired", "tls_handshake": "alert", "first_client_bytes": b"\x16\x03\x01"}


def sample_card() -> Any:
    journal = Journal()
    refused = finished(journal, "cert-expired", tls="implicit", **REFUSED)
    stripped_ok = finished(journal, "starttls-stripped", verbs_before_tls=["EHLO", "QUIT"],
                           lines=[(0.0, "client", False, "EHLO x")])
    stripped_bad = finished(journal, "starttls-stripped", **STRIPPED_FAULT)
    imap = finished(journal, "starttls-rejected", protocol="imap", verbs_before_tls=["CAPABILITY"])
    probe = finished(journal, "starttls-rejected", protocol="pop3", verbs_before_tls=["CAPA"])
    probe.probe = True
    card = build(journal.sessions(), {"client": "127.0.0.1"}, expected=[("pop3", "cert-expired")])
    return card, (refused, stripped_ok, stripped_bad, imap)


def test_rows_per_protocol_and_scenario_a_failed_session_fails_the_row() -> None:
    card, (refused, stripped_ok, stripped_bad, imap) = sample_card()
    assert [(row.protocol, row.scenario, row.outcome) for row in card.rows] == [
        ("smtp", "cert-expired", "passed"), ("smtp", "starttls-stripped", "failed"),
        ("imap", "starttls-rejected", "inconclusive"), ("pop3", "cert-expired", "inconclusive")]
    stripped = card.row("starttls-stripped", "smtp")
    assert [result.id for result in stripped.sessions] == [stripped_ok.id, stripped_bad.id]
    assert stripped.deciding is not None and stripped.deciding.id == stripped_bad.id
    assert stripped.reason.startswith("sent the password in the clear after STARTTLS was stripped")
    assert card.row("cert-expired", "pop3").reason == NO_SESSION  # asked for, never reached
    assert card.counts() == {"passed": 1, "failed": 1, "inconclusive": 2}
    data = card.as_dict()
    assert data["scope"] == {"client": "127.0.0.1"} and data["sessions"] == 4  # the probe is not on it
    assert data["rows"][1]["session"] == stripped_bad.id


def test_the_text_card_names_each_row_its_outcome_sessions_and_reason() -> None:
    card, (_, stripped_ok, stripped_bad, _) = sample_card()
    text = render(card.as_dict(), "text")
    assert text.startswith("Report card: client 127.0.0.1 (4 sessions)\n")
    line = next(line for line in text.splitlines() if "starttls-stripped" in line)
    assert "FAILED" in line and f"#{stripped_ok.id},#{stripped_bad.id}" in line
    assert "sent the password in the clear after STARTTLS was stripped" in line
    assert text.rstrip().endswith("1 passed, 1 failed, 2 inconclusive")


def test_junit_xml_parses_with_one_testcase_per_scenario(tmp_path: Path) -> None:
    card, _ = sample_card()
    path = tmp_path / "report.xml"
    path.write_text(render(card.as_dict(), "junit"))
    xml = junitparser.JUnitXml.fromfile(str(path))
    suites = {suite.name: suite for suite in xml}
    assert set(suites) == {"mailmodes.smtp", "mailmodes.imap", "mailmodes.pop3"}
    cases = {(suite.name, case.name): case for suite in xml for case in suite}
    assert len(cases) == len(card.rows) == 4
    stripped = cases[("mailmodes.smtp", "starttls-stripped")]
    assert [type(result) for result in stripped.result] == [junitparser.Failure]
    assert stripped.result[0].message.startswith("sent the password in the clear after STARTTLS was stripped")
    assert cases[("mailmodes.smtp", "cert-expired")].is_passed
    assert [type(r) for r in cases[("mailmodes.imap", "starttls-rejected")].result] == [junitparser.Skipped]
    assert (suites["mailmodes.smtp"].tests, suites["mailmodes.smtp"].failures) == (2, 1)


def test_a_reason_quoting_control_bytes_still_gives_well_formed_xml(tmp_path: Path) -> None:
    card, _ = sample_card()
    data = card.as_dict()
    data["rows"][1]["reason"] = "the client sent b'\x16\x03' \x01 <&>"
    path = tmp_path / "r.xml"
    path.write_text(render(data, "junit"))
    case = next(case for suite in junitparser.JUnitXml.fromfile(str(path)) for case in suite
                if case.name == "starttls-stripped")
    assert case.result[0].message == "the client sent b'\N{REPLACEMENT CHARACTER}\N{REPLACEMENT CHARACTER}' \N{REPLACEMENT CHARACTER} <&>"
