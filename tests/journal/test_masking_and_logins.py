"""What the journal says about credentials, from real listeners: no secret in any byte form a
client may use, the user the server logged in as, failed logins marked as failed, and the SMTP
session's own DATA state (issue 13, items 1, 2, 3 and 5)."""

from __future__ import annotations

import base64
import imaplib
import json
import logging
import poplib
import re
import smtplib
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
PLAIN = base64.b64encode(f"\0alice\0{SECRET}".encode())
USER64, PASS64 = base64.b64encode(b"alice"), base64.b64encode(SECRET.encode())
Serve = Callable[..., ThreadedMailServer]


def listener(protocol: str, tls: str = "plaintext", **more: object) -> dict[str, object]:
    return {"name": protocol, "protocol": protocol, "tls": tls, **more}


def assert_masked(record: SessionRecord) -> None:
    text = json.dumps(record.to_json())
    for secret in (SECRET, PLAIN.decode(), PASS64.decode()):
        assert secret not in text, [line.text for line in record.transcript]


def client_lines(record: SessionRecord) -> list[str]:
    return [line.text for line in record.transcript if line.sender == "client"]


GOODBYE = {"imap": b"z LOGOUT\r\n", "pop3": b"QUIT\r\n", "smtp": b"QUIT\r\n"}


