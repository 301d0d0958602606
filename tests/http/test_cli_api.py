"""`mailmodes sessions --api` and `mailmodes messages --api` against a running server, and
`mailmodes serve` announcing the dashboard."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.cli import main

HOST = "127.0.0.1"
LISTENERS = ({"name": "plain", "protocol": "smtp", "tls": "plaintext"},)


def send(server: ThreadedMailServer, message: bytes, to: str = "bob@example.test", *, first_fail: bool = False) -> None:
    with smtplib.SMTP(HOST, server.port("plain"), timeout=10) as client:
        if first_fail:
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("mallory", "alice-password")
        client.login("alice", "alice-password")
        client.sendmail("alice@example.test", [to], message)


def test_sessions_from_the_api(api_server: Callable[..., ThreadedMailServer], capsys: pytest.CaptureFixture[str]) -> None:
    server = api_server(*LISTENERS)
    send(server, b"Subject: hi\r\n\r\nhi\r\n", first_fail=True)
    [record] = server.journal.wait_for(1)
    url = f"http://{HOST}:{server.http_port}"

    assert main(["sessions", "--api", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"#{record.id} ") and out[0].endswith("-> plain (smtp, plaintext): no TLS user=alice")
    assert out[1:] == ["    ! credentials-in-clear: AUTH PLAIN: the secret itself was sent unencrypted",
                       "    x failed login: AUTH PLAIN as mallory", "    x failed login: AUTH LOGIN as mallory"]

    assert main(["sessions", "--api", url, "--verdict", "mail-in-clear"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["sessions", "--api", url, "--verdict", "credentials-in-clear", "--transcript"]) == 0
    transcript = capsys.readouterr().out.splitlines()
    assert any(line.endswith("C: AUTH PLAIN ****") for line in transcript)


def test_messages_from_the_api_escape_control_characters(
        api_server: Callable[..., ThreadedMailServer], capsys: pytest.CaptureFixture[str]) -> None:
    server = api_server(*LISTENERS)
    send(server, b"From: Alice <alice@example.test>\r\nSubject: =?utf-8?q?red_=1B=5B31m_alert?=\r\n\r\nx\r\n")
    send(server, b"Subject: out\r\n\r\nx\r\n", to="carol@elsewhere.example")
    url = f"http://{HOST}:{server.http_port}"

    assert main(["messages", "--api", url, "--user", "bob"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "bob: 1 message"
    assert lines[1].startswith("  INBOX    uid 1    ")
    assert lines[2:] == ["      From: Alice <alice@example.test>", "      Subject: red \\x1b[31m alert"]

    assert main(["messages", "--api", url]) == 0
    everything = capsys.readouterr().out.splitlines()
    assert "alice: 0 messages" in everything and "bob: 1 message" in everything
    assert "captured outbound (never relayed): 1" in everything
    assert any(line.startswith("  #1 from account alice: MAIL FROM alice@example.test to carol@elsewhere.example")
               for line in everything)


def test_unreachable_or_wrong_api(api_server: Callable[..., ThreadedMailServer], capsys: pytest.CaptureFixture[str]) -> None:
    server = api_server(*LISTENERS)
    url = f"http://{HOST}:{server.http_port}"
    assert main(["messages", "--api", url, "--user", "carol"]) == 1
    assert capsys.readouterr().err == f"mailmodes: {url}/api/messages/carol: 404 no user 'carol'\n"
    server.stop()
    assert main(["sessions", "--api", url]) == 1
    assert "cannot reach the API" in capsys.readouterr().err
    assert main(["sessions", "--api", "127.0.0.1:8025"]) == 1
    assert "must start with http://" in capsys.readouterr().err


def test_serve_announces_the_dashboard(tmp_path: Path) -> None:
    config = tmp_path / "mailmodes.toml"
    config.write_text('[http]\nport = 0\n\n[[listeners]]\nname = "plain"\nprotocol = "smtp"\nport = 0\n'
                      'tls = "plaintext"\n')
    process = subprocess.Popen([sys.executable, "-m", "mailmodes", "serve", "--config", str(config)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if line == "ready\n":
                break
        dashboard = next(line for line in lines if line.startswith("dashboard "))
        url = dashboard.removeprefix("dashboard ")
        assert url.startswith(f"http://{HOST}:") and url.endswith("/")
        with urllib.request.urlopen(url + "api/ready", timeout=10) as response:
            assert json.load(response) == {"ready": True, "listening": 1}
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]
