"""Every verdict the server can reach about a client, in one registry: code, title, severity, the
rule that computes it, and the explanation shown in the README, the OpenAPI description and the
dashboard legend (all three are generated from `REGISTRY`).

A rule is a function of a finished `SessionRecord` and the `History` of earlier sessions (only the
cross-session verdicts, such as `fallback`, read it); it returns the verdict's detail, or None.
Rules read facts only: they never guess about another client.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mailmodes.scenarios.catalogue import REVOCATION_SCENARIOS
from mailmodes.scenarios.misbehaviour import CANARY_INJECTED, CANARY_PRETLS, STRIPS_STARTTLS
from mailmodes.tls.handshake import CLIENT_HELLO_SEEN, SERVER_FLIGHT_SENT
from mailmodes.tls.policy import TlsMode

if TYPE_CHECKING:
    from mailmodes.record.journal import SessionRecord

Severity = Literal["client-fault", "client-correct", "note"]
SEVERITIES: tuple[Severity, ...] = ("client-fault", "client-correct", "note")

# A plaintext session this soon after a failed TLS attempt in the same client scope is a fallback.
FALLBACK_WINDOW = 10.0
# A client that closes a TLS-first connection this soon without sending a byte is a port check (a
# Kubernetes tcpSocket check, `nc -z`), not a client set up for plaintext that waited for a greeting.
PORT_CHECK_WINDOW = 1.0
WEAK_CIPHER_MARKERS = ("NULL", "RC4", "DES", "EXPORT", "anon", "MD5")
_WEAK_CIPHER = re.compile("|".join(WEAK_CIPHER_MARKERS))
WEAK_VERSIONS = ("TLSv1", "TLSv1.1", "SSLv3")
_TLS_MODES = {mode.value: mode for mode in TlsMode}
GOODBYE_COMMANDS = frozenset({"QUIT", "LOGOUT"})
# What a client that found the certificate bad after the handshake may still say: getmail6 sends
# RSET and QUIT once its own host-name check has failed.
REFUSAL_COMMANDS = GOODBYE_COMMANDS | {"RSET"}
CAPABILITY_COMMANDS = frozenset({"EHLO", "HELO", "CAPABILITY", "CAPA"})
AUTH_COMMANDS = frozenset({"AUTH", "AUTHENTICATE", "LOGIN", "USER", "APOP"})
CERTIFICATE_ALERTS = ("certificate", "unknown ca", "unknown_ca", "bad certificate", "decrypt error",
                      "access denied", "handshake failure")
# Scenarios whose STARTTLS success line no TLS layer follows: a client there did try TLS, and it failed.
NO_TLS_AFTER_SUCCESS = frozenset({"starttls-no-handshake", "starttls-dropped", "starttls-silence"})
# Scenarios where a correct client goes on past the deviation (KNOWN-BAD.md section 2): one that
# vanishes there crashed or gave up on something it should have ignored.
# (response-injection, injected-bye and stale-capability are not: a client may refuse those outright,
# and closing on them looks the same as refusing.)
GOES_ON_SCENARIOS = frozenset({"pretls-state-injection", "pretls-alert"})
# A client silent this long after a step has no timeout of its own, or one no user would wait
# out; a shorter silence ended by a short server timeout says nothing about the client.
STALL_SECONDS = 15.0
# record.tls_handshake (the transcript reads it from the handshake's messages): how far a failed
# handshake got. After the server's flight the client had the certificate in hand.
CLIENT_HELLO, SERVER_FLIGHT = CLIENT_HELLO_SEEN, SERVER_FLIGHT_SENT
# The transcript's words for handshakes that failed (record.tls_failure).
NO_CLIENT_HELLO = "no TLS handshake: the client sent no ClientHello before the timeout"
CLOSED_FIRST = "no TLS handshake: the client closed the connection first"
NEVER_TRIED = frozenset({"the client sent something that is not TLS", NO_CLIENT_HELLO})


@dataclass
class History:
    """What later sessions need to know of earlier ones: failed TLS attempts per client scope."""

    window: float = FALLBACK_WINDOW
    tls_failures: dict[tuple[str, str, str], float] = field(default_factory=dict)

    def note(self, record: SessionRecord) -> None:
        """Remember a finished session's failed TLS attempt, if it made one in a client scope."""
        if record.scope is not None and not record.probe and failed_tls_attempt(record):
            self.tls_failures[_scope_key(record)] = record.ended or time.time()

    def failed_before(self, record: SessionRecord) -> float | None:
        """When this record's client scope last failed at TLS, if within the window before it started."""
        if record.scope is None:
            return None
        failed_at = self.tls_failures.get(_scope_key(record))
        return failed_at if failed_at is not None and record.started - failed_at < self.window else None

    def clear(self) -> None:
        self.tls_failures.clear()


