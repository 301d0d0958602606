"""Issue 20, item 1: CRAM-MD5 and SCRAM-SHA-256 on SMTP, offered per listener (`sasl_mechanisms`),
with the clients that implement them: swaks and curl for CRAM-MD5, msmtp (GNU SASL) and a scramp
client for SCRAM-SHA-256. The journal records each attempt, and never claims that a password
crossed the wire with them."""

from __future__ import annotations

import base64
import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import scramp

from mailmodes.app import ThreadedMailServer
from mailmodes.config import ConfigError
from mailmodes.protocols.sasl import CramMd5, Done, SaslContext, Scram
from support import CLIENT_TIMEOUT, make_config, one_session, run_client

HOST = "127.0.0.1"
ALL = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]


def listener(mechanisms: list[str] | None = ALL, **options: Any) -> dict[str, Any]:
    return {"name": "l", "protocol": "smtp", "tls": "plaintext", **({"sasl_mechanisms": mechanisms}
                                                                     if mechanisms is not None else {}), **options}


def inbox(server: ThreadedMailServer, user: str) -> list[bytes]:
    return server.call(lambda: [m.data for m in server.store.accounts[user].inbox.messages])


def auth_line(server: ThreadedMailServer) -> str:
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        return client.esmtp_features.get("auth", "").strip()


