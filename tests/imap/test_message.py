"""ENVELOPE, BODYSTRUCTURE, BODY[section] and the SEARCH helpers, byte for byte.

Expected values come from RFC 3501 (the 7.4.2 BODY example and the 6.4.5 part-numbering
example) and from Dovecot's own lib-imap test vectors, which these functions reproduce exactly.
"""

from __future__ import annotations

import datetime
import logging
import random
import time

import pytest

from mailmodes.protocols.imap.message import (
    bodystructure,
    envelope,
    header_values,
    nstring,
    section,
    sent_date,
    text_contains,
)


def crlf(*lines: str) -> bytes:
    """A message from lines, each ended with CRLF."""
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# nstring


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, b"NIL"),
        ("", b'""'),
        ("plain text", b'"plain text"'),
        (b'say "hi" \\o/', b'"say \\"hi\\" \\\\o/"'),
        ("Grüße", b"{7}\r\nGr\xc3\xbc\xc3\x9fe"),
        (b"two\r\nlines", b"{10}\r\ntwo\r\nlines"),
        (b"nul\x00", b"{4}\r\nnul\x00"),
    ],
)
def test_nstring(value: bytes | str | None, expected: bytes) -> None:
    assert nstring(value) == expected


# ---------------------------------------------------------------------------------------------
# A simple text mail

SIMPLE = crlf(
    "Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)",
    "From: Terry Gray <gray@cac.washington.edu>",
    "Subject: IMAP4rev1 WG mtg summary and minutes",
    "To: imap@cac.washington.edu",
    "cc: minutes@CNRI.Reston.VA.US,",
    "    John Klensin <KLENSIN@MIT.EDU>",
    "Message-Id: <B27397-0100000@cac.washington.edu>",
    "",
    "Hello,",
    "the minutes follow.",
)


def test_simple_envelope_matches_rfc3501_example() -> None:
    # RFC 3501 7.4.2's ENVELOPE example, for the header it was made from.
    assert envelope(SIMPLE) == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )


def test_simple_bodystructure_and_body() -> None:
    # Body "Hello,\r\nthe minutes follow.\r\n" = 8 + 21 octets, 2 lines.
    assert bodystructure(SIMPLE) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 29 2 NIL NIL NIL NIL)'
    )
    assert bodystructure(SIMPLE, extended=False) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 29 2)'
    )


def test_simple_sections() -> None:
    header, body = SIMPLE.split(b"\r\n\r\n", 1)
    assert section(SIMPLE) is SIMPLE  # BODY[]: no parsing, no copy
    assert section(SIMPLE, (), "HEADER") == header + b"\r\n\r\n"
    assert section(SIMPLE, (), "TEXT") == body == b"Hello,\r\nthe minutes follow.\r\n"
    # A non-multipart message has exactly one part, its body; its MIME header is the header.
    assert section(SIMPLE, (1,)) == body
    assert section(SIMPLE, (1,), "MIME") == header + b"\r\n\r\n"
    assert section(SIMPLE, (2,)) == b""
    assert section(SIMPLE, (1, 1)) == b""
    assert section(SIMPLE, (1,), "HEADER") == b""  # part 1 is not message/rfc822
    assert section(SIMPLE, (), "MIME") == b""  # MIME needs a part number


# ---------------------------------------------------------------------------------------------
# Missing headers, empty messages


def test_missing_headers_are_nil() -> None:
    msg = crlf("Subject: only a subject", "", "body")
    assert envelope(msg) == b'(NIL "only a subject" NIL NIL NIL NIL NIL NIL NIL NIL)'


def test_empty_message() -> None:
    assert envelope(b"") == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert bodystructure(b"") == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
    )
    assert section(b"") == b""
    assert section(b"", (), "HEADER") == b""
    assert section(b"", (), "TEXT") == b""
    assert section(b"", (1,)) == b""


def test_headers_without_body_or_blank_line() -> None:
    msg = b"Subject: no body\r\nFrom: a@b.example\r\n"
    assert bodystructure(msg, extended=False) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
    )
    # RFC 3501 6.4.5: the blank line is included in all header fetches "except in the case of
    # a message which has no body and no blank line".
    assert section(msg, (), "HEADER") == msg
    assert section(msg, (), "HEADER.FIELDS", ("SUBJECT",)) == b"Subject: no body\r\n"
    assert section(msg, (), "TEXT") == b""


def test_header_without_trailing_newline() -> None:
    msg = b"Subject: cut"
    assert envelope(msg) == b'(NIL "cut" NIL NIL NIL NIL NIL NIL NIL NIL)'
    assert section(msg, (), "HEADER") == msg
    assert section(msg, (), "HEADER.FIELDS", ("subject",)) == b"Subject: cut\r\n"


def test_message_without_header() -> None:
    msg = b"\r\njust a body\r\n"
    assert envelope(msg) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert bodystructure(msg, extended=False) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 13 1)'
    )
    assert section(msg, (), "HEADER") == b"\r\n"
    assert section(msg, (), "TEXT") == b"just a body\r\n"


def test_text_that_is_not_a_header_is_body() -> None:
    msg = b"hello there\r\nsecond line\r\n"
    assert envelope(msg) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert bodystructure(msg, extended=False) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 26 2)'
    )
    assert section(msg, (), "TEXT") == msg
    assert section(msg, (), "HEADER") == b"\r\n"


