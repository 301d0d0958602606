"""Shared fixtures: a test CA made once per run, and real servers on ephemeral loopback ports."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.tls.certs import ensure_certificates
from support import HOSTNAME, MODES, make_config


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("certs")
    ensure_certificates(path, HOSTNAME)
    return path


@pytest.fixture(scope="session")
def ca_file(certs_dir: Path) -> Path:
    return certs_dir / "ca.pem"


@pytest.fixture(scope="session")
def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture
def serve(certs_dir: Path) -> Iterator[Callable[..., ThreadedMailServer]]:
    """serve({"name": "imaps", "protocol": "imap", "tls": "implicit"}, ...) -> a started server.

    Ports default to 0 (read them back with server.port(name)); keyword arguments are top-level
    config keys (e.g. limits={...}). Every server started here is stopped after the test.
    Touch the store only through server.call(lambda: ...): it runs on the server's loop.
    """
    started: list[ThreadedMailServer] = []

    def start(*listeners: dict[str, Any], **top: Any) -> ThreadedMailServer:
        server = ThreadedMailServer(make_config(certs_dir, listeners, **top)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def matrix_server(certs_dir: Path) -> Iterator[ThreadedMailServer]:
    """One listener per protocol per TLS mode, named "<protocol>-<mode>" (SMTP: submission role)."""
    listeners = tuple(
        {"name": f"{protocol}-{mode}", "protocol": protocol, "tls": mode}
        for protocol in ("smtp", "imap", "pop3")
        for mode in MODES
    )
    with ThreadedMailServer(make_config(certs_dir, listeners)) as server:
        yield server
