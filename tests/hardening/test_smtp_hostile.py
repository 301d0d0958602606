"""Issue 16, SMTP: what a hostile or sloppy client sends gets a protocol reply, never a traceback,
and the session and the server go on. Real listeners, smtplib, raw sockets and openssl s_client."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from typing import BinaryIO

import pytest

from mailmodes.app import ThreadedMailServer
from support import require_tool

HOST = "127.0.0.1"
TIMEOUT = 10


def mta(**extra: object) -> dict[str, object]:
    return {"name": "smtp", "protocol": "smtp", "tls": "plaintext", "role": "mta", **extra}


def raw_session(server: ThreadedMailServer, name: str = "smtp") -> tuple[socket.socket, BinaryIO]:
    sock = socket.create_connection((HOST, server.port(name)), timeout=TIMEOUT)
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"220 ")
    return sock, reader


def reply(reader: BinaryIO) -> list[bytes]:
    """One whole reply (every line of a multi-line one)."""
    lines = [reader.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(reader.readline())
    return lines


def command(sock: socket.socket, reader: BinaryIO, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    return b"".join(reply(reader))




# --- defect 6: MAIL FROM:<a@ ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [b"<a@", b"<a@>", b"<@", b"<\"a@"])
def test_a_broken_path_is_a_553_not_an_internal_error(serve: Callable[..., ThreadedMailServer], path: bytes,
                                                     no_tracebacks: pytest.LogCaptureFixture) -> None:
    server = serve(mta())
    sock, reader = raw_session(server)
    with sock:
        assert command(sock, reader, b"EHLO client.example").startswith(b"250-")
        answer = command(sock, reader, b"MAIL FROM:" + path)
        assert answer[:1] == b"5" and b"Error: (" not in answer, answer
        # The session goes on.
        assert command(sock, reader, b"MAIL FROM:<bob@example.test>") == b"250 2.1.0 OK\r\n"


# --- defect 13: MAIL FROM:<alice@example.test (no ">") --------------------------------------------


@pytest.mark.parametrize("verb", [b"MAIL FROM:", b"RCPT TO:"])
def test_a_path_without_its_closing_bracket_is_refused(serve: Callable[..., ThreadedMailServer], verb: bytes) -> None:
    server = serve(mta())
    sock, reader = raw_session(server)
    with sock:
        command(sock, reader, b"EHLO client.example")
        if verb == b"RCPT TO:":
            assert command(sock, reader, b"MAIL FROM:<bob@example.test>").startswith(b"250")
        assert command(sock, reader, verb + b"<alice@example.test") == b"553 5.1.3 Error: malformed address\r\n"


# --- defect 12: RCPT TO:<postmaster> --------------------------------------------------------------


@pytest.mark.parametrize("recipient", ["postmaster", "Postmaster", "POSTMASTER@example.test"])
def test_postmaster_is_always_accepted(serve: Callable[..., ThreadedMailServer], recipient: str) -> None:
    """RFC 5321 4.5.1: the bare "postmaster" and postmaster at every local domain; here it is the
    first configured user's (alice), as no user has a postmaster address."""
    server = serve(mta())
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=TIMEOUT) as client:
        client.ehlo("client.example")
        assert client.mail("bob@example.test")[0] == 250
        assert client.rcpt(f"<{recipient}>") == (250, b"2.1.5 OK")
        assert client.data(b"Subject: to the postmaster\r\n\r\nhello\r\n")[0] == 250
    inbox = server.call(lambda: [m.data for m in server.store.accounts["alice"].inbox.messages])
    assert inbox == [b"Subject: to the postmaster\r\n\r\nhello\r\n"]
    assert server.call(lambda: list(server.store.captured)) == []


def test_an_unknown_local_user_is_still_refused(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta())
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=TIMEOUT) as client:
        client.ehlo("client.example")
        client.mail("bob@example.test")
        assert client.rcpt("<postmistress@example.test>") == (550, b"5.1.1 User unknown")


# --- defect 8: a bare CR is never echoed ----------------------------------------------------------


def test_a_bare_cr_is_not_echoed_in_the_reply(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta())
    sock, reader = raw_session(server)
    with sock:
        sock.sendall(b"XYZ\r250 injected\r\n")
        answer = b"".join(reply(reader))
        assert answer.startswith(b"500 ") and answer.endswith(b"\r\n")
        assert b"\r" not in answer[:-2], answer
        assert command(sock, reader, b"NOOP") == b"250 2.0.0 OK\r\n"


# --- defect 10: the bad-command budget ends the session at its max-th error ------------------------


def test_the_last_error_of_the_budget_is_answered_then_421(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta(limits={"max_bad_commands": 3}))
    sock, reader = raw_session(server)
    with sock:
        for _ in range(2):
            assert command(sock, reader, b"FROBNICATE").startswith(b"500 ")
        sock.sendall(b"FROBNICATE\r\n")
        assert reader.readline().startswith(b"500 ")
        assert reader.readline() == b"421 4.7.0 Too many errors, closing connection\r\n"
        assert reader.readline() == b""  # closed


# --- defect 7: a burst over the budget inside TLS -------------------------------------------------


