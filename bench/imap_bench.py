"""IMAP benchmark: mailmodes against Debian's Dovecot, in one run, on loopback.

Measures, for each server:
  - FETCH BODY[] bulk: one session, one `UID FETCH 1:* BODY.PEEK[]` of all N messages
    (default 1,000 x 10 KB), read to the tagged OK (PEEK so every round sees the same flags);
  - FETCH BODY[] one by one: N commands `FETCH n BODY.PEEK[]`, each waiting for its reply;
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
import asyncio
import json
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dovecot import fill_maildir, sample_message, start_dovecot
from mailmodes.certs import ensure_certificates

HOSTNAME = "mail.example.test"
USERS = {"alice": "alice-password", "bob": "bob-password"}
LOGIN_MAILBOX_SIZE = 10  # messages in bob's INBOX, the one the login benchmark selects
TIMEOUT = 60.0


# --- a minimal IMAP client ----------------------------------------------------------------------


class RawImap:
    """Just enough IMAP to time a server: send a command, read to its tagged reply (literals
    skipped by their announced size, never scanned)."""

    def __init__(self, port: int, context: ssl.SSLContext | None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = context.wrap_socket(sock, server_hostname="127.0.0.1") if context else sock
        self.buffer = bytearray()
        self.counter = 0

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    def greeting(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

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

    def wait_closed(self) -> None:
        while self.sock.recv(4096):
            pass

    def close(self) -> None:
        self.sock.close()


def login(client: RawImap, user: str) -> None:
    client.greeting()
    client.command(b"LOGIN " + user.encode() + b" " + USERS[user].encode())


# --- the measurements -------------------------------------------------------------------------


@dataclass
class Result:
    cold_bulk_seconds: float  # the first pass: caches (Dovecot's index, our views) being filled
    bulk_seconds: float
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
    bench_logins(port, context, min(20, args.logins))  # warm-up
    bulk = [bench_bulk(port, context, args.messages) for _ in range(args.rounds)]
    single = [bench_single(port, context, args.messages) for _ in range(args.rounds)]
    logins = [bench_logins(port, context, args.logins) for _ in range(args.rounds)]
    noops = min((bench_noop(port, context, args.noops) for _ in range(args.rounds)), key=statistics.mean)
    seconds, size = min(bulk)
    p99 = sorted(noops)[int(len(noops) * 0.99) - 1]
    return Result(cold, seconds, size, min(single), min(logins), statistics.mean(noops), p99, args.logins,
                  args.messages)


# --- the servers ------------------------------------------------------------------------------


def mailmodes_child(root: Path, messages: int, size: int) -> None:
    """Run in the child process: a mailmodes server with the benchmark's mailboxes."""
    from mailmodes.app import MailServer
    from mailmodes.config import parse_config

    config = parse_config(
        {
            "hostname": HOSTNAME,
            "certs": {"dir": str(root / "certs")},
            "users": [{"name": name, "password": password} for name, password in USERS.items()],
            "listeners": [
                {"name": "imap", "protocol": "imap", "port": 0, "tls": "plaintext"},
                {"name": "imaps", "protocol": "imap", "port": 0, "tls": "implicit"},
            ],
        },
        source="benchmark",
    )

    async def main() -> None:
        server = MailServer(config)
        for n in range(messages):
            server.store.accounts["alice"].inbox.append(sample_message(n, size))
        for n in range(LOGIN_MAILBOX_SIZE):
            server.store.accounts["bob"].inbox.append(sample_message(n, size))
        await server.start()
        print(json.dumps({"ports": server.ports}), flush=True)
        # Serve until the parent closes our stdin.
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(args: argparse.Namespace, report: Callable[[str], None]) -> dict[str, Result]:
    with tempfile.TemporaryDirectory(prefix="mailmodes-bench-") as tmp:
        root = Path(tmp)
        # One certificate for both servers; the child finds it in place and reuses it.
        certs = ensure_certificates(root / "certs", HOSTNAME)
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", str(root), str(args.messages), str(args.size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None and child.stdin is not None
        try:
            info = json.loads(child.stdout.readline() or b"{}")
            if "ports" not in info:
                raise RuntimeError("the mailmodes child did not start")
            context = ssl.create_default_context(cafile=str(certs.ca_file)) if args.tls else None
            imap_port, imaps_port = free_port(), free_port()
            dovecot = start_dovecot(
                root / "dovecot",
                USERS,
                imap_port=imap_port,
                pop3_port=None,
                imaps_port=imaps_port,
                cert_file=certs.cert_file,
                key_file=certs.key_file,
                high_performance=args.high_performance,
            )
            try:
                fill_maildir(dovecot.maildir("alice"), args.messages, args.size)
                fill_maildir(dovecot.maildir("bob"), LOGIN_MAILBOX_SIZE, args.size)
                name = "imaps" if args.tls else "imap"
                report(f"measuring mailmodes ({name}) ...")
                ours = measure(info["ports"][name], context, args)
                report(f"measuring Dovecot ({name}) ...")
                theirs = measure(imaps_port if args.tls else imap_port, context, args)
            finally:
                dovecot.stop()
        finally:
            child.stdin.close()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return {"mailmodes": ours, "dovecot": theirs}


