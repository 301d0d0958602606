"""Dovecot's imaptest compliance suite (its 71 scripted RFC tests) against a real plaintext
listener. imaptest is built from ../shared/tools/imaptest, which CI has beside the repository;
its toolchain (dovecot-dev, dovecot-core, autotools, a C compiler) comes from .ci/run. In CI a
missing piece fails this test, elsewhere it skips."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from support import IN_CI

TOOLS = Path(__file__).resolve().parents[2].parent / "shared" / "tools" / "imaptest"
PREFIX = Path("/var/tmp/imaptest")
# What imaptest's configure and link need besides the sources beside `build`.
TOOLCHAIN = {
    "/usr/include/dovecot/imap-parser.h": "dovecot-dev",
    "/usr/lib/dovecot/libdovecot.so": "dovecot-core",
}
COMMANDS = {"autoreconf": "autoconf", "automake": "automake", "libtoolize": "libtool", "pkg-config": "pkg-config",
            "make": "build-essential", "cc": "build-essential"}
# The number of tests passed today: raise it as extensions land, never lower it.
AT_LEAST_PASSED = 67


def missing_toolchain() -> str | None:
    if not (TOOLS / "build").is_file():
        return f"imaptest sources not found at {TOOLS}"
    if (PREFIX / "bin" / "imaptest").is_file():
        return None  # already built: the build step does nothing
    for path, package in TOOLCHAIN.items():
        if not Path(path).exists():
            return f"{path} is missing (Debian package {package})"
    for command, package in COMMANDS.items():
        if shutil.which(command) is None:
            return f"{command} is not installed (Debian package {package})"
    return None


def test_imaptest_compliance_suite_passes(serve: Callable[..., ThreadedMailServer], tmp_path: Path) -> None:
    problem = missing_toolchain()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"imaptest cannot be built: {problem} (.ci/run installs it)")
        pytest.skip(f"imaptest cannot be built: {problem}")
    built = subprocess.run([str(TOOLS / "build"), str(PREFIX)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr

    server = serve({"name": "imap", "protocol": "imap", "tls": "plaintext"})
    result = subprocess.run(
        [str(TOOLS / "compliance"), "127.0.0.1", str(server.port("imap")), "alice", "alice-password"],
        capture_output=True, text=True, timeout=100,
        env={**os.environ, "IMAPTEST_HOME": str(PREFIX), "LOGDIR": str(tmp_path), "TEST_TIMEOUT": "20"},
    )
    totals = re.search(r"^(\d+) passed, (\d+) failed$", result.stdout, re.MULTILINE)
    assert totals is not None, result.stdout + result.stderr
    failed = [line for line in result.stdout.splitlines() if " FAIL " in line]
    assert int(totals[2]) == 0, "\n".join(failed)
    assert int(totals[1]) >= AT_LEAST_PASSED, result.stdout