def raw_session(port: int, protocol: str, *writes: bytes) -> None:
    """Each write in one send, once the server has answered the one before (every write here
    gets an answer); then the goodbye, and read until the server closes: all was handled."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.recv(65536)  # the greeting
        for data in writes:
            sock.sendall(data)
            sock.recv(65536)
        sock.sendall(GOODBYE[protocol])
        while sock.recv(65536):
            pass


# --- item 1: no secret recorded, whatever the form -------------------------------------------

IN_ONE_WRITE = [
    ("imap", b"a LOGIN {5+}\r\nalice alice-password\r\n"),
    ("imap", b"a AUTHENTICATE PLAIN\r\n" + PLAIN + b"\r\n"),
    ("pop3", b"AUTH PLAIN\r\n" + PLAIN + b"\r\n"),
    ("smtp", b"EHLO x\r\nAUTH PLAIN\r\n" + PLAIN + b"\r\n"),
    ("smtp", b"EHLO x\r\nAUTH LOGIN\r\n" + USER64 + b"\r\n" + PASS64 + b"\r\n"),
]


@pytest.mark.parametrize(("protocol", "data"), IN_ONE_WRITE)
def test_a_response_in_the_same_write_as_its_command_is_masked(serve: Serve, protocol: str, data: bytes) -> None:
    server = serve(listener(protocol))
    raw_session(server.port(protocol), protocol, data)
    record = one_session(server)
    assert_masked(record)
    assert record.user == "alice"  # the server read them as credentials, and logged in
    assert client_lines(record)[-1] in ("z LOGOUT", "QUIT")  # the goodbye shown, not masked


REJECTED_FORMS = [
    ("pop3", b"USER alice\r\n", b" PASS alice-password\r\n"),  # leading space
    ("pop3", b"USER alice\r\n", b"PASS\talice-password\r\n"),  # a tab
    ("imap", b"a  LOGIN alice alice-password\r\n", b""),  # two spaces
    ("imap", b"a\tLOGIN\talice\talice-password\r\n", b""),
    ("imap", b"a UID LOGIN alice alice-password\r\n", b""),
    ("smtp", b"EHLO x\r\n", b"AUTH\tPLAIN\t" + PLAIN + b"\r\n"),
]


@pytest.mark.parametrize(("protocol", "first", "second"), REJECTED_FORMS)
def test_command_forms_the_server_rejects_show_no_secret(serve: Serve, protocol: str, first: bytes,
                                                         second: bytes) -> None:
    server = serve(listener(protocol))
    raw_session(server.port(protocol), protocol, first, *([second] if second else []))
    record = one_session(server)
    assert_masked(record)
    assert record.user is None


def test_a_response_pipelined_behind_a_refused_auth_is_in_no_reply_and_no_log(
        serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    """aiosmtpd logs each command line as it came (mailmodes serve -v); this one is no command."""
    caplog.set_level(logging.DEBUG)
    server = serve(listener("smtp", "starttls-required"))
    raw_session(server.port("smtp"), "smtp", b"EHLO x\r\nAUTH PLAIN\r\n" + PLAIN + b"\r\n")
    record = one_session(server)
    assert_masked(record)
    assert PLAIN.decode() not in caplog.text and PLAIN.decode().upper() not in caplog.text
    assert [line.text[:3] for line in record.transcript if line.sender == "server"][-3:] == ["538", "530", "221"]


def test_a_response_pipelined_behind_a_refused_authenticate_is_not_echoed(serve: Serve) -> None:
    """Refused before TLS, the SASL response is a line of its own to the server: neither the
    transcript nor the BAD that answers it may carry it."""
    server = serve(listener("imap", "starttls-required"))
    raw_session(server.port("imap"), "imap", b"a AUTHENTICATE PLAIN\r\n" + PLAIN + b"\r\n")
    record = one_session(server)
    assert_masked(record)
    assert "* BAD Not a command" in [line.text for line in record.transcript if line.sender == "server"]


# --- item 2: the right user, failed logins marked as failed ---------------------------------


def logins(record: SessionRecord) -> list[tuple[str, str | None, bool]]:
    return [(login["command"], login["user"], login["accepted"]) for login in record.to_json()["logins"]]


def assert_logged_in(record: SessionRecord, command: str) -> None:
    """alice, and nothing else, logged in once with `command`; nothing of the secret shown."""
    assert record.user == "alice"
    assert logins(record) == [(command, "alice", True)]
    assert_masked(record)


def test_curl_smtp_auth_plain_as_a_continuation(serve: Serve, tmp_path: Path) -> None:
    server = serve(listener("smtp"))
    (tmp_path / "m.eml").write_bytes(b"Subject: x\r\n\r\nx\r\n")
    result = run_client(["curl", "-v", "-sS", "--max-time", "10", "-u", f"alice:{SECRET}", "--mail-from",
                         "alice@example.test", "--mail-rcpt", "bob@example.test", "-T", str(tmp_path / "m.eml"),
                         f"smtp://{HOST}:{server.port('smtp')}"])
    assert result.returncode == 0, result.stderr
    sent = [line.strip() for line in result.stderr.splitlines() if line.startswith("> ")]
    assert sent[1:3] == ["> AUTH PLAIN", f"> {PLAIN.decode()}"]  # curl's own log: the response on its own line
    record = one_session(server)
    assert_logged_in(record, "AUTH PLAIN")


def test_curl_pop3_auth_plain_as_a_continuation(serve: Serve) -> None:
    server = serve(listener("pop3"))
    result = run_client(["curl", "-v", "-sS", "--max-time", "10", "-u", f"alice:{SECRET}",
                         f"pop3://{HOST}:{server.port('pop3')}/"])
    assert result.returncode == 0, result.stderr
    assert f"> {PLAIN.decode()}" in result.stderr
    record = one_session(server)
    assert_logged_in(record, "AUTH PLAIN")


def test_auth_login_from_smtplib_and_msmtp(serve: Serve, tmp_path: Path) -> None:
    server = serve(listener("smtp"))
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
        client.ehlo()
        client.user, client.password = "alice", SECRET
        assert client.auth("LOGIN", client.auth_login)[0] == 235
    result = run_client(["msmtp", "-C", "/dev/null", "--host", HOST, f"--port={server.port('smtp')}", "--auth=login",
                         "--user=alice", f"--passwordeval=echo {SECRET}", "--tls=off", "--from=alice@example.test",
                         "--timeout=10", "--debug", "bob@example.test"], stdin=b"Subject: x\r\n\r\nx\r\n")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "AUTH LOGIN" in result.stdout
    for record in server.journal.wait_for(2):
        assert_logged_in(record, "AUTH LOGIN")


def test_imap_authenticate_as_a_continuation(serve: Serve) -> None:
    server = serve(listener("imap"))
    client = imaplib.IMAP4(HOST, server.port("imap"), timeout=10)
    client.authenticate("PLAIN", lambda challenge: f"\0alice\0{SECRET}".encode())
    client.logout()
    record = one_session(server)
    assert_logged_in(record, "AUTHENTICATE PLAIN")


def test_imap_literal_login(serve: Serve) -> None:
    server = serve(listener("imap"))
    raw_session(server.port("imap"), "imap", b"a LOGIN {5}\r\n", b"alice {14}\r\n", SECRET.encode() + b"\r\n")
    record = one_session(server)
    assert_logged_in(record, "LOGIN")
    assert client_lines(record) == ["a LOGIN {5}", "[literal: 5 bytes]", " {14}", "****", "z LOGOUT"]


def test_failed_logins_are_failed_attempts(serve: Serve) -> None:
    server = serve(listener("smtp"), listener("imap"), listener("pop3", apop=True))
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as smtp, pytest.raises(smtplib.SMTPAuthenticationError):
        smtp.login("alice", "wrong")  # AUTH PLAIN with its initial response, then AUTH LOGIN
    imap = imaplib.IMAP4(HOST, server.port("imap"), timeout=10)
    with pytest.raises(imaplib.IMAP4.error):
        imap.login("alice", "wrong")
    imap.logout()
    pop = poplib.POP3(HOST, server.port("pop3"), timeout=10)
    pop.user("alice")
    with pytest.raises(poplib.error_proto):
        pop.pass_("wrong")
    with pytest.raises(poplib.error_proto):
        pop.apop("alice", "wrong")
    pop.quit()
    records = {record.protocol: record for record in server.journal.wait_for(3)}
    assert [record.user for record in records.values()] == [None, None, None]
    assert logins(records["smtp"]) == [("AUTH PLAIN", "alice", False), ("AUTH LOGIN", "alice", False)]
    assert logins(records["imap"]) == [("LOGIN", "alice", False)]
    assert logins(records["pop3"]) == [("PASS", "alice", False), ("APOP", "alice", False)]


def test_a_login_refused_because_the_maildrop_is_in_use_is_no_login(serve: Serve) -> None:
    server = serve(listener("pop3"))
    first = poplib.POP3(HOST, server.port("pop3"), timeout=10)
    first.user("alice")
    first.pass_(SECRET)
    second = poplib.POP3(HOST, server.port("pop3"), timeout=10)
    second.user("alice")
    with pytest.raises(poplib.error_proto, match="IN-USE"):
        second.pass_(SECRET)
    second.quit()
    record = server.journal.wait_for(1)[0]
    first.quit()
    assert record.user is None
    assert logins(record) == [("PASS", "alice", False)]


def test_user_pass_and_apop_name_the_account(serve: Serve) -> None:
    server = serve(listener("pop3", apop=True))
    pop = poplib.POP3(HOST, server.port("pop3"), timeout=10)
    pop.apop("alice@example.test", SECRET)  # by address: the account is alice
    pop.quit()
    record = one_session(server)
    assert_logged_in(record, "APOP")


# --- item 3: SMTP DATA is the session's state, not a reply code ------------------------------


def test_swaks_after_an_unexpected_starttls_reply_is_judged(serve: Serve) -> None:
    server = serve(listener("smtp", "starttls-optional", scenario="starttls-unexpected-reply"))
    result = run_client(["swaks", "--server", HOST, "--port", str(server.port("smtp")), "--from",
                         "alice@example.test", "--to", "bob@example.test", "--auth", "PLAIN", "--auth-user", "alice",
                         "--auth-password", SECRET, "--tls-optional", "--timeout", "10"])
    assert "<** 354 Go ahead" in result.stdout and f"-> AUTH PLAIN {PLAIN.decode()}" in result.stdout
    record = one_session(server)
    assert {"credentials-in-clear", "mail-in-clear"} <= verdict_codes(record)
    lines = client_lines(record)
    # What swaks sent after the 354 is commands, and only its real DATA has a message.
    assert lines[lines.index("STARTTLS") + 1:lines.index("DATA") + 1] == [
        "AUTH PLAIN ****", "MAIL FROM:<alice@example.test>", "RCPT TO:<bob@example.test>", "DATA"]
    assert [line for line in lines if line.startswith("[message")] == [lines[lines.index("DATA") + 1]]
    assert record.user == "alice"
    assert_masked(record)


# --- item 5: a bare POP3 AUTH is no login attempt --------------------------------------------


@pytest.mark.parametrize("scenario", [None, "capability-fails"])
def test_bare_pop3_auth_lists_mechanisms_and_is_no_attempt(serve: Serve, scenario: str | None) -> None:
    """What mutt and neomutt send after -ERR to CAPA (capability-fails): no name, no secret."""
    server = serve(listener("pop3", "starttls-optional", **({"scenario": scenario} if scenario else {})))
    raw_session(server.port("pop3"), "pop3", b"CAPA\r\n", b"AUTH\r\n")
    record = one_session(server)
    assert "credentials-in-clear" not in verdict_codes(record)
    assert record.credentials == [] and logins(record) == []


# --- item 7: a ClientHello on a plaintext port is recorded as one -------------------------------


def client_hello() -> bytes:
    """The ClientHello a stock TLS client sends first, as bytes (Python's ssl, memory BIOs)."""
    outgoing = ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_a_client_hello_on_a_starttls_port_is_recorded_as_such(serve: Serve, protocol: str) -> None:
    server = serve(listener(protocol, "starttls-required"))
    hello = client_hello()
    with socket.create_connection((HOST, server.port(protocol)), timeout=10) as sock:
        greeting = sock.recv(65536)
        sock.sendall(hello)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536) == b""  # nothing answers it, not even a BAD or a 500
    record = one_session(server)
    assert client_lines(record) == [f"[TLS ClientHello, {len(hello)} bytes]"]
    assert [line.text for line in record.transcript if line.sender == "server"] == [greeting.decode().rstrip("\r\n")]
    assert "tls-on-plaintext-port" in verdict_codes(record)


