"""The selected mailbox as one IMAP client knows it, and what that client is told when the store
changes under it (RFC 3501 5.2, 7.4.1): sans-I/O, its reports go to the session's output.

The client numbers messages by its own picture of the mailbox, which changes only when we tell
it (EXISTS, EXPUNGE). So each session keeps the list of messages it has announced and the flags
it last reported, and compares that with the store at the end of each command (and while
idling) to report what other sessions did. The SEARCH and SORT results a client asked to keep
current (CONTEXT=SEARCH/SORT, RFC 5267) are reported from here too.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mailmodes.protocols.imap.parser import SYSTEM_FLAGS, QResync, SearchKey, SequenceSet, SortCriterion
from mailmodes.protocols.imap.search import SearchContext, search
from mailmodes.protocols.imap.sort import sort
from mailmodes.store import MailboxInterface, Message

# RFC 5267 4.3 lets a server refuse more (NOUPDATE); Dovecot keeps 10 per session.
MAX_SEARCH_UPDATES = 10
_FLAG_ORDER = {flag: index for index, flag in enumerate(SYSTEM_FLAGS + ("\\Recent",))}
SYSTEM_FLAGS_TEXT = " ".join(SYSTEM_FLAGS)


@dataclass
class Modes:
    """What the client switched on for this session (ENABLE and friends), once on for good."""

    # RFC 7162 3.1: CONDSTORE, once enabled (ENABLE, SELECT (CONDSTORE) or a command that
    # uses a mod-sequence), stays on: HIGHESTMODSEQ on SELECT, MODSEQ in flag updates.
    condstore: bool = False
    # RFC 7162 3.2: QRESYNC, once enabled (ENABLE QRESYNC only), also stays on: VANISHED
    # instead of EXPUNGE, UIDs in flag updates, SELECT (QRESYNC ...) and UID FETCH VANISHED.
    qresync: bool = False
    # RFC 9755 (UTF8=ACCEPT), once enabled: UTF-8 in quoted strings and mailbox names both
    # ways (modified UTF-7 before), SEARCH without CHARSET, 8-bit headers in APPEND.
    utf8: bool = False
    # RFC 9051 (ENABLE IMAP4rev2): no \Recent and no RECENT, SEARCH answered with ESEARCH,
    # UTF-8 mailbox names, a LIST in the SELECT responses, UIDs in every unsolicited FETCH.
    rev2: bool = False

    @property
    def utf8_names(self) -> bool:
        """Mailbox names (and quoted strings) in UTF-8 both ways, not modified UTF-7: after
        UTF8=ACCEPT (RFC 9755 3) or IMAP4rev2 (RFC 9051 5.1)."""
        return self.utf8 or self.rev2


@dataclass
class SearchUpdate:
    """A SEARCH RETURN (UPDATE) kept running (RFC 5267 4.3), named by its command's tag."""

    tag: str
    key: SearchKey
    uid: bool
    uids: set[int]  # the result the client was last told, as UIDs
    # CONTEXT=SORT: a SORT RETURN (UPDATE)'s criteria and that result in sort order (as UIDs);
    # updates then carry positions in it. None for a SEARCH (position 0).
    criteria: tuple[SortCriterion, ...] | None = None
    order: list[int] = field(default_factory=list)


