"""ESEARCH (RFC 4731) and SEARCHRES (RFC 5182): exact replies."""

from __future__ import annotations

from imap.imap_harness import SIMPLE, WHEN, Client, client, make_store
from mailmodes.store import Store


def six_with_a_gap(store: Store | None = None) -> Client:
    """Seven messages, the fourth expunged: sequence numbers 1-6 are UIDs 1-3 and 5-7."""
    store = store if store is not None else make_store()
    inbox = store.accounts["alice"].inbox
    for _ in range(7):
        inbox.append(SIMPLE, internal_date=WHEN)
    inbox.expunge([4])
    c = client(store)
    c.login()
    c.select()
    return c


def test_esearch_return_options() -> None:
    c = six_with_a_gap()
    assert c.send(b"a SEARCH RETURN (ALL) ALL\r\n") == b'* ESEARCH (TAG "a") ALL 1:6\r\na OK SEARCH completed\r\n'
    assert c.send(b"b SEARCH RETURN () ALL\r\n") == b'* ESEARCH (TAG "b") ALL 1:6\r\nb OK SEARCH completed\r\n'
    assert c.send(b"c SEARCH RETURN (MIN) 2:*\r\n") == b'* ESEARCH (TAG "c") MIN 2\r\nc OK SEARCH completed\r\n'
    assert c.send(b"d SEARCH RETURN (max count) ALL\r\n") == (
        b'* ESEARCH (TAG "d") MAX 6 COUNT 6\r\nd OK SEARCH completed\r\n'
    )
    assert c.send(b"e UID SEARCH RETURN (ALL) ALL\r\n") == (
        b'* ESEARCH (TAG "e") UID ALL 1:3,5:7\r\ne OK SEARCH completed\r\n'
    )
    assert c.send(b"f UID SEARCH RETURN (COUNT MIN MAX ALL) 2,4,6\r\n") == (
        b'* ESEARCH (TAG "f") UID MIN 2 MAX 7 ALL 2,5,7 COUNT 3\r\nf OK SEARCH completed\r\n'
    )
    # Nothing matched: no MIN, MAX or ALL, but COUNT 0.
    assert c.send(b"g SEARCH RETURN (MIN MAX ALL) 1000\r\n") == b'* ESEARCH (TAG "g")\r\ng OK SEARCH completed\r\n'
    assert c.send(b"h UID SEARCH RETURN (COUNT) 1000\r\n") == (
        b'* ESEARCH (TAG "h") UID COUNT 0\r\nh OK SEARCH completed\r\n'
    )
    assert c.send(b"i SEARCH RETURN (CHARSET) ALL\r\n") == b"i BAD Unknown SEARCH RETURN option CHARSET\r\n"
    assert c.send(b"j SEARCH RETURN (ALL) CHARSET UTF-8 SEEN\r\n") == b'* ESEARCH (TAG "j")\r\nj OK SEARCH completed\r\n'
    # RETURN is a search key name nowhere else: without "(" it is an unknown key.
    assert c.send(b"k SEARCH RETURN ALL\r\n") == b"k BAD Unknown search key RETURN\r\n"


