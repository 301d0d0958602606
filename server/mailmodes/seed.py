"""Mail put into mailboxes before any client connects: `[[seed]]` tables and POST /api/messages.

A seed names one `.eml` file, a directory of `.eml` files, an mbox file or a Maildir. Each
message keeps what its source knows about it: Maildir flags (`:2,S` is \\Seen ...), an mbox
message's Status/X-Status flags and the date of its `From ` line, a file's modification time.
Line endings become CRLF, as they are on the wire: IMAP sizes and POP3 octet counts assume it.
"""

from __future__ import annotations

import mailbox
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

from mailmodes.config import Config, ConfigError, Seed
from mailmodes.store import AccountInterface, MailboxInterface, StoreInterface

SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
# RFC 3501 flag-keyword = atom: no atom-specials, no "\\" (that is for system flags).
KEYWORD = re.compile(r"[!#$&'+,\-./0-9:;<=>?@A-Z^_`a-z|~]+")
MAILDIR_FLAGS = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "T": "\\Deleted", "D": "\\Draft"}
MBOX_FLAGS = {"R": "\\Seen", "A": "\\Answered", "F": "\\Flagged", "D": "\\Deleted"}


@dataclass(frozen=True)
class SeedMessage:
    data: bytes
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None


def crlf(data: bytes) -> bytes:
    """Every line ending CRLF (a .eml saved on Unix has bare LFs)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def check_flags(flags: Iterable[str]) -> tuple[str, ...]:
    """The flags as given, or ValueError naming the first that IMAP could not show."""
    checked = []
    for flag in flags:
        if flag.startswith("\\"):
            known = {name.lower(): name for name in SYSTEM_FLAGS}
            if flag.lower() not in known:
                raise ValueError(f"{flag!r} is not a system flag ({', '.join(SYSTEM_FLAGS)}); \\Recent is per session")
            checked.append(known[flag.lower()])
        elif KEYWORD.fullmatch(flag):
            checked.append(flag)
        else:
            raise ValueError(f"{flag!r} is not a flag keyword (letters, digits and !#$&'+,-./:;<=>?@^_`|~)")
    return tuple(dict.fromkeys(checked))


def read_seed(path: Path) -> list[SeedMessage]:
    """Every message at `path`; OSError or ValueError (with the reason) if it cannot be read."""
    if path.is_dir():
        if all((path / sub).is_dir() for sub in ("cur", "new", "tmp")):
            return list(_maildir(path))
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".eml" and p.is_file())
        if not files:
            raise ValueError("a directory with no .eml files in it and not a Maildir (cur/, new/, tmp/)")
        return [_eml(file) for file in files]
    with path.open("rb") as file:
        start = file.read(5)
    if start == b"From ":
        return list(_mbox(path))
    return [_eml(path)]


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


def _eml(path: Path) -> SeedMessage:
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path.name} is empty")
    return SeedMessage(crlf(data), (), _mtime(path))


def _maildir(path: Path) -> Iterator[SeedMessage]:
    box = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(box.keys(), key=lambda k: box.get_message(k).get_date()):
        message = box.get_message(key)
        flags = tuple(MAILDIR_FLAGS[f] for f in message.get_flags() if f in MAILDIR_FLAGS)
        yield SeedMessage(crlf(box.get_bytes(key)), flags, datetime.fromtimestamp(message.get_date(), timezone.utc))


def _mbox(path: Path) -> Iterator[SeedMessage]:
    box = mailbox.mbox(path, create=False)
    try:
        for key in box.keys():
            message = box.get_message(key)
            flags = tuple(MBOX_FLAGS[f] for f in message.get_flags() if f in MBOX_FLAGS)
            yield SeedMessage(crlf(box.get_bytes(key, from_=False)), flags, _from_line_date(message.get_from()))
    finally:
        box.close()


def _from_line_date(from_line: str) -> datetime | None:
    # "From sender@example Mon Jan  1 10:00:00 2024": an asctime date after the sender
    parts = from_line.split(None, 1)
    if len(parts) < 2:
        return None
    try:
        moment = datetime.strptime(" ".join(parts[1].split()), "%a %b %d %H:%M:%S %Y")
    except ValueError:
        try:
            return parsedate_to_datetime(parts[1])
        except (TypeError, ValueError):
            return None
    return moment.replace(tzinfo=timezone.utc)


def target_mailbox(account: AccountInterface, name: str, *, create: bool) -> MailboxInterface | None:
    """The mailbox to seed into; with `create`, made (with its parents) when missing."""
    found = account.mailbox(name)
    if found is None and create:
        found = account.create(name)
    return found


def load_seed(store: StoreInterface, seed: Seed, source: str) -> int:
    """Put one [[seed]]'s messages into its mailbox; ConfigError (file and key) if unreadable."""
    try:
        messages = read_seed(seed.path)
    except (OSError, ValueError, mailbox.Error) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ConfigError(f"{source}: {seed.key}.path: {seed.path}: cannot load: {reason}") from None
    account = store.accounts[seed.user]
    box = target_mailbox(account, seed.mailbox, create=True)
    assert box is not None
    for message in messages:
        store.add_message(account, box, message.data, message.flags, message.internal_date)
    return len(messages)


def load_seeds(store: StoreInterface, config: Config) -> int:
    return sum(load_seed(store, seed, config.source) for seed in config.seeds)
