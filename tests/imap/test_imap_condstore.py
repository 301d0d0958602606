"""CONDSTORE (RFC 7162 section 3.1): modification sequences kept by the store and bumped by
every change, whoever makes it (IMAP, POP3's DELE at QUIT, the HTTP API's deletes). Exact replies."""

from __future__ import annotations

from imap.imap_harness import SIMPLE, WHEN, Client, client, make_store
from mailmodes.protocols.pop3 import Pop3Session
from mailmodes.store import Store
from mailmodes.web.views import delete_messages
from support import sans_io_connection


def selected(store: Store, command: bytes = b"S0 SELECT INBOX\r\n") -> tuple[Client, bytes]:
    c = client(store)
    c.login()
    return c, c.send(command)


def three() -> Store:
    store = make_store()
    for _ in range(3):
        store.accounts["alice"].inbox.append(SIMPLE, internal_date=WHEN)
    return store  # modseqs 2, 3, 4; HIGHESTMODSEQ 4


def test_select_condstore_fetch_modseq_and_changedsince() -> None:
    store = three()
    c, reply = selected(store, b"a SELECT INBOX (CONDSTORE)\r\n")
    assert b"* OK [HIGHESTMODSEQ 4] Highest\r\na OK [READ-WRITE] SELECT completed\r\n" in reply
    assert c.send(b"b FETCH 1:* (MODSEQ)\r\n") == (
        b"* 1 FETCH (MODSEQ (2))\r\n* 2 FETCH (MODSEQ (3))\r\n* 3 FETCH (MODSEQ (4))\r\nb OK FETCH completed\r\n"
    )
    assert c.send(b"c STORE 2 +FLAGS (\\Seen)\r\n") == (
        b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (5))\r\nc OK STORE completed\r\n"
    )
    assert c.send(b"d UID FETCH 1:* (FLAGS) (CHANGEDSINCE 3)\r\n") == (
        b"* 2 FETCH (UID 2 FLAGS (\\Seen \\Recent) MODSEQ (5))\r\n* 3 FETCH (UID 3 FLAGS (\\Recent) MODSEQ (4))\r\n"
        b"d OK FETCH completed\r\n"
    )
    assert c.send(b"e STATUS Trash (HIGHESTMODSEQ MESSAGES)\r\n") == (
        b"* STATUS Trash (HIGHESTMODSEQ 1 MESSAGES 0)\r\ne OK STATUS completed\r\n"
    )


def test_the_first_enabling_command_reports_highestmodseq() -> None:
    store = three()
    c, reply = selected(store)
    assert b"HIGHESTMODSEQ" not in reply
    assert c.send(b"a FETCH 1 (MODSEQ)\r\n") == (
        b"* OK [HIGHESTMODSEQ 4] Highest\r\n* 1 FETCH (MODSEQ (2))\r\na OK FETCH completed\r\n"
    )
    assert c.send(b"b FETCH 1 (MODSEQ)\r\n") == b"* 1 FETCH (MODSEQ (2))\r\nb OK FETCH completed\r\n"
    # Another session's flag change comes with its UID and MODSEQ from now on (RFC 7162 3.2.4).
    inbox = store.accounts["alice"].inbox
    inbox.set_flags(inbox.messages[2], {"\\Answered"})
    assert c.send(b"c NOOP\r\n") == b"* 3 FETCH (UID 3 FLAGS (\\Answered \\Recent) MODSEQ (5))\r\nc OK NOOP completed\r\n"


def test_unchangedsince_and_search_modseq() -> None:
    store = three()
    c, _ = selected(store, b"a SELECT INBOX (CONDSTORE)\r\n")
    assert c.send(b"b STORE 1:3 (UNCHANGEDSINCE 3) +FLAGS (\\Flagged)\r\n") == (
        b"* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent) MODSEQ (5))\r\n"
        b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent) MODSEQ (6))\r\n"
        b"b OK [MODIFIED 3] Conditional STORE failed\r\n"
    )
    assert c.send(b'c SEARCH MODSEQ "/flags/\\\\flagged" all 6\r\n') == b"* SEARCH 2 (MODSEQ 6)\r\nc OK SEARCH completed\r\n"
    assert c.send(b"d SEARCH MODSEQ 7\r\n") == b"* SEARCH\r\nd OK SEARCH completed\r\n"
    assert c.send(b"e SEARCH RETURN (MIN COUNT) MODSEQ 4\r\n") == (
        b'* ESEARCH (TAG "e") MIN 1 COUNT 3 MODSEQ 6\r\ne OK SEARCH completed\r\n'
    )
    assert c.send(b"f SEARCH RETURN (MIN) MODSEQ 4\r\n") == b'* ESEARCH (TAG "f") MIN 1 MODSEQ 5\r\nf OK SEARCH completed\r\n'
    assert c.send(b"g FETCH 1 (FLAGS) (CHANGEDSINCE 99999999999999999999)\r\n") == b"g BAD Mod-sequence out of range\r\n"


def test_pop3_dele_and_http_deletes_bump_the_mailbox_modseq() -> None:
    store = three()
    inbox = store.accounts["alice"].inbox
    pop3 = Pop3Session(sans_io_connection("pop3", "plaintext", peer=("127.0.0.1", 1)), store, "mail.example.test")
    pop3.feed(b"USER alice\r\nPASS alice-password\r\nDELE 1\r\n")
    assert inbox.highest_modseq == 4  # DELE only marks
    pop3.feed(b"QUIT\r\n")
    assert inbox.highest_modseq == 5
    c, _ = selected(store, b"a SELECT INBOX (CONDSTORE)\r\n")
    assert delete_messages(store, "alice", "INBOX") == 2
    assert inbox.highest_modseq == 6
    assert c.send(b"b NOOP\r\n") == b"* 1 EXPUNGE\r\n* 1 EXPUNGE\r\nb OK NOOP completed\r\n"
    assert c.send(b"c STATUS INBOX (HIGHESTMODSEQ)\r\n") == b"* STATUS INBOX (HIGHESTMODSEQ 6)\r\nc OK STATUS completed\r\n"
