"""Helpers for tests that drive real command-line clients."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
