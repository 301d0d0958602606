"""The only asyncio code for IMAP and POP3: read, feed the session, write, STARTTLS, limits.

A protocol session (imap/session.py, pop3.py) does no I/O. It is driven through `LineSession`
(events.py): bytes go in through `feed`, and out come bytes to send plus the instructions this
module carries out (StartTls, Close, NoTls), with the listener's scenario delay before each write.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

from mailmodes.config import Listener
from mailmodes.protocols.events import (
    Close,
    Connection,
    Delay,
    LineSession,
    NoTls,
    Output,
    Pipelined,
    SessionFactory,
    StartTls,
)
from mailmodes.protocols.guards import AuthFailures, ClientSlots, RateGuard
from mailmodes.protocols.read_buffer import SharedReadBuffer
from mailmodes.record.journal import Journal
from mailmodes.record.transcript import Recorder, recorder_for
from mailmodes.scenarios.misbehaviour import Misbehaviour
from mailmodes.tls.binding import channel_binding
from mailmodes.tls.handshake import (
    HandshakeWatch,
    handshake_timeout,
    is_encrypted,
    read_after_failure,
    read_after_failure_for,
    spare_socket,
    tls_heard,
    tls_record_size,
)
from mailmodes.tls.policy import ListenerTls

log = logging.getLogger(__name__)


class LineStreamProtocol(asyncio.StreamReaderProtocol, SharedReadBuffer):
    """asyncio.start_server's protocol, reading into the shared buffer (read_buffer.py), and told
    when its connection turns to TLS. asyncio learns that only once start_tls returns; an end of
    file in the same read as the handshake's last message (openssl s_client -starttls with nothing
    to say does this) reaches eof_received before, which then asks to keep a half-open TLS
    connection, and asyncio logs a warning for every such client."""

    tls_requested = False

    def eof_received(self) -> bool:
        keep_open = bool(super().eof_received())
        return keep_open and not self.tls_requested


async def serve_lines(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
                      **where: Any) -> asyncio.Server:
    """asyncio.start_server, with LineStreamProtocol for each connection; `where` as create_server
    takes it (host and port, or the socket serve's early start bound)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: LineStreamProtocol(asyncio.StreamReader(), handle), **where)


async def start_tls(writer: asyncio.StreamWriter, context: ssl.SSLContext, timeout: float) -> None:
    protocol = writer.transport.get_protocol()
    if isinstance(protocol, LineStreamProtocol):
        protocol.tls_requested = True
    await writer.start_tls(context, ssl_handshake_timeout=timeout)
READ_SIZE = 65536


class LineServer:
    """One listener for a LineSession protocol: accepts, enforces connection and idle limits."""

    def __init__(
        self,
        listener: Listener,
        session_factory: SessionFactory,
        tls_context: ssl.SSLContext | None,
        too_many: bytes,
        journal: Journal,
        misbehaviour: Misbehaviour,
        tls: ListenerTls,
        auth_failures: AuthFailures | None = None,
        commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.listener = listener
        # A durable store's flush: awaited before anything is written to the client, so that no
        # OK for an APPEND, STORE, EXPUNGE or POP3 QUIT goes out before the change is on disk.
        self.commit = commit
        self.session_factory = session_factory
        self.tls_context = tls_context
        self.too_many = too_many
        self.journal = journal
        self.misbehaviour = misbehaviour
        self.tls = tls
        self.auth_failures = auth_failures or AuthFailures()
        self.active: set[asyncio.Task[None]] = set()
        self.refusing: set[asyncio.Task[None]] = set()  # over a limit, being told so
        self.clients = ClientSlots()
        self.stopping = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        limits = self.listener.limits
        host = _peer_host(writer)
        full = len(self.active) >= limits.max_connections
        if full or not self.clients.take(host, limits.max_connections_per_client):
            self.refusing.add(task)
            try:
                await self._refuse(writer)
            finally:
                self.refusing.discard(task)
            return
        try:
            await self._serve(task, reader, writer)
        finally:
            self.clients.give_back(host)

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """Over a connection limit: say so and close. On an implicit-TLS port inside TLS, as SMTP
        does, since a client there reads plaintext as a broken handshake ("wrong version number")."""
        if self.tls.tls_first:
            assert self.tls_context is not None
            try:
                await start_tls(writer, self.tls_context, handshake_timeout(self.listener.limits.idle_timeout))
            except (ssl.SSLError, ConnectionError, TimeoutError, OSError, asyncio.CancelledError):
                writer.transport.abort()  # see handle(): wait_closed() would never return here
                return
        writer.write(self.too_many)
        await _close(writer)

    async def _serve(self, task: asyncio.Task[None], reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        self.active.add(task)
        record = self.journal.open(self.listener, writer.get_extra_info("peername") or ())
        connection = _ClientConnection(self, reader, writer, recorder_for(self.journal, record))
        try:
            # Implicit TLS: the handshake is ours rather than asyncio's, so that a client's alert
            # (or its plaintext) is recorded instead of vanishing into asyncio's log.
            if not self.tls.tls_first or await connection.handshake(via_starttls=False):
                await connection.serve()
        except asyncio.CancelledError:
            # The server is stopping. End normally rather than cancelled: Python 3.11's
            # start_server callback logs a spurious traceback for a cancelled connection task.
            log.debug("%s: connection closed by the server stopping", self.listener.name)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as error:
            log.debug("%s: connection ended: %s", self.listener.name, error)
        except Exception:
            log.exception("%s: unexpected error; this connection is closed, the server goes on", self.listener.name)
        finally:
            self.active.discard(task)
            self.journal.finish(record)
            if connection.upgrade_unfinished or self.stopping:
                # After an unfinished upgrade start_tls has closed the TCP transport, but asyncio
                # never tells the stream, so wait_closed() would wait forever; and a stopping
                # server does not wait for TLS goodbyes.
                writer.transport.abort()
            else:
                await _close(writer)

    def abort_connections(self) -> None:
        """The server is stopping: end every connection's task (each closes its transport)."""
        self.stopping = True
        for task in list(self.active | self.refusing):
            task.cancel()


class _ClientConnection:
    """One accepted connection: the read loop, ordered output, the STARTTLS upgrade."""

    def __init__(self, server: LineServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 recorder: Recorder) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.recorder = recorder
        self.woken = asyncio.Event()
        self.security = server.tls.security(encrypted=False)
        self.session: LineSession | None = None
        self.no_tls: NoTls | None = None  # after a STARTTLS success line that no TLS layer follows
        self.speaks_tls = False  # the client opened a plaintext-first connection with TLS
        self.read_any = False
        self.upgrade_unfinished = False  # a start_tls that failed or was cancelled: see LineServer.handle
        limits = server.listener.limits
        self.rate = RateGuard(limits.min_data_rate, limits.data_rate_window)

    async def handshake(self, *, via_starttls: bool) -> bool:
        assert self.server.tls_context is not None
        self.upgrade_unfinished = True
        limits = self.server.listener.limits
        # Taken now: asyncio closes its own socket as soon as a handshake fails.
        spare = spare_socket(self.writer.transport) if via_starttls else None
        watch = HandshakeWatch(self.writer.transport)
        try:
            await start_tls(self.writer, self.server.tls_context, handshake_timeout(limits.idle_timeout))
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as error:
            self.recorder.tls_failed(error, watch.ssl_object)
            plaintext, spare = spare, None  # read_after_failure closes it
            if plaintext is not None:
                seconds, limit = read_after_failure_for(limits)
                await read_after_failure(plaintext, self._overheard, seconds=seconds, limit=limit, unread=watch.unread())
            return False
        finally:
            if spare is not None:
                spare.close()
        self.upgrade_unfinished = False
        ssl_object = self.writer.get_extra_info("ssl_object")
        self.recorder.tls_started(ssl_object, via_starttls=via_starttls)
        return True

    async def serve(self) -> None:
        listener = self.server.listener
        self.security = self.server.tls.security(encrypted=is_encrypted(self.writer.transport))
        peer = self.writer.get_extra_info("peername") or ("", 0)
        session = self.session = self.server.session_factory(
            Connection(listener, self.security, peer[:2], self.woken.set, self.server.misbehaviour,
                       self.server.auth_failures, self.recorder,
                       lambda kind: channel_binding(self.writer.get_extra_info("ssl_object"), kind))
        )
        loop = asyncio.get_running_loop()
        idle_timeout = listener.limits.idle_timeout
        deadline = loop.time() + idle_timeout
        read: asyncio.Future[bytes] | None = None
        woken: asyncio.Future[bool] | None = None
        try:
            if await self.send(session.greeting()):
                return
            while True:
                # Both futures live until they complete: only a finished one is replaced.
                read = read or asyncio.ensure_future(self.reader.read(READ_SIZE))
                woken = woken or asyncio.ensure_future(self.woken.wait())
                until = min(deadline, self.rate.check_at() or deadline)
                done, _ = await asyncio.wait(
                    (read, woken), timeout=max(0.0, until - loop.time()), return_when=asyncio.FIRST_COMPLETED
                )
                if woken in done:
                    woken = None
                    self.woken.clear()
                    if await self.send(session.wake()):
                        return
                if read in done:
                    data, read = read.result(), None
                    if not data:
                        return
                    deadline = loop.time() + idle_timeout
                    if self.no_tls is None:  # a scenario that swallows the ClientHello waits on purpose
                        self.rate.received(loop.time(), len(data))
                    self.recorder.client(data)
                    if self.no_tls is not None:
                        self.recorder.note(tls_heard(data, first=True))
                        if self._answer_without_tls(self.no_tls):
                            return
                    elif self._is_tls(data):
                        self.recorder.note(tls_heard(data, first=not self.read_any))
                    elif await self.send(session.feed(data)):
                        return
                    self.read_any = True
                elif not done:
                    now = loop.time()
                    if now < deadline and not self.rate.too_slow(now):
                        continue  # a window of the rate check ended with enough data in it
                    # Too slow counts as idle: one byte every few seconds is no activity.
                    self.recorder.record.idle_timeout = True
                    if self.no_tls is None:  # a client waiting for a TLS handshake gets no plaintext goodbye
                        await self.send(session.timed_out())
                    return
        finally:
            for pending in (read, woken):
                if pending is not None:
                    pending.cancel()
            session.connection_lost()

    async def send(self, outputs: list[Output]) -> bool:
        """Carry out the outputs in order; True when the connection is to be closed."""
        pending = list(outputs)
        if pending and self.server.commit is not None:
            await self.server.commit()
        delay = self.server.misbehaviour.delay
        while pending:
            item = pending.pop(0)
            if isinstance(item, bytes):
                if delay:  # chaos: a slow server, before every write
                    await self.writer.drain()
                    await asyncio.sleep(delay)
                self.writer.write(item)
                self.recorder.server(item)
                self.rate.answered()
            elif isinstance(item, Delay):
                await self.writer.drain()
                await asyncio.sleep(item.seconds)
            elif isinstance(item, Close):
                await self.writer.drain()
                return True
            elif isinstance(item, NoTls):
                self.no_tls = item
            else:
                if not item.keep_pipelined:
                    self._discard_read_ahead()
                # No read between the success line and start_tls, so no plaintext the client
                # pipelined can be read in between (the CVE-2011-0411 class).
                if not await self.handshake(via_starttls=True):
                    return True
                self.security.tls_started()
                assert self.session is not None
                pending = self.session.tls_started() + pending
        await self.writer.drain()
        return False

    def _overheard(self, data: bytes) -> None:
        assert self.session is not None
        self.session.overheard(data)

    def _is_tls(self, data: bytes) -> bool:
        """A client that opens a plaintext-first connection with a TLS record is set for implicit
        TLS: what it sends is no command, so the session never sees it (and answers no garbage)."""
        if not self.read_any and not self.security.encrypted:
            self.speaks_tls = tls_record_size(data) is not None
        return self.speaks_tls

    def _answer_without_tls(self, plan: NoTls) -> bool:
        """The client's bytes after a STARTTLS success line that no TLS followed (its ClientHello):
        answered with the plan's plaintext and closed, or swallowed; True to close now."""
        if plan.answer is None:
            return False
        self.writer.write(plan.answer)
        self.recorder.server(plan.answer)
        return True

    def _discard_read_ahead(self) -> None:
        """Drop plaintext asyncio already read past the session's last chunk. StreamReader has no
        public way to do this (aiosmtpd clears the same private buffer after its STARTTLS)."""
        buffered: bytearray = self.reader._buffer  # type: ignore[attr-defined]
        if buffered:
            self.recorder.note(Pipelined(len(buffered)))
            buffered.clear()


def _peer_host(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if peer else ""


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError, OSError, asyncio.CancelledError):
        pass  # cancelled: the server stopping while this connection closes (see LineServer.handle)
