"""The README's teaching section, followed start to finish: every shell command in it runs, in
order, against a server with the default config (its ports moved by a free offset), and each
command marked `# => verdicts: ...` produces exactly that client session with exactly those
verdicts, and the report-card line (`# => report card: ...`) the dashboard shows for it."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tomllib
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.config import parse_config
from mailmodes.record.expectations import evaluate, scenario_key
from mailmodes.record.journal import SessionRecord
from support import bindable_port_offset, require_tool, verdict_codes

ROOT = Path(__file__).resolve().parents[2]
TITLE = "Teaching: implicit TLS vs STARTTLS vs plaintext, port by port"
VERDICTS = "# => verdicts:"
CARD = "# => report card:"


class Step(NamedTuple):
    command: str
    verdicts: set[str] | None = None  # None: the command is no mail session of its own
    card: str | None = None


def teaching_steps() -> list[Step]:
    """Each shell command of the section (continuation lines joined), with the verdicts and the
    report-card line it says it earns."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {TITLE}\n")
    section = text[start:text.index("\n## ", start + 1)]
    steps: list[Step] = []
    for block in re.findall(r"```sh\n(.*?)\n```", section, flags=re.S):
        command = ""
        for line in block.splitlines():
            if command.endswith("\\"):
                command = command[:-1] + " " + line.strip()
                continue
            if command:
                steps.append(Step(command))
                command = ""
            if line.startswith(VERDICTS):
                said = line[len(VERDICTS):].strip()
                steps[-1] = steps[-1]._replace(verdicts=set() if said == "none" else {v.strip() for v in said.split(",")})
            elif line.startswith(CARD):
                steps[-1] = steps[-1]._replace(card=line[len(CARD):].strip())
            elif line.strip() and not line.startswith("#"):
                command = line.split("  #")[0].strip()
        if command:
            steps.append(Step(command))
    return steps


def card_line(record: SessionRecord) -> str:
    """The session's row as the report card prints it: protocol, what it is judged by, outcome, reason."""
    judgement = evaluate(record)
    return f"{record.protocol} {scenario_key(record)} {judgement.outcome.upper()}: {judgement.reason}"


def test_the_section_says_a_verdict_and_a_report_card_line_for_every_mail_command() -> None:
    mail = [step for step in teaching_steps() if step.command.startswith("curl") and "/api/" not in step.command]
    assert len(mail) == 11
    assert all(step.verdicts is not None and step.card for step in mail), [s.command for s in mail if not s.card]
    assert any(step.verdicts == {"credentials-in-clear", "mail-in-clear"} and "--ssl " in step.command
               for step in mail)
    assert any(step.card and " FAILED: " in step.card for step in mail)


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

    wrong_cards: list[tuple[str, str | None, str]] = []
    with ThreadedMailServer(parse_config(data, source="default config")) as server:
        for step in teaching_steps():
            if step.command.startswith("mailmodes serve"):
                continue  # this test's server is that one
            before = {record.id for record in server.journal.sessions(include_open=True)}
            result = subprocess.run(["bash", "-c", moved(step.command)], cwd=tmp_path, env=environment,
                                    capture_output=True, text=True, timeout=90)
            if step.verdicts is None:
                assert result.returncode == 0, (step.command, result.stderr)
                continue
            server.journal.settle(15)
            new = [record for record in server.journal.sessions() if record.id not in before and not record.probe]
            assert len(new) == 1, (step.command, new)
            assert verdict_codes(new[0]) == step.verdicts, (step.command, new[0].verdicts, result.stderr[-2000:])
            if card_line(new[0]) != step.card:
                wrong_cards.append((step.command, step.card, card_line(new[0])))
            # what the dashboard shows is the API's report card: the same row
            with urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/api/report?client={new[0].client}",
                                        timeout=10) as response:
                (row,) = json.load(response)["rows"]
            assert f"{row['protocol']} {row['scenario']} {row['outcome'].upper()}: {row['reason']}" == card_line(new[0])
    # every step is run before failing, so that a changed reason shows each line to put in the README
    assert not wrong_cards, "\n".join(f"{command}\n  README: {said}\n  actual: {CARD} {actual}"
                                       for command, said, actual in wrong_cards)


@pytest.mark.parametrize("command", [s.command for s in teaching_steps() if s.command.startswith("mailmodes explain")])
def test_the_explain_commands_are_ones_the_command_line_takes(command: str) -> None:
    words = command.split()[1:]
    result = subprocess.run([sys.executable, "-m", "mailmodes", *words, "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