def print_results(results: dict[str, Result], args: argparse.Namespace) -> None:
    ours, theirs = results["mailmodes"], results["dovecot"]
    kib = args.size / 1024

    def row(label: str, mine: float, other: float, fmt: str, ratio: bool = True) -> None:
        text = f"{label:30}{mine:>14{fmt}}{other:>14{fmt}}"
        print(text + (f"{mine / other:>10.2f}" if ratio else ""))

    print()
    print(f"IMAP {'implicit TLS' if args.tls else 'plaintext'}, loopback, best of {args.rounds}")
    print(f"{'':30}{'mailmodes':>14}{'dovecot':>14}{'ratio':>10}")
    row(f"FETCH 1:* BODY[] {args.messages} x {kib:g} KiB (s)", ours.bulk_seconds, theirs.bulk_seconds, ".3f")
    row("  first pass, cold (s)", ours.cold_bulk_seconds, theirs.cold_bulk_seconds, ".3f")
    row("  MB/s", ours.bulk_bytes / ours.bulk_seconds / 1e6, theirs.bulk_bytes / theirs.bulk_seconds / 1e6, ".1f")
    row(f"FETCH n BODY[] x {args.messages} (s)", ours.single_seconds, theirs.single_seconds, ".3f")
    row(f"logins/s ({args.logins} seq.)", ours.logins_per_second, theirs.logins_per_second, ".0f")
    row("NOOP round trip, mean (ms)", ours.noop_mean * 1e3, theirs.noop_mean * 1e3, ".3f")
    row("NOOP round trip, p99 (ms)", ours.noop_p99 * 1e3, theirs.noop_p99 * 1e3, ".3f")
    print()
    bulk_ok = ours.bulk_seconds <= 2 * theirs.bulk_seconds
    single_ok = ours.single_seconds <= 2 * theirs.single_seconds
    login_ok = ours.logins_per_second * 2 >= theirs.logins_per_second
    latency_ok = ours.noop_mean < 0.002
    print("ratio = mailmodes / dovecot (time: lower is better; rates: higher is better)")
    print(
        f"targets: FETCH within 2x {'met' if bulk_ok and single_ok else 'MISSED'}, "
        f"logins within 2x {'met' if login_ok else 'MISSED'}, "
        f"simple command under 2 ms {'met' if latency_ok else 'MISSED'}"
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        mailmodes_child(Path(argv[1]), int(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000, help="messages to FETCH (default 1000)")
    parser.add_argument("--size", type=int, default=10 * 1024, help="message size in bytes (default 10240)")
    parser.add_argument("--logins", type=int, default=300, help="logins per round (default 300)")
    parser.add_argument("--noops", type=int, default=2000, help="NOOP round trips per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement; the best counts")
    parser.add_argument("--tls", action="store_true", help="use implicit TLS (imaps) on both servers")
    parser.add_argument(
        "--high-performance",
        action="store_true",
        help="Dovecot login processes serve many connections (service_count = 0) instead of one each",
    )
    args = parser.parse_args(argv)
    results = run(args, lambda text: print(text, file=sys.stderr, flush=True))
    print_results(results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
