"""ImapSession on the inputs imaptest and fuzzing found mishandled: exact replies, and the
pathological ones answered with a protocol reply within a millisecond-scale bound."""

from __future__ import annotations

import time

import pytest

from imap.imap_harness import SIMPLE, WHEN, Client, client, make_store
from mailmodes import __version__
from mailmodes.protocols.imap import message as mime
from mailmodes.store import Store

# Generous: the point is "no seconds-long stall of the event loop", not a benchmark.
QUICK = 0.5


def selected(store: Store | None = None, messages: int = 1) -> Client:
    store = store if store is not None else make_store()
    inbox = store.accounts["alice"].inbox
    for _ in range(messages):
        inbox.append(SIMPLE, internal_date=WHEN)
    c = client(store)
    c.login()
    c.select()
    return c


# --- SEARCH grammar (imaptest search-sets) ---------------------------------------------------


def test_search_starts_with_a_sequence_set_or_a_parenthesised_list() -> None:
    c = selected(messages=5)
    assert c.send(b"a SEARCH *\r\n") == b"* SEARCH 5\r\na OK SEARCH completed\r\n"
    assert c.send(b"b SEARCH *:3\r\n") == b"* SEARCH 3 4 5\r\nb OK SEARCH completed\r\n"
    assert c.send(b"c SEARCH *:1\r\n") == b"* SEARCH 1 2 3 4 5\r\nc OK SEARCH completed\r\n"
    assert c.send(b"d SEARCH (3) UID 4\r\n") == b"* SEARCH\r\nd OK SEARCH completed\r\n"
    assert c.send(b"e SEARCH (3) UID 3\r\n") == b"* SEARCH 3\r\ne OK SEARCH completed\r\n"
    assert c.send(b"f SEARCH (ALL)\r\n") == b"* SEARCH 1 2 3 4 5\r\nf OK SEARCH completed\r\n"
    assert c.send(b"g SEARCH 1,4,*\r\n") == b"* SEARCH 1 4 5\r\ng OK SEARCH completed\r\n"
    # CHARSET is still recognised in front of the keys, and only there.
    assert c.send(b"h SEARCH charset utf-8 (ALL)\r\n") == b"* SEARCH 1 2 3 4 5\r\nh OK SEARCH completed\r\n"
    assert c.send(b"i SEARCH ALL CHARSET UTF-8\r\n") == b"i BAD Unknown search key CHARSET\r\n"


# --- Bounded nesting and number sizes -------------------------------------------------------


def timed(c: Client, line: bytes) -> tuple[bytes, float]:
    start = time.perf_counter()
    reply = c.send(line)
    return reply, time.perf_counter() - start


def test_deeply_nested_search_is_a_clean_bad() -> None:
    c = selected(messages=2)
    too_deep = b"Search keys nested too deeply (at most 100 levels)"
    for line in (
        b"a SEARCH " + b"NOT " * 1100 + b"ALL\r\n",
        b"a SEARCH " + b"(" * 3000 + b"ALL" + b")" * 3000 + b"\r\n",
        b"a SEARCH " + b"OR ALL " * 1000 + b"ALL\r\n",
    ):
        reply, elapsed = timed(c, line)
        assert reply == b"a BAD " + too_deep + b"\r\n"
        assert elapsed < QUICK
        assert not c.closed
    # Up to the bound, nesting works (and matching recurses as deep without trouble).
    assert c.send(b"b SEARCH " + b"NOT " * 100 + b"ALL\r\n") == b"* SEARCH 1 2\r\nb OK SEARCH completed\r\n"
    assert c.send(b"c SEARCH " + b"(" * 100 + b"2" + b")" * 100 + b"\r\n") == b"* SEARCH 2\r\nc OK SEARCH completed\r\n"


