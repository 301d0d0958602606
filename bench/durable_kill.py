"""kill -9 against the durable store: is every message that got a 250 there after a restart,
exactly once, with the flags an IMAP client was told it set?

    python bench/durable_kill.py [--sessions 200] [--messages 20] [--seed N] [--json-out FILE]

What it does, all on 127.0.0.1:

  1. starts `mailmodes serve` (a child process) with `[store] path` in a temporary directory, an
     SMTP listener and an IMAP listener, and reads its `ready` line;
  2. runs --sessions concurrent SMTP sessions of --messages messages each to alice, every message
     with a subject of its own; meanwhile an IMAP client keeps setting \\Flagged and $Kept on some
     of alice's messages (UID STORE) and notes each STORE the server answered OK;
  3. sends the server SIGKILL when a number of 250s drawn at random (--seed) has come back, in
     the middle of everything;
  4. starts the server again on the same directory and reads everything back over IMAP.

It passes when every acknowledged message is there exactly once, no message is there twice,
every acknowledged flag change is there on the same UID, and UIDVALIDITY is unchanged. Messages
whose DATA was sent but whose 250 never came may or may not be there (both are correct: the
client was never told); their count is printed. Exit status 0 on a pass, 1 otherwise.
tests/store/test_kill.py runs the same with 20 x 5.
"""

from __future__ import annotations

import argparse
import asyncio
import imaplib
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
LISTENING = re.compile(r"^listening\s+(\S+)\s+(\w+)\s+[\d.]+:(\d+)\s")
SUBJECT = re.compile(rb"Subject: (durable s\d+ m\d+)", re.IGNORECASE)


def write_config(work: Path) -> Path:
    config = work / "durable.toml"
    config.write_text(
        f'hostname = "mail.example.test"\nhost = "{HOST}"\n\n[certs]\ndir = "{work / "certs"}"\n\n'
        f'[store]\npath = "{work / "mail"}"\n\n'
        # Every session comes from 127.0.0.1; the defaults are 100 per listener and 20 per client.
        "[limits]\nmax_connections = 2000\nmax_connections_per_client = 2000\n\n"
        '[[users]]\nname = "alice"\npassword = "alice-password"\naddresses = ["alice@example.test"]\n\n'
        '[[listeners]]\nname = "smtp"\nprotocol = "smtp"\nport = 0\ntls = "plaintext"\nrole = "mta"\n\n'
        '[[listeners]]\nname = "imap"\nprotocol = "imap"\nport = 0\ntls = "plaintext"\n\n'
        '[[listeners]]\nname = "pop3"\nprotocol = "pop3"\nport = 0\ntls = "plaintext"\n'
    )
    return config


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    ports: dict[str, int]
    ready_seconds: float