@dataclass
class View:
    """The selected mailbox as this client knows it (RFC 3501 5.2: numbers change only when told)."""

    mailbox: MailboxInterface
    readonly: bool
    messages: list[Message]  # index + 1 is the sequence number
    flags: dict[int, frozenset[str]]  # UID -> the flags this client was last told
    recent: set[int]  # UIDs that are \Recent in this session
    keywords: list[str]  # keywords announced in FLAGS
    uid_high: int  # the highest UID ever announced
    send: Callable[[bytes], None]  # the session's output for this command
    modes: Modes  # the session's, read as they are now
    unwatch: Callable[[], None] = lambda: None
    dirty: bool = False  # the store changed (or reports are held back) since the last sync
    # "$" (RFC 5182): the UIDs the last SEARCH RETURN (SAVE) kept; an expunged one simply no
    # longer resolves to a message.
    saved: set[int] = field(default_factory=set)
    updates: dict[str, SearchUpdate] = field(default_factory=dict)  # by tag, CONTEXT=SEARCH
    flags_version: int = -1  # the mailbox's flag_changes when this view last compared flags

    def largest_uid(self) -> int:
        return self.messages[-1].uid if self.messages else 0

    def untagged(self, text: str) -> None:
        self.send(f"* {text}\r\n".encode("utf-8", "surrogateescape"))

    # --- What the client's numbers mean --------------------------------------------------------

    def targets(self, sequence: SequenceSet, uid: bool) -> list[tuple[int, Message]] | None:
        """(sequence number, message) pairs, ascending; None if a sequence number is invalid."""
        messages = self.messages
        if sequence.saved:
            return [(index + 1, m) for index, m in enumerate(messages) if m.uid in self.saved]
        indexes: Iterable[int]
        if uid:
            if not messages:
                return []
            # RFC 3501 6.4.8: "*" is the largest UID in use, so "n:*" always includes it.
            spans = [
                range(bisect.bisect_left(messages, low, key=_uid), bisect.bisect_right(messages, high, key=_uid))
                for low, high in sequence.resolve(messages[-1].uid)
            ]
        else:
            count = len(messages)
            spans = []
            for low, high in sequence.resolve(count):
                if low < 1 or high > count:
                    return None
                spans.append(range(low - 1, high))
        indexes = spans[0] if len(spans) == 1 else sorted(set().union(*spans))
        return [(index + 1, messages[index]) for index in indexes]

    def ghosts(self) -> set[int]:
        """UIDs this client still sees that are gone from the store (EXPUNGE not yet sent)."""
        if not self.dirty:
            return set()
        present = {m.uid for m in self.mailbox.messages}
        return {m.uid for m in self.messages if m.uid not in present}

    def matching(self, key: SearchKey) -> list[int]:
        context = SearchContext(len(self.messages), self.largest_uid(), self.recent, self.saved)
        return search(key, self.messages, context)

    # --- Flags ---------------------------------------------------------------------------------

    def flags_text(self) -> str:
        return " ".join([SYSTEM_FLAGS_TEXT, *self.keywords]).strip()

    def permanent_flags(self) -> None:
        if self.readonly:
            self.untagged("OK [PERMANENTFLAGS ()] Read-only mailbox")
        else:
            # "\*": clients may create keywords (RFC 3501 7.1).
            self.untagged(f"OK [PERMANENTFLAGS ({self.flags_text()} \\*)] Flags permitted")

    def announce_keywords(self, flags: Iterable[str]) -> None:
        """RFC 3501 7.2.6: a new keyword means a new FLAGS (and PERMANENTFLAGS) response, before
        any FETCH shows it. Called per message on the FETCH path, so the usual case (nothing
        new) is settled without folding case."""
        new = [flag for flag in flags if not flag.startswith("\\") and flag not in self.keywords]
        if not new:
            return
        known = {keyword.casefold() for keyword in self.keywords}
        new = [flag for flag in new if flag.casefold() not in known]
        if not new:
            return
        self.keywords.extend(dict.fromkeys(new))
        self.untagged(f"FLAGS ({self.flags_text()})")
        self.permanent_flags()

    def flags_item(self, message: Message) -> bytes:
        self.flags[message.uid] = frozenset(message.flags)
        return b"FLAGS " + flag_list(message.flags, message.uid in self.recent).encode()

    def modseq_item(self, message: Message) -> bytes:
        """RFC 7162 3.1.4: with CONDSTORE on, flag updates carry the message's MODSEQ."""
        return b" MODSEQ (%d)" % message.modseq if self.modes.condstore else b""

    # --- QRESYNC (RFC 7162 3.2) ----------------------------------------------------------------

    def resync(self, known: QResync) -> None:
        """RFC 7162 3.2.5.1: what vanished since the client's mod-sequence (VANISHED (EARLIER))
        and every message changed since (FETCH with UID, FLAGS and MODSEQ), of the known UIDs
        only when the client listed them."""
        wanted = within(known.known_uids.resolve(0)) if known.known_uids is not None else lambda uid: True
        self.vanished_earlier(known.modseq, wanted)
        for number, message in enumerate(self.messages, 1):
            if message.modseq > known.modseq and wanted(message.uid):
                self.send(b"* %d FETCH (UID %d %b%b)\r\n" % (
                    number, message.uid, self.flags_item(message), self.modseq_item(message)))

    def vanished_earlier(self, modseq: int, wanted: Callable[[int], bool]) -> None:
        """* VANISHED (EARLIER): the UIDs `wanted` that were expunged after `modseq` (RFC 7162
        3.2.10), from the mailbox's tombstones."""
        gone = sorted(uid for uid, when in self.mailbox.expunged.items() if when > modseq and wanted(uid))
        if gone:
            self.send(b"* VANISHED (EARLIER) %b\r\n" % uid_set(gone).encode())

    # --- Kept results (CONTEXT=SEARCH, CONTEXT=SORT) ----------------------------------------------

    def keep_update(self, update: SearchUpdate) -> None:
        """RFC 5267 4.3.1: past the limit the result was still sent, but no updates follow."""
        if len(self.updates) >= MAX_SEARCH_UPDATES:
            self.untagged(f'NO [NOUPDATE "{update.tag}"] Too many search updates')
        else:
            self.updates[update.tag] = update

    # --- Reporting changes ---------------------------------------------------------------------

    def sync(self, allow_expunge: bool) -> None:
        """Tell the client what changed in the store since it last heard (RFC 3501 5.2, 7.4.1)."""
        if not self.dirty:
            return
        current = self.mailbox.messages
        count = len(self.messages)
        held_back = False
        unchanged = count == 0 or (len(current) >= count and current[count - 1] is self.messages[-1])
        if not unchanged:
            if allow_expunge:
                present = {m.uid for m in current}
                if self.updates:
                    self._report_update_removals(present)
                self._report_expunges(present)
            else:
                held_back = True
        self._report_new(current)
        self._report_flags()
        if self.updates:
            self._report_updates()
        self.dirty = held_back

    def _report_update_removals(self, present: set[int]) -> None:
        """RFC 5267 4.3: an expunged message leaves each result (REMOVEFROM) while its sequence
        number still means it, before the EXPUNGE."""
        numbers = {m.uid: n for n, m in enumerate(self.messages, 1)}
        for update in self.updates.values():
            gone = update.uids - present
            if not gone:
                continue
            update.uids -= gone
            if update.criteria is not None:
                removed = _sort_removals(update, update.uids, numbers)
                self.send(_sort_update_line(update, removed, []))
            else:
                self.send(_update_line(update, sorted(gone if update.uid else (numbers[u] for u in gone)), []))

    def _report_updates(self) -> None:
        """RFC 5267 4.3: ADDTO and REMOVEFROM for each SEARCH RETURN (UPDATE) whose result changed.
        Position 0 throughout, as Dovecot: a SEARCH result has no order to place into."""
        ghosts = self.ghosts()
        numbers = {m.uid: n for n, m in enumerate(self.messages, 1)}
        for update in self.updates.values():
            now = {self.messages[n - 1].uid for n in self.matching(update.key)} - ghosts
            removed, added = update.uids - now - ghosts, now - update.uids
            update.uids = (update.uids & ghosts) | now
            if update.criteria is not None:
                if removed or added:
                    self._report_sort_update(update, numbers)
                continue
            if removed or added:
                def ids(uids: set[int]) -> list[int]:
                    return sorted(uids if update.uid else (numbers[u] for u in uids))

                self.send(_update_line(update, ids(removed), ids(added)))

    def _report_sort_update(self, update: SearchUpdate, numbers: dict[int, int]) -> None:
        """CONTEXT=SORT: a SORT's criteria read only what never changes in a message, so what
        stays in the result keeps its order; removals are counted on the result as it shrinks,
        additions placed at their final positions, in ascending order (RFC 5267 4.3.3, 4.3.4)."""
        assert update.criteria is not None
        removed = _sort_removals(update, update.uids, numbers)
        members = [(numbers[uid], self.messages[numbers[uid] - 1]) for uid in sorted(update.uids)]
        known = set(update.order)
        update.order = [message.uid for _, message in sort(update.criteria, members)]
        added = [(position, _update_id(update, uid, numbers))
                 for position, uid in enumerate(update.order, 1) if uid not in known]
        self.send(_sort_update_line(update, removed, added))

    def _report_expunges(self, present: set[int]) -> None:
        kept: list[Message] = []
        vanished: list[int] = []
        for message in self.messages:
            if message.uid in present:
                kept.append(message)
                continue
            self.flags.pop(message.uid, None)
            self.recent.discard(message.uid)
            if self.modes.qresync:
                vanished.append(message.uid)  # RFC 7162 3.2.10: one VANISHED, no EXPUNGE
                continue
            # Each EXPUNGE renumbers the rest at once, so the next one counts from `kept`.
            self.send(b"* %d EXPUNGE\r\n" % (len(kept) + 1))
        if vanished:
            self.send(b"* VANISHED %b\r\n" % uid_set(vanished).encode())
        self.messages = kept

    def _report_new(self, current: list[Message]) -> None:
        start = len(current)
        while start and current[start - 1].uid > self.uid_high:
            start -= 1
        new = current[start:]
        if not new:
            return
        self.announce_keywords({flag for m in new for flag in m.flags})
        self.messages.extend(new)
        for message in new:
            self.flags[message.uid] = frozenset(message.flags)
        self.uid_high = new[-1].uid
        if self.modes.rev2:
            pass  # RFC 9051 Appendix E: no \Recent; left for IMAP4rev1 sessions to claim
        elif self.readonly:
            self.recent |= {m.uid for m in new} & self.mailbox.recent_uids
        else:
            self.recent |= self.mailbox.claim_recent()  # the same set as the session's claimed one
        self.untagged(f"{len(self.messages)} EXISTS")
        if not self.modes.rev2:  # RFC 9051 7.4: no RECENT response in IMAP4rev2
            self.untagged(f"{len(self.recent)} RECENT")

    def _report_flags(self) -> None:
        if self.flags_version == self.mailbox.flag_changes:
            return  # no flag changed anywhere: no need to compare every message's
        self.flags_version = self.mailbox.flag_changes
        for number, message in enumerate(self.messages, 1):
            if self.flags.get(message.uid) != frozenset(message.flags):
                self.announce_keywords(message.flags)
                # RFC 7162 3.2.4: once CONDSTORE is on, flag updates name the UID; in IMAP4rev2
                # every unsolicited FETCH does (RFC 9051 7.5.2).
                uid = b"UID %d " % message.uid if self.modes.condstore or self.modes.rev2 else b""
                self.send(b"* %d FETCH (%b%b%b)\r\n" % (
                    number, uid, self.flags_item(message), self.modseq_item(message)))


