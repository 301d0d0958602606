"""ImapSession without sockets: exact reply bytes for each command, mode and limit."""

from __future__ import annotations

import base64
import logging
import re

import pytest

from imap.imap_harness import SIMPLE, WHEN, Client, client, make_store
from mailmodes.protocols.events import Close, StartTls
from mailmodes.store import Store
from support import IMAP_EXTENSIONS

CAPS = IMAP_EXTENSIONS.encode()


def selected(store: Store | None = None, messages: int = 1, mailbox: str = "INBOX") -> Client:
    store = store if store is not None else make_store()
    box = store.accounts["alice"].mailbox(mailbox)
    assert box is not None
    for _ in range(messages):
        box.append(SIMPLE, internal_date=WHEN)
    c = client(store)
    c.login()
    c.select(mailbox)
    return c


# --- Greeting, capabilities and TLS modes (PROTOCOL.md) --------------------------------------


@pytest.mark.parametrize(
    ("mode", "greeting"),
    [
        ("starttls-required", b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mail.example.test ready\r\n"),
        ("starttls-optional", b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN " + CAPS + b"] mail.example.test ready\r\n"),
        ("implicit", b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN " + CAPS + b"] mail.example.test ready\r\n"),
        ("plaintext", b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN " + CAPS + b"] mail.example.test ready\r\n"),
    ],
)
def test_greeting_per_mode(mode: str, greeting: bytes) -> None:
    assert client(mode=mode).greeting() == greeting


def test_required_mode_refuses_login_and_authenticate_before_tls() -> None:
    c = client(mode="starttls-required")
    privacy = b"NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections\r\n"
    assert c.send(b"a LOGIN alice alice-password\r\n") == b"a " + privacy
    assert c.send(b"b AUTHENTICATE PLAIN\r\n") == b"b " + privacy
    assert c.send(b"c AUTHENTICATE PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk\r\n") == b"c " + privacy
    # A synchronizing literal is refused before the client sends the password in the clear.
    assert c.send(b"d LOGIN {5}\r\n") == b"d " + privacy
    assert c.send(b"e SELECT INBOX\r\n") == b"e BAD SELECT is not valid in the not authenticated state\r\n"


def test_starttls_then_capabilities_change_and_login_works() -> None:
    c = client(mode="starttls-required")
    c.greeting()
    assert c.send(b"a CAPABILITY\r\n") == (
        b"* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\na OK Capability completed\r\n"
    )
    assert c.send(b"b STARTTLS\r\n") == b"b OK Begin TLS negotiation now\r\n"
    assert c.actions == [StartTls()]
    assert c.tls_started() == b""
    assert c.send(b"c CAPABILITY\r\n") == (
        b"* CAPABILITY IMAP4rev1 AUTH=PLAIN " + CAPS + b"\r\nc OK Capability completed\r\n"
    )
    assert c.send(b"d STARTTLS\r\n") == b"d BAD TLS is already active\r\n"
    assert c.send(b"e LOGIN alice alice-password\r\n") == b"e OK [CAPABILITY IMAP4rev1 " + CAPS + b"] Logged in\r\n"


def test_bytes_pipelined_behind_starttls_are_dropped_and_counted() -> None:
    c = client(mode="starttls-optional")
    reply = c.send(b"a STARTTLS\r\nb LOGIN alice alice-password\r\n")
    assert reply == b"a OK Begin TLS negotiation now\r\n"
    assert c.actions == [StartTls()]
    assert c.session.pipelined_after_starttls == len(b"b LOGIN alice alice-password\r\n")
    c.tls_started()
    assert c.send(b"c NOOP\r\n") == b"c OK NOOP completed\r\n"


def test_starttls_refusals() -> None:
    assert client(mode="implicit").send(b"a STARTTLS\r\n") == b"a BAD TLS is already active\r\n"
    assert client(mode="plaintext").send(b"a STARTTLS\r\n") == b"a NO [UNAVAILABLE] TLS is not available on this port\r\n"
    unavailable = client(mode="starttls-required", tls_available=False)
    assert unavailable.send(b"a STARTTLS\r\n") == b"a NO [UNAVAILABLE] TLS is not available on this port\r\n"
    logged_in = client(mode="starttls-optional")
    logged_in.login()
    assert logged_in.send(b"a STARTTLS\r\n") == b"a BAD STARTTLS is only valid before authentication\r\n"
    assert logged_in.send(b"b STARTTLS now\r\n") == b"b BAD Unexpected extra arguments\r\n"
    assert not logged_in.started_tls


def test_never_preauth() -> None:
    for mode in ("implicit", "starttls-required", "starttls-optional", "plaintext"):
        assert b"PREAUTH" not in client(mode=mode).greeting()


# --- Authentication ----------------------------------------------------------------------------


def test_login_failures_and_success() -> None:
    c = client()
    assert c.send(b"a LOGIN alice wrong\r\n") == b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert c.send(b"b LOGIN nobody x\r\n") == b"b NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert c.send(b'c LOGIN "alice@example.test" {14}\r\n') == b"+ Ready for literal data\r\n"
    assert c.send(b"alice-password\r\n") == b"c OK [CAPABILITY IMAP4rev1 " + CAPS + b"] Logged in\r\n"
    assert c.send(b"d LOGIN alice alice-password\r\n") == b"d BAD LOGIN is not valid in the authenticated state\r\n"


def test_authenticate_plain_with_and_without_initial_response() -> None:
    token = base64.b64encode(b"\0alice\0alice-password")
    c = client()
    assert c.send(b"a AUTHENTICATE PLAIN " + token + b"\r\n") == b"a OK [CAPABILITY IMAP4rev1 " + CAPS + b"] Logged in\r\n"
    c = client()
    assert c.send(b"a AUTHENTICATE PLAIN\r\n") == b"+ \r\n"
    assert c.send(base64.b64encode(b"alice\0alice\0wrong") + b"\r\n") == (
        b"a NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    )
    assert c.send(b"b AUTHENTICATE PLAIN\r\n*\r\n") == b"+ \r\nb BAD Authentication aborted\r\n"
    assert c.send(b"c AUTHENTICATE PLAIN =\r\n") == b"c NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
    assert c.send(b"d AUTHENTICATE PLAIN\r\n!!!\r\n") == b"+ \r\nd BAD Invalid base64 data\r\n"
    assert c.send(b"e AUTHENTICATE CRAM-MD5\r\n") == b"e NO [CANNOT] Unsupported authentication mechanism\r\n"
    other = base64.b64encode(b"bob\0alice\0alice-password")
    assert c.send(b"f AUTHENTICATE PLAIN " + other + b"\r\n") == b"f NO [AUTHORIZATIONFAILED] Authorization failed\r\n"


# --- Limits ------------------------------------------------------------------------------------


def test_synchronizing_literal_too_big_is_refused_before_it_is_sent() -> None:
    c = client(max_literal_size=100)
    c.login()
    assert c.send(b"a APPEND INBOX {101}\r\n") == b"a NO [TOOBIG] Literal too big (at most 100 octets)\r\n"
    assert c.send(b"b NOOP\r\n") == b"b OK NOOP completed\r\n"


def test_append_is_limited_by_the_message_size_too() -> None:
    c = client(max_message_size=10)
    c.login()
    assert c.send(b"a APPEND INBOX {11}\r\n") == b"a NO [TOOBIG] Literal too big (at most 10 octets)\r\n"


def test_non_synchronizing_literal_too_big_is_swallowed() -> None:
    c = client(max_literal_size=5)
    c.login()
    assert c.send(b"a APPEND INBOX {8+}\r\nabc") == b"a NO [TOOBIG] Literal too big (at most 5 octets)\r\n"
    assert c.send(b"defgh\r\nb NOOP\r\n") == b"b OK NOOP completed\r\n"


def test_line_too_long() -> None:
    c = client(max_line_length=40)
    assert c.send(b"a LOGIN " + b"x" * 50) == b"a BAD Command line too long\r\n"
    assert c.send(b"yyy\r\nb NOOP\r\n") == b"b OK NOOP completed\r\n"
    assert c.send(b"+" * 60) == b"* BAD Command line too long\r\n"


def test_bad_command_budget_then_bye() -> None:
    c = client(max_bad_commands=3)
    assert c.send(b"a FOO\r\nb BAR\r\n") == b"a BAD Unknown command\r\nb BAD Unknown command\r\n"
    # The count is of every BAD of the connection (as SMTP's and POP3's are), not consecutive ones.
    assert c.send(b"c NOOP\r\n") == b"c OK NOOP completed\r\n"
    assert c.send(b"d FOO\r\ne NOOP\r\n") == b"d BAD Unknown command\r\n* BYE Too many invalid commands\r\n"
    assert c.actions == [Close()]
    assert c.send(b"h NOOP\r\n") == b""


def test_idle_timeout_says_autologout() -> None:
    c = client()
    assert c.session.timed_out() == [b"* BYE Autologout; idle for too long\r\n", Close()]


def test_internal_error_is_serverbug_for_that_session_only(caplog: pytest.LogCaptureFixture) -> None:
    store = make_store()
    c = selected(store)
    other = selected(store)
    c.session.view.messages[0].data = None  # type: ignore[union-attr,assignment]
    with caplog.at_level(logging.ERROR, logger="mailmodes.protocols.imap.session"):
        reply = c.send(b"a FETCH 1 RFC822.SIZE\r\nb NOOP\r\n")
    assert reply == b"* BYE [SERVERBUG] Internal server error, closing the connection\r\n"
    assert c.actions == [Close()]
    assert "Traceback" in caplog.text or caplog.records[0].exc_info is not None
    store.accounts["alice"].inbox.messages[0].data = SIMPLE
    assert other.send(b"c NOOP\r\n") == b"c OK NOOP completed\r\n"


# --- Mailboxes ---------------------------------------------------------------------------------


def test_select_and_examine_responses() -> None:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    inbox.append(SIMPLE, ["\\Seen"])
    inbox.append(SIMPLE, ["$Work"])
    c = client(store)
    c.login()
    uidvalidity = inbox.uidvalidity
    assert c.send(b"a SELECT INBOX\r\n") == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n"
        b"* 2 EXISTS\r\n"
        b"* 2 RECENT\r\n"
        b"* OK [UNSEEN 2] First unseen\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted\r\n"
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
        b"* OK [UIDNEXT 3] Predicted next UID\r\n"
        b"a OK [READ-WRITE] SELECT completed\r\n" % uidvalidity
    )
    # \Recent went to the first session; a second one sees none.
    d = client(store)
    d.login()
    assert d.send(b"b EXAMINE inbox\r\n") == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n"
        b"* 2 EXISTS\r\n"
        b"* 0 RECENT\r\n"
        b"* OK [UNSEEN 2] First unseen\r\n"
        b"* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n"
        b"* OK [UIDVALIDITY %d] UIDs valid\r\n"
        b"* OK [UIDNEXT 3] Predicted next UID\r\n"
        b"b OK [READ-ONLY] EXAMINE completed\r\n" % uidvalidity
    )
    assert d.send(b"c STORE 1 +FLAGS (\\Deleted)\r\n") == b"c NO [CANNOT] Mailbox is read-only\r\n"
    assert d.send(b"d EXPUNGE\r\n") == b"d NO [CANNOT] Mailbox is read-only\r\n"
    assert d.send(b"e FETCH 2 BODY[]<0.4>\r\n") == b"* 2 FETCH (BODY[]<0> {4}\r\nFrom)\r\ne OK FETCH completed\r\n"
    assert "\\Seen" not in inbox.messages[1].flags  # EXAMINE never sets \Seen
    # The open mailbox is closed even when the SELECT fails ([CLOSED], RFC 7162 3.2.11).
    assert d.send(b"f SELECT nosuch\r\n") == (
        b"* OK [CLOSED] Previous mailbox closed\r\nf NO [NONEXISTENT] Mailbox doesn't exist: nosuch\r\n"
    )
    assert d.send(b"g FETCH 1 FLAGS\r\n") == b"g BAD FETCH is not valid in the authenticated state\r\n"


