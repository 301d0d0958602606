"""The one adapter to aiosmtpd: every private aiosmtpd name mailmodes uses is in this module.

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
import enum
import functools
import re
import ssl
from collections.abc import Awaitable, Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import aiosmtpd.smtp
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Session, syntax

from mailmodes import __version__
from mailmodes.config import Listener
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
from mailmodes.record.journal import Journal
from mailmodes.misbehaviour import Misbehaviour
from mailmodes.protocols.smtp_hotpaths import CRLF, lines_within, parse_simple_path, scan_data, unstuff
from mailmodes.tls.policy import ListenerTls, TlsMode
from mailmodes.tls.handshake import (
    is_encrypted,
    read_after_failure,
    read_after_failure_for,
    spare_socket,
    tls_heard,
    tls_record_size,
    unread,
)
from mailmodes.record.transcript import Recorder, recorder_for

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
}

TLS_ACTIVE = "503 5.5.1 TLS already active"
GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"  # aiosmtpd's wording, kept
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
        return LoginAttempt(self.command, self.account or self.user, self.secret_sent, accepted=self.account is not None)


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


class MailmodesSMTP(SMTP):
    """aiosmtpd's SMTP with our TLS policy, reply wording, configurable limits, and the events of
    a scenario's plan carried out as connection.py carries them out for IMAP and POP3."""

    def __init__(self, listener: Listener, handler: Any, authenticator: Any, hostname: str,
                 tls_context: ssl.SSLContext | None, connections: set[MailmodesSMTP], journal: Journal,
                 misbehaviour: Misbehaviour, tls: ListenerTls) -> None:
        # aiosmtpd sizes its line reader from this attribute during __init__.
        self.line_length_limit = listener.limits.max_line_length
        self.listener = listener
        self.connections = connections
        self.journal = journal
        self.recorder: Recorder | None = None
        self.bad_replies = 0
        self.greeted = False
        self.keep_pipelined = False
        self.injected = ""
        self.silent = False  # starttls-silence: not even a goodbye at the idle timeout
        self.resuming_data = False  # aiosmtpd's DATA takes over after our 354 (smtp_DATA)
        self.reading = Reading.COMMAND
        self.received = 0  # bytes handed to aiosmtpd's reader: with its buffer, where it has read to
        self.message_from = 0
        self.overrun = 0  # an over-long line aiosmtpd is skipping, so far
        self.auth: _AuthAttempt | None = None
        self.reading_after_failure: asyncio.Task[None] | None = None  # after a failed STARTTLS handshake
        self.unanswered = b""  # what it read so far of a line
        self.ended = False
        self.speaks_tls: bool | None = None  # the client began with TLS (None: no byte yet)
        self.misbehaviour = misbehaviour
        self.tls = tls
        self.security = tls.security(encrypted=False)
        super().__init__(
            handler,
            hostname=hostname,
            ident=f"ESMTP mailmodes {__version__}",
            data_size_limit=listener.limits.max_message_size,
            timeout=listener.limits.idle_timeout,
            authenticator=authenticator,
            # Set after __init__: aiosmtpd warns when auth is required without auth_require_tls,
            # which is exactly the implicit-TLS case it cannot recognise.
            auth_required=False,
            **aiosmtpd_tls_arguments(tls, tls_context),
        )
        self._auth_required = listener.role == "submission"
        # aiosmtpd's per-connection tables of bound methods, about 2 KB of every idle connection:
        # the hooks are shared by the listener's connections, the commands bound on lookup.
        self._smtp_methods = _Commands(self)  # type: ignore[assignment]  # aiosmtpd only reads it as a mapping
        self._handle_hooks = handler.hooks

    def _create_session(self) -> Session:
        return _Session(self.loop)

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
        return self.received - len(self._reader._buffer)  # type: ignore[attr-defined]

    def _message_read(self, *, complete: bool) -> None:
        """DATA is over: the bytes aiosmtpd took since the 354, without the final "." line."""
        if self.reading is Reading.MESSAGE:
            self.reading = Reading.COMMAND
            size = self._consumed() - self.message_from - (DATA_END if complete else 0)
            self.note(MessageRead(max(size, 0), complete))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        if first and len(self.connections) >= self.listener.limits.max_connections:
            cast(asyncio.Transport, transport).write(b"421 4.7.0 Too many connections, try again later\r\n")
            transport.close()
            return
        if first:
            record = self.journal.open(self.listener, transport.get_extra_info("peername") or ())
            self.recorder = recorder_for(self.journal, record)
            self.connections.add(self)
        self.security = self.tls.security(encrypted=is_encrypted(transport))
        pipelined = bytes(self._reader._buffer) if not first else b""  # type: ignore[attr-defined]
        if pipelined:
            self.note(Pipelined(len(pipelined), executed=self.keep_pipelined))
        if self.security.encrypted and not self.tls.pretend_encrypted and self.recorder is not None:
            self.recorder.tls_started(transport.get_extra_info("ssl_object"), via_starttls=not first)
        super().connection_made(transport)  # after STARTTLS this discards the pipelined plaintext ...
        if pipelined and self.keep_pipelined:
            self._reader._buffer.extend(pipelined)  # type: ignore[attr-defined]  # ... unless vulnerable

    def handshake_failed(self, transport: asyncio.BaseTransport, error: BaseException,
                         ssl_object: ssl.SSLObject | None, connected_at: float) -> None:
        """The implicit-TLS handshake (ImplicitTls) failed: record it; aiosmtpd never saw this client."""
        peer = transport.get_extra_info("peername") or ()
        recorder = recorder_for(self.journal, self.journal.open(self.listener, peer, started=connected_at))
        recorder.tls_failed(error, ssl_object)
        self.journal.finish(recorder.record)

    def connection_lost(self, error: Exception | None) -> None:
        if self not in self.connections or self.ended:
            return  # refused in connection_made (aiosmtpd never set up its session), or said already
        self.ended = True
        super().connection_lost(error)
        reading = self.reading_after_failure
        if reading is not None and not reading.done():
            reading.add_done_callback(lambda task: self._forget())  # the record is not over yet
        else:
            self._forget()

    def _forget(self) -> None:
        self.connections.discard(self)
        if self.recorder is not None:
            self.journal.finish(self.recorder.record)

    def data_received(self, data: bytes) -> None:
        if self.recorder is not None:
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
        super().data_received(data)

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

    async def chaos_at(self, command: str, arg: str) -> None:
        step = self.misbehaviour.at_command(command)
        assert step is not None
        await self._carry_out(step.line, step.actions)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        simple = None if self.local_part_limit else parse_simple_path(arg)
        return simple if simple is not None else super()._getaddr(arg)

    @syntax("AUTH <mechanism>")
    async def smtp_AUTH(self, arg: str) -> None:
        """aiosmtpd's AUTH, watched: each one with a mechanism is one login attempt for the
        journal, decided (in _authenticate) or not."""
        self.auth = _AuthAttempt.of(arg)
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

    async def challenge_auth(self, challenge: str | bytes, encode_to_b64: bool = True,
                             log_client_response: bool = False) -> Any:
        # AUTH LOGIN asks for the name first; the answer to any other challenge is the secret.
        self.reading = Reading.NAME if challenge == self.AuthLoginUsernameChallenge else Reading.SECRET
        try:
            return await super().challenge_auth(challenge, encode_to_b64, log_client_response)
        finally:
            self.reading = Reading.COMMAND

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

    async def _read_data(self) -> bytes | None:
        """The message, unstuffed; None (with what was taken put back) when it is over a limit."""
        reader = self._reader
        taken: list[bytes] = []
        size, size_limit = 0, self.data_size_limit
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
            if (size_limit and size > size_limit) or not lines_within(lines, self.line_length_limit):
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
        actions = plan.actions()
        if actions and isinstance(actions[0], StartTls):
            self.injected = plan.injected
            self.keep_pipelined = actions[0].keep_pipelined
            await self._start_tls(arg)
        else:
            await self._carry_out(plan.reply or READY, actions)

    async def _start_tls(self, arg: str) -> None:
        """aiosmtpd's STARTTLS. Should the handshake fail, what the client sends next in the clear
        is read, never answered, for the journal (aiosmtpd closes its side at once)."""
        spare = spare_socket(self.transport) if self.transport is not None and not arg else None
        try:
            await super().smtp_STARTTLS(arg)
        except aiosmtpd.smtp.TLSSetupException:
            if spare is not None:
                seconds, limit = read_after_failure_for(self.listener.limits)
                self.reading_after_failure = asyncio.get_running_loop().create_task(read_after_failure(
                    spare, self._overheard, seconds=seconds, limit=limit, unread=unread(self._tls_protocol)))
                spare = None
            raise
        finally:
            if spare is not None:
                spare.close()

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
            await self._push_recorded(plan.answer)
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
        if self.reading is Reading.MESSAGE:
            self._message_read(complete=True)  # a reply in DATA comes only once the "." is read
        if status == GO_AHEAD:
            # The message begins after this line: what aiosmtpd reads now is content, not commands.
            self.reading, self.message_from = Reading.MESSAGE, self._consumed()
        if self.misbehaviour.delay:
            await asyncio.sleep(self.misbehaviour.delay)
        if not self.greeted:
            self.greeted = True
            await self._greet(str(status))
            return
        if isinstance(status, str):
            status = REPLY_WORDING.get(status, status)
            if status == READY and self.injected:
                # The injection rule: the extra lines travel in the same write as the success line.
                status, self.injected = status + "\r\n" + self.injected.removesuffix("\r\n"), ""
            if status[:1] == "5" and status[:3] in ("500", "501", "502", "503", "504"):
                self.bad_replies += 1
                if self.bad_replies > self.listener.limits.max_bad_commands:
                    status = "421 4.7.0 Too many errors, closing connection"
                    await self._push_recorded(status)
                    assert self.transport is not None
                    self.transport.close()
                    return
        await self._push_recorded(status)

    async def _greet(self, default: str) -> None:
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
        if session.security.must_wait_for_tls and name not in ALLOWED_BEFORE_TLS:
            return session.refuse_before_tls
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
        try:
            line = await super().readuntil(separator)
        except asyncio.LimitOverrunError as error:
            self.owner.line_overrun(error.consumed)
            raise
        return self.owner.heard_line(line)


class _Session(Session):
    """aiosmtpd's Session, without the warning its own smtp_AUTH triggers on every AUTH by
    setting the deprecated login_data (per connection: no filter on aiosmtpd's logger)."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value