@pytest.mark.parametrize(("protocol", "scheme"), [("smtp", "smtps"), ("imap", "imaps"), ("pop3", "pop3s")])
def test_curl_set_for_implicit_tls_on_a_starttls_port(serve: Serve, ca_file: Path, protocol: str, scheme: str) -> None:
    server = serve(listener(protocol, "starttls-optional"))
    result = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "-u", f"alice:{SECRET}",
                         f"{scheme}://{HOST}:{server.port(protocol)}/"])
    assert result.returncode == 35, result.stderr  # wrong version number: our greeting is no TLS
    record = one_session(server)
    assert [re.sub(r"\d+", "N", line) for line in client_lines(record)] == ["[TLS ClientHello, N bytes]"]
    assert {"tls-on-plaintext-port"} == verdict_codes(record)


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_a_client_hello_after_a_starttls_that_no_tls_follows(serve: Serve, protocol: str) -> None:
    server = serve(listener(protocol, "starttls-required", scenario="starttls-no-handshake"))
    hello = client_hello()
    with socket.create_connection((HOST, server.port(protocol)), timeout=10) as sock, sock.makefile("rb") as reader:
        reader.readline()
        sock.sendall({"smtp": b"STARTTLS\r\n", "imap": b"a STARTTLS\r\n", "pop3": b"STLS\r\n"}[protocol])
        reader.readline()
        sock.sendall(hello)
        reader.read()  # the scenario's plaintext answer, then it closes
    record = one_session(server)
    assert client_lines(record)[-1] == f"[TLS ClientHello, {len(hello)} bytes]"
