"""Every example of the README's "CI: wait, seed, control" section runs: the shell block against a
server with the default config's listeners, the pytest examples in a client project (pytester),
on the plugin's own server and in noproc mode with the ini shown there."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.config import parse_config
from mailmodes.pytest_plugin import default_listeners
from support import require_tool

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:18025"


def section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)\n```", section("CI: wait, seed, control"), flags=re.S)


def test_the_section_has_the_examples_this_test_runs() -> None:
    assert len(blocks("sh")) == 1 and len(blocks("python")) == 1 and len(blocks("toml")) == 1
    assert f'mailmodes_url = "{README_URL}"' in blocks("toml")[0]


def test_the_shell_example(certs_dir: Path, tmp_path: Path) -> None:
    require_tool("curl")
    data: dict[str, Any] = tomllib.loads(resources.files("mailmodes").joinpath("default.toml").read_text())
    data["certs"] = {"dir": str(certs_dir)}
    data["http"] = {"port": 0}
    data["listeners"] = [{**listener, "port": 0} for listener in data["listeners"]]
    with ThreadedMailServer(parse_config(data, source="default config")) as server:
        url = f"http://127.0.0.1:{server.http_port}"
        script = blocks("sh")[0].replace(README_URL, url)
        environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=environment, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert '"uid": 1, "flags": ["\\\\Seen"]' in out
        assert "\nSubject: Welcome back\n\nHi Bob.\n" in out
        assert '"count": 1' in out and '"timed_out": false' in out
        assert '"scenario": "chaos"' in out
        reset = json.loads(out[out.rindex('{"sessions"'):])  # curl adds no newline after the JSON
        assert reset == {"sessions": 0, "messages": 1, "captured": 0, "listeners": ["smtp"], "seeded": 0,
                         "tokens": 0}


def test_the_pytest_examples_on_the_plugins_server(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_readme=blocks("python")[0])
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_the_pytest_examples_in_noproc_mode(pytester: pytest.Pytester,
                                            serve: Callable[..., ThreadedMailServer]) -> None:
    running = serve(*default_listeners(), http={"port": 0})
    pytester.makepyfile(test_readme=blocks("python")[0])
    ini = blocks("toml")[0].replace(README_URL, f"http://127.0.0.1:{running.http_port}")
    pytester.makefile(".toml", pyproject=ini)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    subjects = running.call(lambda: [m.data.split(b"\r\n")[1] for m in running.store.accounts["bob"].inbox.messages])
    assert subjects == [b"Subject: Confirm"]  # sent to the test's own address, on the running server