def test_mechanisms_per_listener(serve: Callable[..., ThreadedMailServer]) -> None:
    assert auth_line(serve(listener(None))) == "LOGIN PLAIN"  # the default, as before
    assert auth_line(serve(listener())) == "CRAM-MD5 LOGIN PLAIN SCRAM-SHA-256"
    only = serve(listener(["SCRAM-SHA-256"]))
    assert auth_line(only) == "SCRAM-SHA-256"
    with smtplib.SMTP(HOST, only.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        assert client.docmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk") == (504, b"5.5.4 Unrecognized authentication type")


def test_bad_mechanism_lists_are_config_errors(certs_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"sasl_mechanisms: must be a list of some of: PLAIN, LOGIN, CRAM-MD5, "
                                          r"SCRAM-SHA-1, SCRAM-SHA-256, SCRAM-SHA-1-PLUS, SCRAM-SHA-256-PLUS, "
                                          r"XOAUTH2, OAUTHBEARER, EXTERNAL \(smtp\)"):
        make_config(certs_dir, (listener(["DIGEST-MD5"]),))
    with pytest.raises(ConfigError, match=r"EXTERNAL \(imap\)"):
        make_config(certs_dir, ({"protocol": "imap", "tls": "implicit", "sasl_mechanisms": ["DIGEST-MD5"]},))


@pytest.mark.parametrize(("password", "status"), [("alice-password", 0), ("wrong", 28)])
def test_swaks_cram_md5(serve: Callable[..., ThreadedMailServer], password: str, status: int) -> None:
    server = serve(listener())
    result = run_client(["swaks", "--server", HOST, "--port", str(server.port("l")), "-a", "CRAM-MD5", "-au", "alice",
                         "-ap", password, "--quit-after", "AUTH", "--timeout", "10"])
    assert result.returncode == status, result.stdout
    assert " -> AUTH CRAM-MD5" in result.stdout
    assert ("235 2.7.0 Authentication successful" in result.stdout) is (status == 0)
    record = one_session(server)
    assert record.logins == [("AUTH CRAM-MD5", "alice", False, status == 0)]
    # CRAM-MD5 sends a digest, never the password: no credential in clear
    assert record.credentials == [(False, False, "AUTH CRAM-MD5")]
    assert "password-in-clear" not in {verdict.code for verdict in record.verdicts}


def test_curl_cram_md5_sends_mail(serve: Callable[..., ThreadedMailServer], tmp_path: Path) -> None:
    server = serve(listener())
    message = tmp_path / "m.eml"
    message.write_bytes(b"Subject: cram\r\n\r\nhi\r\n")
    result = run_client(["curl", "-sS", "--max-time", "10", f"smtp://{HOST}:{server.port('l')}", "--login-options",
                         "AUTH=CRAM-MD5", "-u", "alice:alice-password", "--mail-from", "alice@example.test",
                         "--mail-rcpt", "bob@example.test", "-T", str(message)])
    assert result.returncode == 0, result.stderr
    assert inbox(server, "bob") == [b"Subject: cram\r\n\r\nhi\r\n"]
    assert one_session(server).user == "alice"


@pytest.mark.parametrize(("password", "status"), [("alice-password", 0), ("nope", 77)])
def test_msmtp_scram_sha_256(serve: Callable[..., ThreadedMailServer], password: str, status: int) -> None:
    """msmtp's GNU SASL checks the server's signature too: a server that got SCRAM wrong fails here."""
    server = serve(listener())
    result = run_client(["msmtp", f"--host={HOST}", f"--port={server.port('l')}", "--tls=off", "--auth=scram-sha-256",
                         "--user=alice", f"--passwordeval=echo {password}", "--from=alice@example.test",
                         "bob@example.test"], stdin=b"Subject: scram\n\nhi\n")
    assert result.returncode == status, result.stderr
    assert len(inbox(server, "bob")) == (1 if status == 0 else 0)
    record = one_session(server)
    assert record.logins == [("AUTH SCRAM-SHA-256", "alice", False, status == 0)]


def scram_session(port: int, user: str, password: str, *, initial: bool) -> tuple[int, bytes]:
    """A scramp client over smtplib's docmd, step by step; the final reply."""
    client_state = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
    with smtplib.SMTP(HOST, port, timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        first = base64.b64encode(client_state.get_client_first().encode()).decode()
        if initial:
            code, text = client.docmd("AUTH", f"SCRAM-SHA-256 {first}")
        else:
            assert client.docmd("AUTH", "SCRAM-SHA-256") == (334, b"")
            code, text = client.docmd(first)
        assert code == 334, text
        client_state.set_server_first(base64.b64decode(text).decode())
        code, text = client.docmd(base64.b64encode(client_state.get_client_final().encode()).decode())
        if code != 334:
            return code, text
        client_state.set_server_final(base64.b64decode(text).decode())  # raises if the signature is wrong
        return client.docmd("")


@pytest.mark.parametrize("initial", [True, False])
def test_scramp_client(serve: Callable[..., ThreadedMailServer], initial: bool) -> None:
    server = serve(listener())
    assert scram_session(server.port("l"), "alice", "alice-password", initial=initial) == (
        235, b"2.7.0 Authentication successful")
    assert scram_session(server.port("l"), "alice", "bad", initial=initial)[0] == 535
    # an unknown user fails the same way, at the proof
    assert scram_session(server.port("l"), "mallory", "bad", initial=initial)[0] == 535
    # ... and by address
    assert scram_session(server.port("l"), "bob@example.test", "bob-password", initial=initial)[0] == 235


def test_cram_md5_refuses_an_initial_response_and_a_cancel(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(listener())
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        assert client.docmd("AUTH CRAM-MD5 YWxpY2U=")[0] == 535
        assert client.docmd("AUTH CRAM-MD5")[0] == 334
        assert client.docmd("*") == (501, b"5.7.0 Auth aborted")
        assert client.docmd("AUTH CRAM-MD5")[0] == 334
        assert client.docmd("not base64!") == (501, b"5.5.2 Can't decode base64")
        assert client.noop()[0] == 250


def test_the_exchanges_without_io() -> None:
    def lookup(name: str) -> tuple[str, str] | None:
        return ("alice", "secret") if name in ("alice", "alice@example.test") else None

    cram = CramMd5(SaslContext(lookup, "mail.example.test"))
    challenge = cram.step(None)
    assert not isinstance(challenge, Done) and challenge.data.endswith(b"@mail.example.test>")
    import hashlib
    import hmac
    digest = hmac.new(b"secret", challenge.data, hashlib.md5).hexdigest().encode()
    assert cram.step(b"alice@example.test " + digest) == Done("alice", "alice@example.test")
    scram = Scram(SaslContext(lookup, "localhost"))
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", "secret")
    step = scram.step(client.get_client_first().encode())
    assert not isinstance(step, Done)
    client.set_server_first(step.data.decode())
    step = scram.step(client.get_client_final().encode())
    assert not isinstance(step, Done)
    client.set_server_final(step.data.decode())
    assert scram.step(b"") == Done("alice", "alice", binding="n")
    # the server-final must be answered with nothing
    late = Scram(SaslContext(lookup, "localhost"))
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", "secret")
    step = late.step(client.get_client_first().encode())
    client.set_server_first(step.data.decode())  # type: ignore[union-attr]
    late.step(client.get_client_final().encode())
    assert late.step(b"extra").account is None  # type: ignore[union-attr]


def test_mechanisms_before_tls(serve: Callable[..., ThreadedMailServer], client_context: Any) -> None:
    """Only SCRAM in the clear, PLAIN and LOGIN too inside TLS: PLAIN before TLS is RFC 4954's 538."""
    server = serve(listener(["PLAIN", "LOGIN", "SCRAM-SHA-256"], tls="starttls-optional",
                            sasl_mechanisms_before_tls=["SCRAM-SHA-256"]))
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        assert client.esmtp_features["auth"].strip() == "SCRAM-SHA-256"
        assert client.docmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk") == (
            538, b"5.7.11 Encryption required for requested authentication mechanism")
        client.starttls(context=client_context)
        client.ehlo()
        assert client.esmtp_features["auth"].strip() == "LOGIN PLAIN SCRAM-SHA-256"
        assert client.docmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk")[0] == 235
    record = one_session(server)
    assert [(command, tls, accepted) for command, _, tls, accepted in record.logins] == [
        ("AUTH PLAIN", False, False), ("AUTH PLAIN", True, True)]
    # a client that sends its password anyway is on record for it
    assert record.credentials[0] == (False, True, "AUTH PLAIN")
