"""SMTP benchmark: mailmodes against a bare aiosmtpd server (bench/bare_aiosmtpd.py), in one run.

Not a test: it always exits 0 once it has measured, and prints PASS/MISS against the targets of
issue 2 so a person can judge. What it measures, all on 127.0.0.1:

  throughput  messages/s at 1, 10 and 100 concurrent sessions, in plaintext, STARTTLS and
              implicit TLS; ours and the baseline are interleaved per cell and each cell is
              repeated (median of --rounds, 5 by default), because the machine is shared and noisy.
              Target: ours >= 0.9x the baseline in every cell.
  memory      server RSS (VmRSS) before and with 1,000 idle plaintext connections.
              Target: ours <= 1.2x the baseline (increase and total both shown).
  startup     time from Popen to the `ready` line and a TCP connect to every listener
              (median of 5). Targets: < 0.5 s with certs already made, < 1.5 s when generated.

    python bench/smtp_bench.py [--rounds 5] [--scale 1.0] [--json-out FILE]

The durable store's cost, and the memory store against another checkout, in one run each:

    python bench/smtp_bench.py --durable --baseline source --baseline-source server
    git archive main server | tar -x -C /tmp/main && \
        python bench/smtp_bench.py --baseline source --baseline-source /tmp/main/server

The load generator speaks raw SMTP. Its protocol half (building the conversation, parsing
replies) is sans-I/O; only `drive_session` and what is below it touch sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import select
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common import proc_stat, wait_or_kill

HOST = "127.0.0.1"
HOSTNAME = "mail.example.test"
SENDER = "bench@client.test"
RECIPIENT = "alice@example.test"
MESSAGE_SIZE = 2048
MODES = ("plaintext", "starttls", "implicit")
# What each server prints as a listener's mode -> the bench's name for it.
PRINTED_MODES = {"plaintext": "plaintext", "starttls-optional": "starttls", "implicit": "implicit"}
# Messages each session sends, per concurrency level: enough for half a second to a second per run
# on two cores (CPU time is read in 10 ms ticks), so that the whole bench stays near two minutes
# (scaled by --scale).
MESSAGES_PER_SESSION = {1: 1000, 10: 160, 100: 20}
IDLE_CONNECTIONS = 1000
# Both servers listen with asyncio's default backlog of 100; opening more at once only drops SYNs.
CONNECT_BATCH = 50
STARTUP_RUNS = 5
START_TIMEOUT = 30.0
CELL_TIMEOUT = 120.0
THROUGHPUT_TARGET = 0.9
MEMORY_TARGET = 1.2
READY_TARGET_MADE = 0.5
READY_TARGET_GENERATED = 1.5
BASELINE_SCRIPT = Path(__file__).with_name("bare_aiosmtpd.py")


# ---------------------------------------------------------------------------------------------
# Sans-I/O SMTP client: the conversation as data, and replies parsed from bytes.
# ---------------------------------------------------------------------------------------------


class SmtpError(Exception):
    """The server said something the bench did not expect; the run is not valid."""


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[bytes, ...]


class ReplyParser:
    """Bytes in, complete replies out.

    RFC 5321 section 4.2: "Reply-line = *( Reply-code "-" [ textstring ] CRLF ) Reply-code
    [ SP textstring ] CRLF": every line but the last has a hyphen after the code.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._replies: deque[Reply] = deque()

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 2]
            self._take_line(line)

    def _take_line(self, line: bytes) -> None:
        if len(line) < 3 or not line[:3].isdigit():
            raise SmtpError(f"not an SMTP reply line: {line!r}")
        self._lines.append(line)
        if line[3:4] != b"-":
            self._replies.append(Reply(int(line[:3]), tuple(self._lines)))
            self._lines = []

    def next_reply(self) -> Reply | None:
        return self._replies.popleft() if self._replies else None


@dataclass(frozen=True)
class Command:
    """Send `line` (nothing for the greeting) and expect a reply with code `expect`."""

    line: bytes
    expect: int


@dataclass(frozen=True)
class UpgradeToTls:
    """Start the TLS handshake here (after `220` to STARTTLS)."""


Step = Command | UpgradeToTls


def dot_stuff(text: bytes) -> bytes:
    """RFC 5321 section 4.5.2: "If [the first character of a line] is a period, one additional
    period is inserted at the beginning of the line.\""""
    stuffed = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in text.split(b"\r\n"))
    return stuffed


