"""What the benchmark scripts share, imported as `common` (a script's own directory, bench/, is on
sys.path when it runs as `python bench/x.py`).

  - `RawClient`: a raw loopback socket read through a buffer, under the minimal POP3 and IMAP
    clients of pop3_bench.py and imap_bench.py;
  - the mailmodes-against-Dovecot harness of those two: mailmodes in a child process (this file
    run as a script, so the client does not share its GIL), Dovecot from bench/dovecot.py, the
    same messages in both, and the command line they have in common (`dovecot_bench_main`);
  - the comparison table they print (`print_table_head`, `comparison_row`);
  - process helpers: /proc readings and stopping a child.

mailmodes itself is imported only where it is used, so a script that needs none of it (smtp_bench.py
runs mailmodes as a separate program) does not load it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from dovecot import fill_maildir, sample_message, start_dovecot

HOSTNAME = "mail.example.test"
# stress: an empty INBOX for imaptest's stress runs (imap_bench.py --stress-secs).
USERS = {"alice": "alice-password", "bob": "bob-password", "stress": "stress-password"}
LOGIN_MAILBOX_SIZE = 10  # messages in bob's mailbox, the one the login benchmarks open
RATIO_NOTE = "ratio = mailmodes / dovecot (time: lower is better; rates: higher is better)"

ResultT = TypeVar("ResultT")
# (port, client TLS context or None, server pid) -> one server's figures.
Measure = Callable[[int, ssl.SSLContext | None, int], ResultT]


# --- a raw client -----------------------------------------------------------------------------


class RawClient:
    """A connection to 127.0.0.1:`port` (TLS from the first byte when `context` is given), with
    its received bytes in `buffer`: just enough to build a minimal protocol client on."""

    timeout = 30.0

    def __init__(self, port: int, context: ssl.SSLContext | None) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock: socket.socket = context.wrap_socket(sock, server_hostname="127.0.0.1") if context else sock
        self.buffer = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    def line(self) -> bytes:
        """The next CRLF-terminated line, without its CRLF."""
        while (end := self.buffer.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 2]
        return line

    def wait_closed(self) -> None:
        while self.sock.recv(4096):
            pass

    def close(self) -> None:
        self.sock.close()


# --- processes --------------------------------------------------------------------------------


def wait_or_kill(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Wait for a child of ours to exit; SIGKILL it if it lingers past `timeout` seconds."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def proc_stat(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds user + system) of a process, from /proc/<pid>/stat (proc(5):
    ppid, utime and stime are fields 4, 14 and 15, counted here after the parenthesised comm,
    which may itself hold spaces). Raises OSError if the process is gone."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- mailmodes against Dovecot ----------------------------------------------------------------


def mailmodes_child(protocol: str, root: Path, messages: int, size: int) -> None:
    """Run in the child process: a mailmodes server with the benchmark's mailboxes, listening for
    `protocol` in plaintext (listener `protocol`) and implicit TLS (listener `protocol` + "s")."""
    from mailmodes.app import MailServer
    from mailmodes.config import parse_config

    config = parse_config(
        {
            "hostname": HOSTNAME,
            "certs": {"dir": str(root / "certs")},
            "users": [{"name": name, "password": password} for name, password in USERS.items()],
            "listeners": [
                {"name": protocol, "protocol": protocol, "port": 0, "tls": "plaintext"},
                {"name": protocol + "s", "protocol": protocol, "port": 0, "tls": "implicit"},
            ],
            # Every benchmark client comes from 127.0.0.1: one address may use every slot.
            "limits": {"max_connections_per_client": 100},
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


@dataclass
class Servers:
    """Both servers of a run, up together: for each, the port to measure on and its pid."""

    mailmodes: tuple[int, int]
    dovecot: tuple[int, int]
    context: ssl.SSLContext | None
    root: Path  # the run's temporary directory (removed afterwards)


@contextlib.contextmanager
def servers_against_dovecot(args: argparse.Namespace, protocol: str) -> Iterator[Servers]:
    """Start mailmodes (a child process) and Dovecot with the same messages: alice gets
    `args.messages` of `args.size` bytes, bob LOGIN_MAILBOX_SIZE, stress none. Each is reached
    on its `protocol` port, or its implicit-TLS one with `args.tls`."""
    from mailmodes.tls.certs import ensure_certificates

    with tempfile.TemporaryDirectory(prefix="mailmodes-bench-") as tmp:
        root = Path(tmp)
        # One certificate for both servers; the child finds it in place and reuses it.
        certs = ensure_certificates(root / "certs", HOSTNAME)
        child = subprocess.Popen(
            [sys.executable, __file__, "--child", protocol, str(root), str(args.messages), str(args.size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None and child.stdin is not None
        try:
            info = json.loads(child.stdout.readline() or b"{}")
            if "ports" not in info:
                raise RuntimeError("the mailmodes child did not start")
            context = ssl.create_default_context(cafile=str(certs.ca_file)) if args.tls else None
            plain_port, tls_port = free_port(), free_port()
            imap = protocol == "imap"
            dovecot = start_dovecot(
                root / "dovecot",
                USERS,
                imap_port=plain_port if imap else None,
                pop3_port=None if imap else plain_port,
                imaps_port=tls_port if imap else None,
                pop3s_port=None if imap else tls_port,
                cert_file=certs.cert_file,
                key_file=certs.key_file,
                high_performance=args.high_performance,
            )
            try:
                fill_maildir(dovecot.maildir("alice"), args.messages, args.size)
                fill_maildir(dovecot.maildir("bob"), LOGIN_MAILBOX_SIZE, args.size)
                name = protocol + "s" if args.tls else protocol
                yield Servers(
                    (info["ports"][name], child.pid),
                    (tls_port if args.tls else plain_port, dovecot.process.pid),
                    context,
                    root,
                )
            finally:
                dovecot.stop()
        finally:
            child.stdin.close()
            wait_or_kill(child)


def run_against_dovecot(
    args: argparse.Namespace, report: Callable[[str], None], protocol: str, measure: Measure[ResultT]
) -> dict[str, ResultT]:
    """`measure` mailmodes, then Dovecot (servers_against_dovecot)."""
    with servers_against_dovecot(args, protocol) as servers:
        name = protocol + "s" if args.tls else protocol
        report(f"measuring mailmodes ({name}) ...")
        ours = measure(servers.mailmodes[0], servers.context, servers.mailmodes[1])
        report(f"measuring Dovecot ({name}) ...")
        theirs = measure(servers.dovecot[0], servers.context, servers.dovecot[1])
    return {"mailmodes": ours, "dovecot": theirs}


def dovecot_bench_main(
    argv: list[str] | None,
    *,
    description: str,
    protocol: str,
    verb: str,
    rounds: int,
    run: Callable[[argparse.Namespace, Callable[[str], None]], ResultT],
    print_results: Callable[[ResultT, argparse.Namespace], None],
    more_arguments: Callable[[argparse.ArgumentParser], object] | None = None,
) -> int:
    """The command line of a mailmodes-against-Dovecot benchmark: parse it, `run`, print the
    results. `more_arguments` adds the script's own options (after --logins)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000, help=f"messages to {verb} (default 1000)")
    parser.add_argument("--size", type=int, default=10 * 1024, help="message size in bytes (default 10240)")
    parser.add_argument("--logins", type=int, default=300, help="logins per round (default 300)")
    if more_arguments is not None:
        more_arguments(parser)
    parser.add_argument("--rounds", type=int, default=rounds, help="rounds per measurement; the best counts")
    parser.add_argument("--tls", action="store_true", help=f"use implicit TLS ({protocol}s) on both servers")
    parser.add_argument(
        "--high-performance",
        action="store_true",
        help="Dovecot login processes serve many connections (service_count = 0) instead of one each",
    )
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    results = run(args, lambda text: print(text, file=sys.stderr, flush=True))
    print_results(results, args)
    return 0


# --- the comparison table ---------------------------------------------------------------------


def print_table_head(title: str, args: argparse.Namespace, width: int) -> None:
    """A blank line, the title line and the column headings; labels are `width` wide."""
    print()
    print(f"{title} {'implicit TLS' if args.tls else 'plaintext'}, loopback, best of {args.rounds}")
    print(f"{'':{width}}{'mailmodes':>14}{'dovecot':>14}{'ratio':>10}")


def comparison_row(
    label: str, mine: float, other: float, fmt: str, width: int, *, ratio: float | None = None, show_ratio: bool = True
) -> None:
    """One row: both figures in `fmt`, then their ratio (mine / other unless `ratio` is given)."""
    text = f"{label:{width}}{mine:>14{fmt}}{other:>14{fmt}}"
    if show_ratio:
        text += f"{mine / other if ratio is None else ratio:>10.2f}"
    print(text)


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    # The mailmodes child of run_against_dovecot: --child PROTOCOL ROOT MESSAGES SIZE
    if sys.argv[1:2] != ["--child"]:
        raise SystemExit("common.py is a module of the benchmarks; run bench/pop3_bench.py or bench/imap_bench.py")
    mailmodes_child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
