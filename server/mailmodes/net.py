"""The only asyncio code for IMAP and POP3: read, feed the session, write, STARTTLS, limits.

A protocol session (imap/session.py, pop3.py) does no I/O. It is driven through `LineSession`:
bytes go in through `feed`, and out come bytes to send plus two kinds of instruction,
`StartTls` and `Close`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mailmodes.config import Listener
from mailmodes.journal import Journal
from mailmodes.tls import HandshakeWatch, Security, TlsMode, handshake_timeout, is_encrypted
from mailmodes.transcript import Recorder, recorder_for

log = logging.getLogger(__name__)
READ_SIZE = 65536


@dataclass(frozen=True)
class StartTls:
    """Send everything before this, then do the TLS handshake. The session drops its buffer, and
    so does net.py (whatever asyncio read ahead), unless `keep_pipelined` (the deliberately
    vulnerable scenario, where plaintext sent before the handshake is executed inside TLS)."""

    keep_pipelined: bool = False


@dataclass(frozen=True)
class Close:
    """Send everything before this, then close the connection."""


@dataclass(frozen=True)
class Pause:
    """Send everything before this, then wait (the chaos scenario's delay per reply)."""

    seconds: float


Output = bytes | StartTls | Close | Pause


@dataclass
class Connection:
    """What a session may know about its connection."""

    listener: Listener
    security: Security
    peer: tuple[str, int]
    wake: Callable[[], None]
    """Call when something outside the session happened that it wants to report (IDLE)."""


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


class LineServer:
    """One listener for a LineSession protocol: accepts, enforces connection and idle limits."""

    def __init__(
        self,
        listener: Listener,
        session_factory: SessionFactory,
        tls_context: ssl.SSLContext | None,
        too_many: bytes,
        journal: Journal,
        *,
        policy_mode: TlsMode | None = None,
        handshake_first: bool | None = None,
        pretend_encrypted: bool = False,
    ) -> None:
        self.listener = listener
        self.session_factory = session_factory
        self.tls_context = tls_context
        self.too_many = too_many
        self.journal = journal
        # Implicit TLS: the handshake is ours rather than asyncio's, so that a client's alert (or
        # its plaintext) is recorded instead of vanishing into asyncio's log.
        self.handshake_first = listener.tls is TlsMode.IMPLICIT if handshake_first is None else handshake_first
        # Scenario overrides (misbehaviour.py): the TLS policy the session applies, and a session
        # that acts as if encrypted on an implicit port that speaks plaintext.
        self.policy_mode = policy_mode or listener.tls
        self.pretend_encrypted = pretend_encrypted
        self.active: set[asyncio.Task[None]] = set()
        self.stopping = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.active) >= self.listener.limits.max_connections:
            writer.write(self.too_many)
            await _close(writer)
            return
        self.active.add(task)
        record = self.journal.open(self.listener, writer.get_extra_info("peername") or ())
        connection = _ClientConnection(self, reader, writer, recorder_for(self.journal, record))
        try:
            if not self.handshake_first or await connection.handshake(via_starttls=False):
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
        for task in list(self.active):
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
        self.security = Security(server.policy_mode, encrypted=False, tls_available=server.tls_context is not None)
        self.session: LineSession | None = None
        self.upgrade_unfinished = False  # a start_tls that failed or was cancelled: see LineServer.handle

    async def handshake(self, *, via_starttls: bool) -> bool:
        assert self.server.tls_context is not None
        self.upgrade_unfinished = True
        try:
            with HandshakeWatch() as watch:
                await self.writer.start_tls(
                    self.server.tls_context,
                    ssl_handshake_timeout=handshake_timeout(self.server.listener.limits.idle_timeout),
                )
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as error:
            self.recorder.tls_failed(error, watch.ssl_object)
            return False
        self.upgrade_unfinished = False
        self.recorder.tls_started(self.writer.get_extra_info("ssl_object"), via_starttls=via_starttls)
        return True

    async def serve(self) -> None:
        listener = self.server.listener
        self.security.encrypted = is_encrypted(self.writer.transport) or self.server.pretend_encrypted
        peer = self.writer.get_extra_info("peername") or ("", 0)
        session = self.session = self.server.session_factory(
            Connection(listener, self.security, peer[:2], self.woken.set)
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
                done, _ = await asyncio.wait(
                    (read, woken), timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
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
                    self.recorder.client(data)
                    if await self.send(session.feed(data)):
                        return
                elif not done:
                    await self.send(session.timed_out())
                    return
        finally:
            for pending in (read, woken):
                if pending is not None:
                    pending.cancel()
            session.connection_lost()

    async def send(self, outputs: list[Output]) -> bool:
        """Write the outputs in order; True when the connection is to be closed."""
        pending = list(outputs)
        while pending:
            item = pending.pop(0)
            if isinstance(item, bytes):
                self.writer.write(item)
                self.recorder.server(item)
            elif isinstance(item, Close):
                await self.writer.drain()
                return True
            elif isinstance(item, Pause):
                await self.writer.drain()
                await asyncio.sleep(item.seconds)
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

    def _discard_read_ahead(self) -> None:
        """Drop plaintext asyncio already read past the session's last chunk. StreamReader has no
        public way to do this (aiosmtpd clears the same private buffer after its STARTTLS)."""
        buffered: bytearray = self.reader._buffer  # type: ignore[attr-defined]
        if buffered:
            self.recorder.client(bytes(buffered))
            buffered.clear()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError, OSError, asyncio.CancelledError):
        pass  # cancelled: the server stopping while this connection closes (see LineServer.handle)
