"""SMTP against its peers in one run: mailmodes, bare aiosmtpd and nodemailer's smtp-server (issue 22).

Not a test: it exits 0 once it has measured and prints PASS/MISS against issue 22's acceptance
lines. Every load runs against the three servers in turn, the order rotated each round, for
--rounds rounds (5 by default); a figure is the median of the per-round ratios, with the lowest
and highest round, because the machine is shared and noisy and back-to-back runs cancel most of it.

    python bench/smtp_peers.py [--rounds 5] [--scale 1.0] [--no-pin] [--smtp-source PATH]
                               [--smtp-server-dir DIR] [--json-out FILE]

The servers (all on 127.0.0.1, ports chosen by the OS, the same certificate files and hostname):
  mailmodes    `python -m mailmodes serve` as bench/smtp_bench.py starts it (journal on);
  aiosmtpd     bench/bare_aiosmtpd.py;
  smtp-server  bench/smtp_server_peer.js under node, with smtp-server 3.x installed by this script
               into a temporary folder (`npm install --prefix TMP smtp-server@3`; never part of
               mailmodes; --smtp-server-dir DIR reuses a folder holding node_modules/smtp-server).

The loads (1 KiB messages, one recipient):
  source-s10, source-s100  Postfix's `smtp-source -d -s N` (N parallel sessions, many messages
                           each), plaintext. Optional: when smtp-source is not found (Debian package
                           postfix, or --smtp-source PATH) these rows say so and are skipped.
  pipelined-{mode}         10 sessions at once, each sending MAIL, RCPT and DATA in one write
                           (RFC 2920 PIPELINING), then the message; plaintext, STARTTLS, implicit.
  single-{mode}            one client, one message per transaction, one command at a time.
  new-connection           one client, a new plaintext connection per message (smtp-server waits
                           100 ms before its greeting, to catch early talkers: its figure is that).
  starttls-sessions        connect, EHLO, STARTTLS, EHLO, QUIT, one after another (sessions/s).
  s_time                   `openssl s_time -new` on the implicit port (full handshakes/s).
  start                    Popen to the first 220 banner read on the plaintext port, certificates
                           already made and bytecode cached (a first, untimed start of each).

With pinning (the default, when the machine has two CPUs or more) each server runs on the last CPU
and the loads on the others, so a server's CPU is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtp_bench import (
    HOST,
    HOSTNAME,
    RECIPIENT,
    SENDER,
    Command,
    ReplyParser,
    Server,
    check,
    close_quietly,
    cpu_seconds,
    drive_session,
    launch,
    make_message,
    next_reply,
    ours_argv,
    raise_fd_limit,
    session_script,
    stop,
    write_config,
)

BENCH = Path(__file__).parent
PEER_SCRIPT = BENCH / "smtp_server_peer.js"
AIOSMTPD_SCRIPT = BENCH / "bare_aiosmtpd.py"
SMTP_SERVER_SPEC = "smtp-server@3"
MESSAGE_SIZE = 1024
SERVERS = ("mailmodes", "aiosmtpd", "smtp-server")
MODES = ("plaintext", "starttls", "implicit")
EHLO = b"EHLO bench.client.test\r\n"
START_RUNS = 5
CELL_TIMEOUT = 120.0


# ---------------------------------------------------------------------------------------------
# The servers.
# ---------------------------------------------------------------------------------------------


@dataclass
class Peers:
    """How to start each server (argv and environment), and the CPUs they and the loads use."""

    work: Path
    certs: Path
    node_path: Path | None
    server_cpus: set[int] | None
    load_cpus: set[int] | None

    def argv(self, name: str) -> list[str]:
        if name == "mailmodes":
            return ours_argv(self.work / "ours.toml")
        if name == "aiosmtpd":
            return [sys.executable, str(AIOSMTPD_SCRIPT), "--certs", str(self.certs), "--hostname", HOSTNAME]
        assert self.node_path is not None
        return ["env", f"NODE_PATH={self.node_path}", "node", str(PEER_SCRIPT), "--certs", str(self.certs),
                "--hostname", HOSTNAME]

    def names(self) -> list[str]:
        return [name for name in SERVERS if name != "smtp-server" or self.node_path is not None]

    def start(self, name: str) -> Server:
        server = launch(name, self.pinned(self.argv(name)), self.work / "servers.stderr")
        return server

    def pinned(self, argv: list[str]) -> list[str]:
        if self.server_cpus is None:
            return argv
        return ["taskset", "--cpu-list", ",".join(map(str, sorted(self.server_cpus))), *argv]


def install_smtp_server(into: Path) -> Path | None:
    """smtp-server 3.x into a temporary folder, with npm's own configuration (registry included)."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        progress("smtp-server: node/npm not found; its columns are skipped")
        return None
    done = subprocess.run([npm, "install", "--prefix", str(into), "--no-save", "--no-package-lock", "--no-audit",
                           "--no-fund", "--loglevel=error", SMTP_SERVER_SPEC],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        progress(f"smtp-server: npm install failed ({done.stderr.strip()[-500:]}); its columns are skipped")
        return None
    return into / "node_modules"


def find_smtp_source(given: str | None) -> list[str] | None:
    """smtp-source from PATH, /usr/sbin or --smtp-source; with LD_LIBRARY_PATH when it is an
    unpacked Debian package (usr/sbin/smtp-source beside usr/lib/postfix)."""
    candidate = given or shutil.which("smtp-source") or ("/usr/sbin/smtp-source" if os.path.exists(
        "/usr/sbin/smtp-source") else None)
    if candidate is None or not os.access(candidate, os.X_OK):
        return None
    libs = Path(candidate).resolve().parent.parent / "lib" / "postfix"
    if libs.is_dir() and not Path("/usr/lib/postfix/libpostfix-util.so").exists():
        return ["env", f"LD_LIBRARY_PATH={libs}", candidate]
    return [candidate]


# ---------------------------------------------------------------------------------------------
# The loads: each takes a server and returns (units done, seconds).
# ---------------------------------------------------------------------------------------------


@dataclass
class Load:
    name: str
    unit: str  # what is counted: messages, sessions, handshakes
    run: Callable[[Server], Awaitable[tuple[int, float]]]
    servers: tuple[str, ...] = SERVERS
    note: str = ""


def transaction(payload: bytes) -> list[Command]:
    return [Command(f"MAIL FROM:<{SENDER}>\r\n".encode(), 250), Command(f"RCPT TO:<{RECIPIENT}>\r\n".encode(), 250),
            Command(b"DATA\r\n", 354), Command(payload, 250)]


async def open_session(port: int, mode: str, tls: ssl.SSLContext) -> tuple[asyncio.StreamReader,
                                                                             asyncio.StreamWriter, ReplyParser]:
    """Connected, greeted and EHLO'd (again after STARTTLS, RFC 3207 section 4.2)."""
    implicit = tls if mode == "implicit" else None
    reader, writer = await asyncio.open_connection(HOST, port, ssl=implicit,
                                                   server_hostname=HOSTNAME if implicit else None)
    parser = ReplyParser()
    check(await next_reply(reader, parser), Command(b"", 220))
    writer.write(EHLO)
    check(await next_reply(reader, parser), Command(EHLO, 250))
    if mode == "starttls":
        writer.write(b"STARTTLS\r\n")
        check(await next_reply(reader, parser), Command(b"STARTTLS\r\n", 220))
        await writer.start_tls(tls, server_hostname=HOSTNAME)
        writer.write(EHLO)
        check(await next_reply(reader, parser), Command(EHLO, 250))
    return reader, writer, parser


async def pipelined_session(port: int, mode: str, tls: ssl.SSLContext, messages: int, payload: bytes) -> None:
    """RFC 2920: MAIL, RCPT and DATA in one write (all three servers take it), then the message."""
    reader, writer, parser = await open_session(port, mode, tls)
    mail, rcpt, data, body = transaction(payload)
    try:
        for _ in range(messages):
            writer.write(mail.line + rcpt.line + data.line)
            for step in (mail, rcpt, data):
                check(await next_reply(reader, parser), step)
            writer.write(body.line)
            check(await next_reply(reader, parser), body)
        writer.write(b"QUIT\r\n")
        check(await next_reply(reader, parser), Command(b"QUIT\r\n", 221))
    finally:
        await close_quietly(writer)


def timed(body: Callable[[Server], Awaitable[int]]) -> Callable[[Server], Awaitable[tuple[int, float]]]:
    async def run(server: Server) -> tuple[int, float]:
        started = time.perf_counter()
        async with asyncio.timeout(CELL_TIMEOUT):
            units = await body(server)
        return units, time.perf_counter() - started
    return run


def loads(scale: float, tls: ssl.SSLContext, smtp_source: list[str] | None, s_time_seconds: float) -> list[Load]:
    payload = make_message(MESSAGE_SIZE)
    n = lambda count: max(1, round(count * scale))  # noqa: E731

    def pipelined(mode: str) -> Load:
        sessions, each = 10, n(100)

        async def body(server: Server) -> int:
            async with asyncio.TaskGroup() as group:
                for _ in range(sessions):
                    group.create_task(pipelined_session(server.ports[mode], mode, tls, each, payload))
            return sessions * each
        return Load(f"pipelined-{mode}", "msgs", timed(body))

    def single(mode: str) -> Load:
        count = n(600)
        script = session_script(mode == "starttls", count, payload)

        async def body(server: Server) -> int:
            await drive_session(server.ports[mode], script, tls if mode == "implicit" else None, tls)
            return count
        return Load(f"single-{mode}", "msgs", timed(body))

    async def new_connection(server: Server) -> int:
        # smtp-server holds each greeting 100 ms: fewer connections there keep the run short.
        count = n(30) if server.label == "smtp-server" else n(300)
        script = session_script(False, 1, payload)
        for _ in range(count):
            await drive_session(server.ports["plaintext"], script, None, None)
        return count

    async def starttls_sessions(server: Server) -> int:
        # 1,000 (~2.5 s a cell): with 200 the ratio of two servers within a few percent of each
        # other moved by as much from round to round.
        count = n(30) if server.label == "smtp-server" else n(1000)
        for _ in range(count):
            reader, writer, parser = await open_session(server.ports["starttls"], "starttls", tls)
            writer.write(b"QUIT\r\n")
            check(await next_reply(reader, parser), Command(b"QUIT\r\n", 221))
            await close_quietly(writer)
        return count

    async def s_time(server: Server) -> tuple[int, float]:
        return await run_s_time(server.ports["implicit"], s_time_seconds)

    result: list[Load] = []
    for sessions in (10, 100):
        result.append(Load(f"source-s{sessions}", "msgs", source_load(smtp_source, sessions, n(2000 if sessions == 10
                                                                                              else 3000)),
                           note="" if smtp_source else "smtp-source missing"))
    result += [pipelined(mode) for mode in MODES]
    result += [single(mode) for mode in MODES]
    result.append(Load("new-connection", "msgs", timed(new_connection)))
    result.append(Load("starttls-sessions", "sess", timed(starttls_sessions)))
    result.append(Load("s_time", "hs", s_time))
    return result


def source_load(argv: list[str] | None, sessions: int, messages: int) -> Callable[[Server], Awaitable[tuple[int, float]]]:
    async def run(server: Server) -> tuple[int, float]:
        assert argv is not None
        command = [*argv, "-d", "-s", str(sessions), "-m", str(messages), "-l", str(MESSAGE_SIZE),
                   "-M", "bench.client.test", "-f", SENDER, "-t", RECIPIENT, f"{HOST}:{server.ports['plaintext']}"]
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL,
                                                       stderr=asyncio.subprocess.PIPE)
        _, errors = await asyncio.wait_for(process.communicate(), CELL_TIMEOUT)
        seconds = time.perf_counter() - started
        if process.returncode != 0 or errors.strip():
            raise RuntimeError(f"smtp-source against {server.label}: {errors.decode(errors='replace')[-300:]}")
        return messages, seconds
    return run


