"""UTF8=ACCEPT (RFC 6855, RFC 9755) and modified UTF-7 mailbox names (RFC 3501 5.1.3): the store
keeps a name as text; a client names it in modified UTF-7 until it sends ENABLE UTF8=ACCEPT, and
in UTF-8 quoted strings after. Exact replies."""

from __future__ import annotations

from imap.imap_harness import Client, client, make_store
from mailmodes.protocols.imap import mutf7
from mailmodes.store import Store

GRUESSE = "Subject: Grüße\r\n\r\nbody here\r\n".encode()


def two_clients() -> tuple[Store, Client, Client]:
    """A legacy client and one that enabled UTF8=ACCEPT, same account."""
    store = make_store()
    legacy, utf8 = client(store), client(store)
    legacy.login()
    utf8.login()
    assert utf8.send(b"e ENABLE UTF8=ACCEPT\r\n") == b"* ENABLED UTF8=ACCEPT\r\ne OK ENABLE completed\r\n"
    assert utf8.send(b"e ENABLE UTF8=ACCEPT\r\n") == b"* ENABLED\r\ne OK ENABLE completed\r\n"
    return store, legacy, utf8


def test_modified_utf7_round_trips() -> None:
    for name, spelled in (("Entwürfe", "Entw&APw-rfe"),
                          ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
                          ("A&B", "A&-B"), ("😀", "&2D3eAA-"), ("plain", "plain")):
        assert mutf7.encode(name) == spelled
        assert mutf7.decode(spelled) == name
    # Not modified UTF-7: an unterminated shift, bad base64, printable ASCII shifted.
    assert mutf7.decode("A&B") is None
    assert mutf7.decode("&A!-") is None
    assert mutf7.decode("&AGE-") is None
    assert mutf7.encode("x\udcff") is None  # octets that were not UTF-8


def test_one_name_two_spellings() -> None:
    store, legacy, utf8 = two_clients()
    assert legacy.send(b"a CREATE Entw&APw-rfe\r\n") == b"a OK CREATE completed\r\n"
    assert store.accounts["alice"].mailbox("Entwürfe") is not None
    assert utf8.send('b CREATE "日本語/台北"\r\n'.encode()) == b"b OK CREATE completed\r\n"
    assert legacy.send(b'c LIST "" *\r\n') == (
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n* LIST (\\HasNoChildren \\Drafts) "/" Drafts\r\n'
        b'* LIST (\\HasNoChildren) "/" Entw&APw-rfe\r\n* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n'
        b'* LIST (\\HasNoChildren \\Sent) "/" Sent\r\n* LIST (\\HasNoChildren \\Trash) "/" Trash\r\n'
        b'* LIST (\\HasChildren) "/" &ZeVnLIqe-\r\n* LIST (\\HasNoChildren) "/" &ZeVnLIqe-/&U,BTFw-\r\n'
        b"c OK LIST completed\r\n"
    )
    assert legacy.send(b'd LIST "" &ZeVnLIqe-/%\r\n') == (
        b'* LIST (\\HasNoChildren) "/" &ZeVnLIqe-/&U,BTFw-\r\nd OK LIST completed\r\n'
    )
    assert utf8.send(b'e LIST "" %\xe8\xaa\x9e*\r\n') == (
        '* LIST (\\HasChildren) "/" "日本語"\r\n* LIST (\\HasNoChildren) "/" "日本語/台北"\r\n'
        "e OK LIST completed\r\n".encode()
    )
    assert utf8.send('f STATUS "Entwürfe" (MESSAGES)\r\n'.encode()) == (
        '* STATUS "Entwürfe" (MESSAGES 0)\r\nf OK STATUS completed\r\n'.encode()
    )
    assert legacy.send(b"g SELECT &ZeVnLIqe-/&U,BTFw-\r\n").endswith(b"g OK [READ-WRITE] SELECT completed\r\n")
    # A name whose octets were not UTF-8 (sent raw by a legacy client) goes out as a literal.
    assert legacy.send(b"h CREATE {4+}\r\nx\xffyz\r\n") == b"h OK CREATE completed\r\n"
    assert utf8.send(b'i LIST "" x*\r\n') == b'* LIST (\\HasNoChildren) "/" {4}\r\nx\xffyz\r\ni OK LIST completed\r\n'


def test_utf8_strings_need_valid_utf8_and_names_net_unicode() -> None:
    _, legacy, utf8 = two_clients()
    assert utf8.send(b'a STATUS "Entw\xfcrfe" (MESSAGES)\r\n') == b"a BAD Invalid UTF-8 in a quoted string\r\n"
    for name in ("a\u2028b", "a\u0085b", "a\x7fb"):
        assert utf8.send(f'b CREATE "{name}"\r\n'.encode()) == b"b NO [CANNOT] Invalid mailbox name\r\n"
    # Before ENABLE, eight-bit octets stay accepted as they are (as Dovecot does).
    assert legacy.send(b'c CREATE "caf\xc3\xa9"\r\n') == b"c OK CREATE completed\r\n"
    assert legacy.send(b'd LIST "" caf*\r\n') == b'* LIST (\\HasNoChildren) "/" caf&AOk-\r\nd OK LIST completed\r\n'


def test_search_charset_and_append_headers() -> None:
    _, legacy, utf8 = two_clients()
    assert legacy.send(b"a APPEND INBOX {%d+}\r\n%b\r\n" % (len(GRUESSE), GRUESSE)) == (
        b"a NO [CANNOT] 8-bit header fields need ENABLE UTF8=ACCEPT\r\n"
    )
    plain = b"Subject: Gruesse\r\n\r\nbody: gr\xc3\xbc\xc3\x9fe\r\n"  # 8-bit in the body is fine
    assert legacy.send(b"b APPEND INBOX {%d+}\r\n%b\r\n" % (len(plain), plain)).startswith(b"b OK [APPENDUID ")
    assert utf8.send(b"c APPEND INBOX {%d+}\r\n%b\r\n" % (len(GRUESSE), GRUESSE)).startswith(b"c OK [APPENDUID ")
    utf8.select()
    assert utf8.send(b"d SEARCH CHARSET UTF-8 ALL\r\n") == b"d BAD No CHARSET after ENABLE UTF8=ACCEPT\r\n"
    assert utf8.send('e SEARCH SUBJECT "grüße"\r\n'.encode()) == b"* SEARCH 2\r\ne OK SEARCH completed\r\n"
    # SORT keeps its charset argument.
    assert utf8.send(b"f UID SORT (SUBJECT) UTF-8 ALL\r\n") == b"* SORT 1 2\r\nf OK SORT completed\r\n"
