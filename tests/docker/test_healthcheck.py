"""`mailmodes check`, the image's HEALTHCHECK: healthy only when every listener greets."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.config import parse_config
from mailmodes.tls.certs import ensure_certificates

LISTENERS = [
    ("submissions", "smtp", "implicit"),
    ("submission", "smtp", "starttls-required"),
    ("imaps", "imap", "implicit"),
    ("imap", "imap", "starttls-required"),
    ("pop3s", "pop3", "implicit"),
    ("pop3", "pop3", "plaintext"),
]
VERSION = "0.1.0"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedMailServer]:
    certs = tmp_path_factory.mktemp("certs")
    config = parse_config({
        "hostname": "mail.example.test",
        "certs": {"dir": str(certs)},
        "users": [{"name": "alice", "password": "alice-password"}],
        "listeners": [{"name": n, "protocol": p, "tls": t, "port": 0} for n, p, t in LISTENERS],
    })
    with ThreadedMailServer(config) as running:
        yield running


def write_config(path: Path, server: ThreadedMailServer, extra: str = "", modes: dict[str, str] | None = None) -> Path:
    """The server's listeners with their real ports, as `mailmodes check --config` reads them."""
    modes = modes or {}
    text = f'hostname = "mail.example.test"\n[certs]\ndir = "{server.config.certs.dir}"\n'
    for name, protocol, tls in LISTENERS:
        text += (f'[[listeners]]\nname = "{name}"\nprotocol = "{protocol}"\nport = {server.port(name)}\n'
                 f'tls = "{modes.get(name, tls)}"\n')
    path.write_text(text + extra)
    return path


def check(config: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailmodes", "check", "--config", str(config), *options],
                          check=False, capture_output=True, text=True, timeout=60, cwd=config.parent)


def line(status: str, name: str, protocol: str, port: int, mode: str, detail: str) -> str:
    return f"{status} {name:<22} {protocol:<4} 127.0.0.1:{port:<5} {mode:<17} {detail}"


def test_healthy_when_every_listener_greets(server: ThreadedMailServer, tmp_path: Path) -> None:
    result = check(write_config(tmp_path / "up.toml", server))
    assert result.returncode == 0, result.stdout + result.stderr
    # The implicit IMAP greeting lists every capability (IMAP's own business): its start suffices.
    imaps = result.stdout.splitlines()[2]
    assert imaps.startswith(line("ok  ", "imaps", "imap", server.port("imaps"), "implicit",
                                 "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN "))
    assert imaps.endswith(" (TLSv1.3)")
    assert result.stdout.splitlines() == [
        line("ok  ", "submissions", "smtp", server.port("submissions"), "implicit",
             f"220 mail.example.test ESMTP mailmodes {VERSION} (TLSv1.3)"),
        line("ok  ", "submission", "smtp", server.port("submission"), "starttls-required",
             f"220 mail.example.test ESMTP mailmodes {VERSION}"),
        imaps,
        line("ok  ", "imap", "imap", server.port("imap"), "starttls-required",
             "* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mail.example.test ready"),
        line("ok  ", "pop3s", "pop3", server.port("pop3s"), "implicit", "+OK mail.example.test POP3 ready (TLSv1.3)"),
        line("ok  ", "pop3", "pop3", server.port("pop3"), "plaintext", "+OK mail.example.test POP3 ready"),
    ]
    assert result.stderr == ""


def test_unhealthy_when_a_listener_is_down(server: ThreadedMailServer, tmp_path: Path) -> None:
    with socket.socket() as reserved:  # bound but not listening: nothing answers there
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        extra = f'[[listeners]]\nname = "gone"\nprotocol = "smtp"\nport = {port}\ntls = "plaintext"\n'
        result = check(write_config(tmp_path / "down.toml", server, extra))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 7
    assert [row[:4] for row in lines] == ["ok  "] * 6 + ["DOWN"]
    assert lines[-1] == line("DOWN", "gone", "smtp", port, "plaintext", "cannot connect: Connection refused")


def test_implicit_tls_is_verified_with_the_ca(server: ThreadedMailServer, tmp_path: Path) -> None:
    stranger = ensure_certificates(tmp_path / "other", "mail.example.test").ca_file
    result = check(write_config(tmp_path / "up.toml", server), "--ca", str(stranger))
    assert result.returncode == 1
    down = [row.split()[1] for row in result.stdout.splitlines() if row.startswith("DOWN")]
    assert down == ["submissions", "imaps", "pop3s"]
    assert "TLS handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed" in result.stdout


