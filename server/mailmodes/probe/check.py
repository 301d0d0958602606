"""`mailmodes check`: is every listener of the config up? The Docker HEALTHCHECK.

Each listener is up when it answers with its greeting: at once for plaintext-first ports, after a
TLS handshake verified with the config's CA for implicit-TLS ones (a listener with a scenario or
its own certificate may present a deliberately bad one: there only the handshake must complete).
The HTTP API, if configured, is up when it answers a request. One line per listener; healthy (0)
only when every line says "ok".
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from mailmodes.config import Config, Listener
from mailmodes.probe.explain import ConnectionClosed, ProtocolError, Wire, connect_host, probe_context
from mailmodes.probe.marks import IMAP_TAG_PREFIX, mark_line
from mailmodes.tls.policy import TlsMode

EXIT_HEALTHY = 0
EXIT_UNHEALTHY = 1
# RFC 5321 section 4.2 (220), RFC 3501 section 7.1 (* OK), RFC 1939 section 4 (+OK).
GREETINGS = {"smtp": "220", "imap": "* OK", "pop3": "+OK"}
GOODBYES = {"smtp": "QUIT", "imap": f"{IMAP_TAG_PREFIX}1 LOGOUT", "pop3": "QUIT"}


@dataclass(frozen=True)
class ListenerHealth:
    name: str
    protocol: str
    mode: str
    host: str
    port: int
    ok: bool
    detail: str      # the greeting, or what went wrong

    def line(self, name_width: int = 22) -> str:
        status = "ok  " if self.ok else "DOWN"
        return (f"{status} {self.name:<{name_width}} {self.protocol:<4} {self.host}:{self.port:<5} {self.mode:<17} "
                f"{self.detail}")


def _client_context(listener: Listener, ca_file: Path) -> ssl.SSLContext:
    if listener.scenario or listener.cert_file:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return probe_context(str(ca_file))


def check_listener(listener: Listener, host: str, port: int, ca_file: Path, timeout: float) -> ListenerHealth:
    def health(ok: bool, detail: str) -> ListenerHealth:
        return ListenerHealth(listener.name, listener.protocol, str(listener.tls), host, port, ok, detail)

    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as error:
        return health(False, f"cannot connect: {error.strerror or error}")
    wire = Wire(sock)
    try:
        if listener.tls is TlsMode.IMPLICIT:
            wire.start_tls(_client_context(listener, ca_file), host, timeout)
        greeting = wire.read_line(timeout)
        if not greeting.startswith(GREETINGS[listener.protocol]):
            return health(False, f"unexpected greeting {greeting[:60]!r}")
        if listener.protocol != "imap":  # IMAP's tags carry the mark (probe/marks.py)
            _say_mark(wire, listener.protocol, timeout)
        # Say goodbye and read the answer, so the session ends as a well-behaved client's would.
        wire.send(GOODBYES[listener.protocol])
        wire.read_line(timeout)
        tls = f" ({wire.tls_version})" if wire.tls_version else ""
        return health(True, greeting[:100] + tls)
    except ssl.SSLError as error:
        return health(False, f"TLS handshake failed: {error}")
    except TimeoutError:
        return health(False, f"no greeting within {timeout:g}s")
    except (ConnectionClosed, ProtocolError, OSError) as error:
        return health(False, f"connection failed: {error or 'closed by the server'}")
    finally:
        wire.close()


def _say_mark(wire: Wire, protocol: str, timeout: float) -> None:
    """The probe's mark (probe/marks.py), so that the journal keeps this session apart from
    clients'; its answer is read whole (an EHLO reply has several lines)."""
    wire.send(mark_line(protocol))
    line = wire.read_line(timeout)
    while protocol == "smtp" and line[3:4] == "-":
        line = wire.read_line(timeout)


def check_http(host: str, port: int, timeout: float) -> ListenerHealth:
    """The HTTP API is up when it answers a request with a status line (RFC 9112 section 4)."""
    def health(ok: bool, detail: str) -> ListenerHealth:
        return ListenerHealth("http", "http", "plaintext", host, port, ok, detail)

    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            wire = Wire(sock)
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            status = wire.read_line(timeout)
    except TimeoutError:
        return health(False, f"no answer within {timeout:g}s")
    except (ProtocolError, OSError) as error:
        return health(False, f"cannot connect: {getattr(error, 'strerror', None) or error or 'closed'}")
    if not status.startswith("HTTP/1."):
        return health(False, f"unexpected answer {status[:60]!r}")
    return health(True, status)


def check(config: Config, host: str | None = None, ca_file: Path | None = None,
          timeout: float = 3.0) -> list[ListenerHealth]:
    """Every listener of `config` (and the HTTP API if configured), concurrently, in config order."""
    ca = ca_file or config.certs.dir / "ca.pem"
    jobs: list[Callable[[], ListenerHealth]] = [
        partial(check_listener, listener, host or connect_host(listener.host or config.host), listener.port, ca,
                timeout)
        for listener in config.listeners
    ]
    if config.http is not None:
        jobs.append(partial(check_http, host or connect_host(config.http.host), config.http.port, timeout))
    if not jobs:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(jobs)), thread_name_prefix="check") as pool:
        return list(pool.map(lambda job: job(), jobs))


def report(results: list[ListenerHealth]) -> tuple[list[str], int]:
    """The lines to print and the exit status: healthy only if there is something and all is up."""
    width = max([22, *(len(result.name) for result in results)])  # long listener names keep the columns
    lines = [result.line(width) for result in results] or ["DOWN no listeners configured"]
    healthy = bool(results) and all(result.ok for result in results)
    return lines, EXIT_HEALTHY if healthy else EXIT_UNHEALTHY