def _scope_key(record: SessionRecord) -> tuple[str, str, str]:
    return (record.scope or "", record.client_host, record.protocol)


def tls_mode(record: SessionRecord) -> TlsMode:
    """TlsMode(record.tls_mode), by a table: every finished session's verdicts ask it several times."""
    return _TLS_MODES.get(record.tls_mode) or TlsMode(record.tls_mode)


Rule = Callable[["SessionRecord", History], "str | None"]


@dataclass(frozen=True)
class VerdictKind:
    code: str
    title: str
    severity: Severity
    rule: Rule
    explanation: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "title": self.title, "severity": self.severity, "explanation": self.explanation}


# --- facts the rules share ---------------------------------------------------------------------


def is_port_check(record: SessionRecord) -> bool:
    return record.closed_before_handshake and (record.ended or time.time()) - record.started < PORT_CHECK_WINDOW


def opened_with_client_hello(record: SessionRecord) -> bool:
    return record.first_client_bytes[:2] == b"\x16\x03"


def acted_in_clear(record: SessionRecord) -> bool:
    """The client sent something before TLS other than its goodbye. A client that reads the
    greeting and says QUIT (a health check, a port probe) has done nothing that TLS should have
    protected, so it earns neither no-upgrade nor fallback."""
    return any(verb not in GOODBYE_COMMANDS for verb in record.verbs_before_tls)


def did_business_in_clear(record: SessionRecord) -> bool:
    """Beyond greeting, capabilities and goodbye: a login, mail, a mailbox. A client that failed TLS
    elsewhere and here only asks what the server offers, sees no STARTTLS and leaves (curl
    --ssl-reqd) refused to go on in the clear; it did not fall back."""
    return any(verb not in GOODBYE_COMMANDS | CAPABILITY_COMMANDS for verb in record.verbs_before_tls)


def verbs_after_tls(record: SessionRecord) -> list[str]:
    """The command verbs the client sent inside TLS, read from the transcript (AUTH continuations
    and message bodies excluded)."""
    verbs = []
    for _, sender, tls, text in record.lines:
        if sender != "client" or not tls or not text or text.startswith("[") or text in ("****", "*", "."):
            continue
        words = text.split(" ")
        verb = words[1] if record.protocol == "imap" and len(words) > 1 else words[0]
        verbs.append(verb.upper())
    return verbs


def acted_after_tls(record: SessionRecord) -> bool:
    """Going on past the handshake: any command but a refusal (QUIT, LOGOUT, RSET)."""
    if not record.commands_after_tls:
        return False
    verbs = verbs_after_tls(record)
    if not verbs:  # a transcript cut short: fall back on the counters
        return record.commands_after_tls > 1 or record.first_command_after_tls not in REFUSAL_COMMANDS
    return any(verb not in REFUSAL_COMMANDS for verb in verbs)


def is_certificate_alert(alert: str) -> bool:
    return any(marker in alert.lower().replace("_", " ") for marker in CERTIFICATE_ALERTS)