def test_list_lsub_and_hierarchy() -> None:
    c = client()
    c.login()
    assert c.send(b"a CREATE Work/Projects\r\n") == b"a OK CREATE completed\r\n"
    assert c.send(b'b LIST "" *\r\n') == (
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
        b'* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n'
        b'* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n'
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n'
        b'* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n'
        b'* LIST (\\HasChildren) "/" Work\r\n'
        b'* LIST (\\HasNoChildren) "/" Work/Projects\r\n'
        b"b OK LIST completed\r\n"
    )
    assert c.send(b'c LIST "" %\r\n').count(b"* LIST") == 6
    assert c.send(b'd LIST Work/ %\r\n') == b'* LIST (\\HasNoChildren) "/" Work/Projects\r\nd OK LIST completed\r\n'
    assert c.send(b'e LIST "" ""\r\n') == b'* LIST (\\Noselect) "/" ""\r\ne OK LIST completed\r\n'
    assert c.send(b'f LIST "" inbox\r\n') == b'* LIST (\\HasNoChildren) "/" INBOX\r\nf OK LIST completed\r\n'
    assert c.send(b"g UNSUBSCRIBE Junk\r\n") == b"g OK UNSUBSCRIBE completed\r\n"
    assert c.send(b'h LSUB "" J*\r\n') == b"h OK LSUB completed\r\n"
    assert c.send(b'i LSUB "" S*\r\n') == b'* LSUB () "/" Sent\r\ni OK LSUB completed\r\n'
    assert c.send(b'j CREATE "My Stuff"\r\n') == b"j OK CREATE completed\r\n"
    assert c.send(b'k LIST "" My*\r\n') == b'* LIST (\\HasNoChildren) "/" "My Stuff"\r\nk OK LIST completed\r\n'


