"""How far a TLS handshake got, as the journal records it from the TLS messages themselves
(issue 13, item 6): the ClientHello seen, the server's flight sent, the client's alert, finished."""

from __future__ import annotations

import asyncio
import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from support import one_session, run_client, verdict_codes

HOST = "127.0.0.1"
Serve = Callable[..., ThreadedMailServer]
GREETING_WORD = {"smtp": b"EHLO x\r\n", "imap": b"a CAPABILITY\r\n", "pop3": b"CAPA\r\n"}
STARTTLS = {"smtp": b"EHLO x\r\nSTARTTLS\r\n", "imap": b"a STARTTLS\r\n", "pop3": b"STLS\r\n"}


async def hello_then_hang_up(port: int, protocol: str | None = None) -> tuple[int, int]:
    """What nodemailer and imapflow do on a certificate they dislike, and asyncio clients when
    their task is cancelled: send the ClientHello, take the server's flight, close with no alert.
    (With `protocol`, STARTTLS first.) Returns the sizes sent and received."""
    reader, writer = await asyncio.open_connection(HOST, port)
    if protocol is not None:
        await reader.readline()
        writer.write(STARTTLS[protocol])
        while not (await reader.readline()).startswith((b"220 ", b"a OK", b"+OK")):
            pass
    outgoing = ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    writer.write(hello)
    flight = await reader.read(65536)
    writer.close()
    await writer.wait_closed()
    return len(hello), len(flight)


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_a_client_that_hangs_up_on_the_certificate_is_no_port_probe(serve: Serve, protocol: str) -> None:
    # One client on this server (fallback is claimed only within a client scope, issue 14).
    server = serve({"name": "tls", "protocol": protocol, "tls": "implicit"},
                   {"name": "plain", "protocol": protocol, "tls": "starttls-optional"}, journal={"one_client": True})
    sent, received = asyncio.run(hello_then_hang_up(server.port("tls")))
    assert sent > 200 and received > 500  # its ClientHello went out, our certificate came back
    record = one_session(server)
    assert record.tls_failure == "the client closed the connection after the server's certificate, without an alert"
    assert record.sni == "localhost"
    assert any(line.text.startswith("[TLS handshake failed: the client closed the connection after the server's")
               for line in record.transcript)
    # A failed TLS attempt, not a probe: the plaintext session that follows is a fallback.
    client = {"smtp": lambda: smtplib.SMTP(HOST, server.port("plain"), timeout=10)}.get(protocol)
    if client is not None:
        with client() as smtp:
            smtp.login("alice", "alice-password")
    else:
        run_client(["curl", "-sS", "--max-time", "10", "-u", "alice:alice-password",
                    f"{protocol}://{HOST}:{server.port('plain')}/"])
    assert "fallback" in verdict_codes(server.journal.wait_for(2)[-1])
    assert record.tls_handshake == "server-flight"


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_the_same_after_starttls(serve: Serve, protocol: str) -> None:
    server = serve({"name": "l", "protocol": protocol, "tls": "starttls-required"})
    asyncio.run(hello_then_hang_up(server.port("l"), protocol))
    record = one_session(server)
    assert record.tls_failure == "the client closed the connection after the server's certificate, without an alert"
    assert (record.tls_handshake, record.starttls_attempted) == ("server-flight", True)


def test_an_alert_and_a_finished_handshake(serve: Serve, ca_file: Path) -> None:
    server = serve({"name": "l", "protocol": "imap", "tls": "implicit"})
    url = f"imaps://{HOST}:{server.port('l')}/"
    assert run_client(["curl", "-sS", "--max-time", "10", "-u", "alice:alice-password", url]).returncode == 60
    assert run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "-u", "alice:alice-password",
                       url]).returncode == 0
    rejected, accepted = server.journal.wait_for(2)
    assert (rejected.tls_handshake, rejected.tls_alert) == ("alert", "unknown_ca")
    assert accepted.tls_handshake == "finished"
    assert accepted.to_json()["tls_handshake"] == "finished"


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_a_client_hello_the_server_refuses(serve: Serve, protocol: str) -> None:
    """A TLS 1.1 client against the intermediate profile (TLS 1.2 and 1.3): the ClientHello came,
    the handshake ended there (asyncio closes without sending OpenSSL's alert), no certificate
    went out."""
    server = serve({"name": "l", "protocol": protocol, "tls": "implicit"})
    result = run_client(["openssl", "s_client", "-connect", f"{HOST}:{server.port('l')}", "-tls1_1",
                         "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "localhost"])
    assert result.returncode != 0
    assert "no peer certificate available" in result.stdout  # the client's own account
    record = one_session(server)
    assert (record.tls_handshake, record.tls_failure) == ("client-hello", "UNSUPPORTED_PROTOCOL")
    assert record.sni is None  # refused before the server name was looked at
    assert record.asked_certificate_status is False


@pytest.mark.parametrize(("protocol", "tls"), [("smtp", "implicit"), ("smtp", "starttls-required"),
                                               ("imap", "implicit"), ("pop3", "starttls-required")])
def test_whether_the_client_asked_for_the_certificate_status(serve: Serve, ca_file: Path, protocol: str,
                                                              tls: str) -> None:
    server = serve({"name": "l", "protocol": protocol, "tls": tls})
    starttls = ["-starttls", protocol] if tls != "implicit" else []
    outputs = []
    for status in (["-status"], []):
        result = run_client(["openssl", "s_client", "-connect", f"{HOST}:{server.port('l')}", *starttls, *status,
                             "-CAfile", str(ca_file), "-servername", "localhost", "-verify_return_error"],
                            stdin=b"")
        assert "Verify return code: 0 (ok)" in result.stdout, result.stdout[-500:]
        outputs.append(result.stdout)
    assert "OCSP response: no response sent" in outputs[0]  # s_client asked (and got no staple)
    assert "OCSP response" not in outputs[1]
    asked, did_not_ask = server.journal.wait_for(2)
    assert (asked.asked_certificate_status, asked.tls_handshake) == (True, "finished")
    assert (did_not_ask.asked_certificate_status, did_not_ask.tls_handshake) == (False, "finished")


def test_a_client_that_sends_no_client_hello_got_nowhere(serve: Serve) -> None:
    server = serve({"name": "l", "protocol": "smtp", "tls": "implicit"})
    with socket.create_connection((HOST, server.port("l")), timeout=10) as client:
        client.sendall(b"EHLO x\r\n")  # set up for plaintext
        assert client.recv(100) == b""  # no greeting on an implicit port: the handshake failed, the server closed
    record = one_session(server)
    assert (record.tls_handshake, record.asked_certificate_status) == (None, None)
    assert record.tls_failure == "the client sent something that is not TLS"
