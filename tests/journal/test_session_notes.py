"""What each protocol session tells the journal, bytes in and record out (no sockets).

The sessions are the only ones that parse the client's bytes, so they decide what is a
credential; the recorder shows what they say. Each exchange is fed whole and split at every byte
boundary: the record must be the same, and hold no secret.
"""

from __future__ import annotations

import base64
import json
import time

import pytest

from mailmodes.protocols.events import SECRET, UNPARSED, Heard, Output, StartTls
from mailmodes.protocols.imap.session import ImapSession
from mailmodes.protocols.pop3 import Pop3Session
from mailmodes.protocols.smtp_adapter import command_heard, response_heard
from mailmodes.record.journal import SessionRecord
from mailmodes.record.transcript import Recorder
from support import HOSTNAME, make_store, sans_io_connection

SECRET_WORD = "alice-password"
PLAIN = base64.b64encode(f"\0alice\0{SECRET_WORD}".encode())
WRONG = base64.b64encode(b"\0alice\0not-the-password")


def journal_of(protocol: str, chunks: list[bytes], mode: str = "plaintext", *, apop: bool = False) -> SessionRecord:
    """Drive a session as connection.py does: greeting, then each chunk fed and its replies sent."""
    record = SessionRecord(1, "l", protocol, mode, None, "127.0.0.1:1", "127.0.0.1", time.time())
    recorder = Recorder(record, 1000)
    connection = sans_io_connection(protocol, mode, notes=recorder)
    session = (ImapSession(connection, make_store(), HOSTNAME) if protocol == "imap"
               else Pop3Session(connection, make_store(), HOSTNAME, apop=apop))

    def sent(outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, bytes):
                recorder.server(output)
            elif isinstance(output, StartTls):
                recorder.tls_started(None, via_starttls=True)

    sent(session.greeting())
    for chunk in chunks:
        recorder.client(chunk)
        sent(session.feed(chunk))
    return record


def client_lines(record: SessionRecord) -> list[str]:
    return [line.text for line in record.transcript if line.sender == "client"]


def splits(data: bytes) -> list[list[bytes]]:
    return [[data]] + [[data[:cut], data[cut:]] for cut in range(1, len(data))]


def assert_no_secret(record: SessionRecord) -> None:
    text = json.dumps(record.to_json())
    for secret in (SECRET_WORD, PLAIN.decode(), base64.b64encode(SECRET_WORD.encode()).decode()):
        assert secret not in text


LOGINS = [
    # (protocol, bytes of one write, the client's lines, the command the credentials came with)
    ("imap", b"a LOGIN {5+}\r\nalice alice-password\r\n", ["a LOGIN {5+}", "[literal: 5 bytes]", " ****"], "LOGIN"),
    ("imap", b'a LOGIN "alice" "alice-password"\r\n', ['a LOGIN "alice" ****'], "LOGIN"),
    ("imap", b"a LOGIN alice {14+}\r\nalice-password\r\n", ["a LOGIN alice {14+}", "****"], "LOGIN"),
    ("imap", b"a AUTHENTICATE PLAIN " + PLAIN + b"\r\n", ["a AUTHENTICATE PLAIN ****"], "AUTHENTICATE PLAIN"),
    # The SASL response in the same write as its command (the server reads it as the response).
    ("imap", b"a AUTHENTICATE PLAIN\r\n" + PLAIN + b"\r\n", ["a AUTHENTICATE PLAIN", "****"], "AUTHENTICATE PLAIN"),
    ("pop3", b"USER alice\r\nPASS alice-password\r\n", ["USER alice", "PASS ****"], "PASS"),
    ("pop3", b"AUTH PLAIN " + PLAIN + b"\r\n", ["AUTH PLAIN ****"], "AUTH PLAIN"),
    ("pop3", b"AUTH PLAIN\r\n" + PLAIN + b"\r\n", ["AUTH PLAIN", "****"], "AUTH PLAIN"),
]
GOODBYE = {"imap": b"z LOGOUT\r\n", "pop3": b"QUIT\r\n"}


@pytest.mark.parametrize(("protocol", "data", "lines", "command"), LOGINS)
def test_credentials_are_masked_wherever_the_reads_split(protocol: str, data: bytes, lines: list[str],
                                                         command: str) -> None:
    for chunks in splits(data + GOODBYE[protocol]):
        record = journal_of(protocol, chunks)
        assert client_lines(record) == [*lines, GOODBYE[protocol].decode().strip()], chunks
        assert (record.user, record.to_json()["logins"]) == (
            "alice", [{"command": command, "user": "alice", "tls": False, "accepted": True}])
        assert_no_secret(record)


# --- IMAP ------------------------------------------------------------------------------------


def test_imap_synchronizing_literal_in_wire_order() -> None:
    record = journal_of("imap", [b"a LOGIN {5}\r\n", b"alice {14}\r\n", b"alice-password\r\n"])
    lines = [(line.sender, line.text) for line in record.transcript][1:]
    assert lines == [("client", "a LOGIN {5}"), ("server", "+ Ready for literal data"),
                     ("client", "[literal: 5 bytes]"), ("client", " {14}"), ("server", "+ Ready for literal data"),
                     ("client", "****"), ("server", lines[-1][1])]
    assert record.user == "alice"


@pytest.mark.parametrize("line", [b"a  LOGIN alice alice-password", b"a\tLOGIN\talice\talice-password",
                                  b"a UID LOGIN alice alice-password", b"alice-password",
                                  b"a LOGIN alice alice-password extra"])