def test_create_delete_rename_errors() -> None:
    c = client()
    c.login()
    assert c.send(b"a CREATE inbox\r\n") == b"a NO [ALREADYEXISTS] Mailbox already exists\r\n"
    assert c.send(b"b CREATE a*b\r\n") == b"b BAD Unexpected extra arguments\r\n"
    assert c.send(b'c CREATE "a*b"\r\n') == b"c NO [CANNOT] Invalid mailbox name\r\n"
    assert c.send(b"d DELETE INBOX\r\n") == b"d NO [CANNOT] INBOX cannot be deleted\r\n"
    assert c.send(b"e DELETE nosuch\r\n") == b"e NO [NONEXISTENT] Mailbox doesn't exist: nosuch\r\n"
    assert c.send(b"f CREATE old/child\r\n") == b"f OK CREATE completed\r\n"
    assert c.send(b"g DELETE old\r\n") == b"g NO [INUSE] Mailbox has inferior hierarchical names\r\n"
    assert c.send(b"h RENAME old new\r\n") == b"h OK RENAME completed\r\n"
    assert c.send(b'i LIST "" new*\r\n') == (
        b'* LIST (\\HasChildren) "/" new\r\n* LIST (\\HasNoChildren) "/" new/child\r\ni OK LIST completed\r\n'
    )
    assert c.send(b"j RENAME nosuch x\r\n") == b"j NO [NONEXISTENT] Mailbox doesn't exist: nosuch\r\n"
    assert c.send(b"k RENAME new Sent\r\n") == b"k NO [ALREADYEXISTS] Mailbox already exists\r\n"
    assert c.send(b"l DELETE new/child\r\n") == b"l OK DELETE completed\r\n"