def test_numbers_of_thousands_of_digits_are_a_clean_bad() -> None:
    c = selected(messages=2)
    digits = b"9" * 5000
    cases = {
        b"a SEARCH " + digits + b"\r\n": b"a BAD Invalid sequence number\r\n",
        b"a SEARCH 1:" + digits + b"\r\n": b"a BAD Invalid sequence number\r\n",
        b"a FETCH " + digits + b" FLAGS\r\n": b"a BAD Invalid sequence number\r\n",
        b"a UID STORE 1," + digits + b" +FLAGS (x)\r\n": b"a BAD Invalid sequence number\r\n",
        b"a SEARCH LARGER " + digits + b"\r\n": b"a BAD Number out of range\r\n",
        b"a FETCH 1 BODY[]<" + digits + b".1>\r\n": b"a BAD Number out of range\r\n",
        b"a FETCH 1 BODY[" + digits + b"]\r\n": b"a BAD Number out of range\r\n",
    }
    for line, expected in cases.items():
        reply, elapsed = timed(c, line)
        assert reply == expected, line[:40]
        assert elapsed < QUICK
    assert c.send(b"b SEARCH LARGER 4294967295\r\n") == b"* SEARCH\r\nb OK SEARCH completed\r\n"
    assert c.send(b"c SEARCH LARGER 4294967296\r\n") == b"c BAD Number out of range\r\n"


# --- ID within RFC 2971 (imaptest id) --------------------------------------------------------


def rfc2971_largest_id() -> bytes:
    """30 fields of 30-octet names and 1024-octet values: the most RFC 2971 section 3.3 allows."""
    pairs = b" ".join(b'"%s" "%s"' % (b"%02d" % n + b"k" * 28, b"v" * 1024) for n in range(30))
    return b"a ID (" + pairs + b")\r\n"


def test_an_id_as_large_as_rfc_2971_allows_is_answered() -> None:
    line = rfc2971_largest_id()
    assert 31_000 < len(line) < 64 * 1024
    c = client()
    assert c.send(line) == b'* ID ("name" "mailmodes" "version" "%s")\r\na OK ID completed\r\n' % (
        __version__.encode()
    )


def test_the_line_limit_is_64_kib_by_default_and_configurable() -> None:
    c = client()
    assert c.send(b"a NOOP " + b"x" * (64 * 1024)) == b"a BAD Command line too long\r\n"
    assert c.send(b"\r\nb NOOP\r\n") == b"b OK NOOP completed\r\n"
    small = client(max_line_length=8192)
    assert small.send(rfc2971_largest_id()) == b"a BAD Command line too long\r\n"


# --- STORE on a range that includes a message another session expunged (RFC 2180 4.2) -------


def test_store_skips_a_message_expunged_elsewhere_and_updates_the_rest() -> None:
    store = make_store()
    one = selected(store, messages=3)
    store.accounts["alice"].inbox.expunge([2])  # another session; `one` has not been told
    assert one.send(b"a STORE 1:3 +FLAGS (\\Seen)\r\n") == (
        b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n* 3 FETCH (FLAGS (\\Seen \\Recent))\r\na OK STORE completed\r\n"
    )
    assert one.send(b"b UID STORE 1:3 +FLAGS.SILENT (\\Flagged)\r\n") == b"* 2 EXPUNGE\r\nb OK STORE completed\r\n"
    assert [sorted(m.flags) for m in store.accounts["alice"].inbox.messages] == [["\\Flagged", "\\Seen"]] * 2


# --- A keyword another session set is announced before FETCH shows it (RFC 3501 7.2.6) -------

FLAGS_WITH_TODO = (
    b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo)\r\n"
    b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo \\*)] Flags permitted\r\n"
)


def test_fetch_flags_announces_a_keyword_set_elsewhere_first() -> None:
    store = make_store()
    one = selected(store, messages=2)
    inbox = store.accounts["alice"].inbox
    inbox.set_flags(inbox.messages[1], {"$Todo"})
    assert one.send(b"a FETCH 1:2 FLAGS\r\n") == (
        b"* 1 FETCH (FLAGS (\\Recent))\r\n" + FLAGS_WITH_TODO
        + b"* 2 FETCH (FLAGS (\\Recent $Todo))\r\na OK FETCH completed\r\n"
    )
    assert one.send(b"b NOOP\r\n") == b"b OK NOOP completed\r\n"


