"""Issue 16, IMAP and POP3: limits, budgets and bad input on real listeners (imaplib, poplib,
raw sockets). Every refusal is a protocol reply, inside TLS where the port speaks TLS first."""

from __future__ import annotations

import imaplib
import poplib
import socket
import ssl
import time
from collections.abc import Callable
from typing import BinaryIO

import pytest

from mailmodes.app import ThreadedMailServer

HOST = "127.0.0.1"
TIMEOUT = 10




def raw(server: ThreadedMailServer, name: str) -> tuple[socket.socket, BinaryIO]:
    sock = socket.create_connection((HOST, server.port(name)), timeout=TIMEOUT)
    reader = sock.makefile("rb")
    reader.readline()  # the greeting
    return sock, reader


# --- defect 3: over the connection limit on an implicit-TLS port, the refusal is inside TLS -------


@pytest.mark.parametrize(("protocol", "refusal"), [
    ("imap", b"* BYE [UNAVAILABLE] Too many connections\r\n"),
    ("pop3", b"-ERR [SYS/TEMP] Too many connections\r\n"),
])
def test_the_refusal_over_the_limit_comes_inside_tls(serve: Callable[..., ThreadedMailServer],
                                                    client_context: ssl.SSLContext, protocol: str,
                                                    refusal: bytes) -> None:
    server = serve({"name": "tls", "protocol": protocol, "tls": "implicit", "limits": {"max_connections": 1}})
    port = server.port("tls")
    with client_context.wrap_socket(socket.create_connection((HOST, port), timeout=TIMEOUT),
                                    server_hostname="mail.example.test") as first:
        first.makefile("rb").readline()  # greeted: the one slot is taken
        with client_context.wrap_socket(socket.create_connection((HOST, port), timeout=TIMEOUT),
                                        server_hostname="mail.example.test") as second:
            assert second.makefile("rb").readline() == refusal


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_one_client_cannot_take_every_slot(serve: Callable[..., ThreadedMailServer], protocol: str) -> None:
    server = serve({"name": "plain", "protocol": protocol, "tls": "plaintext",
                    "limits": {"max_connections_per_client": 2}})
    port = server.port("plain")
    held = [socket.create_connection((HOST, port), timeout=TIMEOUT) for _ in range(2)]
    try:
        for sock in held:
            assert sock.makefile("rb").readline()[:4] in (b"* OK", b"+OK ")
        with socket.create_connection((HOST, port), timeout=TIMEOUT) as third:
            assert b"Too many connections" in third.makefile("rb").readline()
    finally:
        for sock in held:
            sock.close()


# --- defect 5: APOP with a non-ASCII digest ------------------------------------------------------


def test_apop_with_a_non_ascii_digest_is_a_syntax_error(serve: Callable[..., ThreadedMailServer],
                                                        no_tracebacks: pytest.LogCaptureFixture) -> None:
    server = serve({"name": "pop3", "protocol": "pop3", "tls": "plaintext", "apop": True})
    sock, reader = raw(server, "pop3")
    with sock:
        sock.sendall("APOP alice {}\r\n".format("é" * 32).encode())
        assert reader.readline() == b"-ERR Syntax error\r\n"
        sock.sendall(b"CAPA\r\n")
        assert reader.readline() == b"+OK Capability list follows\r\n"


# --- defect 10: the bad-command budget counts every error of the connection ----------------------


def test_imap_counts_bad_commands_even_between_good_ones(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "imap", "protocol": "imap", "tls": "plaintext", "limits": {"max_bad_commands": 3}})
    sock, reader = raw(server, "imap")
    with sock:
        for number in range(2):
            sock.sendall(b"b%d FROB\r\n" % number)
            assert reader.readline().startswith(b"b%d BAD " % number)
            sock.sendall(b"n%d NOOP\r\n" % number)
            assert reader.readline().startswith(b"n%d OK " % number)
        sock.sendall(b"b2 FROB\r\n")
        assert reader.readline().startswith(b"b2 BAD ")
        assert reader.readline() == b"* BYE Too many invalid commands\r\n"
        assert reader.readline() == b""


def test_pop3_closes_at_the_last_error_of_its_budget(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "pop3", "protocol": "pop3", "tls": "plaintext", "limits": {"max_bad_commands": 3}})
    sock, reader = raw(server, "pop3")
    with sock:
        for _ in range(2):
            sock.sendall(b"FROB\r\n")
            assert reader.readline() == b"-ERR Unknown command\r\n"
        sock.sendall(b"FROB\r\n")
        assert reader.readline() == b"-ERR Too many invalid commands\r\n"
        assert reader.readline() == b""


# --- defect 9: password guessing -----------------------------------------------------------------


# Per protocol: (what the client sends, the lines it gets back), for two wrong passwords.
TWO_FAILED_LOGINS = {
    "imap": [(b"a LOGIN alice guess1\r\n", [b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"]),
             (b"b LOGIN alice guess2\r\n", [b"* BYE Too many authentication failures\r\n",
                                             b"b NO [AUTHENTICATIONFAILED] Authentication failed\r\n"])],
    "pop3": [(b"USER alice\r\nPASS guess1\r\n", [b"+OK\r\n", b"-ERR [AUTH] Authentication failed\r\n"]),
             (b"USER alice\r\nPASS guess2\r\n",
              [b"+OK\r\n", b"-ERR [AUTH] Authentication failed; too many failures, closing\r\n"])],
}


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_too_many_failed_logins_close_the_connection(serve: Callable[..., ThreadedMailServer], protocol: str) -> None:
    server = serve({"name": protocol, "protocol": protocol, "tls": "plaintext", "limits": {"max_auth_failures": 2}})
    sock, reader = raw(server, protocol)
    with sock:
        for sent, expected in TWO_FAILED_LOGINS[protocol]:
            sock.sendall(sent)
            assert [reader.readline() for _ in expected] == expected
        assert reader.readline() == b""  # closed


def test_many_failures_from_one_client_slow_every_login_answer(serve: Callable[..., ThreadedMailServer]) -> None:
    """The count is per client host across listeners and protocols; past it even the right
    password is answered after the delay (an instant answer would tell which guess was right)."""
    limits = {"max_auth_failures_per_client": 2, "auth_failure_delay": 0.5}
    server = serve({"name": "imap", "protocol": "imap", "tls": "plaintext"},
                   {"name": "pop3", "protocol": "pop3", "tls": "plaintext"}, limits=limits)
    with imaplib.IMAP4(HOST, server.port("imap"), timeout=TIMEOUT) as imap:
        with pytest.raises(imaplib.IMAP4.error):
            imap.login("alice", "guess")
    pop = poplib.POP3(HOST, server.port("pop3"), timeout=TIMEOUT)
    pop.user("alice")
    with pytest.raises(poplib.error_proto):
        pop.pass_("guess")
    pop.quit()
    with imaplib.IMAP4(HOST, server.port("imap"), timeout=TIMEOUT) as imap:
        started = time.monotonic()
        imap.login("alice", "alice-password")
        assert time.monotonic() - started >= 0.5
    pop = poplib.POP3(HOST, server.port("pop3"), timeout=TIMEOUT)
    pop.user("alice")
    started = time.monotonic()
    pop.pass_("alice-password")
    assert time.monotonic() - started >= 0.5
    pop.quit()
