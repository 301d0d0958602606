"""The command line a CI script uses: `mailmodes wait`, `sessions` with filters and --follow,
`messages --uid`, --api found from the config, no traceback under `| head`, `serve -v`, and
`[auth] accept_any`. Real servers and real clients; the CLI as a subprocess where the terminal
behaviour (pipes, signals) is the point."""

from __future__ import annotations

import imaplib
import json
import poplib
import signal
import smtplib
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.cli import main
from mailmodes.config import load_config

HOST = "127.0.0.1"
LISTENERS = ({"name": "plain", "protocol": "smtp", "tls": "plaintext", "role": "mta"},)
MAILMODES = [sys.executable, "-m", "mailmodes"]


def send(port: int, subject: str, to: str = "bob@example.test") -> None:
    with smtplib.SMTP(HOST, port, timeout=10) as client:
        client.sendmail("app@elsewhere.example", [to], f"Subject: {subject}\r\nTo: {to}\r\n\r\nHello Bob.\r\n".encode())


@pytest.fixture
def server(api_server: Callable[..., ThreadedMailServer]) -> ThreadedMailServer:
    return api_server(*LISTENERS)


def url(server: ThreadedMailServer) -> str:
    return f"http://{HOST}:{server.http_port}"


def test_wait_prints_the_message_once_it_arrives(server: ThreadedMailServer, capsys: pytest.CaptureFixture[str]) -> None:
    sender = threading.Timer(0.2, send, (server.port("plain"), "Your code"))
    sender.start()
    assert main(["wait", "--api", url(server), "--user", "bob", "--subject", "code", "--timeout", "10"]) == 0
    sender.join()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("bob INBOX uid 1 ")
    assert out[1:] == ["Subject: Your code", "To: bob@example.test", "", "Hello Bob."]


