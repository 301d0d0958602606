"""SMTP on aiosmtpd: the one mapping from TlsMode to aiosmtpd's arguments, delivery, AUTH.

aiosmtpd tracks "encrypted" by a flag only STARTTLS sets (its issues 274 and 281), so the
decisions are taken from our own `Security`, which reads the transport; aiosmtpd is only given
arguments under which its own checks agree with ours.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, cast

import aiosmtpd.smtp
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from mailmodes import __version__
from mailmodes.config import Listener
from mailmodes.journal import Journal
from mailmodes.misbehaviour import GARBAGE, Misbehaviour
from mailmodes.smtp_hotpaths import CRLF, lines_within, parse_simple_path, scan_data, unstuff
from mailmodes.store import Account, Store
from mailmodes.tls import HandshakeWatch, Security, TlsMode, handshake_timeout, is_encrypted
from mailmodes.transcript import Recorder, recorder_for

log = logging.getLogger(__name__)

# aiosmtpd itself sets the deprecated Session.login_data on every AUTH and logs a warning for it.
logging.getLogger("mail.log").addFilter(lambda record: "login_data is deprecated" not in record.getMessage())
# aiosmtpd closes after a fixed 5 unknown commands; our own configurable budget counts instead.
aiosmtpd.smtp.BOGUS_LIMIT = 1 << 30
# RFC 3207 section 4 lets a STARTTLS-required server take only NOOP, EHLO, STARTTLS and QUIT
# (aiosmtpd's set). AUTH passes that gate here so that aiosmtpd's smtp_AUTH answers it with the
# more precise 538 of RFC 4954 instead of 530.
aiosmtpd.smtp.ALLOWED_BEFORE_STARTTLS.add("AUTH")

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
RELAY_DENIED = "554 5.7.1 Relay access denied"
USER_UNKNOWN = "550 5.1.1 User unknown"


def aiosmtpd_tls_arguments(mode: TlsMode, tls_context: ssl.SSLContext | None) -> dict[str, Any]:
    """The one place where a TLS mode becomes aiosmtpd arguments.

    aiosmtpd's "is it encrypted" flag is set by STARTTLS only, so on an implicit listener (always
    encrypted) it must not require TLS for AUTH: there its check and ours agree only this way.
    """
    table: dict[TlsMode, dict[str, Any]] = {
        TlsMode.IMPLICIT: {"tls_context": None, "require_starttls": False, "auth_require_tls": False},
        TlsMode.STARTTLS_REQUIRED: {"tls_context": tls_context, "require_starttls": True, "auth_require_tls": True},
        TlsMode.STARTTLS_OPTIONAL: {"tls_context": tls_context, "require_starttls": False, "auth_require_tls": False},
        TlsMode.PLAINTEXT: {"tls_context": None, "require_starttls": False, "auth_require_tls": False},
    }
    return table[mode]


class DeliveryHandler:
    """aiosmtpd handler: who may send to whom, and where accepted mail goes. Never relays.

    Stateless: one per listener, shared by its connections."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @functools.cached_property
    def hooks(self) -> dict[str, Callable[..., Any]]:
        """The table aiosmtpd builds from a handler's handle_* methods for every connection, made
        once here and shared."""
        return {name.removeprefix("handle_"): getattr(self, name) for name in dir(self) if name.startswith("handle_")}

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2]
        if self.store.is_local_domain(domain):
            if self.store.recipient(address) is None:
                return USER_UNKNOWN
        elif not session.authenticated:
            return RELAY_DENIED
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        local: list[Account] = []
        outbound: list[str] = []
        for address in envelope.rcpt_tos:
            account = self.store.recipient(address)
            if account is None:
                outbound.append(address)
            else:
                local.append(account)
        self.store.deliver(local, data)
        if outbound:
            login = getattr(session.auth_data, "login", b"") or b""
            sender = login.decode(errors="replace")
            self.store.capture(sender, envelope.mail_from or "", outbound, data)
        return "250 2.0.0 OK: message accepted"


