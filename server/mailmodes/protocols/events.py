"""What a protocol session and its connection say to each other: the session types, no I/O.

A protocol session (imap/session.py, pop3.py) does no I/O. Its connection (connection.py) feeds it the
client's bytes and gets back `Output`: bytes to send, and instructions the connection carries
out. The SMTP adapter (smtp_adapter.py) carries out the same instructions on aiosmtpd, so a
scenario's plan (misbehaviour.py) means one thing on every protocol.

The other way, a session tells the journal what it made of the client's bytes (`Note`, through
`Connection.notes`): only the session knows which bytes were a command, a literal or a
credential, so only it can say what may be shown; the recorder (record/transcript.py) renders
the notes and parses nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

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


# --- What the session read, for the journal ------------------------------------------------

SpanKind = Literal["literal", "secret", "unparsed", "client-hello", "tls"]
LITERAL: SpanKind = "literal"  # shown as its size
SECRET: SpanKind = "secret"  # a credential: shown as ****
UNPARSED: SpanKind = "unparsed"  # the session could not make it out, so it may hold anything
CLIENT_HELLO: SpanKind = "client-hello"  # a TLS ClientHello record where the protocol was expected
TLS_BYTES: SpanKind = "tls"  # any other TLS record bytes there
Span = tuple[int, int, SpanKind]


@dataclass(frozen=True, slots=True)
class Heard:
    """The session read `data[start:]` as one piece of client input, in wire order: a command
    (`verb`, upper case; "" when it names no command the session knows) or something that is no
    command (verb None: a SASL response, the first lines of a command still waiting for its
    literal). Everything in `data[start:]` is shown as text except the `spans` (start, end, kind),
    offsets into `data`, sorted and not overlapping. `mail`: the command reads or writes mail,
    as the protocol's own command declarations say (IMAP's; the record knows the others')."""

    data: bytes
    verb: str | None
    spans: tuple[Span, ...] = ()
    start: int = 0
    mail: bool = False


@dataclass(frozen=True, slots=True)
class Skipped:
    """`size` client bytes the session dropped unread (the rest of an over-long line, a refused
    literal): not shown, since nothing says what they were."""

    size: int
    why: str


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    """The client offered credentials with `command` ("LOGIN", "AUTH PLAIN", "PASS", ...).
    `user` is the name it tried (for an accepted login: the account the server logged it in
    as); `secret_sent`: the secret itself was on the wire, not just the name; `accepted` is
    None when this command decides nothing yet (USER before its PASS)."""

    command: str
    user: str | None
    secret_sent: bool
    accepted: bool | None
    binding: str | None = None  # SCRAM's gs2 channel-binding flag as sent ("n", "y", "p=<type>")
    expired_token: bool = False  # XOAUTH2 / OAUTHBEARER with a token past its expiry


@dataclass(frozen=True, slots=True)
class Pipelined:
    """`size` plaintext bytes the client sent behind a STARTTLS that succeeded: dropped, or run
    inside TLS by the deliberately vulnerable scenario (`executed`)."""

    size: int
    executed: bool = False


@dataclass(frozen=True, slots=True)
class MessageRead:
    """SMTP DATA: the session read a message of `size` bytes (without the final ".");
    `complete` is False when the connection ended before its end."""

    size: int
    complete: bool = True


Note = Heard | Skipped | LoginAttempt | Pipelined | MessageRead


class Notes(Protocol):
    """Where a session's notes go: the journal's recorder, or nowhere."""

    def note(self, event: Note) -> None: ...


class Unrecorded:
    """Notes for nobody (a session driven without a journal)."""

    __slots__ = ()

    def note(self, event: Note) -> None:
        pass


UNRECORDED = Unrecorded()


def no_channel_binding(kind: str) -> bytes | None:
    return None


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
    notes: Notes = UNRECORDED
    """Where the session says what it read (Heard, LoginAttempt ...): the journal."""
    channel_binding: Callable[[str], bytes | None] = no_channel_binding
    """TLS data of that kind now (tls/binding.py): a channel binding ("tls-server-end-point",
    "tls-exporter") or the verified client certificate's name ("client-identity"); None without."""


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

    def overheard(self, data: bytes) -> None:
        """Client bytes that arrived where no one answers (in the clear, after a STARTTLS whose
        handshake failed): tell the journal what they are, as `feed` would, but run nothing."""
        ...

    def connection_lost(self) -> None: ...


SessionFactory = Callable[[Connection], LineSession]
