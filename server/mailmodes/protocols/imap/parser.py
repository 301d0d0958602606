"""The IMAP4rev1 command grammar (RFC 3501 section 9), without any I/O.

Two layers, both fed plain bytes:

- `Framer` cuts the client's byte stream into complete commands: lines joined by literals
  (`{n}` synchronizing, `{n+}` non-synchronizing, RFC 7888). It stops at each literal
  announcement so the session can send a continuation (`+`) or refuse the literal before the
  client sends it (RFC 3501 section 7.5), and it enforces the line length.
- `parse_command` turns one complete command into a `Command` with typed arguments, or raises
  `CommandError` (which the session answers with BAD).

A command split across reads, or several pipelined in one read, goes through the same path:
the framer only ever looks at its own buffer. For the journal it also says exactly which bytes
each event covers (`start`, `literals`) and how many it dropped unread (`take_skipped`), and the
grammar says which bytes of a command are credentials (`Command.secrets`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from mailmodes.protocols.imap import mutf7
from mailmodes.protocols.imap.states import ANY, AUTHENTICATED, NOT_AUTHENTICATED, SELECTED, State

# --- Framing -------------------------------------------------------------------------------

# literal = "{" number ["+"] "}" CRLF *CHAR8  (RFC 3501 section 9, RFC 7888 section 4)
_LITERAL_AT_END = re.compile(rb"\{(\d{1,19})(\+?)\}$")
# How much of a discarded line we keep while waiting for its end: enough to see "{n+}".
_MARKER_TAIL = 32


Spans = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class CommandBytes:
    """One complete command: its lines and literals exactly as received, without the final CRLF.
    `data[:start]` went out already in LiteralRequests; `literals` are the accepted literals'
    octets, as offsets into `data`."""

    data: bytes
    start: int = 0
    literals: Spans = ()


@dataclass(frozen=True)
class LiteralRequest:
    """The command announced a literal; the session must call accept_literal or reject_literal.
    `data` is the command so far, up to and with the line that announces the literal, of which
    `data[start:]` is new since the last event; `literals` as in CommandBytes."""

    head: bytes  # the start of the command, to learn its tag and name
    size: int
    synchronizing: bool
    total: int  # literal octets in this command, this one included
    data: bytes = b""
    start: int = 0
    literals: Spans = ()


@dataclass(frozen=True)
class LineTooLong:
    """The command's text (literals not counted) passed the limit; the rest of the line is dropped."""

    head: bytes


FramerEvent = CommandBytes | LiteralRequest | LineTooLong


class Framer:
    """Cuts a byte stream into IMAP commands. Holds no reference to anything but its buffer."""

    def __init__(self, max_line_length: int) -> None:
        self.max_line_length = max_line_length
        self._buf = bytearray()
        self._scan = 0  # where the next line of the current command starts
        self._literal_end = 0  # accepted literal: the command continues at this offset
        self._literal_total = 0
        self._text_length = 0  # non-literal octets of the current command so far
        self._pending: tuple[int, int, bool] | None = None  # (end of line, size, synchronizing)
        self._discard_bytes = 0  # a refused non-synchronizing literal still to swallow
        self._discard_line = False  # drop up to the next LF (after a refusal or an over-long line)
        self._literals: list[tuple[int, int]] = []  # the current command's accepted literals
        self._evented = 0  # how much of the current command went out in LiteralRequests
        self._skipped = 0  # octets dropped without being part of any event, since take_skipped()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def drop(self) -> int:
        """Forget everything buffered (STARTTLS, RFC 3501 6.2.1); return how many bytes that was."""
        dropped = len(self._buf)
        self._buf.clear()
        self._reset_command()
        self._discard_bytes = 0
        self._discard_line = False
        return dropped

    def _reset_command(self) -> None:
        self._scan = self._literal_end = self._literal_total = self._text_length = self._evented = 0
        self._pending = None
        self._literals = []

    def take_skipped(self) -> int:
        """Octets dropped unread since the last call (an over-long line, a refused literal)."""
        skipped, self._skipped = self._skipped, 0
        return skipped

    def next_command(self) -> FramerEvent | None:
        """The next complete command or literal announcement, or None until more bytes arrive."""
        if self._pending is not None:
            raise RuntimeError("accept_literal() or reject_literal() must answer the LiteralRequest")
        buf = self._buf
        while True:
            if self._discard_bytes or self._discard_line:
                if not self._discard():
                    return None
                continue
            if self._literal_end:
                if len(buf) < self._literal_end:
                    return None
                self._scan, self._literal_end = self._literal_end, 0
            eol = buf.find(b"\n", self._scan)
            limit = self.max_line_length - self._text_length
            if eol < 0:
                if len(buf) - self._scan > limit:
                    return self._too_long()
                return None
            end = eol - 1 if eol > self._scan and buf[eol - 1] == 0x0D else eol
            if end - self._scan > limit:
                return self._too_long()
            if end == 0 and self._scan == 0:
                # An empty line is no command at all; skip it like most servers do.
                del buf[: eol + 1]
                continue
            marker = _LITERAL_AT_END.search(buf, self._scan, end) if end and buf[end - 1] == 0x7D else None
            if marker is None:
                command = CommandBytes(bytes(buf[:end]), self._evented, tuple(self._literals))
                del buf[: eol + 1]
                self._reset_command()
                return command
            self._text_length += end - self._scan
            size, synchronizing = int(marker[1]), not marker[2]
            self._pending = (eol, size, synchronizing)
            request = LiteralRequest(bytes(buf[: min(end, 256)]), size, synchronizing, self._literal_total + size,
                                     bytes(buf[: eol + 1]), self._evented, tuple(self._literals))
            self._evented = eol + 1
            return request

    def accept_literal(self) -> None:
        assert self._pending is not None
        eol, size, _ = self._pending
        self._pending = None
        self._literal_total += size
        self._literal_end = eol + 1 + size
        self._literals.append((eol + 1, eol + 1 + size))
        if size == 0:
            self._scan, self._literal_end = eol + 1, 0

    def reject_literal(self) -> None:
        """Drop the command. A refused {n} is never sent (RFC 3501 7.5); a {n+} must be swallowed."""
        assert self._pending is not None
        eol, size, synchronizing = self._pending
        del self._buf[: eol + 1]
        self._reset_command()
        if not synchronizing:
            self._discard_bytes = size
            self._discard_line = True

    def _too_long(self) -> LineTooLong:
        head = bytes(self._buf[: min(len(self._buf), 256)])
        # The command's earlier lines went out in LiteralRequests; its last literal did not.
        self._skipped += max(0, self._scan - self._evented)
        del self._buf[: self._scan]
        self._reset_command()
        self._discard_line = True
        return LineTooLong(head)

    def _discard(self) -> bool:
        """Swallow refused bytes; True once the framer is back at the start of a command."""
        buf = self._buf
        if self._discard_bytes:
            count = min(self._discard_bytes, len(buf))
            del buf[:count]
            self._skipped += count
            self._discard_bytes -= count
            if self._discard_bytes:
                return False
        eol = buf.find(b"\n")
        if eol < 0:
            if len(buf) > _MARKER_TAIL:
                self._skipped += len(buf) - _MARKER_TAIL
                del buf[: len(buf) - _MARKER_TAIL]
            return False
        end = eol - 1 if eol and buf[eol - 1] == 0x0D else eol
        marker = _LITERAL_AT_END.search(buf, max(0, end - _MARKER_TAIL), end)
        # Read the match before the buffer changes under it (groups are sliced lazily).
        continued = marker is not None and bool(marker[2])
        more = int(marker[1]) if marker is not None else 0
        self._skipped += eol + 1
        del buf[: eol + 1]
        if continued:
            self._discard_bytes = more  # the line went on with another {n+} literal
            return self._discard()
        self._discard_line = False
        return True

    def next_line(self) -> bytes | LineTooLong | None:
        """A raw line (IDLE's DONE, an AUTHENTICATE response), without its line ending."""
        buf = self._buf
        eol = buf.find(b"\n")
        if eol < 0:
            if len(buf) > self.max_line_length:
                return self._too_long()
            return None
        line = bytes(buf[:eol])
        del buf[: eol + 1]
        return line[:-1] if line.endswith(b"\r") else line