def test_searchres_saves_the_result_as_dollar() -> None:
    store = make_store()
    c = six_with_a_gap(store)
    # SAVE alone: no ESEARCH response at all (RFC 5182 2.1).
    assert c.send(b"a SEARCH RETURN (SAVE) 2:3\r\n") == b"a OK SEARCH completed\r\n"
    assert c.send(b"b FETCH $ UID\r\n") == b"* 2 FETCH (UID 2)\r\n* 3 FETCH (UID 3)\r\nb OK FETCH completed\r\n"
    assert c.send(b"c UID SEARCH UID $\r\n") == b"* SEARCH 2 3\r\nc OK SEARCH completed\r\n"
    assert c.send(b"d SEARCH $ 3:*\r\n") == b"* SEARCH 3\r\nd OK SEARCH completed\r\n"
    assert c.send(b"e STORE $ +FLAGS.SILENT (\\Deleted)\r\n") == b"e OK STORE completed\r\n"
    # With others, SAVE goes with an ESEARCH; with MIN/MAX alone only those are kept.
    assert c.send(b"f UID SEARCH RETURN (SAVE MIN MAX) ALL\r\n") == (
        b'* ESEARCH (TAG "f") UID MIN 1 MAX 7\r\nf OK SEARCH completed\r\n'
    )
    assert c.send(b"g UID FETCH $ UID\r\n") == b"* 1 FETCH (UID 1)\r\n* 6 FETCH (UID 7)\r\ng OK FETCH completed\r\n"
    assert c.send(b"h SEARCH RETURN (SAVE COUNT) DELETED\r\n") == (
        b'* ESEARCH (TAG "h") COUNT 2\r\nh OK SEARCH completed\r\n'
    )
    assert c.send(b"i UID EXPUNGE $\r\n") == b"* 2 EXPUNGE\r\n* 2 EXPUNGE\r\ni OK EXPUNGE completed\r\n"
    # The expunged messages left "$"; a failed SEARCH ... SAVE empties it.
    assert c.send(b"j FETCH $ UID\r\n") == b"j OK FETCH completed\r\n"
    assert c.send(b"k SEARCH RETURN (SAVE) ALL\r\n") == b"k OK SEARCH completed\r\n"
    assert c.send(b"l SEARCH RETURN (SAVE) CHARSET KOI8-R ALL\r\n") == (
        b"l NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n"
    )
    assert c.send(b"m FETCH $ UID\r\n") == b"m OK FETCH completed\r\n"
    # A new SELECT starts with an empty "$".
    assert c.send(b"n SEARCH RETURN (SAVE) ALL\r\nS1 SELECT INBOX\r\n").endswith(b"S1 OK [READ-WRITE] SELECT completed\r\n")
    assert c.send(b"o FETCH $ UID\r\n") == b"o OK FETCH completed\r\n"


# --- CONTEXT=SEARCH (RFC 5267): PARTIAL, UPDATE, CANCELUPDATE ---------------------------------


def test_partial_results() -> None:
    c = six_with_a_gap()
    assert c.send(b"a SEARCH RETURN (PARTIAL 2:4) ALL\r\n") == (
        b'* ESEARCH (TAG "a") PARTIAL (2:4 2:4)\r\na OK SEARCH completed\r\n'
    )
    assert c.send(b"b UID SEARCH RETURN (PARTIAL 5:3 COUNT) ALL\r\n") == (
        b'* ESEARCH (TAG "b") UID PARTIAL (3:5 3,5:6) COUNT 6\r\nb OK SEARCH completed\r\n'
    )
    assert c.send(b"c SEARCH RETURN (PARTIAL 7:9) ALL\r\n") == (
        b'* ESEARCH (TAG "c") PARTIAL (7:9 NIL)\r\nc OK SEARCH completed\r\n'
    )
    assert c.send(b"e SEARCH RETURN (PARTIAL 1) ALL\r\n") == b"e BAD Expected ':'\r\n"
    assert c.send(b"f SEARCH RETURN (PARTIAL 1:*) ALL\r\n") == b"f BAD Expected a number\r\n"
    assert c.send(b"g SEARCH RETURN (PARTIAL 1:2 ALL) ALL\r\n") == b"g BAD PARTIAL conflicts with ALL\r\n"


def test_update_reports_additions_and_removals_until_cancelled() -> None:
    store = make_store()
    c = six_with_a_gap(store)
    inbox = store.accounts["alice"].inbox
    assert c.send(b"a SEARCH RETURN (UPDATE) SEEN\r\n") == b'* ESEARCH (TAG "a")\r\na OK SEARCH completed\r\n'
    assert c.send(b"b UID SEARCH RETURN (UPDATE ALL) UNSEEN\r\n") == (
        b'* ESEARCH (TAG "b") UID ALL 1:3,5:7\r\nb OK SEARCH completed\r\n'
    )
    assert c.send(b"a SEARCH RETURN (UPDATE) ALL\r\n") == b"a BAD Duplicate search update tag\r\n"
    assert c.send(b"c STORE 1:2,4 +FLAGS.SILENT (\\Seen)\r\n") == (
        b'* ESEARCH (TAG "a") ADDTO (0 1:2,4)\r\n* ESEARCH (TAG "b") UID REMOVEFROM (0 1:2,5)\r\n'
        b"c OK STORE completed\r\n"
    )
    # Another session expunges a seen message: it leaves the result before its EXPUNGE.
    inbox.expunge([2])
    assert c.send(b"d NOOP\r\n") == b'* ESEARCH (TAG "a") REMOVEFROM (0 2)\r\n* 2 EXPUNGE\r\nd OK NOOP completed\r\n'
    inbox.append(b"Subject: new\r\n\r\nx\r\n", ["\\Seen"])
    assert c.send(b"e NOOP\r\n") == (
        b'* 6 EXISTS\r\n* 6 RECENT\r\n* ESEARCH (TAG "a") ADDTO (0 6)\r\ne OK NOOP completed\r\n'
    )
    assert c.send(b'f CANCELUPDATE "a" "b"\r\n') == b"f OK CANCELUPDATE completed\r\n"
    assert c.send(b"g STORE 1:* -FLAGS.SILENT (\\Seen)\r\n") == b"g OK STORE completed\r\n"
    assert c.send(b'h CANCELUPDATE "a"\r\n') == b"h BAD Unknown search update tag a\r\n"