def test_wait_exits_1_on_timeout_listing_what_came(server: ThreadedMailServer, capsys: pytest.CaptureFixture[str]) -> None:
    send(server.port("plain"), "Other")
    assert main(["wait", "--api", url(server), "--to", "bob@example.test", "--subject", "code", "--timeout", "0.2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mailmodes: waited 0.2 s for 1 message to bob matching subject='code', to='bob@example.test'")
    assert "INBOX/1 From: - To: bob@example.test Subject: Other" in err


def test_messages_prints_one_message(server: ThreadedMailServer, capsys: pytest.CaptureFixture[str]) -> None:
    send(server.port("plain"), "=?utf-8?q?red_=1B=5B31m?=")
    assert main(["messages", "--api", url(server), "--user", "bob", "--uid", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["Subject: red \\x1b[31m", "To: bob@example.test", "", "Hello Bob."]
    assert main(["messages", "--api", url(server), "--user", "bob", "--uid", "7"]) == 1
    assert "404 mailbox 'INBOX' has no message with UID 7" in capsys.readouterr().err


def test_sessions_filters_limit_listener_since(api_server: Callable[..., ThreadedMailServer],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    server = api_server(*LISTENERS, {"name": "other", "protocol": "smtp", "tls": "plaintext", "role": "mta"})
    for subject in ("a", "b", "c"):
        send(server.port("plain"), subject)
    send(server.port("other"), "d")
    records = server.journal.wait_for(4)
    assert main(["sessions", "--api", url(server), "--listener", "plain", "--limit", "2"]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("#")]
    assert [line.split()[0] for line in heads] == [f"#{records[1].id}", f"#{records[2].id}"]
    assert main(["sessions", "--api", url(server), "--since", str(records[3].started)]) == 0
    heads = [line for line in capsys.readouterr().out.splitlines() if line.startswith("#")]
    assert [line.split()[0] for line in heads] == [f"#{records[3].id}"]
    assert main(["sessions", "--api", url(server), "--since", "last tuesday"]) == 2
    assert "--since: 'last tuesday' is neither an ISO 8601 time" in capsys.readouterr().err


def test_sessions_follow_prints_each_session_as_it_ends(server: ThreadedMailServer) -> None:
    send(server.port("plain"), "before")
    server.journal.wait_for(1)
    process = subprocess.Popen([*MAILMODES, "sessions", "--api", url(server), "--follow"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("#1 ") and "-> plain" in first
        assert process.stdout.readline() == "    no verdicts\n"
        send(server.port("plain"), "after")
        assert process.stdout.readline().startswith("#2 ")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]


def test_api_defaults_from_the_config_and_port_offset(certs_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:  # a port free now, moved by --port-offset 1 below
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    config = tmp_path / "ci.toml"
    config.write_text(f'[certs]\ndir = "{certs_dir}"\n[http]\nport = {port - 1}\n'
                      '[[users]]\nname = "bob"\npassword = "pw"\naddresses = ["bob@example.test"]\n')
    with ThreadedMailServer(load_config(config).with_port_offset(1)) as running:
        assert running.http_port == port
        assert main(["messages", "--config", str(config), "--port-offset", "1", "--user", "bob"]) == 0
        assert capsys.readouterr().out == "bob: 0 messages\n"
        assert main(["wait", "--config", str(config), "--port-offset", "1", "--user", "bob", "--timeout", "0"]) == 1
        assert capsys.readouterr().err == "mailmodes: waited 0 s for 1 message to bob; 0 matched. bob has 0: none\n"
    config.write_text("")
    assert main(["sessions", "--config", str(config)]) == 2
    assert capsys.readouterr().err == f"mailmodes: {config}: has no [http] table: give the API with --api URL\n"


def test_no_broken_pipe_traceback_under_head(tmp_path: Path) -> None:
    journal = tmp_path / "sessions.jsonl"
    entry = {"id": 1, "started": "2026-01-01T00:00:00.000+00:00", "client": "127.0.0.1:1", "listener": "plain",
             "protocol": "smtp", "tls_mode": "plaintext", "verdicts": [],
             "transcript": [{"at": 0.0, "sender": "server", "tls": False, "text": "x" * 200}] * 20}
    journal.write_text((json.dumps(entry) + "\n") * 2000)
    result = subprocess.run(f"{' '.join(MAILMODES)} sessions --journal {journal} --transcript | head -1",
                            shell=True, capture_output=True, text=True, timeout=60)
    assert result.stdout.startswith("#1 ")
    assert result.stderr == ""


@pytest.fixture
def verbose_serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    config = tmp_path / "mailmodes.toml"
    config.write_text('[auth]\naccept_any = true\n\n'
                      '[[users]]\nname = "bob"\npassword = "bob-password"\naddresses = ["bob@example.test"]\n\n'
                      '[[listeners]]\nname = "plain"\nprotocol = "smtp"\nport = 0\ntls = "plaintext"\n')
    process = subprocess.Popen([*MAILMODES, "serve", "-v", "--config", str(config)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    port = 0
    for line in process.stdout:
        if line.startswith("listening plain"):
            port = int(line.split()[3].rpartition(":")[2])
        if line == "ready\n":
            break
    try:
        yield process, port
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
        process.stdout.close()
        process.stderr.close()  # type: ignore[union-attr]


def test_serve_v_prints_a_line_per_finished_session(verbose_serve: tuple[subprocess.Popen[str], int]) -> None:
    process, port = verbose_serve
    with smtplib.SMTP(HOST, port, timeout=10) as client:
        client.login("anyone", "any password")
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("session #1 ") and line.endswith(
        "-> plain (smtp, plaintext): no TLS user=anyone  verdicts: credentials-in-clear\n")


def test_accept_any_logs_in_anyone_on_every_protocol(api_server: Callable[..., ThreadedMailServer]) -> None:
    server = api_server(*LISTENERS, {"name": "imap", "protocol": "imap", "tls": "plaintext"},
                        {"name": "pop3", "protocol": "pop3", "tls": "plaintext"}, auth={"accept_any": True})
    with smtplib.SMTP(HOST, server.port("plain"), timeout=10) as client:
        client.login("app@company.example", "token-123")
        client.sendmail("app@company.example", ["bob@example.test", "x@company.example"], b"Subject: s\r\n\r\nx\r\n")
    with imaplib.IMAP4(HOST, server.port("imap"), timeout=10) as imap:
        assert imap.login("bob", "not bob's password")[0] == "OK"
        assert imap.select("INBOX") == ("OK", [b"1"])
    pop = poplib.POP3(HOST, server.port("pop3"), timeout=10)
    pop.user("someone-new")
    assert pop.pass_("whatever").startswith(b"+OK")
    pop.quit()
    # a login name never makes its domain local: mail there is still captured, not refused
    assert [captured.recipients for captured in server.store.captured] == [("x@company.example",)]


def test_without_accept_any_a_wrong_password_is_refused(server: ThreadedMailServer) -> None:
    with smtplib.SMTP(HOST, server.port("plain"), timeout=10) as client, pytest.raises(smtplib.SMTPAuthenticationError):
        client.login("bob", "wrong")
