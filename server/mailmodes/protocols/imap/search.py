"""SEARCH evaluation (RFC 3501 section 6.4.4) over a session's view of a mailbox.

The keys come parsed from parser.py; this module only decides which messages match. Header and
text matching are case-insensitive substring matches on decoded text (message.py decodes RFC 2047
words, transfer encodings and charsets), as the RFC asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses

from mailmodes.protocols.imap import message as mime
from mailmodes.protocols.imap.parser import (
    AllKey,
    AndKey,
    DateKey,
    FlagKey,
    HeaderKey,
    ModSeqKey,
    NewKey,
    NotKey,
    OrKey,
    RecentKey,
    SearchKey,
    SequenceKey,
    SizeKey,
    TextKey,
)
from mailmodes.store import Message


@dataclass
class SearchContext:
    """What the keys need besides the message: "*" for sequence sets, and \\Recent."""

    largest_sequence: int
    largest_uid: int
    recent: set[int] = field(default_factory=set)
    saved: set[int] = field(default_factory=set)  # UIDs that "$" stands for (RFC 5182)


def search(key: SearchKey, messages: Sequence[Message], context: SearchContext) -> list[int]:
    """The 1-based sequence numbers of the messages that match, ascending."""
    return [number for number, message in enumerate(messages, 1) if matches(key, number, message, context)]


def matches(key: SearchKey, number: int, message: Message, context: SearchContext) -> bool:
    match key:
        case AllKey():
            return True
        case FlagKey(flag=flag, present=present):
            return _has_flag(message, flag) == present
        case RecentKey(present=present):
            return (message.uid in context.recent) == present
        case NewKey():
            # NEW is "RECENT UNSEEN" (RFC 3501 6.4.4).
            return message.uid in context.recent and "\\Seen" not in message.flags
        case HeaderKey(field=name, value=value):
            return _header_contains(message, name, value)
        case TextKey(value=value, body_only=body_only):
            return not value or mime.parsed(message).text_contains(value, body_only=body_only)
        case DateKey(sent=sent, relation=relation, day=day):
            when = mime.parsed(message).sent_date() if sent else message.internal_date.date()
            if when is None:
                return False
            return when < day if relation == "BEFORE" else when == day if relation == "ON" else when >= day
        case SizeKey(larger=larger, size=size):
            return message.size > size if larger else message.size < size
        case SequenceKey(sequence=sequence, uid=uid):
            if sequence.saved:
                return message.uid in context.saved
            position, largest = (message.uid, context.largest_uid) if uid else (number, context.largest_sequence)
            return any(low <= position <= high for low, high in sequence.resolve(largest))
        case ModSeqKey(modseq=modseq):
            return message.modseq >= modseq
        case NotKey(key=inner):
            return not matches(inner, number, message, context)
        case OrKey(left=left, right=right):
            return matches(left, number, message, context) or matches(right, number, message, context)
        case AndKey(keys=keys):
            return all(matches(inner, number, message, context) for inner in keys)
    raise TypeError(f"unknown search key {key!r}")


def _has_flag(message: Message, flag: str) -> bool:
    if flag in message.flags:
        return True
    # Keywords match whatever their case (RFC 3501 2.3.2 treats flag names case-insensitively).
    folded = flag.casefold()
    return any(existing.casefold() == folded for existing in message.flags)


_ADDRESS_FIELDS = frozenset({"from", "to", "cc", "bcc", "sender", "reply-to"})


def _header_contains(message: Message, name: str, value: str) -> bool:
    values = mime.parsed(message).header_values(name)
    if not value:
        # HEADER <field> "" matches every message that has the field (RFC 3501 6.4.4).
        return bool(values)
    needle = value.casefold()
    if any(needle in existing.casefold() for existing in values):
        return True
    if name.casefold() in _ADDRESS_FIELDS:
        # FROM user@host must find "<user (comment)@ host>" and "user@host (Name)" too: compare
        # with each address written plainly, as "Name <user@host>".
        for display, address in getaddresses(values):
            if needle in f"{display.strip()} <{address}>".casefold():
                return True
    return False
