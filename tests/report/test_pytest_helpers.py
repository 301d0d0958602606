"""The pytest helpers: mailmodes_report_card runs a callable client against each scenario and
returns its card; assert_passes fails with every failed scenario and its reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mailmodes.pytest_plugin import ScenarioTarget, assert_passes, report_listeners
from report.smtp_clients import careful, careless

CHOSEN = ["starttls-stripped", "cert-expired", "cert-wildcard-apex", "response-injection", "starttls-required",
          "plaintext"]


def test_a_careful_client_passes_every_smtp_scenario(mailmodes_report_card: Callable[..., Any]) -> None:
    card = mailmodes_report_card(careful, protocols=["smtp"])
    assert_passes(card)
    # Python's ssl never asks for a certificate's status: it cannot know cert-revoked's is revoked
    assert card.counts() == {"passed": len(card.rows) - 1, "failed": 0, "inconclusive": 1}
    assert card.row("cert-revoked", "smtp").outcome == "inconclusive"
    # every buildable scenario for SMTP, and the four known-good modes: one row each
    assert len(card.rows) == len({(l["protocol"], l.get("scenario", l["tls"])) for l in report_listeners(
        protocols=["smtp"])}) == 46
    assert card.scope["test"].endswith("test_a_careful_client_passes_every_smtp_scenario")


def test_a_careless_client_fails_and_the_assertion_lists_each_failure_with_its_reason(
        mailmodes_report_card: Callable[..., Any]) -> None:
    card = mailmodes_report_card(careless, CHOSEN, protocols=["smtp"])
    assert {row.scenario: row.outcome for row in card.rows} == {
        "starttls-stripped": "failed", "cert-expired": "failed", "cert-wildcard-apex": "failed",
        "response-injection": "passed", "starttls-required": "passed", "plaintext": "failed"}
    with pytest.raises(AssertionError) as failure:
        assert_passes(card)
    message = str(failure.value)
    assert message.startswith("4 of 6 scenarios did not pass:\n")
    stripped = card.row("starttls-stripped", "smtp")
    assert (f"  smtp starttls-stripped: failed: sent the password in the clear after STARTTLS was stripped "
            f"(AUTH PLAIN: the secret itself was sent unencrypted) (session #{stripped.sessions[0].id})") in message
    assert ("  smtp cert-expired: failed: went on after the handshake although the certificate was bad: "
            "certificate has expired (session #") in message
    assert "response-injection" not in message and "starttls-required" not in message
    assert_passes(card, allow=["cert-expired", "smtp/cert-wildcard-apex", "starttls-stripped", "plaintext"])


def test_a_client_that_never_connects_is_inconclusive_and_can_be_made_to_fail(
        mailmodes_report_card: Callable[..., Any]) -> None:
    seen: list[ScenarioTarget] = []
    card = mailmodes_report_card(seen.append, ["cert-expired", "starttls-rejected"], protocols=["imap", "pop3"])
    assert {(t.protocol, t.scenario, t.tls) for t in seen} == {
        (p, "cert-expired", tls) for p in ("imap", "pop3") for tls in ("implicit", "starttls-required")} | {
        (p, "starttls-rejected", "starttls-required") for p in ("imap", "pop3")}
    assert {row.outcome for row in card.rows} == {"inconclusive"} and len(card.rows) == 4
    assert_passes(card)
    with pytest.raises(AssertionError, match="imap cert-expired: inconclusive: no session reached this scenario"):
        assert_passes(card, inconclusive=False)


def test_an_unknown_scenario_is_named() -> None:
    with pytest.raises(ValueError, match="no scenario 'cert-nonsense'"):
        report_listeners(["cert-nonsense"])
