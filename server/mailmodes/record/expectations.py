"""What a correct client does on each scenario and on each known-good mode, as data the server
evaluates against a finished `SessionRecord`: every session ends `passed`, `failed` (with the
reason in plain words) or `inconclusive` (the client never reached the step the scenario tests).

An `Expectation` is derived from the catalogue entry (its kind, `bad_certificate`, its
`correct_client` line) where that says enough; only what the catalogue cannot say is written here
per id: the step a client must reach (`STEPS`), the situation a reason names ("after STARTTLS was
stripped"), and a few facts no verdict covers (`EXTRA_CHECKS`). The verdicts of verdicts.py do the
rest: a client-fault verdict on a session is a failure, phrased by `FAULT_ACTIONS`.

Evaluation reads facts only (the record's verdicts, its login and credential facts, how its TLS
handshake went); it never guesses about a client the record does not show.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mailmodes.record.verdicts import (
    BY_CODE,
    GOODBYE_COMMANDS,
    acted_after_tls,
    failed_tls_attempt,
    is_port_check,
    opened_with_client_hello,
    starttls_accepted,
)
from mailmodes.scenarios.catalogue import REVOCATION_SCENARIOS, SCENARIOS, Scenario
from mailmodes.tls.policy import TlsMode

if TYPE_CHECKING:
    from mailmodes.record.journal import SessionRecord

Outcome = Literal["passed", "failed", "inconclusive"]
OUTCOMES: tuple[Outcome, ...] = ("passed", "failed", "inconclusive")
# What the client must do with the TLS it is offered:
#   refuse:  not go on over it (a bad certificate, TLS a client must not accept);
#   connect: complete it (the known-good TLS the scenario or the mode offers);
#   either:  both are correct (cert-cn-only, the dubious suites);
#   none:    TLS is not what is tested (section 2, plaintext): only the faults count.
Wants = Literal["refuse", "connect", "either", "none"]
# The step a client must reach before its session says anything about the expectation.
Step = Literal["connect", "command", "handshake", "starttls", "starttls-success", "scram", "oauth"]
STEP_WORDS: dict[Step, str] = {
    "connect": "the client sent nothing (a port check?)",
    "command": "the client sent no command",
    "handshake": "the client never began a TLS handshake, so it never saw the certificate or the TLS offered",
    "starttls": "the client never sent STARTTLS",
    "starttls-success": "the server never sent its STARTTLS success line (the client never sent STARTTLS)",
    "scram": "the client made no SCRAM login",
    "oauth": "the client made no XOAUTH2 / OAUTHBEARER login",
}
MODES: tuple[str, ...] = tuple(mode.value for mode in TlsMode)

# A client-fault verdict as what the client did, in words a report shows (the verdict's detail
# follows in brackets). A test checks every client-fault code of the registry has one.
FAULT_ACTIONS: dict[str, str] = {
    "bearer-token-in-clear": "sent its bearer token in the clear",
    "used-expired-token": "sent an expired bearer token",
    "accepted-plus-downgrade": "logged in without channel binding",
    "credentials-in-clear": "sent the password in the clear",
    "mail-in-clear": "handled mail in the clear",
    "pipelined-after-starttls": "pipelined plaintext behind its STARTTLS",
    "accepted-bad-certificate": "went on after the handshake",
    "weak-tls": "accepted weak TLS",
    "plaintext-on-tls-port": "spoke plaintext to an implicit-TLS port",
    "tls-on-plaintext-port": "sent a TLS ClientHello to a port that starts in plaintext",
    "no-upgrade": "never used the STARTTLS on offer",
    "fallback": "fell back to plaintext",
    "acted-on-injection": "took injected replies for the server's own",
    "used-stale-capability": "used a stale capability",
    "used-injected-state": "acted on injected state",
    "used-preauth": "went on instead of closing",
    "stalled-at-step": "stalled with no timeout of its own",
    "vanished-at-step": "vanished where a correct client goes on,",
}

# Verdicts whose detail only repeats what the action and the situation say.
SAID_BY_THE_SITUATION = frozenset({"accepted-bad-certificate"})

# Section 2: the step each scenario tests, and the situation a failure happened in.
STEPS: dict[str, tuple[Step, str]] = {
    "starttls-stripped": ("command", "after STARTTLS was stripped"),
    "starttls-rejected": ("starttls", "after STARTTLS was refused"),
    "starttls-tempfail": ("starttls", "after STARTTLS was refused for now"),
    "starttls-unexpected-reply": ("starttls", "after a STARTTLS reply that was neither yes nor no"),
    "starttls-no-handshake": ("starttls-success", "after the STARTTLS success line was followed by plaintext"),
    "starttls-dropped": ("starttls-success", "after the connection was dropped at the handshake"),
    "starttls-silence": ("starttls-success", "after the server went silent at the handshake"),
    "capability-fails": ("command", "after the capability list failed"),
    "protocol-downgrade": ("command", "after the protocol was downgraded and STARTTLS was gone"),
    "imap-preauth": ("connect", "after a plaintext PREAUTH greeting"),
    "response-injection": ("starttls-success", "when replies were injected behind the STARTTLS success line"),
    "injected-bye": ("starttls-success", "when a BYE was injected behind the STARTTLS OK"),
    "stale-capability": ("starttls-success", "when a capability was offered only before TLS"),
    "pretls-state-injection": ("connect", "when mailbox state was injected before TLS"),
    "pretls-alert": ("connect", "when an alert was injected before TLS"),
    "premature-tagged-ok": ("connect", "after tagged OKs for commands it had not sent"),
    "greeting-invalid": ("connect", "after a malformed greeting"),
    "greeting-reject": ("connect", "after the server refused service in its greeting"),
    "login-referral": ("command", "after a login referral"),
    "implicit-speaks-plaintext": ("connect", "on an implicit-TLS port that answered in plaintext"),
    "command-injection-vulnerable": ("starttls", "on a server that executes what follows STARTTLS"),
    "chaos": ("connect", "at the chaos stage"),
    "sasl-plus-stripped": ("scram", "after the -PLUS mechanisms were stripped"),
    "oauth-expired-accepted": ("oauth", "on a server that accepts expired tokens"),
}
# Section 1 TLS scenarios a correct client completes, and those either way is right for ("refuses
# or warns": dubious, many clients still accept them). The rest of the kind must be refused.
TLS_CONNECT = frozenset({"tls-v1-2-only", "tls-v1-3-only"})
TLS_EITHER = frozenset({"tls-static-rsa", "tls-cbc-sha1"})
MODE_SITUATIONS = {
    "implicit": "on a known-good implicit-TLS port",
    "starttls-required": "on a known-good STARTTLS port",
    "starttls-optional": "on a known-good port where STARTTLS is optional",
    "plaintext": "on a port without TLS",
}


Check = Callable[["SessionRecord"], "str | None"]


def _logged_in(record: SessionRecord) -> bool:
    return bool(record.credentials or record.logins)


def _client_lines(record: SessionRecord) -> list[str]:
    return [text for _, sender, _, text in record.lines if sender == "client"]


def _started_tls_anyway(record: SessionRecord) -> str | None:
    """starttls-unexpected-reply: a ClientHello after a reply that was not the success line."""
    if any(text.startswith("[TLS ClientHello") for text in _client_lines(record)):
        return "started TLS although the STARTTLS reply was no success"
    return None


def _authenticated(record: SessionRecord) -> str | None:
    if _logged_in(record):
        command = (record.logins[0][0] if record.logins else record.credentials[0][2])
        return f"logged in ({command})"
    return None


def _went_on(record: SessionRecord) -> str | None:
    """premature-tagged-ok: the client's first command is answered by a tagged OK that was there
    before it asked; a client that erred out stops there, one that was fooled goes on."""
    verbs = [verb for verb in record.verbs_before_tls[1:] if verb not in GOODBYE_COMMANDS]
    if verbs or _logged_in(record):
        return f"went on with {', '.join(dict.fromkeys(verbs or ['a login']))}"
    return None


def _used_mail_commands(record: SessionRecord) -> str | None:
    if record.mail_commands_in_clear:
        return f"went on with {', '.join(dict.fromkeys(record.mail_commands_in_clear))}"
    return _authenticated(record)


# Facts a correct client's session must not show, which no verdict covers (verdicts stay
# scenario-free where they can; what is wrong only on one scenario is judged here).
EXTRA_CHECKS: dict[str, tuple[Check, ...]] = {
    "starttls-unexpected-reply": (_started_tls_anyway,),
    "greeting-invalid": (_authenticated,),
    "greeting-reject": (_used_mail_commands,),
    "premature-tagged-ok": (_went_on,),
}
# What the server cannot see of a correct client's behaviour: said with a pass.
UNSEEN = {
    "login-referral": "whether the client followed the referral to the other host is not visible here",
    "pretls-alert": "whether the client showed the alert as the server's word is not visible here",
    "chaos": "what the client told its user about the chaos is not visible here",
}


@dataclass(frozen=True)
class Expectation:
    """What a correct client does on one scenario (or known-good mode), in a form `evaluate` reads."""

    key: str  # scenario id, or a TLS mode for the known-good listeners
    correct_client: str  # the catalogue's one line (or the mode's)
    wants: Wants
    step: Step
    situation: str  # what a reason says the failure happened in ("after STARTTLS was stripped")
    flaw: str = ""  # section 1: what is wrong with the TLS offered ("certificate has expired")
    checks: tuple[Check, ...] = ()
    unseen: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"scenario": self.key, "correct_client": self.correct_client, "wants": self.wants,
                "step": self.step, "situation": self.situation}


def _flaw(scenario: Scenario) -> str:
    """ "refuses: certificate has expired (alert ...)" -> "certificate has expired"; else what the server does."""
    text = scenario.correct_client
    if text.startswith("refuses: "):
        return text.removeprefix("refuses: ").split(" (", 1)[0]
    return scenario.server_does


def _from_scenario(scenario: Scenario) -> Expectation:
    if scenario.section == 1:
        if scenario.kind == "certificate":
            wants: Wants = "refuse" if scenario.bad_certificate else "either"
        else:
            wants = "connect" if scenario.id in TLS_CONNECT else "either" if scenario.id in TLS_EITHER else "refuse"
        flaw = _flaw(scenario)
        if wants != "refuse":
            situation = f"on {scenario.server_does}"
        elif scenario.kind == "certificate":
            situation = f"although the certificate was bad: {flaw}"
        else:
            situation = f"although the server offered {scenario.server_does}"
        return Expectation(scenario.id, scenario.correct_client, wants, "handshake", situation, flaw)
    step, situation = STEPS[scenario.id]
    return Expectation(scenario.id, scenario.correct_client, "none", step, situation,
                       checks=EXTRA_CHECKS.get(scenario.id, ()), unseen=UNSEEN.get(scenario.id, ""))


def _from_mode(mode: TlsMode) -> Expectation:
    if mode is TlsMode.PLAINTEXT:
        return Expectation(mode.value, "sends no password and no mail without TLS", "none", "command",
                           MODE_SITUATIONS[mode.value])
    step: Step = "connect" if mode is TlsMode.IMPLICIT else "command"
    does = ("completes TLS from the first byte and trusts the test CA" if mode is TlsMode.IMPLICIT
            else "sends STARTTLS, completes TLS and only then logs in")
    return Expectation(mode.value, does, "connect", step, MODE_SITUATIONS[mode.value])


EXPECTATIONS: dict[str, Expectation] = {
    **{scenario_id: _from_scenario(scenario) for scenario_id, scenario in SCENARIOS.items()},
    **{mode.value: _from_mode(mode) for mode in TlsMode},
}


def scenario_key(record: SessionRecord) -> str:
    """The expectation a session is judged by: its scenario, else its listener's mode."""
    return record.scenario if record.scenario in EXPECTATIONS else record.tls_mode


