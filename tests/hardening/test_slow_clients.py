"""Issue 16, defect 4: slowloris. A client that trickles a request a byte at a time resets the idle
timer with every byte; the minimum data rate ends it, on every protocol, with the idle goodbye.
The limits are made small so that each test ends within a few seconds."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable

import pytest

from mailmodes.app import ThreadedMailServer

HOST = "127.0.0.1"
# 100 bytes a second over windows of 0.5 s; the client sends 1 byte every 0.1 s (10 a second).
SLOW = {"min_data_rate": 100, "data_rate_window": 0.5, "idle_timeout": 60}
TRICKLE_GAP = 0.1
TRICKLE_BYTES = 40  # 4 s at most: the server must have hung up long before
GOODBYES = {
    "smtp": b"421 4.4.2 Idle timeout, closing connection\r\n",
    "imap": b"* BYE Autologout; idle for too long\r\n",
    "pop3": b"-ERR [SYS/TEMP] Idle timeout, closing\r\n",
}


def trickle(sock: socket.socket | ssl.SSLSocket, data: bytes) -> float:
    """Send `data` a byte at a time until the server hangs up; the seconds that took."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break  # the server closed (a reset once it is gone)
        time.sleep(TRICKLE_GAP)
    return time.monotonic() - started


def read_all(sock: socket.socket | ssl.SSLSocket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(4096):
            chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks)


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_a_trickled_command_is_cut_off(serve: Callable[..., ThreadedMailServer], protocol: str) -> None:
    server = serve({"name": "slow", "protocol": protocol, "tls": "plaintext", "role": "mta"} if protocol == "smtp"
                   else {"name": "slow", "protocol": protocol, "tls": "plaintext"}, limits=SLOW)
    with socket.create_connection((HOST, server.port("slow")), timeout=10) as sock:
        sock.recv(4096)  # the greeting
        took = trickle(sock, b"x" * TRICKLE_BYTES)
        assert took < TRICKLE_BYTES * TRICKLE_GAP, "the server never hung up"
        assert read_all(sock).endswith(GOODBYES[protocol])


def test_a_trickled_message_is_cut_off(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "slow", "protocol": "smtp", "tls": "plaintext", "role": "mta"}, limits=SLOW)
    with socket.create_connection((HOST, server.port("slow")), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"HELO client.example\r\nMAIL FROM:<bob@example.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        for _ in range(4):
            assert reader.readline()[:1] in (b"2", b"3")
        took = trickle(sock, b"Subject: slow\r\n\r\n" + b"y" * TRICKLE_BYTES)
        assert took < (TRICKLE_BYTES + 17) * TRICKLE_GAP
        assert reader.readline() == GOODBYES["smtp"]
    assert server.call(lambda: server.store.accounts["alice"].inbox.messages) == []


def test_the_rate_holds_inside_tls(serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve({"name": "slow", "protocol": "imap", "tls": "implicit"}, limits=SLOW)
    raw = socket.create_connection((HOST, server.port("slow")), timeout=10)
    with client_context.wrap_socket(raw, server_hostname="mail.example.test") as sock:
        sock.recv(4096)
        took = trickle(sock, b"a" * TRICKLE_BYTES)
        assert took < TRICKLE_BYTES * TRICKLE_GAP
        assert read_all(sock).endswith(GOODBYES["imap"])


def test_a_client_that_sends_whole_lines_slowly_is_not_cut_off(serve: Callable[..., ThreadedMailServer]) -> None:
    """Only a request under way is measured: pauses between answered commands are idle time."""
    server = serve({"name": "slow", "protocol": "pop3", "tls": "plaintext"}, limits=SLOW)
    with socket.create_connection((HOST, server.port("slow")), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        for _ in range(3):
            sock.sendall(b"CAPA\r\n")
            while reader.readline() != b".\r\n":
                pass
            time.sleep(0.6)  # longer than a window
        sock.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"+OK")


def test_a_client_waiting_for_a_slow_server_is_not_cut_off(serve: Callable[..., ThreadedMailServer]) -> None:
    """chaos delays every reply longer than a window: the client is waiting for us, not slow."""
    server = serve({"name": "slow", "protocol": "smtp", "tls": "plaintext", "role": "mta", "scenario": "chaos",
                    "chaos": {"delay": 0.8}}, limits=SLOW)
    with socket.create_connection((HOST, server.port("slow")), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        sock.sendall(b"NOOP\r\n")
        assert reader.readline() == b"250 2.0.0 OK\r\n"


@pytest.mark.parametrize("protocol", ["smtp", "imap"])
def test_a_scenario_that_swallows_the_client_hello_keeps_swallowing(serve: Callable[..., ThreadedMailServer],
                                                                    protocol: str) -> None:
    """starttls-silence answers nothing after its success line, until the idle timeout: the rate
    check does not end it early."""
    server = serve({"name": "silent", "protocol": protocol, "tls": "starttls-optional", "scenario": "starttls-silence"},
                   limits=SLOW)
    with socket.create_connection((HOST, server.port("silent")), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"STARTTLS\r\n" if protocol == "smtp" else b"a STARTTLS\r\n")
        reader.readline()
        sock.sendall(b"\x16\x03\x01 not really a ClientHello")
        sock.settimeout(3 * SLOW["data_rate_window"])
        with pytest.raises(TimeoutError):
            sock.recv(1)  # neither an answer nor a close within three windows
