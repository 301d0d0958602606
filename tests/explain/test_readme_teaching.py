"""The README's teaching section, followed start to finish: every shell command in it runs, in
order, against a server with the default config (its ports moved by a free offset), and each
command marked `# => verdicts: ...` produces exactly that client session with exactly those
verdicts."""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.config import parse_config
from support import bindable_port_offset, require_tool, verdict_codes

ROOT = Path(__file__).resolve().parents[2]
TITLE = "Teaching: implicit TLS vs STARTTLS vs plaintext, port by port"
VERDICTS = "# => verdicts:"


def teaching_steps() -> list[tuple[str, set[str] | None]]:
    """Each shell command of the section (continuation lines joined), with the verdicts it says it earns."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {TITLE}\n")
    section = text[start:text.index("\n## ", start + 1)]
    steps: list[tuple[str, set[str] | None]] = []
    for block in re.findall(r"```sh\n(.*?)\n```", section, flags=re.S):
        command = ""
        for line in block.splitlines():
            if command.endswith("\\"):
                command = command[:-1] + " " + line.strip()
                continue
            if command:
                steps.append((command, None))
                command = ""
            if line.startswith(VERDICTS):
                said = line[len(VERDICTS):].strip()
                steps[-1] = (steps[-1][0], set() if said == "none" else {v.strip() for v in said.split(",")})
            elif line.strip() and not line.startswith("#"):
                command = line.split("  #")[0].strip()
        if command:
            steps.append((command, None))
    return steps


def test_the_section_says_a_verdict_for_every_mail_command() -> None:
    steps = teaching_steps()
    mail = [(command, said) for command, said in steps if command.startswith("curl") and "/api/" not in command]
    assert len(mail) == 11 and all(said is not None for _, said in mail), [c for c, s in mail if s is None]
    assert any(said == {"credentials-in-clear", "mail-in-clear"} and "--ssl " in command for command, said in mail)


def test_following_the_teaching_section_start_to_finish(certs_dir: Path, tmp_path: Path) -> None:
    require_tool("curl")
    data: dict[str, Any] = tomllib.loads(resources.files("mailmodes").joinpath("default.toml").read_text())
    offset = bindable_port_offset([listener["port"] for listener in data["listeners"]] + [data["http"]["port"]],
                                  lambda: random.randrange(20000, 40000))
    data["certs"] = {"dir": str(certs_dir)}
    data["http"]["port"] += offset
    for listener in data["listeners"]:
        listener["port"] += offset
    (tmp_path / "certs").symlink_to(certs_dir)
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def moved(command: str) -> str:  # the README's --port-offset 10000 ports, at this test's offset
        command = command.replace("--port-offset 10000", f"--port-offset {offset}")
        return re.sub(r"(?<=127\.0\.0\.1:)1(\d{4})\b", lambda m: str(int(m.group(1)) + offset), command)

    with ThreadedMailServer(parse_config(data, source="default config")) as server:
        for command, said in teaching_steps():
            if command.startswith("mailmodes serve"):
                continue  # this test's server is that one
            before = {record.id for record in server.journal.sessions(include_open=True)}
            result = subprocess.run(["bash", "-c", moved(command)], cwd=tmp_path, env=environment, capture_output=True,
                                    text=True, timeout=90)
            if said is None:
                assert result.returncode == 0, (command, result.stderr)
                continue
            server.journal.settle(15)
            new = [record for record in server.journal.sessions() if record.id not in before and not record.probe]
            assert len(new) == 1, (command, new)
            assert verdict_codes(new[0]) == said, (command, new[0].verdicts, result.stderr[-2000:])


@pytest.mark.parametrize("command", [c for c, _ in teaching_steps() if c.startswith("mailmodes explain")])
def test_the_explain_commands_are_ones_the_command_line_takes(command: str) -> None:
    words = command.split()[1:]
    result = subprocess.run([sys.executable, "-m", "mailmodes", *words, "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