REVOCATION_UNASKED = ("never asked for the certificate's status (no status_request in its ClientHello, RFC 6066 "
                      "section 8), so it could not know it was revoked")


@dataclass(frozen=True)
class Judgement:
    outcome: Outcome
    reason: str


def reached(record: SessionRecord, step: Step) -> bool:
    """Did the session get as far as the step the expectation tests?"""
    began_tls = record.encrypted or record.tls_alert is not None or record.tls_handshake is not None
    if step == "connect":
        return not is_port_check(record) and bool(record.first_client_bytes or record.lines or began_tls)
    if step == "command":
        return bool(record.verbs_before_tls) or record.starttls_attempted or began_tls
    if step == "handshake":
        return began_tls or failed_tls_attempt(record)
    if step == "starttls":
        return record.starttls_attempted
    if step == "scram":
        return bool(record.channel_bindings)
    if step == "oauth":
        return any(command.endswith(("XOAUTH2", "OAUTHBEARER")) for _, _, command in record.credentials)
    return starttls_accepted(record)


def _fault(record: SessionRecord, expectation: Expectation) -> str | None:
    """The first client-fault verdict, as a reason: what the client did, where, and the detail."""
    for verdict in record.verdicts:
        kind = BY_CODE.get(verdict.code)
        if kind is None or kind.severity != "client-fault":
            continue
        action = FAULT_ACTIONS.get(verdict.code, kind.title)
        if verdict.code == "credentials-in-clear" and not any(secret for _, secret, _ in record.credentials):
            action = "tried to log in in the clear"
        if verdict.code in SAID_BY_THE_SITUATION:
            return f"{action} {expectation.situation}"
        return f"{action} {expectation.situation} ({verdict.detail})"
    return None