def starttls_accepted(record: SessionRecord) -> bool:
    """The server sent its STARTTLS success line (the client then owed it a ClientHello)."""
    if not record.starttls_attempted:
        return False
    success = {"smtp": "220", "pop3": "+OK", "imap": " OK"}[record.protocol]
    asked = False
    for _, sender, _, text in record.lines:
        if sender == "client":
            asked = text.upper().split(" ")[-1] in ("STARTTLS", "STLS") or asked
        elif asked and (text.startswith(success) if record.protocol != "imap"
                        else text.split(" ")[1:2] == ["OK"] and not text.startswith("*")):
            return True
    return False


def failed_tls_attempt(record: SessionRecord) -> bool:
    """The client tried TLS and it did not come up: a handshake that failed, or a STARTTLS success
    line that no TLS followed (the client got the server's plaintext, or a close, instead)."""
    if is_port_check(record) or record.encrypted:
        return False
    if record.tls_alert:
        return True
    if record.tls_failure in NEVER_TRIED:
        return False  # plaintext, or nothing, on a TLS-first port: this client never tried TLS
    if record.tls_failure == CLOSED_FIRST:
        return record.starttls_attempted or record.tls_handshake is not None
    if record.tls_failure:
        return True
    return record.scenario in NO_TLS_AFTER_SUCCESS and starttls_accepted(record)


def idle_stalled(record: SessionRecord) -> bool:
    """The client went quiet until the server gave up: the idle timeout, or the handshake timeout
    after a STARTTLS success line."""
    return record.idle_timeout or (record.starttls_attempted and record.tls_failure == NO_CLIENT_HELLO)


def silence(record: SessionRecord) -> float:
    """Seconds from the last line either side sent to the end of the session."""
    last = max((at for at, _, _, text in record.lines if not text.startswith("[")), default=0.0)
    return (record.ended or time.time()) - record.started - last


def last_step(record: SessionRecord) -> str:
    """The scenario step a client stopped at, in words: its last command and the server's last line."""
    command, answer = "", ""
    for _, sender, _, text in record.lines:
        if text.startswith("["):
            continue  # the journal's own notes ([TLS ClientHello, N bytes] ...), no step
        if sender == "client":
            command, answer = text, ""
        else:
            answer = text
    said = f"the server's {answer[:80]!r}" if answer else "the server's greeting"
    return f"after {command[:60]!r}, at {said}" if command else f"at {said}"


# --- the rules -----------------------------------------------------------------------------------


def _credentials_in_clear(record: SessionRecord, history: History) -> str | None:
    in_clear = [(secret, command) for encrypted, secret, command in record.credentials if not encrypted]
    if not in_clear:
        return None
    sent = [command for secret, command in in_clear if secret]
    return (f"{sent[0]}: the secret itself was sent unencrypted" if sent
            else f"{in_clear[0][1]} attempted unencrypted (no secret sent)")


BEARER_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


def _bearer_token_in_clear(record: SessionRecord, history: History) -> str | None:
    sent = [command for encrypted, secret, command in record.credentials
            if not encrypted and secret and command.endswith(BEARER_MECHANISMS)]
    return f"{sent[0]}: the bearer token itself was sent unencrypted" if sent else None


def _used_expired_token(record: SessionRecord, history: History) -> str | None:
    if not record.expired_tokens:
        return None
    accepted = " (and this scenario let it in)" if record.scenario == "oauth-expired-accepted" else ""
    return f"{record.expired_tokens[0]} with a token past its expiry{accepted}"


def _plus_downgrade(record: SessionRecord, flag: str) -> str | None:
    if record.scenario != "sasl-plus-stripped":
        return None
    return next((command for encrypted, command, sent in record.channel_bindings if encrypted and sent == flag), None)


def _accepted_plus_downgrade(record: SessionRecord, history: History) -> str | None:
    command = _plus_downgrade(record, "n")
    return (f"{command} with gs2 flag n inside TLS: no channel binding, and no word that it could bind"
            if command else None)


def _noticed_plus_downgrade(record: SessionRecord, history: History) -> str | None:
    command = _plus_downgrade(record, "y")
    return (f"{command} with gs2 flag y: it can bind but saw no -PLUS, so the server refused the stripped list"
            if command else None)


