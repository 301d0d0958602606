"""Issue 20's known-bad SASL cases, each with a real client that passes and one that fails, proved
by the client's own debug output (curl -v, msmtp --debug):

- sasl-plus-stripped: the -PLUS mechanisms left out of the list. msmtp (GNU SASL, no channel
  binding) logs in with gs2 flag n: accepted-plus-downgrade. A scramp client that can bind says y,
  and the server (which does offer -PLUS) refuses it: noticed-plus-downgrade.
- oauth-expired-accepted: an expired token logs in. msmtp whose --passwordeval echoes a stored,
  expired token: used-expired-token. msmtp whose --passwordeval fetches a fresh token: passes.
- bearer-token-in-clear: curl --oauth2-bearer without TLS vs with --ssl-reqd; msmtp --tls=off vs on.
"""

from __future__ import annotations

import base64
import imaplib
import poplib
import shlex
import smtplib
import ssl
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import scramp

from mailmodes.app import ThreadedMailServer
from mailmodes.record.expectations import evaluate
from mailmodes.scenarios.catalogue import SCENARIO_MECHANISMS
from support import CLIENT_TIMEOUT, one_session, run_client, verdict_codes

HOST = "127.0.0.1"
PLUS = ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"]


def listener(protocol: str, scenario: str | None, tls: str = "starttls-required", **options: Any) -> dict[str, Any]:
    mechanisms = SCENARIO_MECHANISMS[scenario or "sasl-plus-stripped"]
    return {"name": "l", "protocol": protocol, "tls": tls, "sasl_mechanisms": list(mechanisms),
            **({"scenario": scenario} if scenario else {}), **options}


def msmtp(server: ThreadedMailServer, ca_file: Path, auth: str, password_command: str, *, tls: bool = True) -> Any:
    tls_options = (["--tls=on", "--tls-starttls=on", f"--tls-trust-file={ca_file}"] if tls else ["--tls=off"])
    return run_client(["msmtp", "--debug", f"--host={HOST}", f"--port={server.port('l')}", *tls_options,
                       f"--auth={auth}", "--user=alice", f"--passwordeval={password_command}",
                       "--from=alice@example.test", "bob@example.test"], stdin=b"Subject: sasl\n\nhi\n")


# --- sasl-plus-stripped ----------------------------------------------------------------------


