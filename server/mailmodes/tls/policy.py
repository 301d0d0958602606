"""The TLS policy, decided once and shared by SMTP, IMAP and POP3.

Each protocol only chooses its own wording (LOGINDISABLED, 530, -ERR [AUTH] ...); whether TLS is
on from the first byte, whether STARTTLS may be offered and whether a client may log in are
answered here: per listener by `ListenerTls`, per connection by the `Security` it hands out.
No I/O here (handshake.py does the handshakes), so the protocol cores can ask it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


# The per-listener `tls_profile` choices, after Mozilla's server-side TLS guidelines (5.7); what
# each one sets is in handshake.py (PROFILES). "intermediate" is the known-good default.
TLS_PROFILES = ("old", "intermediate", "modern")
DEFAULT_TLS_PROFILE = "intermediate"


class TlsMode(enum.StrEnum):
    IMPLICIT = "implicit"
    STARTTLS_REQUIRED = "starttls-required"
    STARTTLS_OPTIONAL = "starttls-optional"
    PLAINTEXT = "plaintext"

    @property
    def uses_starttls(self) -> bool:
        return self in (TlsMode.STARTTLS_REQUIRED, TlsMode.STARTTLS_OPTIONAL)


@dataclass(slots=True)
class Security:
    """The TLS state of one connection, asked by the protocol sessions.

    `encrypted` must come from the transport (see `is_encrypted`), never from a flag that only
    STARTTLS sets: an implicit-TLS connection is encrypted from its first byte.
    """

    mode: TlsMode
    encrypted: bool
    tls_available: bool = True

    @property
    def offers_starttls(self) -> bool:
        return self.mode.uses_starttls and not self.encrypted and self.tls_available

    @property
    def may_authenticate(self) -> bool:
        return self.encrypted or self.mode in (TlsMode.STARTTLS_OPTIONAL, TlsMode.PLAINTEXT)

    @property
    def must_wait_for_tls(self) -> bool:
        """True while only the commands RFC 3207 / 3501 / 2595 allow before TLS are acceptable."""
        return self.mode is TlsMode.STARTTLS_REQUIRED and not self.encrypted

    def tls_started(self) -> None:
        self.encrypted = True




@dataclass(frozen=True, slots=True)
class ListenerTls:
    """How one listener does TLS, decided once when it starts and used by all three protocols."""

    mode: TlsMode
    """The configured mode."""
    policy: TlsMode
    """The mode whose rules the sessions apply: plaintext's where a scenario strips STARTTLS."""
    tls_first: bool
    """A TLS handshake on the first byte, before any protocol byte."""
    pretend_encrypted: bool
    """The session acts as if encrypted, with no TLS layer (an implicit port speaking plaintext)."""
    tls_available: bool = True

    @classmethod
    def decide(cls, mode: TlsMode, *, tls_available: bool = True, strips_starttls: bool = False,
               plaintext_on_implicit: bool = False) -> ListenerTls:
        implicit = mode is TlsMode.IMPLICIT
        return cls(
            mode=mode,
            policy=TlsMode.PLAINTEXT if strips_starttls else mode,
            tls_first=implicit and not plaintext_on_implicit,
            pretend_encrypted=implicit and plaintext_on_implicit,
            tls_available=tls_available,
        )

    def security(self, *, encrypted: bool) -> Security:
        """A new connection's TLS state; `encrypted` must come from its transport."""
        return Security(self.policy, encrypted=encrypted or self.pretend_encrypted, tls_available=self.tls_available)