def test_imap_lines_the_server_rejects_are_not_shown(line: bytes) -> None:
    record = journal_of("imap", [line + b"\r\n"])
    assert_no_secret(record)
    assert all(SECRET_WORD not in text for text in [line.text for line in record.transcript])
    assert record.user is None


def test_imap_failed_login_is_marked_failed() -> None:
    record = journal_of("imap", [b"a LOGIN alice wrong\r\n", b"b AUTHENTICATE PLAIN\r\n" + WRONG + b"\r\n"])
    assert record.user is None
    assert record.to_json()["logins"] == [
        {"command": "LOGIN", "user": "alice", "tls": False, "accepted": False},
        {"command": "AUTHENTICATE PLAIN", "user": "alice", "tls": False, "accepted": False}]


def test_imap_literal_refused_before_tls_is_skipped_unread() -> None:
    record = journal_of("imap", [b"a LOGIN alice {14+}\r\nalice-password\r\nb NOOP\r\n"], mode="starttls-required")
    assert client_lines(record) == ["a LOGIN alice {14+}", "[16 bytes not read: the server refused the literal]",
                                    "b NOOP"]
    assert record.credentials == [(False, True, "LOGIN")]  # refused, but the password went out anyway
    assert record.user is None


# --- POP3 ------------------------------------------------------------------------------------


def test_pop3_apop_digest_is_masked() -> None:
    record = journal_of("pop3", [b"APOP alice 0123456789abcdef0123456789abcdef\r\n"], apop=True)
    assert client_lines(record) == ["APOP alice ****"]
    assert record.to_json()["logins"] == [{"command": "APOP", "user": "alice", "tls": False, "accepted": False}]


@pytest.mark.parametrize("line", [b" PASS alice-password", b"PASS\talice-password", b"alice-password"])
def test_pop3_lines_the_server_rejects_are_not_shown(line: bytes) -> None:
    record = journal_of("pop3", [b"USER alice\r\n", line + b"\r\n"])
    assert_no_secret(record)
    assert client_lines(record)[-1] == f"[not understood: {len(line)} bytes]"


def test_pop3_bare_auth_is_no_login_attempt() -> None:
    record = journal_of("pop3", [b"AUTH\r\nQUIT\r\n"], mode="starttls-optional")
    assert record.credentials == [] and record.to_json()["logins"] == []
    assert client_lines(record) == ["AUTH", "QUIT"]


# --- SMTP: the lines as aiosmtpd reads them ---------------------------------------------------

KNOWN = {"EHLO", "AUTH", "MAIL", "QUIT"}


@pytest.mark.parametrize(("line", "verb", "spans"), [
    (b"AUTH PLAIN " + PLAIN + b"\r\n", "AUTH", ((11, 11 + len(PLAIN), SECRET),)),
    (b"auth  PLAIN  " + PLAIN + b"  \r\n", "AUTH", ((13, 13 + len(PLAIN), SECRET),)),  # aiosmtpd splits on any space
    (b"AUTH LOGIN YWxpY2U=\r\n", "AUTH", ((11, 19, SECRET),)),
    (b"AUTH PLAIN\r\n", "AUTH", ()),
    (b"AUTH\tPLAIN\t" + PLAIN + b"\r\n", "", ((0, 11 + len(PLAIN), UNPARSED),)),  # no such verb for aiosmtpd
    (PLAIN + b"\r\n", "", ((0, len(PLAIN), UNPARSED),)),
    (b"mail FROM:<a@b>\r\n", "MAIL", ()),
    (b"\r\n", "", ()),
])
def test_smtp_command_lines(line: bytes, verb: str, spans: tuple[tuple[int, int, str], ...]) -> None:
    assert command_heard(line, KNOWN) == Heard(line, verb, spans)  # type: ignore[arg-type]


def test_smtp_sasl_responses() -> None:
    assert response_heard(PLAIN + b"\r\n") == Heard(PLAIN + b"\r\n", None, ((0, len(PLAIN), SECRET),))
    assert response_heard(b"*\r\n") == Heard(b"*\r\n", None)


def test_imap_commands_that_touch_mail_come_from_the_command_declarations() -> None:
    # Each verb once, in the order first seen: the plain and UID forms of what reads or writes
    # mail, also when refused (a BAD FETCH still showed the client would send one in the clear),
    # and nothing for COPY, STORE, EXPUNGE, LIST or a UID form of an unknown command.
    record = journal_of("imap", [
        b"a LOGIN alice alice-password\r\n", b"b LIST \"\" *\r\n", b"c SELECT INBOX\r\n",
        b"d FETCH 1:* FLAGS\r\n", b"e UID FETCH 1:* FLAGS\r\n", b"f FETCH\r\n", b"g COPY 1 Trash\r\n",
        b"h UID STORE 1 +FLAGS (\\Seen)\r\n", b"i UID SEARCH ALL\r\n", b"j SORT (DATE) UTF-8 ALL\r\n",
        b"k UID THREAD REFERENCES UTF-8 ALL\r\n", b"l UID XYZZY 1\r\n", b"m EXPUNGE\r\n",
        b"n APPEND INBOX {2+}\r\nhi\r\n", b"o EXAMINE INBOX\r\n",
    ])
    assert record.mail_commands_in_clear == ["SELECT", "FETCH", "UID FETCH", "UID SEARCH", "SORT", "UID THREAD",
                                             "APPEND", "EXAMINE"]
