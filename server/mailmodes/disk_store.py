"""The durable store ([store] path = "DIR"): the memory store's objects, with every change also
written to DIR, and `flush()` returning once it is on stable storage.

Layout, one Maildir per mailbox so that ordinary tools read it (`mutt -f DIR/alice/INBOX`):

    DIR/mailmodes-store.json                  {"format": 1, "next_uidvalidity": N}
    DIR/<user>/mailmodes-account.json         {"format": 1, "subscriptions": [...]}
    DIR/<user>/<mailbox>/{cur,new,tmp}/       the messages, one file each, bytes as received
    DIR/<user>/<mailbox>/mailmodes.json       UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and per message
                                              its UID, file, flags, mod-sequence, internal date
    DIR/<user>/<mailbox>/mailmodes.log        the changes since that snapshot, a JSON line a commit
    DIR/.captured/{cur,new,tmp}/, captured.jsonl   outbound mail captured (never relayed), and
                                              its envelope, one JSON line a message

User and mailbox names are percent-encoded into one directory level each ("Archive/2024" is
`Archive%2F2024`, and "." is always encoded, so no name is hidden, "..", or a Maildir's own
cur/new/tmp). A message file is named `<time>.V<uidvalidity>U<uid>.mailmodes:2,<flags>`; the
letters after ":2," are the Maildir flags (S seen, R answered, F flagged, T deleted, D draft),
kept up to date for other readers. The metadata file is the truth: keywords live only there.

Every change is queued on the event loop and carried out, in order, by one commit at a time in a
worker thread (asyncio.to_thread): message files written and fsynced, directories fsynced, then
each changed mailbox's changes appended to its log as one line and fsynced. Once the log is as
long as the mailbox, the commit writes a snapshot instead (a temporary file, fsynced, renamed over
mailmodes.json) and empties the log; lines are numbered ("seq"), so a log a cut left behind a newer
snapshot is not applied twice. A commit thus costs what changed, not the mailbox's size.
Changes made while a commit runs wait for the next one, so many deliveries share its directory and
metadata fsyncs. On start everything is read back; a message file no metadata names (a delivery
cut off before its commit, never acknowledged) is removed, a name with no file is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from mailmodes.store import INBOX, Account, CapturedMessage, Mailbox, Message, Store

log = logging.getLogger(__name__)

FORMAT = 1
STORE_FILE = "mailmodes-store.json"
ACCOUNT_FILE = "mailmodes-account.json"
MAILBOX_FILE = "mailmodes.json"
MAILBOX_LOG = "mailmodes.log"
COLUMNS = ["uid", "file", "modseq", "internal_date", "flags"]
CAPTURED_DIR = ".captured"  # no encoded user name starts with "."
CAPTURED_LOG = "captured.jsonl"
TRASH_PREFIX = ".deleted-"  # a deleted mailbox's directory while it is removed (no encoded name starts with ".")
MAILDIR_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S", "\\Deleted": "T"}
LETTER_FLAGS = {letter: flag for flag, letter in MAILDIR_LETTERS.items()}
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_+,=@ ")


class StoreBroken(OSError):
    """A commit failed (disk full, permissions): nothing more is acknowledged until a restart."""


def encode_name(name: str) -> str:
    """A user or mailbox name as one safe directory name (reversed by `unquote`). A name with
    octets that were not UTF-8 (a legacy client's raw CREATE) keeps them as surrogate escapes."""
    return "".join(c if c in _SAFE else "".join(f"%{b:02X}" for b in c.encode("utf-8", "surrogateescape"))
                   for c in name)


def maildir_name(base: str, flags: frozenset[str]) -> str:
    return base + ":2," + "".join(sorted(MAILDIR_LETTERS[f] for f in flags if f in MAILDIR_LETTERS))


# --- what a commit does, in the worker thread ----------------------------------------------------


@dataclass
class _Batch:
    """The operations queued since the last commit, in order, and the metadata to write after."""

    ops: list[tuple[Any, ...]] = field(default_factory=list)
    files: list[tuple[Path, Any]] = field(default_factory=list)  # (path, JSON value) written atomically
    logs: list[tuple[Path, Any]] = field(default_factory=list)  # (path, JSON value) appended as a line


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Write-temp, fsync, rename, fsync the directory: a reader sees the old file or the new one."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    _fsync_dir(path.parent)


def _maildir(path: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)


def _execute(batch: _Batch) -> None:
    touched: set[Path] = set()  # directories whose entries changed: fsynced before the metadata
    for op in batch.ops:
        kind = op[0]
        if kind == "mkdir":
            _maildir(op[1])
            touched.update((op[1], op[1].parent))
        elif kind == "write":
            _, directory, name, data = op
            temporary = directory / "tmp" / name
            with open(temporary, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, directory / "cur" / name)
            touched.add(directory / "cur")
        elif kind == "rename":  # a message's Maildir flags; the metadata holds the truth
            _, directory, old, new = op
            try:
                os.replace(directory / "cur" / old, directory / "cur" / new)
            except FileNotFoundError:
                log.warning("store: %s/cur/%s is missing; its flags are in the metadata only", directory, old)
            touched.add(directory / "cur")
        elif kind == "unlink":
            _, directory, name = op
            try:
                os.unlink(directory / "cur" / name)
            except FileNotFoundError:
                pass
            touched.add(directory / "cur")
        elif kind == "move":  # a renamed mailbox
            _, old, new = op
            os.replace(old, new)
            touched.add(new.parent)
        elif kind == "captured":  # outbound mail: appended, or after a clear all written anew
            _, directory, reset, entries = op
            _maildir(directory)
            if reset:
                for old in (directory / "cur").iterdir():
                    old.unlink()
                with open(directory / CAPTURED_LOG, "wb"):
                    pass
            for name, data, _ in entries:
                with open(directory / "tmp" / name, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(directory / "tmp" / name, directory / "cur" / name)
            _fsync_dir(directory / "cur")
            batch.logs.insert(0, (directory / CAPTURED_LOG, [entry for _, _, entry in entries]))
        elif kind == "remove":  # a deleted mailbox: out of sight at once, then gone
            trash = op[1].parent / (TRASH_PREFIX + uuid.uuid4().hex)
            os.replace(op[1], trash)
            _fsync_dir(op[1].parent)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            raise AssertionError(kind)
    for directory in touched:
        if directory.is_dir():
            _fsync_dir(directory)
    for path, value in batch.logs:
        if path.parent.is_dir():
            lines = value if isinstance(value, list) else [value]  # a list: several lines at once
            with open(path, "ab") as file:
                file.write(b"".join(json.dumps(line, separators=(",", ":")).encode() + b"\n" for line in lines))
                file.flush()
                os.fsync(file.fileno())
    for path, value in batch.files:
        if path.parent.is_dir():
            write_atomically(path, json.dumps(value, separators=(",", ":")).encode())
            if path.name == MAILBOX_FILE:  # the log's lines are in the snapshot now
                with open(path.with_name(MAILBOX_LOG), "wb"):
                    pass


# --- the objects ---------------------------------------------------------------------------------


class DiskMailbox(Mailbox):
    def __init__(self, account: DiskAccount, name: str, special_use: str | None, uidvalidity: int) -> None:
        super().__init__(name, special_use, uidvalidity)
        self.account = account
        self.files: dict[int, str] = {}  # UID -> its file's name in cur/
        self.removed = False  # deleted: sessions that still have it selected change memory only
        # Since the last commit: messages added or changed, and removed. A commit appends them to
        # the log as one line, or writes the whole snapshot when the log has grown as long as the
        # mailbox (so a commit costs what changed, and loading stays linear).
        self.changed_uids: set[int] = set()
        self.expunged_uids: list[int] = []
        self.seq = 0  # the number of the last log line (or snapshot) committed
        self.log_lines = 0
        self.snapshot_due = True

    @property
    def path(self) -> Path:
        return self.account.path / encode_name(self.name)

    def append(self, data: bytes, flags: Iterable[str] = (), internal_date: datetime | None = None) -> Message:
        message = super().append(data, flags, internal_date)
        if not self.removed:
            base = f"{int(time.time())}.V{self.uidvalidity}U{message.uid}.mailmodes"
            name = self.files[message.uid] = maildir_name(base, message.flags)
            self.changed_uids.add(message.uid)
            self.account.disk.queue(self, ("write", self.path, name, message.data))
        return message

    def expunge(self, uids: Iterable[int]) -> list[int]:
        removed = super().expunge(uids)
        if removed and not self.removed:
            path = self.path
            for uid in removed:
                self.account.disk.queue(self, ("unlink", path, self.files.pop(uid)))
            self.changed_uids.difference_update(removed)
            self.expunged_uids += removed
        return removed

    def set_flags(self, message: Message, flags: Iterable[str]) -> None:
        before = message.flags
        super().set_flags(message, flags)
        if message.flags != before and not self.removed:
            old = self.files.get(message.uid)
            if old is None:  # not this mailbox's message
                return
            new = maildir_name(old.partition(":")[0], message.flags)
            self.changed_uids.add(message.uid)
            self.account.disk.queue(self, ("rename", self.path, old, new) if new != old else None)
            self.files[message.uid] = new

    def _row(self, message: Message) -> list[Any]:
        return [message.uid, self.files[message.uid].partition(":")[0], message.modseq,
                message.internal_date.isoformat(), sorted(message.flags)]

    def commit_record(self) -> tuple[str, dict[str, Any]]:
        """What the next commit writes for this mailbox (made on the loop, where the messages
        change): ("snapshot", the whole metadata file) or ("log", one line of changes)."""
        self.seq += 1
        head: dict[str, Any] = {"seq": self.seq, "uidnext": self.uidnext, "highest_modseq": self.highest_modseq}
        expunged = self.expunged  # QRESYNC's tombstones, {uid: modseq}
        if self.snapshot_due or self.log_lines >= max(64, len(self.messages)):
            self.snapshot_due, self.log_lines = False, 0
            value = {"format": FORMAT, "name": self.name, "uidvalidity": self.uidvalidity, **head,
                     "columns": COLUMNS, "messages": [self._row(m) for m in self.messages]}
            if expunged:
                value["expunged"] = {str(uid): modseq for uid, modseq in expunged.items()}
            kind = "snapshot"
        else:
            self.log_lines += 1
            rows = [self._row(m) for m in self._changed_messages()]
            value = {**head, "set": rows, "del": self.expunged_uids}
            if self.expunged_uids:
                value["expunged"] = {str(uid): expunged[uid] for uid in self.expunged_uids if uid in expunged}
            kind = "log"
        self.changed_uids, self.expunged_uids = set(), []
        return kind, value

    def _changed_messages(self) -> list[Message]:
        """The messages in changed_uids, found from the end: what changed is mostly what came last."""
        found, wanted = [], len(self.changed_uids)
        for message in reversed(self.messages):
            if not wanted:
                break
            if message.uid in self.changed_uids:
                found.append(message)
                wanted -= 1
        return found[::-1]

    def load(self, metadata: dict[str, Any] | None) -> None:
        """Read the messages back from the Maildir (at start, before any client)."""
        path = self.path
        _maildir(path)
        for leftover in (path / "tmp").iterdir():
            leftover.unlink()
        on_disk = {entry.name.partition(":")[0]: entry for entry in (path / "cur").iterdir()}
        if metadata is None:  # a Maildir from elsewhere: take every message, as in a [[seed]]
            self._import(path, on_disk)
            return
        rows: dict[int, list[Any]] = {row[0]: row for row in metadata["messages"]}
        self.seq = int(metadata.get("seq", 0))
        self.uidnext = int(metadata["uidnext"])
        self.highest_modseq = int(metadata["highest_modseq"])
        tombstones: dict[str, int] = dict(metadata.get("expunged", {}))
        for record in _log_records(path / MAILBOX_LOG):
            if record["seq"] <= self.seq:  # already in the snapshot (a cut between the two writes)
                continue
            self.seq, self.uidnext, self.highest_modseq = record["seq"], record["uidnext"], record["highest_modseq"]
            rows.update((row[0], row) for row in record["set"])
            for uid in record["del"]:
                rows.pop(uid, None)
            tombstones.update(record.get("expunged", {}))
            self.log_lines += 1
        # The next commit folds the log into a snapshot, and so ends a line a kill cut short
        # before any new line could be appended to it.
        self.snapshot_due = (path / MAILBOX_LOG).exists() and (path / MAILBOX_LOG).stat().st_size > 0
        for uid, base, modseq, internal_date, flags in sorted(rows.values()):
            entry = on_disk.pop(base, None)
            if entry is None:
                log.warning("store: %s: the file of UID %d is gone; the message is dropped", path, uid)
                continue
            message = Message(uid=uid, data=entry.read_bytes(), internal_date=datetime.fromisoformat(internal_date),
                              flags=frozenset(flags), modseq=modseq)
            self.messages.append(message)
            name = maildir_name(base, message.flags)
            if name != entry.name:  # a flag change whose commit did not finish renaming
                os.replace(entry, path / "cur" / name)
            self.files[uid] = name
        self.expunged.update({int(uid): modseq for uid, modseq in tombstones.items()})
        for orphan in on_disk.values():  # written, never committed: its sender got no 250
            orphan.unlink()

    def _import(self, path: Path, on_disk: dict[str, Path]) -> None:
        entries = sorted([*on_disk.values(), *(path / "new").iterdir()], key=lambda entry: entry.stat().st_mtime)
        for entry in entries:
            info = entry.name.partition(":2,")[2]
            flags = [LETTER_FLAGS[letter] for letter in info if letter in LETTER_FLAGS]
            when = datetime.fromtimestamp(entry.stat().st_mtime, timezone.utc)
            message = Mailbox.append(self, entry.read_bytes(), flags, when)
            name = maildir_name(f"{int(time.time())}.V{self.uidvalidity}U{message.uid}.mailmodes", message.flags)
            os.replace(entry, path / "cur" / name)
            self.files[message.uid] = name
        self.recent_uids.clear()
        self.account.disk.queue(self, None)  # its metadata is written by the first commit


def _log_records(path: Path) -> Iterator[dict[str, Any]]:
    """The log's lines; a last line a kill cut short (never fsynced, so never acknowledged) ends it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        try:
            yield json.loads(line)
        except ValueError:
            return


class DiskAccount(Account):
    def __init__(self, disk: Disk, name: str, password: str, addresses: Iterable[str]) -> None:
        self.disk = disk
        self.path = disk.root / encode_name(name)
        self._stored = disk.read_account(self.path)
        self._held: list[DiskMailbox] | None = None
        super().__init__(name, password, addresses)  # INBOX and the special-use mailboxes: see _new_mailbox
        for mailbox_name in list(self._stored):
            self.mailboxes[mailbox_name] = self._new_mailbox(mailbox_name)
        subscriptions = disk.read_json(self.path / ACCOUNT_FILE)
        if subscriptions is not None:
            self.subscriptions = set(subscriptions["subscriptions"])
        self.written_subscriptions = set(self.subscriptions) if subscriptions is not None else None
        self._stored = {}
        disk.accounts.append(self)

    def _new_mailbox(self, name: str, special_use: str | None = None) -> DiskMailbox:
        stored = self._stored.pop(name, None)
        if stored is not None:  # at start: the one on disk
            metadata, directory = stored
            uidvalidity = int(metadata["uidvalidity"]) if metadata else self.disk.next_uidvalidity()
            mailbox = DiskMailbox(self, name, special_use, uidvalidity)
            mailbox.load(metadata)
            return mailbox
        mailbox = DiskMailbox(self, name, special_use, self.disk.next_uidvalidity())
        if self._held is not None:
            self._held.append(mailbox)
        else:
            self.disk.queue(mailbox, ("mkdir", mailbox.path))
        return mailbox

    def delete(self, name: str) -> None:
        mailbox = self.mailbox(name)
        super().delete(name)
        if isinstance(mailbox, DiskMailbox):
            self.disk.removed(mailbox)

    def rename(self, old: str, new: str) -> None:
        if self.normalise(old) == INBOX:  # a new mailbox, appends and expunges: each queued as it is made
            super().rename(old, new)
            return
        before = {id(mailbox): mailbox.name for mailbox in self.mailboxes.values()}
        # The parents super() makes are queued after the moves: renaming "a" to "a/b" makes a new
        # "a", whose directory must not be the old one's.
        self._held = []
        try:
            super().rename(old, new)
        finally:
            held, self._held = self._held, None
        for mailbox in self.mailboxes.values():
            was = before.get(id(mailbox))
            if was is not None and was != mailbox.name and isinstance(mailbox, DiskMailbox):
                mailbox.snapshot_due = True  # its new name in the metadata
                self.disk.queue(mailbox, ("move", self.path / encode_name(was), mailbox.path))
        for mailbox in held:
            self.disk.queue(mailbox, ("mkdir", mailbox.path))


class Disk:
    """The directory, the queue of changes not yet committed, and the commits."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        stored = self.read_json(root / STORE_FILE)
        self.fresh = stored is None  # the first start on this directory: [[seed]] mail goes in
        self._next_uidvalidity = max(int(stored["next_uidvalidity"]) if stored else 0, int(time.time()))
        self._written_uidvalidity = self._next_uidvalidity if stored else 0
        self.accounts: list[DiskAccount] = []
        self._batch = _Batch()
        self._dirty: dict[int, DiskMailbox] = {}
        self.version = 0  # changes queued
        self.committed = 0  # changes on disk
        self._commit: asyncio.Future[None] | None = None
        self.broken: BaseException | None = None
        self.captured: list[CapturedMessage] = []  # the store's list (DiskStore sets it)
        self._captured_on_disk: list[CapturedMessage] = []
        for trash in root.glob(f"*/{TRASH_PREFIX}*"):
            shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None

    def read_account(self, path: Path) -> dict[str, tuple[dict[str, Any] | None, Path]]:
        """Mailbox name -> (its metadata, or None for a bare Maildir; its directory)."""
        found: dict[str, tuple[dict[str, Any] | None, Path]] = {}
        if path.is_dir():
            for directory in sorted(path.iterdir()):
                if directory.is_dir() and not directory.name.startswith(".") and (directory / "cur").is_dir():
                    found[unquote(directory.name, errors="surrogateescape")] = (self.read_json(directory / MAILBOX_FILE), directory)
        return found

    def next_uidvalidity(self) -> int:
        """Never one this directory has given before, even to a mailbox since deleted (RFC 3501 2.3.1.1)."""
        value = self._next_uidvalidity
        self._next_uidvalidity += 1
        self.version += 1
        return value

    # --- on the loop: queue ------------------------------------------------------------------

    def queue(self, mailbox: DiskMailbox, op: tuple[Any, ...] | None) -> None:
        if op is not None:
            self._batch.ops.append(op)
        self._dirty[id(mailbox)] = mailbox
        self.version += 1

    def removed(self, mailbox: DiskMailbox) -> None:
        mailbox.removed = True
        self._dirty.pop(id(mailbox), None)
        self._batch.ops.append(("remove", mailbox.path))
        self.version += 1

    def _subscriptions_changed(self) -> Iterator[DiskAccount]:
        return (account for account in self.accounts if account.subscriptions != account.written_subscriptions)

    def _captured_changed(self) -> bool:
        on_disk, now = self._captured_on_disk, self.captured
        return len(on_disk) != len(now) or bool(now and now[-1] is not on_disk[-1])

    def load_captured(self) -> list[CapturedMessage]:
        """Captured mail read back: each line whose file is there (a file no line names was
        written by a commit cut off before its line: removed)."""
        directory = self.root / CAPTURED_DIR
        if not (directory / "cur").is_dir():
            return []
        files = {entry.name: entry for entry in (directory / "cur").iterdir()}
        found = []
        for record in _log_records(directory / CAPTURED_LOG):
            entry = files.pop(record.get("file", ""), None)
            if entry is not None:
                found.append(CapturedMessage(record["sender_account"], record["mail_from"],
                                             tuple(record["recipients"]), entry.read_bytes(),
                                             datetime.fromisoformat(record["received"])))
        for orphan in files.values():
            orphan.unlink()
        log_path = directory / CAPTURED_LOG
        if log_path.exists() and not log_path.read_bytes().endswith(b"\n") and log_path.stat().st_size:
            # A line a kill cut short: the log without it, so no later line is glued to it.
            kept = [record for record in _log_records(log_path) if record.get("file") not in files]
            write_atomically(log_path, b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n"
                                                for r in kept))
        self._captured_on_disk = list(found)
        return found

    def _take(self) -> _Batch:
        batch, self._batch = self._batch, _Batch()
        for mailbox in self._dirty.values():
            kind, value = mailbox.commit_record()
            (batch.files if kind == "snapshot" else batch.logs).append(
                (mailbox.path / (MAILBOX_FILE if kind == "snapshot" else MAILBOX_LOG), value))
        self._dirty = {}
        for account in list(self._subscriptions_changed()):
            account.written_subscriptions = set(account.subscriptions)
            batch.files.append((account.path / ACCOUNT_FILE,
                                {"format": FORMAT, "subscriptions": sorted(account.subscriptions)}))
        if self._captured_changed():
            on_disk, now = self._captured_on_disk, list(self.captured)
            # The API only ever clears the whole list, so either it grew or it was cleared first.
            kept = len(on_disk) <= len(now) and all(a is b for a, b in zip(on_disk, now))
            new = now[len(on_disk):] if kept else now
            self._captured_on_disk = now
            entries = []
            for captured in new:
                name = f"{int(captured.received.timestamp())}.{uuid.uuid4().hex}.mailmodes:2,"
                entries.append((name, captured.data, {
                    "file": name, "sender_account": captured.sender_account, "mail_from": captured.mail_from,
                    "recipients": list(captured.recipients), "received": captured.received.isoformat()}))
            batch.ops.append(("captured", self.root / CAPTURED_DIR, not kept, entries))
        if self._written_uidvalidity != self._next_uidvalidity:
            self._written_uidvalidity = self._next_uidvalidity
            batch.files.append((self.root / STORE_FILE, {"format": FORMAT, "next_uidvalidity": self._next_uidvalidity}))
        return batch

    # --- the commits -------------------------------------------------------------------------

    async def flush(self) -> None:
        while True:
            if self.broken is not None:
                raise StoreBroken(f"the store in {self.root} could not be written ({self.broken}); "
                                  "nothing more is acknowledged until the server is restarted")
            if (self.committed >= self.version and next(self._subscriptions_changed(), None) is None
                    and not self._captured_changed()):
                return
            if self._commit is None:
                self._commit = asyncio.ensure_future(self._run_commit())
            # Shielded: a waiter cancelled (its client gone) does not cancel the others' commit.
            await asyncio.shield(self._commit)

    async def _run_commit(self) -> None:
        try:
            version = self.version
            batch = self._take()
            await asyncio.to_thread(_execute, batch)
            self.committed = max(self.committed, version)
        except BaseException as error:
            self.broken = error
            log.error("store: a commit to %s failed: %s", self.root, error)
            raise
        finally:
            self._commit = None


class DiskStore(Store):
    """The memory store, kept in a directory as well (see the module's docstring)."""

    durable = True

    def __init__(self, path: Path, catch_all: str | None = None) -> None:
        self.disk = Disk(path)
        super().__init__(catch_all)
        self.captured = self.disk.captured = self.disk.load_captured()

    @property
    def fresh(self) -> bool:
        return self.disk.fresh

    def _new_account(self, name: str, password: str, addresses: Iterable[str]) -> DiskAccount:
        return DiskAccount(self.disk, name, password, addresses)

    async def flush(self) -> None:
        await self.disk.flush()

