"""Issue 16, defect 17: a delivery wakes every IDLE session of the mailbox, and each one must not
pay for the size of the mailbox (it compared every message's flags: 20 sessions on 4,500
messages made each delivery 6-13x slower). Sans-I/O: the sessions' own work is what is timed."""

from __future__ import annotations

import gc
import time

from imap.imap_harness import Client, client
from support import make_store

SESSIONS = 20
DELIVERIES = 20


def idling(size: int) -> tuple[list[Client], object]:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    for number in range(size):
        inbox.append(b"Subject: %d\r\n\r\nbody\r\n" % number)
    sessions = [client(store) for _ in range(SESSIONS)]
    for session in sessions:
        session.login()
        session.select()
        assert session.send(b"I IDLE\r\n") == b"+ idling\r\n"
    return sessions, inbox


def delivery_cost(size: int) -> float:
    """Seconds for DELIVERIES deliveries, each reported to every IDLE session (the best of five
    rounds, without the cyclic GC, whose pauses depend on everything else alive)."""
    sessions, inbox = idling(size)
    rounds = []
    gc.disable()
    try:
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(DELIVERIES):
                inbox.append(b"Subject: new\r\n\r\nnew\r\n")  # type: ignore[attr-defined]
                for session in sessions:
                    assert session.wake().startswith(b"* ")
            rounds.append(time.perf_counter() - started)
    finally:
        gc.enable()
    return min(rounds)


def test_a_delivery_costs_idle_sessions_the_same_in_a_full_mailbox() -> None:
    delivery_cost(10)  # warm up
    small = delivery_cost(45)
    large = delivery_cost(4500)
    assert large < 4 * small, f"{large / small:.1f}x slower with 100x the messages"


def test_flag_changes_are_still_reported_to_idle_sessions() -> None:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    for number in range(3):
        inbox.append(b"Subject: %d\r\n\r\nbody\r\n" % number)
    watcher, changer = client(store), client(store)
    for session in (watcher, changer):
        session.login()
        session.select()
    assert watcher.send(b"I IDLE\r\n") == b"+ idling\r\n"
    changer.send(b"s STORE 2 +FLAGS.SILENT (\\Flagged)\r\n")
    assert watcher.wake() == b"* 2 FETCH (FLAGS (\\Flagged \\Recent))\r\n"
    inbox.append(b"Subject: new\r\n\r\nnew\r\n")
    assert watcher.wake().startswith(b"* 4 EXISTS\r\n")
