"""Issue 20: SCRAM-SHA-1, and SCRAM-SHA-1-PLUS / SCRAM-SHA-256-PLUS with channel binding
tls-server-end-point (RFC 5929) and tls-exporter (RFC 9266), over real TLS on SMTP (STARTTLS),
IMAP and POP3 (implicit), with a scramp client whose binding data comes from its own side of the
connection: the server's certificate as the client received it, and the client's own OpenSSL
exporter. A wrong binding, a "y" flag while -PLUS is on offer, and -PLUS in the clear are refused.
msmtp (GNU SASL) does SCRAM-SHA-1."""

from __future__ import annotations

import base64
import imaplib
import poplib
import smtplib
import ssl
from collections.abc import Callable
from typing import Any

import pytest
import scramp

from mailmodes.app import ThreadedMailServer
from mailmodes.protocols.sasl import _allow_tls_exporter
from mailmodes.tls.binding import exporter
from support import CLIENT_TIMEOUT, one_session, run_client

HOST = "127.0.0.1"
MECHANISMS = ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"]


def binding_of(sock: ssl.SSLSocket, kind: str) -> tuple[str, bytes]:
    """The client's own channel binding data of its TLS connection."""
    if kind == "tls-server-end-point":
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        return kind, bytes(scramp.core.CBindData.from_der(der))
    data = exporter(sock)
    assert data is not None
    return kind, data


class Client:
    """A scramp client as imaplib's authobject (and step by step for SMTP and POP3)."""

    def __init__(self, mechanism: str, sock: ssl.SSLSocket | None, kind: str | None, *,
                 password: str = "alice-password", wrong: bool = False) -> None:
        _allow_tls_exporter(scramp)
        binding = None
        if sock is not None and kind is not None:
            binding = binding_of(sock, kind)
            if wrong:
                binding = (binding[0], bytes(32))
        self.scram = scramp.ScramClient([mechanism], "alice", password, channel_binding=binding)
        self.step = 0
        self.verified = False

    def __call__(self, challenge: bytes) -> bytes:
        self.step += 1
        if self.step == 1:
            return self.scram.get_client_first().encode()
        if self.step == 2:
            self.scram.set_server_first(challenge.decode())
            return self.scram.get_client_final().encode()
        self.scram.set_server_final(challenge.decode())  # raises on a wrong server signature
        self.verified = True
        return b""


