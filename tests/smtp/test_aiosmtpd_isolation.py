"""mailmodes changes nothing about aiosmtpd for anyone else: a user's own aiosmtpd server in the
same process (a pytest fixture next to ours, say) behaves as stock aiosmtpd does."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiosmtpd.smtp
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from mailmodes.app import ThreadedMailServer

HOST = "127.0.0.1"
STOCK_ALLOWED_BEFORE_STARTTLS = {"NOOP", "EHLO", "STARTTLS", "QUIT"}


class Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def accept_anyone(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    return AuthResult(success=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ours(serve: Callable[..., ThreadedMailServer]) -> ThreadedMailServer:
    """Our server running (so every mailmodes module is imported and in use)."""
    return serve({"name": "smtp", "protocol": "smtp", "tls": "starttls-required"},
                 {"name": "plain", "protocol": "smtp", "tls": "plaintext"})


@pytest.fixture
def stock(ours: ThreadedMailServer) -> Iterator[Callable[..., Controller]]:
    started: list[Controller] = []

    def start(**options: Any) -> Controller:
        controller = Controller(Sink(), hostname=HOST, port=free_port(), **options)
        controller.start()
        started.append(controller)
        return controller

    yield start
    for controller in started:
        controller.stop()


def test_no_aiosmtpd_module_global_is_changed(ours: ThreadedMailServer) -> None:
    assert aiosmtpd.smtp.BOGUS_LIMIT == 5
    assert aiosmtpd.smtp.ALLOWED_BEFORE_STARTTLS == STOCK_ALLOWED_BEFORE_STARTTLS
    assert not logging.getLogger("mail.log").filters


def test_stock_server_still_closes_after_five_unknown_commands(stock: Callable[..., Controller],
                                                               ours: ThreadedMailServer) -> None:
    controller = stock()
    with smtplib.SMTP(HOST, controller.port, timeout=10) as client:
        replies = [client.docmd("XYZZY") for _ in range(5)]
    assert [code for code, _ in replies] == [500, 500, 500, 500, 502]
    assert replies[-1][1] == b"5.5.1 Too many unrecognized commands, goodbye."
    # Ours counts its own configurable budget instead, and goes on.
    with smtplib.SMTP(HOST, ours.port("plain"), timeout=10) as client:
        assert [client.docmd("XYZZY")[0] for _ in range(6)] == [500] * 6
        assert client.noop()[0] == 250


def test_stock_server_still_refuses_auth_before_starttls_with_530(stock: Callable[..., Controller],
                                                                  ours: ThreadedMailServer, certs_dir: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs_dir / "server.pem", certs_dir / "server.key")
    controller = stock(tls_context=context, require_starttls=True)
    with smtplib.SMTP(HOST, controller.port, timeout=10) as client:
        client.ehlo()
        assert client.docmd("AUTH", "PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk")[0] == 530
    # Ours lets AUTH through its own gate so that it gets RFC 4954's more precise 538.
    with smtplib.SMTP(HOST, ours.port("smtp"), timeout=10) as client:
        client.ehlo()
        assert client.docmd("AUTH", "PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk")[0] == 538


def test_stock_server_still_logs_its_login_data_warning(stock: Callable[..., Controller], ours: ThreadedMailServer,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    controller = stock(authenticator=accept_anyone, auth_require_tls=False)
    with caplog.at_level(logging.WARNING, logger="mail.log"):
        with smtplib.SMTP(HOST, ours.port("plain"), timeout=10) as client:
            client.login("alice", "alice-password")
        assert not [r for r in caplog.records if "login_data is deprecated" in r.getMessage()]
        with smtplib.SMTP(HOST, controller.port, timeout=10) as client:
            client.login("alice", "anything")
    assert [r for r in caplog.records if "login_data is deprecated" in r.getMessage()]
