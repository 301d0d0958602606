"""The journal and verdicts for SMTP, from real clients (KNOWN-BAD.md section 3)."""

from __future__ import annotations

import json
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.config import parse_config
from mailmodes.record.journal import Journal, SessionRecord
from mailmodes.record.verdicts import PORT_CHECK_WINDOW
from support import one_session, run_client, smtp_after_ehlo, verdict_codes

HOST = "127.0.0.1"
SECRET = "alice-password"
MESSAGE = b"Subject: j\r\n\r\nbody\r\n"


def smtp(tls: str, role: str = "submission") -> dict[str, object]:
    return {"name": "smtp", "protocol": "smtp", "tls": tls, "role": role}


def assert_masked(record: SessionRecord) -> None:
    text = json.dumps(record.to_json())
    assert SECRET not in text
    assert "AGFsaWNlAGFsaWNlLXBhc3N3b3Jk" not in text  # base64 of the PLAIN payload
    assert "YWxpY2UtcGFzc3dvcmQ=" not in text  # base64 of the password (AUTH LOGIN)


@pytest.mark.parametrize("mode", ["plaintext", "starttls-optional"])
def test_smtplib_login_in_clear_sends_the_secret(serve: Callable[..., ThreadedMailServer], mode: str) -> None:
    server = serve(smtp(mode))
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
        client.login("alice", SECRET)
        client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    record = one_session(server)
    assert "credentials-in-clear" in verdict_codes(record)
    detail = next(v.detail for v in record.verdicts if v.code == "credentials-in-clear")
    assert "secret itself was sent" in detail
    assert record.user == "alice"
    assert_masked(record)
    assert ("mail-in-clear" in verdict_codes(record)) == (mode == "starttls-optional")
    assert ("no-upgrade" in verdict_codes(record)) == (mode == "starttls-optional")
    assert [line.text for line in record.transcript if line.sender == "client"][-4:] == [
        "data", "[message: 20 bytes]", ".", "QUIT"]  # smtplib says "data" in lower case


def test_auth_login_continuations_are_masked(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(smtp("plaintext"))
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
        client.ehlo()
        client.user, client.password = "alice", SECRET
        assert client.auth("LOGIN", client.auth_login)[0] == 235
    record = one_session(server)
    assert_masked(record)
    assert "credentials-in-clear" in verdict_codes(record)


@pytest.mark.parametrize("mode", ["plaintext", "starttls-optional"])
def test_curl_in_clear(serve: Callable[..., ThreadedMailServer], ca_file: Path, tmp_path: Path, mode: str) -> None:
    server = serve(smtp(mode))
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    result = run_client(["curl", "-sS", "--max-time", "10", "-u", f"alice:{SECRET}", "--mail-from", "alice@example.test",
                         "--mail-rcpt", "bob@example.test", "-T", str(tmp_path / "m.eml"),
                         f"smtp://{HOST}:{server.port('smtp')}"])
    assert result.returncode == 0, result.stderr
    record = one_session(server)
    assert "credentials-in-clear" in verdict_codes(record)
    assert_masked(record)


def test_starttls_client_earns_no_bad_verdict(serve: Callable[..., ThreadedMailServer], ca_file: Path,
                                              tmp_path: Path) -> None:
    server = serve(smtp("starttls-optional"))
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    result = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "--ssl-reqd",
                         "-u", f"alice:{SECRET}", "--mail-from", "alice@example.test", "--mail-rcpt",
                         "bob@example.test", "-T", str(tmp_path / "m.eml"), f"smtp://{HOST}:{server.port('smtp')}"])
    assert result.returncode == 0, result.stderr
    record = one_session(server)
    assert record.verdicts == []
    assert record.starttls and record.tls_version in ("TLSv1.2", "TLSv1.3") and record.cipher
    assert record.sni is None  # curl sends no SNI for an IP address
    assert_masked(record)
    marks = [(line.sender, line.tls) for line in record.transcript]
    boundary = next(i for i, line in enumerate(record.transcript) if line.text.startswith("[TLS established"))
    assert all(not tls for _, tls in marks[:boundary]) and all(tls for _, tls in marks[boundary + 1:])


def test_curl_smtps_against_plaintext_port(serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    server = serve(smtp("plaintext"))
    result = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "-u", f"alice:{SECRET}",
                         f"smtps://{HOST}:{server.port('smtp')}"])
    assert result.returncode == 35
    record = one_session(server)
    assert "tls-on-plaintext-port" in verdict_codes(record)
    assert "implicit TLS" in next(v.detail for v in record.verdicts if v.code == "tls-on-plaintext-port")


