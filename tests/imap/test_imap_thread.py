"""THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 section 4): exact replies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from imap.imap_harness import Client, client, make_store

DAY = datetime(2008, 2, 22, tzinfo=UTC)


def mailbox(*headers: bytes) -> Client:
    """One message per header block, a minute apart in this order (no Date: the internal date)."""
    store = make_store()
    inbox = store.accounts["alice"].inbox
    for minutes, header in enumerate(headers):
        inbox.append(header + b"\r\n\r\nbody\r\n", internal_date=DAY + timedelta(minutes=minutes))
    c = client(store)
    c.login()
    c.select()
    return c


def threads(c: Client, command: bytes) -> bytes:
    reply = c.send(b"t " + command + b"\r\n")
    assert reply.endswith(b"t OK THREAD completed\r\n"), reply
    return reply.split(b"\r\n")[0]


def test_references_chains_branches_and_dummies() -> None:
    c = mailbox(
        b"Message-ID: <1@x>",
        b"Message-ID: <2@x>\r\nIn-Reply-To: <1@x>",
        b"Message-ID: <3@x>\r\nReferences: <1@x> <2@x>",
        b"Message-ID: <4@x>\r\nIn-Reply-To: <1@x>",
        b"Message-ID: <5@x>\r\nReferences: <gone@x>",  # its parent is absent: a dummy, promoted
        b"Message-ID: <6@x>\r\nReferences: <lost@x>",
        b"Message-ID: <7@x>\r\nReferences: <lost@x>",  # two under one absent parent: kept together
    )
    assert threads(c, b"THREAD REFERENCES UTF-8 ALL") == b"* THREAD (1 (2 3)(4))(5)((6)(7))"
    assert threads(c, b"UID THREAD REFERENCES UTF-8 2:*") == b"* THREAD ((2 3)(4))(5)((6)(7))"
    assert threads(c, b"THREAD REFERENCES US-ASCII 1000") == b"* THREAD"


def test_references_duplicates_loops_and_own_parent() -> None:
    c = mailbox(
        b"Message-ID: <a@x>",
        b"Message-ID: <b@x>\r\nReferences: <a@x> <c@x>",
        b"Message-ID: <c@x>\r\nReferences: <b@x>",  # would loop: c stands alone, b under it
        b"Message-ID: <a@x>",  # a duplicate Message-ID: a message of its own
    )
    assert threads(c, b"THREAD REFERENCES UTF-8 ALL") == b"* THREAD (1)(3 2)(4)"


def test_references_gathers_roots_by_subject() -> None:
    c = mailbox(
        b"Message-ID: <a@x>\r\nSubject: plans",
        b"Message-ID: <b@x>\r\nSubject: Re: plans",  # a reply: under the original
        b"Message-ID: <c@x>\r\nSubject: other",
        b"Message-ID: <d@x>\r\nSubject: other",  # same subject, neither a reply: a dummy holds both
        b"Message-ID: <e@x>\r\nSubject: Fwd: other",
    )
    assert threads(c, b"THREAD REFERENCES UTF-8 ALL") == b"* THREAD (1 2)((3)(4)(5))"


def test_ordered_subject() -> None:
    c = mailbox(
        b"Subject: b\r\nDate: Fri, 22 Feb 2008 00:10:00 +0000",
        b"Subject: a",
        b"Subject: Re: B\r\nDate: Fri, 22 Feb 2008 00:00:00 +0000",
        b"Subject: [list] a",
        b"Subject: A",
        b"Subject: c",
    )
    assert threads(c, b"THREAD ORDEREDSUBJECT UTF-8 ALL") == b"* THREAD (3 1)(2 (4)(5))(6)"
    assert threads(c, b"UID THREAD ORDEREDSUBJECT UTF-8 NOT 3") == b"* THREAD (2 (4)(5))(6)(1)"


def test_thread_errors() -> None:
    c = mailbox(b"Subject: a")
    assert c.send(b"a THREAD REFS UTF-8 ALL\r\n") == b"a BAD Unknown threading algorithm REFS\r\n"
    assert c.send(b"b THREAD REFERENCES KOI8-R ALL\r\n") == b"b NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n"
    assert c.send(b"c THREAD REFERENCES UTF-8\r\n") == b"c BAD THREAD needs search keys\r\n"


def test_a_long_reference_chain_threads_without_recursion() -> None:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    count = 1500
    for n in range(count):
        parent = b"\r\nIn-Reply-To: <%d@x>" % (n - 1) if n else b""
        inbox.append(b"Message-ID: <%d@x>%s\r\n\r\nx\r\n" % (n, parent), internal_date=DAY + timedelta(seconds=n))
    # And a tree nested as deep: each message has a follow-up and a leaf reply.
    for n in range(count):
        parent = b"\r\nIn-Reply-To: <b%d@x>" % (n - 1) if n else b""
        for kind in (b"b", b"leaf"):
            inbox.append(b"Message-ID: <%s%d@x>%s\r\n\r\nx\r\n" % (kind, n, parent),
                         internal_date=DAY + timedelta(days=1, seconds=n))
    c = client(store)
    c.login()
    c.select()
    line = threads(c, b"THREAD REFERENCES UTF-8 ALL")  # deeper than Python's recursion limit
    chain = b" ".join(b"%d" % n for n in range(1, count + 1))
    assert line.startswith(b"* THREAD (" + chain + b")(1501 (1503 (1505 (")
