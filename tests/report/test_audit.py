"""Audit mode: one port per protocol serves the next scenario on each new connection from the same
client, so a scripted client (curl in a loop) walks every scenario from one configured port, and
`mailmodes audit` prints how many connections are left and the report card at the end."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.config import ConfigError, parse_config
from mailmodes.record.expectations import REVOCATION_UNASKED
from mailmodes.scenarios.audit import audit_plan
from mailmodes.scenarios.catalogue import SCENARIOS
from mailmodes.tls.policy import TlsMode
from support import run_client

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def test_the_plan_is_the_known_good_setup_then_every_scenario_the_port_can_serve() -> None:
    starttls = audit_plan("smtp", TlsMode.STARTTLS_REQUIRED)
    assert starttls[0] is None and "cert-expired" in starttls and "starttls-stripped" in starttls
    assert "implicit-speaks-plaintext" not in starttls and "imap-preauth" not in starttls
    assert "cert-wildcard-apex" not in starttls  # needs a host name of its own
    implicit = audit_plan("imap", TlsMode.IMPLICIT)
    assert "implicit-speaks-plaintext" in implicit and "starttls-stripped" not in implicit
    assert all(SCENARIOS[s].buildable for s in starttls[1:])


@pytest.mark.parametrize(("table", "message"), [
    ({"scenario": "cert-expired"}, "walks every scenario itself"),
    ({"tls": "plaintext"}, "needs a TLS mode"),
])
def test_an_audit_listener_takes_no_scenario_and_needs_tls(table: dict[str, Any], message: str) -> None:
    listener = {"name": "a", "protocol": "smtp", "port": 0, "tls": "starttls-required", "audit": True, **table}
    with pytest.raises(ConfigError, match=message):
        parse_config({"listeners": [listener]})


def test_each_new_connection_from_a_client_gets_the_next_scenario(
        serve: Callable[..., ThreadedMailServer], client_context: Any) -> None:
    server = serve({"name": "audit", "protocol": "smtp", "tls": "starttls-required", "audit": True})
    walk = server.server.audits["audit"]
    with pytest.raises(ConfigError, match="audit listener"):
        server.call(lambda: server.server.set_scenario("audit", "cert-expired"))
    for _ in range(3):
        with smtplib.SMTP(HOST, server.port("audit"), timeout=10) as client:
            client.ehlo()
    records = server.journal.wait_for(3)
    assert [r.scenario for r in records] == list(walk.plan[:3]) == [None, "cert-expired", "cert-not-yet-valid"]
    assert {r.listener for r in records} == {"audit"}
    assert walk.left(HOST) == len(walk.plan) - 3


def test_curl_in_a_loop_walks_every_smtp_scenario_from_one_port_and_gets_a_complete_card(
        certs_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    environment = {**os.environ, "MAILMODES_CERTS_DIR": str(certs_dir)}
    command = [sys.executable, "-m", "mailmodes", "audit", "--protocol", "smtp", "--port", str(port),
               "--format", "json", "--output", str(tmp_path / "card.json")]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
                          cwd=tmp_path) as audit:
        walk_with_curl(audit, port, certs_dir, tmp_path)
    assert audit.returncode == 0


def walk_with_curl(audit: subprocess.Popen[str], port: int, certs_dir: Path, tmp_path: Path) -> None:
    try:
        assert audit.stdout is not None
        first = audit.stdout.readline()
        assert first.startswith(f"audit audit-smtp: smtp starttls-required on {HOST}:{port}: "), first
        steps = int(first.split(": ")[2].split(" ")[0])
        assert steps == len(audit_plan("smtp", TlsMode.STARTTLS_REQUIRED)) == 39
        while audit.stdout.readline().strip() != "ready":
            pass
        (tmp_path / "m.eml").write_bytes(b"Subject: audit\r\n\r\nhi\r\n")
        progress = []
        for _ in range(steps):  # the client is configured once: the same command every time
            run_client(["curl", "-sS", "--max-time", "3", "--ssl-reqd", "--cacert", str(certs_dir / "ca.pem"),
                        "-u", "alice:alice-password", "--mail-from", "alice@example.test", "--mail-rcpt",
                        "bob@example.test", "-T", str(tmp_path / "m.eml"), f"smtp://{HOST}:{port}"])
            progress.append(audit.stdout.readline())
        # Not communicate(): it reads the pipe itself and would lose what readline() has buffered.
        out = audit.stdout.read()
        assert audit.stderr is not None
        err = audit.stderr.read()
        audit.wait(timeout=30)
    finally:
        if audit.poll() is None:
            audit.kill()
            audit.wait()
    assert audit.returncode == 0, err
    assert progress[0].startswith(f"{HOST} #1 smtp starttls-required: passed (") and \
        progress[0].rstrip().endswith(f"{steps - 1} connections left")
    assert progress[-1].rstrip().endswith("0 connections left")
    assert out.strip() == f"report card written to {tmp_path / 'card.json'}", progress
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["scope"] == {"audit": "audit-smtp", "client": HOST}
    assert len(card["rows"]) == steps and card["sessions"] == steps
    # curl asks for the certificate's status only with --cert-status (which fails on every step with no
    # stapled response), so it cannot know cert-revoked's certificate is revoked: inconclusive, not failed.
    assert card["counts"] == {"passed": steps - 1, "failed": 0, "inconclusive": 1}, [
        (row["scenario"], row["reason"]) for row in card["rows"] if row["outcome"] != "passed"]
    assert [row["reason"] for row in card["rows"] if row["outcome"] == "inconclusive"] == [REVOCATION_UNASKED]


def test_an_implicit_tls_audit_port_walks_smtplib_through_every_step(
        serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    """Our own implicit-TLS handshake sits behind the audit's dispatch too (SMTP)."""
    from mailmodes.pytest_plugin import ScenarioTarget
    from mailmodes.record.report import build
    from report.smtp_clients import careful

    server = serve({"name": "audit", "protocol": "smtp", "tls": "implicit", "audit": True})
    walk = server.server.audits["audit"]
    target = ScenarioTarget("smtp", "audit", "implicit", server.port("audit"), "mail.example.test", ca_file)
    for _ in walk.plan:
        try:
            careful(target)
        except (OSError, smtplib.SMTPException):
            pass  # refused, as it should on most steps
    records = server.journal.wait_for(len(walk.plan))
    assert [r.scenario for r in records] == list(walk.plan)
    card = build(records)
    assert card.counts() == {"passed": len(walk.plan) - 1, "failed": 0, "inconclusive": 1}
    assert card.row("cert-revoked", "smtp").reason == REVOCATION_UNASKED  # Python's ssl never asks
    assert card.row("implicit-speaks-plaintext", "smtp").outcome == "passed"
