"""Helpers for tests that drive real command-line clients, and for sessions driven without sockets."""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from mailmodes.config import Config, Limits, Listener, parse_config, resolve_limits
from mailmodes.protocols.events import UNRECORDED, Connection, Notes
from mailmodes.scenarios.misbehaviour import Misbehaviour
from mailmodes.store import Store
from mailmodes.tls.policy import TlsMode

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CLIENT_TIMEOUT = 20
HOSTNAME = "mail.example.test"
USERS = [
    {"name": "alice", "password": "alice-password", "addresses": ["alice@example.test"]},
    {"name": "bob", "password": "bob-password", "addresses": ["bob@example.test"]},
]
MODES = ("implicit", "starttls-required", "starttls-optional", "plaintext")
# The IMAP extensions every authenticated-capable listener advertises, in order (PROTOCOL.md).
IMAP_EXTENSIONS = "IMAP4rev2 LITERAL+ SASL-IR IDLE UIDPLUS UNSELECT MOVE NAMESPACE ID ENABLE SPECIAL-USE ESEARCH SEARCHRES SORT SORT=DISPLAY ESORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES CONTEXT=SEARCH CONTEXT=SORT BINARY MULTIAPPEND CATENATE LIST-EXTENDED LIST-STATUS CONDSTORE QRESYNC UTF8=ACCEPT"


# What a client must be able to do beyond starting, as (probe command, text its output must hold,
# what is missing when it does not); .ci/require-clients checks the same before CI's tests start.
CAPABILITIES = {
    "swaks": (["swaks", "--support"], "=== TLS supported", "swaks has no TLS: install libnet-ssleay-perl"),
}


@functools.cache
def missing_capability(name: str) -> str | None:
    if name not in CAPABILITIES:
        return None
    probe, needed, missing = CAPABILITIES[name]
    result = subprocess.run(probe, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    return None if needed in result.stdout + result.stderr else missing


def require_tool(name: str) -> str:
    """The path of a command-line client that can do what the tests need of it; in CI a missing
    one (or one missing a capability, such as swaks without TLS) fails the test instead of skipping."""
    path = shutil.which(name)
    problem = f"{name} is not installed" if path is None else missing_capability(name)
    if problem is not None:
        if IN_CI:
            pytest.fail(f"{problem} (.ci/run installs it)")
        pytest.skip(problem)
    assert path is not None
    return path


def run_client(args: Sequence[str], stdin: bytes = b"", timeout: float = CLIENT_TIMEOUT,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a client to completion; its own --timeout options should end it well before ours."""
    require_tool(args[0])
    result = subprocess.run(list(args), input=stdin, capture_output=True, timeout=timeout, env=env)
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


def bindable_port_offset(ports: Sequence[int], pick: Callable[[], int], tries: int = 50) -> int:
    """An offset, drawn by `pick`, that puts every one of `ports` on a loopback port nothing holds
    now (a server started with it can bind them all, barring a race)."""
    for _ in range(tries):
        offset = pick()
        try:
            for port in ports:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return offset
    raise RuntimeError(f"no offset in {tries} tries puts all of {list(ports)} on free ports")


def curl_settings(scheme: str) -> dict[str, tuple[str, list[str]]]:
    """curl's four TLS settings (CLIENTS.md) for a protocol whose URL scheme is `scheme`:
    setting -> (URL scheme, options). Only "implicit" uses the TLS scheme (`scheme` + "s")."""
    return {
        "implicit": (scheme + "s", []),
        "required": (scheme, ["--ssl-reqd"]),
        "opportunistic": (scheme, ["--ssl"]),
        "none": (scheme, []),
    }


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


# --- sans-I/O sessions: a store and a Connection without a socket ----------------------------


# What make_store() makes: the sans-I/O session tests run once with the memory store and once
# with the durable one (the store_kind fixture in conftest.py sets this, and reopens each durable
# store after the test to check that its directory holds what the store held).
STORE_FACTORY: Callable[[], Store] = Store


def make_store() -> Store:
    """A store with the accounts of USERS (alice and bob, passwords "<name>-password")."""
    store = STORE_FACTORY()
    store.add_account("alice", "alice-password", ["alice@example.test"])
    store.add_account("bob", "bob-password", ["bob@example.test"])
    return store


def sans_io_connection(
    protocol: str,
    mode: TlsMode | str = TlsMode.PLAINTEXT,
    *,
    encrypted: bool | None = None,
    tls_available: bool = True,
    peer: tuple[str, int] = ("127.0.0.1", 40000),
    wake: Callable[[], None] = lambda: None,
    limits: dict[str, Any] | None = None,
    scenario: str | None = None,
    chaos: Any = None,
    notes: Notes = UNRECORDED,
) -> Connection:
    """What a session of `protocol` needs to be driven by feeding it bytes: a listener named after
    the protocol (port 0, TLS `mode`, `limits` over the protocol's defaults) and its Security,
    encrypted from the first byte only for implicit TLS unless `encrypted` says otherwise.
    The Security is `connection.security`: call its tls_started() when a StartTls is acted on.
    `notes` gets what the session says it read (a journal Recorder, to test what is recorded)."""
    tls = TlsMode(mode)
    misbehaviour = Misbehaviour(scenario, protocol, chaos)
    security = misbehaviour.tls(tls, tls_available=tls_available).security(
        encrypted=tls is TlsMode.IMPLICIT if encrypted is None else encrypted
    )
    listener = Listener(protocol, protocol, 0, tls, scenario=scenario, chaos=chaos,
                        limits=resolve_limits(protocol, Limits(**(limits or {}))))
    return Connection(listener, security, peer, wake, misbehaviour, notes=notes)


NODE_CLIENTS = Path(__file__).parent / "clients" / "node"  # nodemailer and imapflow, as .ci/run installs them


def node_client(client: str, port: int, **options: Any) -> tuple[str, str]:
    """Runs nodemailer or imapflow (tests/clients/node/client.js): (its log, its RESULT line)."""
    if not (NODE_CLIENTS / "node_modules" / client).is_dir():
        problem = f"{client} is not installed in {NODE_CLIENTS} (npm install there; .ci/run does)"
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    settings = {"client": client, "host": "127.0.0.1", "port": port, "user": "alice", "pass": "alice-password",
                **options}
    result = run_client(["node", str(NODE_CLIENTS / "client.js"), json.dumps(settings)], timeout=30)
    log = result.stdout + result.stderr
    return log, next(line for line in log.splitlines() if line.startswith("RESULT "))
