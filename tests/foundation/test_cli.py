"""The CLI as a subprocess: it comes up, answers, stops cleanly, and fails with one clear line."""

from __future__ import annotations

import os
import random
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import bindable_port_offset, require_tool


def mailmodes(*args: str, cwd: Path, prefix: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "mailmodes", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


DEFAULT_PORTS = (25, 110, 143, 465, 587, 993, 995)


def free_port_offset() -> int:
    """An offset that puts the seven default ports below the ephemeral range, all bindable now."""
    # 17000-31000: clear of the known-bad plan (11000-16999) and of the ephemeral range.
    return bindable_port_offset(
        DEFAULT_PORTS, lambda: random.randrange(17000, 30000, 1000) + random.randrange(0, 900, 10)
    )


def wait_ready(process: subprocess.Popen[str]) -> list[str]:
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.strip() == "ready":
            return lines
    raise AssertionError(f"no 'ready' line; stderr: {process.stderr.read() if process.stderr else ''}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], list[str], int]]:
    offset = free_port_offset()
    process = mailmodes("serve", "--port-offset", str(offset), cwd=tmp_path)
    try:
        yield process, wait_ready(process), offset
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def test_default_config_with_port_offset_comes_up_and_answers(
        served: tuple[subprocess.Popen[str], list[str], int], tmp_path: Path) -> None:
    process, lines, offset = served
    text = "\n".join(lines)
    for name, port, mode in [("smtp", 25, "starttls-optional"), ("submissions", 465, "implicit"),
                             ("submission", 587, "starttls-required")]:
        assert f"127.0.0.1:{port + offset}" in text and name in text and mode in text
    assert f"CA certificate {tmp_path / 'certs' / 'ca.pem'}" in text
    assert (tmp_path / "certs" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "certs" / "server.key").stat().st_mode & 0o777 == 0o600
    context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.pem"))
    with smtplib.SMTP_SSL("127.0.0.1", 465 + offset, context=context, timeout=10) as client:
        client.login("alice", "alice-password")
        assert client.sendmail("alice@example.test", ["bob@example.test"], b"Subject: x\r\n\r\nhi\r\n") == {}
    with smtplib.SMTP("127.0.0.1", 587 + offset, timeout=10) as client:
        client.starttls(context=context)
        client.login("bob", "bob-password")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0


def test_sigint_stops_with_status_0(served: tuple[subprocess.Popen[str], list[str], int]) -> None:
    process, _, _ = served
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=10) == 0


def test_sigterm_with_sessions_open_stops_cleanly(served: tuple[subprocess.Popen[str], list[str], int]) -> None:
    process, _, offset = served
    sessions = [socket.create_connection(("127.0.0.1", port + offset), timeout=10) for port in DEFAULT_PORTS]
    try:
        for sock, port in zip(sessions, DEFAULT_PORTS):
            if port not in (465, 993, 995):  # implicit TLS ports wait for a handshake; these greet
                assert sock.recv(200)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        for sock in sessions:
            sock.close()
    _, stderr = process.communicate()
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr


def test_port_in_use_is_one_line_naming_the_port(
        served: tuple[subprocess.Popen[str], list[str], int], tmp_path: Path) -> None:
    _, _, offset = served
    second = mailmodes("serve", "--port-offset", str(offset), cwd=tmp_path)
    _, stderr = second.communicate(timeout=30)
    assert second.returncode == 1
    assert stderr.count("\n") == 1
    assert f"127.0.0.1:{25 + offset}" in stderr and "already in use" in stderr and "--port-offset" in stderr


def test_privileged_port_without_permission(tmp_path: Path) -> None:
    # Root binds low ports, so take the capability away for the child (setpriv is util-linux).
    drop = ("setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service",
            "--ambient-caps=-net_bind_service") if os.geteuid() == 0 else ()
    if drop:
        require_tool("setpriv")
    process = mailmodes("serve", cwd=tmp_path, prefix=drop)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1
    assert stderr.count("\n") == 1 and "127.0.0.1:25:" in stderr
    assert "permission denied" in stderr and "--port-offset 10000" in stderr


@pytest.mark.parametrize(("toml", "expected"), [
    (None, "config file not found"),
    ("hostname = 'x'\nbogus = 1\n", "bogus: unknown key"),
    ("[[listeners]]\nprotocol = 'smtp'\nport = 25\ntls = 'sometimes'\n",
     "listeners[0].tls: 'sometimes' is not one of: implicit, starttls-required, starttls-optional, plaintext"),
    ("[[listeners]]\nprotocol = 'smtp'\nport = 25\ntls = 'implicit'\n"
     "[[listeners]]\nprotocol = 'imap'\nport = 25\ntls = 'implicit'\n",
     "listeners[1].port: port 25 is already used by listener 'smtp-0'"),
    ("hostname = [\n", "not valid TOML"),
])
def test_bad_config_exits_2_with_one_line(tmp_path: Path, toml: str | None, expected: str) -> None:
    path = tmp_path / "bad.toml"
    if toml is not None:
        path.write_text(toml)
    process = mailmodes("serve", "--config", str(path), cwd=tmp_path)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert stdout == ""
    assert stderr.count("\n") == 1 and str(path) in stderr and expected in stderr
    assert not (tmp_path / "certs").exists()


def test_certs_command_prints_where_the_ca_is(tmp_path: Path) -> None:
    process = mailmodes("certs", cwd=tmp_path)
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert f"CA certificate {tmp_path / 'certs' / 'ca.pem'}" in stdout
    assert (tmp_path / "certs" / "server.pem").exists()