# --- Parsed commands -----------------------------------------------------------------------


class CommandError(Exception):
    """The peer sent something the grammar rejects; answered with `<tag> BAD <message>`."""

    def __init__(self, message: str, tag: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag


class Incomplete(CommandError):
    """parse_command(partial=True): the data ran out, and everything up to there was valid."""


STAR = 0  # "*" in a sequence set: nz-number never is 0, so 0 can stand for it.


@dataclass(frozen=True)
class SequenceSet:
    """sequence-set (RFC 3501 section 9): ranges of numbers, STAR for "*", either order."""

    ranges: tuple[tuple[int, int], ...]
    saved: bool = False  # "$": the messages the last SEARCH RETURN (SAVE) kept (RFC 5182); no ranges

    def resolve(self, largest: int) -> Iterator[tuple[int, int]]:
        """Each range as (low, high) with "*" replaced by `largest` (RFC 3501 6.4.8)."""
        for first, last in self.ranges:
            first = largest if first == STAR else first
            last = largest if last == STAR else last
            yield (first, last) if first <= last else (last, first)

    def __str__(self) -> str:
        if self.saved:
            return "$"

        def number(value: int) -> str:
            return "*" if value == STAR else str(value)

        return ",".join(number(a) if a == b else f"{number(a)}:{number(b)}" for a, b in self.ranges)


@dataclass(frozen=True)
class Section:
    """section-spec (RFC 3501 6.4.5): a part path plus HEADER/HEADER.FIELDS[.NOT]/TEXT/MIME."""

    part: tuple[int, ...] = ()
    kind: str | None = None
    fields: tuple[str, ...] = ()

    def label(self) -> str:
        """The section as the FETCH response names it (field names upper-cased, like Dovecot)."""
        text = ".".join(str(n) for n in self.part)
        if self.kind:
            text = f"{text}.{self.kind}" if text else self.kind
        if self.kind in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            text += " (" + " ".join(quote_astring(f.upper()) for f in self.fields) + ")"
        return text


@dataclass(frozen=True)
class FetchItem:
    """One fetch-att. `name` is upper case; for body sections it is "BODY" with `section` set."""

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None  # (origin, count)


@dataclass(frozen=True)
class Login:
    user: bytes
    password: bytes


@dataclass(frozen=True)
class Authenticate:
    mechanism: str
    initial: bytes | None  # the SASL-IR initial response (base64 text, "=" for empty), RFC 4959


@dataclass(frozen=True)
class MailboxArg:
    mailbox: str
    condstore: bool = False  # SELECT/EXAMINE (CONDSTORE), RFC 7162 3.1.8
    qresync: QResync | None = None  # SELECT/EXAMINE (QRESYNC (...)), RFC 7162 3.2.5


@dataclass(frozen=True)
class QResync:
    """qresync-param (RFC 7162 7): what the client knew of the mailbox when it last had it."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None  # "*" not allowed: UIDs only
    # seq-match-data: (known-sequence-set known-uid-set). Checked, then unused: the store keeps
    # every expunged UID, so nothing has to be inferred from sequence numbers.
    seq_match: tuple[SequenceSet, SequenceSet] | None = None


@dataclass(frozen=True)
class Rename:
    old: str
    new: str


@dataclass(frozen=True)
class ListArgs:
    reference: str
    pattern: str
    # LIST-EXTENDED (RFC 5258): more patterns, selection and return options; LIST-STATUS
    # (RFC 5819): the STATUS items to return with each mailbox.
    more_patterns: tuple[str, ...] = ()
    selection: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    status_items: tuple[str, ...] = ()
    extended: bool = False


@dataclass(frozen=True)
class StatusArgs:
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class AppendMessage:
    flags: tuple[str, ...]
    internal_date: datetime | None
    message: bytes
    binary: bool = False  # sent as literal8 (RFC 3516 4.4)
    # CATENATE (RFC 4469): ("TEXT", octets) and ("URL", imap-url) parts, joined by the session.
    catenate: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True)
class AppendArgs:
    mailbox: str
    messages: tuple[AppendMessage, ...]  # more than one: MULTIAPPEND (RFC 3502)


@dataclass(frozen=True)
class FetchArgs:
    sequence: SequenceSet
    items: tuple[FetchItem, ...]
    changedsince: int | None = None  # FETCH modifier (CHANGEDSINCE n), RFC 7162 3.1.4.1
    vanished: bool = False  # UID FETCH modifier VANISHED (with CHANGEDSINCE), RFC 7162 3.2.6


@dataclass(frozen=True)
class StoreArgs:
    sequence: SequenceSet
    mode: str  # "+", "-" or "" (replace)
    silent: bool
    flags: tuple[str, ...]
    unchangedsince: int | None = None  # STORE modifier (UNCHANGEDSINCE n), RFC 7162 3.1.3


@dataclass(frozen=True)
class CopyArgs:
    sequence: SequenceSet
    mailbox: str


@dataclass(frozen=True)
class SearchArgs:
    charset: str | None
    key: SearchKey
    returns: tuple[str, ...] | None = None  # RETURN (...) options (RFC 4731), None without RETURN
    partial: tuple[int, int] | None = None  # RETURN (PARTIAL low:high), RFC 5267 4.4


@dataclass(frozen=True)
class SortCriterion:
    key: str  # ARRIVAL, CC, DATE, FROM, SIZE, SUBJECT, TO (RFC 5256), DISPLAYFROM, DISPLAYTO (RFC 5957)
    reverse: bool


@dataclass(frozen=True)
class SortArgs:
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey
    returns: tuple[str, ...] | None = None  # ESORT (RFC 5267): RETURN (...) as for SEARCH
    partial: tuple[int, int] | None = None


@dataclass(frozen=True)
class CancelUpdateArgs:
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ThreadArgs:
    algorithm: str  # ORDEREDSUBJECT or REFERENCES (RFC 5256 4)
    charset: str
    key: SearchKey


@dataclass(frozen=True)
class ExpungeArgs:
    uids: SequenceSet | None  # UID EXPUNGE (RFC 4315 section 2.1)


@dataclass(frozen=True)
class IdArgs:
    fields: tuple[tuple[str, str | None], ...] | None


@dataclass(frozen=True)
class EnableArgs:
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class NoArgs:
    pass


@dataclass(frozen=True)
class Command:
    tag: str
    name: str  # upper case; "FETCH" also for UID FETCH (then uid is True)
    uid: bool
    args: Any
    secrets: Spans = ()  # the credentials in the command's bytes (LOGIN's password, a SASL response)


# --- SEARCH keys (RFC 3501 6.4.4) ----------------------------------------------------------


@dataclass(frozen=True)
class AllKey:
    pass


@dataclass(frozen=True)
class FlagKey:
    flag: str  # a system flag or keyword, as stored
    present: bool


@dataclass(frozen=True)
class RecentKey:
    present: bool


@dataclass(frozen=True)
class NewKey:
    pass


@dataclass(frozen=True)
class HeaderKey:
    field: str
    value: str


@dataclass(frozen=True)
class TextKey:
    value: str
    body_only: bool


@dataclass(frozen=True)
class DateKey:
    sent: bool  # SENT* keys use the Date: header, the others the internal date
    relation: str  # "BEFORE", "ON", "SINCE"
    day: date


@dataclass(frozen=True)
class SizeKey:
    larger: bool
    size: int


@dataclass(frozen=True)
class SequenceKey:
    sequence: SequenceSet
    uid: bool


@dataclass(frozen=True)
class ModSeqKey:
    modseq: int  # RFC 7162 3.1.5: messages changed at or after this modification sequence


@dataclass(frozen=True)
class NotKey:
    key: SearchKey


@dataclass(frozen=True)
class OrKey:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True)
class AndKey:
    keys: tuple[SearchKey, ...]


SearchKey = (
    AllKey | FlagKey | RecentKey | NewKey | HeaderKey | TextKey | DateKey | SizeKey | SequenceKey | NotKey
    | OrKey | AndKey | ModSeqKey
)

# --- Lexical rules ---------------------------------------------------------------------------

# ATOM-CHAR: any CHAR except atom-specials: "(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]".
# Eight-bit octets are let through (UTF-8 mailbox names from sloppy clients, as Dovecot does).
_ATOM = re.compile(rb'[^(){ %*"\\\]\x00-\x1f\x7f]+')
# flag-keyword = atom, and atoms are 7-bit here: a keyword is an identifier, never text.
_KEYWORD = re.compile(rb'[^(){ %*"\\\]\x00-\x1f\x7f-\xff]+')
_ASTRING_ATOM = re.compile(rb'[^(){ %*"\\\x00-\x1f\x7f]+')  # ASTRING-CHAR adds "]"
_LIST_CHARS = re.compile(rb'[^(){ "\\\x00-\x1f\x7f]+')  # list-char adds "%" "*" "]"
_TAG = re.compile(rb'[^(){ %*"\\+\x00-\x1f\x7f]+')  # tag: ASTRING-CHAR except "+"
_QUOTED = re.compile(rb'"((?:[^"\\\r\n]|\\["\\])*)"')
_LITERAL = re.compile(rb"\{(\d{1,19})\+?\}\r?\n")
_NUMBER = re.compile(rb"\d+")
_SEQUENCE = re.compile(rb"(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*")
_FETCH_ATT = re.compile(rb"[A-Za-z0-9.]+")
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DATE_TEXT = re.compile(rb"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_DATE_TIME = re.compile(rb'"([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)"')
_UINT32_MAX = 4294967295
_UINT32_DIGITS = len(str(_UINT32_MAX))
_MODSEQ_MAX = 2**63 - 1

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SYSTEM_FLAG_NAMES = {flag.upper(): flag for flag in SYSTEM_FLAGS}


def quote_astring(value: str) -> str:
    """An astring as short as it can be: atom, else quoted (callers avoid CR/LF/8-bit here)."""
    encoded = value.encode("utf-8", "surrogateescape")
    if encoded and _ASTRING_ATOM.fullmatch(encoded) and encoded.upper() != b"NIL":
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def decode_name(raw: bytes) -> str:
    """Mailbox names are kept as text; bytes that are not UTF-8 survive the round trip."""
    return raw.decode("utf-8", "surrogateescape")


class Reader:
    """A cursor over one complete command. Every method either consumes its token or raises."""

    def __init__(self, data: bytes, *, partial: bool = False, utf8: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.partial = partial  # `data` is only the start of a command (see parse_command)
        # ENABLE UTF8=ACCEPT (RFC 9755 3): quoted strings hold UTF-8 (and nothing else with the
        # high bit set), mailbox names are UTF-8; before it, names are modified UTF-7.
        self.utf8 = utf8
        self.secrets: list[tuple[int, int]] = []

    def fail(self, message: str) -> CommandError:
        if self.partial and self.at_end():
            return Incomplete(message)
        return CommandError(message)

    def secret(self, read: Callable[[], bytes]) -> bytes:
        """Read a token with `read`, noting its octets as a credential."""
        start = self.pos
        value = read()
        self.secrets.append((start, self.pos))
        return value

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def end(self) -> None:
        if not self.at_end():
            raise self.fail("Unexpected extra arguments")

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise self.fail("Missing argument" if self.at_end() else "Expected a single space")
        self.pos += 1

    def maybe_sp(self) -> bool:
        if self.peek() == 0x20:
            self.pos += 1
            return True
        return False

    def char(self, value: bytes) -> None:
        if not self.data.startswith(value, self.pos):
            raise self.fail(f"Expected {value.decode()!r}")
        self.pos += len(value)

    def _match(self, pattern: re.Pattern[bytes], what: str) -> re.Match[bytes]:
        match = pattern.match(self.data, self.pos)
        if match is None or match.end() == self.pos:
            raise self.fail(f"Expected {what}")
        self.pos = match.end()
        return match

    def atom(self) -> str:
        return self._match(_ATOM, "an atom")[0].decode("utf-8", "surrogateescape")

    def keyword(self) -> str:
        """An atom compared case-insensitively (command names, FETCH/SEARCH keys)."""
        return self.atom().upper()

    def number(self) -> int:
        digits = self._match(_NUMBER, "a number")[0]
        # Checked on the digits first: int() of thousands of digits is slow, then a ValueError.
        if len(digits) > _UINT32_DIGITS or int(digits) > _UINT32_MAX:
            raise self.fail("Number out of range")
        return int(digits)

    def modseq(self) -> int:
        """mod-sequence-value (RFC 7162 7): 1*DIGIT, at most 2^63 - 1."""
        digits = self._match(_NUMBER, "a mod-sequence")[0]
        if len(digits) > 19 or int(digits) > _MODSEQ_MAX:
            raise self.fail("Mod-sequence out of range")
        return int(digits)

    def nz_number(self) -> int:
        value = self.number()
        if value == 0:
            raise self.fail("Zero is not a valid number here")
        return value

    def quoted(self) -> bytes:
        match = self._match(_QUOTED, "a quoted string")
        if self.utf8 and not match[1].isascii():
            try:
                match[1].decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("Invalid UTF-8 in a quoted string") from None
        return re.sub(rb'\\(["\\])', rb"\1", match[1]) if b"\\" in match[1] else match[1]

    def literal(self) -> bytes:
        match = self._match(_LITERAL, "a literal")
        size = int(match[1])
        value = self.data[self.pos : self.pos + size]
        if len(value) != size:
            if self.partial:
                raise Incomplete("Literal not yet sent")
            raise self.fail("Literal shorter than announced")
        self.pos += size
        return value

    def string(self) -> bytes:
        first = self.peek()
        if first == 0x22:
            return self.quoted()
        if first == 0x7B:
            return self.literal()
        raise self.fail("Expected a string")

    def astring(self) -> bytes:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        return self._match(_ASTRING_ATOM, "a string")[0]

    def nstring(self) -> bytes | None:
        if self.data[self.pos : self.pos + 3].upper() == b"NIL" and not _ASTRING_ATOM.match(self.data, self.pos + 3):
            self.pos += 3
            return None
        return self.string()

    def text_astring(self) -> str:
        return self.astring().decode("utf-8", "replace")

    def mailbox(self) -> str:
        # mailbox = "INBOX" / astring; INBOX is case-insensitive (RFC 3501 5.1).
        name = self.name(self.astring())
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        if self.peek() in (0x22, 0x7B):
            return self.name(self.string())
        return self.name(self._match(_LIST_CHARS, "a mailbox pattern")[0])

    def name(self, raw: bytes) -> str:
        """A mailbox name (or LIST reference or pattern) as the store keeps it: modified UTF-7
        decoded, unless UTF8=ACCEPT is on. What is not valid modified UTF-7 is taken as sent,
        and eight-bit octets as UTF-8 (or kept, octet for octet: decode_name)."""
        if not self.utf8 and raw.isascii() and b"&" in raw:
            text = raw.decode("ascii")
            decoded = mutf7.decode(text)
            return decoded if decoded is not None else text
        return decode_name(raw)

    def sequence_set(self) -> SequenceSet:
        if self.peek() == 0x24:  # "$" (RFC 5182: seq-last-command), only ever the whole set
            self.pos += 1
            return SequenceSet((), saved=True)
        text = self._match(_SEQUENCE, "a sequence set")[0]
        ranges: list[tuple[int, int]] = []
        for item in text.split(b","):
            first, _, last = item.partition(b":")
            a = self._seq_number(first)
            ranges.append((a, self._seq_number(last) if last else a))
        return SequenceSet(tuple(ranges))

    def _seq_number(self, raw: bytes) -> int:
        if raw == b"*":
            return STAR
        if len(raw) > _UINT32_DIGITS:
            raise self.fail("Invalid sequence number")
        value = int(raw)
        if not 0 < value <= _UINT32_MAX:
            raise self.fail("Invalid sequence number")
        return value

    def flag(self, *, allow_recent: bool = False) -> str:
        """flag (RFC 3501 section 9): a system flag (canonical case) or a keyword atom."""
        if self.peek() == 0x5C:  # "\"
            self.pos += 1
            name = "\\" + self.atom()
            canonical = _SYSTEM_FLAG_NAMES.get(name.upper())
            if canonical is None and allow_recent and name.upper() == "\\RECENT":
                return "\\Recent"
            if canonical is None:
                raise self.fail(f"Invalid system flag {name.upper()}")
            return canonical
        return self._match(_KEYWORD, "a flag").group().decode("ascii")

    def flag_list(self) -> tuple[str, ...]:
        self.char(b"(")
        flags: list[str] = []
        if self.peek() != 0x29:
            flags.append(self.flag())
            while self.maybe_sp():
                flags.append(self.flag())
        self.char(b")")
        return tuple(flags)

    def date(self) -> date:
        # date = date-text / DQUOTE date-text DQUOTE
        quoted = self.peek() == 0x22
        if quoted:
            self.pos += 1
        match = self._match(_DATE_TEXT, "a date like 1-Feb-1994")
        if quoted:
            self.char(b'"')
        try:
            return date(int(match[3]), _month(match[2]), int(match[1]))
        except ValueError:
            raise self.fail("Invalid date") from None

    def date_time(self) -> datetime:
        match = self._match(_DATE_TIME, 'a date-time like "17-Jul-1996 02:44:25 -0700"')
        offset = timedelta(hours=int(match[8]), minutes=int(match[9]))
        try:
            return datetime(
                int(match[3]), _month(match[2]), int(match[1].strip()), int(match[4]), int(match[5]), int(match[6]),
                tzinfo=timezone(-offset if match[7] == b"-" else offset),
            )
        except ValueError:
            raise self.fail("Invalid date-time") from None


def _month(raw: bytes) -> int:
    try:
        return _MONTHS.index(raw.decode().upper()) + 1
    except ValueError:
        raise CommandError("Invalid month") from None


# --- Command arguments ---------------------------------------------------------------------


def _no_args(reader: Reader, uid: bool) -> NoArgs:
    return NoArgs()


def _login(reader: Reader, uid: bool) -> Login:
    reader.sp()
    user = reader.astring()
    reader.sp()
    return Login(user, reader.secret(reader.astring))


def _authenticate(reader: Reader, uid: bool) -> Authenticate:
    reader.sp()
    mechanism = reader.keyword()
    initial = None
    if reader.maybe_sp():
        initial = reader.secret(lambda: reader._match(_BASE64, "a base64 initial response")[0])
    return Authenticate(mechanism, initial)


def _mailbox(reader: Reader, uid: bool) -> MailboxArg:
    reader.sp()
    return MailboxArg(reader.mailbox())


def _select(reader: Reader, uid: bool) -> MailboxArg:
    # select = "SELECT" SP mailbox [select-params]; select-params = SP "(" ... ")" (RFC 4466)
    reader.sp()
    mailbox = reader.mailbox()
    condstore = False
    qresync = None

    def qresync_param(option: str) -> None:
        # "QRESYNC" SP "(" uidvalidity SP mod-sequence-value [SP known-uids]
        #     [SP seq-match-data] ")"; seq-match-data = "(" known-sequence-set SP known-uid-set ")"
        nonlocal qresync
        if option != "QRESYNC":
            return
        if qresync is not None:
            raise reader.fail("QRESYNC can be used only once")
        reader.sp()
        reader.char(b"(")
        uidvalidity = reader.nz_number()
        reader.sp()
        modseq = reader.modseq()
        known = None
        seq_match = None
        if reader.maybe_sp() and reader.peek() != 0x28:
            known = _uid_only_set(reader)
            reader.maybe_sp()
        if reader.peek() == 0x28:
            reader.pos += 1
            sequences = _uid_only_set(reader)
            reader.sp()
            uids = _uid_only_set(reader)
            reader.char(b")")
            if _set_size(sequences) != _set_size(uids):
                raise reader.fail("QRESYNC sequence match sets differ in size")
            seq_match = (sequences, uids)
        reader.char(b")")
        qresync = QResync(uidvalidity, modseq, known, seq_match)

    if reader.maybe_sp():
        for name in _option_list(reader, ("CONDSTORE", "QRESYNC"), "SELECT parameter", qresync_param):
            condstore = condstore or name == "CONDSTORE"
    return MailboxArg(mailbox, condstore, qresync)


def _uid_only_set(reader: Reader) -> SequenceSet:
    """A sequence-set without "*" (known-uids, known-sequence-set: RFC 7162 7)."""
    sequence = reader.sequence_set()
    if sequence.saved or any(STAR in pair for pair in sequence.ranges):
        raise reader.fail("Expected a set of numbers without '*'")
    return sequence


def _set_size(sequence: SequenceSet) -> int:
    return sum(abs(high - low) + 1 for low, high in sequence.ranges)


def _rename(reader: Reader, uid: bool) -> Rename:
    reader.sp()
    old = reader.mailbox()
    reader.sp()
    return Rename(old, reader.mailbox())


LIST_SELECTION = ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE")
LIST_RETURN = ("SUBSCRIBED", "CHILDREN", "STATUS", "SPECIAL-USE")


def _list(reader: Reader, uid: bool) -> ListArgs:
    # list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts]
    # mbox-or-pat = list-mailbox / patterns; patterns = "(" list-mailbox *(SP list-mailbox) ")"
    # (RFC 5258 6; STATUS in the return options: RFC 5819)
    reader.sp()
    selection: list[str] = []
    extended = reader.peek() == 0x28
    if extended:
        selection = _option_list(reader, LIST_SELECTION, "LIST selection option")
        reader.sp()
        if "RECURSIVEMATCH" in selection and not set(selection) - {"RECURSIVEMATCH", "REMOTE"}:
            raise reader.fail("RECURSIVEMATCH needs another selection option")
    reference = reader.name(reader.astring())
    reader.sp()
    if reader.peek() == 0x28:
        extended = True
        reader.pos += 1
        patterns = [reader.list_mailbox()]
        while reader.maybe_sp():
            patterns.append(reader.list_mailbox())
        reader.char(b")")
    else:
        patterns = [reader.list_mailbox()]
    returns: list[str] = []
    status: tuple[str, ...] = ()
    if reader.maybe_sp():
        if reader.keyword() != "RETURN":
            raise reader.fail("Expected RETURN")
        reader.sp()
        extended = True

        def status_items(option: str) -> None:
            nonlocal status
            if option == "STATUS":
                reader.sp()
                status = _status_items(reader)

        returns = _option_list(reader, LIST_RETURN, "LIST return option", status_items)
    return ListArgs(reference, patterns[0], tuple(patterns[1:]), tuple(selection), tuple(returns), status, extended)


def _option_list(
    reader: Reader, allowed: tuple[str, ...], what: str, argument: Callable[[str], None] = lambda option: None
) -> list[str]:
    """A parenthesised list of option names from `allowed`; `argument` reads what an option
    takes after its name (LIST's STATUS items, SEARCH's PARTIAL range)."""
    reader.char(b"(")
    options: list[str] = []
    while reader.peek() != 0x29:
        if options:
            reader.sp()
        option = reader.keyword()
        if option not in allowed:
            raise reader.fail(f"Unknown {what} {option}")
        if option in options and option in ("PARTIAL", "UPDATE"):
            raise reader.fail(f"{option} can be used only once")
        options.append(option)
        argument(option)
    reader.char(b")")
    return options


def _lsub(reader: Reader, uid: bool) -> ListArgs:
    reader.sp()
    reference = reader.name(reader.astring())
    reader.sp()
    return ListArgs(reference, reader.list_mailbox())


# DELETED and SIZE: IMAP4rev2 (RFC 9051 6.3.11; SIZE is RFC 8438's STATUS=SIZE).
STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "DELETED", "SIZE")


def _status(reader: Reader, uid: bool) -> StatusArgs:
    reader.sp()
    mailbox = reader.mailbox()
    reader.sp()
    return StatusArgs(mailbox, _status_items(reader))


def _status_items(reader: Reader) -> tuple[str, ...]:
    reader.char(b"(")
    items = [reader.keyword()]
    while reader.maybe_sp():
        items.append(reader.keyword())
    reader.char(b")")
    for item in items:
        if item not in STATUS_ITEMS:
            raise reader.fail(f"Unknown STATUS item {item}")
    return tuple(items)


def _append(reader: Reader, uid: bool) -> AppendArgs:
    # append = "APPEND" SP mailbox 1*append-message (RFC 3502 6)
    # append-message = SP [flag-list SP] [date-time SP] literal
    reader.sp()
    mailbox = reader.mailbox()
    messages = []
    while reader.maybe_sp():
        messages.append(_append_message(reader))
    if not messages:
        raise reader.fail("Missing argument")
    return AppendArgs(mailbox, tuple(messages))


def _cat_parts(reader: Reader, start: int) -> tuple[tuple[str, bytes], ...]:
    # "CATENATE" SP "(" cat-part *(SP cat-part) ")"; cat-part = text-literal / url
    # text-literal = "TEXT" SP literal; url = "URL" SP astring (RFC 4469 5)
    reader.pos = start
    reader.sp()
    reader.char(b"(")
    parts: list[tuple[str, bytes]] = []
    while True:
        kind = reader.keyword()
        reader.sp()
        if kind == "TEXT":
            if reader.peek() != 0x7B:
                raise reader.fail("CATENATE TEXT needs a literal")
            parts.append((kind, reader.literal()))
        elif kind == "URL":
            parts.append((kind, reader.astring()))
        else:
            raise reader.fail(f"Unknown CATENATE part {kind}")
        if not reader.maybe_sp():
            break
    reader.char(b")")
    return tuple(parts)


def _append_message(reader: Reader) -> AppendMessage:
    flags: tuple[str, ...] = ()
    when = None
    if reader.peek() == 0x28:
        flags = reader.flag_list()
        reader.sp()
    if reader.peek() == 0x22:
        when = reader.date_time()
        reader.sp()
    catenate = _ATOM.match(reader.data, reader.pos)
    if catenate is not None and catenate[0].upper() == b"CATENATE":
        return AppendMessage(flags, when, b"", catenate=_cat_parts(reader, catenate.end()))
    binary = reader.peek() == 0x7E  # "~": literal8 (RFC 3516 4.4), which may hold NUL octets
    if binary:
        reader.pos += 1
    if reader.peek() != 0x7B:
        raise reader.fail("APPEND needs the message as a literal")
    return AppendMessage(flags, when, reader.literal(), binary)


_FETCH_MACROS = {
    # RFC 3501 6.4.5
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_FETCH = {
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT", "BODY",
    "BODYSTRUCTURE", "UID", "MODSEQ",
}


def _fetch(reader: Reader, uid: bool) -> FetchArgs:
    reader.sp()
    sequence = reader.sequence_set()
    reader.sp()
    items: list[FetchItem] = []
    if reader.peek() == 0x28:
        reader.pos += 1
        items.append(_fetch_att(reader))
        while reader.maybe_sp():
            items.append(_fetch_att(reader))
        reader.char(b")")
    else:
        start = reader.pos
        name = reader._match(_FETCH_ATT, "a FETCH item")[0].decode().upper()
        if name in _FETCH_MACROS:
            items.extend(FetchItem(item) for item in _FETCH_MACROS[name])
        else:
            reader.pos = start
            items.append(_fetch_att(reader))
    changedsince = None
    vanished = False

    def modifier_argument(option: str) -> None:
        nonlocal changedsince
        if option == "CHANGEDSINCE":
            if changedsince is not None:
                raise reader.fail("CHANGEDSINCE can be used only once")
            reader.sp()
            changedsince = reader.modseq()

    if reader.maybe_sp():
        # fetch-modifiers = SP "(" fetch-modifier *(SP fetch-modifier) ")" (RFC 4466 2.4);
        # VANISHED (RFC 7162 3.2.6) only in UID FETCH, and only with CHANGEDSINCE.
        modifiers = _option_list(reader, ("CHANGEDSINCE", "VANISHED"), "FETCH modifier", modifier_argument)
        if not modifiers:
            raise reader.fail("Expected a FETCH modifier")
        vanished = "VANISHED" in modifiers
        if vanished and not uid:
            raise reader.fail("VANISHED is only valid in UID FETCH")
        if vanished and changedsince is None:
            raise reader.fail("VANISHED needs CHANGEDSINCE")
    return FetchArgs(sequence, tuple(items), changedsince, vanished)


def _fetch_att(reader: Reader) -> FetchItem:
    name = reader._match(_FETCH_ATT, "a FETCH item")[0].decode().upper()
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE"):
        return _binary_att(reader, name)
    if reader.peek() == 0x5B and name in ("BODY", "BODY.PEEK"):
        section = _section(reader)
        partial = _partial(reader) if reader.peek() == 0x3C else None
        return FetchItem("BODY", section, name == "BODY.PEEK", partial)
    if name not in _SIMPLE_FETCH:
        raise reader.fail(f"Unknown FETCH item {name}")
    return FetchItem(name)


def _binary_att(reader: Reader, name: str) -> FetchItem:
    """RFC 3516: "BINARY" [".PEEK"] section-binary [partial] / "BINARY.SIZE" section-binary;
    section-binary = "[" [section-part] "]". BINARY.SIZE never sets \\Seen (peek)."""
    reader.char(b"[")
    part: list[int] = []
    if reader.peek() != 0x5D:
        part.append(reader.nz_number())
        while reader.peek() == 0x2E:
            reader.pos += 1
            part.append(reader.nz_number())
    reader.char(b"]")
    partial = None
    if name != "BINARY.SIZE" and reader.peek() == 0x3C:
        partial = _partial(reader)
    size = name == "BINARY.SIZE"
    return FetchItem("BINARY.SIZE" if size else "BINARY", Section(tuple(part)), size or name == "BINARY.PEEK", partial)


def _partial(reader: Reader) -> tuple[int, int]:
    # "<" number "." nz-number ">"
    reader.char(b"<")
    origin = reader.number()
    reader.char(b".")
    count = reader.nz_number()
    reader.char(b">")
    return origin, count


def _section(reader: Reader) -> Section:
    # section = "[" [section-spec] "]"
    reader.char(b"[")
    part: list[int] = []
    kind: str | None = None
    fields: tuple[str, ...] = ()
    if reader.peek() != 0x5D:
        while 0x30 <= reader.peek() <= 0x39:
            part.append(reader.nz_number())
            if reader.peek() != 0x2E:
                break
            reader.pos += 1
        if reader.peek() != 0x5D:
            kind = reader._match(_FETCH_ATT, "a section")[0].decode().upper()
            allowed = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT") + (("MIME",) if part else ())
            if kind not in allowed:
                raise reader.fail(f"Invalid section {kind}")
            if kind.startswith("HEADER.FIELDS"):
                reader.sp()
                fields = _header_list(reader)
        elif reader.data[reader.pos - 1] == 0x2E:
            raise reader.fail("Invalid section")
    reader.char(b"]")
    return Section(tuple(part), kind, fields)


def parse_section(text: bytes) -> Section | None:
    """A section-spec as an IMAP URL's ";SECTION=" gives it (RFC 5092 iurl-section), or None."""
    reader = Reader(b"[" + text + b"]")
    try:
        section = _section(reader)
        reader.end()
    except CommandError:
        return None
    return section


def _header_list(reader: Reader) -> tuple[str, ...]:
    reader.char(b"(")
    names = [reader.text_astring()]
    while reader.maybe_sp():
        names.append(reader.text_astring())
    reader.char(b")")
    return tuple(names)


def _store(reader: Reader, uid: bool) -> StoreArgs:
    # store-att-flags = (["+" / "-"] "FLAGS" [".SILENT"]) SP (flag-list / (flag *(SP flag)))
    reader.sp()
    sequence = reader.sequence_set()
    reader.sp()
    unchangedsince = None
    if reader.peek() == 0x28:  # store-modifiers (RFC 4466 2.5): only UNCHANGEDSINCE
        reader.pos += 1
        if reader.keyword() != "UNCHANGEDSINCE":
            raise reader.fail("Unknown STORE modifier")
        reader.sp()
        unchangedsince = reader.modseq()
        reader.char(b")")
        reader.sp()
    mode = ""
    if reader.peek() in (0x2B, 0x2D):
        mode = chr(reader.peek())
        reader.pos += 1
    item = reader._match(_FETCH_ATT, "FLAGS").group().decode().upper()
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise reader.fail(f"Invalid STORE item {item}")
    reader.sp()
    if reader.peek() == 0x28:
        flags = reader.flag_list()
    else:
        collected = [reader.flag()]
        while reader.maybe_sp():
            collected.append(reader.flag())
        flags = tuple(collected)
    return StoreArgs(sequence, mode, item.endswith(".SILENT"), flags, unchangedsince)


def _copy(reader: Reader, uid: bool) -> CopyArgs:
    reader.sp()
    sequence = reader.sequence_set()
    reader.sp()
    return CopyArgs(sequence, reader.mailbox())


def _expunge(reader: Reader, uid: bool) -> ExpungeArgs:
    if not uid:
        return ExpungeArgs(None)
    reader.sp()
    return ExpungeArgs(reader.sequence_set())


def _id(reader: Reader, uid: bool) -> IdArgs:
    # id = "ID" SP id-params-list; id-params-list = "(" *(string SP nstring) ")" / nil (RFC 2971)
    reader.sp()
    if reader.data[reader.pos : reader.pos + 3].upper() == b"NIL":
        reader.pos += 3
        return IdArgs(None)
    reader.char(b"(")
    fields: list[tuple[str, str | None]] = []
    while reader.peek() != 0x29:
        if fields:
            reader.sp()
        key = reader.string().decode("utf-8", "replace")
        reader.sp()
        value = reader.nstring()
        fields.append((key, None if value is None else value.decode("utf-8", "replace")))
    reader.char(b")")
    return IdArgs(tuple(fields))


def _enable(reader: Reader, uid: bool) -> EnableArgs:
    reader.sp()
    names = [reader.keyword()]
    while reader.maybe_sp():
        names.append(reader.keyword())
    return EnableArgs(tuple(names))


def _search(reader: Reader, uid: bool) -> SearchArgs:
    # search = "SEARCH" [search-return-opts] [SP "CHARSET" SP astring] 1*(SP search-key)
    # search-return-opts = SP "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")"
    reader.sp()
    charset = None
    returns: tuple[str, ...] | None = None
    partial = None
    # The first key may be a sequence set ("*", "1:3") or a parenthesised list, neither an atom.
    first = _ATOM.match(reader.data, reader.pos)
    if first is not None and first[0].upper() == b"RETURN" and reader.data.startswith(b" (", first.end()):
        returns, partial = _return_options(reader, first.end() + 1, "SEARCH")
        reader.sp()
        first = _ATOM.match(reader.data, reader.pos)
    if first is not None and first[0].upper() == b"CHARSET":
        reader.pos = first.end()
        reader.sp()
        charset = reader.astring().decode("ascii", "replace").upper()
        reader.sp()
    keys = [_search_key(reader, charset, 0)]
    while reader.maybe_sp():
        keys.append(_search_key(reader, charset, 0))
    return SearchArgs(charset, keys[0] if len(keys) == 1 else AndKey(tuple(keys)), returns, partial)


# RFC 4731 (ESEARCH), RFC 5182 (SEARCHRES: SAVE), RFC 5267 (CONTEXT=SEARCH: UPDATE, CONTEXT,
# PARTIAL).
SEARCH_RETURN_OPTIONS = ("MIN", "MAX", "ALL", "COUNT", "SAVE", "UPDATE", "CONTEXT", "PARTIAL")


def _return_options(reader: Reader, start: int, command: str) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """The "(" ... ")" list of search-return-opts at `start`, without repeats, and the range
    of PARTIAL (RFC 5267 4.4: partial-range = nz-number ":" nz-number, either order)."""
    reader.pos = start
    partial = None

    def partial_range(option: str) -> None:
        nonlocal partial
        if option == "PARTIAL":
            reader.sp()
            low = reader.nz_number()
            reader.char(b":")
            high = reader.nz_number()
            partial = (min(low, high), max(low, high))

    options = _option_list(reader, SEARCH_RETURN_OPTIONS, f"{command} RETURN option", partial_range)
    if partial is not None and "ALL" in options:
        raise reader.fail("PARTIAL conflicts with ALL")
    return tuple(dict.fromkeys(options)), partial


SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")


def _sort(reader: Reader, uid: bool) -> SortArgs:
    # sort = ["UID" SP] "SORT" [SP "RETURN" SP "(" ...")"] SP sort-criteria SP search-criteria
    # (RFC 5256 5, RFC 5267 3.2); search-criteria = charset 1*(SP search-key)
    reader.sp()
    returns = None
    partial = None
    first = _ATOM.match(reader.data, reader.pos)
    if first is not None and first[0].upper() == b"RETURN":
        reader.pos = first.end()
        reader.sp()
        returns, partial = _return_options(reader, reader.pos, "SORT")
        reader.sp()
    reader.char(b"(")
    criteria: list[SortCriterion] = []
    while True:
        name = reader.keyword()
        reverse = name == "REVERSE"
        if reverse:
            reader.sp()
            name = reader.keyword()
        if name not in SORT_KEYS:
            raise reader.fail(f"Unknown sort criterion {name}")
        criteria.append(SortCriterion(name, reverse))
        if not reader.maybe_sp():
            break
    reader.char(b")")
    reader.sp()
    charset, key = _charset_and_keys(reader, "SORT")
    return SortArgs(tuple(criteria), charset, key, returns, partial)


def _charset_and_keys(reader: Reader, command: str) -> tuple[str, SearchKey]:
    """search-criteria = charset 1*(SP search-key), as SORT and THREAD take them (RFC 5256 5)."""
    charset = reader.astring().decode("ascii", "replace").upper()
    keys = []
    while reader.maybe_sp():
        keys.append(_search_key(reader, charset, 0))
    if not keys:
        raise reader.fail(f"{command} needs search keys")
    return charset, keys[0] if len(keys) == 1 else AndKey(tuple(keys))


def _cancelupdate(reader: Reader, uid: bool) -> CancelUpdateArgs:
    # cancelupdate = "CANCELUPDATE" 1*(SP tag-string); tag-string = string (RFC 5267 4.2)
    tags = []
    while reader.maybe_sp():
        tags.append(reader.string().decode("ascii", "replace"))
    if not tags:
        raise reader.fail("CANCELUPDATE needs a tag")
    return CancelUpdateArgs(tuple(tags))


THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")


def _thread(reader: Reader, uid: bool) -> ThreadArgs:
    # thread = ["UID" SP] "THREAD" SP thread-alg SP search-criteria (RFC 5256 5)
    reader.sp()
    algorithm = reader.keyword()
    if algorithm not in THREAD_ALGORITHMS:
        raise reader.fail(f"Unknown threading algorithm {algorithm}")
    reader.sp()
    charset, key = _charset_and_keys(reader, "THREAD")
    return ThreadArgs(algorithm, charset, key)


# NOT, OR and parentheses nest; parsing and matching recurse once per level, so the depth is
# bounded well inside Python's recursion limit. Real clients nest a handful of levels.
MAX_SEARCH_DEPTH = 100
_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True), "DRAFT": ("\\Draft", True),
    "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True), "UNANSWERED": ("\\Answered", False),
    "UNDELETED": ("\\Deleted", False), "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}
