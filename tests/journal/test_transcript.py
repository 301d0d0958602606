"""The Recorder: notes in (what a session read), transcript and facts out (no sockets)."""

from __future__ import annotations

import time

from mailmodes.protocols.events import (
    CLIENT_HELLO,
    LITERAL,
    SECRET,
    TLS_BYTES,
    UNPARSED,
    Heard,
    LoginAttempt,
    MessageRead,
    Pipelined,
    Skipped,
)
from mailmodes.record.journal import SessionRecord
from mailmodes.record.transcript import Recorder, rendered


def recorder(protocol: str) -> Recorder:
    record = SessionRecord(1, "l", protocol, "plaintext", None, "127.0.0.1:1", "127.0.0.1", time.time())
    return Recorder(record, 1000)


def texts(rec: Recorder, sender: str = "client") -> list[str]:
    return [line.text for line in rec.record.transcript if line.sender == sender]


# --- rendering one piece ---------------------------------------------------------------------


def test_a_piece_is_shown_as_the_session_says() -> None:
    data = b"a LOGIN {5+}\r\nalice alice-password"
    assert rendered(Heard(data, "LOGIN", ((14, 19, LITERAL), (20, 34, SECRET)))) == [
        "a LOGIN {5+}", "[literal: 5 bytes]", " ****"]


def test_a_secret_may_span_its_literal_marker() -> None:
    data = b"f LOGIN alice {14}\r\nalice-password"
    assert rendered(Heard(data, "LOGIN", ((14, 34, SECRET), (20, 34, LITERAL)))) == ["f LOGIN alice ****"]


def test_only_the_new_part_of_a_command_is_shown() -> None:
    data = b"a APPEND INBOX {11}\r\nSubject: x\n\r\n"
    assert rendered(Heard(data, "APPEND", ((21, 32, LITERAL),), start=21)) == ["[literal: 11 bytes]"]


def test_what_the_session_could_not_make_out_shows_only_its_size() -> None:
    assert rendered(Heard(b" PASS hunter2\r\n", "", ((0, 13, UNPARSED),))) == ["[not understood: 13 bytes]"]
    assert rendered(Heard(b"e UID LOGIN alice pw", "UID", ((6, 20, UNPARSED),))) == ["e UID [not understood: 14 bytes]"]


def test_tls_bytes_where_the_protocol_was_expected() -> None:
    hello = b"\x16\x03\x01\x00\x04\x01\x00\x00\x00" + b"\x15\x03\x03"
    assert rendered(Heard(hello, None, ((0, 9, CLIENT_HELLO), (9, 12, TLS_BYTES)))) == [
        "[TLS ClientHello, 9 bytes][TLS: 3 bytes]"]


# --- facts -----------------------------------------------------------------------------------


def test_the_user_is_the_account_accepted_and_failures_are_listed() -> None:
    rec = recorder("pop3")
    rec.note(LoginAttempt("USER", "alice", secret_sent=False, accepted=None))
    rec.note(LoginAttempt("PASS", "alice", secret_sent=True, accepted=False))
    assert rec.record.user is None
    rec.note(LoginAttempt("AUTH PLAIN", "alice", secret_sent=True, accepted=True))
    assert rec.record.user == "alice"
    assert rec.record.to_json()["logins"] == [
        {"command": "PASS", "user": "alice", "tls": False, "accepted": False},
        {"command": "AUTH PLAIN", "user": "alice", "tls": False, "accepted": True}]
    assert rec.record.credentials == [(False, False, "USER"), (False, True, "PASS"), (False, True, "AUTH PLAIN")]


def test_commands_are_counted_by_the_verb_the_session_gave() -> None:
    rec = recorder("smtp")
    for line, verb in [(b"EHLO x\r\n", "EHLO"), (b"mail FROM:<a@b>\r\n", "MAIL"), (b"DATA\r\n", "DATA")]:
        rec.note(Heard(line, verb))
    rec.note(MessageRead(35))
    rec.note(Heard(b"XYZZY\r\n", "", ((0, 5, UNPARSED),)))
    assert texts(rec) == ["EHLO x", "mail FROM:<a@b>", "DATA", "[message: 35 bytes]", ".",
                          "[not understood: 5 bytes]"]
    assert rec.record.mail_commands_in_clear == ["MAIL", "DATA"]
    assert rec.record.commands_before_tls == 4


def test_a_message_cut_short_and_bytes_skipped() -> None:
    rec = recorder("smtp")
    rec.note(MessageRead(7, complete=False))
    rec.note(Skipped(2000, "line too long"))
    assert texts(rec) == ["[message: 7 bytes, unfinished: the connection ended]", "[2000 bytes not read: line too long]"]


def test_pipelined_bytes_count_only_once_tls_starts() -> None:
    rec = recorder("pop3")
    rec.note(Heard(b"STLS\r\n", "STLS"))
    rec.note(Pipelined(len(b"USER alice\r\n")))
    rec.server(b"+OK Begin TLS negotiation\r\n+OK\r\nSASL X-MAILMODES-INJECTED\r\n.\r\n")
    rec.tls_started(None, via_starttls=True)
    assert rec.record.pipelined_bytes == len(b"USER alice\r\n")
    assert rec.record.starttls_attempted and rec.record.credentials == []
    assert texts(rec)[-1] == "[12 plaintext bytes pipelined after STLS: discarded, never executed]"


def test_pop3_retr_body_is_summarised() -> None:
    rec = recorder("pop3")
    rec.note(Heard(b"RETR 1\r\n", "RETR"))
    rec.server(b"+OK 12 octets\r\nSubject: x\r\n\r\n..\r\nbody\r\n.\r\n")
    assert texts(rec, "server") == ["+OK 12 octets", "[message: 24 bytes]", "."]


def test_server_literals_are_skipped() -> None:
    rec = recorder("imap")
    rec.server(b"* 1 FETCH (BODY[] {3}\r\nabc)\r\nc OK done\r\n")
    assert texts(rec, "server") == ["* 1 FETCH (BODY[] {3}", "[literal: 3 bytes]", ")", "c OK done"]


def test_a_large_message_body_is_linear() -> None:
    rec = recorder("pop3")
    rec.note(Heard(b"RETR 1\r\n", "RETR"))
    rec.server(b"+OK\r\n")
    body = b"x" * 78 + b"\r\n"
    started = time.perf_counter()
    for _ in range(64):  # 64 writes of 160 KiB = 10 MiB
        rec.server(body * 2048)
    rec.server(b".\r\n")
    # Generous: this catches quadratic behaviour (seconds), not a slow machine.
    assert time.perf_counter() - started < 1.0
    assert texts(rec, "server")[-2:] == [f"[message: {64 * 2048 * 80} bytes]", "."]