# ---------------------------------------------------------------------------------------------
# Addresses: groups, defaults, several senders, encoded words


def test_group_addresses() -> None:
    # Dovecot src/lib-imap/test-imap-envelope.c, message 4 (converted to CRLF).
    msg = crlf(
        "Date: Thu, 15 Feb 2007 01:02:03 +0200",
        "From: user@domain (Real Name)",
        "To: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;",
        "Cc: group:;, group2: (foo) ;",
        "",
        "body",
    )
    assert envelope(msg) == (
        b'("Thu, 15 Feb 2007 01:02:03 +0200" NIL '
        b'(("Real Name" NIL "user" "domain")) '
        b'(("Real Name" NIL "user" "domain")) '
        b'(("Real Name" NIL "user" "domain")) '
        b'((NIL NIL "group" NIL)(NIL NIL "g1" "d1.org")(NIL NIL "g2" "d2.org")(NIL NIL NIL NIL)'
        b'(NIL NIL "group2" NIL)(NIL NIL "g3" "d3.org")(NIL NIL NIL NIL)) '
        b'((NIL NIL "group" NIL)(NIL NIL NIL NIL)(NIL NIL "group2" NIL)(NIL NIL NIL NIL)) '
        b"NIL NIL NIL)"
    )


def test_undisclosed_recipients_group() -> None:
    msg = crlf("From: a@b.example", "To: undisclosed-recipients:;", "", "x")
    assert envelope(msg) == (
        b"(NIL NIL ((NIL NIL \"a\" \"b.example\")) ((NIL NIL \"a\" \"b.example\")) "
        b"((NIL NIL \"a\" \"b.example\")) "
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL)'
    )


def test_empty_sender_and_reply_to_default_to_from() -> None:
    # Dovecot test-imap-envelope.c message 5: present-but-empty Sender/Reply-To use From.
    msg = crlf(
        "Date: Thu, 15 Feb 2007 01:02:03 +0200",
        "From: user@domain (Real Name)",
        "Sender: ",
        "Reply-To: ",
        "",
        "body",
    )
    assert envelope(msg) == (
        b'("Thu, 15 Feb 2007 01:02:03 +0200" NIL '
        b'(("Real Name" NIL "user" "domain")) (("Real Name" NIL "user" "domain")) '
        b'(("Real Name" NIL "user" "domain")) NIL NIL NIL NIL NIL)'
    )


def test_all_envelope_fields_and_source_route() -> None:
    msg = crlf(
        "Message-ID: <msg@id>",
        "In-Reply-To: <reply@to.id>",
        "Date: Thu, 15 Feb 2007 01:02:03 +0200",
        "Subject: subject header",
        "From: From Real <fromuser@fromdomain.org>",
        "To: To Real <touser@todomain.org>",
        "Cc: Cc Real <ccuser@ccdomain.org>",
        "Bcc: <@route1,@route2:bccuser@bccdomain.org>",
        "Sender: Sender Real <senderuser@senderdomain.org>",
        "Reply-To: ReplyTo Real <replytouser@replytodomain.org>",
        "",
        "body",
    )
    assert envelope(msg) == (
        b'("Thu, 15 Feb 2007 01:02:03 +0200" "subject header" '
        b'(("From Real" NIL "fromuser" "fromdomain.org")) '
        b'(("Sender Real" NIL "senderuser" "senderdomain.org")) '
        b'(("ReplyTo Real" NIL "replytouser" "replytodomain.org")) '
        b'(("To Real" NIL "touser" "todomain.org")) '
        b'(("Cc Real" NIL "ccuser" "ccdomain.org")) '
        b'((NIL "@route1,@route2" "bccuser" "bccdomain.org")) '
        b'"<reply@to.id>" "<msg@id>")'
    )


def test_several_sender_addresses() -> None:
    msg = crlf(
        "From: Alice <alice@example.test>, Bob <bob@example.test>",
        "Sender: secretary@example.test, \"Deputy, Vice\" <deputy@example.test>",
        "",
        "x",
    )
    assert envelope(msg) == (
        b"(NIL NIL "
        b'(("Alice" NIL "alice" "example.test")("Bob" NIL "bob" "example.test")) '
        b'((NIL NIL "secretary" "example.test")("Deputy, Vice" NIL "deputy" "example.test")) '
        b'(("Alice" NIL "alice" "example.test")("Bob" NIL "bob" "example.test")) '
        b"NIL NIL NIL NIL NIL)"
    )


def test_odd_addresses() -> None:
    msg = crlf(
        'To: "john doe"@example.test, John Q. Public <jqp@example.test>, alice,',
        "  <>, broken <x@y.example",
        "",
        "",
    )
    assert envelope(msg) == (
        b"(NIL NIL NIL NIL NIL "
        b'((NIL NIL "\\"john doe\\"" "example.test")'
        b'("John Q. Public" NIL "jqp" "example.test")'
        b'(NIL NIL "alice" "MISSING_DOMAIN")'
        b'(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")'
        b'("broken" NIL "x" "y.example")) NIL NIL NIL NIL)'
    )


