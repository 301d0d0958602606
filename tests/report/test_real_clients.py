"""Real report cards of real clients (issue 18's acceptance): curl --ssl-reqd passes every STARTTLS
scenario of SMTP, IMAP and POP3, curl --ssl fails starttls-stripped with the reason, swaks fails
SMTP response-injection, and Python's ssl.create_default_context() clients pass every certificate
scenario where an unverified context fails them. Each test has its own server (its client scope)
and reads the card the user sees: the API's JSON and `mailmodes report`'s text."""

from __future__ import annotations

import imaplib
import json
import poplib
import smtplib
import socket
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmodes.cli import main
from mailmodes.scenarios.catalogue import REVOCATION_SCENARIOS, SCENARIOS, client_name
from support import run_client

HOST = "127.0.0.1"
SECRET = "alice-password"
PROTOCOLS = ("smtp", "imap", "pop3")
# Section 2 scenarios of kind "starttls" that live on a STARTTLS port (implicit-speaks-plaintext
# is an implicit-TLS port's): what `curl --ssl-reqd` is for.
STARTTLS_SCENARIOS = [s.id for s in SCENARIOS.values() if s.kind == "starttls" and s.id != "implicit-speaks-plaintext"]
CERTIFICATE_SCENARIOS = [s.id for s in SCENARIOS.values() if s.kind == "certificate" and s.buildable]


def api_card(server: Any, **query: str) -> dict[str, Any]:
    suffix = "?" + "&".join(f"{key}={value}" for key, value in query.items()) if query else ""
    with urllib.request.urlopen(f"{server.http_url}/api/report{suffix}", timeout=10) as response:
        card: dict[str, Any] = json.load(response)
    return card


def outcomes(card: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(row["protocol"], row["scenario"]): row["outcome"] for row in card["rows"]}


