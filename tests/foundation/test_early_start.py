"""serve's early start (early.py, issue 22): the ports are bound and plain-first SMTP clients greeted
before the server exists; once it starts it takes those connections over.

A client greeted early must be unable to tell: the same greeting bytes, the same replies to what
it sent before the server was there, and the same journal record and stored mail as a client the
server greeted itself. Listeners whose greeting is not the known-good one are not greeted early,
connections beyond the listener's limits wait for the server (which refuses them as ever), and
the other ports accept connections at once and are served once the server runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mailmodes import early
from mailmodes.app import ThreadedMailServer
from mailmodes.config import Config
from tests.smtp.test_express_lane import BODY, MAIL, RCPT, empty_inbox, read_replies, summary
from support import HOSTNAME, make_config, run_client

ROOT = Path(__file__).resolve().parents[2]
SESSION = b"EHLO early.test\r\n" + MAIL + RCPT + b"DATA\r\n" + BODY + b"QUIT\r\n"  # pipelined, one write
LISTENERS = (
    {"name": "plain", "protocol": "smtp", "tls": "plaintext", "role": "mta"},
    {"name": "starttls", "protocol": "smtp", "tls": "starttls-required", "role": "mta"},
    {"name": "implicit", "protocol": "smtp", "tls": "implicit", "role": "mta"},
    {"name": "rejecting", "protocol": "smtp", "tls": "plaintext", "role": "mta", "scenario": "greeting-reject"},
    {"name": "imap", "protocol": "imap", "tls": "plaintext"},
    {"name": "one-only", "protocol": "smtp", "tls": "plaintext", "role": "mta", "limits": {"max_connections": 1}},
)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def until_closed(sock: socket.socket) -> bytes:
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def begin(certs_dir: Path, *, greet: bool = True) -> tuple[Config, early.EarlyStart]:
    config = make_config(certs_dir, LISTENERS)
    started = early.begin(config, greet=greet)
    assert started is not None
    return config, started


def test_a_client_greeted_early_cannot_tell(certs_dir: Path) -> None:
    config, started = begin(certs_dir)
    server = ThreadedMailServer(config)
    try:
        before = time.time()
        greeted = connect(started.port("plain"))
        greeting = read_replies(greeted, 1)  # no server yet: early.py's thread sent it
        greeted_at = time.time()
        greeted.sendall(SESSION)  # waits in the socket for the server
        waiting_imap = connect(started.port("imap"))  # accepted by the kernel, answered later
        server.start(started)
        early_bytes = greeting + until_closed(greeted)
        with connect(server.port("plain")) as later:  # the same listener, now greeted by the server
            later_bytes = read_replies(later, 1)
            later.sendall(SESSION)
            later_bytes += until_closed(later)
        assert early_bytes == later_bytes  # byte for byte
        assert early_bytes.startswith(f"220 {HOSTNAME} ESMTP mailmodes ".encode())
        assert early_bytes.endswith(b"221 2.0.0 Bye\r\n") and b"\r\n250 2.0.0 OK" in early_bytes
        first, second = server.journal.wait_for(2, listener="plain")
        assert summary(first) == summary(second)  # transcript, counters, envelopes, verdicts
        assert first.lines[0] == (0.0, "server", False, early_bytes.split(b"\r\n")[0].decode())  # sent at the accept
        assert before <= first.started <= greeted_at  # the record begins at the accept
        assert server.call(lambda: empty_inbox(server)) == [b"Subject: hi\r\n\r\n.dot-stuffed\r\nHello.\r\n"] * 2
        assert waiting_imap.recv(100).startswith(b"* OK")
        waiting_imap.close()
    finally:
        greeted.close()
        server.stop()


def test_only_known_good_plain_first_smtp_listeners_greet_early(certs_dir: Path) -> None:
    config, started = begin(certs_dir)
    assert set(started.greetings) == {"plain", "starttls", "one-only"}
    server = ThreadedMailServer(config)
    socks = {name: connect(started.port(name)) for name in ("starttls", "rejecting", "implicit")}
    try:
        assert read_replies(socks["starttls"], 1).startswith(b"220 ")  # STARTTLS begins in the clear
        server.start(started)
        assert socks["rejecting"].recv(100).startswith(b"554")  # the scenario's greeting, not an early 220
        context = ssl.create_default_context(cafile=str(server.ca_file))
        with context.wrap_socket(socks.pop("implicit"), server_hostname="localhost") as tls:
            assert tls.recv(100).startswith(b"220 ")  # implicit TLS: the server's handshake, then its greeting
    finally:
        for sock in socks.values():
            sock.close()
        server.stop()


def test_no_more_are_greeted_early_than_the_server_keeps(certs_dir: Path) -> None:
    config, started = begin(certs_dir, greet=False)
    server = ThreadedMailServer(config)
    first, second = connect(started.port("one-only")), connect(started.port("one-only"))
    started.start_greeting()  # both are waiting to be accepted: one may be greeted
    try:
        assert read_replies(first, 1).startswith(b"220 ")
        server.start(started)
        assert second.recv(100).startswith(b"421 ")  # left for the server: too many connections, as ever
        first.sendall(b"NOOP\r\n")
        assert read_replies(first, 1) == b"250 2.0.0 OK\r\n"  # the one greeted early is served
    finally:
        first.close()
        second.close()
        server.stop()


def test_the_early_start_stays_out_where_the_start_can_fail(certs_dir: Path, tmp_path: Path) -> None:
    durable = make_config(certs_dir, LISTENERS[:1], store={"path": str(tmp_path / "store")})
    assert early.begin(durable) is None  # the store is read back at start, which can fail
    audit = make_config(certs_dir, ({"name": "audit", "protocol": "smtp", "tls": "implicit", "audit": True},))
    assert early.begin(audit) is None
    with socket.create_server(("127.0.0.1", 0)) as taken:
        busy = make_config(certs_dir, ({**LISTENERS[0], "port": taken.getsockname()[1]}, LISTENERS[4]))
        assert early.begin(busy) is None  # the server's own start says why



def test_closing_an_early_start_frees_its_ports(certs_dir: Path) -> None:
    """What MailServer.start does with it when the start fails."""
    _, started = begin(certs_dir)
    port = started.port("imap")
    started.close()
    with pytest.raises(ConnectionRefusedError):
        connect(port)


def serve(config_text: str, tmp_path: Path) -> subprocess.Popen[str]:
    path = tmp_path / "serve.toml"
    path.write_text(config_text)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
    return subprocess.Popen([sys.executable, "-m", "mailmodes", "serve", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def config_text(certs_dir: Path) -> str:
    return (f'hostname = "{HOSTNAME}"\nhost = "127.0.0.1"\n[certs]\ndir = "{certs_dir}"\n'
            '[[users]]\nname = "alice"\npassword = "pw"\naddresses = ["alice@example.test"]\n'
            '[[listeners]]\nname = "plain"\nprotocol = "smtp"\nport = 0\ntls = "plaintext"\nrole = "mta"\n'
            '[[listeners]]\nname = "imap"\nprotocol = "imap"\nport = 0\ntls = "plaintext"\n'
            '[http]\nhost = "127.0.0.1"\nport = 0\n')


def ready_ports(process: subprocess.Popen[str]) -> dict[str, int]:
    assert process.stdout is not None
    ports: dict[str, int] = {}
    for line in process.stdout:
        if match := re.match(r"listening (\S+) .* 127\.0\.0\.1:(\d+)", line):
            ports[match.group(1)] = int(match.group(2))
        if match := re.match(r"dashboard http://127\.0\.0\.1:(\d+)/", line):
            ports["http"] = int(match.group(1))
        if line.strip() == "ready":
            return ports
    raise AssertionError(f"no ready line: {process.communicate()}")


def test_serve_answers_a_client_that_came_at_ready(certs_dir: Path, tmp_path: Path) -> None:
    """`ready` comes before the server is imported: a client at that moment is served in full."""
    process = serve(config_text(certs_dir), tmp_path)
    try:
        ports = ready_ports(process)
        with connect(ports["plain"]) as smtp, connect(ports["imap"]) as imap:
            assert read_replies(smtp, 1).startswith(f"220 {HOSTNAME} ESMTP".encode())
            smtp.sendall(SESSION)
            assert until_closed(smtp).endswith(b"221 2.0.0 Bye\r\n")
            assert imap.recv(100).startswith(b"* OK")
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/api/ready", timeout=10) as answer:
            assert json.load(answer)["ready"] is True  # the HTTP API on the socket bound early
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and out.strip().endswith("stopped"), err


def test_serve_stops_cleanly_when_told_to_at_ready(certs_dir: Path, tmp_path: Path) -> None:
    """SIGTERM just after `ready`, while the server is still being imported: a clean stop, not a kill."""
    process = serve(config_text(certs_dir), tmp_path)
    ready_ports(process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.strip().endswith("stopped")


def test_msmtp_at_ready_delivers_over_starttls(certs_dir: Path, tmp_path: Path, ca_file: Path) -> None:
    """A real client started the moment `ready` is printed (msmtp, C, quick to start: it comes
    while the server is still being imported): one greeting in its own debug output, STARTTLS,
    login and delivery as on a server that was up all along."""
    submission = ('[[listeners]]\nname = "submission"\nprotocol = "smtp"\nport = 0\ntls = "starttls-required"\n'
                  'role = "submission"\n')
    process = serve(config_text(certs_dir) + submission, tmp_path)
    try:
        ports = ready_ports(process)
        result = run_client(["msmtp", "-C", "/dev/null", "--debug", "--host=127.0.0.1",
                             f"--port={ports['submission']}", "--tls=on", "--tls-starttls=on",
                             f"--tls-trust-file={ca_file}", "--auth=on", "--user=alice",
                             "--passwordeval=echo pw", "--from=alice@example.test", "--timeout=10",
                             "alice@example.test"], stdin=b"Subject: at ready\r\n\r\nHello.\r\n")
        assert result.returncode == 0, result.stdout + result.stderr
        greetings = [line for line in result.stdout.splitlines() if line.startswith("<-- 220 ")]
        assert greetings[0] == f"<-- 220 {HOSTNAME} {early.SMTP_IDENT}"
        assert len([g for g in greetings if "ESMTP" in g]) == 1  # greeted once (the other 220 is STARTTLS's)
        api = f"http://127.0.0.1:{ports['http']}/api"
        with urllib.request.urlopen(f"{api}/messages/alice/INBOX", timeout=10) as answer:
            assert "at ready" in answer.read().decode()
        with urllib.request.urlopen(f"{api}/sessions?listener=submission", timeout=10) as answer:
            (session,) = json.load(answer)["sessions"]
        assert session["tls_version"] and session["starttls"] is True
        assert session["verdicts"] == []  # nothing wrong with this client
        greeting, ehlo = session["transcript"][:2]
        assert (greeting["at"], greeting["sender"], greeting["text"]) == (0.0, "server", greetings[0][4:])
        assert ehlo["text"] == "EHLO localhost" and ehlo["tls"] is False
        assert session["logins"] == [{"command": "AUTH PLAIN", "user": "alice", "tls": True, "accepted": True}]
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
