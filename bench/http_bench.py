"""HTTP API benchmark: how long listing 1,000 recorded sessions takes (target: under 100 ms).

Starts `mailmodes serve` in a child process (its own interpreter, so the client does not share
its GIL) with one plaintext SMTP listener and the HTTP API on ephemeral loopback ports, makes N
real sessions with smtplib (login, one message, QUIT: about 20 transcript lines each), then times
GET /api/sessions over one keep-alive connection:

  - full:    every session with its transcript (the default shape);
  - summary: ?transcript=false (what the dashboard lists);
  - filter:  ?verdict=credentials-in-clear&limit=100.

The first request of each is reported separately ("cold": the server serialises each finished
session once and reuses it). Times are wall-clock from request sent to the last byte read.

    python bench/http_bench.py                 # 1,000 sessions, 30 rounds
    python bench/http_bench.py --sessions 200 --rounds 10
"""

from __future__ import annotations

import argparse
import http.client
import json
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
CONFIG = """
hostname = "mail.example.test"
[certs]
dir = "{certs}"
[http]
port = 0
[journal]
max_sessions = {sessions}
[[users]]
name = "alice"
password = "alice-password"
addresses = ["alice@example.test"]
[[users]]
name = "bob"
password = "bob-password"
addresses = ["bob@example.test"]
[[listeners]]
name = "plain"
protocol = "smtp"
port = 0
tls = "plaintext"
"""
MESSAGE = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: bench\r\n\r\n" + b"x" * 200 + b"\r\n"


def start_server(root: Path, sessions: int) -> tuple[subprocess.Popen[str], int, int]:
    config = root / "bench.toml"
    config.write_text(CONFIG.format(certs=root / "certs", sessions=sessions))
    process = subprocess.Popen([sys.executable, "-m", "mailmodes", "serve", "--config", str(config)],
                               stdout=subprocess.PIPE, text=True, cwd=root)
    assert process.stdout is not None
    smtp_port = http_port = 0
    for line in process.stdout:
        if line.startswith("listening plain"):
            smtp_port = int(line.split()[3].rpartition(":")[2])
        elif line.startswith("dashboard "):
            http_port = int(line.split()[1].rstrip("/").rpartition(":")[2])
        elif line.strip() == "ready":
            return process, smtp_port, http_port
    raise RuntimeError("the server did not start")


def make_sessions(port: int, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        with smtplib.SMTP(HOST, port, timeout=30) as client:
            client.login("alice", "alice-password")
            client.sendmail("alice@example.test", ["bob@example.test"], MESSAGE)
    return time.perf_counter() - started


def get(connection: http.client.HTTPConnection, path: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
    return elapsed, body


def wait_for_sessions(connection: http.client.HTTPConnection, count: int) -> None:
    """The last client's session ends a moment after smtplib returns: wait until it is listed
    (asking for that one only, so the first timed request still finds nothing serialised)."""
    deadline = time.monotonic() + 30
    while json.loads(get(connection, f"/api/sessions?open=false&after_id={count - 1}")[1])["count"] < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("sessions did not all finish")


def measure(connection: http.client.HTTPConnection, path: str, rounds: int, expected: int) -> dict[str, float]:
    cold, body = get(connection, path)
    if json.loads(body)["count"] != expected:
        raise RuntimeError(f"{path}: expected {expected} sessions")
    times = [get(connection, path)[0] for _ in range(rounds)]
    return {"cold_ms": cold * 1000, "median_ms": statistics.median(times) * 1000, "min_ms": min(times) * 1000,
            "max_ms": max(times) * 1000, "bytes": len(body)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        process, smtp_port, http_port = start_server(Path(directory), args.sessions)
        try:
            made = make_sessions(smtp_port, args.sessions)
            print(f"{args.sessions} SMTP sessions made in {made:.1f} s")
            connection = http.client.HTTPConnection(HOST, http_port, timeout=30)
            wait_for_sessions(connection, args.sessions)
            for label, path, expected in (
                ("full", "/api/sessions", args.sessions),
                ("summary", "/api/sessions?transcript=false", args.sessions),
                ("filter", "/api/sessions?verdict=credentials-in-clear&limit=100", min(100, args.sessions)),
            ):
                result = measure(connection, path, args.rounds, expected)
                print(f"GET {path:<55} cold {result['cold_ms']:7.1f} ms  median {result['median_ms']:6.1f} ms  "
                      f"min {result['min_ms']:6.1f}  max {result['max_ms']:6.1f}  {result['bytes'] / 1e6:.2f} MB")
            connection.close()
        finally:
            process.terminate()
            process.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
