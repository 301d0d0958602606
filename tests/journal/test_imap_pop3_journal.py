"""The journal and verdicts for IMAP and POP3, from real clients."""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.record.journal import SessionRecord
from support import one_session, run_client, verdict_codes

HOST = "127.0.0.1"
SECRET = "alice-password"


def listener(protocol: str, tls: str) -> dict[str, object]:
    return {"name": protocol, "protocol": protocol, "tls": tls}


def detail(record: SessionRecord, code: str) -> str:
    return next(v.detail for v in record.verdicts if v.code == code)


def assert_masked(record: SessionRecord) -> None:
    text = json.dumps(record.to_json())
    assert SECRET not in text
    assert base64.b64encode(f"\0alice\0{SECRET}".encode()).decode() not in text


def test_imap_login_in_clear(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(listener("imap", "plaintext"))
    client = imaplib.IMAP4(HOST, server.port("imap"), timeout=10)
    client.login("alice", SECRET)
    client.select("INBOX")
    client.logout()
    record = one_session(server)
    assert "secret itself was sent" in detail(record, "credentials-in-clear")
    assert record.user == "alice"
    assert_masked(record)
    assert any(line.text.endswith("LOGIN alice ****") for line in record.transcript)


def test_imap_login_refused_before_tls_still_sent_the_secret(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(listener("imap", "starttls-required"))
    client = imaplib.IMAP4(HOST, server.port("imap"), timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        client.login("alice", SECRET)  # imaplib ignores LOGINDISABLED: the password is on the wire
    client.logout()
    record = one_session(server)
    assert "secret itself was sent" in detail(record, "credentials-in-clear")
    assert_masked(record)


def test_imap_literal_password_and_authenticate_are_masked(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(listener("imap", "plaintext"))
    with socket.create_connection((HOST, server.port("imap")), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(f"a LOGIN alice {{{len(SECRET)}}}\r\n".encode())
        assert reader.readline().startswith(b"+")
        sock.sendall(SECRET.encode() + b"\r\n")
        assert reader.readline().startswith(b"a OK")
        sock.sendall(b"b LOGOUT\r\n")
        reader.read()
    with socket.create_connection((HOST, server.port("imap")), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        payload = base64.b64encode(f"\0alice\0{SECRET}".encode())
        sock.sendall(b"a AUTHENTICATE PLAIN\r\n")
        assert reader.readline().startswith(b"+")
        sock.sendall(payload + b"\r\n")
        assert reader.readline().startswith(b"a OK")
        sock.sendall(b"b LOGOUT\r\n")
        reader.read()
    for record in server.journal.wait_for(2):
        assert "credentials-in-clear" in verdict_codes(record)
        assert_masked(record)


def test_imap_starttls_client_is_clean(serve: Callable[..., ThreadedMailServer],
                                       client_context: ssl.SSLContext) -> None:
    server = serve(listener("imap", "starttls-required"))
    client = imaplib.IMAP4(HOST, server.port("imap"), timeout=10)
    client.starttls(ssl_context=client_context)
    client.login("alice", SECRET)
    client.select("INBOX")
    client.logout()
    record = one_session(server)
    assert record.verdicts == [] and record.starttls and record.tls_version
    assert_masked(record)


def test_curl_imap_ssl_reqd_is_clean_and_plain_is_not(serve: Callable[..., ThreadedMailServer],
                                                      ca_file: Path) -> None:
    server = serve(listener("imap", "starttls-optional"))
    url = f"imap://{HOST}:{server.port('imap')}/"
    secure = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "--ssl-reqd",
                         "-u", f"alice:{SECRET}", url])
    assert secure.returncode == 0, secure.stderr
    plain = run_client(["curl", "-sS", "--max-time", "10", "-u", f"alice:{SECRET}", url])
    assert plain.returncode == 0, plain.stderr
    first, second = server.journal.wait_for(2)
    assert first.verdicts == []
    assert {"credentials-in-clear", "no-upgrade"} <= verdict_codes(second)
    assert_masked(first)
    assert_masked(second)


def test_pop3_user_refused_before_tls_is_only_an_attempt(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(listener("pop3", "starttls-required"))
    client = poplib.POP3(HOST, server.port("pop3"), timeout=10)
    with pytest.raises(poplib.error_proto) as refused:
        client.user("alice")
    assert refused.value.args[0].startswith(b"-ERR [AUTH]")
    client.quit()
    record = one_session(server)
    assert "attempted unencrypted (no secret sent)" in detail(record, "credentials-in-clear")


@pytest.mark.parametrize("mode", ["plaintext", "starttls-optional"])
def test_pop3_pass_in_clear(serve: Callable[..., ThreadedMailServer], mode: str) -> None:
    server = serve(listener("pop3", mode))
    client = poplib.POP3(HOST, server.port("pop3"), timeout=10)
    client.user("alice")
    client.pass_(SECRET)
    client.stat()
    client.quit()
    record = one_session(server)
    assert "PASS: the secret itself was sent" in detail(record, "credentials-in-clear")
    assert any(line.text == "PASS ****" for line in record.transcript)
    assert_masked(record)


def test_curl_pop3s_is_clean(serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    server = serve(listener("pop3", "implicit"))
    result = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "-u", f"alice:{SECRET}",
                         f"pop3s://{HOST}:{server.port('pop3')}/"])
    assert result.returncode == 0, result.stderr
    record = one_session(server)
    assert record.verdicts == [] and record.tls_version and not record.starttls
    assert_masked(record)


def test_curl_pop3s_against_plaintext_port(serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    server = serve(listener("pop3", "plaintext"))
    result = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "-u", f"alice:{SECRET}",
                         f"pop3s://{HOST}:{server.port('pop3')}/"])
    assert result.returncode == 35
    assert "tls-on-plaintext-port" in verdict_codes(one_session(server))


def test_plaintext_imap_client_on_implicit_port_waits_for_a_greeting(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(listener("imap", "implicit"), limits={"idle_timeout": 0.5})
    with socket.create_connection((HOST, server.port("imap")), timeout=10) as sock:
        assert sock.recv(100) == b""  # nothing until the server gives up on the handshake
    record = one_session(server)
    assert "the client sent nothing and waited" in detail(record, "plaintext-on-tls-port")
