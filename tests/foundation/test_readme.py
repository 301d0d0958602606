"""The README's first two commands are the ones a newcomer needs, and CI runs the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)[:2]


def test_the_readme_opens_with_one_serve_and_one_test_command_each_in_a_virtual_environment() -> None:
    serve, test = readme_commands()
    for command in (serve, test):
        assert "\n" not in command, command
        # Debian's python3 refuses a system-wide pip install (PEP 668).
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install "), command
    assert serve.endswith(".venv/bin/mailmodes serve --port-offset 10000")
    assert test.endswith(".venv/bin/python -m pytest")


def test_ci_runs_the_readme_test_command_word_for_word_and_last() -> None:
    _, test = readme_commands()
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[-1] == test


def test_ci_checks_the_clients_before_the_tests_start() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    assert "libnet-ssleay-perl" in script
    assert script.index("bash .ci/require-clients") < script.index(".venv/bin/python -m pytest")
