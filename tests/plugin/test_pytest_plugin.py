"""The pytest plugin (entry point pytest11 "mailmodes"), used the way a client project uses it:
test files in a temporary project run by a separate pytest (pytester)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# A client project's tests: a STARTTLS client must not leak credentials, a plaintext one does.
CLIENT_TESTS = '''
import smtplib
import ssl

import pytest


def send(server, listener, *, starttls):
    with smtplib.SMTP(server.host, server.port(listener), timeout=10) as client:
        if starttls:
            client.starttls(context=server.ssl_context)
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", ["bob@example.test"], b"Subject: hi\\r\\n\\r\\nhello\\r\\n")


def test_starttls_client_keeps_credentials_secret(mailmodes_server):
    send(mailmodes_server, "smtp-starttls-required", starttls=True)
    assert not mailmodes_server.sessions(verdict="credentials-in-clear")
    [session] = mailmodes_server.sessions()
    assert session.starttls and session.user == "alice"
    assert mailmodes_server.messages("bob") == [b"Subject: hi\\r\\n\\r\\nhello\\r\\n"]


def test_plaintext_client_is_caught(mailmodes_server):
    send(mailmodes_server, "smtp-plaintext", starttls=False)
    assert mailmodes_server.sessions(verdict="credentials-in-clear")
    [entry] = mailmodes_server.session_dicts(verdict="credentials-in-clear")
    assert entry["listener"] == "smtp-plaintext" and entry["verdicts"] == ["credentials-in-clear"]


def test_plaintext_client_fails_a_strict_test(mailmodes_server):
    send(mailmodes_server, "smtp-starttls-optional", starttls=False)
    assert not mailmodes_server.sessions(verdict="credentials-in-clear"), "LEAKED"
'''


def test_the_entry_point_names_the_plugin() -> None:
    [entry] = [e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "mailmodes"]
    assert entry.value == "mailmodes.pytest_plugin"


def test_verdict_assertions_in_a_client_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_client=CLIENT_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: LEAKED*", "*FAILED test_client.py::test_plaintext_client_fails_a_strict_test*"])


def test_fixture_gives_ports_ca_context_store_and_api(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fixture='''
import json
import ssl
import smtplib
import urllib.request

MODES = ("implicit", "starttls-required", "starttls-optional", "plaintext")


def test_default_listeners(mailmodes_server):
    assert set(mailmodes_server.ports) == {f"{p}-{m}" for p in ("smtp", "imap", "pop3") for m in MODES}
    assert len(set(mailmodes_server.ports.values())) == 12 and 0 not in mailmodes_server.ports.values()
    assert mailmodes_server.ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    context = mailmodes_server.ssl_context
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    with smtplib.SMTP_SSL("127.0.0.1", mailmodes_server.port("smtp-implicit"), context=context, timeout=10) as c:
        assert c.noop()[0] == 250
    with urllib.request.urlopen(mailmodes_server.http_url + "/api/ready", timeout=10) as response:
        assert json.load(response)["ready"] is True
    assert mailmodes_server.store.accounts.keys() == {"alice", "bob"}


def test_clear_starts_clean(mailmodes_server):
    with smtplib.SMTP("127.0.0.1", mailmodes_server.port("smtp-plaintext"), timeout=10) as c:
        c.login("alice", "alice-password")
        c.sendmail("alice@example.test", ["bob@example.test", "x@elsewhere.example"], b"Subject: a\\r\\n\\r\\n")
    assert len(mailmodes_server.sessions()) == 1
    assert len(mailmodes_server.messages("bob")) == 1 and len(mailmodes_server.captured()) == 1
    mailmodes_server.clear()
    assert mailmodes_server.sessions() == [] and mailmodes_server.messages("bob") == []
    assert mailmodes_server.captured() == []


def test_unknown_listener_is_named(mailmodes_server):
    try:
        mailmodes_server.port("smtps")
    except KeyError as error:
        assert "no listener 'smtps'" in str(error)
    else:
        raise AssertionError("no KeyError")
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_marker_and_factory_choose_listeners_and_scenarios(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_choose='''
import imaplib
import pytest

IMAPS = {"name": "imaps", "protocol": "imap", "tls": "implicit", "port": 12345}


@pytest.mark.mailmodes(listeners=[IMAPS], users=[{"name": "carol", "password": "pw"}])
def test_marker(mailmodes_server):
    assert list(mailmodes_server.ports) == ["imaps"] and mailmodes_server.port("imaps") != 12345
    with imaplib.IMAP4_SSL("127.0.0.1", mailmodes_server.port("imaps"), ssl_context=mailmodes_server.ssl_context,
                           timeout=10) as client:
        assert client.login("carol", "pw")[0] == "OK"
    [session] = mailmodes_server.sessions(listener="imaps")
    assert session.user == "carol" and session.tls_version is not None


def test_factory(mailmodes_factory):
    first = mailmodes_factory(protocols=["pop3"], modes=["plaintext"], http=False)
    assert list(first.ports) == ["pop3-plaintext"] and first.http_url is None
    second = mailmodes_factory(listeners=[], scenarios=["cert-expired"], protocols=["smtp"])
    assert sorted(second.ports) == ["smtp-implicit-cert-expired", "smtp-starttls-cert-expired"]
    assert {listener.scenario for listener in second.threaded.config.listeners} == {"cert-expired"}
    assert first.ca_file == second.ca_file  # one CA per session (per xdist worker)
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_works_under_xdist(pytester: pytest.Pytester) -> None:
    """Two workers, each with its own servers, ports and certificate directory."""
    seen = pytester.mkdir("seen")
    pytester.makepyfile(test_parallel=f'''
import json
import os
import smtplib

import pytest


@pytest.mark.parametrize("n", range(6))
def test_parallel(mailmodes_server, worker_id, n):
    with smtplib.SMTP("127.0.0.1", mailmodes_server.port("smtp-plaintext"), timeout=10) as c:
        c.login("alice", "alice-password")
    assert mailmodes_server.sessions(verdict="credentials-in-clear")
    record = {{"worker": worker_id, "ca": str(mailmodes_server.ca_file), "port": mailmodes_server.http_port}}
    with open(os.path.join({str(seen)!r}, f"{{worker_id}}-{{n}}.json"), "w") as file:
        json.dump(record, file)
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=6)
    records = [json.loads(path.read_text()) for path in Path(seen).iterdir()]
    assert {record["worker"] for record in records} == {"gw0", "gw1"}
    ca_dirs = {record["worker"]: {Path(r["ca"]).parent for r in records if r["worker"] == record["worker"]}
               for record in records}
    assert all(len(dirs) == 1 for dirs in ca_dirs.values()) and ca_dirs["gw0"] != ca_dirs["gw1"]


def test_sessions_waits_for_a_handshake_the_client_has_given_up_on(pytester: pytest.Pytester) -> None:
    """Issue 14, defect 7: just after a verifying SMTP_SSL (or IMAP4_SSL) client rejected an expired
    certificate, sessions() must already hold the rejection: the connection was open from the accept."""
    pytester.makepyfile(test_inflight='''
import imaplib
import smtplib
import ssl

import pytest


@pytest.mark.parametrize("attempt", range(5))
def test_rejection_is_there_at_once(mailmodes_factory, attempt):
    server = mailmodes_factory(listeners=[], scenarios=["cert-expired"], protocols=["smtp", "imap"])
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        smtplib.SMTP_SSL(server.host, server.port("smtp-implicit-cert-expired"), context=server.ssl_context,
                         timeout=10)
    [smtp] = server.sessions(verdict="rejected-certificate")
    assert smtp.tls_alert == "certificate_expired"
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(server.host, server.port("imap-implicit-cert-expired"), ssl_context=server.ssl_context,
                          timeout=10)
    assert [r.listener for r in server.sessions(verdict="rejected-certificate")] == [
        "smtp-implicit-cert-expired", "imap-implicit-cert-expired"]
''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)