def smtp_scram(port: int, context: ssl.SSLContext, mechanism: str, kind: str | None, **options: Any) -> int:
    with smtplib.SMTP(HOST, port, timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        client.starttls(context=context)
        client.ehlo()
        assert isinstance(client.sock, ssl.SSLSocket)
        scram = Client(mechanism, client.sock, kind, **options)
        code, text = client.docmd("AUTH", f"{mechanism} {base64.b64encode(scram(b'')).decode()}")
        while code == 334:
            code, text = client.docmd(base64.b64encode(scram(base64.b64decode(text))).decode())
        assert scram.verified is (code == 235)
        return code


@pytest.fixture
def smtp(serve: Callable[..., ThreadedMailServer]) -> ThreadedMailServer:
    return serve({"name": "l", "protocol": "smtp", "tls": "starttls-required", "sasl_mechanisms": MECHANISMS})


@pytest.fixture
def context(client_context: ssl.SSLContext) -> ssl.SSLContext:
    return client_context


@pytest.mark.parametrize("kind", ["tls-server-end-point", "tls-exporter"])
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
def test_smtp_plus_with_each_binding(smtp: ThreadedMailServer, context: ssl.SSLContext, mechanism: str,
                                     kind: str) -> None:
    assert smtp_scram(smtp.port("l"), context, mechanism, kind) == 235
    record = one_session(smtp)
    assert record.logins == [(f"AUTH {mechanism}", "alice", True, True)]
    assert record.channel_bindings == [(True, f"AUTH {mechanism}", f"p={kind}")]


@pytest.mark.parametrize("kind", ["tls-server-end-point", "tls-exporter"])
def test_a_wrong_binding_is_refused(smtp: ThreadedMailServer, context: ssl.SSLContext, kind: str) -> None:
    assert smtp_scram(smtp.port("l"), context, "SCRAM-SHA-256-PLUS", kind, wrong=True) == 535
    assert one_session(smtp).logins == [("AUTH SCRAM-SHA-256-PLUS", "alice", True, False)]


def test_wrong_password_with_binding(smtp: ThreadedMailServer, context: ssl.SSLContext) -> None:
    assert smtp_scram(smtp.port("l"), context, "SCRAM-SHA-256-PLUS", "tls-exporter", password="nope") == 535


def test_y_flag_while_plus_is_offered_is_a_downgrade(smtp: ThreadedMailServer, context: ssl.SSLContext) -> None:
    """RFC 5802 section 6: "y" says the client can bind but saw no -PLUS; here -PLUS is on offer."""
    assert smtp_scram(smtp.port("l"), context, "SCRAM-SHA-256", "tls-server-end-point") == 535
    assert one_session(smtp).channel_bindings == [(True, "AUTH SCRAM-SHA-256", "y")]


def test_plain_scram_inside_tls_and_plus_never_in_the_clear(serve: Callable[..., ThreadedMailServer],
                                                           context: ssl.SSLContext) -> None:
    server = serve({"name": "l", "protocol": "smtp", "tls": "starttls-optional", "sasl_mechanisms": MECHANISMS})
    assert smtp_scram(server.port("l"), context, "SCRAM-SHA-1", None) == 235
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"]
        assert client.docmd("AUTH SCRAM-SHA-256-PLUS")[0] == 538
        client.starttls(context=context)
        client.ehlo()
        assert client.esmtp_features["auth"].split() == sorted(MECHANISMS)


@pytest.mark.parametrize("kind", ["tls-server-end-point", "tls-exporter"])
def test_imap_plus(serve: Callable[..., ThreadedMailServer], context: ssl.SSLContext, kind: str) -> None:
    server = serve({"name": "l", "protocol": "imap", "tls": "implicit", "sasl_mechanisms": MECHANISMS})
    with imaplib.IMAP4_SSL(HOST, server.port("l"), ssl_context=context, timeout=CLIENT_TIMEOUT) as client:
        assert "AUTH=SCRAM-SHA-256-PLUS" in client.capabilities
        assert isinstance(client.sock, ssl.SSLSocket)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.authenticate("SCRAM-SHA-1-PLUS", Client("SCRAM-SHA-1-PLUS", client.sock, kind, wrong=True))
        scram = Client("SCRAM-SHA-256-PLUS", client.sock, kind)
        assert client.authenticate("SCRAM-SHA-256-PLUS", scram)[0] == "OK" and scram.verified
    record = one_session(server)
    assert [accepted for *_, accepted in record.logins] == [False, True]


@pytest.mark.parametrize("kind", ["tls-server-end-point", "tls-exporter"])
def test_pop3_plus(serve: Callable[..., ThreadedMailServer], context: ssl.SSLContext, kind: str) -> None:
    server = serve({"name": "l", "protocol": "pop3", "tls": "implicit", "sasl_mechanisms": MECHANISMS})
    client = poplib.POP3_SSL(HOST, server.port("l"), context=context, timeout=CLIENT_TIMEOUT)
    try:
        assert "SCRAM-SHA-1-PLUS" in client.capa()["SASL"]
        assert isinstance(client.sock, ssl.SSLSocket)
        scram = Client("SCRAM-SHA-1-PLUS", client.sock, kind)
        reply = client._shortcmd("AUTH SCRAM-SHA-1-PLUS " + base64.b64encode(scram(b"")).decode())
        while reply.startswith(b"+ "):
            reply = client._shortcmd(base64.b64encode(scram(base64.b64decode(reply[2:]))).decode())
        assert reply.startswith(b"+OK") and scram.verified
    finally:
        client.quit()
    assert one_session(server).user == "alice"


@pytest.mark.parametrize(("password", "status"), [("alice-password", 0), ("nope", 77)])
def test_msmtp_scram_sha_1(serve: Callable[..., ThreadedMailServer], password: str, status: int) -> None:
    server = serve({"name": "l", "protocol": "smtp", "tls": "plaintext", "sasl_mechanisms": ["SCRAM-SHA-1"]})
    result = run_client(["msmtp", f"--host={HOST}", f"--port={server.port('l')}", "--tls=off", "--auth=scram-sha-1",
                         "--user=alice", f"--passwordeval=echo {password}", "--from=alice@example.test",
                         "bob@example.test"], stdin=b"Subject: scram\n\nhi\n")
    assert result.returncode == status, result.stderr
    assert one_session(server).logins == [("AUTH SCRAM-SHA-1", "alice", False, status == 0)]