def test_encoded_words_stay_raw_in_envelope_and_decode_for_search() -> None:
    msg = crlf(
        "From: =?UTF-8?Q?J=C3=B6rg_M=C3=BCller?= <joerg@example.test>",
        "Subject: =?iso-8859-1?q?Gr=FC=DFe?= =?UTF-8?B?YXVz?= Berlin",
        "",
        "x",
    )
    assert envelope(msg) == (
        b'(NIL "=?iso-8859-1?q?Gr=FC=DFe?= =?UTF-8?B?YXVz?= Berlin" '
        b'(("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "joerg" "example.test")) '
        b'(("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "joerg" "example.test")) '
        b'(("=?UTF-8?Q?J=C3=B6rg_M=C3=BCller?=" NIL "joerg" "example.test")) '
        b"NIL NIL NIL NIL NIL)"
    )
    # RFC 2047 6.2: white space between adjacent encoded words is dropped.
    assert header_values(msg, "subject") == ["Grüßeaus Berlin"]
    assert header_values(msg, "FROM") == ["Jörg Müller <joerg@example.test>"]


def test_eight_bit_headers_become_literals() -> None:
    msg = "Subject: Grüße\r\nFrom: Jörg <j@example.test>\r\n\r\nx".encode("utf-8")
    assert envelope(msg) == (
        b"(NIL {7}\r\nGr\xc3\xbc\xc3\x9fe "
        b'(({5}\r\nJ\xc3\xb6rg NIL "j" "example.test")) '
        b'(({5}\r\nJ\xc3\xb6rg NIL "j" "example.test")) '
        b'(({5}\r\nJ\xc3\xb6rg NIL "j" "example.test")) '
        b"NIL NIL NIL NIL NIL)"
    )
    assert header_values(msg, "Subject") == ["Grüße"]


def test_header_values() -> None:
    msg = crlf(
        "Received: from a",
        "Subject: folded",
        "\tsubject line",
        "received: from b",
        "X-Odd: =?unknown-charset?q?abc?= =?utf-8?b?bad*base64?=",
        "",
        "Subject: not a header, this is the body",
    )
    assert header_values(msg, "RECEIVED") == ["from a", "from b"]
    assert header_values(msg, "subject") == ["folded\tsubject line"]
    assert header_values(msg, "x-odd") == ["abc =?utf-8?b?bad*base64?="]
    assert header_values(msg, "missing") == []


# ---------------------------------------------------------------------------------------------
# BODYSTRUCTURE


def lines_of(total: int, count: int) -> str:
    """count CRLF-terminated lines of "x" adding up to total octets."""
    width, extra = divmod(total - 2 * count, count)
    return "".join("x" * (width + (i < extra)) + "\r\n" for i in range(count))


def test_rfc3501_body_example() -> None:
    # Rebuild the message behind RFC 3501 7.4.2's example "BODY" response.
    first = lines_of(1152, 23)
    second = lines_of(4554, 73)
    msg = (
        crlf(
            "Content-Type: MULTIPART/MIXED; BOUNDARY=\"--==x==--\"",
            "",
            "----==x==--",
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII",
            "Content-Transfer-Encoding: 7BIT",
            "",
        )
        + first.encode()
        + b"\r\n"  # the line ending before a delimiter belongs to the delimiter
        + crlf(
            "----==x==--",
            "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII; NAME=cc.diff",
            "Content-ID: <960723163407.20117h@cac.washington.edu>",
            "Content-Description: Compiser",
            "Content-Transfer-Encoding: BASE64",
            "",
        )
        + second.encode()
        + b"\r\n"
        + crlf("----==x==----")
    )
    assert bodystructure(msg, extended=False) == (
        b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 1152 23)'
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII" "NAME" "cc.diff") '
        b'"<960723163407.20117h@cac.washington.edu>" "Compiser" "BASE64" 4554 73) "MIXED")'
    )


# Dovecot src/lib-imap/test-imap-bodystructure.c: its test message and expected output. Dovecot
# counts sizes with CRLF line endings, so the CRLF form of the message must match exactly.
DOVECOT_MESSAGE = (
    b"From: user@domain.org\n"
    b"Date: Sat, 24 Mar 2007 23:00:00 +0200\n"
    b"Mime-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="foo\n'
    b' bar"\n'
    b"\n"
    b"Root MIME prologue\n"
    b"\n"
    b"--foo bar\n"
    b'Content-Type: text/x-myown; charset=us-ascii; foo="quoted\\"string"\n'
    b"Content-ID: <foo@example.com>\n"
    b"Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\n"
    b"Content-Disposition: inline; foo=bar\n"
    b"Content-Description: hellodescription\n"
    b"Content-Language: en, fi, se\n"
    b"Content-Location: http://example.com/test.txt\n"
    b"\n"
    b"hello\n"
    b"\n"
    b"--foo bar\n"
    b"Content-Type: message/rfc822\n"
    b"\n"
    b"From: sub@domain.org\n"
    b"To: sub-to1@domain.org, sub-to2@domain.org\n"
    b"Date: Sun, 12 Aug 2012 12:34:56 +0300\n"
    b"Subject: submsg\n"
    b'Content-Type: multipart/alternative; boundary="sub1"\n'
    b"\n"
    b"Sub MIME prologue\n"
    b"--sub1\n"
    b"Content-Type: text/html\n"
    b"Content-Transfer-Encoding: 8bit\n"
    b"\n"
    b"<p>Hello world</p>\n"
    b"\n"
    b"--sub1\n"
    b"Content-Type: text/plain\n"
    b"Content-Transfer-Encoding: ?invalid\n"
    b"\n"
    b"Hello another world\n"
    b"\n"
    b"--sub1--\n"
    b"Sub MIME epilogue\n"
    b"\n"
    b"--foo bar--\n"
    b"Root MIME epilogue\n"
)
DOVECOT_SUBMESSAGE_ENVELOPE = (
    b'("Sun, 12 Aug 2012 12:34:56 +0300" "submsg" ((NIL NIL "sub" "domain.org")) '
    b'((NIL NIL "sub" "domain.org")) ((NIL NIL "sub" "domain.org")) '
    b'((NIL NIL "sub-to1" "domain.org")(NIL NIL "sub-to2" "domain.org")) NIL NIL NIL NIL)'
)