def test_a_listener_that_speaks_the_wrong_way_is_down(server: ThreadedMailServer, tmp_path: Path) -> None:
    # The config says implicit where the port greets in plaintext, and plaintext where it wants TLS.
    config = write_config(tmp_path / "wrong.toml", server, modes={"submission": "implicit", "pop3s": "plaintext"})
    result = check(config, "--timeout", "1")
    assert result.returncode == 1
    lines = {row.split()[1]: row for row in result.stdout.splitlines()}
    assert lines["submission"].startswith("DOWN")
    assert "TLS handshake failed: [SSL: WRONG_VERSION_NUMBER] wrong version number" in lines["submission"]
    assert lines["pop3s"] == line("DOWN", "pop3s", "pop3", server.port("pop3s"), "plaintext", "no greeting within 1s")
    assert [name for name, row in lines.items() if row.startswith("ok")] == ["submissions", "imaps", "imap", "pop3"]


def test_no_listeners_is_unhealthy(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text('hostname = "mail.example.test"\n')
    result = check(empty)
    assert (result.returncode, result.stdout) == (1, "DOWN no listeners configured\n")


def test_a_health_check_earns_no_verdict(tmp_path: Path) -> None:
    """The HEALTHCHECK runs every 30 s: its greeting-and-goodbye sessions must not read as clients
    that skipped STARTTLS (no-upgrade) or fell back to plaintext (fallback)."""
    listeners = [("smtp", "starttls-required", ""), ("imap", "starttls-required", ""),
                 ("pop3", "starttls-optional", ""), ("pop3s", "implicit", ""),
                 ("imaps", "implicit", "cert-expired")]  # the check trusts any certificate there
    config = parse_config({
        "hostname": "mail.example.test",
        "certs": {"dir": str(tmp_path / "certs")},
        "users": [{"name": "alice", "password": "alice-password"}],
        "listeners": [{"name": name, "protocol": name.rstrip("s"), "tls": tls, "port": 0,
                       **({"scenario": scenario} if scenario else {})} for name, tls, scenario in listeners],
    })
    with ThreadedMailServer(config) as running:
        text = f'hostname = "mail.example.test"\n[certs]\ndir = "{config.certs.dir}"\n' + "".join(
            f'[[listeners]]\nname = "{name}"\nprotocol = "{name.rstrip("s")}"\nport = {running.port(name)}\n'
            f'tls = "{tls}"\n' + (f'scenario = "{scenario}"\n' if scenario else "")
            for name, tls, scenario in listeners)
        (tmp_path / "c.toml").write_text(text)
        assert check(tmp_path / "c.toml").returncode == 0
        sessions = running.journal.wait_for(len(listeners))
    assert len(sessions) == len(listeners)
    assert {session.listener: [v.code for v in session.verdicts] for session in sessions} == {
        name: [] for name, _, _ in listeners}


def test_health_checks_are_marked_and_never_push_a_client_session_out(tmp_path: Path) -> None:
    """Issue 14, defect 8: a journal of 3 and a client session, then 3 health checks of 2 listeners
    each: the client's session is still there, the checks' sessions are marked as a probe's."""
    config = parse_config({
        "hostname": "mail.example.test", "certs": {"dir": str(tmp_path / "certs")},
        "journal": {"max_sessions": 3},
        "listeners": [{"name": "smtp", "protocol": "smtp", "tls": "starttls-optional", "port": 0},
                      {"name": "imaps", "protocol": "imap", "tls": "implicit", "port": 0}],
    })
    with ThreadedMailServer(config) as running:
        with socket.create_connection(("127.0.0.1", running.port("smtp")), timeout=10) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(b"EHLO client.example\r\nAUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk\r\nQUIT\r\n")
            reader.read()
        [client] = running.journal.wait_for(1)
        text = f'hostname = "mail.example.test"\n[certs]\ndir = "{config.certs.dir}"\n' + "".join(
            f'[[listeners]]\nname = "{name}"\nprotocol = "{protocol}"\nport = {running.port(name)}\ntls = "{tls}"\n'
            for name, protocol, tls in (("smtp", "smtp", "starttls-optional"), ("imaps", "imap", "implicit")))
        (tmp_path / "c.toml").write_text(text)
        for _ in range(3):
            assert check(tmp_path / "c.toml").returncode == 0
        sessions = running.journal.wait_for(7)
    assert client in sessions and not client.probe and "credentials-in-clear" in [v.code for v in client.verdicts]
    probes = [s for s in sessions if s is not client]
    assert len(probes) == 6 and all(s.probe for s in probes)
    assert {s.sni for s in probes if s.listener == "imaps"} == {"probe.mailmodes.invalid"}
    assert running.journal.sessions(verdict="credentials-in-clear") == [client]


def test_long_listener_names_keep_the_columns_aligned() -> None:
    from mailmodes.probe.check import ListenerHealth, report

    results = [ListenerHealth("submission", "smtp", "starttls-required", "127.0.0.1", 587, True, "220 ready"),
               ListenerHealth("imap-starttls-required-scenario-x", "imap", "implicit", "127.0.0.1", 993, True, "* OK")]
    lines, status = report(results)
    assert status == 0
    assert len({line.index(" smtp ") if " smtp " in line else line.index(" imap ") for line in lines}) == 1, lines
