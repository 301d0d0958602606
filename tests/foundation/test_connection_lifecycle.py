"""Every IMAP and POP3 connection task ends with its connection, however the TLS upgrade went."""

from __future__ import annotations

import asyncio
import gc
import ssl
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import MailServer
from support import make_config

HOST = "127.0.0.1"
ATTEMPTS = ("close", "reject", "garbage", "wait")


def connection_tasks() -> set[asyncio.Task[Any]]:
    return {task for task in asyncio.all_tasks() if task.get_coro().__qualname__ == "LineServer.handle"}  # type: ignore[union-attr]


async def failed_upgrade(port: int, protocol: str, mode: str, attempt: str) -> None:
    """A client whose TLS never comes up: it closes at once, rejects the certificate, sends
    something that is not TLS, or sends nothing until the server's handshake timeout."""
    reader, writer = await asyncio.open_connection(HOST, port)
    if mode == "starttls-required":
        await reader.readline()
        writer.write(b"a STARTTLS\r\n" if protocol == "imap" else b"STLS\r\n")
        await reader.readline()
    if attempt == "reject":
        # On a busy machine the server's 0.3 s handshake timeout may end it first: a reset, then.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            await writer.start_tls(ssl.create_default_context(), server_hostname="localhost")  # no test CA
    elif attempt == "garbage":
        writer.write(b"this is not a ClientHello\r\n")
        await reader.read()
    elif attempt == "wait":
        await reader.read()  # nothing comes: the server gives up on the handshake and closes
    writer.transport.abort()


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("mode", ["implicit", "starttls-required"])
def test_no_connection_task_outlives_a_failed_upgrade(certs_dir: Path, protocol: str, mode: str) -> None:
    async def scenario() -> tuple[int, list[str]]:
        problems: list[str] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: problems.append(context["message"]))
        listener = {"name": "l", "protocol": protocol, "tls": mode}
        server = MailServer(make_config(certs_dir, (listener,), limits={"idle_timeout": 0.3}))
        await server.start()
        try:
            for attempt in ATTEMPTS:
                await failed_upgrade(server.port("l"), protocol, mode, attempt)
            # Wait for the tasks themselves; a task stuck for good (as they were after a handshake
            # timeout, on wait_closed()) times out here, or is reported destroyed while pending.
            await asyncio.wait_for(asyncio.gather(*connection_tasks()), timeout=10)
            gc.collect()
            return len(server.journal.sessions()), problems
        finally:
            await server.stop()

    assert asyncio.run(scenario()) == (len(ATTEMPTS), [])


def test_stop_ends_every_open_session_at_once(certs_dir: Path) -> None:
    """Idle sessions on every protocol and mode, and a handshake that never started: stop() ends
    them all rather than waiting for their idle timeouts (Python 3.12's wait_closed() would)."""
    listeners = tuple({"name": f"{protocol}-{mode}", "protocol": protocol, "tls": mode}
                      for protocol in ("smtp", "imap", "pop3") for mode in ("implicit", "starttls-required"))

    async def scenario() -> list[bytes]:
        server = MailServer(make_config(certs_dir, listeners))
        await server.start()
        clients = []
        for listener in listeners:
            reader, writer = await asyncio.open_connection(HOST, server.port(listener["name"]))
            if listener["tls"] != "implicit":
                await reader.readline()  # the greeting: the session is up, and idle from here
            clients.append((reader, writer))
        await asyncio.wait_for(server.stop(), timeout=10)
        # Every client sees the server close: end of stream (or a reset), at once.
        ends = [await asyncio.wait_for(reader.read(), timeout=10) for reader, _ in clients]
        for _, writer in clients:
            writer.transport.abort()
        return ends

    assert asyncio.run(scenario()) == [b""] * len(listeners)
