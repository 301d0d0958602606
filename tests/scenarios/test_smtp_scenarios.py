"""SMTP misbehaviour scenarios (KNOWN-BAD.md section 2): strict clients refuse them cleanly and
send no credentials; naive clients earn the verdict that says what they fell for."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.scenarios.misbehaviour import CANARY_INJECTED, CANARY_PRETLS
from support import one_session, run_client, smtp_after_ehlo, verdict_codes

HOST = "127.0.0.1"
SECRET = "alice-password"
BAD_VERDICTS = {"credentials-in-clear", "mail-in-clear", "acted-on-injection", "used-stale-capability"}


def scenario(name: str, tls: str = "starttls-required", **extra: object) -> dict[str, object]:
    return {"name": "smtp", "protocol": "smtp", "tls": tls, "role": "submission", "scenario": name, **extra}


def curl(server: ThreadedMailServer, ca_file: Path, tmp_path: Path, *options: str,
         scheme: str = "smtp") -> tuple[int, str]:
    (tmp_path / "m.eml").write_bytes(b"Subject: s\r\n\r\nbody\r\n")
    result = run_client(["curl", "-sS", "--max-time", "3", "--cacert", str(ca_file), "-u", f"alice:{SECRET}",
                         "--mail-from", "alice@example.test", "--mail-rcpt", "alice@example.test",
                         "-T", str(tmp_path / "m.eml"), *options, f"{scheme}://{HOST}:{server.port('smtp')}"])
    return result.returncode, result.stderr


# scenario -> (curl --ssl-reqd exit status, text curl prints): documented refusals (CLIENTS.md).
STRICT_CURL = {
    "starttls-stripped": (64, "STARTTLS not supported"),
    "starttls-rejected": (64, "STARTTLS denied, code 502"),
    "starttls-tempfail": (64, "STARTTLS denied, code 454"),
    "starttls-unexpected-reply": (64, "STARTTLS denied, code 354"),
    "starttls-no-handshake": (35, "wrong version number"),
    "starttls-dropped": (35, "SSL_ERROR_SYSCALL"),
    "starttls-silence": (28, "timed out"),
    "capability-fails": (9, "502"),
    "protocol-downgrade": (9, "500"),
    "greeting-reject": (8, "554"),
}


@pytest.mark.parametrize("name", sorted(STRICT_CURL))
def test_curl_ssl_reqd_refuses_and_sends_no_credentials(serve: Callable[..., ThreadedMailServer], ca_file: Path,
                                                         tmp_path: Path, name: str) -> None:
    server = serve(scenario(name), limits={"idle_timeout": 5})
    status, stderr = curl(server, ca_file, tmp_path, "--ssl-reqd")
    assert (status, STRICT_CURL[name][1] in stderr) == (STRICT_CURL[name][0], True), stderr
    record = one_session(server)
    assert not verdict_codes(record) & BAD_VERDICTS
    assert record.credentials == []
    assert not server.call(lambda: server.store.accounts["alice"].inbox.messages)


def test_stripped_fools_an_opportunistic_client(serve: Callable[..., ThreadedMailServer], ca_file: Path,
                                                tmp_path: Path) -> None:
    server = serve(scenario("starttls-stripped"))
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
        client.ehlo()
        assert not client.has_extn("starttls") and client.has_extn("auth")
        assert client.docmd("STARTTLS") == (502, b"5.5.1 Command not implemented")
    status, _ = curl(server, ca_file, tmp_path, "--ssl")  # "use TLS if available"
    assert status == 0
    fooled = server.journal.wait_for(2)[-1]
    assert {"credentials-in-clear", "mail-in-clear"} <= verdict_codes(fooled)


def test_response_injection(serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve(scenario("response-injection"))
    # smtplib throws its plaintext buffer away at STARTTLS and asks EHLO again: it is not fooled.
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
        client.starttls(context=client_context)
        client.ehlo()
        assert CANARY_INJECTED not in client.esmtp_features.get("auth", "")
        client.login("alice", SECRET)
    assert not verdict_codes(one_session(server)) & BAD_VERDICTS
    # A naive client reads the injected lines as its post-TLS EHLO reply and uses the canary.
    sock, reader = smtp_after_ehlo(server.port("smtp"))
    with sock:
        sock.sendall(b"STARTTLS\r\n")
        ready, injected = reader.readline(), [reader.readline(), reader.readline()]
        assert ready == b"220 2.0.0 Ready to start TLS\r\n"
        assert injected[1] == f"250 AUTH {CANARY_INJECTED}\r\n".encode()
        with client_context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(f"AUTH {CANARY_INJECTED}\r\nQUIT\r\n".encode())
            tls.makefile("rb").readlines()
    fooled = server.journal.wait_for(2)[-1]
    assert "acted-on-injection" in verdict_codes(fooled)


def test_injection_detected_by_command_order(serve: Callable[..., ThreadedMailServer],
                                             client_context: ssl.SSLContext) -> None:
    server = serve(scenario("response-injection"))
    sock, reader = smtp_after_ehlo(server.port("smtp"))
    with sock:
        sock.sendall(b"STARTTLS\r\n")
        reader.readline()
        with client_context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk\r\nQUIT\r\n")  # no EHLO after TLS
            tls.makefile("rb").readlines()
    detail = next(v.detail for v in one_session(server).verdicts if v.code == "acted-on-injection")
    assert "without a new EHLO" in detail


def test_stale_capability(serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve(scenario("stale-capability"))
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
        client.ehlo()
        assert CANARY_PRETLS in client.esmtp_features["auth"]
        client.starttls(context=client_context)
        client.ehlo()
        assert CANARY_PRETLS not in client.esmtp_features["auth"]
        client.login("alice", SECRET)
    assert not verdict_codes(one_session(server)) & BAD_VERDICTS
    sock, reader = smtp_after_ehlo(server.port("smtp"))
    with sock:
        sock.sendall(b"STARTTLS\r\n")
        reader.readline()
        with client_context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(f"EHLO naive\r\nAUTH {CANARY_PRETLS}\r\nQUIT\r\n".encode())
            tls.makefile("rb").readlines()
    assert "used-stale-capability" in verdict_codes(server.journal.wait_for(2)[-1])


def test_greeting_reject(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(scenario("greeting-reject"))
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP(HOST, server.port("smtp"), timeout=10)
    assert refused.value.smtp_code == 554


def test_implicit_speaks_plaintext(serve: Callable[..., ThreadedMailServer], ca_file: Path,
                                   tmp_path: Path, client_context: ssl.SSLContext) -> None:
    server = serve(scenario("implicit-speaks-plaintext", tls="implicit"))
    with pytest.raises(ssl.SSLError):
        smtplib.SMTP_SSL(HOST, server.port("smtp"), context=client_context, timeout=10)
    status, stderr = curl(server, ca_file, tmp_path, scheme="smtps")
    assert status == 35, stderr
    # A client that accepts it talks in the clear, and is told AUTH is fine: it is fooled.
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
        client.login("alice", SECRET)
    assert "credentials-in-clear" in verdict_codes(server.journal.wait_for(3)[-1])


@pytest.mark.parametrize("name", ["command-injection-vulnerable", None])
def test_plaintext_pipelined_behind_starttls_runs_only_on_the_vulnerable_server(
        serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext, name: str | None) -> None:
    server = serve({**scenario(name or "chaos"), "scenario": name} if name else
                   {"name": "smtp", "protocol": "smtp", "tls": "starttls-required"})
    sock, reader = smtp_after_ehlo(server.port("smtp"))
    with sock:
        sock.sendall(b"STARTTLS\r\nNOOP\r\n")
        assert reader.readline() == b"220 2.0.0 Ready to start TLS\r\n"
        with client_context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"QUIT\r\n")
            replies = tls.makefile("rb").readlines()
    executed = replies[0] == b"250 2.0.0 OK\r\n"
    assert executed == (name == "command-injection-vulnerable"), replies
    record = one_session(server)
    assert "pipelined-after-starttls" in verdict_codes(record)
    assert any(("EXECUTED" if executed else "discarded") in line.text for line in record.transcript)


def test_chaos_reply_at_a_stage(serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve(scenario("chaos", tls="implicit", chaos={"stage": "RCPT", "reply": "451 4.3.0 Try again later"}))
    with smtplib.SMTP_SSL(HOST, server.port("smtp"), context=client_context, timeout=10) as client:
        client.login("alice", SECRET)
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("alice@example.test", ["alice@example.test"], b"Subject: x\r\n\r\nx\r\n")
        assert refused.value.recipients["alice@example.test"] == (451, b"4.3.0 Try again later")
        assert client.noop()[0] == 250


def test_chaos_disconnect_at_a_stage(serve: Callable[..., ThreadedMailServer],
                                     client_context: ssl.SSLContext) -> None:
    server = serve(scenario("chaos", tls="implicit", chaos={"stage": "MAIL", "disconnect": True}))
    with smtplib.SMTP_SSL(HOST, server.port("smtp"), context=client_context, timeout=10) as client:
        client.login("alice", SECRET)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.mail("alice@example.test")


def test_chaos_delay_per_reply(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(scenario("chaos", tls="plaintext", chaos={"delay": 0.2}))
    started = time.monotonic()
    with socket.create_connection((HOST, server.port("smtp")), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"NOOP\r\nNOOP\r\n")
        reader.readline(), reader.readline()
    assert time.monotonic() - started >= 0.6  # three replies, each held back 0.2 s