_HEADER_KEYS = {"FROM": "From", "TO": "To", "CC": "Cc", "BCC": "Bcc", "SUBJECT": "Subject"}
_DATE_KEYS = {
    "BEFORE": (False, "BEFORE"), "ON": (False, "ON"), "SINCE": (False, "SINCE"),
    "SENTBEFORE": (True, "BEFORE"), "SENTON": (True, "ON"), "SENTSINCE": (True, "SINCE"),
}


def _search_key(reader: Reader, charset: str | None, depth: int) -> SearchKey:
    if depth > MAX_SEARCH_DEPTH:
        raise reader.fail(f"Search keys nested too deeply (at most {MAX_SEARCH_DEPTH} levels)")
    inner = depth + 1
    first = reader.peek()
    if first == 0x28:  # "(" search-key *(SP search-key) ")"
        reader.pos += 1
        keys = [_search_key(reader, charset, inner)]
        while reader.maybe_sp():
            keys.append(_search_key(reader, charset, inner))
        reader.char(b")")
        return keys[0] if len(keys) == 1 else AndKey(tuple(keys))
    if 0x30 <= first <= 0x39 or first in (0x2A, 0x24):  # a digit, "*" or "$"
        return SequenceKey(reader.sequence_set(), uid=False)
    name = reader.keyword()

    def text() -> str:
        reader.sp()
        return reader.astring().decode("utf-8", "replace")

    if name in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[name]
        return FlagKey(flag, present)
    if name == "ALL":
        return AllKey()
    if name in ("RECENT", "OLD"):
        return RecentKey(name == "RECENT")
    if name == "NEW":
        return NewKey()
    if name in ("KEYWORD", "UNKEYWORD"):
        reader.sp()
        return FlagKey(reader._match(_KEYWORD, "a keyword").group().decode("ascii"), name == "KEYWORD")
    if name in _HEADER_KEYS:
        return HeaderKey(_HEADER_KEYS[name], text())
    if name == "HEADER":
        field = text()
        return HeaderKey(field, text())
    if name in ("BODY", "TEXT"):
        return TextKey(text(), body_only=name == "BODY")
    if name in _DATE_KEYS:
        sent, relation = _DATE_KEYS[name]
        reader.sp()
        return DateKey(sent, relation, reader.date())
    if name in ("LARGER", "SMALLER"):
        reader.sp()
        return SizeKey(name == "LARGER", reader.number())
    if name == "UID":
        reader.sp()
        return SequenceKey(reader.sequence_set(), uid=True)
    if name == "MODSEQ":
        # "MODSEQ" [SP entry-name SP entry-type-req] SP mod-sequence-valzer (RFC 7162 3.1.5);
        # the entry (a flag's metadata name) narrows nothing here: one modseq per message.
        reader.sp()
        if reader.peek() == 0x22:
            reader.quoted()
            reader.sp()
            if reader.keyword() not in ("PRIV", "SHARED", "ALL"):
                raise reader.fail("Expected priv, shared or all")
            reader.sp()
        return ModSeqKey(reader.modseq())
    if name == "NOT":
        reader.sp()
        return NotKey(_search_key(reader, charset, inner))
    if name == "OR":
        reader.sp()
        left = _search_key(reader, charset, inner)
        reader.sp()
        return OrKey(left, _search_key(reader, charset, inner))
    raise reader.fail(f"Unknown search key {name}")