S_TIME_COUNT = re.compile(rb"(\d+) connections in [\d.]+s")


async def run_s_time(port: int, seconds: float) -> tuple[int, float]:
    """Full handshakes (-new: no session reuse) for `seconds`; counted from s_time's first
    summary line, over the wall time of the whole run (its own "real seconds" are whole seconds)."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        "openssl", "s_time", "-connect", f"{HOST}:{port}", "-new", "-time", str(max(1, round(seconds))),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await asyncio.wait_for(process.communicate(), CELL_TIMEOUT)
    elapsed = time.perf_counter() - started
    match = S_TIME_COUNT.search(output)
    if match is None:
        raise RuntimeError(f"openssl s_time printed no count: {output.decode(errors='replace')[-300:]}")
    return int(match.group(1)), elapsed


# ---------------------------------------------------------------------------------------------
# Start to first banner.
# ---------------------------------------------------------------------------------------------


def start_to_banner(peers: Peers, name: str) -> tuple[float, float]:
    """Popen to the 220 greeting read on the plaintext port (launch waits for `ready` and a connect
    to every listener first, then the banner is read), and on to the reply to an EHLO sent then
    (mailmodes' early start greets before its SMTP code is imported: this says when it answers)."""
    started = time.perf_counter()
    server = peers.start(name)
    try:
        with socket.create_connection((HOST, server.ports["plaintext"]), timeout=30) as sock:
            parser = ReplyParser()

            def reply() -> Any:
                while (complete := parser.next_reply()) is None:
                    parser.feed(sock.recv(4096))
                return complete

            check(reply(), Command(b"", 220))
            banner = time.perf_counter() - started
            sock.sendall(EHLO)
            check(reply(), Command(EHLO, 250))
        return banner, time.perf_counter() - started
    finally:
        stop(server.process)


# ---------------------------------------------------------------------------------------------
# Rounds, figures and report.
# ---------------------------------------------------------------------------------------------


@dataclass
class Cell:
    load: Load
    rates: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)  # server CPU us per unit

    def ratios(self, ours: str, other: str) -> list[float]:
        return [a / b for a, b in zip(self.rates.get(ours, []), self.rates.get(other, []))]


