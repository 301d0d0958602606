"""The one adapter to aiosmtpd: every private aiosmtpd name mailmodes uses is in this module (and
in smtp_init.py, aiosmtpd's __init__ made cheap per connection).

aiosmtpd tracks "encrypted" by a flag only STARTTLS sets (its issues 274 and 281), so the
decisions are taken from our own `Security` (tls/policy.py), which reads the transport; aiosmtpd is only
given arguments under which its own checks agree with ours. Nothing here changes aiosmtpd's
module globals: another aiosmtpd server in the same process behaves as stock aiosmtpd.

For the journal the adapter is the SMTP session (events.py notes): aiosmtpd's reader tells it
each line aiosmtpd takes, and the adapter knows what aiosmtpd is reading at that moment, a
command, a SASL response or a message, because it is the one that started DATA or sent the
challenge; and it sees every AUTH decided.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import enum
import functools
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiosmtpd.smtp
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from mailmodes.config import Listener
from mailmodes.early import SMTP_IDENT
from mailmodes.protocols.events import (
    SECRET,
    UNPARSED,
    Close,
    Heard,
    LoginAttempt,
    MessageRead,
    NoTls,
    Output,
    Pipelined,
    Skipped,
    StartTls,
)
from mailmodes.protocols.events import LITERAL
from mailmodes.protocols.guards import AuthFailures, ClientSlots, RateGuard
from mailmodes.protocols.read_buffer import SharedReadBuffer
from mailmodes.protocols.sasl import PLUS, SASL_MECHANISMS, Challenge, SaslContext, exchange
from mailmodes.protocols.smtp_extensions import (
    BDAT_SYNTAX,
    MAX_ENVID,
    MAX_ORCPT,
    MailExtensions,
    ParameterError,
    bdat_arguments,
    ehlo_keywords,
    mail_extensions,
    parameters,
    rcpt_extensions,
    without_enhanced_code,
)
from mailmodes.protocols.smtp_hotpaths import (
    CRLF,
    express_command,
    lines_within,
    parse_simple_path,
    scan_data,
    unstuff,
)
from mailmodes.protocols.smtp_init import init_smtp
from mailmodes.record.journal import Journal
from mailmodes.record.transcript import Recorder, recorder_for
from mailmodes.scenarios.misbehaviour import Misbehaviour
from mailmodes.tls.binding import channel_binding
from mailmodes.tls.handshake import (
    is_encrypted,
    read_after_failure,
    read_after_failure_for,
    tls_heard,
    start_server_tls,
    tls_record_size,
    unread,
)
from mailmodes.tls.policy import ListenerTls, TlsMode

# RFC 3207 section 4: what a STARTTLS-required server takes before TLS (aiosmtpd's set), and
# AUTH, which aiosmtpd's smtp_AUTH then refuses with RFC 4954's 538.
ALLOWED_BEFORE_TLS = frozenset({"NOOP", "EHLO", "STARTTLS", "QUIT", "AUTH"})

# aiosmtpd's own reply texts, reworded to carry the RFC 3463 enhanced codes PROTOCOL.md asks for.
REPLY_WORDING = {
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",  # READY
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "501 Syntax: STARTTLS": "501 5.5.4 Syntax error (no parameters allowed)",
    "454 TLS not available": "454 4.7.0 TLS not available due to temporary reason",
    "552 Error: Too much mail data": "552 5.3.4 Message size exceeds fixed maximum message size",
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
    "250 OK": "250 2.0.0 OK",
    "221 Bye": "221 2.0.0 Bye",
    "503 Already authenticated": "503 5.5.1 Already authenticated",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "500 Command line too long": "500 5.5.2 Command line too long",
    "500 Line too long (see RFC5321 4.5.3.1.6)": "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)",
    # ENHANCEDSTATUSCODES (RFC 2034) is offered: the rest of aiosmtpd's replies a client meets.
    "503 Error: send HELO first": "503 5.5.1 Error: send HELO first",
    "501 Syntax: EHLO hostname": "501 5.5.4 Syntax: EHLO hostname",
    "501 Syntax: HELO hostname": "501 5.5.4 Syntax: HELO hostname",
    "501 Syntax: MAIL FROM: <address>": "501 5.5.4 Syntax: MAIL FROM: <address>",
    "501 Syntax: MAIL FROM: <address> [SP <mail-parameters>]": (
        "501 5.5.4 Syntax: MAIL FROM: <address> [SP <mail-parameters>]"
    ),
    "501 Syntax: RCPT TO: <address>": "501 5.5.4 Syntax: RCPT TO: <address>",
    "501 Syntax: RCPT TO: <address> [SP <mail-parameters>]": (
        "501 5.5.4 Syntax: RCPT TO: <address> [SP <mail-parameters>]"
    ),
    "555 MAIL FROM parameters not recognized or not implemented": (
        "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
    ),
    "555 RCPT TO parameters not recognized or not implemented": (
        "555 5.5.4 RCPT TO parameters not recognized or not implemented"
    ),
    "501 Error: BODY can only be one of 7BIT, 8BITMIME": "501 5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME",
    "501 Error: SMTPUTF8 takes no arguments": "501 5.5.4 Error: SMTPUTF8 takes no arguments",
    "501 Error: SMTPUTF8 disabled": "555 5.5.4 Error: SMTPUTF8 not offered",
    "500 Error: strict ASCII mode": "500 5.6.7 Error: non-ASCII command, SMTPUTF8 not offered",
    "501 Syntax: NOOP": "501 5.5.4 Syntax: NOOP",
    "501 Syntax: QUIT": "501 5.5.4 Syntax: QUIT",
    "501 Syntax: RSET": "501 5.5.4 Syntax: RSET",
    "501 Syntax: DATA": "501 5.5.4 Syntax: DATA",
}

TLS_ACTIVE = "503 5.5.1 TLS already active"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors, closing connection"
TOO_MANY_AUTH_FAILURES = "421 4.7.0 Too many authentication failures, closing connection"
TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, try again later\r\n"
_BAD_COMMAND_CODES = ("500", "501", "502", "503", "504")
_AUTH_ANSWER_CODES = ("235", "535")  # RFC 4954: the end of an authentication exchange
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"  # aiosmtpd's wording, kept
ACCEPTED = "250 2.0.0 OK: message accepted"  # the answer to a message the store took
# What the express lane puts before a message it hands back to aiosmtpd: the command aiosmtpd's
# loop reads to take the message over (never noted: by then the session reads message content).
RESUME_DATA = b"DATA\r\n"
_ANY_TIME = frozenset({"NOOP", "RSET", "EHLO", "QUIT"})  # express verbs that need no HELO first
_AIOSMTPD_LOG = logging.getLogger("mail.log")
READY = "220 2.0.0 Ready to start TLS"
DATA_END = len(b".\r\n")  # the line that ends a message after its last CRLF (RFC 5321 4.1.1.4)
# What aiosmtpd reads in place of a line that names no command: it logs every command line as it
# came (its sanitising knows only AUTH lines), and such a line may be a credential sent out of
# turn. It answers both alike (not_recognized), so the client cannot tell.
NOT_A_COMMAND = b"NOT-A-COMMAND\r\n"


class Reading(enum.Enum):
    """What the line aiosmtpd reads next is, as only the session knows it."""

    COMMAND = "command"
    NAME = "the name asked for in AUTH LOGIN"
    SECRET = "a SASL response that carries the secret"
    MESSAGE = "message content (DATA)"


_MESSAGE = Reading.MESSAGE  # (a module global is found faster than an enum member)


# After "AUTH": the mechanism, then (smtp_AUTH splits on any whitespace) the initial response.
_INITIAL_RESPONSE = re.compile(rb"\s*\S+\s+(\S(?:.*\S)?)\s*$", re.DOTALL)


def command_heard(line: bytes, known: Container[str]) -> Heard:
    """A command line as aiosmtpd's _handle_client reads it: the verb is what comes before the
    first space, upper-cased ASCII. A line that names no command is not shown (it may be anything,
    a SASL response sent out of turn included); in AUTH, all after the mechanism is a credential."""
    content = line.rstrip(b"\r\n")
    verb_bytes, space, _ = content.partition(b" ")
    verb = verb_bytes.upper().decode("ascii", "replace")
    if verb not in known:
        return Heard(line, "", ((0, len(content), UNPARSED),) if content else ())
    response = _INITIAL_RESPONSE.match(content, len(verb_bytes) + 1) if verb == "AUTH" and space else None
    return Heard(line, verb, ((response.start(1), response.end(1), SECRET),) if response else ())


def response_heard(line: bytes) -> Heard:
    """A line read as the answer to a 334 challenge: a credential, unless it cancels ("*")."""
    content = line.rstrip(b"\r\n")
    return Heard(line, None, ((0, len(content), SECRET),) if content.strip() not in (b"", b"*") else ())


@dataclass(frozen=True)
class Accepted:
    """What an accepted AUTH leaves in aiosmtpd's session.auth_data (smtp.Authenticator): the
    login as the client gave it (aiosmtpd and the capture of outbound mail read `.login`) and
    the account it logged in as; not the password."""

    login: bytes
    account: str


@dataclass
class _AuthAttempt:
    """One AUTH command, while aiosmtpd runs it."""

    command: str
    secret_sent: bool
    user: str | None = None
    account: str | None = None
    binding: str | None = None
    expired_token: bool = False

    @classmethod
    def of(cls, arg: str | None) -> _AuthAttempt | None:
        """AUTH's argument split as smtp_AUTH splits it; None for a bare AUTH (it names nothing)."""
        words = arg.split() if arg else []
        if not words:
            return None
        mechanism = words[0].upper()
        # AUTH LOGIN's initial response is the name; every other one carries the secret.
        return cls(f"AUTH {mechanism}", len(words) > 1 and words[1] != "=" and mechanism != "LOGIN")

    def note(self) -> LoginAttempt:
        return LoginAttempt(self.command, self.account or self.user, self.secret_sent, accepted=self.account is not None,
                            binding=self.binding, expired_token=self.expired_token)


