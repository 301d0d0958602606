"""After a failed STARTTLS handshake some clients go on in the clear on the same connection,
password and all (swaks --tls-optional; issue 13, item 4). The server reads that for a short,
bounded time, answers nothing, records it and judges it."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable

import pytest

from mailmodes.app import ThreadedMailServer
from support import one_session, run_client, verdict_codes

HOST = "127.0.0.1"
SECRET = "alice-password"
Serve = Callable[..., ThreadedMailServer]
STARTTLS = {"imap": b"a STARTTLS\r\n", "pop3": b"STLS\r\n"}


def client_lines(record: object) -> list[str]:
    return [line.text for line in record.transcript if line.sender == "client"]  # type: ignore[attr-defined]


def test_swaks_tls_optional_sends_auth_in_the_clear_after_rejecting_the_certificate(serve: Serve) -> None:
    server = serve({"name": "l", "protocol": "smtp", "tls": "starttls-optional", "scenario": "cert-expired"},
                   limits={"read_after_failed_tls": 1.0})
    started = time.monotonic()
    result = run_client(["swaks", "--server", HOST, "--port", str(server.port("l")), "--from", "alice@example.test",
                         "--to", "bob@example.test", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password",
                         SECRET, "--tls-optional", "--tls-verify", "--timeout", "10"])
    assert time.monotonic() - started < 8  # the server hung up after its second, not swaks' timeout
    # swaks' own log: the handshake failed, and then the password went out in the clear.
    log = result.stdout + result.stderr
    assert "*** STARTTLS attempted but failed" in log
    assert "-> AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk" in log
    assert "Remote host closed connection" in log  # no SMTP reply came, ever
    record = one_session(server)
    assert {"rejected-certificate", "credentials-in-clear"} <= verdict_codes(record)
    detail = next(v.detail for v in record.verdicts if v.code == "credentials-in-clear")
    assert detail == "AUTH PLAIN: the secret itself was sent unencrypted"
    assert client_lines(record)[-2:] == ["STARTTLS", "AUTH PLAIN ****"]
    assert "AGFsaWNlAGFsaWNlLXBhc3N3b3Jk" not in str(record.to_json())


def reject_then_go_on_in_the_clear(port: int, protocol: str, plaintext: bytes, *, together: bool = False) -> float:
    """STARTTLS, a handshake that fails on the certificate (the client's alert goes out), then
    `plaintext` on the same connection (`together`: in the alert's own write, so that it reaches
    the server's TLS layer with it); returns how long the server kept the connection open then."""
    with socket.create_connection((HOST, port), timeout=10) as sock, sock.makefile("rb") as reader:
        reader.readline()
        sock.sendall(STARTTLS[protocol])
        reader.readline()
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")  # not our CA
        with pytest.raises(ssl.SSLCertVerificationError):
            while True:
                try:
                    tls.do_handshake()
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    incoming.write(sock.recv(65536))
        alert = outgoing.read()
        for data in [alert + plaintext] if together else [alert, plaintext]:
            sock.sendall(data)
        sent = time.monotonic()
        try:
            assert sock.recv(65536) == b""  # no answer, then the server closes ...
        except ConnectionResetError:
            pass  # ... with a reset, when it closes on bytes it did not read (past the byte cap)
        return time.monotonic() - sent


@pytest.mark.parametrize("together", [False, True])
@pytest.mark.parametrize(("protocol", "plaintext", "shown"), [
    ("imap", b"b LOGIN alice alice-password\r\n", ["b LOGIN alice ****"]),
    ("imap", b"b AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk\r\n", ["b AUTHENTICATE PLAIN ****"]),
    ("pop3", b"USER alice\r\nPASS alice-password\r\n", ["USER alice", "PASS ****"]),
])
def test_imap_and_pop3_read_and_judge_it_too(serve: Serve, protocol: str, plaintext: bytes, shown: list[str],
                                             together: bool) -> None:
    server = serve({"name": "l", "protocol": protocol, "tls": "starttls-optional"},
                   limits={"read_after_failed_tls": 1.0})
    held = reject_then_go_on_in_the_clear(server.port("l"), protocol, plaintext, together=together)
    assert 0.5 < held < 5
    record = one_session(server)
    # The certificate is the good one, so the client's refusal is only a failed handshake (issue 14).
    assert {"tls-failed", "credentials-in-clear"} <= verdict_codes(record)
    assert client_lines(record)[-len(shown):] == shown
    assert SECRET not in str(record.to_json())
    assert record.user is None  # nothing of it was run


@pytest.mark.parametrize("together", [False, True])
def test_what_is_read_is_bounded(serve: Serve, together: bool) -> None:
    server = serve({"name": "l", "protocol": "pop3", "tls": "starttls-optional"},
                   limits={"read_after_failed_tls": 5.0, "read_after_failed_tls_bytes": 20})
    held = reject_then_go_on_in_the_clear(server.port("l"), "pop3", b"USER alice\r\n" + b"NOOP\r\n" * 100,
                                          together=together)
    assert held < 3  # the byte cap ended it, well before the 5 s
    assert client_lines(one_session(server))[-2:] == ["USER alice", "NOOP"]
