"""QRESYNC (RFC 7162 section 3.2): ENABLE QRESYNC, SELECT/EXAMINE (QRESYNC (...)) with
VANISHED (EARLIER) and the changed flags, UID FETCH (CHANGEDSINCE n VANISHED), VANISHED instead
of EXPUNGE, [CLOSED]. The store keeps each expunged UID with its mod-sequence. Exact replies."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import BinaryIO

from imap.imap_harness import SIMPLE, WHEN, Client, client, make_store
from mailmodes.app import ThreadedMailServer
from mailmodes.store import Store


def mailbox_with_history() -> Store:
    """UIDs 1-6 (mod-sequences 2-7); then 2 and 3 expunged (8), 5 marked seen (9), 6 expunged
    (10): UIDs 1, 4, 5 are left, HIGHESTMODSEQ 10."""
    store = make_store()
    inbox = store.accounts["alice"].inbox
    for _ in range(6):
        inbox.append(SIMPLE, internal_date=WHEN)
    inbox.expunge([2, 3])
    message = inbox.by_uid(5)
    assert message is not None
    inbox.set_flags(message, {"\\Seen"})
    inbox.expunge([6])
    return store


def enabled(store: Store) -> Client:
    c = client(store)
    c.login()
    c.enable("QRESYNC")
    return c


def test_enable_and_what_needs_it() -> None:
    store = mailbox_with_history()
    validity = store.accounts["alice"].inbox.uidvalidity
    c = client(store)
    c.login()
    assert b" CONDSTORE QRESYNC" in c.send(b"a CAPABILITY\r\n")
    assert c.send(b"b SELECT INBOX (QRESYNC (%d 1))\r\n" % validity) == b"b BAD QRESYNC is not enabled\r\n"
    assert c.send(b"c ENABLE CONDSTORE QRESYNC\r\n") == b"* ENABLED CONDSTORE QRESYNC\r\nc OK ENABLE completed\r\n"
    assert c.send(b"d ENABLE QRESYNC\r\n") == b"* ENABLED\r\nd OK ENABLE completed\r\n"
    # Only ENABLE QRESYNC turns it on: not CONDSTORE, not a SELECT with CONDSTORE.
    other = client(store)
    other.login()
    other.send(b"a ENABLE CONDSTORE\r\n")
    other.select()
    assert other.send(b"b UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n") == (
        b"b BAD VANISHED needs ENABLE QRESYNC\r\n"
    )
    assert other.send(b"c FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n") == (
        b"c BAD VANISHED is only valid in UID FETCH\r\n"
    )
    assert other.send(b"d UID FETCH 1:* (FLAGS) (VANISHED)\r\n") == b"d BAD VANISHED needs CHANGEDSINCE\r\n"
    assert other.send(b"e UID FETCH 1:* (FLAGS) ()\r\n") == b"e BAD Expected a FETCH modifier\r\n"


def test_select_qresync_reports_what_vanished_and_changed_since() -> None:
    store = mailbox_with_history()
    validity = store.accounts["alice"].inbox.uidvalidity
    c = enabled(store)
    assert c.send(b"s SELECT INBOX (QRESYNC (%d 7))\r\n" % validity) == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n* 3 EXISTS\r\n* 3 RECENT\r\n"
        b"* OK [UNSEEN 1] First unseen\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n"
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n* OK [UIDNEXT 7] Predicted next UID\r\n"
        b"* OK [HIGHESTMODSEQ 10] Highest\r\n"
        b"* VANISHED (EARLIER) 2:3,6\r\n* 3 FETCH (UID 5 FLAGS (\\Seen \\Recent) MODSEQ (9))\r\n"
        b"s OK [READ-WRITE] SELECT completed\r\n" % validity
    )
    # Known UIDs limit both; the mailbox open before is closed first ([CLOSED]).
    reply = c.send(b"t EXAMINE INBOX (QRESYNC (%d 7 1:4))\r\n" % validity)
    assert reply.startswith(b"* OK [CLOSED] Previous mailbox closed\r\n* FLAGS ")
    assert reply.endswith(
        b"* OK [HIGHESTMODSEQ 10] Highest\r\n* VANISHED (EARLIER) 2:3\r\nt OK [READ-ONLY] EXAMINE completed\r\n"
    )
    # Sequence match data is checked, then not needed: the store knows every expunged UID.
    assert c.send(b"u SELECT INBOX (QRESYNC (%d 8 1:10 (1:3 1,4:5)))\r\n" % validity).endswith(
        b"* OK [HIGHESTMODSEQ 10] Highest\r\n"
        b"* VANISHED (EARLIER) 6\r\n* 3 FETCH (UID 5 FLAGS (\\Seen \\Recent) MODSEQ (9))\r\n"
        b"u OK [READ-WRITE] SELECT completed\r\n"
    )
    # Another UIDVALIDITY: what the client knew is void, an ordinary SELECT.
    assert c.send(b"v SELECT INBOX (QRESYNC (%d 2))\r\n" % (validity + 1)).endswith(
        b"* OK [HIGHESTMODSEQ 10] Highest\r\nv OK [READ-WRITE] SELECT completed\r\n"
    )
    assert c.send(b"w SELECT INBOX (QRESYNC (%d 2 1:10 (1:3 1,4)))\r\n" % validity) == (
        b"w BAD QRESYNC sequence match sets differ in size\r\n"
    )
    assert c.send(b"x SELECT INBOX (QRESYNC (%d 2 1:*))\r\n" % validity) == (
        b"x BAD Expected a set of numbers without '*'\r\n"
    )
    assert c.send(b"y SELECT INBOX (QRESYNC (0 2))\r\n") == b"y BAD Zero is not a valid number here\r\n"


def test_vanished_instead_of_expunge_and_uid_fetch_vanished() -> None:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    for _ in range(5):
        inbox.append(SIMPLE, internal_date=WHEN)  # UIDs 1-5, mod-sequences 2-6
    c = enabled(store)
    assert c.select().endswith(b"* OK [HIGHESTMODSEQ 6] Highest\r\nS0 OK [READ-WRITE] SELECT completed\r\n")
    assert c.send(b"a STORE 1,3 +FLAGS.SILENT (\\Deleted)\r\n") == b"a OK STORE completed\r\n"
    assert c.send(b"b EXPUNGE\r\n") == b"* VANISHED 1,3\r\nb OK EXPUNGE completed\r\n"  # modseq 9
    # Another session: a flag (10) and an expunge (11); flag updates name the UID.
    message = inbox.by_uid(4)
    assert message is not None
    inbox.set_flags(message, {"\\Flagged"})
    inbox.expunge([5])
    assert c.send(b"c NOOP\r\n") == (
        b"* VANISHED 5\r\n* 2 FETCH (UID 4 FLAGS (\\Flagged \\Recent) MODSEQ (10))\r\nc OK NOOP completed\r\n"
    )
    # "*" reaches the last UID given, expunged or not.
    assert c.send(b"d UID FETCH 1:* (FLAGS) (CHANGEDSINCE 6 VANISHED)\r\n") == (
        b"* VANISHED (EARLIER) 1,3,5\r\n* 2 FETCH (UID 4 FLAGS (\\Flagged \\Recent) MODSEQ (10))\r\n"
        b"d OK FETCH completed\r\n"
    )
    assert c.send(b"e UID FETCH 2:4 (FLAGS) (VANISHED CHANGEDSINCE 8)\r\n") == (
        b"* VANISHED (EARLIER) 3\r\n* 2 FETCH (UID 4 FLAGS (\\Flagged \\Recent) MODSEQ (10))\r\n"
        b"e OK FETCH completed\r\n"
    )
    assert c.send(b"f UID FETCH 1:* (FLAGS) (CHANGEDSINCE 11 VANISHED)\r\n") == b"f OK FETCH completed\r\n"
    # RFC 7162 3.2.4: STORE and a FETCH that sets \Seen answer with UID and MODSEQ.
    assert c.send(b"g STORE 1 +FLAGS (\\Seen)\r\n") == (
        b"* 1 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (12))\r\ng OK STORE completed\r\n"
    )
    assert c.send(b"h FETCH 2 (BODY[HEADER.FIELDS (SUBJECT)])\r\n") == (
        b"* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: Hello\r\n\r\n"
        b" FLAGS (\\Flagged \\Seen \\Recent) UID 4 MODSEQ (13))\r\nh OK FETCH completed\r\n"
    )
    trash = store.accounts["alice"].mailbox("Trash")
    assert trash is not None
    assert c.send(b"i MOVE 1 Trash\r\n") == (
        b"* OK [COPYUID %d 2 1] Moved UIDs\r\n* VANISHED 2\r\ni OK MOVE completed\r\n" % trash.uidvalidity
    )


def test_a_client_back_later_resyncs_over_a_socket(serve: Callable[..., ThreadedMailServer]) -> None:
    """Over a real listener: one session expunges; the other sees VANISHED, and a later session
    resynchronises with what it knew (UIDVALIDITY, HIGHESTMODSEQ) in its SELECT."""
    server = serve({"name": "imap", "protocol": "imap", "tls": "plaintext"})

    def append() -> tuple[int, int]:
        inbox = server.store.accounts["alice"].inbox
        for _ in range(3):
            inbox.append(SIMPLE, internal_date=WHEN)
        return inbox.uidvalidity, inbox.highest_modseq

    validity, highest = server.call(append)

    def connect() -> tuple[socket.socket, BinaryIO]:
        sock = socket.create_connection(("127.0.0.1", server.port("imap")), timeout=10)
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        return sock, reader

    def talk(connection: tuple[socket.socket, BinaryIO], command: bytes) -> bytes:
        """Send one command; everything up to its tagged reply."""
        sock, reader = connection
        sock.sendall(command)
        tag = command.split(b" ", 1)[0] + b" "
        lines = b""
        while True:
            line = reader.readline()
            assert line, lines
            lines += line
            if line.startswith(tag):
                return lines

    a, b = connect(), connect()
    try:
        for connection in (a, b):
            assert talk(connection, b"L LOGIN alice alice-password\r\n").startswith(b"L OK")
        assert talk(a, b"E ENABLE QRESYNC\r\n") == b"* ENABLED QRESYNC\r\nE OK ENABLE completed\r\n"
        assert talk(a, b"S SELECT INBOX\r\n").endswith(b"S OK [READ-WRITE] SELECT completed\r\n")
        assert talk(b, b"S SELECT INBOX\r\n").endswith(b"S OK [READ-WRITE] SELECT completed\r\n")
        assert talk(b, b"D UID STORE 2 +FLAGS.SILENT (\\Deleted)\r\n") == b"D OK STORE completed\r\n"
        assert talk(b, b"X UID EXPUNGE 2\r\n") == b"* 2 EXPUNGE\r\nX OK EXPUNGE completed\r\n"
        assert talk(a, b"N NOOP\r\n") == b"* VANISHED 2\r\nN OK NOOP completed\r\n"
    finally:
        for sock, reader in (a, b):
            reader.close()
            sock.close()
    c = connect()
    try:
        talk(c, b"L LOGIN alice alice-password\r\n")
        talk(c, b"E ENABLE QRESYNC\r\n")
        reply = talk(c, b"S SELECT INBOX (QRESYNC (%d %d 1:3))\r\n" % (validity, highest))
        assert reply.endswith(
            b"* OK [HIGHESTMODSEQ %d] Highest\r\n* VANISHED (EARLIER) 2\r\n"
            b"S OK [READ-WRITE] SELECT completed\r\n" % (highest + 2)
        )
    finally:
        c[1].close()
        c[0].close()


def test_known_uids_of_many_ranges() -> None:
    """A set of thousands of ranges (a 64 KiB line holds ~13,000) is looked up by bisection
    for each expunged UID and message, and still limits what is reported."""
    store = make_store()
    inbox = store.accounts["alice"].inbox
    for _ in range(3000):
        inbox.append(SIMPLE, internal_date=WHEN)
    inbox.expunge(range(1, 3001, 2))  # the odd UIDs
    c = enabled(store)
    odd_from_1001 = b",".join(b"%d" % uid for uid in range(1001, 3001, 2))
    reply = c.send(b"s EXAMINE INBOX (QRESYNC (%d 3001 %b,2000:2002))\r\n" % (inbox.uidvalidity, odd_from_1001))
    assert reply.endswith(
        b"* VANISHED (EARLIER) %b\r\n"
        b"s OK [READ-ONLY] EXAMINE completed\r\n" % odd_from_1001
    )
