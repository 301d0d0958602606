"""What a protocol session and its connection say to each other: the session types, no I/O.

A protocol session (imap/session.py, pop3.py) does no I/O. Its connection (connection.py) feeds it the
client's bytes and gets back `Output`: bytes to send, and instructions the connection carries
out. The SMTP adapter (smtp_adapter.py) carries out the same instructions on aiosmtpd, so a
scenario's plan (misbehaviour.py) means one thing on every protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mailmodes.protocols.guards import AuthFailures

if TYPE_CHECKING:
    from mailmodes.config import Listener
    from mailmodes.scenarios.misbehaviour import Misbehaviour
    from mailmodes.tls.policy import Security


@dataclass(frozen=True)
class StartTls:
    """Send everything before this, then do the TLS handshake. The session drops its buffer, and
    so does the connection (whatever was read ahead), unless `keep_pipelined` (the deliberately
    vulnerable scenario, where plaintext sent before the handshake is executed inside TLS)."""

    keep_pipelined: bool = False


@dataclass(frozen=True)
class Close:
    """Send everything before this, then close the connection."""


@dataclass(frozen=True)
class NoTls:
    """Send everything before this (a STARTTLS success line), then start no TLS layer: the
    session is over. The client's next bytes (its ClientHello) get `answer` (which may be empty)
    and the connection closes; or, when `answer` is None, nothing ever answers them, until the
    client or the idle timeout gives up, and then without a goodbye (starttls-no-handshake,
    -dropped, -silence)."""

    answer: bytes | None


@dataclass(frozen=True)
class Delay:
    """Wait this long before sending what follows: the answer to a login from a client that has
    failed too often (guards.AuthFailures), so that guessing passwords is slow."""

    seconds: float


Output = bytes | StartTls | Close | NoTls | Delay


@dataclass
class Connection:
    """What a session may know about its connection."""

    listener: Listener
    security: Security
    peer: tuple[str, int]
    wake: Callable[[], None]
    """Call when something outside the session happened that it wants to report (IDLE)."""
    misbehaviour: Misbehaviour
    """The listener's scenario, one for all its connections (known-good: the empty plan)."""
    auth_failures: AuthFailures = field(default_factory=AuthFailures)
    """The server's failed logins per client host (one for all its listeners)."""


class LineSession(Protocol):
    def greeting(self) -> list[Output]: ...

    def feed(self, data: bytes) -> list[Output]:
        """Consume client bytes. After a StartTls output the session has dropped its buffer."""
        ...

    def tls_started(self) -> list[Output]: ...

    def wake(self) -> list[Output]:
        """Called after Connection.wake(): return unsolicited output, if any."""
        ...

    def timed_out(self) -> list[Output]:
        """The client was idle for the listener's idle_timeout: say goodbye (then we close)."""
        ...

    def connection_lost(self) -> None: ...


SessionFactory = Callable[[Connection], LineSession]
