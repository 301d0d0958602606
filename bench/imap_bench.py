"""IMAP benchmark: mailmodes against Debian's Dovecot, in one run, on loopback.

Measures, for each server:
  - FETCH BODY[] bulk: one session, one `UID FETCH 1:* BODY.PEEK[]` of all N messages
    (default 1,000 x 10 KB), read to the tagged OK (PEEK so every round sees the same flags);
  - FETCH BODY[] one by one: N commands `FETCH n BODY.PEEK[]`, each waiting for its reply;
  - FETCH structure: one `UID FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)]
    BODY.PEEK[1])` of all N messages, what a client's message list and preview ask for (the
    first pass is reported apart: a server may parse once and keep the structure);
  - logins/s: connect, greeting, LOGIN, SELECT INBOX (10 messages), LOGOUT, until the server
    closes; sequential;
  - latency of a simple command: NOOP round trips in a selected session (mean and p99).

Both servers get the same messages; the client is the same minimal raw-socket IMAP client, so
the numbers compare servers rather than client libraries. mailmodes runs in a child process (its
own interpreter, so the client does not share its GIL); Dovecot runs from /usr/sbin/dovecot with
a throwaway config (bench/dovecot.py).

    python bench/imap_bench.py                    # plaintext IMAP
    python bench/imap_bench.py --tls              # implicit TLS (imaps) on both
    python bench/imap_bench.py --messages 200 --logins 100 --rounds 1
"""

from __future__ import annotations

import argparse
import ssl
import statistics
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
    run_against_dovecot,
)

TIMEOUT = 60.0


# --- a minimal IMAP client ----------------------------------------------------------------------


class RawImap(RawClient):
    """Just enough IMAP to time a server: send a command, read to its tagged reply (literals
    skipped by their announced size, never scanned)."""

    timeout = TIMEOUT

    def __init__(self, port: int, context: ssl.SSLContext | None) -> None:
        super().__init__(port, context)
        self.counter = 0

    def command(self, text: bytes) -> int:
        """Send one command; return the size of everything up to and including its tagged OK."""
        self.counter += 1
        tag = b"b%d" % self.counter
        self.sock.sendall(tag + b" " + text + b"\r\n")
        tagged = tag + b" "
        pos = 0
        while True:
            end = self.buffer.find(b"\r\n", pos)
            if end < 0:
                self._fill()
                continue
            if self.buffer[end - 1 : end] == b"}":
                opening = self.buffer.rfind(b"{", pos, end)
                size = int(self.buffer[opening + 1 : end - 1].rstrip(b"+"))
                while len(self.buffer) < end + 2 + size:
                    self._fill()
                pos = end + 2 + size
                continue
            if self.buffer.startswith(tagged, pos):
                status = bytes(self.buffer[pos + len(tagged) : pos + len(tagged) + 2])
                if status != b"OK":
                    raise RuntimeError(f"{text!r} -> {bytes(self.buffer[pos:end])!r}")
                del self.buffer[: end + 2]
                return end + 2
            pos = end + 2


def login(client: RawImap, user: str) -> None:
    client.line()  # greeting
    client.command(b"LOGIN " + user.encode() + b" " + USERS[user].encode())


# --- the measurements -------------------------------------------------------------------------


@dataclass
class Result:
    cold_bulk_seconds: float  # the first pass: caches (Dovecot's index, our views) being filled
    bulk_seconds: float
    cold_structure_seconds: float
    structure_seconds: float
    bulk_bytes: int
    single_seconds: float
    login_seconds: float
    noop_mean: float
    noop_p99: float
    logins: int
    messages: int

    @property
    def logins_per_second(self) -> float:
        return self.logins / self.login_seconds


def bench_bulk(port: int, context: ssl.SSLContext | None, messages: int) -> tuple[float, int]:
    client = RawImap(port, context)
    try:
        login(client, "alice")
        client.command(b"SELECT INBOX")
        started = time.perf_counter()
        size = client.command(b"UID FETCH 1:* BODY.PEEK[]")
        elapsed = time.perf_counter() - started
        if size < messages * 1024:
            raise RuntimeError(f"FETCH returned only {size} bytes for {messages} messages")
        client.command(b"LOGOUT")
        return elapsed, size
    finally:
        client.close()


STRUCTURE_FETCH = b"UID FETCH 1:* (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[1])"


def bench_structure(port: int, context: ssl.SSLContext | None) -> float:
    client = RawImap(port, context)
    try:
        login(client, "alice")
        client.command(b"SELECT INBOX")
        started = time.perf_counter()
        client.command(STRUCTURE_FETCH)
        elapsed = time.perf_counter() - started
        client.command(b"LOGOUT")
        return elapsed
    finally:
        client.close()