# --- CONTEXT=SORT (RFC 5267 4.3): SORT RETURN (UPDATE), positions in sort order ---------------


def subjects(*names: str) -> tuple[Store, Client]:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    for name in names:
        inbox.append(b"Subject: %b\r\n\r\nx\r\n" % name.encode(), internal_date=WHEN)
    c = client(store)
    c.login()
    c.select()
    return store, c


def test_sort_update_places_additions_and_removals_in_sort_order() -> None:
    store, c = subjects("c", "a", "e", "b", "d")  # UIDs 1-5: by subject 2, 4, 1, 5, 3
    inbox = store.accounts["alice"].inbox
    assert c.send(b"a UID SORT RETURN (UPDATE ALL) (SUBJECT) UTF-8 UNSEEN\r\n") == (
        b'* ESEARCH (TAG "a") UID ALL 2,4,1,5,3\r\na OK SORT completed\r\n'
    )
    assert c.send(b"b SORT RETURN (UPDATE) (REVERSE SUBJECT) UTF-8 UNSEEN\r\n") == (
        b'* ESEARCH (TAG "b")\r\nb OK SORT completed\r\n'
    )
    assert c.send(b"b SORT RETURN (UPDATE) (SUBJECT) UTF-8 ALL\r\n") == b"b BAD Duplicate search update tag\r\n"
    # Removals count on the result as it shrinks: 2,[4],1,[5],3 -> 4 at 2, then 5 at 3.
    assert c.send(b"c STORE 4:5 +FLAGS.SILENT (\\Seen)\r\n") == (
        b'* ESEARCH (TAG "a") UID REMOVEFROM (2 4 3 5)\r\n* ESEARCH (TAG "b") REMOVEFROM (2 5 3 4)\r\n'
        b"c OK STORE completed\r\n"
    )
    # New mail from elsewhere, after EXISTS, at the final positions; an ascending run is one set.
    inbox.append(b"Subject: f\r\n\r\nx\r\n", internal_date=WHEN)
    inbox.append(b"Subject: g\r\n\r\nx\r\n", internal_date=WHEN)
    assert c.send(b"d NOOP\r\n") == (
        b"* 7 EXISTS\r\n* 7 RECENT\r\n"
        b'* ESEARCH (TAG "a") UID ADDTO (4 6:7)\r\n* ESEARCH (TAG "b") ADDTO (1 7 2 6)\r\n'
        b"d OK NOOP completed\r\n"
    )
    # An expunge elsewhere leaves each result, at its position, before the EXPUNGE.
    inbox.expunge([1])
    assert c.send(b"e NOOP\r\n") == (
        b'* ESEARCH (TAG "a") UID REMOVEFROM (2 1)\r\n* ESEARCH (TAG "b") REMOVEFROM (4 1)\r\n'
        b"* 1 EXPUNGE\r\ne OK NOOP completed\r\n"
    )
    # Neighbours removed at once: the same position twice (one set while the ids ascend).
    assert c.send(b"f UID STORE 3,6 +FLAGS.SILENT (\\Seen)\r\n") == (
        b'* ESEARCH (TAG "a") UID REMOVEFROM (2 3,6)\r\n* ESEARCH (TAG "b") REMOVEFROM (2 5 2 2)\r\n'
        b"f OK STORE completed\r\n"
    )
    assert c.send(b'g CANCELUPDATE "a" "b"\r\n') == b"g OK CANCELUPDATE completed\r\n"
    assert c.send(b"h STORE 1:* -FLAGS.SILENT (\\Seen)\r\n") == b"h OK STORE completed\r\n"