def test_status_append_namespace_id_enable() -> None:
    store = make_store()
    c = client(store)
    c.login()
    sent = store.accounts["alice"].mailboxes["Sent"]
    assert c.send(b'a APPEND Sent (\\Seen $Sent) "05-Mar-2021 09:08:07 +0100" {%d+}\r\n%b\r\n' % (len(SIMPLE), SIMPLE)) == (
        b"a OK [APPENDUID %d 1] APPEND completed\r\n" % sent.uidvalidity
    )
    assert sent.messages[0].flags == {"\\Seen", "$Sent"}
    assert str(sent.messages[0].internal_date) == "2021-03-05 09:08:07+01:00"
    assert c.send(b"b APPEND nosuch {1+}\r\nx\r\n") == b"b NO [TRYCREATE] Mailbox doesn't exist: nosuch\r\n"
    assert c.send(b"c STATUS Sent (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)\r\n") == (
        b"* STATUS Sent (MESSAGES 1 RECENT 1 UIDNEXT 2 UIDVALIDITY %d UNSEEN 0)\r\nc OK STATUS completed\r\n"
        % sent.uidvalidity
    )
    assert c.send(b"d NAMESPACE\r\n") == b'* NAMESPACE (("" "/")) NIL NIL\r\nd OK NAMESPACE completed\r\n'
    assert c.send(b'e ID ("name" "test")\r\n') == b'* ID ("name" "mailmodes" "version" "0.1.0")\r\ne OK ID completed\r\n'
    assert c.send(b"f ENABLE X-NONE\r\n") == b"* ENABLED\r\nf OK ENABLE completed\r\n"
    assert c.send(b"f ENABLE CONDSTORE X-NONE\r\n") == b"* ENABLED CONDSTORE\r\nf OK ENABLE completed\r\n"
    assert c.send(b"f ENABLE CONDSTORE\r\n") == b"* ENABLED\r\nf OK ENABLE completed\r\n"  # already on
    c.select()
    assert c.send(b"g ENABLE CONDSTORE\r\n") == b"g BAD ENABLE is only valid before a mailbox is selected\r\n"


# --- FETCH -------------------------------------------------------------------------------------


def test_fetch_simple_items() -> None:
    c = selected()
    assert c.send(b"a FETCH 1 (UID FLAGS INTERNALDATE RFC822.SIZE)\r\n") == (
        b'* 1 FETCH (UID 1 FLAGS (\\Recent) INTERNALDATE " 1-Feb-2022 10:00:05 +0000" RFC822.SIZE %d)\r\n'
        b"a OK FETCH completed\r\n" % len(SIMPLE)
    )
    assert c.send(b"b FETCH 1 ENVELOPE\r\n") == (
        b'* 1 FETCH (ENVELOPE ("Tue, 01 Feb 2022 10:00:00 +0000" "Hello" (("Alice" NIL "alice" "example.test")) '
        b'(("Alice" NIL "alice" "example.test")) (("Alice" NIL "alice" "example.test")) '
        b'(("Bob" NIL "bob" "example.test")) NIL NIL NIL NIL))\r\nb OK FETCH completed\r\n'
    )
    assert c.send(b"c FETCH 1 (BODY BODYSTRUCTURE)\r\n") == (
        b'* 1 FETCH (BODY ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 19 2) '
        b'BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 19 2 NIL NIL NIL NIL))\r\n'
        b"c OK FETCH completed\r\n"
    )


def test_fetch_body_sections_and_partials() -> None:
    c = selected()
    header, _, text = SIMPLE.partition(b"\r\n\r\n")
    assert c.send(b"a FETCH 1 (BODY.PEEK[HEADER.FIELDS (subject from)] BODY.PEEK[TEXT]<3.4> BODY.PEEK[]<900.5>)\r\n") == (
        b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT FROM)] {52}\r\nFrom: Alice <alice@example.test>\r\nSubject: Hello\r\n\r\n"
        b" BODY[TEXT]<3> {4}\r\nBob, BODY[]<900> {0}\r\n)\r\na OK FETCH completed\r\n"
    )
    assert c.send(b"b FETCH 1 (RFC822.HEADER RFC822.TEXT)\r\n") == (
        b"* 1 FETCH (RFC822.HEADER {%d}\r\n%b\r\n\r\n RFC822.TEXT {%d}\r\n%b FLAGS (\\Seen \\Recent))\r\n"
        b"b OK FETCH completed\r\n" % (len(header) + 4, header, len(text), text)
    )
    assert c.send(b"c FETCH 1 BODY[]\r\n") == (
        b"* 1 FETCH (BODY[] {%d}\r\n%b)\r\nc OK FETCH completed\r\n" % (len(SIMPLE), SIMPLE)
    )


