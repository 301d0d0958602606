"""IMAP4rev2 (RFC 9051) alongside IMAP4rev1: advertised, switched on per session by ENABLE
IMAP4rev2, and then what a client can observe of Appendix E, byte for byte; the same commands
without ENABLE stay IMAP4rev1. Then imaplib over a real socket, and imapflow, which enables
IMAP4rev2 by itself."""

from __future__ import annotations

import imaplib
import json
from collections.abc import Callable

from imap.imap_harness import SIMPLE, WHEN, Client, client, lines, make_store
from mailmodes.app import ThreadedMailServer
from mailmodes.store import Store
from support import node_client

UTF8_HEADERS = b"From: J\xc3\xb6rg <j@example.test>\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nHallo\r\n"


def three(store: Store | None = None) -> Store:
    """alice's INBOX: three messages, the second one \\Deleted."""
    store = store if store is not None else make_store()
    inbox = store.accounts["alice"].inbox
    for _ in range(3):
        inbox.append(SIMPLE, internal_date=WHEN)
    inbox.set_flags(inbox.messages[1], frozenset({"\\Deleted"}))
    return store


def rev2(store: Store) -> Client:
    c = client(store)
    c.login()
    c.enable("IMAP4rev2")
    return c


def test_imap4rev2_is_advertised_next_to_imap4rev1_once_login_is_possible() -> None:
    greeting = client().greeting()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN IMAP4rev2 LITERAL+ "), greeting
    # Before TLS on a port that requires it, the list stays exactly PROTOCOL.md's.
    assert client(mode="starttls-required").greeting() == (
        b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mail.example.test ready\r\n"
    )


def test_enable_imap4rev2_once_in_any_case_and_only_before_select() -> None:
    c = client(three())
    c.login()
    assert c.send(b"a ENABLE imap4REV2 CONDSTORE\r\n") == (
        b"* ENABLED CONDSTORE IMAP4rev2\r\na OK ENABLE completed\r\n"
    )
    # RFC 5161 3.2: ENABLED lists only what this command newly enabled.
    assert c.send(b"b ENABLE IMAP4rev2\r\n") == b"* ENABLED\r\nb OK ENABLE completed\r\n"
    c.select()
    assert c.send(b"c ENABLE IMAP4rev2\r\n") == b"c BAD ENABLE is only valid before a mailbox is selected\r\n"


def test_select_in_imap4rev2_has_a_list_response_and_no_recent_or_unseen() -> None:
    store = three()
    inbox = store.accounts["alice"].inbox
    v, n = inbox.uidvalidity, inbox.uidnext
    assert rev2(store).send(b"s SELECT INBOX\r\n") == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
        b"* 3 EXISTS\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted\r\n"
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
        b"* OK [UIDNEXT %d] Predicted next UID\r\n"
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
        b"s OK [READ-WRITE] SELECT completed\r\n" % (v, n)
    )
    assert rev2(store).send(b"x EXAMINE Sent\r\n") == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
        b"* 0 EXISTS\r\n"
        b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n"
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
        b"* OK [UIDNEXT 1] Predicted next UID\r\n"
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n'
        b"x OK [READ-ONLY] EXAMINE completed\r\n" % store.accounts["alice"].mailboxes["Sent"].uidvalidity
    )
    # IMAP4rev1, the same mailbox: RECENT (none left: the rev2 sessions claimed nothing, the first
    # rev1 one claims all three) and UNSEEN, no LIST.
    c = client(store)
    c.login()
    reply = c.select()
    assert b"* 3 RECENT\r\n" in reply and b"* OK [UNSEEN 1] First unseen\r\n" in reply, reply
    assert b"LIST" not in reply