def evaluate(record: SessionRecord) -> Judgement:
    """passed / failed (reason) / inconclusive (the step the client never reached) for one session."""
    expectation = EXPECTATIONS.get(scenario_key(record))
    if expectation is None:  # a scenario the catalogue no longer has
        return Judgement("inconclusive", f"no expectation for {scenario_key(record)!r}")
    fault = _fault(record, expectation)
    if fault is not None:
        return Judgement("failed", fault)
    for check in expectation.checks:
        found = check(record)
        if found is not None:
            return Judgement("failed", f"{found} {expectation.situation}")
    if not reached(record, expectation.step):
        return Judgement("inconclusive", f"never reached the step: {STEP_WORDS[expectation.step]}")
    return _judge_tls(record, expectation)


def _judge_tls(record: SessionRecord, expectation: Expectation) -> Judgement:
    wants = expectation.wants
    refused = not record.encrypted and (record.tls_alert is not None or failed_tls_attempt(record))
    went_on = record.encrypted and acted_after_tls(record)
    if wants == "refuse":
        if record.scenario in REVOCATION_SCENARIOS and record.asked_certificate_status is False:
            return Judgement("inconclusive", REVOCATION_UNASKED)
        if went_on:
            return Judgement("failed", f"completed the handshake and went on {expectation.situation}")
        if refused or record.has("rejected-certificate"):
            # tls-failed's detail advises on the known-good certificate: not what a refusal here means.
            how = next((v.detail for v in record.verdicts if v.code == "rejected-certificate"),
                       f"the client aborted the handshake with alert {record.tls_alert}" if record.tls_alert
                       else "the handshake did not complete")
            return Judgement("passed", f"refused: {how}")
        if record.encrypted:
            return Judgement("passed", "completed the handshake, then said nothing but a goodbye")
        return Judgement("inconclusive", f"never reached the step: {STEP_WORDS['handshake']}")
    if wants == "connect":
        if refused:
            why = f"alert {record.tls_alert}" if record.tls_alert else (record.tls_failure or "no TLS came up")
            return Judgement("failed", f"refused known-good TLS {expectation.situation} ({why})")
        if not record.encrypted:
            if TlsMode(record.tls_mode) is TlsMode.PLAINTEXT:
                return Judgement("passed", "no TLS on offer; sent nothing that TLS should protect")
            return Judgement("inconclusive", "never started TLS (and did nothing TLS should have protected)")
        return Judgement("passed", f"completed {record.tls_version} and did nothing wrong")
    if wants == "either":
        if record.encrypted:
            return Judgement("passed", f"accepted {record.tls_version} (either is correct here)")
        return Judgement("passed", "refused (either is correct here)")
    note = f"; {expectation.unseen}" if expectation.unseen else ""
    if TlsMode(record.tls_mode) is TlsMode.IMPLICIT and not record.encrypted and opened_with_client_hello(record):
        return Judgement("passed", f"refused: it wanted TLS and got none{note}")
    return Judgement("passed", f"{_what_it_did(record, expectation)}{note}")


def _what_it_did(record: SessionRecord, expectation: Expectation) -> str:
    if record.encrypted and record.starttls:
        return f"used STARTTLS ({record.tls_version}) and did nothing wrong {expectation.situation}"
    if record.encrypted:
        return f"completed {record.tls_version} and did nothing wrong {expectation.situation}"
    return f"stopped {expectation.situation}, sending nothing TLS should protect"