def test_body_fetch_sets_seen_and_reports_it() -> None:
    c = selected()
    assert c.send(b"a FETCH 1 (FLAGS BODY[1])\r\n") == (
        b"* 1 FETCH (FLAGS (\\Seen \\Recent) BODY[1] {19}\r\nHi Bob,\r\nsee you.\r\n)\r\na OK FETCH completed\r\n"
    )
    assert c.send(b"b FETCH 1 RFC822\r\n") == (
        b"* 1 FETCH (RFC822 {%d}\r\n%b)\r\nb OK FETCH completed\r\n" % (len(SIMPLE), SIMPLE)
    )


def test_fetch_sequence_errors_and_uid_ranges() -> None:
    c = selected(messages=3)
    assert c.send(b"a FETCH 4 FLAGS\r\n") == b"a BAD Invalid message sequence number\r\n"
    assert c.send(b"b UID FETCH 9 FLAGS\r\n") == b"b OK FETCH completed\r\n"
    # RFC 3501 6.4.8: 9:* still includes the highest UID.
    assert c.send(b"c UID FETCH 9:* FLAGS\r\n") == b"* 3 FETCH (UID 3 FLAGS (\\Recent))\r\nc OK FETCH completed\r\n"
    assert c.send(b"d FETCH 3,1 UID\r\n") == b"* 1 FETCH (UID 1)\r\n* 3 FETCH (UID 3)\r\nd OK FETCH completed\r\n"
    empty = selected(messages=0)
    assert empty.send(b"e FETCH 1:* FLAGS\r\n") == b"e BAD Invalid message sequence number\r\n"
    assert empty.send(b"f UID FETCH 1:* FLAGS\r\n") == b"f OK FETCH completed\r\n"


# --- STORE, SEARCH, COPY, MOVE, EXPUNGE ------------------------------------------------------


def test_store_variants() -> None:
    c = selected(messages=2)
    assert c.send(b"a STORE 1:2 +FLAGS (\\Seen)\r\n") == (
        b"* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n* 2 FETCH (FLAGS (\\Seen \\Recent))\r\na OK STORE completed\r\n"
    )
    assert c.send(b"b UID STORE 2 -FLAGS (\\Seen)\r\n") == (
        b"* 2 FETCH (UID 2 FLAGS (\\Recent))\r\nb OK STORE completed\r\n"
    )
    assert c.send(b"c STORE 1 FLAGS.SILENT (\\Flagged $Todo)\r\n") == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Todo \\*)] Flags permitted\r\n"
        b"c OK STORE completed\r\n"
    )
    # Keywords keep the spelling they already have in the mailbox.
    assert c.send(b"d STORE 2 +FLAGS ($TODO)\r\n") == b"* 2 FETCH (FLAGS (\\Recent $Todo))\r\nd OK STORE completed\r\n"
    assert c.send(b"e FETCH 1:2 FLAGS\r\n") == (
        b"* 1 FETCH (FLAGS (\\Flagged \\Recent $Todo))\r\n* 2 FETCH (FLAGS (\\Recent $Todo))\r\ne OK FETCH completed\r\n"
    )