def _mail_in_clear(record: SessionRecord, history: History) -> str | None:
    if not (record.mail_commands_in_clear and tls_mode(record).uses_starttls):
        return None
    commands = ", ".join(dict.fromkeys(record.mail_commands_in_clear))
    if record.scenario in STRIPS_STARTTLS:
        return f"before TLS, on a STARTTLS port whose STARTTLS this scenario ({record.scenario}) hid: {commands}"
    return f"before TLS although STARTTLS was on offer: {commands}"


def _pipelined(record: SessionRecord, history: History) -> str | None:
    if not record.pipelined_bytes:
        return None
    fate = ("EXECUTED inside TLS by this deliberately vulnerable server"
            if record.scenario == "command-injection-vulnerable" else "discarded")
    return f"{record.pipelined_bytes} plaintext bytes followed the STARTTLS command before the handshake ({fate})"


def _rejected_certificate(record: SessionRecord, history: History) -> str | None:
    if not record.bad_certificate or is_port_check(record):
        return None
    if record.tls_alert and is_certificate_alert(record.tls_alert):
        return f"the client aborted the handshake with alert {record.tls_alert}"
    if record.tls_alert is None and record.tls_handshake in (CLIENT_HELLO, SERVER_FLIGHT) \
            and not record.encrypted:
        return "the client closed the connection during the handshake, without an alert, once it had the certificate"
    if record.encrypted and not acted_after_tls(record) and not record.idle_timeout:
        said = ", ".join(verbs_after_tls(record)) or "nothing"
        return f"rejected after the handshake: the handshake completed, then the client said {said} and closed"
    return None


def _tls_failed(record: SessionRecord, history: History) -> str | None:
    alert = record.tls_alert
    if not alert or is_port_check(record) or (record.bad_certificate and is_certificate_alert(alert)):
        return None
    if is_certificate_alert(alert):
        return (f"the client aborted the handshake with alert {alert}, though this listener's certificate is the "
                "known-good one: give the client the test CA")
    return f"the client aborted the handshake with alert {alert}"


def _accepted_bad_certificate(record: SessionRecord, history: History) -> str | None:
    if record.encrypted and record.bad_certificate and acted_after_tls(record):
        return f"the client went on after the handshake although the certificate was bad ({record.scenario})"
    return None


def _revocation_not_checked(record: SessionRecord, history: History) -> str | None:
    if record.encrypted and record.scenario in REVOCATION_SCENARIOS and record.asked_certificate_status is False \
            and acted_after_tls(record):
        return ("the client went on without asking for the certificate's status (no status_request in its "
                "ClientHello), so it never learned the certificate was revoked")
    return None


def _weak_tls(record: SessionRecord, history: History) -> str | None:
    if record.encrypted and (record.tls_version in WEAK_VERSIONS
                             or _WEAK_CIPHER.search(record.cipher or "") is not None):
        return f"negotiated {record.tls_version} with {record.cipher}"
    return None


def _plaintext_on_tls_port(record: SessionRecord, history: History) -> str | None:
    if tls_mode(record) is not TlsMode.IMPLICIT or record.encrypted or record.tls_alert is not None:
        return None
    first = record.first_client_bytes
    if first and first[:1] != b"\x16":
        return (f"the client sent {first[:20]!r} instead of a TLS ClientHello: this port speaks TLS from the first "
                "byte (implicit TLS, 'SSL/TLS'); the client is set up for STARTTLS or no encryption")
    if not first and not is_port_check(record) and record.tls_handshake is None:
        return ("the client sent nothing and waited: it expected a plaintext greeting, but this port speaks TLS "
                "from the first byte (implicit TLS, 'SSL/TLS'); set the client to SSL/TLS, or use the STARTTLS port")
    return None


def _tls_on_plaintext_port(record: SessionRecord, history: History) -> str | None:
    if tls_mode(record) is TlsMode.IMPLICIT or not opened_with_client_hello(record):
        return None
    return ("the client opened with a TLS ClientHello, but this port starts in plaintext (STARTTLS or no "
            "encryption); the client is set up for implicit TLS ('SSL/TLS'): set it to STARTTLS, or use the "
            "implicit-TLS port")


