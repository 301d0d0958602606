"""The store's behaviour, the same tests against both implementations: the memory store and the
durable one ([store] path). For the durable store every test also reopens the directory, as a
restart does, and checks that what it reads back is what was there (`reopened`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mailmodes.disk_store import DiskStore
from mailmodes.store import Store, StoreInterface

HELLO = b"Subject: hello\r\n\r\nhi\r\n"


def state(store: Store) -> dict[str, object]:
    """Everything a restart must keep, as plain values (\\Recent is per session, not kept)."""
    return {
        name: {
            "subscriptions": sorted(account.subscriptions),
            "mailboxes": {
                box_name: (box.uidvalidity, box.uidnext, box.highest_modseq,
                           [(m.uid, m.data, sorted(m.flags), m.modseq, m.internal_date) for m in box.messages])
                for box_name, box in account.mailboxes.items()
            },
        }
        for name, account in store.accounts.items()
    }


def open_store(kind: str, path: Path) -> Store:
    store = Store() if kind == "memory" else DiskStore(path)
    store.add_account("alice", "alice-password", ["alice@example.test"])
    store.add_account("bob", "bob-password", ["bob@example.test"])
    return store


@pytest.fixture(params=["memory", "disk"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(kind: str, tmp_path: Path) -> Store:
    return open_store(kind, tmp_path / "store")


@pytest.fixture
def reopened(kind: str, store: Store, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """reopened() -> the store as a restart finds it: for the durable store, flushed and read
    back from its directory (checked equal to the one before); the memory store is itself."""

    def reopen() -> Store:
        asyncio.run(store.flush())
        if kind == "memory":
            return store
        again = open_store(kind, tmp_path / "store")
        assert state(again) == state(store)
        return again

    yield reopen
    reopen()  # whatever a test left is kept too


def test_both_implement_the_interface(store: Store) -> None:
    typed: StoreInterface = store
    assert typed.accounts["alice"].inbox.name == "INBOX"


def test_uids_flags_and_modseqs_survive(store: Store, reopened: Callable[[], Store]) -> None:
    inbox = store.accounts["alice"].inbox
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    first = inbox.append(HELLO, ["\\Seen", "\\Recent", "$Label"], when)
    second = inbox.append(b"Subject: two\r\n\r\n2\r\n")
    inbox.set_flags(second, {"\\Flagged", "\\Answered"})
    assert (first.uid, second.uid, inbox.uidnext) == (1, 2, 3)
    assert first.flags == {"\\Seen", "$Label"}
    assert second.modseq == inbox.highest_modseq > first.modseq
    uidvalidity = inbox.uidvalidity
    again = reopened().accounts["alice"].inbox
    assert again.uidvalidity == uidvalidity
    assert [m.uid for m in again.messages] == [1, 2]
    assert again.messages[0].internal_date == when
    assert again.messages[1].flags == {"\\Flagged", "\\Answered"}


def test_expunged_uids_are_never_given_again(store: Store, reopened: Callable[[], Store]) -> None:
    inbox = store.accounts["alice"].inbox
    for n in range(3):
        inbox.append(b"Subject: %d\r\n\r\nx\r\n" % n)
    modseq = inbox.highest_modseq
    assert inbox.expunge([1, 3, 99]) == [1, 3]
    assert inbox.highest_modseq > modseq
    again = reopened().accounts["alice"].inbox
    assert [m.uid for m in again.messages] == [2]
    assert again.append(HELLO).uid == 4


def test_mailboxes_created_renamed_and_deleted(store: Store, reopened: Callable[[], Store]) -> None:
    alice = store.accounts["alice"]
    odd = ["Archive/2024", ".hidden", "..", "cur", "Ünïcode &-", "a%2Fb", "INBOX.child"]
    for name in odd:
        alice.create(name).append(name.encode() + b"\r\n\r\nx\r\n")
    alice.subscriptions.add("Archive/2024")
    alice.rename("Archive", "Old")
    alice.delete("..")
    names = set(reopened().accounts["alice"].mailboxes)
    assert {"Old", "Old/2024", ".hidden", "cur", "Ünïcode &-", "a%2Fb", "INBOX.child"} <= names
    assert not {"Archive", "Archive/2024", ".."} & names


def test_rename_into_its_own_child(store: Store, reopened: Callable[[], Store]) -> None:
    alice = store.accounts["alice"]
    alice.create("a").append(HELLO)
    alice.rename("a", "a/b")
    again = reopened().accounts["alice"]
    assert [m.data for m in again.mailboxes["a/b"].messages] == [HELLO]
    assert again.mailboxes["a"].messages == []


def test_renaming_inbox_moves_its_messages(store: Store, reopened: Callable[[], Store]) -> None:
    alice = store.accounts["alice"]
    alice.inbox.append(HELLO, ["\\Seen"])
    alice.rename("INBOX", "Saved")
    again = reopened().accounts["alice"]
    assert again.inbox.messages == []
    assert [sorted(m.flags) for m in again.mailboxes["Saved"].messages] == [["\\Seen"]]


def test_a_mailbox_made_again_has_a_new_uidvalidity(store: Store, reopened: Callable[[], Store]) -> None:
    alice = store.accounts["alice"]
    before = alice.create("Box").uidvalidity
    alice.delete("Box")
    after = reopened().accounts["alice"].create("Box").uidvalidity
    assert after != before


def test_delivery_tells_the_arrival_hooks(store: Store, reopened: Callable[[], Store]) -> None:
    seen: list[tuple[str, str, int]] = []
    store.arrival_hooks.append(lambda account, box, message: seen.append((account.name, box.name, message.uid)))
    alice, bob = store.accounts["alice"], store.accounts["bob"]
    store.deliver([alice, bob, alice], HELLO)
    store.add_message(bob, bob.mailboxes["Sent"], HELLO, ["\\Seen"])
    assert seen == [("alice", "INBOX", 1), ("bob", "INBOX", 1), ("bob", "Sent", 1)]
    assert [len(box.messages) for box in reopened().accounts["bob"].mailboxes.values()][:2] == [1, 1]


def test_subscriptions_survive(store: Store, reopened: Callable[[], Store]) -> None:
    alice = store.accounts["alice"]
    alice.subscriptions.add("Gone/But/Subscribed")
    alice.subscriptions.discard("Junk")
    again = reopened().accounts["alice"].subscriptions
    assert "Gone/But/Subscribed" in again and "Junk" not in again
