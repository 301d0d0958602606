"""Issue 20: XOAUTH2 and OAUTHBEARER (RFC 7628) on SMTP, IMAP and POP3 with the tokens of
POST /api/tokens. Real clients: curl --oauth2-bearer (it picks OAUTHBEARER or XOAUTH2 from what is
advertised) on all three protocols, and msmtp --auth=oauthbearer / xoauth2 with --passwordeval.
An expired, wrong-scope or unknown token gets section 3.2.2's JSON error as a challenge, then the
client's dummy answer, then the failure; the journal records the attempt and never the token."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.protocols.sasl import OAuth, SaslContext, parse_oauthbearer
from mailmodes.store import TokenIssuer
from support import one_session, run_client

HOST = "127.0.0.1"
PROTOCOLS = ("smtp", "imap", "pop3")
CURL_FAILED = 67  # CURLE_LOGIN_DENIED


def listeners(mechanisms: list[str], tls: str = "plaintext") -> tuple[dict[str, Any], ...]:
    return tuple({"name": protocol, "protocol": protocol, "tls": tls, "sasl_mechanisms": mechanisms}
                 for protocol in PROTOCOLS)


def issue(server: ThreadedMailServer, user: str = "alice", scope: tuple[str, ...] = ("mail",),
          expires_in: float = 3600) -> str:
    return server.call(lambda: server.store.tokens.issue(user, scope, expires_in)).token


def curl(server: ThreadedMailServer, protocol: str, token: str, tmp_path: Path) -> Any:
    port = server.port(protocol)
    url = {"smtp": f"smtp://{HOST}:{port}", "imap": f"imap://{HOST}:{port}/INBOX?ALL",
           "pop3": f"pop3://{HOST}:{port}"}[protocol]
    extra: list[str] = []
    if protocol == "smtp":
        message = tmp_path / "m.eml"
        message.write_bytes(b"Subject: oauth\r\n\r\nhi\r\n")
        extra = ["--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test", "-T", str(message)]
    return run_client(["curl", "-v", "--max-time", "10", url, "-u", "alice:", "--oauth2-bearer", token, *extra])


def sent_lines(stderr: str) -> list[str]:
    return [line[2:] for line in stderr.splitlines() if line.startswith("> ")]


def error_challenges(stderr: str) -> list[dict[str, Any]]:
    """The JSON errors the server sent as challenges, as curl -v shows them."""
    found = []
    for match in re.finditer(r"^< (?:334|\+) ([A-Za-z0-9+/=]{8,})\s*$", stderr, re.MULTILINE):
        found.append(json.loads(base64.b64decode(match.group(1))))
    return found


def assert_no_token(record: Any, token: str) -> None:
    text = json.dumps(record.to_json())
    assert token not in text
    assert all(token not in base64.b64decode(word + "==="[:(-len(word)) % 4]).decode("latin-1")
               for word in re.findall(r"[A-Za-z0-9+/]{40,}={0,2}", text))


@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_curl_with_a_good_token(serve: Callable[..., ThreadedMailServer], tmp_path: Path, protocol: str,
                                mechanism: str) -> None:
    server = serve(*listeners([mechanism]))
    token = issue(server)
    result = curl(server, protocol, token, tmp_path)
    assert result.returncode == 0, result.stderr
    # curl chose the advertised mechanism (OAUTHBEARER's initial response starts "n,a=alice,")
    sent = sent_lines(result.stderr)
    assert any(line.startswith(("AUTH " + mechanism, f"A002 AUTHENTICATE {mechanism}")) for line in sent), sent
    record = one_session(server)
    command = f"AUTHENTICATE {mechanism}" if protocol == "imap" else f"AUTH {mechanism}"
    assert record.logins == [(command, "alice", False, True)]
    assert record.user == "alice"
    # a bearer token is the secret itself: in the clear, the journal says so ...
    assert record.credentials == [(False, True, command)]
    assert "credentials-in-clear" in {verdict.code for verdict in record.verdicts}
    # ... and never records it
    assert_no_token(record, token)
    if protocol == "smtp":
        assert server.call(lambda: len(server.store.accounts["bob"].inbox.messages)) == 1


@pytest.mark.parametrize(("why", "scope", "expires_in", "status"), [
    ("expired", ("mail",), -10, "invalid_token"),
    ("wrong scope", ("calendar",), 3600, "insufficient_scope"),
])
@pytest.mark.parametrize("mechanism", ["OAUTHBEARER", "XOAUTH2"])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_curl_with_a_refused_token(serve: Callable[..., ThreadedMailServer], tmp_path: Path, protocol: str,
                                   mechanism: str, why: str, scope: tuple[str, ...], expires_in: float,
                                   status: str) -> None:
    server = serve(*listeners([mechanism]))
    token = issue(server, scope=scope, expires_in=expires_in)
    result = curl(server, protocol, token, tmp_path)
    assert result.returncode == CURL_FAILED, result.stderr
    assert error_challenges(result.stderr) == [{"status": status, "scope": f"mail {protocol}", "schemes": "bearer"}]
    if mechanism == "OAUTHBEARER":
        # RFC 7628 section 3.2.3: the client's dummy response, then the failure
        assert "AQ==" in sent_lines(result.stderr)
    record = one_session(server)
    command = f"AUTHENTICATE {mechanism}" if protocol == "imap" else f"AUTH {mechanism}"
    assert all(not accepted for *_, accepted in record.logins)
    assert record.user is None
    assert (False, True, command) in record.credentials  # the token went out, in the clear
    assert_no_token(record, token)


@pytest.mark.parametrize("mechanism", ["oauthbearer", "xoauth2"])
@pytest.mark.parametrize(("scope", "status"), [(("mail",), 0), (("smtp",), 0), (("imap",), 77)])
def test_msmtp_passwordeval(serve: Callable[..., ThreadedMailServer], mechanism: str, scope: tuple[str, ...],
                            status: int) -> None:
    server = serve(*listeners(["OAUTHBEARER", "XOAUTH2"])[:1])
    token = issue(server, scope=scope)
    result = run_client(["msmtp", "--debug", f"--host={HOST}", f"--port={server.port('smtp')}", "--tls=off",
                         f"--auth={mechanism}", "--user=alice", f"--passwordeval=echo {token}",
                         "--from=alice@example.test", "bob@example.test"], stdin=b"Subject: oauth\n\nhi\n")
    assert result.returncode == status, result.stdout + result.stderr
    assert f"--> AUTH {mechanism.upper()}" in result.stdout
    if status:
        challenge = re.search(r"<-- 334 (\S{8,})", result.stdout)
        assert challenge is not None, result.stdout
        assert json.loads(base64.b64decode(challenge.group(1)))["status"] == "insufficient_scope"
        assert "authentication failed" in result.stderr
    record = one_session(server)
    assert record.logins == [(f"AUTH {mechanism.upper()}", "alice", False, status == 0)]
    assert_no_token(record, token)


def test_a_token_for_another_user_or_revoked_is_refused(serve: Callable[..., ThreadedMailServer],
                                                        tmp_path: Path) -> None:
    server = serve(*listeners(["OAUTHBEARER"]))
    bobs = issue(server, user="bob")
    result = curl(server, "imap", bobs, tmp_path)  # curl says a=alice; the token is bob's
    assert result.returncode == CURL_FAILED
    assert error_challenges(result.stderr)[0]["status"] == "invalid_token"
    token = issue(server)
    assert server.call(lambda: server.store.tokens.revoke(server.store.tokens.tokens[token].id))
    assert curl(server, "pop3", token, tmp_path).returncode == CURL_FAILED


def test_oauth_over_tls(serve: Callable[..., ThreadedMailServer], ca_file: Path, tmp_path: Path) -> None:
    """Inside TLS the token is no credential in the clear."""
    server = serve({"name": "imap", "protocol": "imap", "tls": "implicit", "sasl_mechanisms": ["OAUTHBEARER"]})
    token = issue(server)
    result = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "--resolve",
                         f"mail.example.test:{server.port('imap')}:{HOST}",
                         f"imaps://mail.example.test:{server.port('imap')}/INBOX?ALL", "-u", "alice:",
                         "--oauth2-bearer", token])
    assert result.returncode == 0, result.stderr
    record = one_session(server)
    assert record.credentials == [(True, True, "AUTHENTICATE OAUTHBEARER")]
    assert "credentials-in-clear" not in {verdict.code for verdict in record.verdicts}


def _api(server: ThreadedMailServer, path: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{HOST}:{server.http_port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_token_api(serve: Callable[..., ThreadedMailServer], tmp_path: Path) -> None:
    server = serve(*listeners(["XOAUTH2"]), http={"port": 0})
    status, issued = _api(server, "/api/tokens", "POST", {"user": "alice@example.test", "scope": "imap pop3",
                                                          "expires_in": 600})
    assert status == 201, issued
    assert issued["user"] == "alice" and issued["scope"] == "imap pop3" and not issued["expired"]
    assert 590 <= issued["expires_in"] <= 600
    assert curl(server, "imap", issued["token"], tmp_path).returncode == 0
    assert curl(server, "smtp", issued["token"], tmp_path).returncode == CURL_FAILED  # not in its scope
    status, listed = _api(server, "/api/tokens")
    assert status == 200 and [token["id"] for token in listed["tokens"]] == [issued["id"]]
    assert issued["token"] not in json.dumps(listed)  # the list never shows a token
    assert _api(server, f"/api/tokens/{issued['id']}", "DELETE") == (200, {"revoked": issued["id"]})
    assert _api(server, f"/api/tokens/{issued['id']}", "DELETE")[0] == 404
    assert curl(server, "imap", issued["token"], tmp_path).returncode == CURL_FAILED
    assert _api(server, "/api/tokens", "POST", {"user": "nobody"})[0] == 404
    assert _api(server, "/api/tokens", "POST", {"user": "alice", "expires_in": "soon"})[0] == 400
    assert _api(server, "/api/tokens", "POST", {"user": "alice", "colour": "red"})[0] == 400
    assert _api(server, "/api/tokens", "POST", {"user": "alice", "scope": " "})[0] == 400
    _api(server, "/api/tokens", "POST", {"user": "bob"})
    assert _api(server, "/api/reset", "POST")[1]["tokens"] == 1
    assert _api(server, "/api/tokens")[1] == {"tokens": []}


def test_the_exchange_without_io() -> None:
    tokens = TokenIssuer()
    good = tokens.issue("alice", ("mail",), 60).token
    assert tokens.check(good, "imap", now=time.time() + 61).error == "invalid_token"

    def lookup(name: str) -> tuple[str, str] | None:
        return ("alice", "x") if name in ("alice", "alice@example.test") else None

    context = SaslContext(lookup, "h", "imap", tokens=tokens)
    assert parse_oauthbearer(b"n,a=alice,\x01auth=Bearer t\x01\x01") == ("alice", {"auth": "Bearer t"})
    assert parse_oauthbearer(b"n,,\x01host=h\x01port=1\x01auth=Bearer t\x01\x01") == (
        None, {"host": "h", "port": "1", "auth": "Bearer t"})
    assert parse_oauthbearer(b"\x01") is None and parse_oauthbearer(b"p=x,,\x01auth=Bearer t\x01\x01") is None
    done = OAuth(context, "OAUTHBEARER").step(b"n,,\x01auth=Bearer " + good.encode() + b"\x01\x01")
    assert done.account == "alice" and done.secret_sent  # type: ignore[union-attr]
    asked = OAuth(context, "XOAUTH2")
    assert asked.step(None).data == b""  # type: ignore[union-attr]
    refused = asked.step(b"user=alice\x01auth=Bearer nope\x01\x01")
    assert json.loads(refused.data)["status"] == "invalid_token"  # type: ignore[union-attr]
    final = asked.step(b"")
    assert final.account is None and final.secret_sent and final.user == "alice"  # type: ignore[union-attr]
    malformed = OAuth(context, "XOAUTH2").step(b"garbage")
    assert malformed.account is None  # type: ignore[union-attr]
