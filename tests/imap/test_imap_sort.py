"""SORT (RFC 5256), SORT=DISPLAY (RFC 5957) and ESORT (RFC 5267): exact replies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from imap.imap_harness import Client, client, make_store
from mailmodes.protocols.imap.message import base_subject

DAY = datetime(2008, 2, 22, tzinfo=UTC)


def mailbox(*messages: tuple[bytes, int]) -> Client:
    """Messages as (header lines, arrival in minutes after DAY), appended in this order."""
    store = make_store()
    inbox = store.accounts["alice"].inbox
    for header, minutes in messages:
        inbox.append(header + b"\r\nbody\r\n", internal_date=DAY + timedelta(minutes=minutes))
    c = client(store)
    c.login()
    c.select()
    return c


@pytest.mark.parametrize(
    ("subject", "base"),
    [
        ("a", "a"),
        ("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "b"),
        ("Re: [FWD: c]", "c"),
        ("[xyz]", "[xyz]"),
        ("  \t ", ""),
        ("Ad: Re: Ad: x", "Ad: Re: Ad: x"),
        ("re: [fwd: [fwd: re: [fwd: babylon]]]", "babylon"),
        ("Re:   spaced\t  out ", "spaced out"),
        ("[blob] subject", "subject"),
    ],
)
def test_base_subject(subject: str, base: str) -> None:
    assert base_subject(subject) == base


def test_base_subject_of_a_hostile_subject_is_quick() -> None:
    import time

    start = time.perf_counter()
    base_subject("[" * 20000 + "re: " * 5000 + " (fwd)" * 5000)
    assert time.perf_counter() - start < 0.5


def test_sort_by_subject_date_arrival_and_size() -> None:
    c = mailbox(
        (b"Subject: b\r\nDate: Fri, 22 Feb 2008 02:00:00 +0200", 30),
        (b"Subject: Re: =?utf-8?q?A?=", 10),
        (b"Subject: [list] B\r\nDate: Fri, 22 Feb 2008 00:30:00 +0000\r\nX: padding", 20),
        (b"Subject: a\r\nDate: not a date", 0),
    )
    # Subjects A, A, B, B: ties in sequence order, also under REVERSE.
    assert c.send(b"a SORT (SUBJECT) UTF-8 ALL\r\n") == b"* SORT 2 4 1 3\r\na OK SORT completed\r\n"
    assert c.send(b"b SORT (REVERSE SUBJECT) US-ASCII ALL\r\n") == b"* SORT 1 3 2 4\r\nb OK SORT completed\r\n"
    # DATE in UTC, the internal date where Date is missing or broken: 00:00, 00:10, 00:00+30, 00:30.
    assert c.send(b"c SORT (DATE) UTF-8 ALL\r\n") == b"* SORT 1 4 2 3\r\nc OK SORT completed\r\n"
    assert c.send(b"d SORT (ARRIVAL) UTF-8 ALL\r\n") == b"* SORT 4 2 3 1\r\nd OK SORT completed\r\n"
    assert c.send(b"e SORT (SUBJECT REVERSE SIZE) UTF-8 ALL\r\n") == b"* SORT 4 2 3 1\r\ne OK SORT completed\r\n"
    assert c.send(b"f UID SORT (SIZE) UTF-8 NOT 4\r\n") == b"* SORT 2 1 3\r\nf OK SORT completed\r\n"
    assert c.send(b"g SORT (SIZE) UTF-8 1000\r\n") == b"* SORT\r\ng OK SORT completed\r\n"


def test_sort_by_addresses_and_display_names() -> None:
    c = mailbox(
        (b"From: Zed <b@x.test>\r\nTo: c@x.test\r\nCc: list: m@x.test;", 0),
        (b"From: =?iso-8859-1?q?Anna?= <z@x.test>\r\nTo: B <a@x.test>", 0),
        (b"From: c@x.test", 0),
    )
    assert c.send(b"a SORT (FROM) UTF-8 ALL\r\n") == b"* SORT 1 3 2\r\na OK SORT completed\r\n"
    assert c.send(b"b SORT (TO) UTF-8 ALL\r\n") == b"* SORT 3 2 1\r\nb OK SORT completed\r\n"
    # A group's first address is its start marker: the group name ("list") is the key.
    assert c.send(b"c SORT (REVERSE CC) UTF-8 ALL\r\n") == b"* SORT 1 2 3\r\nc OK SORT completed\r\n"
    assert c.send(b"d SORT (DISPLAYFROM) UTF-8 ALL\r\n") == b"* SORT 2 3 1\r\nd OK SORT completed\r\n"
    assert c.send(b"e SORT (DISPLAYTO) UTF-8 ALL\r\n") == b"* SORT 3 2 1\r\ne OK SORT completed\r\n"


def test_esort_and_errors() -> None:
    c = mailbox((b"Subject: c", 0), (b"Subject: a", 0), (b"Subject: b", 0), (b"Subject: d", 0))
    assert c.send(b"a SORT RETURN (ALL) (SUBJECT) UTF-8 ALL\r\n") == (
        b'* ESEARCH (TAG "a") ALL 2:3,1,4\r\na OK SORT completed\r\n'
    )
    # MIN and MAX are the first and last in sort order (RFC 5267 3.2).
    assert c.send(b"b UID SORT RETURN (MIN MAX COUNT) (REVERSE SUBJECT) UTF-8 1:3\r\n") == (
        b'* ESEARCH (TAG "b") UID MIN 1 MAX 2 COUNT 3\r\nb OK SORT completed\r\n'
    )
    assert c.send(b"p SORT RETURN (PARTIAL 2:3) (SUBJECT) UTF-8 ALL\r\n") == (
        b'* ESEARCH (TAG "p") PARTIAL (2:3 3,1)\r\np OK SORT completed\r\n'
    )
    assert c.send(b"c SORT RETURN () (SUBJECT) UTF-8 5\r\n") == b'* ESEARCH (TAG "c")\r\nc OK SORT completed\r\n'
    assert c.send(b"d SORT (SUBJECT) KOI8-R ALL\r\n") == b"d NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n"
    assert c.send(b"e SORT (THREAD) UTF-8 ALL\r\n") == b"e BAD Unknown sort criterion THREAD\r\n"
    assert c.send(b"f SORT (SUBJECT) UTF-8\r\n") == b"f BAD SORT needs search keys\r\n"
    assert c.send(b"g SORT SUBJECT UTF-8 ALL\r\n") == b"g BAD Expected '('\r\n"
