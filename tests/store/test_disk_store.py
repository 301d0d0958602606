"""The durable store's own promises: ordinary tools read it, a cut-off commit leaves nothing
half-done, many deliveries share a commit, and a failed commit acknowledges nothing more."""

from __future__ import annotations

import asyncio
import mailbox
import os
import re
import subprocess
from pathlib import Path

import pytest

import mailmodes.disk_store as disk_store
from mailmodes.disk_store import DiskStore, StoreBroken
from support import require_tool

HELLO = b"Subject: hello\r\n\r\nhi\r\n"


def open_store(path: Path) -> DiskStore:
    store = DiskStore(path)
    store.add_account("alice", "alice-password", ["alice@example.test"])
    return store


def filled(path: Path) -> DiskStore:
    store = open_store(path)
    inbox = store.accounts["alice"].inbox
    inbox.append(b"Subject: first\r\nFrom: a@example.test\r\n\r\none\r\n", ["\\Seen"])
    inbox.append(b"Subject: second\r\nFrom: b@example.test\r\n\r\ntwo\r\n", ["\\Flagged", "$Work"])
    asyncio.run(store.flush())
    return store


def test_pythons_maildir_reads_every_mailbox(tmp_path: Path) -> None:
    filled(tmp_path)
    box = mailbox.Maildir(tmp_path / "alice" / "INBOX", create=False)
    found = sorted((message["Subject"], message.get_flags()) for message in box)
    assert found == [("first", "S"), ("second", "F")]


def test_mutt_lists_the_inbox(tmp_path: Path) -> None:
    require_tool("mutt")
    require_tool("script")  # util-linux: mutt wants a terminal, script gives it one
    filled(tmp_path)
    folder = tmp_path / "mutt-folder"
    folder.mkdir()
    inbox = tmp_path / "alice" / "INBOX"
    command = (f"mutt -n -F /dev/null -R -e 'set folder={folder}' -e 'set spoolfile={inbox}' "
               f"-f {inbox} -e 'push <quit>'")
    result = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, timeout=30,
                            env={**os.environ, "TERM": "xterm", "HOME": str(tmp_path)})
    screen = re.sub(rb"\x1b[\[\(][0-9;?]*[A-Za-z=>]?", b"", result.stdout).decode(errors="replace")
    assert result.returncode == 0, screen
    assert "Msgs:2" in screen and "Flag:1" in screen, screen
    assert "first" in screen and "second" in screen, screen


def test_a_commit_cut_off_leaves_no_message_and_loses_none(tmp_path: Path) -> None:
    filled(tmp_path)
    cur = tmp_path / "alice" / "INBOX" / "cur"
    # A delivery written but never committed (its sender got no 250), and a flag change whose
    # rename happened without the metadata: the first is dropped, the second put back.
    (cur / "1.V1U99.mailmodes:2,").write_bytes(b"Subject: never acknowledged\r\n\r\n")
    (tmp_path / "alice" / "INBOX" / "tmp" / "half").write_bytes(b"Subj")
    seen = next(p for p in cur.iterdir() if p.name.endswith(":2,S"))
    seen.rename(seen.with_name(seen.name.replace(":2,S", ":2,ST")))
    again = open_store(tmp_path).accounts["alice"].inbox
    assert [m.uid for m in again.messages] == [1, 2]
    assert again.messages[0].flags == {"\\Seen"}
    assert sorted(p.name.rpartition(",")[2] for p in cur.iterdir()) == ["F", "S"]
    assert not list((tmp_path / "alice" / "INBOX" / "tmp").iterdir())


def test_a_message_whose_file_is_gone_is_dropped(tmp_path: Path) -> None:
    filled(tmp_path)
    next((tmp_path / "alice" / "INBOX" / "cur").glob("*U1.*")).unlink()
    again = open_store(tmp_path).accounts["alice"].inbox
    assert [m.uid for m in again.messages] == [2]
    assert again.uidnext == 3


def test_a_maildir_from_elsewhere_is_taken_in(tmp_path: Path) -> None:
    (tmp_path / "alice").mkdir()
    box = mailbox.Maildir(tmp_path / "alice" / "Imported", create=True)
    message = mailbox.MaildirMessage(b"Subject: from mutt\n\nx\n")
    message.set_flags("RS")
    message.set_subdir("cur")
    box.add(message)
    box.add(mailbox.MaildirMessage(b"Subject: new one\n\nx\n"))
    store = open_store(tmp_path)
    imported = store.accounts["alice"].mailboxes["Imported"]
    assert sorted((m.uid, sorted(m.flags)) for m in imported.messages) == [(1, ["\\Answered", "\\Seen"]), (2, [])]
    asyncio.run(store.flush())
    again = open_store(tmp_path).accounts["alice"].mailboxes["Imported"]
    assert again.uidvalidity == imported.uidvalidity and len(again.messages) == 2


def test_deliveries_made_together_share_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path)
    asyncio.run(store.flush())
    commits: list[int] = []
    execute = disk_store._execute

    def counted(batch: disk_store._Batch) -> None:
        commits.append(len(batch.ops))
        execute(batch)

    monkeypatch.setattr(disk_store, "_execute", counted)

    async def deliveries() -> None:
        async def one(n: int) -> None:
            store.deliver([store.accounts["alice"]], b"Subject: %d\r\n\r\nx\r\n" % n)
            await store.flush()

        await asyncio.gather(*(one(n) for n in range(50)))

    asyncio.run(deliveries())
    assert sum(commits) == 50 and len(commits) <= 2, commits
    assert len(open_store(tmp_path).accounts["alice"].inbox.messages) == 50