def figure(ratios: list[float]) -> str:
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


async def measure_round(peers: Peers, running: dict[str, Server], cells: list[Cell], round_index: int) -> None:
    names = list(running)
    for cell in cells:
        if cell.load.note:
            continue
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            if name not in cell.load.servers:
                continue
            server = running[name]
            cpu_before = cpu_seconds(server.pid)
            units, seconds = await cell.load.run(server)
            cpu = cpu_seconds(server.pid) - cpu_before
            cell.rates.setdefault(name, []).append(units / seconds)
            cell.cpu.setdefault(name, []).append(1e6 * cpu / units)
        rates = "  ".join(f"{n} {cell.rates[n][-1]:8.0f}/s" for n in names if n in cell.rates)
        progress(f"  round {round_index + 1} {cell.load.name:<20} {rates}")


def measure(peers: Peers, cells: list[Cell], rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    names = peers.names()
    for name in names:  # certificates made, bytecode cached: the first start is not timed
        start_to_banner(peers, name)
    starts: dict[str, list[float]] = {name: [] for name in names}
    replies: dict[str, list[float]] = {name: [] for name in names}
    running = {name: peers.start(name) for name in names}
    try:
        warm = Load("warm", "msgs", timed(lambda server: warm_up(server)))
        asyncio.run(measure_warm(running, warm))
        for round_index in range(rounds):
            asyncio.run(measure_round(peers, running, cells, round_index))
    finally:
        for server in running.values():
            stop(server.process)
    for index in range(START_RUNS):
        for name in names[index % len(names):] + names[:index % len(names)]:
            banner, reply = start_to_banner(peers, name)
            starts[name].append(banner)
            replies[name].append(reply)
    return starts, replies


async def warm_up(server: Server) -> int:
    payload = make_message(MESSAGE_SIZE)
    for mode in MODES:
        tls = CLIENT_TLS["context"]
        await drive_session(server.ports[mode], session_script(mode == "starttls", 20, payload),
                            tls if mode == "implicit" else None, tls)
    return 60


async def measure_warm(running: dict[str, Server], warm: Load) -> None:
    for server in running.values():
        await warm.run(server)


CLIENT_TLS: dict[str, Any] = {}

# Issue 22's acceptance: (load, against, minimum ratio mailmodes/against).
ACCEPTANCE = [
    *((f"source-s{n}", "smtp-server") for n in (10, 100)),
    *((f"pipelined-{mode}", "smtp-server") for mode in MODES),
    *((f"single-{mode}", "smtp-server") for mode in MODES),
    ("s_time", "aiosmtpd"),
    ("starttls-sessions", "aiosmtpd"),
]


def report(cells: list[Cell], starts: dict[str, list[float]], replies: dict[str, list[float]],
           rounds: int) -> tuple[list[str], dict[str, Any]]:
    lines = [f"Ratios mailmodes/peer (higher is better), median of {rounds} interleaved rounds (lowest-highest);",
             "rates are medians; cpu = server CPU us per unit (cpu-ratio = peer/mailmodes, higher is better)",
             f"{'load':<20} {'unit':<5} {'mailmodes':>10} {'aiosmtpd':>9} {'smtp-srv':>9}  "
             f"{'/ smtp-server':<18} {'/ aiosmtpd':<18} {'cpu / smtp-srv':<18} {'cpu / aiosmtpd':<18}"]
    data: dict[str, Any] = {"rounds": rounds, "loads": {}, "start_s": starts, "start_to_ehlo_reply_s": replies}
    for cell in cells:
        if cell.load.note:
            lines.append(f"{cell.load.name:<20} skipped: {cell.load.note} (Debian package postfix, or --smtp-source)")
            continue
        rate = {n: statistics.median(r) for n, r in cell.rates.items()}
        cpu_ratio = {other: [b / a for a, b in zip(cell.cpu["mailmodes"], cell.cpu.get(other, []))]
                     for other in ("smtp-server", "aiosmtpd")}
        lines.append(
            f"{cell.load.name:<20} {cell.load.unit:<5} {rate.get('mailmodes', 0):>10.0f} {rate.get('aiosmtpd', 0):>9.0f}"
            f" {rate.get('smtp-server', 0):>9.0f}  {figure(cell.ratios('mailmodes', 'smtp-server')):<18}"
            f" {figure(cell.ratios('mailmodes', 'aiosmtpd')):<18} {figure(cpu_ratio['smtp-server']):<18}"
            f" {figure(cpu_ratio['aiosmtpd']):<18}")
        data["loads"][cell.load.name] = {"unit": cell.load.unit, "rates": cell.rates, "cpu_us": cell.cpu}
    lines.append("")
    lines.append(f"Start to first banner (certificates made, bytecode cached), median of {START_RUNS} (range):")
    for name, values in starts.items():
        lines.append(f"  {name:<12} {1000 * statistics.median(values):6.0f} ms"
                     f" ({1000 * min(values):.0f}-{1000 * max(values):.0f})")
    ratio_start = [a / b for a, b in zip(starts["mailmodes"], starts["aiosmtpd"])]
    lines.append(f"  mailmodes/aiosmtpd time {figure(ratio_start)} (lower is better)")
    lines.append(f"Start to the reply to the first EHLO (information), median of {START_RUNS} (range):")
    for name, values in replies.items():
        lines.append(f"  {name:<12} {1000 * statistics.median(values):6.0f} ms"
                     f" ({1000 * min(values):.0f}-{1000 * max(values):.0f})")
    lines.append("")
    lines.append("Issue 22 acceptance:")
    by_name = {cell.load.name: cell for cell in cells}
    verdicts: dict[str, bool | None] = {}
    for load, other in ACCEPTANCE:
        cell = by_name.get(load)
        if cell is None:
            continue
        ratios = cell.ratios("mailmodes", other)
        ok = statistics.median(ratios) >= 1.0 if ratios else None
        verdicts[f"{load}/{other}"] = ok
        lines.append(f"  {load + ' vs ' + other:<36} {figure(ratios):<18} "
                     f"{'skipped' if ok is None else 'PASS' if ok else 'MISS'}")
    ok = bool(ratio_start) and statistics.median(starts["mailmodes"]) <= statistics.median(starts["aiosmtpd"])
    verdicts["start"] = ok
    lines.append(f"  {'start to banner <= aiosmtpd':<36} {figure(ratio_start):<18} {'PASS' if ok else 'MISS'}")
    data["acceptance"] = verdicts
    return lines, data


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cpu_split(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    return {cpus[-1]}, set(cpus[:-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the work of every load")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and loads to separate CPUs")
    parser.add_argument("--smtp-source", help="path of Postfix's smtp-source (default: PATH, /usr/sbin)")
    parser.add_argument("--smtp-server-dir", type=Path, help="a folder with node_modules/smtp-server already in it")
    parser.add_argument("--only", help="comma-separated load names to run (default: all)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    raise_fd_limit()
    server_cpus, load_cpus = cpu_split(not args.no_pin)
    if load_cpus:
        os.sched_setaffinity(0, load_cpus)  # this process and the loads it starts (smtp-source, s_time)
    smtp_source = find_smtp_source(args.smtp_source)
    if smtp_source is None:
        progress("smtp-source: NOT FOUND (Debian package postfix, or --smtp-source PATH): "
                 "the source-s10 and source-s100 rows are skipped")
    with tempfile.TemporaryDirectory(prefix="smtp-peers-") as tmp:
        work = Path(tmp)
        # "With cached bytecode": every Python server (and aiosmtpd's site-packages alike) writes
        # and reads its bytecode under one folder of this run, filled by the untimed first starts.
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        node_path = (args.smtp_server_dir / "node_modules" if args.smtp_server_dir
                     else install_smtp_server(work / "npm"))
        certs = work / "certs"
        write_config(work / "ours.toml", certs)
        peers = Peers(work, certs, node_path, server_cpus, load_cpus)
        start_to_banner(peers, "mailmodes")  # makes the certificates the others load
        tls = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        CLIENT_TLS["context"] = tls
        cells = [Cell(load) for load in loads(args.scale, tls, smtp_source, max(1.0, 2.0 * args.scale))]
        if args.only:
            wanted = set(args.only.split(","))
            cells = [cell for cell in cells if cell.load.name in wanted]
        progress(f"servers: {', '.join(peers.names())}; pinned: server CPUs {server_cpus}, load CPUs {load_cpus}")
        starts, replies = measure(peers, cells, args.rounds)
        stderr = (work / "servers.stderr").read_text(errors="replace").strip()
        if stderr:
            progress(f"server stderr:\n{stderr[-3000:]}")
    lines, data = report(cells, starts, replies, args.rounds)
    data["machine"] = {"cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
                       "smtp_source": smtp_source is not None, "pinned": server_cpus is not None}
    print("\n".join(lines))
    print(json.dumps(data))
    if args.json_out:
        args.json_out.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