def _uid(message: Message) -> int:
    return message.uid


def flag_list(flags: Iterable[str], recent: bool) -> str:
    listed = [*flags, "\\Recent"] if recent else flags
    ordered = sorted(listed, key=lambda flag: (_FLAG_ORDER.get(flag, len(_FLAG_ORDER)), flag))
    return "(" + " ".join(ordered) + ")"


def uid_set(uids: list[int]) -> str:
    """A compact uid-set: 1:3,5 (RFC 4315 section 4). The order of `uids` is kept, ascending
    runs collapsed (ESORT's ALL is in sort order, RFC 5267 3.2)."""
    spans: list[list[int]] = []
    for uid in uids:
        if spans and uid == spans[-1][1] + 1:
            spans[-1][1] = uid
        else:
            spans.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in spans)


def within(ranges: Iterable[tuple[int, int]]) -> Callable[[int], bool]:
    """Whether a number falls in one of `ranges` (low, high), by bisection: a client's set may
    hold thousands of ranges, asked about for every message or expunged UID."""
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    starts = [low for low, _ in merged]

    def contains(number: int) -> bool:
        index = bisect.bisect_right(starts, number) - 1
        return index >= 0 and number <= merged[index][1]

    return contains


def _update_line(update: SearchUpdate, removed: list[int], added: list[int]) -> bytes:
    parts = [f'* ESEARCH (TAG "{update.tag}")'] + (["UID"] if update.uid else [])
    if removed:
        parts.append(f"REMOVEFROM (0 {uid_set(removed)})")
    if added:
        parts.append(f"ADDTO (0 {uid_set(added)})")
    return (" ".join(parts) + "\r\n").encode()