ArgParser = Callable[[Reader, bool], Any]


@dataclass(frozen=True, slots=True)
class Declaration:
    """One IMAP command, everything about it in one place: its argument grammar (RFC 3501
    section 9 and the extensions' RFCs), the `ImapSession` method that runs it, the states it is
    valid in (RFC 3501 section 6), whether it has a UID form (RFC 3501 6.4.8), whether it
    reads or writes mail, in either form (the journal's mail-in-clear, KNOWN-BAD.md), and
    whether its plain form holds back EXPUNGE responses (RFC 3501 7.4.1: FETCH, STORE and SEARCH
    may not renumber the client's messages; SORT and THREAD are SEARCHes, RFC 5256 3, 4).

    The handler is named, not referenced: the grammar stays importable (and testable) without
    the session, and session.py resolves every name once, at import, into its dispatch table."""

    name: str
    parse: ArgParser
    handler: str
    states: frozenset[State]
    uid: bool = False
    mail: bool = False
    holds_expunges: bool = False


_DECLARATIONS = (
    Declaration("CAPABILITY", _no_args, "_capability", ANY),
    Declaration("NOOP", _no_args, "_noop", ANY),
    Declaration("LOGOUT", _no_args, "_logout", ANY),
    Declaration("ID", _id, "_id", ANY),
    Declaration("STARTTLS", _no_args, "_starttls", ANY),
    Declaration("LOGIN", _login, "_login", NOT_AUTHENTICATED),
    Declaration("AUTHENTICATE", _authenticate, "_authenticate", NOT_AUTHENTICATED),
    Declaration("SELECT", _select, "_select", AUTHENTICATED, mail=True),
    Declaration("EXAMINE", _select, "_select", AUTHENTICATED, mail=True),
    Declaration("CREATE", _mailbox, "_create", AUTHENTICATED),
    Declaration("DELETE", _mailbox, "_delete", AUTHENTICATED),
    Declaration("RENAME", _rename, "_rename", AUTHENTICATED),
    Declaration("SUBSCRIBE", _mailbox, "_subscribe", AUTHENTICATED),
    Declaration("UNSUBSCRIBE", _mailbox, "_subscribe", AUTHENTICATED),
    Declaration("LIST", _list, "_list", AUTHENTICATED),
    Declaration("LSUB", _lsub, "_list", AUTHENTICATED),
    Declaration("STATUS", _status, "_status", AUTHENTICATED),
    Declaration("APPEND", _append, "_append", AUTHENTICATED, mail=True),
    Declaration("NAMESPACE", _no_args, "_namespace", AUTHENTICATED),
    Declaration("ENABLE", _enable, "_enable", AUTHENTICATED),
    Declaration("IDLE", _no_args, "_idle", AUTHENTICATED),
    Declaration("CHECK", _no_args, "_check", SELECTED),
    Declaration("CLOSE", _no_args, "_close", SELECTED),
    Declaration("UNSELECT", _no_args, "_unselect_command", SELECTED),
    Declaration("EXPUNGE", _expunge, "_expunge", SELECTED, uid=True),
    Declaration("SEARCH", _search, "_search", SELECTED, uid=True, mail=True, holds_expunges=True),
    Declaration("SORT", _sort, "_sort", SELECTED, uid=True, mail=True, holds_expunges=True),
    Declaration("THREAD", _thread, "_thread", SELECTED, uid=True, mail=True, holds_expunges=True),
    Declaration("CANCELUPDATE", _cancelupdate, "_cancelupdate", SELECTED),
    Declaration("FETCH", _fetch, "_fetch", SELECTED, uid=True, mail=True, holds_expunges=True),
    Declaration("STORE", _store, "_store", SELECTED, uid=True, holds_expunges=True),
    Declaration("COPY", _copy, "_copy", SELECTED, uid=True),
    Declaration("MOVE", _copy, "_copy", SELECTED, uid=True),
)
# Every command this server knows, by its upper-case name.
COMMANDS: dict[str, Declaration] = {declaration.name: declaration for declaration in _DECLARATIONS}


