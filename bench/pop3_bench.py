"""POP3 benchmark: mailmodes against Debian's Dovecot, in one run, on loopback.

Measures, for each server:
  - RETR: one session retrieves all N messages (default 1,000 x 10 KB), one command at a time,
    each reply read to its terminating ".\\r\\n";
  - logins/s: connect, greeting, USER, PASS, STAT, QUIT, until the server closes; sequential.

Both servers get the same messages; the client is the same minimal raw-socket POP3 client, so
the numbers compare servers rather than client libraries. mailmodes runs in a child process (its
own interpreter, so the client does not share its GIL); Dovecot runs from /usr/sbin/dovecot with
a throwaway config (bench/dovecot.py).

    python bench/pop3_bench.py                    # plaintext POP3
    python bench/pop3_bench.py --tls              # implicit TLS (pop3s) on both
    python bench/pop3_bench.py --messages 200 --logins 100 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RATIO_NOTE,
    USERS,
    RawClient,
    comparison_row,
    dovecot_bench_main,
    met,
    print_table_head,
    proc_stat,
    run_against_dovecot,
)

TIMEOUT = 30.0


# --- a minimal POP3 client --------------------------------------------------------------------


class RawPop3(RawClient):
    """Just enough POP3 to time a server: commands, single-line and multi-line replies."""

    timeout = TIMEOUT

    def ok(self, command: bytes) -> bytes:
        self.sock.sendall(command + b"\r\n")
        line = self.line()
        if not line.startswith(b"+OK"):
            raise RuntimeError(f"{command!r} -> {line!r}")
        return line

    def multiline(self, command: bytes) -> int:
        """Send a command with a multi-line reply; return the reply's size in bytes."""
        self.sock.sendall(command + b"\r\n")
        start = 0
        while (end := self.buffer.find(b"\r\n.\r\n", start)) < 0:
            start = max(0, len(self.buffer) - 4)
            self._fill()
        if not self.buffer.startswith(b"+OK"):
            raise RuntimeError(f"{command!r} -> {bytes(self.buffer[:80])!r}")
        del self.buffer[: end + 5]
        return end + 5


def login(client: RawPop3, user: str) -> None:
    client.line()  # greeting
    client.ok(b"USER " + user.encode())
    client.ok(b"PASS " + USERS[user].encode())


# --- the measurements -------------------------------------------------------------------------


@dataclass
class Result:
    cold_retr_seconds: float  # the first pass: caches (ours, Dovecot's index) being filled
    retr_seconds: float
    retr_bytes: int
    retr_cpu: float  # server CPU seconds for the whole RETR pass (best round)
    login_seconds: float
    logins: int
    messages: int

    @property
    def retr_per_second(self) -> float:
        return self.messages / self.retr_seconds

    @property
    def logins_per_second(self) -> float:
        return self.logins / self.login_seconds


def process_tree_cpu(root_pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of `root_pid` and all its descendants, by pid (Linux /proc).

    Wall time on a shared 2-core machine moves with whatever else runs; CPU time spent by the
    server's processes is what the server itself costs. Dovecot's work is spread over its master,
    login, auth and per-session pop3 processes, hence the whole tree.
    """
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            parents[pid], times[pid] = proc_stat(pid)
        except OSError:
            continue  # gone meanwhile
    tree = {root_pid}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                changed = True
    return {pid: times[pid] for pid in tree if pid in times}


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def bench_retr(port: int, context: ssl.SSLContext | None, messages: int, server_pid: int) -> tuple[float, int, float]:
    """(wall seconds, bytes received, server CPU seconds) for RETR of every message."""
    client = RawPop3(port, context)
    try:
        login(client, "alice")
        stat = client.ok(b"STAT").split()
        if int(stat[1]) != messages:
            raise RuntimeError(f"expected {messages} messages, the server says {stat!r}")
        total = 0
        cpu_before = process_tree_cpu(server_pid)
        started = time.perf_counter()
        for number in range(1, messages + 1):
            total += client.multiline(b"RETR %d" % number)
        elapsed = time.perf_counter() - started
        cpu = cpu_since(cpu_before, process_tree_cpu(server_pid))
        client.ok(b"QUIT")
        return elapsed, total, cpu
    finally:
        client.close()


def bench_logins(port: int, context: ssl.SSLContext | None, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        client = RawPop3(port, context)
        try:
            login(client, "bob")
            client.ok(b"STAT")
            client.ok(b"QUIT")
            # The maildrop lock is released when the server has closed: wait for it, or the
            # next login could be refused [IN-USE].
            client.wait_closed()
        finally:
            client.close()
    return time.perf_counter() - started


def measure(port: int, context: ssl.SSLContext | None, args: argparse.Namespace, server_pid: int) -> Result:
    cold, _, _ = bench_retr(port, context, args.messages, server_pid)
    bench_logins(port, context, min(20, args.logins))  # warm-up
    retr = [bench_retr(port, context, args.messages, server_pid) for _ in range(args.rounds)]
    logins = [bench_logins(port, context, args.logins) for _ in range(args.rounds)]
    seconds, size, _ = min(retr)
    cpu = min(cpu for _, _, cpu in retr)
    return Result(cold, seconds, size, cpu, min(logins), args.logins, args.messages)


# --- the servers ------------------------------------------------------------------------------


def run(args: argparse.Namespace, report: Callable[[str], None]) -> dict[str, Result]:
    return run_against_dovecot(
        args, report, "pop3", lambda port, context, server_pid: measure(port, context, args, server_pid)
    )


def print_results(results: dict[str, Result], args: argparse.Namespace) -> None:
    ours, theirs = results["mailmodes"], results["dovecot"]
    kib = args.size / 1024
    width = 24
    print_table_head("POP3", args, width)
    comparison_row(f"RETR {args.messages} x {kib:g} KiB (s)", ours.retr_seconds, theirs.retr_seconds, ".3f", width)
    comparison_row("  first pass, cold (s)", ours.cold_retr_seconds, theirs.cold_retr_seconds, ".3f", width)
    comparison_row("RETR messages/s", ours.retr_per_second, theirs.retr_per_second, ".0f", width)
    comparison_row(
        "  server CPU/RETR (us)",
        ours.retr_cpu / ours.messages * 1e6,
        theirs.retr_cpu / theirs.messages * 1e6,
        ".0f",
        width,
        ratio=(ours.retr_cpu / theirs.retr_cpu) if theirs.retr_cpu else float("nan"),
    )
    comparison_row(
        "RETR MB/s",
        ours.retr_bytes / ours.retr_seconds / 1e6,
        theirs.retr_bytes / theirs.retr_seconds / 1e6,
        ".1f",
        width,
        show_ratio=False,
    )
    comparison_row(f"logins/s ({args.logins} seq.)", ours.logins_per_second, theirs.logins_per_second, ".0f", width)
    print()
    retr_ok = ours.retr_seconds <= 2 * theirs.retr_seconds
    login_ok = ours.logins_per_second * 2 >= theirs.logins_per_second
    print(RATIO_NOTE)
    print("server CPU: all of the server's processes (Dovecot: master, login, auth, pop3), in clock ticks")
    print(f"target within 2x of Dovecot: RETR {met(retr_ok)}, logins {met(login_ok)}")


def main(argv: list[str] | None = None) -> int:
    return dovecot_bench_main(
        argv, description=__doc__, protocol="pop3", verb="RETR", rounds=5, run=run, print_results=print_results
    )


if __name__ == "__main__":
    raise SystemExit(main())