def test_plaintext_client_on_implicit_port(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(smtp("implicit"))
    with socket.create_connection((HOST, server.port("smtp")), timeout=10) as sock:
        sock.sendall(b"EHLO client\r\n")
        assert sock.recv(100) == b""  # the server gave up on the handshake and closed
    record = one_session(server)
    assert "plaintext-on-tls-port" in verdict_codes(record)
    assert record.tls_version is None


def test_attempt_refused_before_secret_is_attempted_only(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(smtp("starttls-required"))
    with socket.create_connection((HOST, server.port("smtp")), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"EHLO x\r\nAUTH LOGIN\r\nQUIT\r\n")
        replies = reader.readlines()
    assert any(line.startswith(b"538 ") for line in replies)
    record = one_session(server)
    detail = next(v.detail for v in record.verdicts if v.code == "credentials-in-clear")
    assert "no secret sent" in detail


def test_journal_file_gets_one_json_line_per_session(serve: Callable[..., ThreadedMailServer],
                                                     tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    server = serve(smtp("plaintext"), journal={"path": str(path)})
    for _ in range(2):
        with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
            client.login("alice", SECRET)
    server.journal.wait_for(2)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 2
    for entry in lines:
        for key in ("listener", "protocol", "tls_mode", "scenario", "client", "tls_version", "cipher", "sni",
                    "starttls", "tls_alert", "verdicts", "transcript"):
            assert key in entry
        assert entry["verdicts"] == ["credentials-in-clear"]
        assert SECRET not in json.dumps(entry)


def test_journal_is_bounded(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(smtp("plaintext"), journal={"max_sessions": 3, "max_transcript_lines": 4})
    for _ in range(5):
        with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
            client.ehlo()
            client.noop()
    server.journal.wait_for(3)
    sessions = server.journal.sessions()
    assert len(sessions) == 3
    assert all(len(s.transcript) == 4 and s.transcript_truncated > 0 for s in sessions)


def test_sessions_command_prints_the_journal_readably(serve: Callable[..., ThreadedMailServer],
                                                      tmp_path: Path) -> None:
    path = tmp_path / "sessions.jsonl"
    server = serve(smtp("plaintext"), journal={"path": str(path)})
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
        client.login("alice", SECRET)
    server.journal.wait_for(1)
    result = subprocess.run([sys.executable, "-m", "mailmodes", "sessions", "--journal", str(path), "--transcript"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "-> smtp (smtp, plaintext): no TLS user=alice" in result.stdout
    assert "! credentials-in-clear: AUTH PLAIN: the secret itself was sent unencrypted" in result.stdout
    assert "C: AUTH PLAIN ****" in result.stdout
    assert SECRET not in result.stdout


def test_fallback_after_a_failed_handshake(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(smtp("starttls-optional"), journal={"one_client": True})
    sock, reader = smtp_after_ehlo(server.port("smtp"))
    with sock:
        sock.sendall(b"STARTTLS\r\n")
        assert reader.readline().startswith(b"220 ")
        sock.sendall(b"\x16\x03\x01\x00\x05hello")  # a broken ClientHello: the handshake fails
        assert reader.read() == b""
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:  # "then try without TLS"
        client.login("alice", SECRET)
    first, second = server.journal.wait_for(2)
    assert first.tls_version is None and first.tls_failure
    assert "fallback" not in verdict_codes(first)
    assert {"fallback", "credentials-in-clear"} <= verdict_codes(second)


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_a_port_probe_on_an_implicit_port_earns_nothing(serve: Callable[..., ThreadedMailServer],
                                                        protocol: str) -> None:
    """A TCP connect and close (a Kubernetes tcpSocket check, `nc -z`) is not a client set up for
    plaintext, and the plaintext session that follows from the same host is no fallback."""
    server = serve({"name": "tls", "protocol": protocol, "tls": "implicit"},
                   {"name": "plain", "protocol": protocol, "tls": "starttls-optional"})
    socket.create_connection((HOST, server.port("tls")), timeout=10).close()
    probe = server.journal.wait_for(1)[0]
    assert probe.tls_failure == "no TLS handshake: the client closed the connection first"
    with socket.create_connection((HOST, server.port("plain")), timeout=10) as sock, sock.makefile("rb") as reader:
        reader.readline()
        sock.sendall({"smtp": b"EHLO x\r\n", "imap": b"a CAPABILITY\r\n", "pop3": b"CAPA\r\n"}[protocol])
        reader.readline()
    plain = server.journal.wait_for(2)[1]
    assert (verdict_codes(probe), "fallback" in verdict_codes(plain)) == (set(), False)


def test_a_client_that_waited_before_closing_is_no_probe() -> None:
    """Closing after PORT_CHECK_WINDOW, without a byte, is what a client set for plaintext does when its
    own greeting timeout runs out."""
    journal = Journal()
    listener = parse_config({"hostname": "h.test", "listeners": [
        {"name": "l", "protocol": "smtp", "port": 0, "tls": "implicit"}]}).listeners[0]
    record = journal.open(listener, ("127.0.0.1", 1), started=time.time() - PORT_CHECK_WINDOW - 1)
    record.tls_failure, record.closed_before_handshake = "no TLS handshake: the client closed the connection first", True
    journal.finish(record)
    assert "plaintext-on-tls-port" in verdict_codes(record)


def test_journal_can_be_switched_off(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(smtp("plaintext"), journal={"enabled": False})
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
        client.login("alice", SECRET)
        client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    assert server.call(lambda: len(server.store.accounts["bob"].inbox.messages)) == 1
    assert server.journal.sessions(include_open=True) == []
