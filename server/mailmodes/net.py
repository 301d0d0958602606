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
from mailmodes.tls import Security, TlsMode, handshake_timeout, is_encrypted
from mailmodes.transcript import Recorder

log = logging.getLogger(__name__)
READ_SIZE = 65536


@dataclass(frozen=True)
class StartTls:
    """Send everything before this, then do the TLS handshake. The session drops its buffer."""


@dataclass(frozen=True)
class Close:
    """Send everything before this, then close the connection."""


Output = bytes | StartTls | Close


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
    ) -> None:
        self.listener = listener
        self.session_factory = session_factory
        self.tls_context = tls_context
        self.too_many = too_many
        self.journal = journal
        self.active: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self.active) >= self.listener.limits.max_connections:
            writer.write(self.too_many)
            await _close(writer)
            return
        self.active.add(task)
        record = self.journal.open(self.listener, writer.get_extra_info("peername") or ())
        recorder = Recorder(record, self.journal.max_transcript_lines)
        try:
            if self.listener.tls is TlsMode.IMPLICIT:
                # The handshake is ours rather than asyncio's, so that a client's alert (or its
                # plaintext) is recorded instead of vanishing into asyncio's log.
                assert self.tls_context is not None
                if not await self._handshake(writer, recorder, via_starttls=False):
                    return
            await self._serve(reader, writer, recorder)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError) as error:
            log.debug("%s: connection ended: %s", self.listener.name, error)
        except Exception:
            log.exception("%s: unexpected error; this connection is closed, the server goes on", self.listener.name)
        finally:
            self.active.discard(task)
            self.journal.finish(record)
            await _close(writer)

    async def _handshake(self, writer: asyncio.StreamWriter, recorder: Recorder, *, via_starttls: bool) -> bool:
        assert self.tls_context is not None
        try:
            await writer.start_tls(
                self.tls_context, ssl_handshake_timeout=handshake_timeout(self.listener.limits.idle_timeout)
            )
        except (ssl.SSLError, ConnectionError, TimeoutError, OSError) as error:
            recorder.tls_failed(error)
            return False
        recorder.tls_started(writer.get_extra_info("ssl_object"), via_starttls=via_starttls)
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, recorder: Recorder) -> None:
        woken = asyncio.Event()
        security = Security(
            self.listener.tls, encrypted=is_encrypted(writer.transport), tls_available=self.tls_context is not None
        )
        peer = writer.get_extra_info("peername") or ("", 0)
        session = self.session_factory(Connection(self.listener, security, peer[:2], woken.set))
        read: asyncio.Future[bytes] | None = None
        try:
            if await self._send(writer, session.greeting(), session, security, recorder):
                return
            loop = asyncio.get_running_loop()
            idle_timeout = self.listener.limits.idle_timeout
            deadline = loop.time() + idle_timeout
            while True:
                if read is None:
                    read = asyncio.ensure_future(reader.read(READ_SIZE))
                woken_wait = asyncio.ensure_future(woken.wait())
                done, _ = await asyncio.wait(
                    {read, woken_wait}, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
                )
                if woken_wait in done:
                    woken.clear()
                    if await self._send(writer, session.wake(), session, security, recorder):
                        return
                else:
                    woken_wait.cancel()
                if read in done:
                    data, read = read.result(), None
                    if not data:
                        return
                    deadline = loop.time() + idle_timeout
                    recorder.client(data)
                    if await self._send(writer, session.feed(data), session, security, recorder):
                        return
                elif not done:
                    await self._send(writer, session.timed_out(), session, security, recorder)
                    return
        finally:
            if read is not None:
                read.cancel()
            session.connection_lost()

    async def _send(
        self, writer: asyncio.StreamWriter, outputs: list[Output], session: LineSession, security: Security,
        recorder: Recorder,
    ) -> bool:
        """Write the outputs in order; True when the connection is to be closed."""
        pending = list(outputs)
        while pending:
            item = pending.pop(0)
            if isinstance(item, bytes):
                writer.write(item)
                recorder.server(item)
            elif isinstance(item, Close):
                await writer.drain()
                return True
            else:
                assert self.tls_context is not None, "a session asked for TLS where none is configured"
                # No read between the success line and start_tls, so no plaintext the client
                # pipelined can be read in between (the CVE-2011-0411 class).
                if not await self._handshake(writer, recorder, via_starttls=True):
                    return True
                security.tls_started()
                pending = session.tls_started() + pending
        await writer.drain()
        return False


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