def dovecot_bodystructure(sizes: tuple[int, int, int, int]) -> bytes:
    first, message, html, plain = sizes
    return (
        b'(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>" '
        b'"hellodescription" "7bit" %d 1 "Q2hlY2sgSW50ZWdyaXR5IQ==" ("inline" ("foo" "bar")) '
        b'("en" "fi" "se") "http://example.com/test.txt")'
        b'("message" "rfc822" NIL NIL NIL "7bit" %d ' % (first, message)
        + DOVECOT_SUBMESSAGE_ENVELOPE
        + b' (("text" "html" ("charset" "us-ascii") NIL NIL "8bit" %d 1 NIL NIL NIL NIL)'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" %d 1 NIL NIL NIL NIL) '
        b'"alternative" ("boundary" "sub1") NIL NIL NIL) 21 NIL NIL NIL NIL) '
        b'"mixed" ("boundary" "foo bar") NIL NIL NIL)' % (html, plain)
    )


def test_dovecot_bodystructure_vector_crlf() -> None:
    msg = DOVECOT_MESSAGE.replace(b"\n", b"\r\n")
    assert bodystructure(msg) == dovecot_bodystructure((7, 412, 20, 21))
    assert bodystructure(msg, extended=False) == (
        b'(("text" "x-myown" ("charset" "us-ascii" "foo" "quoted\\"string") "<foo@example.com>" '
        b'"hellodescription" "7bit" 7 1)("message" "rfc822" NIL NIL NIL "7bit" 412 '
        + DOVECOT_SUBMESSAGE_ENVELOPE
        + b' (("text" "html" ("charset" "us-ascii") NIL NIL "8bit" 20 1)'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 21 1) "alternative") 21) "mixed")'
    )


def test_bare_lf_message() -> None:
    # Sizes are octets as stored: one fewer per line than the CRLF form; lines count LFs.
    msg = DOVECOT_MESSAGE
    assert bodystructure(msg) == dovecot_bodystructure((6, 391, 19, 20))
    assert section(msg, (1,)) == b"hello\n"
    assert section(msg, (1,), "MIME").endswith(b"Content-Location: http://example.com/test.txt\n\n")
    assert section(msg, (2,), "HEADER.FIELDS", ("subject", "to")) == (
        b"To: sub-to1@domain.org, sub-to2@domain.org\nSubject: submsg\n\n"
    )
    assert section(msg, (2, 1)) == b"<p>Hello world</p>\n"
    assert section(msg, (2, 2), "MIME") == (
        b"Content-Type: text/plain\nContent-Transfer-Encoding: ?invalid\n\n"
    )
    assert section(msg, (), "HEADER").endswith(b' bar"\n\n')
    assert section(msg, (), "HEADER") + section(msg, (), "TEXT") == msg


def test_multipart_alternative() -> None:
    msg = crlf(
        "From: alice@example.test",
        "Subject: both kinds",
        "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="alt"',
        "",
        "This is a multi-part message in MIME format.",
        "--alt",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        "Gr=C3=BC=C3=9Fe",
        "--alt",
        "Content-Type: text/html; charset=utf-8",
        "",
        "<p>Gr&uuml;&szlig;e</p>",
        "",
        "--alt--",
        "",
    )
    assert bodystructure(msg) == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 15 0 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 25 1 NIL NIL NIL NIL) '
        b'"alternative" ("boundary" "alt") NIL NIL NIL)'
    )
    assert bodystructure(msg, extended=False) == (
        b'(("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 15 0)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 25 1) "alternative")'
    )
    assert section(msg, (1,)) == b"Gr=C3=BC=C3=9Fe"
    assert section(msg, (2,)) == b"<p>Gr&uuml;&szlig;e</p>\r\n"
    assert section(msg, (2,), "MIME") == b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    assert section(msg, (3,)) == b""