class ScenarioDeliveryHandler(DeliveryHandler):
    """The handler of a listener with a scenario: EHLO passes through it. A known-good listener
    has no EHLO hook at all, so aiosmtpd answers EHLO on its own, straight path."""

    async def handle_EHLO(
        self, server: MailmodesSMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """aiosmtpd's EHLO reply, passed through the listener's scenario (known-good: unchanged)."""
        misbehaviour = server.misbehaviour
        refusal = "500 5.5.1 Command not recognized" if misbehaviour.refuses_ehlo else misbehaviour.capability_error()
        if refusal:
            return [refusal]
        session.host_name = hostname
        keywords = misbehaviour.capabilities([line[4:] for line in responses[1:]], encrypted=server.security.encrypted)
        lines = [responses[0][4:], *keywords]
        return [f"250{' ' if i == len(lines) - 1 else '-'}{line}" for i, line in enumerate(lines)]


class Authenticator:
    def __init__(self, store: Store) -> None:
        self.store = store

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            try:
                account = self.store.authenticate(auth_data.login.decode(), auth_data.password.decode())
            except UnicodeDecodeError:
                account = None
            if account is not None:
                return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)


class MailmodesSMTP(SMTP):
    """aiosmtpd's SMTP with our TLS policy, reply wording, and configurable limits."""

    def __init__(self, listener: Listener, handler: DeliveryHandler, authenticator: Authenticator, hostname: str,
                 tls_context: ssl.SSLContext | None, connections: set[MailmodesSMTP], journal: Journal,
                 misbehaviour: Misbehaviour) -> None:
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
        self.misbehaviour = misbehaviour
        mode = TlsMode.PLAINTEXT if self.misbehaviour.strips_starttls else listener.tls
        self.security = Security(mode, encrypted=False, tls_available=tls_context is not None)
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
            **aiosmtpd_tls_arguments(mode, tls_context),
        )
        self._auth_required = listener.role == "submission"
        if self.misbehaviour.chaos is not None and self.misbehaviour.chaos.stage:
            # Only a chaos listener pays for wrapping the commands.
            self._smtp_methods = {name: self._chaos_at(name, method) for name, method in self._smtp_methods.items()}
        else:
            # aiosmtpd's per-connection tables of bound methods, about 2 KB of every idle connection:
            # the hooks are shared by the listener's connections, the commands bound on lookup.
            self._smtp_methods = _Commands(self)  # type: ignore[assignment]  # aiosmtpd only reads it as a mapping
        self._handle_hooks = handler.hooks

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
        self.security.encrypted = is_encrypted(transport)
        if self.security.encrypted and self.recorder is not None:
            self.recorder.tls_started(transport.get_extra_info("ssl_object"), via_starttls=not first)
        pipelined = bytes(self._reader._buffer) if not first else b""  # type: ignore[attr-defined]
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
        if self not in self.connections:
            return  # refused in connection_made: aiosmtpd never set up its session
        self.connections.discard(self)
        if self.recorder is not None:
            self.journal.finish(self.recorder.record)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if self.recorder is not None:
            self.recorder.client(data)
        super().data_received(data)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, aiosmtpd.smtp.TLSSetupException):
            if self.recorder is not None:
                # aiosmtpd keeps its SSL protocol, whose SSL object has what the SNI callback noted.
                self.recorder.tls_failed(error.__cause__, getattr(self._tls_protocol, "_sslobj", None))
            return "454 4.7.0 TLS handshake failed"
        return await super().handle_exception(error)

    def _chaos_at(self, command: str, method: Callable[[str], Awaitable[None]]) -> Callable[[str], Awaitable[None]]:
        @functools.wraps(method)  # HELP reads the syntax line from the method's attributes
        async def maybe_chaos(arg: str) -> None:
            chaos = self.misbehaviour.at_stage(command)
            if chaos is not None and (chaos.reply or chaos.disconnect):
                await self._chaos(chaos.reply)
                return
            await method(arg)

        return maybe_chaos

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        simple = None if self.local_part_limit else parse_simple_path(arg)
        return simple if simple is not None else super()._getaddr(arg)

    @syntax("DATA")  # HELP lists a command, and explains it, only with its syntax line
    async def smtp_DATA(self, arg: str) -> None:
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
            await super().smtp_STARTTLS(arg)
        elif plan.then == "stay":
            await self.push(plan.reply or READY)
        elif plan.then in ("garbage", "silence"):
            await self.push(READY)
            client_hello = await self._reader.read(65536)
            if plan.then == "garbage" and client_hello and self.transport is not None:
                await self._push_recorded(GARBAGE)
                self.transport.close()
            self.silent = plan.then == "silence"
            while self.silent and await self._reader.read(65536):
                pass  # swallow everything until the client (or the idle timeout) gives up
        else:
            self.injected = plan.injected
            self.keep_pipelined = plan.keep_pipelined
            await super().smtp_STARTTLS(arg)

    async def _chaos(self, reply: str | None) -> None:
        if reply:
            await self.push(reply)
        elif self.transport is not None:
            self.transport.close()

    async def push(self, status: str | bytes) -> None:
        if self.resuming_data and status == GO_AHEAD:
            self.resuming_data = False
            return  # aiosmtpd's DATA repeating the 354 smtp_DATA already sent
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
        chaos = self.misbehaviour.at_stage("GREETING")
        if chaos is not None and chaos.disconnect:
            await self._chaos(None)
            return
        greeting = (chaos.reply if chaos else None) or self.misbehaviour.greeting(self.hostname) or default
        await self._push_recorded(greeting)
        if self.misbehaviour.closes_after_greeting() and self.transport is not None:
            self.transport.close()

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
    """aiosmtpd's `_smtp_methods` (command name -> bound smtp_* method), binding on lookup."""

    __slots__ = ("session", "functions")
    _by_class: dict[type, dict[str, Callable[..., Awaitable[None]]]] = {}

    def __init__(self, session: MailmodesSMTP) -> None:
        self.session = session
        cls = type(session)
        if cls not in self._by_class:
            self._by_class[cls] = {name.removeprefix("smtp_"): getattr(cls, name)
                                   for name in dir(cls) if name.startswith("smtp_")}
        self.functions = self._by_class[cls]

    def __getitem__(self, name: str) -> Callable[[str], Awaitable[None]]:
        return self.functions[name].__get__(self.session)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(self.functions)

    def __len__(self) -> int:
        return len(self.functions)


