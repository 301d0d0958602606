"""How each protocol scenario (KNOWN-BAD.md section 2) departs from the known-good path.

This is the one place every deviation lives, as data. Each listener has one `Misbehaviour`
(known-good: the empty plan), which its sessions ask at a few fixed points: the greeting, the
capability list, the reply to STARTTLS, the login reply, and a chosen stage (chaos). Every answer
is a reply line (None: the known-good one) plus actions, the events of events.py, which the
connection code (connection.py for IMAP and POP3, the SMTP adapter) carries out the same way for every
protocol. Without a scenario every hook answers "do the known-good thing", so the known-good path
stays one straight line in each protocol module.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailmodes.protocols import PROTOCOLS
from mailmodes.protocols.events import Close, NoTls, Output, StartTls
from mailmodes.tls.policy import ListenerTls, TlsMode

CANARY_INJECTED = "X-MAILMODES-INJECTED"
CANARY_PRETLS = "X-MAILMODES-PRETLS"
CANARY_MAILBOX = "X-MAILMODES-STATE"  # must not contain the other canaries: they match as substrings
CANARY_EXISTS = 54321

GARBAGE = b"HTTP/1.0 400 this is not TLS\r\n\r\n"
# What may follow a STARTTLS reply: the handshake; nothing (the session goes on in plaintext);
# or no TLS after the success line, the ClientHello answered with plaintext, with nothing then a
# close, or never (events.NoTls).
HANDSHAKE: tuple[Output, ...] = (StartTls(),)
STAY: tuple[Output, ...] = ()


@dataclass(frozen=True)
class StartTlsPlan:
    """A STARTTLS scenario's answer, the same on every protocol: the reply line, then actions
    that connection.py and the SMTP adapter carry out alike."""

    reply: str | None  # "{tag}" filled in by IMAP; None: the known-good success line
    actions: tuple[Output, ...] = HANDSHAKE
    injected: str = ""  # sent in the same write as the reply (KNOWN-BAD.md injection rule)


@dataclass(frozen=True)
class Step:
    """A scenario's answer at a greeting or a command: the line to send instead of the known-good
    one (None: send nothing), then the actions."""

    line: str | None
    actions: tuple[Output, ...] = ()


@dataclass(frozen=True)
class Chaos:
    """chaos: at `stage` (a command such as RCPT or LOGIN, or GREETING) reply `reply` or drop the
    connection; and/or wait `delay` seconds before every reply."""

    stage: str | None = None
    reply: str | None = None
    disconnect: bool = False
    delay: float = 0.0


PROTOCOL_SCENARIOS: dict[str, tuple[str, ...]] = {
    "starttls-stripped": PROTOCOLS,
    "starttls-rejected": PROTOCOLS,
    "starttls-tempfail": PROTOCOLS,
    "starttls-unexpected-reply": PROTOCOLS,
    "starttls-no-handshake": PROTOCOLS,
    "starttls-silence": PROTOCOLS,
    "capability-fails": PROTOCOLS,
    "protocol-downgrade": ("smtp", "imap"),
    "imap-preauth": ("imap",),
    "response-injection": PROTOCOLS,
    "injected-bye": ("imap",),
    "stale-capability": PROTOCOLS,
    "pretls-state-injection": ("imap",),
    "pretls-alert": ("imap", "pop3"),
    "premature-tagged-ok": ("imap",),
    "greeting-invalid": ("imap",),
    "greeting-reject": PROTOCOLS,
    "login-referral": ("imap",),
    "implicit-speaks-plaintext": PROTOCOLS,
    "command-injection-vulnerable": PROTOCOLS,
    "chaos": PROTOCOLS,
    # New scenarios go last: the known-bad.toml port plan numbers them in this order, and users'
    # configs and scripts name those ports.
    "starttls-dropped": PROTOCOLS,
    # SASL (issue 20): on a listener whose sasl_mechanisms have what they need (known-bad.toml's do).
    "sasl-plus-stripped": PROTOCOLS,
    "oauth-expired-accepted": PROTOCOLS,
}
PLUS_MECHANISMS = ("SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS")

_STARTTLS: dict[str, dict[str, StartTlsPlan]] = {
    "starttls-rejected": {
        "smtp": StartTlsPlan("502 5.5.1 STARTTLS not implemented", STAY),
        "imap": StartTlsPlan("{tag} NO STARTTLS is refused", STAY),
        "pop3": StartTlsPlan("-ERR STLS is refused", STAY),
    },
    "starttls-tempfail": {
        "smtp": StartTlsPlan("454 4.7.0 TLS not available due to temporary reason", STAY),
        "imap": StartTlsPlan("{tag} NO [UNAVAILABLE] TLS not available right now", STAY),
        "pop3": StartTlsPlan("-ERR [SYS/TEMP] TLS not available right now", STAY),
    },
    "starttls-unexpected-reply": {
        "smtp": StartTlsPlan("354 Go ahead", STAY),
        "imap": StartTlsPlan("+ continue", STAY),
        "pop3": StartTlsPlan("+Okay", STAY),
    },
    "starttls-no-handshake": {p: StartTlsPlan(None, (NoTls(GARBAGE),)) for p in PROTOCOLS},
    "starttls-dropped": {p: StartTlsPlan(None, (NoTls(b""),)) for p in PROTOCOLS},
    "starttls-silence": {p: StartTlsPlan(None, (NoTls(None),)) for p in PROTOCOLS},
    "response-injection": {
        "smtp": StartTlsPlan(None, injected=f"250-{{hostname}}\r\n250 AUTH {CANARY_INJECTED}\r\n"),
        "imap": StartTlsPlan(None, injected=f"* CAPABILITY IMAP4rev1 AUTH={CANARY_INJECTED}\r\n"),
        "pop3": StartTlsPlan(None, injected=f"+OK\r\nSASL {CANARY_INJECTED}\r\n.\r\n"),
    },
    "injected-bye": {"imap": StartTlsPlan(None, injected="* BYE Server going down\r\n")},
    "command-injection-vulnerable": {p: StartTlsPlan(None, (StartTls(keep_pipelined=True),)) for p in PROTOCOLS},
}

_GREETINGS: dict[str, dict[str, str]] = {
    "greeting-reject": {
        "smtp": "554 5.3.2 {hostname} no service here",
        "imap": "* BYE {hostname} refuses service",
        "pop3": "-ERR {hostname} refuses service",
    },
    "greeting-invalid": {"imap": "* HELLO there {hostname}"},
    "imap-preauth": {"imap": "* PREAUTH [CAPABILITY IMAP4rev1] {hostname} logged in as {user}"},
}

# Untagged lines sent right after the greeting, before any TLS.
_AFTER_GREETING: dict[str, dict[str, list[str]]] = {
    "pretls-state-injection": {"imap": [
        f'* LIST () "/" {CANARY_MAILBOX}',
        f"* {CANARY_EXISTS} EXISTS",
        f"* STATUS {CANARY_MAILBOX} (MESSAGES {CANARY_EXISTS})",
    ]},
    "pretls-alert": {
        "imap": ["* OK [ALERT] Your mailbox is full: log in at http://mailmodes.invalid/ to fix it"],
        "pop3": [],  # POP3 has no untagged lines: the alert rides in the greeting instead
    },
    # Tagged completions for tags common clients will use next (imaplib, curl, Thunderbird...).
    "premature-tagged-ok": {"imap": [f"{tag} OK LOGIN completed" for tag in ("A001", "A1", "a001", "1", "a1", "A0001")]},
}
_POP3_ALERT_GREETING = "+OK [SYS/PERM] Your mailbox is full: log in at http://mailmodes.invalid/ to fix it"

_CAPABILITY_ERRORS = {
    "smtp": "502 5.5.1 EHLO not available",
    "imap": "{tag} BAD CAPABILITY not available",
    "pop3": "-ERR CAPA not available",
}


# The scenarios under which a STARTTLS listener offers no STARTTLS (the verdicts word it so).
STRIPS_STARTTLS = frozenset({"starttls-stripped", "protocol-downgrade"})


class Misbehaviour:
    """The hooks a session asks; each returns None (or its input unchanged) for known-good."""

    def __init__(self, scenario: str | None, protocol: str, chaos: Chaos | None = None, *,
                 desync_hold: float = 0.0) -> None:
        self.scenario = scenario if scenario in PROTOCOL_SCENARIOS else None
        # response-injection: hold back the reply to the first command inside TLS this long (SMTP).
        self.desync_hold = desync_hold if self.scenario == "response-injection" else 0.0
        self.protocol = protocol
        self.chaos = chaos if self.scenario == "chaos" else None
        # The hot paths check these attributes once per command / per write.
        self.active = self.scenario is not None
        chaotic = self.chaos is not None and self.chaos.stage is not None and bool(self.chaos.reply or self.chaos.disconnect)
        self.chaos_stages = frozenset({self.chaos.stage.upper()} if chaotic and self.chaos and self.chaos.stage else ())
        self.delay = self.chaos.delay if self.chaos is not None else 0.0

    def tls(self, mode: TlsMode, *, tls_available: bool = True) -> ListenerTls:
        """The listener's TLS decision under this scenario (tls/policy.py answers the rest)."""
        return ListenerTls.decide(mode, tls_available=tls_available, strips_starttls=self.strips_starttls,
                                  plaintext_on_implicit=self.speaks_plaintext_on_implicit)

    @property
    def strips_starttls(self) -> bool:
        """starttls-stripped / protocol-downgrade: the listener behaves as if plaintext, so STARTTLS
        is not offered and plaintext login is (the policy in tls/policy.py does the rest)."""
        return self.scenario in STRIPS_STARTTLS

    @property
    def accepts_expired_tokens(self) -> bool:
        """oauth-expired-accepted: XOAUTH2 / OAUTHBEARER log in with an expired token."""
        return self.scenario == "oauth-expired-accepted"

    @property
    def speaks_plaintext_on_implicit(self) -> bool:
        return self.scenario == "implicit-speaks-plaintext"

    @property
    def refuses_ehlo(self) -> bool:
        """protocol-downgrade for SMTP: EHLO is refused, so a client falls back to HELO."""
        return self.scenario == "protocol-downgrade" and self.protocol == "smtp"

    def greeting(self, default: str, hostname: str, user: str = "") -> Step:
        """The greeting line in place of `default`, and what follows it (chaos at GREETING
        included). IMAP adds its own lines (after_greeting) to the same write."""
        chaos = self.at_stage("GREETING")
        if chaos is not None and chaos.disconnect:
            return Step(None, (Close(),))
        text = (chaos.reply if chaos is not None else None) or self.greeting_text(hostname, user) or default
        return Step(text, (Close(),) if self.scenario == "greeting-reject" else ())

    def greeting_text(self, hostname: str, user: str = "") -> str | None:
        if self.scenario == "pretls-alert" and self.protocol == "pop3":
            return _POP3_ALERT_GREETING
        text = _GREETINGS.get(self.scenario or "", {}).get(self.protocol)
        return text.format(hostname=hostname, user=user) if text else None

    def after_greeting(self) -> list[str]:
        return list(_AFTER_GREETING.get(self.scenario or "", {}).get(self.protocol, []))

    def capabilities(self, capabilities: list[str], *, encrypted: bool) -> list[str]:
        """The capability list (EHLO keywords, IMAP capabilities, CAPA lines) as shown."""
        if self.scenario == "stale-capability" and not encrypted:
            canary = {"smtp": f"AUTH {CANARY_PRETLS}", "imap": f"AUTH={CANARY_PRETLS}",
                      "pop3": f"SASL {CANARY_PRETLS}"}[self.protocol]
            return [*capabilities, canary]
        if self.scenario == "sasl-plus-stripped":
            return [_without_plus(capability) for capability in capabilities
                    if capability.upper().removeprefix("AUTH=") not in PLUS_MECHANISMS]
        if self.scenario == "protocol-downgrade" and self.protocol == "imap":
            return ["IMAP4" if c == "IMAP4rev1" else c for c in capabilities if c not in ("STARTTLS", "IMAP4rev2")]
        return capabilities

    def capability_error(self, tag: str = "") -> str | None:
        """capability-fails: the error that answers EHLO / CAPABILITY / CAPA instead."""
        if self.scenario != "capability-fails":
            return None
        return _CAPABILITY_ERRORS[self.protocol].format(tag=tag)

    def starttls(self, hostname: str) -> StartTlsPlan | None:
        plan = _STARTTLS.get(self.scenario or "", {}).get(self.protocol)
        if plan is None or not plan.injected:
            return plan
        return StartTlsPlan(plan.reply, plan.actions, plan.injected.replace("{hostname}", hostname))

    def login_refusal(self, tag: str) -> str | None:
        if self.scenario == "login-referral" and self.protocol == "imap":
            return f"{tag} NO [REFERRAL imap://alice@mailmodes.invalid/] Log in at the other server"
        return None

    def at_stage(self, stage: str) -> Chaos | None:
        """chaos at this stage (a command verb, or GREETING), if any."""
        if self.chaos is not None and self.chaos.stage is not None and self.chaos.stage.upper() == stage.upper():
            return self.chaos
        return None

    def at_command(self, *verbs: str) -> Step | None:
        """chaos at the first of these commands that is its stage: the configured reply instead
        of the command's ("{tag}" left for IMAP to fill in), or a disconnect; None: run it."""
        for verb in verbs:
            if verb.upper() in self.chaos_stages:
                chaos = self.at_stage(verb)
                assert chaos is not None
                return Step(None, (Close(),)) if chaos.disconnect else Step(chaos.reply)
        return None


def _without_plus(capability: str) -> str:
    """sasl-plus-stripped: an SMTP "AUTH ..." keyword or a POP3 "SASL ..." line without its
    -PLUS mechanisms, as a man in the middle would leave it (IMAP's AUTH=... items go whole)."""
    word, _, mechanisms = capability.partition(" ")
    if word.upper() not in ("AUTH", "SASL") or not mechanisms:
        return capability
    return " ".join([word, *(m for m in mechanisms.split() if m.upper() not in PLUS_MECHANISMS)])