ATTACHMENT = crlf(
    "From: Alice <alice@example.test>",
    "To: bob@example.test",
    "Subject: the report",
    "MIME-Version: 1.0",
    "Content-Type: multipart/mixed; boundary=\"=_b1\"",
    "",
    "--=_b1",
    "Content-Type: text/plain",
    "",
    "See attached.",
    "",
    "--=_b1",
    "Content-Type: application/pdf; name=\"report.pdf\"",
    "Content-Transfer-Encoding: base64",
    "Content-Disposition: attachment; filename=\"report.pdf\"; size=6",
    "Content-ID: <part2@example.test>",
    "Content-Description: Quarterly report",
    "Content-Language: en-GB",
    "Content-Location: report.pdf",
    "",
    "JVBERi0x",
    "--=_b1",
    "Content-Type: application/octet-stream",
    "Content-Disposition: attachment;",
    " filename*0*=utf-8''%E2%82%AC; filename*1=\" rates.txt\"",
    "",
    "AAAA",
    "--=_b1--",
)


def test_multipart_mixed_with_attachment() -> None:
    assert bodystructure(ATTACHMENT) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 15 1 NIL NIL NIL NIL)'
        b'("application" "pdf" ("name" "report.pdf") "<part2@example.test>" "Quarterly report" '
        b'"base64" 8 NIL ("attachment" ("filename" "report.pdf" "size" "6")) ("en-GB") '
        b'"report.pdf")'
        b'("application" "octet-stream" NIL NIL NIL "7bit" 4 NIL '
        b"(\"attachment\" (\"filename*\" \"utf-8''%E2%82%AC rates.txt\")) NIL NIL) "
        b'"mixed" ("boundary" "=_b1") NIL NIL NIL)'
    )
    assert section(ATTACHMENT, (1,)) == b"See attached.\r\n"
    assert section(ATTACHMENT, (2,)) == b"JVBERi0x"
    assert section(ATTACHMENT, (3,)) == b"AAAA"
    assert section(ATTACHMENT, (2,), "TEXT") == b""  # TEXT needs a message/rfc822 part


# RFC 3501 6.4.5's part-numbering example, as a real message.
NESTED = crlf(
    "From: Outer <outer@example.test>",
    "Subject: nested",
    "MIME-Version: 1.0",
    'Content-Type: MULTIPART/MIXED; boundary="outer"',
    "",
    "preamble",
    "--outer",
    "Content-Type: TEXT/PLAIN; charset=us-ascii",
    "",
    "part 1",
    "--outer",
    "Content-Type: APPLICATION/OCTET-STREAM",
    "Content-Transfer-Encoding: base64",
    "",
    "AAEC",
    "--outer",
    "Content-Type: MESSAGE/RFC822",
    "",
    "From: Inner <inner@example.test>",
    "Subject: inner 3",
    'Content-Type: MULTIPART/MIXED; boundary="in3"',
    "",
    "--in3",
    "Content-Type: TEXT/PLAIN",
    "",
    "part 3.1",
    "--in3",
    "Content-Type: APPLICATION/OCTET-STREAM",
    "",
    "3.2 data",
    "--in3--",
    "",
    "--outer",
    'Content-Type: MULTIPART/MIXED; boundary="four"',
    "",
    "--four",
    "Content-Type: IMAGE/GIF",
    "Content-Transfer-Encoding: base64",
    "",
    "R0lGODlh",
    "--four",
    "Content-Type: MESSAGE/RFC822",
    "",
    "From: Deep <deep@example.test>",
    "Subject: inner 4.2",
    'Content-Type: MULTIPART/MIXED; boundary="in42"',
    "",
    "--in42",
    "Content-Type: TEXT/PLAIN",
    "",
    "part 4.2.1",
    "--in42",
    'Content-Type: MULTIPART/ALTERNATIVE; boundary="alt"',
    "",
    "--alt",
    "Content-Type: TEXT/PLAIN",
    "",
    "part 4.2.2.1",
    "--alt",
    "Content-Type: TEXT/RICHTEXT",
    "",
    "part 4.2.2.2",
    "--alt--",
    "--in42--",
    "--four--",
    "--outer--",
    "epilogue",
)
INNER_3 = crlf(
    "From: Inner <inner@example.test>",
    "Subject: inner 3",
    'Content-Type: MULTIPART/MIXED; boundary="in3"',
    "",
    "--in3",
    "Content-Type: TEXT/PLAIN",
    "",
    "part 3.1",
    "--in3",
    "Content-Type: APPLICATION/OCTET-STREAM",
    "",
    "3.2 data",
    "--in3--",
)
ALTERNATIVE_4_2_2 = crlf(
    "--alt",
    "Content-Type: TEXT/PLAIN",
    "",
    "part 4.2.2.1",
    "--alt",
    "Content-Type: TEXT/RICHTEXT",
    "",
    "part 4.2.2.2",
    "--alt--",
)[:-2]  # the CRLF before "--in42--" belongs to that delimiter