def start_server(config: Path, stderr: Path) -> Server:
    """`mailmodes serve` in a child process; returns once it printed `ready` (never a sleep)."""
    started = time.perf_counter()
    with stderr.open("ab") as errors:
        process = subprocess.Popen([sys.executable, "-m", "mailmodes", "serve", "--config", str(config)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
    assert process.stdout is not None
    fd, buffer, ports = process.stdout.fileno(), b"", {}
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        while b"\n" not in buffer:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(fd, 4096) if ready else b""
            if not chunk:
                process.kill()
                process.wait()
                raise RuntimeError(f"the server printed no `ready` (see {stderr})")
            buffer += chunk
        line, _, buffer = buffer.partition(b"\n")
        text = line.decode(errors="replace").strip()
        if text == "ready":
            return Server(process, ports, time.perf_counter() - started)
        if match := LISTENING.match(text):
            ports[match.group(1)] = int(match.group(3))


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    if server.process.stdout is not None:
        server.process.stdout.close()


# --- load: SMTP sessions, an IMAP flagger -------------------------------------------------------


@dataclass
class Load:
    acked: list[str] = field(default_factory=list)  # subjects that got 250 after DATA
    in_doubt: list[str] = field(default_factory=list)  # DATA sent, the server killed before the 250
    flagged: set[int] = field(default_factory=set)  # UIDs whose STORE got OK
    uidvalidity: int = 0
    killed_at: float = 0.0  # seconds after the load began
    started: float = 0.0


class Killer:
    """SIGKILL once `after_acks` 250s came back, `jitter` seconds later: an acknowledgement comes
    right after a commit, when no delivery waits for one, so a kill at that instant would always
    fall between commits; the jitter puts it anywhere."""

    def __init__(self, server: Server, after_acks: int, jitter: float, load: Load) -> None:
        self.server, self.after_acks, self.jitter, self.load = server, after_acks, jitter, load
        self.armed = self.done = False

    def acked(self) -> None:
        if not self.armed and len(self.load.acked) >= self.after_acks:
            self.armed = True
            asyncio.get_running_loop().call_later(self.jitter, self.kill)

    def kill(self) -> None:
        if not self.done:
            self.done = True
            os.kill(self.server.process.pid, signal.SIGKILL)  # our own child, by its pid
            self.load.killed_at = time.perf_counter() - self.load.started


def message(subject: str) -> bytes:
    body = b"durable mail, line after line of it, so the message has some size\r\n" * 12
    text = (f"From: <load@client.test>\r\nTo: <alice@example.test>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@client.test>\r\n\r\n").encode() + body
    return text + b".\r\n"


async def reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return int(line[:3])


async def smtp_session(port: int, index: int, count: int, load: Load, killer: Killer) -> None:
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return
    try:
        if await reply(reader) != 220:
            return
        writer.write(b"EHLO load.client.test\r\n")
        await reply(reader)
        for n in range(count):
            subject = f"durable s{index} m{n}"
            for command, expected in ((b"MAIL FROM:<load@client.test>\r\n", 250),
                                      (b"RCPT TO:<alice@example.test>\r\n", 250), (b"DATA\r\n", 354)):
                writer.write(command)
                if await reply(reader) != expected:
                    return
            writer.write(message(subject))
            load.in_doubt.append(subject)
            code = await reply(reader)
            load.in_doubt.remove(subject)
            if code != 250:
                return
            load.acked.append(subject)
            killer.acked()
        writer.write(b"QUIT\r\n")
    except (ConnectionError, OSError, ValueError):
        pass  # the kill
    finally:
        writer.close()


def close_quietly(client: imaplib.IMAP4) -> None:
    try:
        client.shutdown()
    except OSError:
        pass  # the server is gone, or already closed it


def flagger(port: int, load: Load, stop: threading.Event, rng: random.Random) -> None:
    """Sets \\Flagged $Kept on a few of alice's messages at a time, until the kill ends it."""
    client: imaplib.IMAP4 | None = None
    try:
        client = imaplib.IMAP4(HOST, port, timeout=30)
        client.login("alice", "alice-password")
        client.select("INBOX")
        load.uidvalidity = int(client.response("UIDVALIDITY")[1][0] or 0)
        while not stop.is_set():
            typ, data = client.uid("SEARCH", "ALL")
            uids = [int(uid) for uid in (data[0] or b"").split()] if typ == "OK" else []
            chosen = rng.sample(uids, min(5, len(uids)))
            if chosen:
                typ, _ = client.uid("STORE", ",".join(map(str, chosen)), "+FLAGS.SILENT", r"(\Flagged $Kept)")
                if typ == "OK":
                    load.flagged.update(chosen)
            stop.wait(0.02)  # pacing, so the flagger does not starve the deliveries
    except (imaplib.IMAP4.abort, imaplib.IMAP4.error, OSError):
        pass  # the kill
    finally:
        if client is not None:
            close_quietly(client)


async def drive(server: Server, sessions: int, messages: int, kill_after: int, rng: random.Random) -> Load:
    load = Load(started=time.perf_counter())
    killer = Killer(server, kill_after, rng.uniform(0, 0.05), load)
    stop = threading.Event()
    flagging = threading.Thread(target=flagger, args=(server.ports["imap"], load, stop, rng), daemon=True)
    flagging.start()
    await asyncio.gather(*(smtp_session(server.ports["smtp"], i, messages, load, killer) for i in range(sessions)))
    if not killer.done:  # every message went through first: kill now (a restart must keep it all)
        killer.kill()
    stop.set()
    flagging.join(timeout=60)
    return load


# --- check ------------------------------------------------------------------------------------


@dataclass
class Result:
    sessions: int
    messages_per_session: int
    kill_after_acks: int
    acked: int
    in_doubt: int
    in_doubt_present: int
    present: int
    acked_missing: list[str]
    duplicates: list[str]
    flagged_acked: int
    flags_missing: list[int]
    uidvalidity_kept: bool
    acked_per_second: float
    killed_at_s: float
    restart_ready_s: float
    first_ready_s: float

    @property
    def passed(self) -> bool:
        return not self.acked_missing and not self.duplicates and not self.flags_missing and self.uidvalidity_kept


def read_back(port: int) -> tuple[int, dict[str, list[tuple[int, bytes]]]]:
    """UIDVALIDITY, and subject -> [(uid, flags)] of every message in alice's INBOX."""
    client = imaplib.IMAP4(HOST, port, timeout=60)
    try:
        client.login("alice", "alice-password")
        client.select("INBOX", readonly=True)
        uidvalidity = int(client.response("UIDVALIDITY")[1][0] or 0)
        typ, data = client.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    finally:
        close_quietly(client)
    found: dict[str, list[tuple[int, bytes]]] = {}
    for item in data:
        if isinstance(item, tuple):
            uid = int(re.search(rb"UID (\d+)", item[0]).group(1))  # type: ignore[union-attr]
            flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
            subject = SUBJECT.search(item[1])
            if subject is not None:
                found.setdefault(subject.group(1).decode(), []).append((uid, flags.group(1) if flags else b""))
    return uidvalidity, found


def run(work: Path, sessions: int, messages: int, seed: int | None = None) -> Result:
    rng = random.Random(seed)
    total = sessions * messages
    kill_after = rng.randint(max(1, total // 10), max(1, total * 9 // 10))
    config, stderr = write_config(work), work / "server.stderr"
    server = start_server(config, stderr)
    first_ready = server.ready_seconds
    try:
        load = asyncio.run(drive(server, sessions, messages, kill_after, rng))
    finally:
        server.process.wait(timeout=30)
        if server.process.stdout is not None:
            server.process.stdout.close()
    again = start_server(config, stderr)
    try:
        uidvalidity, found = read_back(again.ports["imap"])
    finally:
        stop_server(again)
    by_uid = {uid: flags for entries in found.values() for uid, flags in entries}
    return Result(
        sessions=sessions, messages_per_session=messages, kill_after_acks=kill_after,
        acked=len(load.acked), in_doubt=len(load.in_doubt),
        in_doubt_present=sum(1 for subject in load.in_doubt if subject in found),
        present=sum(len(entries) for entries in found.values()),
        acked_missing=sorted(subject for subject in load.acked if subject not in found),
        duplicates=sorted(subject for subject, entries in found.items() if len(entries) > 1),
        flagged_acked=len(load.flagged),
        flags_missing=sorted(uid for uid in load.flagged
                             if b"\\Flagged" not in by_uid.get(uid, b"") or b"$Kept" not in by_uid.get(uid, b"")),
        uidvalidity_kept=load.uidvalidity == uidvalidity and uidvalidity != 0,
        acked_per_second=round(len(load.acked) / max(load.killed_at, 1e-9), 1),
        killed_at_s=round(load.killed_at, 3), restart_ready_s=round(again.ready_seconds, 3),
        first_ready_s=round(first_ready, 3),
    )


def report(result: Result) -> str:
    return "\n".join([
        f"durable kill -9: {result.sessions} sessions x {result.messages_per_session} messages, "
        f"SIGKILL after {result.kill_after_acks} acknowledgements ({result.killed_at_s} s into the load)",
        f"  acknowledged (250)          {result.acked}  ({result.acked_per_second}/s until the kill)",
        f"  in doubt (DATA sent, no reply) {result.in_doubt}, of them there after the restart {result.in_doubt_present}",
        f"  there after the restart     {result.present}",
        f"  acknowledged but missing    {len(result.acked_missing)}  {result.acked_missing[:5]}",
        f"  there more than once        {len(result.duplicates)}  {result.duplicates[:5]}",
        f"  flag changes acknowledged   {result.flagged_acked} UIDs, missing after the restart "
        f"{len(result.flags_missing)} {result.flags_missing[:5]}",
        f"  UIDVALIDITY kept            {result.uidvalidity_kept}",
        f"  restart to `ready` (reads the store back) {result.restart_ready_s} s (first start {result.first_ready_s} s)",
        f"  {'PASS' if result.passed else 'FAIL'}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--messages", type=int, default=20, help="per session")
    parser.add_argument("--seed", type=int, help="the random kill moment (default: a new one each run)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="durable-kill-") as tmp:
        result = run(Path(tmp), args.sessions, args.messages, args.seed)
        errors = (Path(tmp) / "server.stderr").read_text(errors="replace").strip()
    print(report(result))
    if errors:
        print(f"server stderr (last 2000 characters):\n{errors[-2000:]}", file=sys.stderr)
    if args.json_out:
        args.json_out.write_text(json.dumps({**asdict(result), "passed": result.passed}, indent=2) + "\n")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
