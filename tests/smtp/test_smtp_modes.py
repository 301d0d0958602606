"""SMTP in every TLS mode and role, driven with smtplib against real listeners (PROTOCOL.md)."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme

from mailmodes.app import ThreadedMailServer
from support import one_session, smtp_after_ehlo, verdict_codes

MESSAGE = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hi\r\n\r\nHello Bob.\r\n.leading dot\r\n"
LOOPBACK = "127.0.0.1"


def listener(tls: str, role: str = "submission", **extra: object) -> dict[str, object]:
    return {"name": "smtp", "protocol": "smtp", "tls": tls, "role": role, **extra}


def connect(server: ThreadedMailServer, context: ssl.SSLContext, tls: str) -> smtplib.SMTP:
    port = server.port("smtp")
    if tls == "implicit":
        return smtplib.SMTP_SSL(LOOPBACK, port, context=context, timeout=10)
    return smtplib.SMTP(LOOPBACK, port, timeout=10)


def inbox(server: ThreadedMailServer, user: str) -> list[bytes]:
    return server.call(lambda: [m.data for m in server.store.accounts[user].inbox.messages])


def ehlo_keywords(client: smtplib.SMTP) -> set[str]:
    code, _ = client.ehlo()
    assert code == 250
    return {keyword.upper() for keyword in client.esmtp_features}


def test_greeting_names_the_host(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(listener("plaintext"))
    with socket.create_connection((LOOPBACK, server.port("smtp")), timeout=10) as sock:
        greeting = sock.makefile("rb").readline()
    assert greeting.startswith(b"220 mail.example.test ESMTP ")


def test_implicit_offers_auth_and_never_starttls(serve: Callable[..., ThreadedMailServer],
                                                 client_context: ssl.SSLContext) -> None:
    server = serve(listener("implicit"))
    with connect(server, client_context, "implicit") as client:
        features = ehlo_keywords(client)
        assert "AUTH" in features and "STARTTLS" not in features
        # exactly the mechanisms we implement: aiosmtpd takes every auth_* attribute for one
        assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]
        assert client.docmd("STARTTLS") == (503, b"5.5.1 TLS already active")
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    assert inbox(server, "bob") == [MESSAGE]


def test_required_refuses_everything_before_starttls(serve: Callable[..., ThreadedMailServer],
                                                    client_context: ssl.SSLContext) -> None:
    server = serve(listener("starttls-required"))
    with connect(server, client_context, "starttls-required") as client:
        features = ehlo_keywords(client)
        assert "STARTTLS" in features
        assert "AUTH" not in features
        assert client.docmd("MAIL FROM:<alice@example.test>") == (530, b"5.7.0 Must issue a STARTTLS command first")
        assert client.docmd("HELO client") == (530, b"5.7.0 Must issue a STARTTLS command first")
        assert client.docmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk") == (
            538, b"5.7.11 Encryption required for requested authentication mechanism")
        assert client.noop()[0] == 250
        assert client.docmd("STARTTLS now") == (501, b"5.5.4 Syntax error (no parameters allowed)")
        assert client.starttls(context=client_context) == (220, b"2.0.0 Ready to start TLS")
        features = ehlo_keywords(client)
        assert "STARTTLS" not in features
        assert "AUTH" in features
        assert client.docmd("STARTTLS") == (503, b"5.5.1 TLS already active")
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    assert inbox(server, "bob") == [MESSAGE]


def test_starttls_forgets_the_earlier_ehlo(serve: Callable[..., ThreadedMailServer],
                                          client_context: ssl.SSLContext) -> None:
    server = serve(listener("starttls-required"))
    with connect(server, client_context, "starttls-required") as client:
        client.ehlo()
        client.starttls(context=client_context)
        # RFC 3207 4.2: the client must say EHLO again; AUTH before it is "send EHLO first".
        code, _ = client.docmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk")
        assert code == 503


def test_optional_offers_starttls_and_allows_plaintext_auth(serve: Callable[..., ThreadedMailServer],
                                                            client_context: ssl.SSLContext) -> None:
    server = serve(listener("starttls-optional"))
    with connect(server, client_context, "starttls-optional") as client:
        features = ehlo_keywords(client)
        assert {"STARTTLS", "AUTH", "SIZE"} <= features
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    with connect(server, client_context, "starttls-optional") as client:
        client.starttls(context=client_context)
        assert "STARTTLS" not in ehlo_keywords(client)
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    assert inbox(server, "bob") == [MESSAGE, MESSAGE]


def test_plaintext_never_offers_tls(serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve(listener("plaintext"))
    with connect(server, client_context, "plaintext") as client:
        features = ehlo_keywords(client)
        assert "STARTTLS" not in features and "AUTH" in features
        assert client.docmd("STARTTLS") == (454, b"4.7.0 TLS not available due to temporary reason")
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    assert inbox(server, "bob") == [MESSAGE]


def test_auth_login_mechanism_and_bad_credentials(serve: Callable[..., ThreadedMailServer],
                                                  client_context: ssl.SSLContext) -> None:
    server = serve(listener("implicit"))
    with connect(server, client_context, "implicit") as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as failure:
            client.login("alice", "wrong")
        assert failure.value.smtp_code == 535
        assert failure.value.smtp_error == b"5.7.8 Authentication credentials invalid"
        client.user, client.password = "bob", "bob-password"
        assert client.auth("LOGIN", client.auth_login) == (235, b"2.7.0 Authentication successful")


def test_submission_requires_auth_before_mail(serve: Callable[..., ThreadedMailServer],
                                              client_context: ssl.SSLContext) -> None:
    server = serve(listener("implicit"))
    with connect(server, client_context, "implicit") as client:
        client.ehlo()
        assert client.docmd("MAIL FROM:<alice@example.test>") == (530, b"5.7.0 Authentication required")


def test_submission_captures_outside_mail_and_relays_nothing(serve: Callable[..., ThreadedMailServer],
                                                             client_context: ssl.SSLContext) -> None:
    server = serve(listener("implicit"))
    with connect(server, client_context, "implicit") as client:
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", ["someone@elsewhere.test", "bob@example.test"], MESSAGE)
    captured = server.call(lambda: list(server.store.captured))
    assert len(captured) == 1
    assert captured[0].recipients == ("someone@elsewhere.test",)
    assert captured[0].sender_account == "alice" and captured[0].data == MESSAGE
    assert inbox(server, "bob") == [MESSAGE]


def test_mta_role_takes_local_mail_without_auth_and_relays_nothing(
        serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve(listener("starttls-optional", role="mta"))
    with connect(server, client_context, "starttls-optional") as client:
        client.ehlo()
        assert client.mail("someone@elsewhere.test")[0] == 250
        assert client.rcpt("someone@elsewhere.test") == (554, b"5.7.1 Relay access denied")
        assert client.rcpt("nobody@example.test") == (550, b"5.1.1 User unknown")
        assert client.rcpt("ALICE@example.test")[0] == 250
        assert client.data(MESSAGE)[0] == 250
    assert inbox(server, "alice") == [MESSAGE]
    assert server.call(lambda: server.store.captured) == []


def test_catch_all_takes_unknown_local_recipients(serve: Callable[..., ThreadedMailServer],
                                                  client_context: ssl.SSLContext) -> None:
    server = serve(listener("plaintext", role="mta"), catch_all="bob")
    with connect(server, client_context, "plaintext") as client:
        client.sendmail("x@elsewhere.test", ["whoever@example.test"], MESSAGE)
    assert inbox(server, "bob") == [MESSAGE]


def test_size_is_advertised_and_enforced(serve: Callable[..., ThreadedMailServer],
                                         client_context: ssl.SSLContext) -> None:
    server = serve(listener("plaintext", limits={"max_message_size": 1000}))
    with connect(server, client_context, "plaintext") as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "1000"
        client.login("alice", "alice-password")
        assert client.docmd("MAIL FROM:<alice@example.test> SIZE=5000")[0] == 552
        client.rset()
        # A client that does not declare SIZE is stopped at the end of DATA instead.
        assert client.mail("alice@example.test")[0] == 250
        assert client.rcpt("bob@example.test")[0] == 250
        assert client.data((b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n") * 30) == (
            552, b"5.3.4 Message size exceeds fixed maximum message size")
        assert client.noop()[0] == 250
    assert inbox(server, "bob") == []


def test_bad_command_and_long_line_get_5xx_and_the_session_goes_on(
        serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve(listener("plaintext"))
    with connect(server, client_context, "plaintext") as client:
        client.ehlo()
        assert client.docmd("FROBNICATE")[0] == 500
        assert client.docmd("NOOP " + "x" * 2000) == (500, b"5.5.2 Command line too long")
        assert client.noop()[0] == 250
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    assert inbox(server, "bob") == [MESSAGE]


@pytest.mark.parametrize(("tls", "listed"), [
    ("starttls-optional", "AUTH BDAT DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET STARTTLS VRFY"),
    ("implicit", "AUTH BDAT DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET VRFY"),
])
def test_help_lists_and_explains_every_command(serve: Callable[..., ThreadedMailServer],
                                               client_context: ssl.SSLContext, tls: str, listed: str) -> None:
    server = serve(listener(tls, role="mta"))  # a submission listener answers HELP only after AUTH
    with connect(server, client_context, tls) as client:
        client.ehlo()
        assert client.docmd("HELP") == (250, f"Supported commands: {listed}".encode())
        assert client.docmd("HELP DATA") == (250, b"Syntax: DATA")
        assert client.docmd("HELP MAIL") == (250, b"Syntax: MAIL FROM: <address> [SP <mail-parameters>]")
        assert client.docmd("HELP STARTTLS") == ((250, b"Syntax: STARTTLS") if "STARTTLS" in listed
                                                 else (501, b"Supported commands: " + listed.encode()))


def test_bad_command_budget_closes_with_421(serve: Callable[..., ThreadedMailServer],
                                            client_context: ssl.SSLContext) -> None:
    server = serve(listener("plaintext", limits={"max_bad_commands": 3}))
    with connect(server, client_context, "plaintext") as client:
        for _ in range(3):
            assert client.docmd("FROBNICATE")[0] == 500
        # The budget's last error is answered, and the goodbye follows it at once.
        assert client.getreply() == (421, b"4.7.0 Too many errors, closing connection")


def test_connection_limit(serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve(listener("plaintext", limits={"max_connections": 1}))
    with connect(server, client_context, "plaintext") as first:
        assert first.noop()[0] == 250
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            connect(server, client_context, "plaintext")
        assert refused.value.smtp_code == 421
    with connect(server, client_context, "plaintext") as again:
        assert again.noop()[0] == 250


def test_idle_timeout_says_421_then_closes(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(listener("plaintext", limits={"idle_timeout": 0.3}))
    with socket.create_connection((LOOPBACK, server.port("smtp")), timeout=10) as sock:
        lines = sock.makefile("rb").readlines()  # returns when the server closes
    assert lines[0].startswith(b"220 ")
    assert lines[-1] == b"421 4.4.2 Idle timeout, closing connection\r\n"


def test_plaintext_pipelined_behind_starttls_is_discarded(serve: Callable[..., ThreadedMailServer],
                                                          client_context: ssl.SSLContext) -> None:
    server = serve(listener("starttls-required"))
    sock, reader = smtp_after_ehlo(server.port("smtp"))
    with sock:
        # One segment: a vulnerable server would run the MAIL inside TLS (CVE-2011-0411).
        sock.sendall(b"STARTTLS\r\nMAIL FROM:<x@example.test>\r\n")
        assert reader.readline() == b"220 2.0.0 Ready to start TLS\r\n"
        with client_context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(b"EHLO probe\r\n")
            first = tls.makefile("rb").readline()
    assert first.startswith(b"250-mail.example.test")
    record = one_session(server)
    assert "pipelined-after-starttls" in verdict_codes(record)
    assert record.pipelined_bytes == len(b"MAIL FROM:<x@example.test>\r\n")
    assert "mail-in-clear" not in verdict_codes(record)  # never executed


def test_listener_with_its_own_certificate(serve: Callable[..., ThreadedMailServer], tmp_path: Path) -> None:
    authority = trustme.CA()
    leaf = authority.issue_cert("127.0.0.1", "custom.example.test")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "custom.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "custom.key"))
    server = serve(listener("implicit", cert_file=str(tmp_path / "custom.pem"), key_file=str(tmp_path / "custom.key")))
    context = ssl.create_default_context()
    authority.configure_trust(context)
    with connect(server, context, "implicit") as client:
        assert client.noop()[0] == 250
