"""Issue 20, item 1 on IMAP and POP3: CRAM-MD5 and SCRAM-SHA-256 in `sasl_mechanisms`, with curl
(CRAM-MD5 on both), imaplib's AUTHENTICATE driving a scramp client, and poplib's raw AUTH."""

from __future__ import annotations

import base64
import hashlib
import hmac
import imaplib
import poplib
from collections.abc import Callable
from typing import Any

import pytest
import scramp

from mailmodes.app import ThreadedMailServer
from support import CLIENT_TIMEOUT, one_session, run_client

HOST = "127.0.0.1"
MECHANISMS = ["PLAIN", "CRAM-MD5", "SCRAM-SHA-256"]


def listener(protocol: str, mechanisms: list[str] | None = MECHANISMS) -> dict[str, Any]:
    return {"name": "l", "protocol": protocol, "tls": "plaintext",
            **({"sasl_mechanisms": mechanisms} if mechanisms is not None else {})}


class Scram:
    """imaplib's authobject: called with each challenge, returns each answer."""

    def __init__(self, user: str, password: str) -> None:
        self.client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
        self.step = 0

    def __call__(self, challenge: bytes) -> bytes:
        self.step += 1
        if self.step == 1:
            return self.client.get_client_first().encode()
        if self.step == 2:
            self.client.set_server_first(challenge.decode())
            return self.client.get_client_final().encode()
        self.client.set_server_final(challenge.decode())  # raises on a wrong server signature
        return b""