def test_fetch_setting_seen_and_store_announce_a_keyword_set_elsewhere_first() -> None:
    store = make_store()
    one = selected(store, messages=2)
    inbox = store.accounts["alice"].inbox
    inbox.set_flags(inbox.messages[0], {"$Todo"})
    assert one.send(b"a FETCH 1 BODY[HEADER.FIELDS (SUBJECT)]\r\n") == (
        FLAGS_WITH_TODO + b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: Hello\r\n\r\n"
        b" FLAGS (\\Seen \\Recent $Todo))\r\na OK FETCH completed\r\n"
    )
    inbox.set_flags(inbox.messages[1], {"$Later"})
    assert one.send(b"b STORE 2 +FLAGS (\\Flagged)\r\n") == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo $Later)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo $Later \\*)] Flags permitted\r\n"
        b"* 2 FETCH (FLAGS (\\Flagged \\Recent $Later))\r\nb OK STORE completed\r\n"
    )


# --- LIST patterns matched in linear time ----------------------------------------------------


def test_list_with_many_wildcards_answers_at_once() -> None:
    store = make_store()
    store.accounts["alice"].create("abcdefghij")
    c = client(store)
    c.login()
    reply, elapsed = timed(c, b'a LIST "" "' + b"*" * 24 + b'z"\r\n')
    assert reply == b"a OK LIST completed\r\n"
    assert elapsed < QUICK
    reply, elapsed = timed(c, b'b LIST "" "' + b"%*" * 40 + b'j"\r\n')
    assert reply == b'* LIST (\\HasNoChildren) "/" abcdefghij\r\nb OK LIST completed\r\n'
    assert elapsed < QUICK
    reply, elapsed = timed(c, b'c LSUB "" "' + b"*a" * 3000 + b'"\r\n')
    assert reply == b"c OK LSUB completed\r\n"
    assert elapsed < QUICK


def test_list_wildcards_keep_their_meaning() -> None:
    store = make_store()
    account = store.accounts["alice"]
    account.create("Work/2024/Q1")
    account.create("Workshop")
    c = client(store)
    c.login()

    def names(pattern: bytes) -> list[bytes]:
        reply = c.send(b'a LIST "" "' + pattern + b'"\r\n')
        assert reply.endswith(b"a OK LIST completed\r\n"), reply
        return [line.rsplit(b" ", 1)[1] for line in reply.split(b"\r\n")[:-2]]

    assert names(b"Work%") == [b"Work", b"Workshop"]
    assert names(b"Work*") == [b"Work", b"Work/2024", b"Work/2024/Q1", b"Workshop"]
    assert names(b"Work/%/Q1") == [b"Work/2024/Q1"]
    assert names(b"*/Q%") == [b"Work/2024/Q1"]
    assert names(b"W%k%%*%p") == [b"Workshop"]
    assert names(b"inBOX") == [b"INBOX"]
    assert names(b"in*") == [b"INBOX"]
    assert names(b"work") == []


# --- FETCH and SEARCH parse a message once (the store never changes its bytes) ----------------

MULTIPART = (
    b"From: Alice <alice@example.test>\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Type: text/plain\r\n\r\nfirst\r\n"
    b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>second</p>\r\n--b--\r\n"
)


def test_fetch_and_search_parse_each_message_once(monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    inbox.append(MULTIPART, internal_date=WHEN)
    c = client(store)
    c.login()
    c.select()
    splits: list[bytes] = []
    split = mime._split_multipart

    def counting(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
        splits.append(boundary)
        return split(data, start, end, boundary)

    monkeypatch.setattr(mime, "_split_multipart", counting)
    fetch = b"a FETCH 1 (ENVELOPE BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[2.MIME])\r\n"
    first = c.send(fetch)
    assert c.send(fetch) == first
    assert c.send(b"b SEARCH BODY second\r\n") == b"* SEARCH 1\r\nb OK SEARCH completed\r\n"
    assert splits == [b"b"]
    # The same bytes as the one-off functions give.
    assert mime.bodystructure(MULTIPART) in first and mime.envelope(MULTIPART) in first
    assert b"BODY[2.MIME] {42}\r\n" + mime.section(MULTIPART, (2,), "MIME") in first
