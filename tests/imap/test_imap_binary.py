"""BINARY (RFC 3516): decoded parts, sizes, literal8, UNKNOWN-CTE, binary APPEND. Exact replies."""

from __future__ import annotations

from imap.imap_harness import WHEN, Client, client, make_store
from mailmodes.protocols.imap.message import decode_quoted_printable

MESSAGE = (
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
    b"--b\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8AIHdvcmxk\r\n"
    b"--b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9  \r\nsoft=\r\nbreak\r\n"
    b"--b\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n"
    b"--b--\r\n"
)


def selected(data: bytes = MESSAGE) -> Client:
    store = make_store()
    store.accounts["alice"].inbox.append(data, internal_date=WHEN)
    c = client(store)
    c.login()
    c.select()
    return c


def test_quoted_printable_as_rfc_2045_reads_it() -> None:
    assert decode_quoted_printable(b"hello  \r\nbar=\r\n\r\nfoo\t= \r\n=62 =zz\r\n") == (
        b"hello\r\nbar\r\nfoo\tb =zz\r\n"
    )


def test_binary_fetch_decodes_parts() -> None:
    c = selected()
    assert c.send(b"a FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1] BINARY.PEEK[2]<2.6>)\r\n") == (
        b"* 1 FETCH (BINARY.SIZE[1] 12 BINARY[1] ~{12}\r\nhello\0 world BINARY[2]<2> {6}\r\nf\xc3\xa9\r\ns)\r\n"
        b"a OK FETCH completed\r\n"
    )
    assert c.send(b"b FETCH 1 (BINARY.SIZE[2] BINARY.PEEK[9] BINARY.SIZE[])\r\n") == (
        b"* 1 FETCH (BINARY.SIZE[2] 16 BINARY[9] {0}\r\n BINARY.SIZE[] %d)\r\nb OK FETCH completed\r\n" % len(MESSAGE)
    )
    assert c.send(b"c FETCH 1 (BINARY.PEEK[3])\r\n") == b"c NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding\r\n"
    assert c.send(b"d FETCH 1 (BINARY[1.MIME])\r\n") == b"d BAD Expected a number\r\n"
    # BINARY (not .PEEK) sets \Seen, as BODY[] does.
    assert c.send(b"e FETCH 1 (BINARY[2]<0.3>)\r\n") == (
        b"* 1 FETCH (BINARY[2]<0> {3}\r\ncaf FLAGS (\\Seen \\Recent))\r\ne OK FETCH completed\r\n"
    )


def test_binary_append_is_stored_as_base64_and_fetched_back_as_sent() -> None:
    c = selected(b"Subject: empty\r\n\r\n")
    message = (
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        b"\x00\xff raw\r\n"
    )
    assert c.send(b"a APPEND INBOX ~{%d+}\r\n" % len(message) + message + b"\r\n").endswith(b"APPEND completed\r\n")
    assert c.send(b"b FETCH 2 (BODY.PEEK[] BINARY.PEEK[1])\r\n") == (
        b"* 2 FETCH (BODY[] {89}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"AP8gcmF3DQo= BINARY[1] ~{8}\r\n\x00\xff raw\r\n)\r\nb OK FETCH completed\r\n"
    )


# --- MULTIAPPEND (RFC 3502) -----------------------------------------------------------------


def test_multiappend_appends_all_or_nothing() -> None:
    store = make_store()
    c = client(store, max_message_size=10)
    c.login()
    trash = store.accounts["alice"].mailboxes["Trash"]
    v = trash.uidvalidity
    assert c.send(b"a APPEND Trash (\\Seen) {2+}\r\nm1 {2+}\r\nm2 (\\Flagged) {2+}\r\nm3\r\n") == (
        b"a OK [APPENDUID %d 1:3] APPEND completed\r\n" % v
    )
    assert [(m.data, sorted(m.flags)) for m in trash.messages] == [
        (b"m1", ["\\Seen"]), (b"m2", []), (b"m3", ["\\Flagged"])
    ]
    # One message over the limit: refused before its literal is sent, and none of them is kept.
    assert c.send(b"b APPEND Trash {2+}\r\nm4 {11}\r\n") == b"b NO [TOOBIG] Literal too big (at most 10 octets)\r\n"
    assert c.send(b"c APPEND Trash {2+}\r\nm4 {2+}\r\nm5 {2+}\r\nm6") == b""
    assert c.send(b" (\\Bogus) {1+}\r\nx\r\n") == b"c BAD Invalid system flag \\BOGUS\r\n"
    assert len(trash.messages) == 3


# --- CATENATE (RFC 4469) --------------------------------------------------------------------


def test_catenate_joins_text_and_parts_of_stored_messages() -> None:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    inbox.append(MESSAGE, internal_date=WHEN)
    c = client(store)
    c.login()
    trash = store.accounts["alice"].mailboxes["Trash"]
    v, t = inbox.uidvalidity, trash.uidvalidity
    url = b'"/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=2.MIME"' % v
    assert c.send(b"a APPEND Trash CATENATE (TEXT {8+}\r\nSubject:" + b" URL " + url + b" TEXT {4+}\r\nbody)\r\n") == (
        b"a OK [APPENDUID %d 1] APPEND completed\r\n" % t
    )
    assert trash.messages[0].data == b"Subject:Content-Transfer-Encoding: quoted-printable\r\n\r\nbody"
    assert c.send(b'b APPEND Trash CATENATE (URL "/inbox/;uid=1/;partial=2.3") CATENATE (URL /INBOX/;UID=1)\r\n') == (
        b"b OK [APPENDUID %d 2:3] APPEND completed\r\n" % t
    )
    assert [m.data for m in trash.messages[1:]] == [MESSAGE[2:5], MESSAGE]
    for bad in (b'"/INBOX;UIDVALIDITY=1/;UID=1"', b'"/INBOX/;UID=9"', b'"/Nope/;UID=1"', b'"/INBOX/;UID=1/;SECTION=X"',
                b'"imap://host/INBOX/;UID=1"'):
        assert c.send(b"c APPEND Trash CATENATE (TEXT {1+}\r\nx URL " + bad + b")\r\n") == (
            b"c NO [BADURL " + bad.strip(b'"') + b"] CATENATE URL cannot be used\r\n"
        )
    assert len(trash.messages) == 3