def test_imap_capability_lists_the_mechanisms(serve: Callable[..., ThreadedMailServer]) -> None:
    default = serve(listener("imap", None))
    with imaplib.IMAP4(HOST, default.port("l"), timeout=CLIENT_TIMEOUT) as client:
        assert [c for c in client.capabilities if c.startswith("AUTH=")] == ["AUTH=PLAIN"]
    server = serve(listener("imap"))
    with imaplib.IMAP4(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        assert [c for c in client.capabilities if c.startswith("AUTH=")] == [
            "AUTH=PLAIN", "AUTH=CRAM-MD5", "AUTH=SCRAM-SHA-256"]
    only = serve(listener("imap", ["SCRAM-SHA-256"]))
    with imaplib.IMAP4(HOST, only.port("l"), timeout=CLIENT_TIMEOUT) as client:
        with pytest.raises(imaplib.IMAP4.error, match="Unsupported authentication mechanism"):
            client.authenticate("PLAIN", lambda _: b"\0alice\0alice-password")


@pytest.mark.parametrize(("password", "accepted"), [("alice-password", True), ("wrong", False)])
def test_imaplib_scram_sha_256(serve: Callable[..., ThreadedMailServer], password: str, accepted: bool) -> None:
    server = serve(listener("imap"))
    with imaplib.IMAP4(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        if accepted:
            assert client.authenticate("SCRAM-SHA-256", Scram("alice", password))[0] == "OK"
            assert client.select("INBOX")[0] == "OK"
        else:
            with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
                client.authenticate("SCRAM-SHA-256", Scram("alice", password))
    record = one_session(server)
    assert record.logins == [("AUTHENTICATE SCRAM-SHA-256", "alice", False, accepted)]
    assert record.user == ("alice" if accepted else None)


def test_imaplib_cram_md5(serve: Callable[..., ThreadedMailServer]) -> None:
    """imaplib's own login_cram_md5."""
    server = serve(listener("imap"))
    with imaplib.IMAP4(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        assert client.login_cram_md5("bob@example.test", "bob-password")[0] == "OK"
    assert one_session(server).user == "bob"


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_curl_cram_md5(serve: Callable[..., ThreadedMailServer], protocol: str) -> None:
    server = serve(listener(protocol))
    url = f"{protocol}://{HOST}:{server.port('l')}/" + ("INBOX" if protocol == "imap" else "")
    ok = run_client(["curl", "-sS", "--max-time", "10", "--login-options", "AUTH=CRAM-MD5", "-u",
                     "alice:alice-password", url])
    assert ok.returncode == 0, ok.stderr
    bad = run_client(["curl", "-sS", "--max-time", "10", "--login-options", "AUTH=CRAM-MD5", "-u", "alice:wrong", url])
    assert bad.returncode == 67, bad.stderr  # CURLE_LOGIN_DENIED
    first, second = server.journal.wait_for(2)
    command = "AUTHENTICATE CRAM-MD5" if protocol == "imap" else "AUTH CRAM-MD5"
    assert first.logins == [(command, "alice", False, True)] and second.logins == [(command, "alice", False, False)]


def pop3_scram(port: int, user: str, password: str) -> bytes:
    client = poplib.POP3(HOST, port, timeout=CLIENT_TIMEOUT)
    try:
        scram = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
        first = base64.b64encode(scram.get_client_first().encode()).decode()
        challenge = client._shortcmd(f"AUTH SCRAM-SHA-256 {first}")  # type: ignore[attr-defined]
        assert challenge.startswith(b"+ "), challenge
        scram.set_server_first(base64.b64decode(challenge[2:]).decode())
        try:
            final = client._shortcmd(base64.b64encode(scram.get_client_final().encode()).decode())  # type: ignore[attr-defined]
        except poplib.error_proto as refused:
            return bytes(refused.args[0])
        scram.set_server_final(base64.b64decode(final[2:]).decode())
        done: bytes = client._shortcmd("")  # type: ignore[attr-defined]
        assert client.stat()[0] >= 0
        return done
    finally:
        client.close()


def test_pop3_scram_sha_256(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(listener("pop3"))
    assert pop3_scram(server.port("l"), "alice", "alice-password").startswith(b"+OK")
    assert pop3_scram(server.port("l"), "alice", "bad").startswith(b"-ERR [AUTH]")
    first, second = server.journal.wait_for(2)
    assert first.logins == [("AUTH SCRAM-SHA-256", "alice", False, True)]
    assert second.logins == [("AUTH SCRAM-SHA-256", "alice", False, False)]


def test_pop3_capa_and_auth_list(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(listener("pop3"))
    client = poplib.POP3(HOST, server.port("l"), timeout=CLIENT_TIMEOUT)
    try:
        assert client.capa()["SASL"] == ["PLAIN", "CRAM-MD5", "SCRAM-SHA-256"]
        assert client._longcmd("AUTH")[1] == [b"PLAIN", b"CRAM-MD5", b"SCRAM-SHA-256"]  # type: ignore[attr-defined]
        # CRAM-MD5 by hand, cancelled, then done right
        challenge = client._shortcmd("AUTH CRAM-MD5")  # type: ignore[attr-defined]
        with pytest.raises(poplib.error_proto, match="cancelled"):
            client._shortcmd("*")  # type: ignore[attr-defined]
        challenge = base64.b64decode(client._shortcmd("AUTH CRAM-MD5")[2:])  # type: ignore[attr-defined]
        digest = hmac.new(b"bob-password", challenge, hashlib.md5).hexdigest()
        answer = base64.b64encode(f"bob {digest}".encode()).decode()
        assert client._shortcmd(answer).startswith(b"+OK")  # type: ignore[attr-defined]
    finally:
        client.quit()
    default = serve(listener("pop3", None))
    client = poplib.POP3(HOST, default.port("l"), timeout=CLIENT_TIMEOUT)
    try:
        assert client.capa()["SASL"] == ["PLAIN"]
        with pytest.raises(poplib.error_proto, match="Unsupported authentication mechanism"):
            client._shortcmd("AUTH CRAM-MD5")  # type: ignore[attr-defined]
    finally:
        client.quit()


def test_mechanisms_before_tls(serve: Callable[..., ThreadedMailServer], client_context: Any) -> None:
    options = {"tls": "starttls-optional", "sasl_mechanisms": ["PLAIN", "SCRAM-SHA-256"],
               "sasl_mechanisms_before_tls": ["SCRAM-SHA-256"]}
    imap = serve({**listener("imap"), **options})
    with imaplib.IMAP4(HOST, imap.port("l"), timeout=CLIENT_TIMEOUT) as client:
        assert [c for c in client.capabilities if c.startswith("AUTH=")] == ["AUTH=SCRAM-SHA-256"]
        with pytest.raises(imaplib.IMAP4.error, match=r"\[PRIVACYREQUIRED\] AUTHENTICATE PLAIN only inside TLS"):
            client.authenticate("PLAIN", lambda _: b"\0alice\0alice-password")
        client.starttls(client_context)
        assert [c for c in client.capabilities if c.startswith("AUTH=")] == ["AUTH=PLAIN", "AUTH=SCRAM-SHA-256"]
        assert client.authenticate("PLAIN", lambda _: b"\0alice\0alice-password")[0] == "OK"
    pop3 = serve({**listener("pop3"), **options})
    client = poplib.POP3(HOST, pop3.port("l"), timeout=CLIENT_TIMEOUT)
    try:
        assert client.capa()["SASL"] == ["SCRAM-SHA-256"]
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\] PLAIN only inside TLS"):
            client._shortcmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk")  # type: ignore[attr-defined]
        client.stls(client_context)
        assert client.capa()["SASL"] == ["PLAIN", "SCRAM-SHA-256"]
        assert client._shortcmd("AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk").startswith(b"+OK")  # type: ignore[attr-defined]
    finally:
        client.quit()