def test_search_in_imap4rev2_is_answered_with_esearch() -> None:
    c = rev2(three())
    c.select()
    assert c.send(b"a SEARCH ALL\r\n") == b'* ESEARCH (TAG "a") ALL 1:3\r\na OK SEARCH completed\r\n'
    assert c.send(b"b UID SEARCH UNDELETED\r\n") == b'* ESEARCH (TAG "b") UID ALL 1,3\r\nb OK SEARCH completed\r\n'
    # Nothing found: the ESEARCH names only the tag (RFC 9051 7.3.4).
    assert c.send(b"c UID SEARCH 7:9\r\n") == b'* ESEARCH (TAG "c") UID\r\nc OK SEARCH completed\r\n'
    assert c.send(b"d SEARCH RETURN (COUNT MIN) DELETED\r\n") == (
        b'* ESEARCH (TAG "d") MIN 2 COUNT 1\r\nd OK SEARCH completed\r\n'
    )
    # CHARSET stays allowed (unlike after UTF8=ACCEPT), and "$" is base.
    assert c.send(b"e SEARCH RETURN (SAVE) CHARSET UTF-8 SUBJECT hello\r\n") == b"e OK SEARCH completed\r\n"
    assert c.send(b"f SEARCH $\r\n") == b'* ESEARCH (TAG "f") ALL 1:3\r\nf OK SEARCH completed\r\n'
    # MODSEQ: the highest of those found closes the ESEARCH (RFC 7162 3.2.5).
    highest = c.session.view.mailbox.highest_modseq  # type: ignore[union-attr]
    assert c.send(b"g SEARCH MODSEQ 1\r\n") == (
        b"* OK [HIGHESTMODSEQ %d] Highest\r\n"
        b'* ESEARCH (TAG "g") ALL 1:3 MODSEQ %d\r\ng OK SEARCH completed\r\n' % (highest, highest)
    )
    # SORT is no SEARCH: its own response, as in IMAP4rev1.
    assert c.send(b"h SORT (ARRIVAL) UTF-8 ALL\r\n") == b"* SORT 1 2 3\r\nh OK SORT completed\r\n"


def test_search_without_enable_stays_imap4rev1() -> None:
    c = client(three())
    c.login()
    c.select()
    assert c.send(b"a SEARCH ALL\r\n") == b"* SEARCH 1 2 3\r\na OK SEARCH completed\r\n"


def test_no_recent_in_imap4rev2_and_every_unsolicited_fetch_names_the_uid() -> None:
    store = three()
    inbox = store.accounts["alice"].inbox
    c = rev2(store)
    c.select()
    other = client(store)
    other.login()
    other.select()
    other.send(b"o STORE 1 +FLAGS.SILENT (\\Flagged)\r\n")
    inbox.append(SIMPLE, internal_date=WHEN)
    # New mail: EXISTS without RECENT; a flag change: with its UID (no MODSEQ: CONDSTORE is off).
    assert c.send(b"n NOOP\r\n") == (
        b"* 4 EXISTS\r\n* 1 FETCH (UID 1 FLAGS (\\Flagged))\r\nn OK NOOP completed\r\n"
    )
    assert c.send(b"f FETCH 4 FLAGS\r\n") == b"* 4 FETCH (FLAGS ())\r\nf OK FETCH completed\r\n"
    assert c.send(b"r SEARCH RECENT\r\n") == b'* ESEARCH (TAG "r")\r\nr OK SEARCH completed\r\n'
    # The same change seen by an IMAP4rev1 session: RECENT, \Recent, and no UID.
    rev1 = client(store)
    rev1.login()
    rev1.select()
    other.send(b"p STORE 3 +FLAGS.SILENT (\\Seen)\r\n")
    inbox.append(SIMPLE, internal_date=WHEN)
    assert lines(rev1.send(b"n NOOP\r\n")) == [
        b"* 5 EXISTS", b"* 2 RECENT", b"* 3 FETCH (FLAGS (\\Seen))", b"n OK NOOP completed"]


def test_status_deleted_and_size_in_both_revisions() -> None:
    store = three()
    size = 3 * len(SIMPLE)
    for c in (rev2(store), client(store)):
        if c.session.state.value == "not authenticated":
            c.login()
        assert c.send(b"a STATUS INBOX (MESSAGES DELETED SIZE)\r\n") == (
            b"* STATUS INBOX (MESSAGES 3 DELETED 1 SIZE %d)\r\na OK STATUS completed\r\n" % size
        )
    c = rev2(store)
    assert c.send(b'l LIST "" "INBOX" RETURN (STATUS (DELETED SIZE))\r\n') == (
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n* STATUS INBOX (DELETED 1 SIZE %d)\r\nl OK LIST completed\r\n' % size
    )
    assert c.send(b"b STATUS INBOX (SIZES)\r\n") == b"b BAD Unknown STATUS item SIZES\r\n"