def test_a_failed_commit_acknowledges_nothing_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path)
    asyncio.run(store.flush())

    def full(batch: disk_store._Batch) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(disk_store, "_execute", full)
    store.deliver([store.accounts["alice"]], b"Subject: x\r\n\r\nx\r\n")
    with pytest.raises(OSError, match="No space"):
        asyncio.run(store.flush())
    monkeypatch.undo()
    with pytest.raises(StoreBroken, match="restarted"):
        asyncio.run(store.flush())


def test_commits_append_to_the_log_and_a_snapshot_folds_it(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    inbox = store.accounts["alice"].inbox
    box = tmp_path / "alice" / "INBOX"
    for n in range(70):  # one commit each: 64 log lines, then a snapshot
        message = inbox.append(b"Subject: %d\r\n\r\nx\r\n" % n)
        if n % 2:
            inbox.set_flags(message, {"\\Seen"})
        if n % 10 == 9:
            inbox.expunge([message.uid - 1])
        asyncio.run(store.flush())
        if n == 40:
            assert len((box / "mailmodes.log").read_bytes().splitlines()) == 40  # the first commit wrote the snapshot
            assert [m.uid for m in open_store(tmp_path).accounts["alice"].inbox.messages] == [m.uid for m in inbox.messages]
    assert len((box / "mailmodes.log").read_bytes().splitlines()) < 10
    expected = [(m.uid, m.flags, m.modseq) for m in inbox.messages]
    assert [(m.uid, m.flags, m.modseq) for m in open_store(tmp_path).accounts["alice"].inbox.messages] == expected


def test_a_log_line_cut_short_is_not_read_and_nothing_is_glued_to_it(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    inbox = store.accounts["alice"].inbox
    inbox.append(HELLO)
    asyncio.run(store.flush())
    inbox.append(HELLO)
    asyncio.run(store.flush())
    log = tmp_path / "alice" / "INBOX" / "mailmodes.log"
    with log.open("ab") as file:
        file.write(b'{"seq":99,"uidnext":')  # a kill in the middle of a write
    again = open_store(tmp_path)
    assert [m.uid for m in again.accounts["alice"].inbox.messages] == [1, 2]
    again.accounts["alice"].inbox.append(HELLO)
    asyncio.run(again.flush())
    assert [m.uid for m in open_store(tmp_path).accounts["alice"].inbox.messages] == [1, 2, 3]


def test_captured_outbound_mail_is_kept_and_its_clearing_too(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.capture("alice", "alice@example.test", ["x@elsewhere.test"], HELLO)
    store.capture("alice", "alice@example.test", ["y@elsewhere.test", "z@elsewhere.test"], b"Subject: 2\r\n\r\n")
    asyncio.run(store.flush())
    again = open_store(tmp_path)
    assert [(c.recipients, c.data, c.received) for c in again.captured] == [
        (c.recipients, c.data, c.received) for c in store.captured]
    again.captured.clear()  # as DELETE /api/captured does
    again.capture("bob", "bob@example.test", ["w@elsewhere.test"], b"Subject: 3\r\n\r\n")
    asyncio.run(again.flush())
    with (tmp_path / ".captured" / "captured.jsonl").open("ab") as file:
        file.write(b'{"file": "cut')
    third = open_store(tmp_path)
    assert [c.recipients for c in third.captured] == [("w@elsewhere.test",)]
    third.capture("bob", "bob@example.test", ["v@elsewhere.test"], b"Subject: 4\r\n\r\n")
    asyncio.run(third.flush())
    assert [c.recipients for c in open_store(tmp_path).captured] == [("w@elsewhere.test",), ("v@elsewhere.test",)]


def test_a_mailbox_name_that_is_no_utf8_is_kept_across_a_restart(tmp_path: Path) -> None:
    """IMAP takes any 8-bit name in a literal (kept as surrogates, protocols/imap/parser.py): its
    directory holds the raw byte percent-encoded, and a restart gives back the same name."""
    store = filled(tmp_path)
    name = b"x\xffyz".decode("utf-8", "surrogateescape")
    store.accounts["alice"].create(name)
    store.accounts["alice"].mailbox(name).append(HELLO)
    asyncio.run(store.flush())
    assert (tmp_path / "alice" / "x%FFyz" / "cur").is_dir()
    again = open_store(tmp_path)
    assert [len(again.accounts["alice"].mailbox(n).messages) for n in (name, "INBOX")] == [1, 2]


def test_a_deleted_special_use_mailbox_stays_deleted_after_a_restart(tmp_path: Path) -> None:
    store = filled(tmp_path)
    assert "Trash" in store.accounts["alice"].mailboxes
    store.accounts["alice"].delete("Trash")
    asyncio.run(store.flush())
    again = open_store(tmp_path).accounts["alice"]
    assert "Trash" not in again.mailboxes and "INBOX" in again.mailboxes and "Sent" in again.mailboxes
    assert again.mailboxes["Sent"].special_use == "\\Sent"
