"""The baseline for bench/smtp_bench.py: a bare aiosmtpd server with nothing of mailmodes in it.

Three SMTP listeners on one event loop, as `mailmodes serve` runs them: plaintext, STARTTLS
(aiosmtpd's own `tls_context`) and implicit TLS (`ssl=` on `loop.create_server`, which is what
aiosmtpd's Controller does too). The handler keeps each message's bytes in a list, so both
servers store mail; everything else is aiosmtpd's defaults except the two settings mailmodes also
sets: the same 25 MiB data_size_limit and the same hostname.

It prints the same lines as `mailmodes serve`, so the bench reads both alike:

    listening plain          smtp  127.0.0.1:40125  plaintext
    listening starttls       smtp  127.0.0.1:40126  starttls-optional
    listening implicit       smtp  127.0.0.1:40127  implicit
    ready

    python bench/bare_aiosmtpd.py --certs DIR [--hostname H] [--host 127.0.0.1]

DIR holds server.pem and server.key (the ones mailmodes writes into its certs dir). SIGTERM or
SIGINT stops it. mailmodes itself is deliberately not imported: the baseline's start-up time and
memory must be aiosmtpd's alone.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import ssl
from collections.abc import Callable
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

MIB = 1024 * 1024
# The same limit mailmodes applies by default (its config.PROTOCOL_LIMITS["smtp"]).
DATA_SIZE_LIMIT = 25 * MIB


class KeepInMemory:
    """The trivial handler: accept every message and keep its bytes, as mailmodes' store does."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope.original_content or b"")
        return "250 OK"


def raise_fd_limit() -> None:
    """1,000 idle connections need more descriptors than the usual soft limit of 1,024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def tls_context(certs_dir: Path) -> ssl.SSLContext:
    """The same policy as mailmodes' server_context: TLS 1.2 and 1.3 only (RFC 8314 section 5)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certs_dir / "server.pem", certs_dir / "server.key")
    return context


def factory(handler: KeepInMemory, hostname: str, starttls: ssl.SSLContext | None) -> Callable[[], SMTP]:
    return lambda: SMTP(handler, hostname=hostname, data_size_limit=DATA_SIZE_LIMIT, tls_context=starttls)


async def serve(certs_dir: Path, hostname: str, host: str) -> None:
    loop = asyncio.get_running_loop()
    context = tls_context(certs_dir)
    handler = KeepInMemory()
    # name, mode (as mailmodes prints it), aiosmtpd's STARTTLS context, transport-level TLS.
    layout: list[tuple[str, str, ssl.SSLContext | None, ssl.SSLContext | None]] = [
        ("plain", "plaintext", None, None),
        ("starttls", "starttls-optional", context, None),
        ("implicit", "implicit", None, context),
    ]
    servers: list[asyncio.Server] = []
    for name, mode, starttls, implicit in layout:
        server = await loop.create_server(factory(handler, hostname, starttls), host, 0, ssl=implicit)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        print(f"listening {name:<14} smtp  {host}:{port:<6} {mode}")
    print("ready", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    print(f"stopped ({len(handler.messages)} messages kept)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--certs", type=Path, required=True, help="directory with server.pem and server.key")
    parser.add_argument("--hostname", default="mail.example.test")
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    raise_fd_limit()
    asyncio.run(serve(args.certs, args.hostname, args.host))


if __name__ == "__main__":
    main()