def test_imap4rev2_names_mailboxes_and_takes_headers_in_utf8() -> None:
    store = make_store()
    c = rev2(store)
    assert c.send(b'a CREATE "Caf\xc3\xa9"\r\n') == b"a OK CREATE completed\r\n"
    assert c.send(b'b LIST "" "C*"\r\n') == b'* LIST (\\HasNoChildren) "/" "Caf\xc3\xa9"\r\nb OK LIST completed\r\n'
    reply = c.send(b'c APPEND "Caf\xc3\xa9" {%d+}\r\n%b\r\n' % (len(UTF8_HEADERS), UTF8_HEADERS))
    assert reply.startswith(b"c OK [APPENDUID "), reply
    # IMAP4rev1 spells the same name in modified UTF-7 and refuses the 8-bit headers.
    rev1 = client(store)
    rev1.login()
    assert rev1.send(b'b LIST "" "C*"\r\n') == b'* LIST (\\HasNoChildren) "/" Caf&AOk-\r\nb OK LIST completed\r\n'
    assert rev1.send(b"c APPEND Caf&AOk- {%d+}\r\n%b\r\n" % (len(UTF8_HEADERS), UTF8_HEADERS)) == (
        b"c NO [CANNOT] 8-bit header fields need ENABLE UTF8=ACCEPT\r\n"
    )


# --- real clients over real sockets ------------------------------------------------------------


def test_imaplib_switches_to_imap4rev2(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "imap", "protocol": "imap", "tls": "plaintext"})
    server.call(lambda: three(server.store))
    with imaplib.IMAP4("127.0.0.1", server.port("imap"), timeout=10) as imap:
        assert b"IMAP4rev2" in imap.capability()[1][0].split()
        imap.login("alice", "alice-password")
        typ, data = imap._simple_command("ENABLE", "IMAP4rev2")
        assert (typ, imap._untagged_response(typ, data, "ENABLED")[1]) == ("OK", [b"IMAP4rev2"])
        typ, data = imap.select("INBOX")
        assert (typ, data) == ("OK", [b"3"])
        assert "RECENT" not in imap.untagged_responses and "UNSEEN" not in imap.untagged_responses
        assert imap.untagged_responses.pop("LIST") == [b'(\\HasNoChildren) "/" INBOX']
        tag = imap._new_tag().decode()
        imap.send(f"{tag} UID SEARCH UNDELETED\r\n".encode())
        assert imap.readline() == f'* ESEARCH (TAG "{tag}") UID ALL 1,3\r\n'.encode()
        assert imap.readline() == f"{tag} OK SEARCH completed\r\n".encode()
        typ, data = imap.status("INBOX", "(DELETED SIZE)")
        assert (typ, data) == ("OK", [b"INBOX (DELETED 1 SIZE %d)" % (3 * len(SIMPLE))])


def test_imapflow_enables_imap4rev2_and_works_in_it(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "imap", "protocol": "imap", "tls": "plaintext"})
    server.call(lambda: three(server.store))
    log, result = node_client("imapflow", server.port("imap"), secure=False, doSTARTTLS=False, steps="rev2")
    assert result == "RESULT ok", log
    report = json.loads(next(line[5:] for line in log.splitlines() if line.startswith("REV2 ")))
    assert "IMAP4REV2" in report["enabled"], report
    assert report["search"] == [1, 3], report  # UID SEARCH UNDELETED, read from the ESEARCH
    assert report["status"] == {"path": "INBOX", "messages": 3, "deleted": 1, "size": 3 * len(SIMPLE)}, report
    assert report["exists"] == 3, report
    # What imapflow itself logged of the exchange: an ESEARCH answered its SEARCH.
    assert '* ESEARCH (TAG \\"' in log, log
    record = server.journal.wait_for(1, listener="imap")[0]
    assert "ENABLE" in record.verbs_before_tls and "UID SEARCH" in record.mail_commands_in_clear, record


def test_list_extended_rules_hold_in_imap4rev2() -> None:
    store = make_store()
    account = store.accounts["alice"]
    for name in ("a/b/c", "gone"):
        account.create(name)
    c = rev2(store)
    for name in (b"a/b/c", b"gone"):
        assert c.send(b"s SUBSCRIBE " + name + b"\r\n") == b"s OK SUBSCRIBE completed\r\n"
    assert c.send(b"d DELETE gone\r\n") == b"d OK DELETE completed\r\n"
    # \NonExistent for a subscription without its mailbox, CHILDINFO above one "%" does not reach.
    assert c.send(b'b LIST (SUBSCRIBED RECURSIVEMATCH) "" (a g%)\r\n') == (
        b'* LIST (\\HasChildren) "/" a (CHILDINFO ("SUBSCRIBED"))\r\n'
        b'* LIST (\\NonExistent \\Subscribed) "/" gone\r\n'
        b"b OK LIST completed\r\n"
    )
    assert c.send(b'c LIST "" a/% RETURN (SUBSCRIBED STATUS (MESSAGES DELETED))\r\n') == (
        b'* LIST (\\HasChildren) "/" a/b\r\n* STATUS a/b (MESSAGES 0 DELETED 0)\r\nc OK LIST completed\r\n'
    )
