"""Helpers for tests that drive real command-line clients."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from mailmodes.config import Config, parse_config

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CLIENT_TIMEOUT = 20
HOSTNAME = "mail.example.test"
USERS = [
    {"name": "alice", "password": "alice-password", "addresses": ["alice@example.test"]},
    {"name": "bob", "password": "bob-password", "addresses": ["bob@example.test"]},
]
MODES = ("implicit", "starttls-required", "starttls-optional", "plaintext")


def require_tool(name: str) -> str:
    """The path of a command-line client; in CI a missing one fails the test instead of skipping."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed (.ci/run installs it)")
        pytest.skip(f"{name} is not installed")
    return path


def run_client(args: Sequence[str], stdin: bytes = b"", timeout: float = CLIENT_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a client to completion; its own --timeout options should end it well before ours."""
    require_tool(args[0])
    result = subprocess.run(list(args), input=stdin, capture_output=True, timeout=timeout)
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
    )


def make_config(certs_dir: Path, listeners: tuple[dict[str, Any], ...], **top: Any) -> Config:
    data: dict[str, Any] = {
        "hostname": HOSTNAME,
        "certs": {"dir": str(certs_dir)},
        "users": USERS,
        "listeners": [{"port": 0, **listener} for listener in listeners],
    }
    data.update(top)
    return parse_config(data, source="test config")


def smtp_after_ehlo(port: int, host: str = "127.0.0.1") -> tuple[socket.socket, BinaryIO]:
    """A raw SMTP connection that has read the greeting and the whole EHLO reply."""
    sock = socket.create_connection((host, port), timeout=10)
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(b"EHLO probe\r\n")
    while not reader.readline().startswith(b"250 "):
        pass
    return sock, reader


def one_session(server: Any) -> Any:
    """The only finished session of a server's journal (waits for it to finish)."""
    sessions = server.journal.wait_for(1)
    assert len(sessions) == 1, sessions
    return sessions[0]


def verdict_codes(record: Any) -> set[str]:
    return {verdict.code for verdict in record.verdicts}