def test_search_keys() -> None:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    inbox.append(SIMPLE, ["\\Seen", "\\Answered"], WHEN)
    inbox.append(SIMPLE.replace(b"Hello", b"=?utf-8?q?Gr=C3=BC=C3=9Fe?="), ["$Junk"], WHEN)
    inbox.append(SIMPLE.replace(b"see you", b"bye now") + b"x" * 500, ["\\Deleted"], WHEN)
    c = client(store)
    c.login()
    c.select()
    inbox.claim_recent()

    def search(query: bytes) -> bytes:
        reply = c.send(b"s SEARCH " + query + b"\r\n")
        assert reply.endswith(b"s OK SEARCH completed\r\n"), reply
        return reply.split(b"\r\n")[0]

    assert search(b"ALL") == b"* SEARCH 1 2 3"
    assert search(b"SEEN") == b"* SEARCH 1"
    assert search(b"UNSEEN") == b"* SEARCH 2 3"
    assert search(b"ANSWERED UNDELETED") == b"* SEARCH 1"
    assert search(b"KEYWORD $junk") == b"* SEARCH 2"
    assert search(b"UNKEYWORD $Junk") == b"* SEARCH 1 3"
    assert search(b"SUBJECT gr\xc3\xbc\xc3\x9fe") == b"* SEARCH 2"
    assert search(b"CHARSET UTF-8 SUBJECT {6+}\r\nGR\xc3\x9c\xc3\x9f") == b"* SEARCH 2"
    assert search(b"FROM ALICE TO bob@example") == b"* SEARCH 1 2 3"
    assert search(b"CC alice") == b"* SEARCH"
    assert search(b'HEADER Subject ""') == b"* SEARCH 1 2 3"
    assert search(b"BODY bye") == b"* SEARCH 3"
    assert search(b"TEXT hello") == b"* SEARCH 1 3"
    assert search(b"LARGER 200") == b"* SEARCH 3"
    assert search(b"SMALLER 200") == b"* SEARCH 1 2"
    assert search(b"OR SEEN DELETED") == b"* SEARCH 1 3"
    assert search(b"NOT (SEEN) 2:*") == b"* SEARCH 2 3"
    assert search(b"UID 2,3 NOT UID 3") == b"* SEARCH 2"
    assert search(b"ON 1-Feb-2022 SENTON 1-Feb-2022") == b"* SEARCH 1 2 3"
    assert search(b"BEFORE 1-Feb-2022") == b"* SEARCH"
    assert search(b"SINCE 2-Feb-2022") == b"* SEARCH"
    assert search(b"SENTBEFORE 2-Feb-2022 SENTSINCE 1-Feb-2022") == b"* SEARCH 1 2 3"
    assert search(b"RECENT") == b"* SEARCH 1 2 3"
    assert search(b"NEW") == b"* SEARCH 2 3"
    assert search(b"OLD") == b"* SEARCH"
    assert search(b"9") == b"* SEARCH"
    assert c.send(b"u UID SEARCH 2:3 DELETED\r\n") == b"* SEARCH 3\r\nu OK SEARCH completed\r\n"
    assert c.send(b"v SEARCH CHARSET KOI8-R ALL\r\n") == b"v NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n"


def test_copy_move_and_uidplus() -> None:
    store = make_store()
    c = selected(store, messages=3)
    trash = store.accounts["alice"].mailboxes["Trash"]
    v = trash.uidvalidity
    assert c.send(b"a COPY 1:2 Trash\r\n") == b"a OK [COPYUID %d 1:2 1:2] COPY completed\r\n" % v
    assert c.send(b"b UID COPY 3 nosuch\r\n") == b"b NO [TRYCREATE] Mailbox doesn't exist: nosuch\r\n"
    assert c.send(b"c UID COPY 7 Trash\r\n") == b"c OK No messages found\r\n"
    assert c.send(b"d MOVE 2 Trash\r\n") == (
        b"* OK [COPYUID %d 2 3] Moved UIDs\r\n* 2 EXPUNGE\r\nd OK MOVE completed\r\n" % v
    )
    assert c.send(b"e UID MOVE 1,3 Trash\r\n") == (
        b"* OK [COPYUID %d 1,3 4:5] Moved UIDs\r\n* 1 EXPUNGE\r\n* 1 EXPUNGE\r\ne OK MOVE completed\r\n" % v
    )
    assert [m.uid for m in trash.messages] == [1, 2, 3, 4, 5]


def test_copy_into_the_selected_mailbox_reports_exists() -> None:
    c = selected(messages=1)
    assert c.send(b"a COPY 1 INBOX\r\n").startswith(b"* 2 EXISTS\r\n* 2 RECENT\r\na OK [COPYUID ")


