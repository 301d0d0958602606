"""Issue 20: the LOGIN SASL mechanism on IMAP (`AUTHENTICATE LOGIN`) and POP3 (`AUTH LOGIN`), as
SMTP has it: "Username:" and "Password:" challenges, with curl --login-options AUTH=LOGIN. The
password crosses the wire as it is: in the clear that is credentials-in-clear, and it is masked."""

from __future__ import annotations

import base64
import imaplib
import json
from collections.abc import Callable

import pytest

from mailmodes.app import ThreadedMailServer
from support import CLIENT_TIMEOUT, one_session, run_client

HOST = "127.0.0.1"


@pytest.mark.parametrize(("password", "status"), [("alice-password", 0), ("wrong", 67)])
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_curl_auth_login(serve: Callable[..., ThreadedMailServer], protocol: str, password: str, status: int) -> None:
    server = serve({"name": "l", "protocol": protocol, "tls": "plaintext", "sasl_mechanisms": ["PLAIN", "LOGIN"]})
    url = f"{protocol}://{HOST}:{server.port('l')}/" + ("INBOX?ALL" if protocol == "imap" else "")
    result = run_client(["curl", "-v", "--max-time", "10", url, "--login-options", "AUTH=LOGIN",
                         "-u", f"alice:{password}"])
    assert result.returncode == status, result.stderr
    command = "AUTHENTICATE LOGIN" if protocol == "imap" else "AUTH LOGIN"
    assert f"> {'A002 ' if protocol == 'imap' else ''}{command}" in result.stderr
    challenges = [base64.b64decode(line[4:]) for line in result.stderr.splitlines() if line.startswith("< + ")]
    # curl sends the name as IMAP's SASL-IR initial response; POP3 gets both challenges
    assert challenges == ([b"Password:"] if protocol == "imap" else [b"Username:", b"Password:"])
    record = one_session(server)
    assert record.logins == [(command, "alice", False, status == 0)]
    assert record.credentials == [(False, True, command)]
    assert "credentials-in-clear" in {verdict.code for verdict in record.verdicts}
    text = json.dumps(record.to_json())
    assert password not in text and base64.b64encode(password.encode()).decode() not in text


def test_imap_login_with_an_initial_response_and_a_cancel(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "l", "protocol": "imap", "tls": "plaintext", "sasl_mechanisms": ["LOGIN"]})
    with imaplib.IMAP4(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        assert "AUTH=LOGIN" in client.capabilities
        answers = iter([b"alice-password"])
        # SASL-IR: the name as the initial response, then only "Password:"
        client.send(b"a1 AUTHENTICATE LOGIN " + base64.b64encode(b"alice") + b"\r\n")
        assert client.readline().rstrip() == b"+ " + base64.b64encode(b"Password:")
        client.send(base64.b64encode(next(answers)) + b"\r\n")
        assert client.readline().rstrip().startswith(b"a1 OK")
    with imaplib.IMAP4(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.send(b"a1 AUTHENTICATE LOGIN\r\n")
        assert client.readline().rstrip() == b"+ " + base64.b64encode(b"Username:")
        client.send(b"*\r\n")
        assert client.readline().rstrip() == b"a1 BAD Authentication aborted"
        assert client.noop()[0] == "OK"
