"""SORT (RFC 5256 section 3, with RFC 5957's DISPLAYFROM and DISPLAYTO) over search results.

Keys come from each message's ParsedMessage (parsed once, kept with the message). Strings are
compared with i;ascii-casemap: as octets with ASCII letters upper-cased. Messages equal under
every criterion stay in sequence-number order, also under REVERSE (which reverses its own
criterion only), as the RFC asks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from mailmodes.protocols.imap import message as mime
from mailmodes.protocols.imap.parser import SortCriterion
from mailmodes.store import Message

SortKey = Callable[[Message], bytes | float | int]


def _casemap(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape").upper()  # bytes.upper: ASCII letters only


def _arrival(message: Message) -> float:
    return message.internal_date.timestamp()


def _date(message: Message) -> float:
    # RFC 5256 3: without a usable Date field, the internal date stands in.
    sent = mime.parsed(message).sent_timestamp()
    return sent if sent is not None else message.internal_date.timestamp()


def _address(name: str) -> SortKey:
    return lambda message: mime.parsed(message).sort_address(name).upper()


def _display(name: str) -> SortKey:
    return lambda message: _casemap(mime.parsed(message).display_address(name))


def _subject(message: Message) -> bytes:
    parsed = mime.parsed(message)
    return _casemap(mime.base_subject(parsed.subject()))


KEYS: dict[str, SortKey] = {
    "ARRIVAL": _arrival,
    "CC": _address("cc"),
    "DATE": _date,
    "FROM": _address("from"),
    "SIZE": lambda message: message.size,
    "SUBJECT": _subject,
    "TO": _address("to"),
    "DISPLAYFROM": _display("from"),
    "DISPLAYTO": _display("to"),
}


def sort(criteria: Sequence[SortCriterion], matched: Sequence[tuple[int, Message]]) -> list[tuple[int, Message]]:
    """`matched` (in sequence order) ordered by the criteria, first criterion most significant."""
    ordered = list(matched)
    # Stable sorts from the least significant criterion up; reverse=True keeps ties in order.
    for criterion in reversed(criteria):
        key = KEYS[criterion.key]
        ordered.sort(key=lambda pair: key(pair[1]), reverse=criterion.reverse)
    return ordered
