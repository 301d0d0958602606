"""Verdicts that tell the truth about real clients (issue 14): each test drives real clients that
behave well or badly in the way a verdict names, checks what the client itself printed, and then
what the journal concluded."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from support import run_client, verdict_codes

HOST = "127.0.0.1"
SECRET = "alice-password"
MESSAGE = b"Subject: t\r\n\r\nbody\r\n"
SCHEMES = {"smtp": "smtps", "imap": "imaps", "pop3": "pop3s"}


def curl(*args: str) -> list[str]:
    return ["curl", "-v", "--max-time", "10", *args]


def swaks(port: int, *args: str) -> list[str]:
    return ["swaks", "--server", HOST, "--port", str(port), "--from", "alice@example.test", "--to",
            "bob@example.test", "--timeout", "10", *args]


def msmtp(port: int, *args: str) -> list[str]:
    return ["msmtp", "-C", "/dev/null", f"--host={HOST}", f"--port={port}", "--from=alice@example.test",
            "--timeout=10", "--debug", *args, "bob@example.test"]


# --- defect 2: a ClientHello on a STARTTLS port earns tls-on-plaintext-port only -----------------


@pytest.mark.parametrize("mode", ["starttls-optional", "starttls-required"])
@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_an_implicit_tls_client_on_a_starttls_port_tried_tls(serve: Callable[..., ThreadedMailServer],
                                                              ca_file: Path, protocol: str, mode: str) -> None:
    server = serve({"name": "l", "protocol": protocol, "tls": mode})
    port = server.port("l")
    result = run_client(curl("--cacert", str(ca_file), "-u", f"alice:{SECRET}", f"{SCHEMES[protocol]}://{HOST}:{port}/"))
    assert result.returncode == 35 and "wrong version number" in result.stderr, result.stderr
    openssl = run_client(["openssl", "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(ca_file),
                          "-verify_return_error", "-brief"])
    assert openssl.returncode != 0 and "wrong version number" in openssl.stdout + openssl.stderr
    for record in server.journal.wait_for(2):
        assert verdict_codes(record) == {"tls-on-plaintext-port"}, (record.verdicts, record.first_client_bytes)


# --- defect 3: fallback only on evidence that two sessions are one client's ----------------------


def test_different_clients_sharing_an_address_are_never_blamed_for_each_other(
        serve: Callable[..., ThreadedMailServer], ca_file: Path, tmp_path: Path) -> None:
    """As in CI or Docker: strict clients fail at TLS against a bad certificate while careless ones
    send plaintext to the next port, all from 127.0.0.1, interleaved within seconds."""
    server = serve({"name": "expired", "protocol": "smtp", "tls": "starttls-required", "scenario": "cert-expired"},
                   {"name": "optional", "protocol": "smtp", "tls": "starttls-optional"},
                   {"name": "pop3-expired", "protocol": "pop3", "tls": "implicit", "scenario": "cert-expired"},
                   {"name": "pop3", "protocol": "pop3", "tls": "starttls-optional"})
    expired, optional = server.port("expired"), server.port("optional")
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    mail = ["-u", f"alice:{SECRET}", "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test",
            "-T", str(tmp_path / "m.eml")]
    strict_curl = run_client(curl("--cacert", str(ca_file), "--ssl-reqd", *mail, f"smtp://{HOST}:{expired}"))
    assert strict_curl.returncode == 60 and "certificate has expired" in strict_curl.stderr
    careless_swaks = run_client(swaks(optional, "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", SECRET))
    assert careless_swaks.returncode == 0 and " -> AUTH PLAIN" in careless_swaks.stdout, careless_swaks.stdout
    strict_openssl = run_client(["openssl", "s_client", "-connect", f"{HOST}:{expired}", "-starttls", "smtp",
                                 "-CAfile", str(ca_file), "-verify_return_error", "-brief"])
    assert strict_openssl.returncode != 0 and "certificate has expired" in strict_openssl.stdout + strict_openssl.stderr
    careless_msmtp = run_client(msmtp(optional, "--auth=plain", "--user=alice", f"--passwordeval=echo {SECRET}",
                                      "--tls=off"), stdin=MESSAGE)
    assert careless_msmtp.returncode == 0 and "--> AUTH PLAIN" in careless_msmtp.stdout, careless_msmtp.stdout
    strict_pop3 = run_client(curl("--cacert", str(ca_file), "-u", f"alice:{SECRET}",
                                  f"pop3s://{HOST}:{server.port('pop3-expired')}/"))
    assert strict_pop3.returncode == 60
    careless_pop3 = run_client(curl("-u", f"alice:{SECRET}", f"pop3://{HOST}:{server.port('pop3')}/"))
    assert careless_pop3.returncode == 0 and "> PASS" in careless_pop3.stderr + careless_pop3.stdout or \
        "AUTH PLAIN" in careless_pop3.stderr
    with smtplib.SMTP(HOST, optional, timeout=10) as careless_smtplib:
        careless_smtplib.login("alice", SECRET)
    records = server.journal.wait_for(7)
    assert len(records) == 7
    assert sum("rejected-certificate" in verdict_codes(r) for r in records) == 3
    assert sum("credentials-in-clear" in verdict_codes(r) for r in records) == 4
    assert [r.id for r in records if "fallback" in verdict_codes(r)] == []


def curl_then_without_tls(port: int, ca_file: Path, tmp_path: Path) -> tuple[str, str]:
    """A careless client: a script that retries without TLS when TLS fails ("curl --ssl-reqd || curl")."""
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    mail = ["-u", f"alice:{SECRET}", "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test",
            "-T", str(tmp_path / "m.eml")]
    first = run_client(curl("--cacert", str(ca_file), "--ssl-reqd", *mail, f"smtp://{HOST}:{port}"))
    assert first.returncode != 0 and "< 220" in first.stderr, first.stderr
    second = run_client(curl(*mail, f"smtp://{HOST}:{port}"))
    assert second.returncode == 0 and "> AUTH PLAIN" in second.stderr, second.stderr
    return first.stderr, second.stderr


@pytest.mark.parametrize("scenario", ["starttls-no-handshake", "starttls-dropped"])
def test_a_client_that_retries_without_tls_after_a_starttls_without_tls_falls_back(
        mailmodes_factory: Callable[..., Any], tmp_path: Path, scenario: str) -> None:
    """It got the STARTTLS success line and then plaintext (or a close) instead of TLS: that is a
    failed TLS attempt, and a plaintext retry by the same client is a fallback. The pytest plugin's
    per-test server is the client scope: it meets the one client under test."""
    server = mailmodes_factory([{"name": "l", "protocol": "smtp", "tls": "starttls-optional", "scenario": scenario}])
    failed, retried = curl_then_without_tls(server.port("l"), server.ca_file, tmp_path)
    assert "> STARTTLS" in failed and ("wrong version number" in failed or "SSL_connect" in failed), failed
    first, second = server.sessions()
    assert "fallback" not in verdict_codes(first)
    assert {"fallback", "credentials-in-clear"} <= verdict_codes(second), second.verdicts
    assert second.scope == "server"


def test_the_same_retry_on_a_shared_server_is_not_claimed(serve: Callable[..., ThreadedMailServer], ca_file: Path,
                                                          tmp_path: Path) -> None:
    """Without a client scope nothing shows the two connections are one client's: no guess."""
    server = serve({"name": "l", "protocol": "smtp", "tls": "starttls-optional", "scenario": "starttls-no-handshake"})
    curl_then_without_tls(server.port("l"), ca_file, tmp_path)
    assert [verdict_codes(r) & {"fallback"} for r in server.journal.wait_for(2)] == [set(), set()]