@pytest.mark.parametrize(
    ("part", "kind", "expected"),
    [
        ((1,), None, b"part 1"),
        ((2,), None, b"AAEC"),
        ((3,), None, INNER_3),
        ((3,), "HEADER", INNER_3.split(b"\r\n\r\n")[0] + b"\r\n\r\n"),
        ((3,), "TEXT", INNER_3.split(b"\r\n\r\n", 1)[1]),
        ((3, 1), None, b"part 3.1"),
        ((3, 2), None, b"3.2 data"),
        ((3, 2), "MIME", b"Content-Type: APPLICATION/OCTET-STREAM\r\n\r\n"),
        ((4, 1), None, b"R0lGODlh"),
        ((4, 1), "MIME", b"Content-Type: IMAGE/GIF\r\nContent-Transfer-Encoding: base64\r\n\r\n"),
        (
            (4, 2),
            "HEADER",
            b"From: Deep <deep@example.test>\r\nSubject: inner 4.2\r\n"
            b'Content-Type: MULTIPART/MIXED; boundary="in42"\r\n\r\n',
        ),
        ((4, 2), "HEADER.FIELDS", b"Subject: inner 4.2\r\n\r\n"),
        ((4, 2, 1), None, b"part 4.2.1"),
        ((4, 2, 2), None, ALTERNATIVE_4_2_2),
        ((4, 2, 2, 1), None, b"part 4.2.2.1"),
        ((4, 2, 2, 2), None, b"part 4.2.2.2"),
        ((4, 2, 2, 2), "MIME", b"Content-Type: TEXT/RICHTEXT\r\n\r\n"),
        # nonexistent parts and specifiers that do not apply: empty (RFC 3501 6.4.5)
        ((0,), None, b""),
        ((5,), None, b""),
        ((1, 1), None, b""),
        ((3, 3), None, b""),
        ((4, 2, 3), None, b""),
        ((4, 2, 2, 1, 1), None, b""),
        ((4, 1), "HEADER", b""),
        ((4,), "TEXT", b""),
    ],
)
def test_nested_sections(part: tuple[int, ...], kind: str | None, expected: bytes) -> None:
    fields = ("subject",) if kind == "HEADER.FIELDS" else ()
    assert section(NESTED, part, kind, fields) == expected


def test_nested_bodystructure() -> None:
    inner_3_envelope = (
        b'(NIL "inner 3" (("Inner" NIL "inner" "example.test")) '
        b'(("Inner" NIL "inner" "example.test")) (("Inner" NIL "inner" "example.test")) '
        b"NIL NIL NIL NIL NIL)"
    )
    deep_envelope = (
        b'(NIL "inner 4.2" (("Deep" NIL "deep" "example.test")) '
        b'(("Deep" NIL "deep" "example.test")) (("Deep" NIL "deep" "example.test")) '
        b"NIL NIL NIL NIL NIL)"
    )
    # Octets: the 13 CRLF-ended lines of INNER_3 (188 + 26); the deep message is 21 lines,
    # the last without its CRLF (that one belongs to "--four--"): 291 + 40.
    assert bodystructure(NESTED, extended=False) == (
        b'(("TEXT" "PLAIN" ("charset" "us-ascii") NIL NIL "7bit" 6 0)'
        b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "base64" 4)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7bit" 214 '
        + inner_3_envelope
        + b' (("TEXT" "PLAIN" ("charset" "us-ascii") NIL NIL "7bit" 8 0)'
        b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "7bit" 8) "MIXED") 13)'
        b'(("IMAGE" "GIF" NIL NIL NIL "base64" 8)'
        b'("MESSAGE" "RFC822" NIL NIL NIL "7bit" 331 '
        + deep_envelope
        + b' (("TEXT" "PLAIN" ("charset" "us-ascii") NIL NIL "7bit" 10 0)'
        b'(("TEXT" "PLAIN" ("charset" "us-ascii") NIL NIL "7bit" 12 0)'
        b'("TEXT" "RICHTEXT" ("charset" "us-ascii") NIL NIL "7bit" 12 0) "ALTERNATIVE") '
        b'"MIXED") 20) "MIXED") "MIXED")'
    )
    assert len(INNER_3) == 214


def test_message_rfc822_with_single_part_body() -> None:
    inner = b"Subject: hi\r\n\r\ninner body"
    msg = (
        crlf('Content-Type: multipart/mixed; boundary="b"', "", "--b", "Content-Type: message/rfc822", "")
        + inner
        + crlf("", "--b--")
    )
    # 1 is the message/rfc822 part; 1.1 is the body of the non-multipart message inside it.
    assert section(msg, (1,)) == inner
    assert section(msg, (1, 1)) == b"inner body"
    assert section(msg, (1,), "TEXT") == b"inner body"
    assert section(msg, (1, 1), "MIME") == b"Subject: hi\r\n\r\n"
    assert section(msg, (1, 2)) == b""
    assert bodystructure(msg, extended=False) == (
        b'(("message" "rfc822" NIL NIL NIL "7bit" 25 '
        b'(NIL "hi" NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 10 0) 2) "mixed")'
    )


def test_base64_message_rfc822_is_opaque() -> None:
    msg = crlf(
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: message/rfc822",
        "Content-Transfer-Encoding: base64",
        "",
        "U3ViamVjdDogeA0KDQp4DQo=",
        "--b--",
    )
    assert bodystructure(msg, extended=False) == (
        b'(("message" "rfc822" NIL NIL NIL "base64" 24) "mixed")'
    )
    assert section(msg, (1,), "HEADER") == b""