def split_head(head: bytes) -> tuple[str | None, str]:
    """The tag (None if invalid) and upper-cased command name at the start of a command."""
    match = _TAG.match(head)
    if match is None or head[match.end() : match.end() + 1] != b" ":
        return None, ""
    name_match = _ATOM.match(head, match.end() + 1)
    name = name_match[0].decode("ascii", "replace").upper() if name_match else ""
    return match[0].decode("ascii", "replace"), name


def parse_command(data: bytes, *, partial: bool = False, utf8: bool = False) -> Command:
    """One complete command (from `Framer`) into a `Command`; CommandError names the tag if known.

    partial=True: `data` is only the start of a command (up to a literal still to come); it
    raises Incomplete where the complete command would go on, CommandError where it is already
    wrong, and returns a Command if `data` happens to be a whole one."""
    reader = Reader(data, partial=partial, utf8=utf8)
    match = _TAG.match(data)
    if match is None:
        raise CommandError("Invalid tag")
    tag = match[0].decode("ascii", "replace")
    reader.pos = match.end()
    if b" " not in data and not partial:
        # RFC 3501 9: command = tag SP ... A line without a space is no command, and what looks
        # like its tag may be anything (a SASL response sent out of turn): so the BAD is the
        # untagged one (RFC 3501 7.1.3), which does not echo it back.
        raise CommandError("Not a command")
    try:
        reader.sp()
        name = reader.keyword()
        uid = name == "UID"
        if uid:
            reader.sp()
            name = reader.keyword()
        declaration = COMMANDS.get(name)
        if uid and (declaration is None or not declaration.uid):
            raise CommandError(f"Unknown UID command {name}")
        if declaration is None:
            raise CommandError("Unknown command")
        args = declaration.parse(reader, uid)
        reader.end()
    except CommandError as error:
        error.tag = tag
        raise
    return Command(tag, name, uid, args, tuple(reader.secrets))