def make_message(size: int) -> bytes:
    """A message of about `size` octets with CRLF line ends, ready for DATA (stuffed, with the
    terminating <CRLF>.<CRLF> of RFC 5321 section 4.1.1.4)."""
    header = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: benchmark\r\n"
        f"Message-ID: <bench@client.test>\r\nMIME-Version: 1.0\r\n\r\n"
    ).encode()
    # 76-character lines, well inside RFC 5322 section 2.1.1's 78 recommended.
    line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopqrst\r\n"
    lines = max(1, (size - len(header)) // len(line))
    return dot_stuff(header + line * lines) + b".\r\n"


def session_script(starttls: bool, messages: int, payload: bytes) -> list[Step]:
    """One whole SMTP session: greeting, EHLO, [STARTTLS, EHLO], `messages` transactions, QUIT."""
    steps: list[Step] = [Command(b"", 220), Command(b"EHLO bench.client.test\r\n", 250)]
    if starttls:
        # RFC 3207 section 4.2: after TLS "the client MUST discard any knowledge obtained from
        # the server" and SHOULD send EHLO again.
        steps += [Command(b"STARTTLS\r\n", 220), UpgradeToTls(), Command(b"EHLO bench.client.test\r\n", 250)]
    transaction = [
        Command(f"MAIL FROM:<{SENDER}>\r\n".encode(), 250),
        Command(f"RCPT TO:<{RECIPIENT}>\r\n".encode(), 250),
        Command(b"DATA\r\n", 354),
        Command(payload, 250),
    ]
    steps += transaction * messages
    steps.append(Command(b"QUIT\r\n", 221))
    return steps


def check(reply: Reply, step: Command) -> None:
    if reply.code != step.expect:
        sent = step.line[:40] if step.line else b"<greeting>"
        raise SmtpError(f"after {sent!r} expected {step.expect}, got {b' / '.join(reply.lines)!r}")


# ---------------------------------------------------------------------------------------------
# asyncio driver for the client.
# ---------------------------------------------------------------------------------------------


async def next_reply(reader: asyncio.StreamReader, parser: ReplyParser) -> Reply:
    while (reply := parser.next_reply()) is None:
        data = await reader.read(65536)
        if not data:
            raise SmtpError("server closed the connection")
        parser.feed(data)
    return reply


async def drive_session(
    port: int, script: Sequence[Step], implicit: ssl.SSLContext | None, starttls: ssl.SSLContext | None
) -> None:
    """Run one scripted session; no pipelining (neither server offers PIPELINING)."""
    server_hostname = HOSTNAME if implicit else None
    reader, writer = await asyncio.open_connection(HOST, port, ssl=implicit, server_hostname=server_hostname)
    parser = ReplyParser()
    try:
        for step in script:
            if isinstance(step, UpgradeToTls):
                assert starttls is not None
                await writer.start_tls(starttls, server_hostname=HOSTNAME)
                continue
            if step.line:
                writer.write(step.line)
            check(await next_reply(reader, parser), step)
    finally:
        await close_quietly(writer)


async def close_quietly(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, ssl.SSLError, OSError):
        pass


async def open_idle(port: int) -> asyncio.StreamWriter:
    """One idle plaintext connection, held after the 220 greeting has been read."""
    reader, writer = await asyncio.open_connection(HOST, port)
    check(await next_reply(reader, ReplyParser()), Command(b"", 220))
    return writer


# ---------------------------------------------------------------------------------------------
# Server processes.
# ---------------------------------------------------------------------------------------------


@dataclass
class Server:
    label: str
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    ready_seconds: float

    @property
    def pid(self) -> int:
        return self.process.pid


LISTENING = re.compile(rb"^listening\s+(\S+)\s+smtp\s+([\d.]+):(\d+)\s+(\S+)")


class LineReader:
    """stdout lines of a child, read with os.read so that select() sees every byte not yet taken
    (a buffered file object would hide lines it has already read ahead)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.process, self.fd, self.buffer = process, process.stdout.fileno(), b""

    def line(self, deadline: float) -> bytes:
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError(f"server pid {self.process.pid} printed no `ready` in {START_TIMEOUT} s")
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise RuntimeError(f"server exited with {self.process.wait()} before `ready`")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line


def launch(label: str, argv: list[str], stderr_file: Path) -> Server:
    """Start a server and return once it printed `ready` and every listener accepts a TCP connect.

    `ready_seconds` is that whole span, from just before Popen.
    """
    with stderr_file.open("ab") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
    try:
        ports = wait_ready(LineReader(process))
        for port in ports.values():
            socket.create_connection((HOST, port), timeout=START_TIMEOUT).close()
    except BaseException:
        stop(process)
        raise
    return Server(label, process, ports, time.perf_counter() - started)


def wait_ready(reader: LineReader) -> dict[str, int]:
    deadline = time.monotonic() + START_TIMEOUT
    ports: dict[str, int] = {}
    while (line := reader.line(deadline).strip()) != b"ready":
        if match := LISTENING.match(line):
            ports[PRINTED_MODES[match.group(4).decode()]] = int(match.group(3))
    if set(ports) != set(MODES):
        raise RuntimeError(f"expected listeners for {MODES}, got {sorted(ports)}")
    return ports


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (both servers stop cleanly on it), then SIGKILL if it lingers; only our own child."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        wait_or_kill(process)
    if process.stdout is not None:
        process.stdout.close()


def ours_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "mailmodes", "serve", "--config", str(config)]


def baseline_argv(certs: Path) -> list[str]:
    if BASELINE["kind"] == "journal-off":
        # The journal's own cost: the same server with [journal] enabled = false as the baseline.
        config = write_config(certs.parent / "journal-off.toml", certs, journal=False, store=False)
        return ours_argv(config)
    if BASELINE["kind"] == "source":
        # mailmodes from another checkout's server/ directory (first on the path), in memory.
        config = write_config(certs.parent / "source.toml", certs, store=False)
        return ["env", f"PYTHONPATH={BASELINE['source']}", *ours_argv(config)]
    return [sys.executable, str(BASELINE_SCRIPT), "--certs", str(certs), "--hostname", HOSTNAME]


BASELINE = {"kind": "aiosmtpd", "source": ""}
OURS = {"durable": False}  # --durable: ours keeps mail in a [store] path directory


def write_config(path: Path, certs: Path, journal: bool = True, store: bool = True) -> Path:
    """Three MTA-role listeners (no AUTH needed; mail to local users is accepted), OS-chosen ports."""
    listeners = "".join(
        f'\n[[listeners]]\nname = "smtp-{name}"\nprotocol = "smtp"\nport = 0\ntls = "{tls}"\nrole = "mta"\n'
        for name, tls in (("plain", "plaintext"), ("starttls", "starttls-optional"), ("implicit", "implicit"))
    )
    path.write_text(
        f'hostname = "{HOSTNAME}"\nhost = "{HOST}"\n\n[certs]\ndir = "{certs}"\n\n'
        # 1,000 idle connections on one listener, all from 127.0.0.1; the defaults are 100 per
        # listener and 20 per client address.
        "[limits]\nmax_connections = 2000\nmax_connections_per_client = 2000\n\n"
        + ("" if journal else "[journal]\nenabled = false\n\n")
        + (f'[store]\npath = "{path.with_suffix(".mail")}"\n\n' if store and OURS["durable"] else "")
        + '[[users]]\nname = "alice"\npassword = "alice-password"\naddresses = ["alice@example.test"]\n'
        + listeners
    )
    return path


# ---------------------------------------------------------------------------------------------
# /proc readings of a server process.
# ---------------------------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (proc(5): fields 14 and 15, after the parenthesised comm)."""
    return proc_stat(pid)[1]


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def raise_fd_limit() -> None:
    """2,000+ sockets in this process; children inherit the raised limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------------------------------------
# Measurements.
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    messages: int
    server_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@dataclass
class Cell:
    mode: str
    sessions: int
    per_session: int
    ours: list[Run] = field(default_factory=list)
    baseline: list[Run] = field(default_factory=list)

    def median_rate(self, runs: list[Run]) -> float:
        return statistics.median(run.rate for run in runs)

    def median_cpu_us(self, runs: list[Run]) -> float:
        return statistics.median(1e6 * run.server_cpu / run.messages for run in runs)

    @property
    def ratio(self) -> float:
        """Median of the per-round ratios: each round's two runs are back to back, so a burst of
        load from elsewhere on the machine hits both alike and cancels out of their ratio."""
        return statistics.median(ours.rate / base.rate for ours, base in zip(self.ours, self.baseline))

    @property
    def ratio_range(self) -> tuple[float, float]:
        ratios = [ours.rate / base.rate for ours, base in zip(self.ours, self.baseline)]
        return min(ratios), max(ratios)

    @property
    def cpu_ratio(self) -> float:
        """Baseline server CPU per message over ours (same direction as `ratio`: < 1 means ours
        costs more). CPU time is far less disturbed by other processes than wall time."""
        return statistics.median(
            (base.server_cpu / base.messages) / max(ours.server_cpu / ours.messages, 1e-9)
            for ours, base in zip(self.ours, self.baseline)
        )


@dataclass(frozen=True)
class ClientTls:
    ca_file: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


async def run_once(server: Server, cell: Cell, tls: ssl.SSLContext, payload: bytes) -> Run:
    script = session_script(cell.mode == "starttls", cell.per_session, payload)
    implicit = tls if cell.mode == "implicit" else None
    port = server.ports[cell.mode]
    cpu_before, own_before, started = cpu_seconds(server.pid), own_cpu_seconds(), time.perf_counter()
    async with asyncio.timeout(CELL_TIMEOUT):
        async with asyncio.TaskGroup() as group:
            for _ in range(cell.sessions):
                group.create_task(drive_session(port, script, implicit, tls))
    seconds = time.perf_counter() - started
    return Run(seconds, cell.sessions * cell.per_session, cpu_seconds(server.pid) - cpu_before,
               own_cpu_seconds() - own_before)


async def throughput(ours: Server, baseline: Server, cells: list[Cell], rounds: int, client: ClientTls,
                     progress: Callable[[str], None]) -> None:
    """Every cell, ours and the baseline back to back, the order flipped each round so neither
    always runs first on a warmed (or cooled) machine."""
    tls, payload = client.context(), make_message(MESSAGE_SIZE)
    warm = Cell("plaintext", 1, 20)
    for server in (ours, baseline):
        await run_once(server, warm, tls, payload)
    for round_index in range(rounds):
        for cell in cells:
            pairs = [(ours, cell.ours), (baseline, cell.baseline)]
            for server, runs in pairs if round_index % 2 == 0 else pairs[::-1]:
                runs.append(await run_once(server, cell, tls, payload))
            progress(f"  round {round_index + 1}/{rounds} {cell.mode:<9} x{cell.sessions:<3} "
                     f"ours {cell.ours[-1].rate:7.0f}/s  baseline {cell.baseline[-1].rate:7.0f}/s")


@dataclass
class Memory:
    before_kib: int
    with_idle_kib: int

    @property
    def increase_kib(self) -> int:
        return self.with_idle_kib - self.before_kib


async def idle_memory(server: Server, tls: ssl.SSLContext, count: int) -> Memory:
    """RSS before and with `count` idle connections. One full session first, so that what the
    first connection allocates once (imports, caches) is not counted as per-connection cost."""
    await drive_session(server.ports["plaintext"], session_script(False, 1, make_message(MESSAGE_SIZE)), None, tls)
    before = rss_kib(server.pid)
    limit = asyncio.Semaphore(CONNECT_BATCH)

    async def one() -> asyncio.StreamWriter:
        async with limit:
            return await open_idle(server.ports["plaintext"])

    async with asyncio.timeout(CELL_TIMEOUT):
        writers = await asyncio.gather(*(one() for _ in range(count)))
    with_idle = rss_kib(server.pid)
    await asyncio.gather(*(close_quietly(writer) for writer in writers))
    return Memory(before, with_idle)


@dataclass
class Startup:
    ours_made: list[float]
    ours_generated: list[float]
    baseline: list[float]


def time_start(label: str, argv: list[str], stderr_file: Path) -> float:
    server = launch(label, argv, stderr_file)
    stop(server.process)
    return server.ready_seconds


def startup(work: Path, certs: Path, stderr_file: Path, runs: int) -> Startup:
    """Certs made: the shared certs dir, made by a first untimed start. Generated: a fresh empty
    certs dir each time, so each start makes a CA and a server key (two RSA-2048 keys)."""
    made_config = write_config(work / "ours.toml", certs)
    time_start("ours", ours_argv(made_config), stderr_file)
    generated: list[float] = []
    for index in range(runs):
        config = write_config(work / f"generated-{index}.toml", work / f"generated-certs-{index}")
        generated.append(time_start("ours", ours_argv(config), stderr_file))
    made = [time_start("ours", ours_argv(made_config), stderr_file) for _ in range(runs)]
    base = [time_start("baseline", baseline_argv(certs), stderr_file) for _ in range(runs)]
    return Startup(made, generated, base)


# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


THROUGHPUT_COLUMNS = ("mode", "sessions", "msgs", "ours/s", "base/s", "ratio", "(range)",
                      "cpu ours", "cpu base", "cpu-ratio", "result")
THROUGHPUT_FORMAT = "{:<10} {:>8} {:>6} {:>8} {:>8} {:>6} {:>11} {:>9} {:>9} {:>9}  {}"


def throughput_row(cell: Cell) -> str:
    low, high = cell.ratio_range
    return THROUGHPUT_FORMAT.format(
        cell.mode, cell.sessions, cell.sessions * cell.per_session,
        f"{cell.median_rate(cell.ours):.0f}", f"{cell.median_rate(cell.baseline):.0f}",
        f"{cell.ratio:.2f}", f"({low:.2f}-{high:.2f})",
        f"{cell.median_cpu_us(cell.ours):.0f}", f"{cell.median_cpu_us(cell.baseline):.0f}",
        f"{cell.cpu_ratio:.2f}", verdict(cell.ratio >= THROUGHPUT_TARGET),
    )


def throughput_table(cells: list[Cell], rounds: int) -> list[str]:
    return [
        (f"Throughput: messages/s (~{MESSAGE_SIZE // 1024} KB each), median of {rounds} rounds; "
         f"target ours/baseline >= {THROUGHPUT_TARGET}"),
        "ratio = median of per-round ours/baseline (lowest-highest round in brackets);",
        "cpu = server CPU us per message; cpu-ratio = base/ours (below 1: ours costs more per message)",
        THROUGHPUT_FORMAT.format(*THROUGHPUT_COLUMNS),
        *(throughput_row(cell) for cell in cells),
    ]


def memory_table(ours: Memory, baseline: Memory) -> list[str]:
    increase = ours.increase_kib / max(1, baseline.increase_kib)
    total = ours.with_idle_kib / baseline.with_idle_kib
    rows = (("ours", ours), ("baseline", baseline))
    return [
        (f"Memory: server RSS with {IDLE_CONNECTIONS} idle plaintext connections; "
         f"target ours/baseline <= {MEMORY_TARGET}"),
        f"{'':<10} {'before KiB':>11} {'with KiB':>10} {'increase':>10} {'KiB/conn':>9}",
        *(f"{name:<10} {m.before_kib:>11} {m.with_idle_kib:>10} {m.increase_kib:>10}"
          f" {m.increase_kib / IDLE_CONNECTIONS:>9.1f}" for name, m in rows),
        f"ratio of increases {increase:.2f}  {verdict(increase <= MEMORY_TARGET)}",
        f"ratio of totals    {total:.2f}  {verdict(total <= MEMORY_TARGET)}",
    ]


def startup_table(result: Startup) -> list[str]:
    made, generated = statistics.median(result.ours_made), statistics.median(result.ours_generated)
    return [
        f"Startup: Popen -> `ready` + TCP connect to every listener, median of {len(result.ours_made)}",
        (f"ours, certs already made   {made:6.3f} s  target < {READY_TARGET_MADE} s"
         f"  {verdict(made < READY_TARGET_MADE)}"),
        (f"ours, certs generated      {generated:6.3f} s  target < {READY_TARGET_GENERATED} s"
         f"  {verdict(generated < READY_TARGET_GENERATED)}"),
        f"baseline (reference)       {statistics.median(result.baseline):6.3f} s",
    ]


def machine_line(load: tuple[float, float]) -> str:
    return (f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, 1-minute load average "
            f"{load[0]:.1f} at start and {load[1]:.1f} at end (other work there widens the ranges)")


def summary(cells: list[Cell], memory: tuple[Memory, Memory], start: Startup, elapsed: float,
            load: tuple[float, float]) -> dict[str, Any]:
    ours_mem, base_mem = memory
    return {
        "targets": {"throughput_ratio_min": THROUGHPUT_TARGET, "memory_ratio_max": MEMORY_TARGET,
                    "ready_made_s_max": READY_TARGET_MADE, "ready_generated_s_max": READY_TARGET_GENERATED},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average_start": load[0], "load_average_end": load[1]},
        "throughput": [
            {"mode": c.mode, "sessions": c.sessions, "messages_per_session": c.per_session,
             "ours_msgs_per_s": round(c.median_rate(c.ours), 1),
             "baseline_msgs_per_s": round(c.median_rate(c.baseline), 1),
             "ratio": round(c.ratio, 3), "ratio_range": [round(r, 3) for r in c.ratio_range],
             "pass": c.ratio >= THROUGHPUT_TARGET, "cpu_ratio": round(c.cpu_ratio, 3),
             "ours_server_cpu_us_per_msg": round(c.median_cpu_us(c.ours), 1),
             "baseline_server_cpu_us_per_msg": round(c.median_cpu_us(c.baseline), 1),
             "ours_runs": [asdict(r) for r in c.ours], "baseline_runs": [asdict(r) for r in c.baseline]}
            for c in cells
        ],
        "memory": {
            "idle_connections": IDLE_CONNECTIONS, "ours": asdict(ours_mem), "baseline": asdict(base_mem),
            "increase_ratio": round(ours_mem.increase_kib / max(1, base_mem.increase_kib), 3),
            "total_ratio": round(ours_mem.with_idle_kib / base_mem.with_idle_kib, 3),
        },
        "startup_s": {
            "ours_certs_made": start.ours_made, "ours_certs_generated": start.ours_generated,
            "baseline": start.baseline, "ours_certs_made_median": statistics.median(start.ours_made),
            "ours_certs_generated_median": statistics.median(start.ours_generated),
            "baseline_median": statistics.median(start.baseline),
        },
        "elapsed_s": round(elapsed, 1),
    }


# ---------------------------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------------------------


def plan(scale: float) -> list[Cell]:
    return [
        Cell(mode, sessions, max(1, round(per_session * scale)))
        for mode in MODES
        for sessions, per_session in MESSAGES_PER_SESSION.items()
    ]


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def measure(work: Path, rounds: int, scale: float) -> tuple[list[Cell], tuple[Memory, Memory], Startup]:
    certs, stderr_file = work / "certs", work / "servers.stderr"
    progress("startup ...")
    start = startup(work, certs, stderr_file, STARTUP_RUNS)
    client = ClientTls(certs / "ca.pem")
    ours = launch("ours", ours_argv(work / "ours.toml"), stderr_file)
    try:
        baseline = launch("baseline", baseline_argv(certs), stderr_file)
        try:
            progress("memory ...")
            memory = (asyncio.run(idle_memory(ours, client.context(), IDLE_CONNECTIONS)),
                      asyncio.run(idle_memory(baseline, client.context(), IDLE_CONNECTIONS)))
            progress("throughput ...")
            cells = plan(scale)
            asyncio.run(throughput(ours, baseline, cells, rounds, client, progress))
        finally:
            stop(baseline.process)
    finally:
        stop(ours.process)
    report_stderr(stderr_file)
    return cells, memory, start


def report_stderr(path: Path) -> None:
    """Anything either server wrote to stderr (warnings, tracebacks) is worth a look."""
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    if text:
        progress(f"server stderr:\n{text[-4000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="repeats of each throughput cell (median)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the messages per session")
    parser.add_argument("--json-out", type=Path, help="also write the JSON summary to this file")
    parser.add_argument("--baseline", choices=("aiosmtpd", "journal-off", "source"), default="aiosmtpd",
                        help="compare with a bare aiosmtpd (default), with mailmodes itself with the journal "
                             "off (the journal's overhead, issue 5), or with the mailmodes in --baseline-source")
    parser.add_argument("--baseline-source", type=Path,
                        help="with --baseline source: the server/ directory of the mailmodes to compare with")
    parser.add_argument("--durable", action="store_true",
                        help="ours keeps mail on disk ([store] path): the durable store's cost")
    args = parser.parse_args(argv)
    if (args.baseline == "source") != (args.baseline_source is not None):
        parser.error("--baseline source and --baseline-source DIR go together")
    BASELINE["kind"] = args.baseline
    BASELINE["source"] = str(args.baseline_source.resolve()) if args.baseline_source else ""
    OURS["durable"] = args.durable
    raise_fd_limit()
    began, load_start = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="smtp-bench-") as tmp:
        cells, memory, start = measure(Path(tmp), args.rounds, args.scale)
    elapsed, load = time.perf_counter() - began, (load_start, os.getloadavg()[0])
    print(machine_line(load) + "\n")
    for block in (throughput_table(cells, args.rounds), memory_table(*memory), startup_table(start)):
        print("\n".join(block) + "\n")
    result = summary(cells, memory, start, elapsed, load)
    print(json.dumps(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0  # a benchmark, not a test: MISS is information, not failure


if __name__ == "__main__":
    sys.exit(main())