def test_digest_parts_default_to_message_rfc822() -> None:
    msg = crlf(
        'Content-Type: multipart/digest; boundary="d"',
        "",
        "--d",
        "",
        "Subject: one",
        "",
        "first",
        "--d--",
    )
    assert bodystructure(msg, extended=False) == (
        b'(("message" "rfc822" NIL NIL NIL "7bit" 21 '
        b'(NIL "one" NIL NIL NIL NIL NIL NIL NIL NIL) '
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0) 2) "digest")'
    )
    assert section(msg, (1, 1)) == b"first"


# ---------------------------------------------------------------------------------------------
# HEADER.FIELDS, HEADER.FIELDS.NOT, MIME, TEXT


FIELDS_MSG = crlf(
    "Received: from a",
    "From: alice@example.test",
    "Subject: a folded",
    "  subject",
    "To: bob@example.test",
    "X-Empty:",
    "received: from b",
    "",
    "body",
)


def test_header_fields() -> None:
    # Case-insensitive names, original order and spelling, folding kept, blank line added.
    assert section(FIELDS_MSG, (), "HEADER.FIELDS", ("SUBJECT", "received", "Nope")) == crlf(
        "Received: from a", "Subject: a folded", "  subject", "received: from b", ""
    )
    assert section(FIELDS_MSG, (), "header.fields", ("x-empty",)) == b"X-Empty:\r\n\r\n"
    assert section(FIELDS_MSG, (), "HEADER.FIELDS", ("nope",)) == b"\r\n"


def test_header_fields_not() -> None:
    assert section(FIELDS_MSG, (), "HEADER.FIELDS.NOT", ("received", "SUBJECT", "x-empty")) == (
        crlf("From: alice@example.test", "To: bob@example.test", "")
    )
    assert section(FIELDS_MSG, (), "HEADER.FIELDS.NOT", ()) == section(FIELDS_MSG, (), "HEADER")


def test_mime_and_text_of_parts() -> None:
    assert section(ATTACHMENT, (2,), "MIME") == crlf(
        'Content-Type: application/pdf; name="report.pdf"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="report.pdf"; size=6',
        "Content-ID: <part2@example.test>",
        "Content-Description: Quarterly report",
        "Content-Language: en-GB",
        "Content-Location: report.pdf",
        "",
    )
    assert section(ATTACHMENT, (3,), "MIME") == crlf(
        "Content-Type: application/octet-stream",
        "Content-Disposition: attachment;",
        " filename*0*=utf-8''%E2%82%AC; filename*1=\" rates.txt\"",
        "",
    )
    assert section(NESTED, (3,), "TEXT") == INNER_3.split(b"\r\n\r\n", 1)[1]
    assert section(NESTED, (4, 2), "TEXT").startswith(b"--in42\r\n")
    assert section(NESTED, (4, 2), "TEXT").endswith(b"--in42--")


def test_header_and_text_add_up_to_the_message() -> None:
    for msg in (SIMPLE, ATTACHMENT, NESTED, FIELDS_MSG):
        assert section(msg, (), "HEADER") + section(msg, (), "TEXT") == msg


# ---------------------------------------------------------------------------------------------
# Malformed MIME


def test_multipart_without_boundary_parameter_is_text() -> None:
    msg = crlf("Content-Type: multipart/mixed", "", "--x", "no parts here", "--x--")
    assert bodystructure(msg, extended=False) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 27 3)'
    )
    assert section(msg, (1,)) == section(msg, (), "TEXT")


def test_multipart_whose_boundary_never_appears_is_text() -> None:
    msg = crlf('Content-Type: multipart/mixed; boundary="nowhere"', "", "just text", "--else")
    assert bodystructure(msg) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 19 2 NIL NIL NIL NIL)'
    )


def test_unterminated_multipart_runs_to_the_end() -> None:
    msg = crlf('Content-Type: multipart/mixed; boundary="b"', "", "--b", "", "one", "--b", "", "two")
    assert bodystructure(msg, extended=False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0)'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 1) "mixed")'
    )
    assert section(msg, (2,)) == b"two\r\n"


def test_boundary_with_transport_padding_and_empty_parts() -> None:
    msg = crlf('Content-Type: multipart/mixed; boundary=b', "", "--b  ", "--b", "", "x", "--b-- ", "tail")
    assert bodystructure(msg, extended=False) == (
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0) "mixed")'
    )
    assert section(msg, (1,)) == b""
    assert section(msg, (1,), "MIME") == b""
    assert section(msg, (2,)) == b"x"


def test_bad_content_type_and_encoding_fall_back_to_defaults() -> None:
    msg = crlf("Content-Type: garbage", "Content-Transfer-Encoding: ?x", "", "x")
    assert bodystructure(msg) == (
        b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 1 NIL NIL NIL NIL)'
    )


def test_eight_bit_parameters_are_literals() -> None:
    msg = "Content-Type: text/plain; charset=utf-8; name=\"€.txt\"\r\n\r\nx".encode("utf-8")
    assert bodystructure(msg, extended=False) == (
        b'("text" "plain" ("charset" "utf-8" "name" {7}\r\n\xe2\x82\xac.txt) NIL NIL "7bit" 1 0)'
    )


