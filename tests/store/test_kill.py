"""Defect 18: kill -9 lost every message. bench/durable_kill.py, small: 20 sessions x 5 messages
into `mailmodes serve` with [store] path (a child process), SIGKILL at a random moment, restart."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "durable_kill.py"


def load_bench() -> object:
    spec = importlib.util.spec_from_file_location("durable_kill", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_acknowledged_message_and_flag_survives_kill_9(tmp_path: Path) -> None:
    bench = load_bench()
    seed = random.randrange(1 << 32)
    result = bench.run(tmp_path, sessions=20, messages=5, seed=seed)  # type: ignore[attr-defined]
    summary = bench.report(result)  # type: ignore[attr-defined]
    assert result.acked > 0, summary
    assert result.passed, f"seed {seed}:\n{summary}\n{(tmp_path / 'server.stderr').read_text(errors='replace')}"


def test_imap_and_pop3_answers_come_after_the_change_is_on_disk(tmp_path: Path) -> None:
    """Kill -9 the moment the last OK is read: APPEND, CREATE, STORE and POP3's QUIT are kept."""
    import imaplib
    import os
    import poplib
    import signal
    import smtplib

    bench = load_bench()
    config = bench.write_config(tmp_path)  # type: ignore[attr-defined]
    server = bench.start_server(config, tmp_path / "server.stderr")  # type: ignore[attr-defined]
    try:
        with smtplib.SMTP("127.0.0.1", server.ports["smtp"], timeout=10) as smtp:
            for subject in ("one", "two", "three"):
                smtp.sendmail("a@client.test", ["alice@example.test"], f"Subject: {subject}\r\n\r\nx\r\n")
        imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"], timeout=10)
        imap.login("alice", "alice-password")
        assert imap.create("Kept")[0] == "OK"
        assert imap.append("Kept", r"(\Seen)", None, b"Subject: appended\r\n\r\nx\r\n")[0] == "OK"
        imap.select("INBOX")
        assert imap.uid("STORE", "2", "+FLAGS", r"(\Answered)")[0] == "OK"
        pop = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=10)
        pop.user("alice")
        pop.pass_("alice-password")
        pop.dele(3)
        assert pop.quit().startswith(b"+OK")
        os.kill(server.process.pid, signal.SIGKILL)  # our own child
        server.process.wait(timeout=30)
        imap.shutdown()
        pop.close()
    finally:
        bench.stop_server(server)  # type: ignore[attr-defined]
    again = bench.start_server(config, tmp_path / "server.stderr")  # type: ignore[attr-defined]
    try:
        imap = imaplib.IMAP4("127.0.0.1", again.ports["imap"], timeout=10)
        imap.login("alice", "alice-password")
        assert imap.status("Kept", "(MESSAGES)")[1] == [b"Kept (MESSAGES 1)"]
        imap.select("INBOX")
        typ, data = imap.uid("FETCH", "1:*", "(FLAGS)")
        assert data == [b"1 (UID 1 FLAGS ())", b"2 (UID 2 FLAGS (\\Answered))"], data
        imap.logout()
    finally:
        bench.stop_server(again)  # type: ignore[attr-defined]