def _update_id(update: SearchUpdate, uid: int, numbers: dict[int, int]) -> int:
    return uid if update.uid else numbers[uid]


def _sort_removals(update: SearchUpdate, kept: set[int], numbers: dict[int, int]) -> list[tuple[int, int]]:
    """(position, id) for each message of a SORT update's order not in `kept`, counted on the
    result as it shrinks (RFC 5267 4.3.4); the order keeps the rest."""
    removed: list[tuple[int, int]] = []
    order: list[int] = []
    for uid in update.order:
        if uid in kept:
            order.append(uid)
        else:
            removed.append((len(order) + 1, _update_id(update, uid, numbers)))
    update.order = order
    return removed


def _position_pairs(updates: list[tuple[int, int]], removal: bool) -> str:
    """context-position SP sequence-set pairs (RFC 5267 4.3.2). A set stands for its members in
    ascending order at consecutive positions from its own, so a run joins a set only while its
    ids ascend and its positions continue (for a removal: stay, as the result shrinks)."""
    groups: list[tuple[int, list[int]]] = []
    for position, value in updates:
        if groups:
            start, values = groups[-1]
            expected = start if removal else start + len(values)
            if position == expected and value > values[-1]:
                values.append(value)
                continue
        groups.append((position, [value]))
    return " ".join(f"{position} {uid_set(values)}" for position, values in groups)


def _sort_update_line(update: SearchUpdate, removed: list[tuple[int, int]], added: list[tuple[int, int]]) -> bytes:
    parts = [f'* ESEARCH (TAG "{update.tag}")'] + (["UID"] if update.uid else [])
    if removed:
        parts.append(f"REMOVEFROM ({_position_pairs(removed, True)})")
    if added:
        parts.append(f"ADDTO ({_position_pairs(added, False)})")
    return (" ".join(parts) + "\r\n").encode()