def test_a_burst_over_the_budget_inside_tls_closes_cleanly(serve: Callable[..., ThreadedMailServer],
                                                           no_tracebacks: pytest.LogCaptureFixture) -> None:
    openssl = require_tool("openssl")
    server = serve({"name": "smtps", "protocol": "smtp", "tls": "implicit"}, limits={"max_bad_commands": 10})
    burst = b"XYZ\r\n" * 15
    result = subprocess.run(
        [openssl, "s_client", "-connect", f"{HOST}:{server.port('smtps')}", "-quiet", "-ign_eof",
         "-verify_quiet", "-CAfile", str(server.ca_file)],
        input=burst, capture_output=True, timeout=TIMEOUT,
    )
    lines = result.stdout.splitlines()
    assert lines[0].startswith(b"220 ")
    assert lines[1:11] == [b'500 5.5.1 Error: command not recognized'] * 10  # never echoed (issue 13)
    assert lines[11:] == [b"421 4.7.0 Too many errors, closing connection"]
    # The server goes on.
    context = ssl.create_default_context(cafile=str(server.ca_file))
    with smtplib.SMTP_SSL(HOST, server.port("smtps"), context=context, timeout=TIMEOUT) as client:
        assert client.noop()[0] == 250


# --- defect 11: AUTH PLAIN with someone else's authorization identity -----------------------------


def plain(authzid: str, authcid: str, password: str) -> str:
    return base64.b64encode(f"{authzid}\0{authcid}\0{password}".encode()).decode()


def test_acting_as_another_user_is_refused(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "submission", "protocol": "smtp", "tls": "plaintext"})
    with smtplib.SMTP(HOST, server.port("submission"), timeout=TIMEOUT) as client:
        client.ehlo("client.example")
        assert client.docmd("AUTH", "PLAIN " + plain("bob", "alice", "alice-password"))[0] == 535
        assert client.docmd("AUTH", "PLAIN " + plain("alice", "alice", "alice-password"))[0] == 235


def test_the_challenge_form_checks_the_authorization_identity_too(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "submission", "protocol": "smtp", "tls": "plaintext"})
    with smtplib.SMTP(HOST, server.port("submission"), timeout=TIMEOUT) as client:
        client.ehlo("client.example")
        assert client.docmd("AUTH", "PLAIN")[0] == 334
        assert client.docmd(plain("bob", "alice", "alice-password"))[0] == 535
        assert client.docmd("AUTH", "PLAIN")[0] == 334
        assert client.docmd(plain("", "alice", "alice-password"))[0] == 235


# --- defect 9: password guessing -----------------------------------------------------------------


def test_failed_logins_end_the_connection(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "submission", "protocol": "smtp", "tls": "plaintext"}, limits={"max_auth_failures": 3})
    sock, reader = raw_session(server, "submission")
    with sock:
        command(sock, reader, b"EHLO client.example")
        for _ in range(2):
            assert command(sock, reader, b"AUTH PLAIN " + plain("", "alice", "guess").encode()).startswith(b"535 ")
        sock.sendall(b"AUTH PLAIN " + plain("", "alice", "guess").encode() + b"\r\n")
        assert reader.readline().startswith(b"535 ")
        assert reader.readline() == b"421 4.7.0 Too many authentication failures, closing connection\r\n"
        assert reader.readline() == b""


def test_a_client_with_many_failures_is_answered_slowly(serve: Callable[..., ThreadedMailServer]) -> None:
    """Past max_auth_failures_per_client (over any connections) every login answer to that host
    waits auth_failure_delay, the right password's too."""
    server = serve({"name": "submission", "protocol": "smtp", "tls": "plaintext"},
                   limits={"max_auth_failures_per_client": 2, "auth_failure_delay": 0.5})
    for _ in range(2):
        with smtplib.SMTP(HOST, server.port("submission"), timeout=TIMEOUT) as client:
            client.ehlo("client.example")
            assert client.docmd("AUTH", "PLAIN " + plain("", "alice", "guess"))[0] == 535
    with smtplib.SMTP(HOST, server.port("submission"), timeout=TIMEOUT) as client:
        client.ehlo("client.example")
        started = time.monotonic()
        assert client.docmd("AUTH", "PLAIN " + plain("", "alice", "alice-password"))[0] == 235
        assert time.monotonic() - started >= 0.5


# --- defect 4: one client cannot take every slot --------------------------------------------------


def test_one_client_cannot_take_every_slot(serve: Callable[..., ThreadedMailServer],
                                           client_context: ssl.SSLContext) -> None:
    server = serve(mta(limits={"max_connections_per_client": 2}),
                   {"name": "smtps", "protocol": "smtp", "tls": "implicit", "limits": {"max_connections_per_client": 1}})
    held = [raw_session(server)[0] for _ in range(2)]
    try:
        with socket.create_connection((HOST, server.port("smtp")), timeout=TIMEOUT) as third:
            assert third.makefile("rb").readline() == b"421 4.7.0 Too many connections, try again later\r\n"
        with smtplib.SMTP_SSL(HOST, server.port("smtps"), context=client_context, timeout=TIMEOUT):
            with pytest.raises(smtplib.SMTPConnectError) as refused:
                smtplib.SMTP_SSL(HOST, server.port("smtps"), context=client_context, timeout=TIMEOUT)
            assert refused.value.smtp_code == 421  # inside TLS
    finally:
        for sock in held:
            sock.close()
