"""The Dockerfile and compose.yaml agree with the default config (the podman build itself is
`.ci/run`'s docker-smoke step: tests/docker/smoke_check.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mailmodes.cli import default_config

ROOT = Path(__file__).resolve().parents[2]


def instructions(name: str) -> list[str]:
    """The arguments of every `NAME` instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    return [line.split(None, 1)[1].strip() for line in text.splitlines() if line.split(None, 1)[:1] == [name]]


def standard_ports() -> set[int]:
    config = default_config()
    http = {config.http.port} if config.http is not None else set()
    return {listener.port for listener in config.listeners} | http


def test_pinned_python_minor_version() -> None:
    assert instructions("FROM") == ["python:3.11-slim"]


def test_exposes_every_port_of_the_default_config_and_http() -> None:
    exposed = {int(port) for line in instructions("EXPOSE") for port in line.split()}
    assert exposed == standard_ports() == {25, 465, 587, 143, 993, 110, 995, 8025}


def test_runs_the_readiness_check_as_a_non_root_user() -> None:
    assert instructions("USER") == ["mailmodes"]
    assert instructions("HEALTHCHECK")[0].endswith('CMD ["mailmodes", "check"]')
    assert json.loads(instructions("ENTRYPOINT")[0]) == ["mailmodes"]
    assert json.loads(instructions("CMD")[0]) == ["serve"]
    assert instructions("VOLUME") == ['["/certs"]', '["/data"]']
    env = instructions("ENV")[0]
    assert "MAILMODES_HOST=0.0.0.0" in env and "MAILMODES_CERTS_DIR=/certs" in env


def test_compose_publishes_every_standard_port_at_plus_10000() -> None:
    published = re.findall(r'"127\.0\.0\.1:(\d+):(\d+)"', (ROOT / "compose.yaml").read_text())
    assert {int(inner) for _, inner in published} == standard_ports()
    assert all(int(outer) == int(inner) + 10000 for outer, inner in published)