def test_never_raises_and_never_falls_back_on_damaged_mail(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mailmodes.protocols.imap.message")
    rng = random.Random(3501)
    samples = [NESTED[:cut] for cut in range(0, len(NESTED), 7)]
    samples += [DOVECOT_MESSAGE[:cut] for cut in range(0, len(DOVECOT_MESSAGE), 11)]
    for _ in range(150):
        damaged = bytearray(NESTED)
        for _ in range(8):
            damaged[rng.randrange(len(damaged))] = rng.choice(b'\r\n:;"()<>@,-\\= \x00\xff')
        samples.append(bytes(damaged))
    samples += [bytes(rng.randrange(256) for _ in range(200)) for _ in range(50)]
    for msg in samples:
        assert envelope(msg).startswith(b"(")
        assert bodystructure(msg).startswith(b"(")
        assert bodystructure(msg, extended=False).startswith(b"(")
        for part in ((1,), (2, 1), (3,), (4, 2, 2, 1)):
            for kind in (None, "MIME", "HEADER", "TEXT"):
                assert isinstance(section(msg, part, kind), bytes)
        assert isinstance(header_values(msg, "subject"), list)
        assert isinstance(text_contains(msg, "part", body_only=False), bool)
        sent_date(msg)
    assert [r for r in caplog.records if r.name == "mailmodes.protocols.imap.message"] == []


# ---------------------------------------------------------------------------------------------
# SEARCH helpers


SEARCHABLE = crlf(
    "From: =?utf-8?q?J=C3=B6rg?= <j@example.test>",
    "Subject: =?utf-8?b?V2llbmVyIFNjaG5pdHplbA==?=",
    "Date: Thu, 15 Feb 2007 23:02:03 -0800",
    'Content-Type: multipart/mixed; boundary="s"',
    "",
    "--s",
    "Content-Type: text/plain; charset=utf-8",
    "Content-Transfer-Encoding: base64",
    "",
    "R3LDvMOfZSBhdXMgV2llbg==",
    "--s",
    "Content-Type: text/html; charset=iso-8859-1",
    "Content-Transfer-Encoding: quoted-printable",
    "",
    "<p>Caf=E9 am Ring=",
    "platz</p>",
    "--s",
    "Content-Type: application/octet-stream",
    "",
    "secretword",
    "--s",
    "Content-Type: message/rfc822",
    "",
    "Subject: forwarded topic",
    "",
    "forwarded body",
    "--s--",
)


@pytest.mark.parametrize(
    ("needle", "body_only", "expected"),
    [
        ("GRÜSSE aus", True, True),  # base64 + UTF-8, case-folded (ß -> ss)
        ("café am ringplatz", True, True),  # quoted-printable soft break + Latin-1
        ("schnitzel", True, False),  # only in the (encoded) Subject
        ("schnitzel", False, True),
        ("jörg", False, True),
        ("secretword", False, False),  # non-text parts are not searched
        ("forwarded topic", True, True),  # an attached message's header is body text
        ("FORWARDED BODY", True, True),
        ("", True, True),
        ("absent", False, False),
    ],
)
def test_text_contains(needle: str, body_only: bool, expected: bool) -> None:
    assert text_contains(SEARCHABLE, needle, body_only=body_only) is expected


def test_text_contains_plain_message() -> None:
    assert text_contains(SIMPLE, "MINUTES FOLLOW", body_only=True)
    assert not text_contains(SIMPLE, "Terry", body_only=True)
    assert text_contains(SIMPLE, "Terry", body_only=False)
    assert text_contains(b"raw \xff bytes and Umlaut \xc3\xbc", "UMLAUT Ü", body_only=True)
    mislabelled = "Content-Type: text/plain; charset=us-ascii\r\n\r\nGrüße\r\n".encode()
    assert text_contains(mislabelled, "grüsse", body_only=True)
    odd_codec = b"Content-Type: text/plain; charset=idna\r\n\r\nplain words\r\n"
    assert text_contains(odd_codec, "WORDS", body_only=True)


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        (SEARCHABLE, datetime.date(2007, 2, 15)),  # the header's own day, not UTC's
        (SIMPLE, datetime.date(1996, 7, 17)),
        (crlf("Date: 1 Jan 99 00:00 GMT", "", ""), datetime.date(1999, 1, 1)),
        (crlf("Date: yesterday", "", ""), None),
        (crlf("Date: 31 Feb 2020 10:00 +0000", "", ""), None),
        (crlf("Subject: no date", "", ""), None),
        (b"", None),
    ],
)
def test_sent_date(msg: bytes, expected: datetime.date | None) -> None:
    assert sent_date(msg) == expected


# ---------------------------------------------------------------------------------------------
# Cost


def test_whole_message_section_is_the_stored_bytes() -> None:
    big = SIMPLE + b"x" * 10_000 + b"\r\n"
    assert section(big) is big
    assert section(big, ()) is big


def test_structure_of_a_large_message_is_linear() -> None:
    part = "--b\r\nContent-Type: text/plain\r\n\r\n" + ("line of text " * 8 + "\r\n") * 2
    msg = ('Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + part * 400 + "--b--\r\n").encode()
    assert len(msg) > 90_000
    started = time.perf_counter()
    structure = bodystructure(msg)
    elapsed = time.perf_counter() - started
    assert structure.count(b'("text" "plain"') == 400
    assert elapsed < 0.5  # generous for a loaded 2-core machine; typically ~10 ms