def bench_single(port: int, context: ssl.SSLContext | None, messages: int) -> float:
    client = RawImap(port, context)
    try:
        login(client, "alice")
        client.command(b"SELECT INBOX")
        started = time.perf_counter()
        for number in range(1, messages + 1):
            client.command(b"FETCH %d BODY.PEEK[]" % number)
        elapsed = time.perf_counter() - started
        client.command(b"LOGOUT")
        return elapsed
    finally:
        client.close()


def bench_logins(port: int, context: ssl.SSLContext | None, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        client = RawImap(port, context)
        try:
            login(client, "bob")
            client.command(b"SELECT INBOX")
            client.command(b"LOGOUT")
            client.wait_closed()
        finally:
            client.close()
    return time.perf_counter() - started


def bench_noop(port: int, context: ssl.SSLContext | None, count: int) -> list[float]:
    client = RawImap(port, context)
    try:
        login(client, "bob")
        client.command(b"SELECT INBOX")
        times = []
        for _ in range(count):
            started = time.perf_counter()
            client.command(b"NOOP")
            times.append(time.perf_counter() - started)
        client.command(b"LOGOUT")
        return times
    finally:
        client.close()


def measure(port: int, context: ssl.SSLContext | None, args: argparse.Namespace) -> Result:
    cold, _ = bench_bulk(port, context, args.messages)
    cold_structure = bench_structure(port, context)
    structure = min(bench_structure(port, context) for _ in range(args.rounds))
    bench_logins(port, context, min(20, args.logins))  # warm-up
    bulk = [bench_bulk(port, context, args.messages) for _ in range(args.rounds)]
    single = [bench_single(port, context, args.messages) for _ in range(args.rounds)]
    logins = [bench_logins(port, context, args.logins) for _ in range(args.rounds)]
    noops = min((bench_noop(port, context, args.noops) for _ in range(args.rounds)), key=statistics.mean)
    seconds, size = min(bulk)
    p99 = sorted(noops)[int(len(noops) * 0.99) - 1]
    return Result(cold, seconds, cold_structure, structure, size, min(single), min(logins), statistics.mean(noops), p99,
                  args.logins, args.messages)


# --- the servers ------------------------------------------------------------------------------


def run(args: argparse.Namespace, report: Callable[[str], None]) -> dict[str, Result]:
    return run_against_dovecot(args, report, "imap", lambda port, context, _server_pid: measure(port, context, args))


def print_results(results: dict[str, Result], args: argparse.Namespace) -> None:
    ours, theirs = results["mailmodes"], results["dovecot"]
    kib = args.size / 1024

    def row(label: str, mine: float, other: float, fmt: str) -> None:
        comparison_row(label, mine, other, fmt, 30)

    print_table_head("IMAP", args, 30)
    row(f"FETCH 1:* BODY[] {args.messages} x {kib:g} KiB (s)", ours.bulk_seconds, theirs.bulk_seconds, ".3f")
    row("  first pass, cold (s)", ours.cold_bulk_seconds, theirs.cold_bulk_seconds, ".3f")
    row("  MB/s", ours.bulk_bytes / ours.bulk_seconds / 1e6, theirs.bulk_bytes / theirs.bulk_seconds / 1e6, ".1f")
    row("FETCH 1:* structure (s)", ours.structure_seconds, theirs.structure_seconds, ".3f")
    row("  first pass, cold (s)", ours.cold_structure_seconds, theirs.cold_structure_seconds, ".3f")
    row(f"FETCH n BODY[] x {args.messages} (s)", ours.single_seconds, theirs.single_seconds, ".3f")
    row(f"logins/s ({args.logins} seq.)", ours.logins_per_second, theirs.logins_per_second, ".0f")
    row("NOOP round trip, mean (ms)", ours.noop_mean * 1e3, theirs.noop_mean * 1e3, ".3f")
    row("NOOP round trip, p99 (ms)", ours.noop_p99 * 1e3, theirs.noop_p99 * 1e3, ".3f")
    print()
    bulk_ok = ours.bulk_seconds <= 2 * theirs.bulk_seconds
    bulk_ok = bulk_ok and ours.structure_seconds <= 2 * theirs.structure_seconds
    single_ok = ours.single_seconds <= 2 * theirs.single_seconds
    login_ok = ours.logins_per_second * 2 >= theirs.logins_per_second
    latency_ok = ours.noop_mean < 0.002
    print(RATIO_NOTE)
    print(
        f"targets: FETCH within 2x {met(bulk_ok and single_ok)}, "
        f"logins within 2x {met(login_ok)}, "
        f"simple command under 2 ms {met(latency_ok)}"
    )


def main(argv: list[str] | None = None) -> int:
    return dovecot_bench_main(
        argv,
        description=__doc__,
        protocol="imap",
        verb="FETCH",
        rounds=3,
        run=run,
        print_results=print_results,
        more_arguments=lambda parser: parser.add_argument(
            "--noops", type=int, default=2000, help="NOOP round trips per round (default 2000)"
        ),
    )


if __name__ == "__main__":
    raise SystemExit(main())