def aiosmtpd_tls_arguments(tls: ListenerTls, tls_context: ssl.SSLContext | None) -> dict[str, Any]:
    """The one place where a listener's TLS decision becomes aiosmtpd arguments.

    aiosmtpd's "is it encrypted" flag is set by STARTTLS only, so on an implicit listener (always
    encrypted) it must not require TLS for AUTH: there its check and ours agree only this way.
    The STARTTLS gate before other commands is ours (_Commands), per connection.
    """
    table: dict[TlsMode, dict[str, Any]] = {
        TlsMode.IMPLICIT: {"tls_context": None, "auth_require_tls": False},
        TlsMode.STARTTLS_REQUIRED: {"tls_context": tls_context, "auth_require_tls": True},
        TlsMode.STARTTLS_OPTIONAL: {"tls_context": tls_context, "auth_require_tls": False},
        TlsMode.PLAINTEXT: {"tls_context": None, "auth_require_tls": False},
    }
    return table[tls.policy]


class MailmodesSMTP(SMTP, SharedReadBuffer):
    """aiosmtpd's SMTP with our TLS policy, reply wording, configurable limits, and the events of
    a scenario's plan carried out as connection.py carries them out for IMAP and POP3."""

    # The express lane's state in slots, not in the instance dict: with them there the dict of
    # ~80 attributes doubles its table, 1.7 KiB more for every idle connection (issue 2's budget).
    __slots__ = ("parked", "unprocessed", "express", "express_writes", "idle_deadline", "express_lane",
                 "express_data", "greeted_early", "ehlo_replies")

    def __init__(self, listener: Listener, handler: Any, authenticator: Any, hostname: str,
                 tls_context: ssl.SSLContext | None, connections: set[MailmodesSMTP], journal: Journal,
                 misbehaviour: Misbehaviour, tls: ListenerTls, clients: ClientSlots | None = None,
                 auth_failures: AuthFailures | None = None, ehlo_replies: dict[tuple[bool, bool], str] | None = None
                 ) -> None:
        # aiosmtpd sizes its line reader from this attribute during __init__.
        self.line_length_limit = listener.limits.max_line_length
        self.listener = listener
        self.connections = connections
        self.journal = journal
        self.recorder: Recorder | None = None
        self.bad_replies = 0
        self.failed_logins = 0
        self.clients = clients or ClientSlots()
        self.server_auth_failures = auth_failures or AuthFailures()
        # The express lane's EHLO reply by (encrypted, after STARTTLS): the same for all of a
        # listener's connections, which share this table.
        self.ehlo_replies = {} if ehlo_replies is None else ehlo_replies
        self.peer_host = ""  # set once the connection is counted against its client's slots
        self.rate = RateGuard(listener.limits.min_data_rate, listener.limits.data_rate_window)
        self._rate_timer: asyncio.TimerHandle | None = None
        self.greeted = False
        self.keep_pipelined = False
        self.injected = ""
        self.silent = False  # starttls-silence: not even a goodbye at the idle timeout
        self.hold_next_reply = 0.0  # response-injection, inside TLS: see push
        self.holding = False
        self.resuming_data = False  # aiosmtpd's DATA takes over after our 354 (smtp_DATA)
        self.reading = Reading.COMMAND
        self.received = 0  # bytes handed to aiosmtpd's reader: with its buffer, where it has read to
        self.message_from = 0
        self.overrun = 0  # an over-long line aiosmtpd is skipping, so far
        self.auth: _AuthAttempt | None = None
        self.reading_after_failure: asyncio.Task[None] | None = None  # after a failed STARTTLS handshake
        self.unanswered = b""  # what it read so far of a line
        self.ended = False
        self.parked = False  # aiosmtpd waits for a command line with nothing buffered (_HeardReader)
        self.unprocessed = 0  # bytes of the chunk the express lane is reading that it has not reached
        self.express: _ExpressMessage | None = None  # a message the express lane is reading
        self.express_writes = 0  # how many writes of replies the express lane made (a test reads it)
        self.idle_deadline = 0.0
        self.greeted_early: float | None = None  # when early.py accepted and greeted it (serve's early start)
        self.speaks_tls: bool | None = None  # the client began with TLS (None: no byte yet)
        self.misbehaviour = misbehaviour
        self.tls = tls
        self.security = tls.security(encrypted=False)
        # aiosmtpd's __init__ with what it finds by introspection found once per class
        # (smtp_init.py). aiosmtpd's per-connection tables of bound methods are about 2 KB of every
        # idle connection: the hooks are shared by the listener's connections, the commands bound
        # on lookup.
        init_smtp(
            self,
            handler,
            hooks=handler.hooks,
            commands=_Commands(self),
            hostname=hostname,
            ident=SMTP_IDENT,
            data_size_limit=listener.limits.max_message_size,
            timeout=listener.limits.idle_timeout,
            authenticator=authenticator,
            # Set after __init__: aiosmtpd warns when auth is required without auth_require_tls,
            # which is exactly the implicit-TLS case it cannot recognise.
            auth_required=False,
            enable_SMTPUTF8="SMTPUTF8" in listener.smtp_extensions,
            # aiosmtpd takes every attribute named auth_* for a mechanism (hence failed_logins, not
            # auth_failures): what this listener does not offer is excluded.
            auth_exclude_mechanism=[m for m in SASL_MECHANISMS["smtp"] if m not in listener.mechanisms],
            **aiosmtpd_tls_arguments(tls, tls_context),
        )
        self._auth_required = listener.role == "submission"
        self.extensions = frozenset(listener.smtp_extensions)
        self.enhanced_codes = "ENHANCEDSTATUSCODES" in self.extensions
        self.chunking = "CHUNKING" in self.extensions  # HELP lists BDAT only then (its syntax's `when`)
        # aiosmtpd keeps these limits in one dict shared by every server of the process (a class
        # attribute it adds to at each EHLO): this connection's own, with room for the parameters
        # offered (RFC 3461 section 5: ENVID and ORCPT lengthen MAIL and RCPT).
        dsn = "DSN" in self.extensions
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit, {
            "MAIL": SMTP.command_size_limit + 26 + 10 + 12 + (16 + MAX_ENVID if dsn else 0),
            "RCPT": SMTP.command_size_limit + (37 + MAX_ORCPT if dsn else 0),
        })
        self.mail_extensions: MailExtensions | None = None  # the MAIL command under way, for _getparams
        self.taken_parameters: frozenset[str] = frozenset()
        # The express lane (data_received) only where nothing can differ from aiosmtpd's own loop:
        # a known-good listener, the stock handler, and nobody reading aiosmtpd's log.
        self.express_lane = (not misbehaviour.active and callable(getattr(handler, "take", None))
                             and not _AIOSMTPD_LOG.isEnabledFor(logging.INFO))
        self.express_data = self.express_lane and not handler.store.durable  # a durable store's 250 waits for a flush

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def _create_envelope(self) -> Envelope:
        return _Envelope()

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super()._cb_client_connected(reader, writer)
        _HeardReader.adopt(reader, self)

    # ---- what the client sent, for the journal (events.py) ---------------------------------
    def note(self, event: Heard | Skipped | LoginAttempt | MessageRead | Pipelined) -> None:
        if self.recorder is not None:
            self.recorder.note(event)

    def heard_line(self, line: bytes) -> bytes:
        """aiosmtpd took this line from its reader (_HeardReader); what it is to see instead."""
        reading = self.reading
        if reading is Reading.MESSAGE:
            return line  # counted whole at its end (_message_read)
        if self.overrun:
            self.note(Skipped(self.overrun + len(line), "line too long"))
            self.overrun = 0
        elif reading is Reading.COMMAND:
            heard = command_heard(line, self._smtp_methods.functions)  # type: ignore[attr-defined]
            self.note(heard)
            if heard.verb == "" and heard.spans:
                return NOT_A_COMMAND
        else:
            heard = response_heard(line)
            self.note(heard)
            if reading is Reading.SECRET and heard.spans and self.auth is not None:
                self.auth.secret_sent = True
        return line

    def line_overrun(self, consumed: int) -> None:
        """aiosmtpd's reader found no line end within its limit; aiosmtpd skips to it."""
        if self.reading is not Reading.MESSAGE:
            self.overrun += consumed

    def _consumed(self) -> int:
        return self.received - len(self._reader._buffer) - self.unprocessed  # type: ignore[attr-defined]

    def _message_read(self, *, complete: bool) -> None:
        """DATA is over: the bytes aiosmtpd took since the 354, without the final "." line."""
        if self.reading is Reading.MESSAGE:
            self.reading = Reading.COMMAND
            size = self._consumed() - self.message_from - (DATA_END if complete else 0)
            self.note(MessageRead(max(size, 0), complete))

    def open_record(self, transport: asyncio.BaseTransport) -> None:
        if self.recorder is None:
            record = self.journal.open(self.listener, transport.get_extra_info("peername") or (),
                                       started=self.greeted_early)
            self.recorder = recorder_for(self.journal, record)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        if first and not self._take_slot(transport):
            cast(asyncio.Transport, transport).write(TOO_MANY_CONNECTIONS)
            transport.close()
            if self.recorder is not None:
                self.journal.finish(self.recorder.record)  # opened by ImplicitTls at the accept
            self._release()
            return
        if first:
            self.open_record(transport)
            self.connections.add(self)
        self.security = self.tls.security(encrypted=is_encrypted(transport))
        if not first and self.security.encrypted:
            self.hold_next_reply = self.misbehaviour.desync_hold
        pipelined = bytes(self._reader._buffer) if not first else b""  # type: ignore[attr-defined]
        if pipelined:
            self.note(Pipelined(len(pipelined), executed=self.keep_pipelined))
        if self.security.encrypted and not self.tls.pretend_encrypted:
            ssl_object = transport.get_extra_info("ssl_object")
            if self.recorder is not None:
                self.recorder.tls_started(ssl_object, via_starttls=not first)
        super().connection_made(transport)  # after STARTTLS this discards the pipelined plaintext ...
        if pipelined and self.keep_pipelined:
            self._reader._buffer.extend(pipelined)  # type: ignore[attr-defined]  # ... unless vulnerable
        if not first:
            # A STARTTLS handshake done: all aiosmtpd's STARTTLS does next is return to wait for a
            # command. A TLS 1.3 client's EHLO comes with its Finished, so it is read before that:
            # the express lane's, as it would be a moment later.
            self.parked = (not self._reader._buffer and self.reading is Reading.COMMAND  # type: ignore[attr-defined]
                           and not self.overrun)

    def _take_slot(self, transport: asyncio.BaseTransport) -> bool:
        limits = self.listener.limits
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        full = len(self.connections) >= limits.max_connections
        if full or not self.clients.take(host, limits.max_connections_per_client):
            return False
        self.peer_host = host
        return True

    def handshake_failed(self, error: BaseException, ssl_object: ssl.SSLObject | None) -> None:
        """The implicit-TLS handshake (ImplicitTls, which opened the record) failed: record it;
        aiosmtpd never saw this client."""
        assert self.recorder is not None
        self.recorder.tls_failed(error, ssl_object)
        self.journal.finish(self.recorder.record)
        error.__traceback__ = None  # its frames hold asyncio's TLS layer, and the layer this session
        self._release()

    async def _handle_client(self) -> None:
        try:
            await super()._handle_client()
        except asyncio.CancelledError:
            transport = self.transport
            if not (self.ended or transport is None or transport.is_closing()):
                raise
            # The connection is over (QUIT, or gone): the loop ends rather than being cancelled,
            # so that the task keeps no exception whose traceback holds this session alive.

    def connection_lost(self, error: Exception | None) -> None:
        if self not in self.connections or self.ended:
            return  # refused in connection_made (aiosmtpd never set up its session), or said already
        self.ended = True
        if error is not None:
            error.__traceback__ = None  # its frames hold this session: see _release
        if self.express is not None:
            self.express = None
            self._message_read(complete=False)
        super().connection_lost(error)
        closed = self._closed  # type: ignore[attr-defined]
        if closed.done() and not closed.cancelled():
            # The error (a failed STARTTLS: TLSSetupException) is ours to drop: nothing awaits
            # this future, and asyncio would report it as never retrieved when collected.
            closed.exception()
        reading = self.reading_after_failure
        if reading is not None and not reading.done():
            reading.add_done_callback(lambda task: self._forget())  # the record is not over yet
        else:
            self._forget()

    def _forget(self) -> None:
        self.connections.discard(self)
        self.clients.give_back(self.peer_host)
        if self._rate_timer is not None:
            self._rate_timer.cancel()
        if self.recorder is not None:
            self.journal.finish(self.recorder.record)
        handler = self._handler_coroutine
        if handler is None or handler.done():
            self._release()
        else:
            handler.add_done_callback(lambda _: self._release())

    def _release(self) -> None:
        """The session is over and its record finished: drop what refers back to it (aiosmtpd's
        tables of bound methods, its stream reader and writer), so that reference counting frees
        it now. Left in reference cycles, every connection waited for the cyclic collector, ~20 us
        of each connection's CPU (issue 22)."""
        self._smtp_methods = {}
        self._auth_methods = {}
        self._client_connected_cb = None
        self._stream_writer = self._writer = None  # type: ignore[assignment]
        self._tls_protocol = None  # asyncio's TLS layer keeps two of this session's bound methods
        reader = getattr(self, "_reader", None)  # set once aiosmtpd's session began (_cb_client_connected)
        if isinstance(reader, _HeardReader):
            reader.owner = None  # type: ignore[assignment]

    def eof_received(self) -> bool | None:
        if self.session is None:
            return False  # the implicit-TLS handshake's connection ended before aiosmtpd took it
        return super().eof_received()

    def data_received(self, data: bytes) -> None:
        if self.recorder is not None:
            if self.holding:
                self._answered_early(data)
            self.recorder.client(data)
        first = self.speaks_tls is None
        if first:
            self.speaks_tls = not self.security.encrypted and tls_record_size(data) is not None
        if self.speaks_tls:
            # A client set for implicit TLS on a plaintext-first port: no command, so aiosmtpd
            # never sees it (and answers no garbage); it fails on our greeting and goes.
            self.note(tls_heard(data, first=first))
            return
        self.received += len(data)
        if not self.silent:  # a scenario that swallows the ClientHello waits on purpose
            self.rate.received(self.loop.time(), len(data))
            if self._rate_timer is None:
                self._check_rate_later()
        if self.parked and self.express_lane and not self._reader._buffer:  # type: ignore[attr-defined]
            data = self._express(data)
            if not data:
                return
        super().data_received(data)

    def _check_rate_later(self) -> None:
        end = self.rate.check_at()
        self._rate_timer = None if end is None else self.loop.call_at(end, self._check_rate)

    def _check_rate(self) -> None:
        """A window of the rate check (guards.RateGuard) ended: a client sending slower than
        min_data_rate in the middle of a command or message is idle, whatever bytes it trickles."""
        self._rate_timer = None
        if self.rate.too_slow(self.loop.time()):
            self._timeout_cb()
        else:
            self._check_rate_later()

    # ---- the express lane ----------------------------------------------------------------------
    # aiosmtpd reads every command in a coroutine step of its own: a readuntil, the command's
    # coroutine, a write and a drain per reply, a timer made anew per command and log calls. While
    # its loop waits for a command with nothing buffered (parked), the commonest commands of a
    # known-good session are answered here as they arrive, synchronously and with the same
    # result, the same journal notes and the same words; the replies to one read leave in one
    # write (RFC 2920 section 3.1 lets a server answer pipelined commands together). The first
    # line that is not plain (smtp_hotpaths.express_command), or whose state needs one of
    # aiosmtpd's refusals, goes to aiosmtpd's reader with everything after it (issue 22).

    def _express(self, data: bytes) -> bytes:
        """Answer what the lane can of `data`; the rest, from the first line it leaves alone, is
        for aiosmtpd's reader."""
        transport = self.transport
        if (transport is None or transport.is_closing() or self._paused  # type: ignore[attr-defined]
                or self.security.must_wait_for_tls or not self._tls_handshake_okay or self.session is None):
            return data
        replies: list[bytes] = []
        position, size = 0, len(data)
        handed_back: bytes | None = None  # a message over a limit, for aiosmtpd's DATA
        while position < size:
            self.unprocessed = size - position
            if self.express is not None:
                message_end = self._express_content(data, position, replies)
                if not isinstance(message_end, int):
                    handed_back, position = message_end, size
                    break
                position = message_end
                continue
            end = data.find(b"\n", position) + 1
            if not end:
                break
            self.unprocessed = size - end
            command = express_command(data[position:end])
            if command is None or not self._express_command(data[position:end], command[0], command[1], replies):
                break
            position = end
            if transport.is_closing():  # after QUIT: nothing more is read
                position = size
        self.unprocessed = 0
        if replies:
            self._writer.write(b"".join(replies))
            self.express_writes += 1
        return handed_back if handed_back is not None else data[position:]

    def _express_command(self, line: bytes, verb: str, address: str | None, replies: list[bytes]) -> bool:
        """What smtp_EHLO, smtp_MAIL, smtp_RCPT, smtp_DATA (up to its 354), smtp_RSET, smtp_NOOP
        and smtp_QUIT do with a plain line, through the handler's synchronous halves
        (smtp.DeliveryHandler); False (nothing done) where aiosmtpd would refuse it, so that
        aiosmtpd words the refusal."""
        session, envelope = self.session, self.envelope
        assert session is not None and isinstance(envelope, _Envelope)
        if verb in _ANY_TIME:
            # After QUIT aiosmtpd still reads (and notes, never answers) the complete lines already
            # there: a QUIT with more behind it is left to it.
            if verb in self._handle_hooks or (verb == "QUIT" and self.unprocessed):
                return False
        elif not session.host_name or (self._auth_required and not session.authenticated):
            return False
        elif verb == "MAIL":
            if envelope.mail_from or self.local_part_limit:
                return False
        elif verb == "RCPT":
            if not envelope.mail_from or self.local_part_limit:
                return False
        elif not (self.express_data and envelope.rcpt_tos and not self._decode_data and envelope.chunks is None):
            return False
        if self.recorder is not None:
            self.recorder.command(line, verb)  # = note(command_heard(line)): nothing in it to hide
        self._reset_timeout()
        if verb == "MAIL":
            assert address is not None
            envelope.smtp_utf8 = False
            status = self.event_handler.sender(envelope, address, [])
            if envelope.mail_from is not None and envelope.extensions is None:
                envelope.extensions = MailExtensions()
        elif verb == "RCPT":
            assert address is not None
            before = len(envelope.rcpt_tos)
            status = self.event_handler.recipient(session, envelope, address)
            if len(envelope.rcpt_tos) > before:
                envelope.recipients.append({"address": envelope.rcpt_tos[-1], "notify": None, "orcpt": None})
        elif verb == "DATA":
            status = GO_AHEAD
            self.express = _ExpressMessage()
        elif verb == "EHLO":
            assert address is not None  # the host name it gave
            self._set_rset_state()  # type: ignore[no-untyped-call]
            session.extended_smtp = True
            session.host_name = address
            status = self._ehlo_reply()
        elif verb == "QUIT":
            self._express_reply("221 Bye", replies)
            self._writer.write(b"".join(replies))
            replies.clear()
            self.express_writes += 1
            assert self._handler_coroutine is not None and self.transport is not None
            self._handler_coroutine.cancel()
            self.transport.close()  # what follows QUIT is never read
            return True
        else:
            if verb == "RSET":
                self._set_rset_state()  # type: ignore[no-untyped-call]
            status = "250 OK"
        self._express_reply(status, replies)
        return True

    def _express_content(self, data: bytes, position: int, replies: list[bytes]) -> int | bytes | None:
        """Message content from `position` on, as _read_data takes it: where the message ended
        (it is delivered and answered), None (all of it is content so far), or, over a limit,
        the whole message so far and the rest for aiosmtpd's own DATA to decide on."""
        message = self.express
        assert message is not None
        chunk = message.partial + data[position:] if message.partial else data[position:]
        batch = scan_data(chunk)
        lines = chunk[:batch.lines]
        message.size += len(lines)
        if (self._over_limits(message.size, lines)
                or (not batch.terminated and len(chunk) - batch.lines > self.line_length_limit)):
            self.express = None
            self.resuming_data = True  # its 354 was sent (push)
            # The command aiosmtpd reads to take the message over lies before the message.
            self.received += len(RESUME_DATA)
            self.message_from += len(RESUME_DATA)
            return RESUME_DATA + b"".join(message.taken) + chunk
        message.taken.append(lines)
        if not batch.terminated:
            message.partial = chunk[batch.lines:]
            return None
        self.express = None
        end = position + batch.consumed - len(message.partial)
        self.unprocessed = len(data) - end
        session, envelope = self.session, self.envelope
        assert session is not None and envelope is not None
        envelope.content = envelope.original_content = unstuff(b"".join(message.taken))
        self.event_handler.take(session, envelope)
        self._record_envelope(ACCEPTED)
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        self._express_reply(ACCEPTED, replies)
        return end

    def _express_reply(self, status: str, replies: list[bytes]) -> None:
        """push, for the replies the lane gives (never one of the error codes push counts)."""
        self.rate.answered()
        if self.reading is _MESSAGE:
            self._message_read(complete=True)
        if status == GO_AHEAD:
            self.reading, self.message_from = _MESSAGE, self._consumed()
        lines, wire = _express_wording(status, self.enhanced_codes)
        if self.recorder is not None:
            self.recorder.server_replies(lines)
        replies.append(wire)

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer, moved on at every command: one timer that, firing early, sets
        itself again for the deadline, instead of a new timer per command."""
        deadline = self.loop.time() + (duration or self._timeout_duration)
        self.idle_deadline = deadline
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or handle.when() > deadline:
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(deadline, self._idle_check)

    def _idle_check(self) -> None:
        if self.loop.time() < self.idle_deadline:
            self._timeout_handle = self.loop.call_at(self.idle_deadline, self._idle_check)
        else:
            self._timeout_cb()

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, aiosmtpd.smtp.TLSSetupException):
            if self.recorder is not None:
                # aiosmtpd keeps its SSL protocol, whose SSL object has what the SNI callback noted.
                self.recorder.tls_failed(error.__cause__, getattr(self._tls_protocol, "_sslobj", None))
            return "454 4.7.0 TLS handshake failed"
        return await super().handle_exception(error)

    async def refuse_before_tls(self, arg: str) -> None:
        await self.push("530 Must issue a STARTTLS command first")

    async def not_recognized(self, command: str, arg: str) -> None:
        """aiosmtpd's answer to an unknown command, without its fixed budget of five (which
        closes the connection): our own configurable budget counts instead (push). The line is
        not echoed: it may be a credential sent out of turn (the journal records this reply)."""
        await self.push("500 5.5.1 Error: command not recognized")

    async def ignore(self, arg: str) -> None:
        """What a command still buffered when the connection is closing does: nothing (a write
        to a closed TLS transport raises inside asyncio)."""

    async def chaos_at(self, command: str, arg: str) -> None:
        step = self.misbehaviour.at_command(command)
        assert step is not None
        await self._carry_out(step.line, step.actions)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """The address of MAIL/RCPT (None: malformed, which aiosmtpd answers with 553)."""
        simple = None if self.local_part_limit else parse_simple_path(arg)
        if simple is not None:
            return simple
        if arg.lstrip().startswith("<") and ">" not in arg:
            return None, None  # RFC 5321 4.1.2: a Path ends in ">"; the header parser would add it
        try:
            return super()._getaddr(arg)
        except Exception:  # noqa: BLE001  # the email header parser on hostile input (IndexError on "<a@")
            return None, None

    async def challenge_auth(self, challenge: str | bytes, encode_to_b64: bool = True,
                             log_client_response: bool = False) -> Any:
        """aiosmtpd's, except that a client cancelling with "*" (RFC 4954 section 4) is a reply
        and no WARNING: what a client sends is not the server's problem to log. The line read is
        the journal's to mask: AUTH LOGIN asks for the name first; the answer to any other
        challenge is the secret."""
        self.reading = Reading.NAME if challenge == self.AuthLoginUsernameChallenge else Reading.SECRET
        try:
            return await self._challenge(challenge, encode_to_b64)
        finally:
            self.reading = Reading.COMMAND

    async def _challenge(self, challenge: str | bytes, encode_to_b64: bool) -> Any:
        if isinstance(challenge, str):
            challenge = challenge.encode()
        await self.push(b"334 " + (base64.b64encode(challenge) if encode_to_b64 else challenge))
        line = (await self._reader.readline()).strip()
        if line == b"*":
            await self.push("501 5.7.0 Auth aborted")
            return MISSING
        try:
            return base64.b64decode(line, validate=True)
        except binascii.Error:
            await self.push("501 5.5.2 Can't decode base64")
            return MISSING

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        """aiosmtpd's PLAIN (RFC 4616), which ignores the authorization identity: acting as another
        user is not offered, so an authzid other than the login is refused, as IMAP and POP3 do."""
        if len(args) == 1:
            response = await self.challenge_auth("")
            if response is MISSING:
                return AuthResult(success=False)  # "*" or bad base64: challenge_auth answered it
        else:
            try:
                response = binascii.a2b_base64(args[1].encode(), strict_mode=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        assert isinstance(response, bytes)
        parts = response.split(b"\0")
        if len(parts) != 3:
            await self.push("501 5.5.2 Can't split auth value")
            return AuthResult(success=False, handled=True)
        authzid, login, password = parts
        if authzid not in (b"", login):
            return AuthResult(success=False, handled=False)  # 535, the same answer as a wrong password
        return self._authenticate("PLAIN", LoginPassword(login, password))

    async def auth_CRAM__MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        """RFC 2195 (aiosmtpd names it CRAM-MD5 from this method's name)."""
        return await self._challenge_response("CRAM-MD5", args)

    async def auth_SCRAM__SHA__256(self, server: SMTP, args: list[str]) -> AuthResult:
        """RFC 5802 / 7677, without channel binding."""
        return await self._challenge_response("SCRAM-SHA-256", args)

    async def auth_SCRAM__SHA__1(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._challenge_response("SCRAM-SHA-1", args)

    async def auth_SCRAM__SHA__1__PLUS(self, server: SMTP, args: list[str]) -> AuthResult:
        """With channel binding (tls-server-end-point or tls-exporter), inside TLS only."""
        return await self._challenge_response("SCRAM-SHA-1-PLUS", args)

    async def auth_SCRAM__SHA__256__PLUS(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._challenge_response("SCRAM-SHA-256-PLUS", args)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """A bearer token from POST /api/tokens (store.py)."""
        return await self._challenge_response("XOAUTH2", args)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        """RFC 7628."""
        return await self._challenge_response("OAUTHBEARER", args)

    async def auth_EXTERNAL(self, server: SMTP, args: list[str]) -> AuthResult:
        """RFC 4422 appendix A: the client certificate (client_certificate listeners) says who."""
        return await self._challenge_response("EXTERNAL", args)

    def sasl_context(self) -> SaslContext:
        store = self.event_handler.store
        offered = self.listener.mechanisms_offered(encrypted=self.security.encrypted)
        transport = self.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        return SaslContext(store.credentials, self.hostname, "smtp", tokens=store.tokens,
                           accept_expired=self.misbehaviour.accepts_expired_tokens,
                           channel_binding=lambda kind: channel_binding(ssl_object, kind),
                           plus_offered=any(mechanism in offered for mechanism in PLUS),
                           encrypted=self.security.encrypted)

    async def _challenge_response(self, mechanism: str, args: list[str]) -> AuthResult:
        """One exchange of sasl.py over 334 challenges (RFC 4954 section 4): the initial response,
        if any, then each answer; "*" or bad base64 ends it (challenge_auth answers those)."""
        response: bytes | None = None
        if len(args) > 1:
            try:
                response = b"" if args[1] == "=" else binascii.a2b_base64(args[1].encode(), strict_mode=True)
            except (binascii.Error, ValueError):
                await self.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        conversation = exchange(mechanism, self.sasl_context())
        step = conversation.step(response)
        while isinstance(step, Challenge):
            if self.auth is not None:
                # What is known so far, noted even if the client leaves now (smtp_AUTH's finally).
                self.auth.user, self.auth.secret_sent = conversation.user, conversation.secret_sent
                self.auth.expired_token = step.expired_token
            answer = await self.challenge_auth(step.data)
            if answer is MISSING:
                return AuthResult(success=False, handled=True)
            step = conversation.step(answer)
        if self.auth is not None:
            # CRAM and SCRAM never send the password; a bearer token is the secret itself.
            self.auth.user, self.auth.account, self.auth.secret_sent = step.user, step.account, step.secret_sent
            self.auth.binding, self.auth.expired_token = step.binding, step.expired_token
        if step.account is None or step.user is None:
            return AuthResult(success=False, handled=False)  # 535, as for a wrong password
        return AuthResult(success=True, auth_data=Accepted(step.user.encode(), step.account))

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """aiosmtpd's AUTH, watched: each one with a mechanism is one login attempt for the
        journal, decided (in _authenticate) or not."""
        self.auth = _AuthAttempt.of(arg)
        mechanism = arg.split()[0].upper() if arg and arg.split() else ""
        if (mechanism in self.listener.mechanisms and self.session is not None and not self.session.authenticated
                and mechanism not in self.listener.mechanisms_offered(encrypted=self.security.encrypted)):
            # sasl_mechanisms_before_tls leaves it out in the clear: RFC 4954 section 6's answer.
            await self.push("538 5.7.11 Encryption required for requested authentication mechanism")
            attempt, self.auth = self.auth, None
            if attempt is not None:
                self.note(attempt.note())
            return
        try:
            await super().smtp_AUTH(arg)
        finally:
            attempt, self.auth = self.auth, None
            if attempt is not None:
                self.note(attempt.note())

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        result = super()._authenticate(mechanism, auth_data)
        if self.auth is not None:
            login = getattr(auth_data, "login", None)
            self.auth.user = login.decode("utf-8", "replace") if isinstance(login, bytes) else None
            if result.success and isinstance(result.auth_data, Accepted):
                self.auth.account = result.auth_data.account
        return result

    # ---- the service extensions of smtp_extensions.py ----------------------------------------
    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        """aiosmtpd's EHLO with the extensions this listener offers; a scenario's hook (if any)
        gets the lines, as aiosmtpd would hand them over."""
        if not hostname:
            await self.push("501 Syntax: EHLO hostname")
            return
        session = self.session
        assert session is not None
        self._set_rset_state()  # type: ignore[no-untyped-call]
        session.extended_smtp = True
        response = self._ehlo_lines()
        if "EHLO" in self._handle_hooks:
            response = await self._call_handler_hook("EHLO", hostname, response)
        else:
            session.host_name = hostname
        if self.misbehaviour.active:
            for line in response:  # a scenario's delays and holds apply per line, as they always did
                await self.push(line)
        else:
            # The whole reply in one write: one send (and inside TLS one record) instead of one per
            # line, which was most of a short session's sends (issue 22).
            await self.push("\r\n".join(response))

    def _ehlo_reply(self) -> str:
        """The EHLO reply of a known-good listener (no hook to see it), made once per state."""
        state = (self.security.encrypted, bool(self._tls_protocol))
        reply = self.ehlo_replies.get(state)
        if reply is None:
            reply = self.ehlo_replies[state] = "\r\n".join(self._ehlo_lines())
        return reply

    def _ehlo_lines(self) -> list[str]:
        """The lines of the EHLO reply before a scenario's hook sees them."""
        response = [f"250-{self.hostname}"]
        if self.data_size_limit:
            response.append(f"250-SIZE {self.data_size_limit}")
        if not self._decode_data:
            response.append("250-8BITMIME")
        response += [f"250-{keyword}" for keyword in ehlo_keywords(self.extensions, encrypted=self.security.encrypted)]
        if self.tls_context and not self._tls_protocol:
            response.append("250-STARTTLS")
        if not self._auth_require_tls or self._tls_protocol:
            offered = self.listener.mechanisms_offered(encrypted=self.security.encrypted)
            response.append("250-AUTH " + " ".join(sorted(m for m in self._auth_methods if m in offered)))
        response.append("250 HELP")
        return response

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """aiosmtpd's MAIL, with DSN's RET and ENVID and REQUIRETLS taken here first (aiosmtpd
        refuses every parameter it does not know with 555)."""
        try:
            extensions = mail_extensions(parameters(self._parameter_text("FROM:", arg)), self.extensions,
                                         encrypted=self.security.encrypted)
        except ParameterError as error:
            await self.push(str(error))
            return
        self.taken_parameters = frozenset(extensions.taken)
        try:
            await super().smtp_MAIL(arg)
        finally:
            self.taken_parameters = frozenset()
        envelope = self.envelope
        if isinstance(envelope, _Envelope) and envelope.mail_from is not None and envelope.extensions is None:
            envelope.extensions = extensions

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        """aiosmtpd's RCPT, with DSN's NOTIFY and ORCPT taken here first."""
        try:
            extensions = rcpt_extensions(parameters(self._parameter_text("TO:", arg)), self.extensions)
        except ParameterError as error:
            await self.push(str(error))
            return
        envelope = self.envelope
        before = len(envelope.rcpt_tos) if envelope is not None else 0
        self.taken_parameters = frozenset(extensions.taken)
        try:
            await super().smtp_RCPT(arg)
        finally:
            self.taken_parameters = frozenset()
        if isinstance(envelope, _Envelope) and envelope is self.envelope and len(envelope.rcpt_tos) > before:
            envelope.recipients.append({"address": envelope.rcpt_tos[-1], "notify": extensions.notify,
                                        "orcpt": extensions.orcpt})

    def _parameter_text(self, keyword: str, arg: str | None) -> str:
        """What follows the address of MAIL FROM / RCPT TO, as the client wrote it ("" if none, or
        if the command is malformed: aiosmtpd answers that)."""
        rest = self._strip_command_keyword(keyword, arg or "")
        if not rest:
            return ""
        address, text = self._getaddr(rest)
        return text or "" if address else ""

    def _getparams(self, params: Any) -> Any:
        """aiosmtpd's, without the parameters smtp_MAIL / smtp_RCPT took (it would refuse them)."""
        kept = [param for param in params if param.partition("=")[0] not in self.taken_parameters]
        return super()._getparams(kept)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        status = await super()._call_handler_hook(command, *args)
        if command == "DATA":
            self._record_envelope(status)
        return status

    def _record_envelope(self, status: Any) -> None:
        """The journal's account of a message transaction as the server answered it: the
        extensions the client used with it (DSN, REQUIRETLS, SMTPUTF8, BDAT), never the content."""
        envelope = self.envelope
        if self.recorder is None or not isinstance(envelope, _Envelope):
            return
        extensions = envelope.extensions or MailExtensions()
        options = {option.partition("=")[0]: option.partition("=")[2] for option in envelope.mail_options}
        self.recorder.record.envelopes.append({
            "mail_from": envelope.mail_from,
            "recipients": envelope.recipients,
            "size": len(envelope.original_content or b""),
            "via": "BDAT" if envelope.chunks is not None else "DATA",
            "chunks": len(envelope.chunks) if envelope.chunks is not None else None,
            "body": options.get("BODY") or None,
            "smtputf8": bool(envelope.smtp_utf8),
            "requiretls": extensions.requiretls,
            "ret": extensions.ret,
            "envid": extensions.envid,
            "reply": str(status) if status is not MISSING else "250 OK",
        })

    @syntax("BDAT <size> [LAST]", when="chunking")
    async def smtp_BDAT(self, arg: str) -> None:
        """CHUNKING (RFC 3030): `BDAT <size> [LAST]`, then exactly <size> octets, no dot-stuffing.

        The octets are read whatever the answer (a client may have pipelined them behind the
        command), except when the command cannot say how many there are. Chunks add up to the
        message; past the message size limit the rest is read and dropped, the answer is 552 and
        the transaction is over (RFC 3030 section 2: the client must not send more of it)."""
        if not self.chunking:
            await self.not_recognized("BDAT", arg)
            return
        parsed = bdat_arguments(arg or "")
        if parsed is None:
            await self.push(BDAT_SYNTAX)
            return
        size, last = parsed
        envelope = self.envelope
        assert isinstance(envelope, _Envelope) and self.session is not None
        refusal = self._bdat_refusal(envelope)
        limit = self.data_size_limit
        chunk_fits = refusal is None and (not limit or envelope.size + size <= limit)
        data = await self._read_chunk(size, keep=chunk_fits)
        if data is _ENDED:
            return  # the client hung up inside the chunk: nothing to answer, the transaction is gone
        if refusal is not None:
            await self.push(refusal)
            return
        if data is None:  # over the limit: read, dropped
            self._set_rset_state()  # type: ignore[no-untyped-call]
            await self.push("552 5.3.4 Message size exceeds fixed maximum message size")
            return
        if envelope.chunks is None:
            envelope.chunks = []
        envelope.chunks.append(data)
        envelope.size += size
        if not last:
            await self.push(f"250 2.0.0 {size} octets received")
            return
        envelope.content = envelope.original_content = b"".join(envelope.chunks)
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    def _bdat_refusal(self, envelope: _Envelope) -> str | None:
        """Why this BDAT cannot add to a message (as DATA's checks, in aiosmtpd's wording), or None."""
        session = self.session
        assert session is not None
        if self.security.must_wait_for_tls:
            return "530 Must issue a STARTTLS command first"
        if not session.host_name:
            return "503 Error: send HELO first"
        if self._auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if not envelope.mail_from:
            return "503 Error: need MAIL command"
        if not envelope.rcpt_tos:
            return "503 Error: need RCPT command"
        return None

    async def _read_chunk(self, size: int, *, keep: bool) -> bytes | None:
        """The next `size` octets from the client: kept (returned) or only read (None), in
        pieces, so that a huge chunk over the limit costs no memory; _ENDED if the connection
        ends first (then it is closed). The journal shows the size."""
        reader = self._reader
        pieces: list[bytes] = []
        remaining = size
        self.reading = Reading.MESSAGE  # content, not commands: heard_line passes it by
        try:
            while remaining:
                piece = await reader.read(min(remaining, 65536))
                if not piece:
                    if self.transport is not None:
                        self.transport.close()
                    return _ENDED
                remaining -= len(piece)
                if keep:
                    pieces.append(piece)
        finally:
            self.reading = Reading.COMMAND
            self.note(Heard(b"", None, ((0, size - remaining, LITERAL),)))
        return b"".join(pieces) if keep else None

    @syntax("DATA")  # HELP lists a command, and explains it, only with its syntax line
    async def smtp_DATA(self, arg: str) -> None:
        try:
            await self._data(arg)
        except BaseException:
            self._message_read(complete=False)
            raise
        self._message_read(complete=True)

    async def _data(self, arg: str) -> None:
        """aiosmtpd's DATA, but taking every complete line already received at once instead of one
        readuntil() per line. A message with a line or a size over its limit is handed back to
        aiosmtpd's own reading (the lines taken so far put back first), which decides the reply."""
        session, envelope = self.session, self.envelope
        assert session is not None and envelope is not None
        if isinstance(envelope, _Envelope) and envelope.chunks is not None:
            # RFC 3030 section 3: BDAT and DATA do not mix in one transaction.
            await self.push("503 5.5.1 DATA not allowed after BDAT in one transaction")
            return
        if (not session.host_name or (self._auth_required and not session.authenticated)
                or not envelope.rcpt_tos or arg or self._decode_data or "DATA" not in self._handle_hooks):
            await super().smtp_DATA(arg)  # aiosmtpd's refusals, word for word
            return
        await self.push(GO_AHEAD)
        content = await self._read_data()
        if content is None:
            self.resuming_data = True
            await super().smtp_DATA(arg)
            return
        envelope.content = envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    def _over_limits(self, size: int, lines: bytes) -> bool:
        """A message of `size` bytes so far, whose latest complete lines are `lines`, is over the
        message size or the line length limit: aiosmtpd's own DATA decides its answer."""
        limit = self.data_size_limit
        return bool(limit and size > limit) or not lines_within(lines, self.line_length_limit)

    async def _read_data(self) -> bytes | None:
        """The message, unstuffed; None (with what was taken put back) when it is over a limit."""
        reader = self._reader
        taken: list[bytes] = []
        size = 0
        while True:
            try:
                first = await reader.readuntil(CRLF)
            except asyncio.LimitOverrunError:
                break  # a line over the limit; readuntil took nothing
            except asyncio.CancelledError:
                self._writer.close()  # the connection went away during DATA, as aiosmtpd does
                raise
            if first == b".\r\n":
                return unstuff(b"".join(taken))
            batch = scan_data(reader._buffer)  # type: ignore[attr-defined]
            chunk = await reader.readexactly(batch.consumed) if batch.consumed else b""
            lines = first + chunk[:batch.lines]
            taken.append(lines)
            size += len(lines)
            if self._over_limits(size, lines):
                if batch.terminated:
                    taken.append(b".\r\n")
                break
            if batch.terminated:
                return unstuff(b"".join(taken))
        reader._buffer[0:0] = b"".join(taken)  # type: ignore[attr-defined]
        return None

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.security.encrypted:
            await self.push(TLS_ACTIVE)
            return
        if self.misbehaviour.strips_starttls:
            await self.push("502 5.5.1 Command not implemented")
            return
        plan = self.misbehaviour.starttls(self.hostname)
        if plan is None or arg:
            await self._start_tls(arg)
            return
        handshake = next((action for action in plan.actions if isinstance(action, StartTls)), None)
        if handshake is not None:
            self.injected = plan.injected
            self.keep_pipelined = handshake.keep_pipelined
            await self._start_tls(arg)
        else:
            await self._carry_out(plan.reply or READY, plan.actions)

    async def _start_tls(self, arg: str) -> None:
        """aiosmtpd's STARTTLS. Should the handshake fail, what the client sends next in the clear
        is read, never answered, for the journal (aiosmtpd closes its side at once)."""
        if arg or self.tls_context is None or self.transport is None:
            await super().smtp_STARTTLS(arg)  # its 501 or 454
            return
        try:
            await self._handshake()
        except BaseException as error:
            spare = getattr(self._tls_protocol, "kept_socket", None)
            if spare is not None and isinstance(error, aiosmtpd.smtp.TLSSetupException):
                seconds, limit = read_after_failure_for(self.listener.limits)
                self.reading_after_failure = asyncio.get_running_loop().create_task(read_after_failure(
                    spare, self._overheard, seconds=seconds, limit=limit, unread=unread(self._tls_protocol)))
            elif spare is not None:  # cancelled (the server stopping)
                spare.close()
            raise

    async def _handshake(self) -> None:
        """aiosmtpd's own STARTTLS (1.4.6, smtp_STARTTLS after its argument check), with our TLS
        layer in place of asyncio's (handshake.ServerTlsProtocol): the layer calls connection_made
        with the TLS transport, and aiosmtpd's session takes it as the one after STARTTLS."""
        assert self.tls_context is not None and self.transport is not None
        await self.push("220 Ready to start TLS")
        self._original_transport = self.transport
        # keeps_socket: for what the client sends in the clear should the handshake fail.
        self._tls_protocol, handshake = start_server_tls(self.transport, self, self.tls_context, keeps_socket=True)
        self.transport = self._tls_protocol._app_transport
        try:
            await handshake
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise aiosmtpd.smtp.TLSSetupException() from error

    def _overheard(self, data: bytes) -> None:
        """Plaintext after the failed handshake, judged as command lines are (aiosmtpd is gone)."""
        *lines, self.unanswered = (self.unanswered + data).split(b"\n")
        for line in lines:
            heard = command_heard(line + b"\n", self._smtp_methods.functions)  # type: ignore[attr-defined]
            self.note(heard)
            if heard.verb == "AUTH":
                attempt = _AuthAttempt.of(line.rstrip(b"\r").partition(b" ")[2].decode("ascii", "replace"))
                if attempt is not None:
                    self.note(attempt.note())

    async def _carry_out(self, line: str | None, actions: Iterable[Output]) -> None:
        """A scenario's step: its line, then its actions (events.py), as connection.py does them."""
        if line is not None:
            await self.push(line)
        for action in actions:
            if isinstance(action, Close):
                if self.transport is not None:
                    self.transport.close()
            elif isinstance(action, NoTls):
                await self._without_tls(action)

    async def _without_tls(self, plan: NoTls) -> None:
        """After a STARTTLS success line that no TLS follows: the client's ClientHello gets the
        plan's plaintext and the connection closes, or nothing, ever (no goodbye either)."""
        self.silent = plan.answer is None
        client_hello = await self._reader.read(65536)
        if client_hello:
            self.note(tls_heard(client_hello, first=True))
        if plan.answer is not None and client_hello and self.transport is not None:
            # The plan's bytes exactly, as connection.py writes them (push would add a CRLF).
            if self.recorder is not None:
                self.recorder.server(plan.answer)
            cast(asyncio.Transport, self.transport).write(plan.answer)
            self.transport.close()
        while self.silent:  # swallow everything until the client (or the idle timeout) gives up
            more = await self._reader.read(65536)
            if not more:
                break
            self.note(tls_heard(more, first=False))

    async def push(self, status: str | bytes) -> None:
        if status == GO_AHEAD and self.resuming_data:
            self.resuming_data = False
            return  # aiosmtpd's DATA repeating the 354 smtp_DATA already sent
        self.rate.answered()  # before any pause of ours: the client is waiting for us now
        if self.reading is Reading.MESSAGE:
            self._message_read(complete=True)  # a reply in DATA comes only once the "." is read
        if status == GO_AHEAD:
            # The message begins after this line: what aiosmtpd reads now is content, not commands.
            self.reading, self.message_from = Reading.MESSAGE, self._consumed()
        if self.misbehaviour.delay:
            await asyncio.sleep(self.misbehaviour.delay)
        if self.hold_next_reply:
            await self._hold(self.hold_next_reply)
        if not self.greeted:
            self.greeted = True
            await self._greet(str(status))
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return  # closed after a goodbye: commands still buffered get no answer
        if isinstance(status, str):
            status = REPLY_WORDING.get(status, status)
            if "\r" in status:
                status = _BARE_CR.sub(" ", status)  # client text echoed in a reply must not split it
            if status == READY and self.injected:
                # The injection rule: the extra lines travel in the same write as the success line.
                status, self.injected = status + "\r\n" + self.injected.removesuffix("\r\n"), ""
            if not self.enhanced_codes:
                status = without_enhanced_code(status)
            code = status[:3]
            if code in _AUTH_ANSWER_CODES:
                await self._push_auth_answer(status)
                return
            if code in _BAD_COMMAND_CODES:
                self.bad_replies += 1
                if self.bad_replies >= self.listener.limits.max_bad_commands:
                    # The budget's last error is answered, then the goodbye (as IMAP and POP3 do).
                    await self._push_recorded(status)
                    await self._goodbye(TOO_MANY_ERRORS)
                    return
        await self._push_recorded(status)

    async def _hold(self, seconds: float) -> None:
        """Hold back the reply to the client's first command inside TLS (response-injection): a
        client that sends its next command meanwhile answered injected lines (data_received)."""
        self.hold_next_reply, self.holding = 0.0, True
        # The next command may already be here: TLS records that arrive together are decrypted
        # into one read, so it reached aiosmtpd's buffer with the first one, before the hold.
        self._answered_early(bytes(self._reader._buffer))  # type: ignore[attr-defined]
        try:
            await asyncio.sleep(seconds)
        finally:
            self.holding = False

    def _answered_early(self, data: bytes) -> None:
        """A command before the answer to the previous one was written: the client took the
        injected lines for that answer (issue 14: a desync the server can prove)."""
        if data and self.recorder is not None and self.recorder.record.answered_early is None:
            self.recorder.record.answered_early = data.split(b" ", 1)[0].strip().decode("ascii", "replace").upper()

    async def _push_auth_answer(self, status: str) -> None:
        """235 or 535: paused for a client host with too many recent failures, and the
        connection's last allowed failure followed by the goodbye."""
        limits = self.listener.limits
        failures = self.server_auth_failures
        delay = failures.delay(self.peer_host, limits.max_auth_failures_per_client, limits.auth_failure_delay)
        if status.startswith("535"):
            failures.failed(self.peer_host)
            self.failed_logins += 1
        if delay:
            await asyncio.sleep(delay)
        await self._push_recorded(status)
        if self.failed_logins >= limits.max_auth_failures:
            await self._goodbye(TOO_MANY_AUTH_FAILURES)

    async def _goodbye(self, status: str) -> None:
        await self._push_recorded(status)
        if self.transport is not None:
            self.transport.close()

    async def _greet(self, default: str) -> None:
        if self.greeted_early is not None:
            # early.py sent this very line at the accept (only on known-good listeners): recorded, not repeated.
            if self.recorder is not None:
                self.recorder.greeted_at_accept(default)
            return
        step = self.misbehaviour.greeting(default, self.hostname)
        if step.line is not None:
            await self._push_recorded(step.line)
        await self._carry_out(None, step.actions)

    def _push_recorded(self, status: str | bytes) -> Awaitable[None]:
        # Not a coroutine itself: every reply passes here, and one coroutine frame fewer per reply
        # is measurable in the benchmark.
        if self.recorder is not None:
            if isinstance(status, str) and "\n" not in status:
                self.recorder.server_reply(status)  # the common case: one line, no re-parsing
            else:
                self.recorder.server((status.encode() if isinstance(status, str) else status) + b"\r\n")
        return super().push(status)  # type: ignore[type-var]  # aiosmtpd's push takes str or bytes

    def _timeout_cb(self) -> None:
        if self.recorder is not None:
            self.recorder.record.idle_timeout = True
        # RFC 5321 4.5.3.2: say why before closing an idle connection.
        if self.transport is not None and not self.transport.is_closing() and not self.silent:
            goodbye = b"421 4.4.2 Idle timeout, closing connection\r\n"
            if self.recorder is not None:
                self.recorder.server(goodbye)
            cast(asyncio.Transport, self.transport).write(goodbye)
        super()._timeout_cb()  # type: ignore[no-untyped-call]


class _Commands(Mapping[str, Callable[[str], Awaitable[None]]]):
    """aiosmtpd's `_smtp_methods` (command name -> bound smtp_* method), binding on lookup. A
    lookup is also where this connection's own gates stand (aiosmtpd's are module-wide): the
    STARTTLS gate, unknown commands, and chaos at a command."""

    __slots__ = ("session", "functions")
    _by_class: dict[type, dict[str, Callable[..., Awaitable[None]]]] = {}

    def __init__(self, session: MailmodesSMTP) -> None:
        self.session = session
        cls = type(session)
        if cls not in self._by_class:
            self._by_class[cls] = {name.removeprefix("smtp_"): getattr(cls, name)
                                   for name in dir(cls) if name.startswith("smtp_")}
        self.functions = self._by_class[cls]

    def get(self, name: str, default: Any = None) -> Callable[[str], Awaitable[None]]:
        session = self.session
        transport = session.transport
        if transport is None or transport.is_closing():
            return session.ignore
        if session.security.must_wait_for_tls and name not in ALLOWED_BEFORE_TLS and name != "BDAT":
            return session.refuse_before_tls  # (BDAT reads its chunk first, then refuses: smtp_BDAT)
        if name in session.misbehaviour.chaos_stages:
            return functools.partial(session.chaos_at, name)
        function = self.functions.get(name)
        if function is None:
            return functools.partial(session.not_recognized, name)
        return function.__get__(session)  # type: ignore[no-any-return]

    def __getitem__(self, name: str) -> Callable[[str], Awaitable[None]]:
        return self.functions[name].__get__(self.session)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(self.functions)

    def __len__(self) -> int:
        return len(self.functions)


_BARE_CR = re.compile(r"\r(?!\n)")


class _HeardReader(asyncio.StreamReader):
    """aiosmtpd's own reader, which tells its session each line aiosmtpd takes: by line it reads
    only command lines, SASL responses and (ours in bulk) message content."""

    owner: MailmodesSMTP

    @classmethod
    def adopt(cls, reader: asyncio.StreamReader, owner: MailmodesSMTP) -> None:
        # The same object, so aiosmtpd and the protocol keep feeding and reading it as before.
        reader.__class__ = cls
        cast(_HeardReader, reader).owner = owner

    async def readuntil(self, separator: Any = b"\n") -> bytes:  # typeshed's type for it is private
        owner = self.owner
        # aiosmtpd's loop waiting for its next command, nothing buffered: the express lane's moment.
        owner.parked = not self._buffer and owner.reading is Reading.COMMAND and not owner.overrun  # type: ignore[attr-defined]
        try:
            line = await super().readuntil(separator)
        except asyncio.LimitOverrunError as error:
            owner.line_overrun(error.consumed)
            raise
        finally:
            owner.parked = False
        return owner.heard_line(line)


_ENDED = b"<the connection ended inside a BDAT chunk>"  # _read_chunk's answer then (compared by identity)


@functools.lru_cache(maxsize=256)
def _express_wording(status: str, enhanced_codes: bool) -> tuple[tuple[str, ...], bytes]:
    """What push makes of one of the express lane's replies: its lines as the transcript shows
    them, and the bytes sent. (A listener's replies are few: EHLO's is one per TLS state.)"""
    text = REPLY_WORDING.get(status, status)
    if not enhanced_codes:
        text = without_enhanced_code(text)
    return tuple(text.split("\r\n")), text.encode() + CRLF


class _ExpressMessage:
    """A message the express lane is reading: its complete lines so far (still dot-stuffed), its
    size, and the start of a line not yet complete."""

    __slots__ = ("taken", "size", "partial")

    def __init__(self) -> None:
        self.taken: list[bytes] = []
        self.size = 0
        self.partial = b""


class _Envelope(Envelope):
    """aiosmtpd's Envelope, with what the extensions of smtp_extensions.py add to a transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.extensions: MailExtensions | None = None  # of the MAIL command that began it
        self.recipients: list[dict[str, Any]] = []  # each accepted RCPT with its DSN parameters
        self.chunks: list[bytes] | None = None  # BDAT's chunks so far; None: no BDAT yet
        self.size = 0


class _Session(Session):
    """aiosmtpd's Session, without the warning its own smtp_AUTH triggers on every AUTH by
    setting the deprecated login_data (per connection: no filter on aiosmtpd's logger)."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value