def cli_card(server: Any, capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(["report", "--api", server.http_url]) == 0
    return capsys.readouterr().out


def curl(server: Any, protocol: str, port: int, setting: str, message: Path) -> list[str]:
    args = ["curl", "-sS", "--max-time", "3", "--cacert", str(server.ca_file), setting, "-u", f"alice:{SECRET}"]
    if protocol == "smtp":
        return [*args, "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test", "-T", str(message),
                f"smtp://{HOST}:{port}"]
    return [*args, f"{protocol}://{HOST}:{port}/"]


def scenario_listeners(scenarios: list[str], tls: str = "starttls-required") -> list[dict[str, Any]]:
    return [{"name": f"{protocol}-{scenario}", "protocol": protocol, "tls": tls, "scenario": scenario}
            for scenario in scenarios for protocol in SCENARIOS[scenario].protocols]


def test_curl_ssl_reqd_passes_every_starttls_scenario(mailmodes_factory: Callable[..., Any], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    listeners = scenario_listeners(STARTTLS_SCENARIOS)
    server = mailmodes_factory(listeners)
    (tmp_path / "m.eml").write_bytes(b"Subject: t\r\n\r\nbody\r\n")
    for listener in listeners:
        run_client(curl(server, listener["protocol"], server.port(listener["name"]), "--ssl-reqd",
                        tmp_path / "m.eml"))
    server.settle()
    card = api_card(server)
    expected = {(listener["protocol"], listener["scenario"]) for listener in listeners}
    assert set(outcomes(card)) == expected and len(expected) == 34
    assert {key: outcome for key, outcome in outcomes(card).items() if outcome != "passed"} == {}
    text = cli_card(server, capsys)
    assert text.rstrip().endswith("34 passed, 0 failed, 0 inconclusive")
    line = next(line for line in text.splitlines() if "pop3  starttls-rejected" in line)
    assert "PASSED" in line and "stopped after STARTTLS was refused, sending nothing TLS should protect" in line


def test_curl_ssl_fails_starttls_stripped_with_the_reason(mailmodes_factory: Callable[..., Any], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    listeners = scenario_listeners(["starttls-stripped"])
    server = mailmodes_factory(listeners)
    (tmp_path / "m.eml").write_bytes(b"Subject: t\r\n\r\nbody\r\n")
    for listener in listeners:
        result = run_client(curl(server, listener["protocol"], server.port(listener["name"]), "--ssl",
                                 tmp_path / "m.eml"))
        assert result.returncode == 0, result.stderr  # curl --ssl goes on without TLS, and says nothing
    server.settle()
    card = api_card(server)
    assert outcomes(card) == {(protocol, "starttls-stripped"): "failed" for protocol in PROTOCOLS}
    reasons = {row["protocol"]: row["reason"] for row in card["rows"]}
    assert reasons["smtp"] == ("sent the password in the clear after STARTTLS was stripped "
                               "(AUTH PLAIN: the secret itself was sent unencrypted)")
    assert reasons["imap"].startswith("sent the password in the clear after STARTTLS was stripped (AUTHENTICATE PLAIN")
    text = cli_card(server, capsys)
    assert "FAILED" in text and "sent the password in the clear after STARTTLS was stripped" in text


def test_swaks_fails_smtp_response_injection(mailmodes_factory: Callable[..., Any],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    server = mailmodes_factory([{"name": "smtp", "protocol": "smtp", "tls": "starttls-required",
                                 "scenario": "response-injection"}])
    result = run_client(["swaks", "--server", HOST, "--port", str(server.port("smtp")), "--from", "alice@example.test",
                         "--to", "bob@example.test", "--timeout", "10", "--tls", "--auth", "PLAIN", "--auth-user",
                         "alice", "--auth-password", SECRET])
    assert "<~  250 AUTH X-MAILMODES-INJECTED" in result.stdout, result.stdout  # it took the injected reply
    server.settle()
    [row] = api_card(server)["rows"]
    assert (row["scenario"], row["outcome"]) == ("response-injection", "failed")
    assert row["reason"].startswith("took injected replies for the server's own when replies were injected behind "
                                    "the STARTTLS success line (the client sent QUIT before the server had answered")
    assert "FAILED" in cli_card(server, capsys)


# --- Python's ssl: the default context refuses every bad certificate, an unverified one does not ---


def dial(context: ssl.SSLContext, name: str, port: int, timeout: float | None) -> ssl.SSLSocket:
    """A TLS connection to 127.0.0.1 that verifies `name` (the wildcard scenarios need their own
    name, which no resolver here knows); the socket is closed when the handshake fails."""
    sock = socket.create_connection((HOST, port), timeout)
    try:
        return context.wrap_socket(sock, server_hostname=name)
    except BaseException:
        sock.close()
        raise


class Smtp(smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return dial(self.context, host, port, timeout)


class Imap(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return dial(self.ssl_context, self.host, self.port, timeout)


class Pop3(poplib.POP3_SSL):
    def _create_socket(self, timeout: float) -> socket.socket:
        return dial(self.context, self.host, self.port, timeout)


def python_client(protocol: str, name: str, port: int, context: ssl.SSLContext) -> None:
    """Connect as `name`, log in as alice, log out; a refused certificate ends it early."""
    try:
        if protocol == "smtp":
            with Smtp(name, port, context=context, timeout=10) as smtp:
                smtp.login("alice", SECRET)
        elif protocol == "imap":
            with Imap(name, port, ssl_context=context, timeout=10) as imap:
                imap.login("alice", SECRET)
        else:
            pop3 = Pop3(name, port, context=context, timeout=10)
            pop3.user("alice")
            pop3.pass_(SECRET)
            pop3.quit()
    except ssl.SSLError:
        pass  # the handshake failed: for a bad certificate that is the point


def careless_context() -> ssl.SSLContext:
    """What a client that "just wants it to work" does: no verification, and OpenSSL's security
    level lowered too (at the default level 2 OpenSSL itself refuses the 1024-bit key and the
    SHA-1 signature, verification or not)."""
    context = ssl._create_unverified_context()
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@pytest.mark.parametrize("verified", [True, False], ids=["default-context", "unverified-context"])
def test_python_clients_and_the_certificate_scenarios(mailmodes_factory: Callable[..., Any],
                                                      capsys: pytest.CaptureFixture[str], verified: bool) -> None:
    listeners = scenario_listeners(CERTIFICATE_SCENARIOS, tls="implicit")
    server = mailmodes_factory(listeners)
    context = ssl.create_default_context(cafile=str(server.ca_file)) if verified else careless_context()
    for listener in listeners:
        python_client(listener["protocol"], client_name(listener["scenario"], server.hostname),
                      server.port(listener["name"]), context)
    server.settle()
    card = api_card(server)
    assert len(card["rows"]) == 3 * len(CERTIFICATE_SCENARIOS)
    outcomes = {(row["protocol"], row["scenario"]): row["outcome"] for row in card["rows"]}
    bad = {key: outcome for key, outcome in outcomes.items()
           if SCENARIOS[key[1]].bad_certificate and key[1] not in REVOCATION_SCENARIOS}
    either = {key: outcome for key, outcome in outcomes.items() if not SCENARIOS[key[1]].bad_certificate}
    good = [s for s in CERTIFICATE_SCENARIOS if not SCENARIOS[s].bad_certificate]
    assert "cert-cn-only" in good and "cert-ecdsa-only" in good
    assert set(either.values()) == {"passed"} and len(either) == 3 * len(good)  # accepting these is no fault
    assert set(bad.values()) == {"passed" if verified else "failed"}, bad
    # Python's ssl never asks for the certificate's status: it cannot know it was revoked, either way
    assert {outcomes[(p, "cert-revoked")] for p in ("smtp", "imap", "pop3")} == {"inconclusive"}
    reasons = {row["scenario"]: row["reason"] for row in card["rows"] if row["protocol"] == "imap"}
    if verified:
        assert reasons["cert-expired"] == "refused: the client aborted the handshake with alert certificate_expired"
    else:
        assert reasons["cert-expired"].startswith("went on after the handshake although the certificate was bad: "
                                                  "certificate has expired")
    text = cli_card(server, capsys)
    refusable = 3 * (len(CERTIFICATE_SCENARIOS) - len(good) - 1)
    assert (f"{3 * len(good) + refusable} passed, 0 failed, 3 inconclusive" if verified
            else f"{3 * len(good)} passed, {refusable} failed, 3 inconclusive") in text