class ImplicitTls(asyncio.Protocol):
    """Accepts plain TCP and does the TLS handshake itself before handing over to aiosmtpd, so
    that a client's alert (a rejected certificate) or its plaintext is recorded, not just logged."""

    def __init__(self, inner: MailmodesSMTP, context: ssl.SSLContext, pending: set[ImplicitTls]) -> None:
        self.inner = inner
        self.context = context
        self.pending = pending  # the listener's handshakes in progress (SmtpListener.abort_connections)
        self.task: asyncio.Task[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.connected_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport, self.connected_at = transport, time.time()
        transport.pause_reading()  # start_tls resumes it once the TLS layer is in place
        self.pending.add(self)
        self.task = asyncio.get_running_loop().create_task(self._handshake(transport))

    async def _handshake(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            with HandshakeWatch() as watch:
                tls_transport = await loop.start_tls(
                    transport, self.inner, self.context, server_side=True,
                    ssl_handshake_timeout=handshake_timeout(self.inner.listener.limits.idle_timeout),
                )
            if tls_transport is None:  # how Python 3.12+ reports the connection gone mid-handshake
                raise ConnectionAbortedError("the connection closed during the TLS handshake")
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as error:
            self.inner.handshake_failed(transport, error, watch.ssl_object, self.connected_at)
            transport.close()
            return
        finally:
            self.pending.discard(self)
        self.inner.connection_made(tls_transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


class SmtpListener:
    """The protocol factory of one SMTP listener (pass it to loop.create_server), which can also
    end every connection it made."""

    def __init__(self, listener: Listener, store: Store, hostname: str, tls_context: ssl.SSLContext | None,
                 journal: Journal) -> None:
        self.listener, self.hostname, self.tls_context, self.journal = listener, hostname, tls_context, journal
        self.connections: set[MailmodesSMTP] = set()
        self.handshakes: set[ImplicitTls] = set()
        # Stateless, so one of each per listener: every idle connection is that much smaller.
        self.misbehaviour = Misbehaviour(listener.scenario, "smtp", listener.chaos)
        self.handler = ScenarioDeliveryHandler(store) if self.misbehaviour.active else DeliveryHandler(store)
        self.authenticator = Authenticator(store)

    def __call__(self) -> asyncio.Protocol:
        session = MailmodesSMTP(self.listener, self.handler, self.authenticator, self.hostname, self.tls_context,
                                self.connections, self.journal, self.misbehaviour)
        if self.listener.tls is TlsMode.IMPLICIT and not self.misbehaviour.speaks_plaintext_on_implicit:
            assert self.tls_context is not None
            return ImplicitTls(session, self.tls_context, self.handshakes)
        return session

    def abort_connections(self) -> None:
        """The server is stopping: drop every connection at once (no TLS goodbye to wait for)."""
        for handshake in list(self.handshakes):
            if handshake.transport is not None:
                handshake.transport.abort()
        for session in list(self.connections):
            if session.transport is not None:
                cast(asyncio.Transport, session.transport).abort()