def test_expunge_and_uid_expunge_and_close() -> None:
    store = make_store()
    c = selected(store, messages=5)
    assert c.send(b"a STORE 2,3,5 +FLAGS.SILENT (\\Deleted)\r\n") == b"a OK STORE completed\r\n"
    assert c.send(b"b UID EXPUNGE 3:4\r\n") == b"* 3 EXPUNGE\r\nb OK EXPUNGE completed\r\n"
    # RFC 3501 example: each EXPUNGE renumbers what follows.
    assert c.send(b"c EXPUNGE\r\n") == b"* 2 EXPUNGE\r\n* 3 EXPUNGE\r\nc OK EXPUNGE completed\r\n"
    assert c.send(b"d UID SEARCH ALL\r\n") == b"* SEARCH 1 4\r\nd OK SEARCH completed\r\n"
    c.send(b"e STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    assert c.send(b"f CLOSE\r\n") == b"f OK CLOSE completed\r\n"
    assert [m.uid for m in store.accounts["alice"].inbox.messages] == [4]
    assert c.send(b"g NOOP\r\n") == b"g OK NOOP completed\r\n"


def test_unselect_leaves_the_mailbox_without_expunging() -> None:
    store = make_store()
    c = selected(store, messages=2)
    c.send(b"a STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
    assert c.send(b"b UNSELECT\r\n") == b"b OK UNSELECT completed\r\n"
    assert [m.uid for m in store.accounts["alice"].inbox.messages] == [1, 2]
    assert c.send(b"c FETCH 1 FLAGS\r\n") == b"c BAD FETCH is not valid in the authenticated state\r\n"
    assert c.send(b"d UNSELECT\r\n") == b"d BAD UNSELECT is not valid in the authenticated state\r\n"
    assert c.send(b"e UNSELECT now\r\n").startswith(b"e BAD ")


# --- Several sessions on one mailbox -------------------------------------------------------


def test_other_sessions_changes_are_reported_on_noop() -> None:
    store = make_store()
    one = selected(store, messages=3)
    two = client(store)
    two.login()
    two.select()
    assert two.send(b"a STORE 1 +FLAGS (\\Flagged)\r\n") == b"* 1 FETCH (FLAGS (\\Flagged))\r\na OK STORE completed\r\n"
    two.send(b"b STORE 2 +FLAGS.SILENT (\\Deleted)\r\nc EXPUNGE\r\n")
    store.accounts["alice"].inbox.append(SIMPLE)
    assert one.send(b"x NOOP\r\n") == (
        b"* 2 EXPUNGE\r\n* 3 EXISTS\r\n* 3 RECENT\r\n* 1 FETCH (FLAGS (\\Flagged \\Recent))\r\nx OK NOOP completed\r\n"
    )
    assert one.send(b"y NOOP\r\n") == b"y OK NOOP completed\r\n"


def test_no_expunge_during_fetch_store_search_but_with_uid_forms() -> None:
    store = make_store()
    one = selected(store, messages=3)
    inbox = store.accounts["alice"].inbox
    inbox.expunge([2])
    # RFC 3501 7.4.1: the client's numbering must not change under a FETCH, STORE or SEARCH.
    assert one.send(b"a FETCH 3 UID\r\n") == b"* 3 FETCH (UID 3)\r\na OK FETCH completed\r\n"
    assert one.send(b"b SEARCH ALL\r\n") == b"* SEARCH 1 2 3\r\nb OK SEARCH completed\r\n"
    # RFC 2180 4.2.1: the expunged message is skipped, the STORE succeeds.
    assert one.send(b"c STORE 2 +FLAGS (\\Seen)\r\n") == b"c OK STORE completed\r\n"
    assert one.send(b"d FETCH 2 BODY.PEEK[HEADER.FIELDS (SUBJECT)]\r\n") == (
        b"* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: Hello\r\n\r\n)\r\nd OK FETCH completed\r\n"
    )
    assert one.send(b"e UID FETCH 3 UID\r\n") == b"* 3 FETCH (UID 3)\r\n* 2 EXPUNGE\r\ne OK FETCH completed\r\n"


def test_idle_reports_changes_as_they_happen() -> None:
    store = make_store()
    c = selected(store, messages=1)
    inbox = store.accounts["alice"].inbox
    assert c.send(b"a IDLE\r\n") == b"+ idling\r\n"
    assert c.wakes == 0
    inbox.append(SIMPLE)
    assert c.wakes == 1
    assert c.wake() == b"* 2 EXISTS\r\n* 2 RECENT\r\n"
    inbox.set_flags(inbox.messages[0], {"\\Seen"})
    inbox.expunge([2])
    assert c.wake() == b"* 2 EXPUNGE\r\n* 1 FETCH (FLAGS (\\Seen \\Recent))\r\n"
    assert c.wake() == b""
    assert c.send(b"DONE\r\n") == b"a OK IDLE terminated\r\n"
    inbox.append(SIMPLE)
    assert c.wakes == 3  # outside IDLE no wake-ups; the next command reports instead
    assert c.wake() == b""
    assert c.send(b"b IDLE\r\nnope\r\n") == b"* 2 EXISTS\r\n* 2 RECENT\r\n+ idling\r\nb BAD Expected DONE to end IDLE\r\n"


def test_idle_in_authenticated_state_and_logout_unwatches() -> None:
    store = make_store()
    c = client(store)
    c.login()
    assert c.send(b"a IDLE\r\ndone\r\n") == b"+ idling\r\na OK IDLE terminated\r\n"
    c.select()
    assert c.send(b"b LOGOUT\r\n") == b"* BYE Logging out\r\nb OK Logout completed\r\n"
    assert c.actions == [Close()]
    store.accounts["alice"].inbox.append(SIMPLE)  # no watcher left to call
    assert c.wakes == 0


def test_new_keyword_from_another_session_is_announced() -> None:
    store = make_store()
    one = selected(store, messages=1)
    two = client(store)
    two.login()
    two.select()
    two.send(b"a STORE 1 +FLAGS ($Important)\r\n")
    assert one.send(b"b NOOP\r\n") == (
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important)\r\n"
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Important \\*)] Flags permitted\r\n"
        b"* 1 FETCH (FLAGS (\\Recent $Important))\r\nb OK NOOP completed\r\n"
    )


