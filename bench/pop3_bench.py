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
import asyncio
import json
import os
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

from dovecot import fill_maildir, sample_message, start_dovecot  # noqa: E402

from mailmodes.certs import ensure_certificates  # noqa: E402

HOSTNAME = "mail.example.test"
USERS = {"alice": "alice-password", "bob": "bob-password"}
LOGIN_MAILBOX_SIZE = 10  # messages in bob's maildrop, the one the login benchmark opens
TIMEOUT = 30.0


# --- a minimal POP3 client --------------------------------------------------------------------


class RawPop3:
    """Just enough POP3 to time a server: commands, single-line and multi-line replies."""

    def __init__(self, port: int, context: ssl.SSLContext | None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = context.wrap_socket(sock, server_hostname="127.0.0.1") if context else sock
        self.buffer = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    def line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

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

    def wait_closed(self) -> None:
        while self.sock.recv(4096):
            pass

    def close(self) -> None:
        self.sock.close()


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
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # Fields after "(comm)": state ppid ... utime(14th overall) stime(15th).
        fields = text[text.rfind(")") + 2 :].split()
        pid = int(entry)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / tick
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


def mailmodes_child(root: Path, messages: int, size: int) -> None:
    """Run in the child process: a mailmodes server with the benchmark's maildrops."""
    from mailmodes.app import MailServer
    from mailmodes.config import parse_config

    config = parse_config(
        {
            "hostname": HOSTNAME,
            "certs": {"dir": str(root / "certs")},
            "users": [{"name": name, "password": password} for name, password in USERS.items()],
            "listeners": [
                {"name": "pop3", "protocol": "pop3", "port": 0, "tls": "plaintext"},
                {"name": "pop3s", "protocol": "pop3", "port": 0, "tls": "implicit"},
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
            pop3_port, pop3s_port = free_port(), free_port()
            dovecot = start_dovecot(
                root / "dovecot",
                USERS,
                imap_port=None,
                pop3_port=pop3_port,
                pop3s_port=pop3s_port,
                cert_file=certs.cert_file,
                key_file=certs.key_file,
                high_performance=args.high_performance,
            )
            try:
                fill_maildir(dovecot.maildir("alice"), args.messages, args.size)
                fill_maildir(dovecot.maildir("bob"), LOGIN_MAILBOX_SIZE, args.size)
                name = "pop3s" if args.tls else "pop3"
                report(f"measuring mailmodes ({name}) ...")
                ours = measure(info["ports"][name], context, args, child.pid)
                report(f"measuring Dovecot ({name}) ...")
                theirs = measure(pop3s_port if args.tls else pop3_port, context, args, dovecot.process.pid)
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
    print()
    print(f"POP3 {'implicit TLS' if args.tls else 'plaintext'}, loopback, best of {args.rounds}")
    print(f"{'':24}{'mailmodes':>14}{'dovecot':>14}{'ratio':>10}")
    print(
        f"{f'RETR {args.messages} x {kib:g} KiB (s)':24}{ours.retr_seconds:>14.3f}{theirs.retr_seconds:>14.3f}"
        f"{ours.retr_seconds / theirs.retr_seconds:>10.2f}"
    )
    print(
        f"{'  first pass, cold (s)':24}{ours.cold_retr_seconds:>14.3f}{theirs.cold_retr_seconds:>14.3f}"
        f"{ours.cold_retr_seconds / theirs.cold_retr_seconds:>10.2f}"
    )
    print(
        f"{'RETR messages/s':24}{ours.retr_per_second:>14.0f}{theirs.retr_per_second:>14.0f}"
        f"{ours.retr_per_second / theirs.retr_per_second:>10.2f}"
    )
    print(
        f"{'  server CPU/RETR (us)':24}{ours.retr_cpu / ours.messages * 1e6:>14.0f}"
        f"{theirs.retr_cpu / theirs.messages * 1e6:>14.0f}"
        f"{(ours.retr_cpu / theirs.retr_cpu) if theirs.retr_cpu else float('nan'):>10.2f}"
    )
    print(
        f"{'RETR MB/s':24}{ours.retr_bytes / ours.retr_seconds / 1e6:>14.1f}"
        f"{theirs.retr_bytes / theirs.retr_seconds / 1e6:>14.1f}"
    )
    print(
        f"{f'logins/s ({args.logins} seq.)':24}{ours.logins_per_second:>14.0f}{theirs.logins_per_second:>14.0f}"
        f"{ours.logins_per_second / theirs.logins_per_second:>10.2f}"
    )
    print()
    retr_ok = ours.retr_seconds <= 2 * theirs.retr_seconds
    login_ok = ours.logins_per_second * 2 >= theirs.logins_per_second
    print("ratio = mailmodes / dovecot (time: lower is better; rates: higher is better)")
    print("server CPU: all of the server's processes (Dovecot: master, login, auth, pop3), in clock ticks")
    print(f"target within 2x of Dovecot: RETR {'met' if retr_ok else 'MISSED'}, logins {'met' if login_ok else 'MISSED'}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        mailmodes_child(Path(argv[1]), int(argv[2]), int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000, help="messages to RETR (default 1000)")
    parser.add_argument("--size", type=int, default=10 * 1024, help="message size in bytes (default 10240)")
    parser.add_argument("--logins", type=int, default=300, help="logins per round (default 300)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per measurement; the best counts")
    parser.add_argument("--tls", action="store_true", help="use implicit TLS (pop3s) on both servers")
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