def _no_upgrade(record: SessionRecord, history: History) -> str | None:
    # A client that opened with a ClientHello tried TLS, only the wrong way (tls-on-plaintext-port).
    if (tls_mode(record).uses_starttls and not record.starttls_attempted and acted_in_clear(record)
            and record.scenario is None and not opened_with_client_hello(record)):
        return "STARTTLS was on offer and would have worked; the client never used it"
    return None


def _fallback(record: SessionRecord, history: History) -> str | None:
    if (record.encrypted or record.starttls_attempted or not did_business_in_clear(record)
            or failed_tls_attempt(record) or opened_with_client_hello(record)):
        return None
    failed_at = history.failed_before(record)
    if failed_at is None:
        return None
    return (f"{record.started - failed_at:.1f} s after a failed TLS attempt by the same client ({record.scope}), "
            "this session went on without TLS")


def _acted_on_injection(record: SessionRecord, history: History) -> str | None:
    if any(canary == CANARY_INJECTED for canary, _ in record.canaries):
        return f"the client used the injected canary {CANARY_INJECTED}"
    first_after = record.first_command_after_tls
    if (record.scenario == "response-injection" and record.protocol == "smtp" and first_after is not None
            and first_after not in CAPABILITY_COMMANDS | {"QUIT"}):
        return (f"after TLS the client sent {first_after} without a new EHLO: it took the EHLO reply injected behind "
                "the STARTTLS success line")
    if record.answered_early:
        return (f"the client sent {record.answered_early} before the server had answered its first command inside "
                "TLS: it took the replies injected behind the STARTTLS success line for that answer")
    return None


def _used_stale_capability(record: SessionRecord, history: History) -> str | None:
    if any(canary == CANARY_PRETLS and encrypted for canary, encrypted in record.canaries):
        return f"the client used {CANARY_PRETLS}, offered only before TLS"
    return None


def _capabilities_not_refreshed(record: SessionRecord, history: History) -> str | None:
    first_after = record.first_command_after_tls
    if (record.scenario == "stale-capability" and first_after in AUTH_COMMANDS
            and _used_stale_capability(record, history) is None):
        return (f"after TLS the client went straight to {first_after} without asking for the capabilities again "
                "(RFC 2595 section 3.1 and RFC 3207 section 4.2 say it should)")
    return None


def _used_injected_state(record: SessionRecord, history: History) -> str | None:
    if record.used_injected_state:
        return "the client acted on state injected before TLS: " + "; ".join(record.used_injected_state[:3])
    return None


def _used_preauth(record: SessionRecord, history: History) -> str | None:
    if record.scenario == "imap-preauth" and set(record.verbs_before_tls) - {"CAPABILITY", "LOGOUT"}:
        return "the client went on after a plaintext PREAUTH greeting instead of closing (RFC 9051 7.1.4)"
    return None


def _stalled_at_step(record: SessionRecord, history: History) -> str | None:
    if record.scenario is None or record.bad_certificate or not idle_stalled(record) \
            or silence(record) < STALL_SECONDS:
        return None
    if tls_mode(record) is TlsMode.IMPLICIT and not record.encrypted:
        return None  # no step was reached: plaintext-on-tls-port says what happened
    return (f"the client stalled {last_step(record)}: silent for {silence(record):.0f} s, until the server's "
            "timeout closed the connection")


def _vanished_at_step(record: SessionRecord, history: History) -> str | None:
    # An alert is a deliberate refusal, a goodbye a clean one; a client that spoke after the
    # server's last step did not vanish at it.
    if (record.scenario not in GOES_ON_SCENARIOS or idle_stalled(record) or record.tls_alert is not None
            or not record.lines or record.lines[-1][1] != "server" or record.lines[-1][3].startswith("[")
            or _said_goodbye(record)):
        return None
    return (f"the client closed the connection without a goodbye {last_step(record)}, where a correct client goes "
            "on")