def test_lsub_lists_unsubscribed_parents_as_noselect() -> None:
    # The scenario of imaptest's "subscribe" script (RFC 3501 6.3.9).
    c = client()
    c.login()
    for name in (b"box/", b"box/test", b"box/test2/", b"box/test3/", b"box/test2/test", b"box/test3/test3"):
        assert c.send(b"c CREATE " + name + b"\r\n") == b"c OK CREATE completed\r\n"
    for name in (b"box/test", b"box/test2/test", b"box/test3/test3"):
        assert c.send(b"s SUBSCRIBE " + name + b"\r\n") == b"s OK SUBSCRIBE completed\r\n"
    assert c.send(b'l LSUB "" box/%\r\n') == (
        b'* LSUB () "/" box/test\r\n* LSUB (\\Noselect) "/" box/test2\r\n* LSUB (\\Noselect) "/" box/test3\r\n'
        b"l OK LSUB completed\r\n"
    )
    assert c.send(b'l LSUB "" *test\r\n') == (
        b'* LSUB () "/" box/test\r\n* LSUB () "/" box/test2/test\r\nl OK LSUB completed\r\n'
    )
    c.send(b"u UNSUBSCRIBE box/test\r\nu UNSUBSCRIBE box/test2/test\r\n")
    assert c.send(b'l LSUB "" box/*\r\n') == b'* LSUB () "/" box/test3/test3\r\nl OK LSUB completed\r\n'


def test_client_text_echoed_in_a_reply_cannot_inject_a_line() -> None:
    c = client()
    c.login()
    assert c.send(b"a SELECT {10+}\r\nx\r\n* OK yo\r\n") == b"a NO [NONEXISTENT] Mailbox doesn't exist: x  * OK yo\r\n"


def test_address_search_sees_through_comments_and_display_forms() -> None:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    inbox.append(b"From: <user (comment)@ (comment) example.org>\r\nTo: group: a@example.org, b@example.org;\r\n\r\nx\r\n")
    inbox.append(b"From: user@example.org (Real Name)\r\nTo: c@example.org\r\n\r\nx\r\n")
    c = client(store)
    c.login()
    c.select()
    assert c.send(b"a SEARCH FROM user@example.org\r\n") == b"* SEARCH 1 2\r\na OK SEARCH completed\r\n"
    assert c.send(b'b SEARCH FROM "real name"\r\n') == b"* SEARCH 2\r\nb OK SEARCH completed\r\n"
    assert c.send(b"c SEARCH TO group\r\n") == b"* SEARCH 1\r\nc OK SEARCH completed\r\n"
    assert c.send(b"d SEARCH TO b@example\r\n") == b"* SEARCH 1\r\nd OK SEARCH completed\r\n"


def test_literal_of_an_unknown_command_is_refused_unread() -> None:
    c = client()
    assert c.send(b"a XYZZY {5}\r\n") == b"a BAD Unknown command\r\n"
    assert c.send(b"b NOOP\r\n") == b"b OK NOOP completed\r\n"


SCRIPT = (
    b"a LOGIN {5}\r\nalice {14+}\r\nalice-password\r\n"
    b"b SELECT INBOX\r\n"
    b"c APPEND INBOX (\\Seen) {19+}\r\nSubject: x\r\n\r\nbody\r\n\r\n"
    b"d UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n"
    b"e SEARCH CHARSET UTF-8 SUBJECT {1}\r\nx\r\n"
    b"f IDLE\r\nDONE\r\n"
    b"g AUTHENTICATE PLAIN\r\n"
    b"h LOGOUT\r\n"
)


def run_script(pieces: list[bytes]) -> bytes:
    c = client()
    c.greeting()
    replies = b"".join(c.send(piece) for piece in pieces)
    return re.sub(rb"(UIDVALIDITY|APPENDUID) \d+", rb"\1 n", replies)  # new store, new UIDVALIDITY


def test_pipelined_or_split_anywhere_the_replies_are_the_same() -> None:
    whole = run_script([SCRIPT])
    assert whole.endswith(b"g BAD AUTHENTICATE is not valid in the selected state\r\n"
                          b"* BYE Logging out\r\nh OK Logout completed\r\n")
    assert whole.count(b"+ Ready for literal data\r\n") == 2
    assert run_script([bytes([byte]) for byte in SCRIPT]) == whole
    for cut in range(1, len(SCRIPT), 7):
        assert run_script([SCRIPT[:cut], SCRIPT[cut:]]) == whole, cut


def test_recent_stays_with_the_session_across_reselect() -> None:
    store = make_store()
    store.accounts["alice"].inbox.append(SIMPLE)
    c = client(store)
    c.login()
    assert b"* 1 RECENT\r\n" in c.select()
    assert c.send(b"a SELECT Sent\r\n").startswith(b"* OK [CLOSED] Previous mailbox closed\r\n* FLAGS")
    assert b"* 1 RECENT\r\n" in c.select()
    assert c.send(b"b FETCH 1 FLAGS\r\n") == b"* 1 FETCH (FLAGS (\\Recent))\r\nb OK FETCH completed\r\n"
    other = client(store)
    other.login()
    assert b"* 0 RECENT\r\n" in other.select()