def test_the_plus_mechanisms_are_stripped_on_every_protocol(serve: Callable[..., ThreadedMailServer],
                                                            client_context: ssl.SSLContext) -> None:
    stripped = serve(listener("smtp", "sasl-plus-stripped"), listener("imap", "sasl-plus-stripped", "implicit",
                                                                       name="i"),
                     listener("pop3", "sasl-plus-stripped", "implicit", name="p"))
    good = serve(listener("imap", None, "implicit"))
    with smtplib.SMTP(HOST, stripped.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.starttls(context=client_context)
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"]
    with imaplib.IMAP4_SSL(HOST, stripped.port("i"), ssl_context=client_context, timeout=CLIENT_TIMEOUT) as imap:
        assert [c for c in imap.capabilities if c.startswith("AUTH=")] == [
            "AUTH=PLAIN", "AUTH=SCRAM-SHA-1", "AUTH=SCRAM-SHA-256"]
    with imaplib.IMAP4_SSL(HOST, good.port("l"), ssl_context=client_context, timeout=CLIENT_TIMEOUT) as imap:
        assert {f"AUTH={m}" for m in PLUS} <= set(imap.capabilities)
    pop = poplib.POP3_SSL(HOST, stripped.port("p"), context=client_context, timeout=CLIENT_TIMEOUT)
    try:
        assert pop.capa()["SASL"] == ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"]
    finally:
        pop.quit()


def test_msmtp_logs_in_unbound_after_the_strip(serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    """The failing client: msmtp sees no -PLUS and sends gs2 flag n (its --debug shows it)."""
    server = serve(listener("smtp", "sasl-plus-stripped"))
    result = msmtp(server, ca_file, "scram-sha-256", "echo alice-password")
    assert result.returncode == 0, result.stderr
    assert "<-- 250-AUTH PLAIN SCRAM-SHA-1 SCRAM-SHA-256" in result.stdout
    lines = result.stdout.splitlines()
    answer = lines[lines.index("--> AUTH SCRAM-SHA-256") + 2]  # after the server's empty 334
    assert base64.b64decode(answer.removeprefix("--> ")).startswith(b"n,,n=alice,")
    record = one_session(server)
    assert record.channel_bindings == [(True, "AUTH SCRAM-SHA-256", "n")]
    assert "accepted-plus-downgrade" in verdict_codes(record)
    judgement = evaluate(record)
    assert judgement.outcome == "failed"
    assert judgement.reason.startswith("logged in without channel binding after the -PLUS mechanisms were stripped")


def _scram_over_smtp(port: int, context: ssl.SSLContext, mechanism: str, *, bind: bool) -> tuple[int, bytes]:
    with smtplib.SMTP(HOST, port, timeout=CLIENT_TIMEOUT) as client:
        client.starttls(context=context)
        client.ehlo()
        assert isinstance(client.sock, ssl.SSLSocket)
        der = client.sock.getpeercert(binary_form=True)
        assert der is not None
        binding = ("tls-server-end-point", bytes(scramp.core.CBindData.from_der(der))) if bind else None
        scram = scramp.ScramClient([mechanism], "alice", "alice-password", channel_binding=binding)
        code, text = client.docmd("AUTH", f"{mechanism} {base64.b64encode(scram.get_client_first().encode()).decode()}")
        if code != 334:
            return code, text
        scram.set_server_first(base64.b64decode(text).decode())
        code, text = client.docmd(base64.b64encode(scram.get_client_final().encode()).decode())
        if code != 334:
            return code, text
        scram.set_server_final(base64.b64decode(text).decode())
        return client.docmd("")


def test_a_client_that_can_bind_says_so_and_the_strip_is_caught(serve: Callable[..., ThreadedMailServer],
                                                                client_context: ssl.SSLContext) -> None:
    """The passing client: a scramp client with its channel binding sees no -PLUS, says y, is refused."""
    server = serve(listener("smtp", "sasl-plus-stripped"))
    assert _scram_over_smtp(server.port("l"), client_context, "SCRAM-SHA-256", bind=True)[0] == 535
    record = one_session(server)
    assert record.channel_bindings == [(True, "AUTH SCRAM-SHA-256", "y")]
    assert "noticed-plus-downgrade" in verdict_codes(record)
    assert "accepted-plus-downgrade" not in verdict_codes(record)
    assert evaluate(record).outcome == "passed"


def test_binding_anyway_passes(serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve(listener("smtp", "sasl-plus-stripped"))
    assert _scram_over_smtp(server.port("l"), client_context, "SCRAM-SHA-256-PLUS", bind=True)[0] == 235
    record = one_session(server)
    assert evaluate(record).outcome == "passed" and record.user == "alice"


def test_plain_login_is_inconclusive_there(serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    server = serve(listener("smtp", "sasl-plus-stripped"))
    assert msmtp(server, ca_file, "plain", "echo alice-password").returncode == 0
    judgement = evaluate(one_session(server))
    assert judgement == type(judgement)("inconclusive", "never reached the step: the client made no SCRAM login")


# --- oauth-expired-accepted --------------------------------------------------------------------


def test_msmtp_with_a_stored_expired_token_fails(serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    server = serve(listener("smtp", "oauth-expired-accepted"))
    expired = server.call(lambda: server.store.tokens.issue("alice", ("mail",), -60)).token
    result = msmtp(server, ca_file, "oauthbearer", f"echo {expired}")
    assert result.returncode == 0, result.stderr  # the broken server let it in
    assert "--> AUTH OAUTHBEARER" in result.stdout and "<-- 235 2.7.0 Authentication successful" in result.stdout
    record = one_session(server)
    assert record.user == "alice" and record.expired_tokens == ["AUTH OAUTHBEARER"]
    assert "used-expired-token" in verdict_codes(record)
    assert evaluate(record).outcome == "failed"


def test_msmtp_fetching_a_fresh_token_passes(serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    server = serve(listener("smtp", "oauth-expired-accepted"), http={"port": 0})
    fetch = (f"curl -s -X POST http://{HOST}:{server.http_port}/api/tokens -d '{{\"user\": \"alice\"}}' | "
             f"{shlex.quote(sys.executable)} -c 'import json, sys; print(json.load(sys.stdin)[\"token\"])'")
    result = msmtp(server, ca_file, "xoauth2", fetch)
    assert result.returncode == 0, result.stderr
    assert "<-- 235 2.7.0 Authentication successful" in result.stdout
    record = next(r for r in server.journal.wait_for(1) if r.protocol == "smtp")
    assert record.expired_tokens == [] and "used-expired-token" not in verdict_codes(record)
    assert evaluate(record).outcome == "passed"


def test_a_known_good_server_refuses_the_expired_token_and_still_names_it(
        serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    server = serve(listener("smtp", None, sasl_mechanisms=list(SCENARIO_MECHANISMS["oauth-expired-accepted"])))
    expired = server.call(lambda: server.store.tokens.issue("alice", ("mail",), -60)).token
    result = msmtp(server, ca_file, "oauthbearer", f"echo {expired}")
    assert result.returncode == 77 and "<-- 535" in result.stdout
    assert "used-expired-token" in verdict_codes(one_session(server))


# --- bearer-token-in-clear -------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_curl_bearer_token_in_clear_or_not(serve: Callable[..., ThreadedMailServer], protocol: str,
                                            tmp_path: Path) -> None:
    server = serve({"name": "l", "protocol": protocol, "tls": "starttls-optional", "sasl_mechanisms": ["OAUTHBEARER"]})
    token = server.call(lambda: server.store.tokens.issue("alice", ("mail",), 600)).token
    ca = server.config.certs.dir / "ca.pem"
    url = f"{protocol}://{HOST}:{server.port('l')}/" + ("INBOX?ALL" if protocol == "imap" else "")
    extra = ["--mail-rcpt", "bob@example.test", "--mail-from", "alice@example.test", "-T", "/dev/null"] \
        if protocol == "smtp" else []
    command = "AUTH OAUTHBEARER" if protocol != "imap" else "AUTHENTICATE OAUTHBEARER"
    plain = run_client(["curl", "-v", "--max-time", "10", url, "-u", "alice:", "--oauth2-bearer", token, *extra])
    assert plain.returncode == 0, plain.stderr
    assert "STARTTLS" not in "".join(line for line in plain.stderr.splitlines() if line.startswith("> "))
    assert any(command in line for line in plain.stderr.splitlines() if line.startswith("> "))
    safe = run_client(["curl", "-v", "--max-time", "10", "--ssl-reqd", "--cacert", str(ca), url, "-u", "alice:",
                       "--oauth2-bearer", token, *extra])
    assert safe.returncode == 0, safe.stderr
    sent = [line for line in safe.stderr.splitlines() if line.startswith(("> ", "* SSL connection"))]
    assert [i for i, line in enumerate(sent) if "SSL connection" in line] < [
        i for i, line in enumerate(sent) if command in line]
    first, second = sorted(server.journal.wait_for(2), key=lambda record: record.id)
    assert "bearer-token-in-clear" in verdict_codes(first)
    assert evaluate(first).reason.startswith("sent its bearer token in the clear")
    assert "bearer-token-in-clear" not in verdict_codes(second) and second.user == "alice"
    assert evaluate(second).outcome == "passed"


@pytest.mark.parametrize("tls", [False, True])
def test_msmtp_bearer_token(serve: Callable[..., ThreadedMailServer], ca_file: Path, tls: bool) -> None:
    server = serve({"name": "l", "protocol": "smtp", "tls": "starttls-optional", "sasl_mechanisms": ["XOAUTH2"]})
    token = server.call(lambda: server.store.tokens.issue("alice", ("mail",), 600)).token
    result = msmtp(server, ca_file, "xoauth2", f"echo {token}", tls=tls)
    assert result.returncode == 0, result.stderr
    assert ("--> STARTTLS" in result.stdout) is tls
    assert ("bearer-token-in-clear" in verdict_codes(one_session(server))) is not tls