def _said_goodbye(record: SessionRecord) -> bool:
    last = (verbs_after_tls(record) or record.verbs_before_tls or [""])[-1]
    return last in GOODBYE_COMMANDS


REGISTRY: tuple[VerdictKind, ...] = (
    VerdictKind("bearer-token-in-clear", "OAuth bearer token sent in the clear", "client-fault",
                _bearer_token_in_clear,
                "XOAUTH2 / OAUTHBEARER with the token itself on an unencrypted connection: anyone on the path can "
                "replay it until it expires (RFC 6750 section 5.3; credentials-in-clear says it too)"),
    VerdictKind("credentials-in-clear", "credentials sent in the clear", "client-fault", _credentials_in_clear,
                "AUTH / LOGIN / USER+PASS / APOP on an unencrypted connection (says whether the secret itself was "
                "sent or only attempted)"),
    VerdictKind("mail-in-clear", "mail handled in the clear", "client-fault", _mail_in_clear,
                "MAIL/RCPT/DATA, SELECT/FETCH/APPEND, RETR/TOP before TLS on a STARTTLS port (STARTTLS on offer, or "
                "hidden by a stripping scenario)"),
    VerdictKind("pipelined-after-starttls", "plaintext pipelined behind STARTTLS", "client-fault", _pipelined,
                "the client sent plaintext behind its STARTTLS before the handshake"),
    VerdictKind("rejected-certificate", "rejected the bad certificate", "client-correct", _rejected_certificate,
                "on a listener serving a bad certificate: the client aborted the handshake (its alert named: "
                "`certificate_expired`, `unknown_ca`, `bad_certificate`, ...), or closed it without an alert once it "
                "had the certificate, or completed it and then said nothing but a goodbye (QUIT, LOGOUT, RSET) "
                "before closing (\"rejected after the handshake\")"),
    VerdictKind("tls-failed", "TLS handshake aborted", "note", _tls_failed,
                "the client aborted the handshake with an alert that is not about a bad certificate (a version or "
                "cipher it refuses), or rejected the known-good certificate (it does not trust the test CA)"),
    VerdictKind("accepted-bad-certificate", "accepted a bad certificate", "client-fault", _accepted_bad_certificate,
                "the handshake completed and the client went on (past a goodbye or RSET) although the certificate "
                "was bad"),
    VerdictKind("revocation-not-checked", "did not ask whether the certificate was revoked", "note",
                _revocation_not_checked,
                "on `cert-revoked`, the client completed the handshake and went on without asking for the "
                "certificate's status (RFC 6066 status_request): no fault it could have seen, but it never checks "
                "revocation (asking and going on anyway earns accepted-bad-certificate)"),
    VerdictKind("weak-tls", "weak TLS accepted", "client-fault", _weak_tls,
                "TLS below 1.2, or a weak suite, was negotiated"),
    VerdictKind("plaintext-on-tls-port", "plaintext client on an implicit-TLS port", "client-fault",
                _plaintext_on_tls_port,
                "the first bytes are a command, or nothing while the client waits for a greeting, on an "
                "implicit-TLS port: the client is set up for STARTTLS or none (a port check that connects and "
                "closes within a second, sending nothing, earns nothing)"),
    VerdictKind("tls-on-plaintext-port", "TLS client on a plaintext-first port", "client-fault",
                _tls_on_plaintext_port,
                "a TLS ClientHello on a STARTTLS or plaintext port: the client is set up for implicit TLS "
                "(\"SSL/TLS\"), explained in plain words"),
    VerdictKind("no-upgrade", "did not use STARTTLS", "client-fault", _no_upgrade,
                "STARTTLS was on offer and would have worked; the client never tried it (nor opened with a "
                "ClientHello), and sent more than a goodbye (QUIT, LOGOUT)"),
    VerdictKind("fallback", "fell back to plaintext", "client-fault", _fallback,
                "within one client scope (the pytest plugin's server, or `[journal] one_client = true`), a failed "
                "TLS attempt (a failed handshake, or a STARTTLS success line no TLS followed) followed within 10 s "
                "by a plaintext session of the same protocol in which the client sent more than a goodbye"),
    VerdictKind("acted-on-injection", "acted on injected replies", "client-fault", _acted_on_injection,
                "the client used the canary `X-MAILMODES-INJECTED`, or the command order shows it consumed replies "
                "injected behind the STARTTLS success line: on SMTP, its first command inside TLS was not EHLO, or "
                "its next one arrived while the server held back the real reply (`desync_hold`)"),
    VerdictKind("used-stale-capability", "used a capability offered only before TLS", "client-fault",
                _used_stale_capability,
                "the client used the canary mechanism `X-MAILMODES-PRETLS` after TLS"),
    VerdictKind("capabilities-not-refreshed", "did not ask for capabilities again after TLS", "note",
                _capabilities_not_refreshed,
                "on `stale-capability`, the client went straight to AUTH/LOGIN/USER after TLS without asking for the "
                "capabilities again (a SHOULD of RFC 2595; Python's poplib does it) but did not use the canary"),
    VerdictKind("used-injected-state", "acted on state injected before TLS", "client-fault", _used_injected_state,
                "the client selected or fetched the canary mailbox or message injected before TLS"),
    VerdictKind("used-preauth", "went on after a plaintext PREAUTH", "client-fault", _used_preauth,
                "any command but CAPABILITY or LOGOUT after a plaintext `* PREAUTH` greeting"),
    VerdictKind("used-expired-token", "sent an expired bearer token", "client-fault", _used_expired_token,
                "XOAUTH2 / OAUTHBEARER with a token issued by POST /api/tokens that had expired: a client refreshes "
                "its token before it runs out (RFC 6749 section 6); a known-good server refuses it, "
                "`oauth-expired-accepted` lets it in"),
    VerdictKind("accepted-plus-downgrade", "logged in unbound after -PLUS was stripped", "client-fault",
                _accepted_plus_downgrade,
                "on `sasl-plus-stripped`, SCRAM inside TLS with gs2 flag `n`: the client claimed it cannot bind to "
                "the channel, so the stripped list went unnoticed (a client that can bind says `y` there, RFC 5802 "
                "section 6, and the server refuses it)"),
    VerdictKind("noticed-plus-downgrade", "signalled channel binding on a stripped list", "client-correct",
                _noticed_plus_downgrade,
                "on `sasl-plus-stripped`, SCRAM with gs2 flag `y`: the client can bind and saw no -PLUS, which lets "
                "the real server (which offers -PLUS) refuse the login: the downgrade is caught"),
    VerdictKind("stalled-at-step", "stalled at a scenario step", "client-fault", _stalled_at_step,
                "on a scenario listener, the client went quiet after a step (names it: its last command and the "
                "server's answer) for 15 s or more, until the server's idle or handshake timeout closed the "
                "connection (a correct client gives up sooner: `starttls-silence` wants a timeout)"),
    VerdictKind("vanished-at-step", "vanished at a scenario step", "client-fault", _vanished_at_step,
                "on a scenario a correct client goes past (`pretls-state-injection`, "
                "`pretls-alert`), the client closed the connection without a goodbye or an alert right after a "
                "step (named): it crashed or gave up on what it should have ignored"),
)
BY_CODE: dict[str, VerdictKind] = {kind.code: kind for kind in REGISTRY}
CODES: tuple[str, ...] = tuple(BY_CODE)


def evaluate(record: SessionRecord, history: History) -> Iterable[tuple[str, str]]:
    """(code, detail) for every verdict the finished record earns, in registry order."""
    for kind in REGISTRY:
        detail = kind.rule(record, history)
        if detail is not None:
            yield kind.code, detail


def markdown_table() -> str:
    """The README's verdict table."""
    rows = [f"| `{kind.code}` | {kind.severity} | {kind.explanation} |" for kind in REGISTRY]
    return "\n".join(["| verdict | severity | when |", "|---|---|---|", *rows])
