"""The MAILMODES_* variables, as the Docker image uses them: serve, check and explain all read them."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from support import bindable_port_offset

CONFIG = """\
hostname = "mail.example.test"
host = "192.0.2.1"            # overridden by MAILMODES_HOST
[certs]
dir = "not-here"              # overridden by MAILMODES_CERTS_DIR
[[users]]
name = "alice"
password = "alice-password"
[[listeners]]
name = "submission"
protocol = "smtp"
port = 587
tls = "starttls-required"
[[listeners]]
name = "pop3s"
protocol = "pop3"
port = 995
tls = "implicit"
"""


def free_offset() -> int:
    """A port offset that puts 587 and 995 on ports nothing holds now."""
    return bindable_port_offset((587, 995), lambda: random.randrange(20000, 40000))


def mailmodes(*args: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailmodes", *args], check=False, capture_output=True, text=True,
                          timeout=60, cwd=cwd, env={**os.environ, **env})


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "mounted.toml"
    config.write_text(CONFIG)
    return {
        "MAILMODES_CONFIG": str(config),
        "MAILMODES_HOSTNAME": "mx.docker.test",
        "MAILMODES_HOST": "127.0.0.1",
        "MAILMODES_PORT_OFFSET": str(free_offset()),
        "MAILMODES_USERS": "carol:carol-pw,dave:dave-pw",
        "MAILMODES_CERTS_DIR": str(tmp_path / "volume"),
    }


@pytest.fixture
def running(environment: dict[str, str], tmp_path: Path) -> Iterator[list[str]]:
    """`mailmodes serve` configured only by the environment; yields the lines it printed up to ready."""
    process = subprocess.Popen([sys.executable, "-m", "mailmodes", "serve"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path, env={**os.environ, **environment})
    assert process.stdout is not None
    lines: list[str] = []
    try:
        while (text := process.stdout.readline()) and text != "ready\n":
            lines.append(text.rstrip("\n"))
        assert text == "ready\n", lines + [process.stderr.read() if process.stderr else ""]
        yield lines
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert out == "stopped\n"


def test_serve_check_and_explain_read_the_same_variables(
    environment: dict[str, str], running: list[str], tmp_path: Path
) -> None:
    offset = int(environment["MAILMODES_PORT_OFFSET"])
    volume = Path(environment["MAILMODES_CERTS_DIR"])
    assert running == [
        f"listening submission     smtp  127.0.0.1:{587 + offset:<6} starttls-required",
        f"listening pop3s          pop3  127.0.0.1:{995 + offset:<6} implicit",
        f"CA certificate {volume / 'ca.pem'}",
    ]
    health = mailmodes("check", env=environment, cwd=tmp_path)
    assert health.returncode == 0, health.stdout
    assert [row.split()[:3] for row in health.stdout.splitlines()] == [
        ["ok", "submission", "smtp"], ["ok", "pop3s", "pop3"]]
    assert "220 mx.docker.test ESMTP" in health.stdout

    table = mailmodes("explain", "--format", "json", env=environment, cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    rows = {row["listener"]: row for row in json.loads(table.stdout)["rows"]}
    assert [c["text"] for c in rows["submission"]["cells"]] == [
        "TLS error: wrong version number (the port speaks plaintext first)", "works (TLS 1.3)", "works (TLS 1.3)",
        "refused before login: server requires STARTTLS"]
    # The probe logs in as the first user of MAILMODES_USERS, under the MAILMODES_HOSTNAME greeting.
    assert rows["submission"]["cells"][1]["reason"] == (
        "greeting 220 mx.docker.test ESMTP mailmodes 0.1.0; STARTTLS: 220 2.0.0 Ready to start TLS; "
        "login: 235 2.7.0 Authentication successful")
    assert rows["pop3s"]["cells"][0]["reason"] == "greeting +OK mx.docker.test POP3 ready; login: +OK Logged in, 0 messages"
    assert rows["pop3s"]["port"] == 995 + offset


def test_command_line_options_win_over_the_environment(environment: dict[str, str], tmp_path: Path) -> None:
    # Nothing listens on 127.0.0.1 + offset 1 here; the point is which address check tries.
    result = mailmodes("check", "--port-offset", "1", "--host", "127.0.0.2", "--timeout", "1", env=environment,
                       cwd=tmp_path)
    assert result.returncode == 1
    assert [row.split()[3] for row in result.stdout.splitlines()] == ["127.0.0.2:588", "127.0.0.2:996"]


@pytest.mark.parametrize(("name", "value", "message"), [
    ("MAILMODES_PORT_OFFSET", "ten", "environment: MAILMODES_PORT_OFFSET: 'ten' is not a whole number"),
    ("MAILMODES_USERS", "carol", "environment: MAILMODES_USERS: 'carol' is not name:password"),
    ("MAILMODES_SCENARIOS", "imaps=cert-expired",
     ("environment: MAILMODES_SCENARIOS: imaps=cert-expired: want listener=scenario with a listener of the config "
      "(submission, pop3s)")),
])
def test_a_bad_variable_is_one_line_and_exit_2(environment: dict[str, str], tmp_path: Path, name: str, value: str,
                                               message: str) -> None:
    result = mailmodes("check", env={**environment, name: value}, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"mailmodes: {message}\n")


def test_a_bad_value_in_a_variable_is_checked_like_the_file(environment: dict[str, str], tmp_path: Path) -> None:
    result = mailmodes("certs", env={**environment, "MAILMODES_USERS": "carol:pw,carol:other"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (f"mailmodes: {environment['MAILMODES_CONFIG']} with MAILMODES_* variables: "
                             "users[1].name: duplicate user 'carol'\n")


def test_certs_go_to_the_volume_named_by_the_environment(environment: dict[str, str], tmp_path: Path) -> None:
    result = mailmodes("certs", env=environment, cwd=tmp_path)
    volume = Path(environment["MAILMODES_CERTS_DIR"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"CA certificate {volume / 'ca.pem'}",
        f"server certificate {volume / 'server.pem'} (key {volume / 'server.key'}) for mx.docker.test",
    ]


def test_the_store_path_variable_keeps_mail_in_the_volume(tmp_path: Path) -> None:
    from mailmodes.cli import _config_with_environment

    config = _config_with_environment(None, {"MAILMODES_STORE_PATH": str(tmp_path / "data")})
    assert config.store.path == tmp_path / "data"
    assert _config_with_environment(None, {"MAILMODES_HOSTNAME": "mx.docker.test"}).store.path is None
