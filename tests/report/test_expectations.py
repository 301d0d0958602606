"""Expected behaviour as data (record/expectations.py): every scenario and known-good mode has one,
and a finished session's facts give passed, failed (with the reason) or inconclusive."""

from __future__ import annotations

from typing import Any

import pytest

from mailmodes.config import parse_config
from mailmodes.record.expectations import EXPECTATIONS, FAULT_ACTIONS, MODES, evaluate, scenario_key
from mailmodes.record.journal import Journal, SessionRecord
from mailmodes.record.verdicts import REGISTRY
from mailmodes.scenarios.catalogue import SCENARIOS


def test_every_scenario_and_every_mode_has_an_expectation() -> None:
    assert set(EXPECTATIONS) == set(SCENARIOS) | set(MODES)
    for key, scenario in SCENARIOS.items():
        assert EXPECTATIONS[key].correct_client == scenario.correct_client
    # Derived, not hand-written: a bad certificate must be refused, known-good TLS completed.
    assert {k for k, s in SCENARIOS.items() if s.bad_certificate} <= {k for k, e in EXPECTATIONS.items()
                                                                       if e.wants == "refuse"}
    assert EXPECTATIONS["cert-cn-only"].wants == "either"
    assert EXPECTATIONS["tls-v1-3-only"].wants == "connect"
    assert EXPECTATIONS["tls-v1-0"].wants == "refuse"


def test_every_client_fault_verdict_has_words_for_a_reason() -> None:
    faults = {kind.code for kind in REGISTRY if kind.severity == "client-fault"}
    assert faults == set(FAULT_ACTIONS)


def judged(scenario: str | None, tls: str = "starttls-required", protocol: str = "smtp", **facts: Any) -> Any:
    listener = parse_config({"hostname": "h.test", "listeners": [
        {"name": "l", "protocol": protocol, "port": 0, "tls": tls, **({"scenario": scenario} if scenario else {})}]}
    ).listeners[0]
    journal = Journal()
    record: SessionRecord = journal.open(listener, ("127.0.0.1", 1))
    for name, value in facts.items():
        setattr(record, name, value)
    journal.finish(record)
    return evaluate(record)


def test_a_password_after_stripped_starttls_fails_with_the_reason_in_words() -> None:
    verdict = judged("starttls-stripped", verbs_before_tls=["EHLO", "AUTH"],
                     credentials=[(False, True, "AUTH PLAIN")])
    assert verdict.outcome == "failed"
    assert verdict.reason.startswith("sent the password in the clear after STARTTLS was stripped (AUTH PLAIN")


def test_a_client_that_stops_at_a_stripped_starttls_passes_and_one_that_sent_nothing_is_inconclusive() -> None:
    assert judged("starttls-stripped", verbs_before_tls=["EHLO", "QUIT"],
                  lines=[(0.0, "client", False, "EHLO x")]).outcome == "passed"
    silent = judged("starttls-stripped")
    assert silent.outcome == "inconclusive" and "sent no command" in silent.reason


def test_a_bad_certificate_refused_passes_accepted_fails_never_seen_is_inconclusive() -> None:
    refused = judged("cert-expired", tls="implicit", tls_alert="certificate_expired", tls_handshake="alert",
                     first_client_bytes=b"\x16\x03\x01")
    assert refused.outcome == "passed" and "certificate_expired" in refused.reason
    accepted = judged("cert-expired", tls="implicit", tls_version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384",
                      commands_after_tls=2, lines=[(0.1, "client", True, "EHLO x"), (0.2, "client", True, "AUTH PLAIN ****")])
    assert accepted.outcome == "failed"
    assert accepted.reason.startswith("went on after the handshake although the certificate was bad: "
                                      "certificate has expired")
    never = judged("cert-expired", verbs_before_tls=["EHLO", "QUIT"])
    assert never.outcome == "inconclusive"


def test_known_good_tls_refused_fails_and_either_way_is_right_on_cn_only() -> None:
    refused = judged("tls-v1-3-only", tls="implicit", tls_alert="protocol_version", tls_handshake="alert")
    assert refused.outcome == "failed" and "protocol_version" in refused.reason
    assert judged("cert-cn-only", tls="implicit", tls_alert="bad_certificate").outcome == "passed"
    weak = judged("tls-dh1024", tls="implicit", tls_version="TLSv1.2", cipher="DHE-RSA-AES256-GCM-SHA384",
                  commands_after_tls=2, lines=[(0.1, "client", True, "EHLO x"), (0.2, "client", True, "MAIL FROM:<a@b>")])
    assert weak.outcome == "failed" and "1024-bit group" in weak.reason


@pytest.mark.parametrize(("scenario", "facts", "outcome"), [
    ("starttls-unexpected-reply", {"starttls_attempted": True, "lines": [(0.1, "client", False, "STARTTLS"),
                                                                          (0.2, "client", False, "[TLS ClientHello, 517 bytes]")]},
     "failed"),
    ("starttls-unexpected-reply", {"starttls_attempted": True, "verbs_before_tls": ["EHLO", "STARTTLS", "QUIT"]},
     "passed"),
    ("greeting-invalid", {"logins": [("LOGIN", "alice", False, True)]}, "failed"),
    ("premature-tagged-ok", {"verbs_before_tls": ["CAPABILITY", "STARTTLS"],
                             "lines": [(0.1, "client", False, "A001 CAPABILITY")]}, "failed"),
    # its first command is answered by the OK that was there first: erring out then is right (curl)
    ("premature-tagged-ok", {"verbs_before_tls": ["CAPABILITY"], "lines": [(0.1, "client", False, "A001 CAPABILITY")]},
     "passed"),
    ("premature-tagged-ok", {"verbs_before_tls": ["LOGOUT"], "lines": [(0.1, "client", False, "A001 LOGOUT")]},
     "passed"),
    ("starttls-rejected", {"verbs_before_tls": ["EHLO", "QUIT"]}, "inconclusive"),
])
def test_facts_no_verdict_covers_are_judged_by_the_scenario(scenario: str, facts: dict[str, Any], outcome: str) -> None:
    protocol = "imap" if scenario in ("greeting-invalid", "premature-tagged-ok") else "smtp"
    assert judged(scenario, protocol=protocol, **facts).outcome == outcome


def test_known_good_modes_are_judged_by_the_mode() -> None:
    listener = parse_config({"hostname": "h.test", "listeners": [
        {"name": "l", "protocol": "smtp", "port": 0, "tls": "implicit"}]}).listeners[0]
    assert scenario_key(Journal().open(listener, ("127.0.0.1", 1))) == "implicit"
    skipped = judged(None, tls="starttls-optional", verbs_before_tls=["EHLO", "AUTH"],
                     credentials=[(False, True, "AUTH PLAIN")])
    assert skipped.outcome == "failed"
    assert skipped.reason.startswith("sent the password in the clear on a known-good port where STARTTLS is optional")
    good = judged(None, tls="starttls-required", verbs_before_tls=["EHLO", "STARTTLS"], starttls_attempted=True,
                  starttls=True, tls_version="TLSv1.3", cipher="X", commands_after_tls=3)
    assert good.outcome == "passed"
