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
  - latency of a simple command: NOOP round trips in a selected session (mean and p99);
  - imaptest stress (Dovecot's imaptest, `clients=10 secs=20` on the same generated mbox, user
    "stress" with an empty INBOX on both): cmd/s and the errors imaptest reports, once with its
    default login loop (each client logs in, works, logs out, again) and once with `logout=0`
    (persistent sessions); rounds alternate between the servers (mailmodes, Dovecot, mailmodes,
    ...) so a busy machine slows both alike. Skipped with --stress-secs 0.

Both servers get the same messages; the client is the same minimal raw-socket IMAP client, so
the numbers compare servers rather than client libraries. mailmodes runs in a child process (its
own interpreter, so the client does not share its GIL); Dovecot runs from /usr/sbin/dovecot with
a throwaway config (bench/dovecot.py).

    python bench/imap_bench.py                    # plaintext IMAP
    python bench/imap_bench.py --tls              # implicit TLS (imaps) on both
    python bench/imap_bench.py --messages 200 --logins 100 --rounds 1
    python bench/imap_bench.py --stress-secs 5 --stress-rounds 1   # a quick stress look
"""

from __future__ import annotations

import argparse
import base64
import re
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    RATIO_NOTE,
    USERS,
    RawClient,
    comparison_row,
    dovecot_bench_main,
    met,
    Servers,
    print_table_head,
    servers_against_dovecot,
)
from dovecot import sample_message

TIMEOUT = 60.0
IMAPTEST = Path("/var/tmp/imaptest/bin/imaptest")  # what ../shared/tools/imaptest/build makes
STRESS_USER = "stress"
STRESS_MODES = ("login loop", "logout=0")


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


# --- imaptest stress -------------------------------------------------------------------------


def write_stress_mbox(path: Path, count: int = 200) -> None:
    """The mbox imaptest APPENDs from: plain text, multipart with a base64 attachment, and
    message/rfc822, each with a Message-ID of its own (imaptest tells messages apart by it and
    reports a changed ENVELOPE or BODYSTRUCTURE when two share one)."""
    attachment = base64.encodebytes(bytes(range(256)) * 8)
    out = bytearray()
    for n in range(count):
        if n % 3 == 0:
            data = sample_message(n, 4096).replace(b"\r\n", b"\n")
        elif n % 3 == 1:
            data = (
                b"From: Carol <carol@example.test>\nTo: alice@example.test\nSubject: parts %d\n"
                b"Message-ID: <%d.parts@example.test>\nMIME-Version: 1.0\n"
                b'Content-Type: multipart/mixed; boundary="b%d"\n\npreamble\n--b%d\n'
                b"Content-Type: text/plain; charset=utf-8\n\nhello %d\n--b%d\n"
                b'Content-Type: application/octet-stream; name="x.bin"\nContent-Transfer-Encoding: base64\n\n'
                % (n, n, n, n, n, n) + attachment + b"--b%d--\n" % n
            )
        else:
            data = (
                b"From: Dave <dave@example.test>\nTo: alice@example.test\nSubject: Re: forwarded %d\n"
                b"Message-ID: <%d.fwd@example.test>\nIn-Reply-To: <%d.parts@example.test>\nMIME-Version: 1.0\n"
                b"Content-Type: message/rfc822\n\nFrom: eve@example.test\nSubject: inner %d\n\ninner body\n"
                % (n, n, n - 1, n)
            )
        out += b"From sender@example.test Thu Jan  1 00:00:00 2026\n" + data + b"\n"
    path.write_bytes(bytes(out))


@dataclass
class StressRun:
    commands: int  # every command imaptest counted in its Totals
    seconds: float
    errors: list[str] = field(default_factory=list)  # imaptest's "Error:" lines

    @property
    def rate(self) -> float:
        return self.commands / self.seconds


def imaptest_stress(args: argparse.Namespace, port: int, mbox: Path, persistent: bool) -> StressRun:
    command = [
        str(args.imaptest), "host=127.0.0.1", f"port={port}", f"user={STRESS_USER}", f"pass={USERS[STRESS_USER]}",
        f"mbox={mbox}", f"clients={args.stress_clients}", f"secs={args.stress_secs}",
    ]
    if persistent:
        command.append("logout=0")
    if args.tls:
        command.append("ssl=any-cert")
    done = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=args.stress_secs + 60)
    output = done.stdout + done.stderr
    # "Totals:", a line of command names, one or two of percentages, then one of counts.
    totals = output[output.rfind("Totals:") :].splitlines()
    counts = next((line for line in totals[1:] if re.fullmatch(r"[\d ]+", line.strip() or "x")), None)
    if counts is None:
        raise RuntimeError(f"imaptest printed no totals (exit {done.returncode}):\n{output[-2000:]}")
    errors = [line for line in output.splitlines() if line.startswith(("Error:", "Panic:", "Fatal:"))]
    return StressRun(sum(int(n) for n in counts.split()), float(args.stress_secs), errors)


def run_stress(
    args: argparse.Namespace, report: Callable[[str], None], servers: Servers
) -> dict[str, dict[str, list[StressRun]]]:
    """mode -> server -> one StressRun per round, the servers taking turns within each round."""
    mbox = servers.root / "stress.mbox"
    write_stress_mbox(mbox)
    runs: dict[str, dict[str, list[StressRun]]] = {mode: {"mailmodes": [], "dovecot": []} for mode in STRESS_MODES}
    ports = {"mailmodes": servers.mailmodes[0], "dovecot": servers.dovecot[0]}
    for round_ in range(args.stress_rounds):
        for mode in STRESS_MODES:
            for name in ("mailmodes", "dovecot") if round_ % 2 == 0 else ("dovecot", "mailmodes"):
                report(f"imaptest stress, {mode}, {name}, round {round_ + 1} ...")
                runs[mode][name].append(imaptest_stress(args, ports[name], mbox, mode == "logout=0"))
    return runs


# --- the servers ------------------------------------------------------------------------------


@dataclass
class Results:
    fetch: dict[str, Result]
    stress: dict[str, dict[str, list[StressRun]]] | None


def run(args: argparse.Namespace, report: Callable[[str], None]) -> Results:
    name = "imaps" if args.tls else "imap"
    with servers_against_dovecot(args, "imap") as servers:
        fetch = {}
        if not args.no_fetch:
            report(f"measuring mailmodes ({name}) ...")
            fetch["mailmodes"] = measure(servers.mailmodes[0], servers.context, args)
            report(f"measuring Dovecot ({name}) ...")
            fetch["dovecot"] = measure(servers.dovecot[0], servers.context, args)
        stress = run_stress(args, report, servers) if args.stress_secs > 0 else None
    return Results(fetch, stress)


def print_results(all_results: Results, args: argparse.Namespace) -> None:
    if all_results.fetch:
        print_fetch(all_results.fetch, args)
    if all_results.stress is not None:
        print_stress(all_results.stress, args)


def print_stress(runs: dict[str, dict[str, list[StressRun]]], args: argparse.Namespace) -> None:
    print()
    print(f"imaptest stress, clients={args.stress_clients} secs={args.stress_secs}, {args.stress_rounds} rounds "
          "alternating; cmd/s median [lowest, highest]")
    print(f"{'':22}{'mailmodes':>26}{'dovecot':>26}{'ratio':>8}{'errors':>16}")
    persistent_ok = errors_ok = True
    for mode in STRESS_MODES:
        rates = {name: sorted(run.rate for run in runs[mode][name]) for name in ("mailmodes", "dovecot")}

        def cell(values: list[float]) -> str:
            return f"{statistics.median(values):.0f} [{values[0]:.0f}, {values[-1]:.0f}]"

        ratio = statistics.median(rates["mailmodes"]) / statistics.median(rates["dovecot"])
        errors = {name: sum(len(run.errors) for run in runs[mode][name]) for name in ("mailmodes", "dovecot")}
        print(f"{mode:22}{cell(rates['mailmodes']):>26}{cell(rates['dovecot']):>26}{ratio:>8.2f}"
              f"{errors['mailmodes']:>8}/{errors['dovecot']:<7}")
        errors_ok = errors_ok and errors["mailmodes"] == 0
        if mode == "logout=0":
            persistent_ok = ratio >= 1.0
    print("errors = imaptest's Error/Panic/Fatal lines, mailmodes/dovecot, over all rounds")
    for mode in STRESS_MODES:
        for line in sorted({line[:160] for run in runs[mode]["mailmodes"] for line in run.errors})[:10]:
            print(f"  mailmodes, {mode}: {line}")
    print(f"targets: 0 errors for mailmodes {met(errors_ok)}, persistent sessions at least 1.0x {met(persistent_ok)}")


def print_fetch(results: dict[str, Result], args: argparse.Namespace) -> None:
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
        more_arguments=more_arguments,
    )


def more_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--noops", type=int, default=2000, help="NOOP round trips per round (default 2000)")
    parser.add_argument("--no-fetch", action="store_true", help="only the imaptest stress runs")
    parser.add_argument("--imaptest", type=Path, default=IMAPTEST, help=f"imaptest binary (default {IMAPTEST})")
    parser.add_argument("--stress-secs", type=int, default=20, help="seconds per imaptest stress run; 0: none")
    parser.add_argument("--stress-clients", type=int, default=10, help="imaptest clients (default 10)")
    parser.add_argument("--stress-rounds", type=int, default=3, help="stress rounds per server and mode (default 3)")


if __name__ == "__main__":
    raise SystemExit(main())
