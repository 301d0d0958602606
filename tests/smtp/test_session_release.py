"""A finished SMTP session is freed by reference counting, not left in reference cycles for the
cyclic collector (issue 22: the collector's work was ~20 us of every connection): sessions in
the clear, after STARTTLS, on an implicit-TLS port, one whose handshake failed and one the client
simply dropped."""

from __future__ import annotations

import gc
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.protocols.smtp_adapter import MailmodesSMTP

HOST = "127.0.0.1"


def live_sessions() -> int:
    return sum(1 for thing in gc.get_objects() if isinstance(thing, MailmodesSMTP))


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()  # what earlier tests left
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def test_finished_sessions_are_freed_without_the_cyclic_collector(
        serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext, collector_off: None) -> None:
    server = serve({"name": "plain", "protocol": "smtp", "tls": "starttls-optional", "role": "mta"},
                   {"name": "tls", "protocol": "smtp", "tls": "implicit", "role": "mta"})
    assert live_sessions() == 0
    with smtplib.SMTP(HOST, server.port("plain"), timeout=10) as smtp:
        smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: in the clear\r\n\r\nHi.\r\n")
    with smtplib.SMTP(HOST, server.port("plain"), timeout=10) as smtp:
        smtp.starttls(context=client_context)
        smtp.sendmail("alice@example.test", ["bob@example.test"], b"Subject: after STARTTLS\r\n\r\nHi.\r\n")
    with smtplib.SMTP_SSL(HOST, server.port("tls"), context=client_context, timeout=10) as smtp:
        assert smtp.noop()[0] == 250
    with socket.create_connection((HOST, server.port("tls")), timeout=10) as raw:
        raw.sendall(b"EHLO plaintext.client\r\n")  # no TLS on the implicit port: the handshake fails
        assert raw.recv(100) == b""
    with socket.create_connection((HOST, server.port("plain")), timeout=10) as raw:
        assert raw.recv(100).startswith(b"220 ")  # greeted, then dropped without QUIT
    sessions = server.journal.wait_for(5)
    assert [record.tls_version is not None for record in sessions] == [False, True, True, False, False]
    # The last references go as the loop finishes each session (aiosmtpd's task ends a turn later).
    deadline = time.monotonic() + 10
    while live_sessions() and time.monotonic() < deadline:
        server.call(lambda: None)
    assert live_sessions() == 0
