"""The Recorder, bytes in, transcript and facts out (no sockets)."""

from __future__ import annotations

import time

import pytest

from mailmodes.record.journal import SessionRecord
from mailmodes.record.transcript import Recorder


def recorder(protocol: str) -> Recorder:
    record = SessionRecord(1, "l", protocol, "plaintext", None, "127.0.0.1:1", "127.0.0.1", time.time())
    return Recorder(record, 1000)


def texts(rec: Recorder, sender: str = "client") -> list[str]:
    return [line.text for line in rec.record.transcript if line.sender == sender]


SMTP_CLIENT = (b"EHLO x\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<a@b>\r\nDATA\r\n"
               b"Subject: s\r\n\r\n..dot-stuffed\r\nline\r\n.\r\nQUIT\r\n")


@pytest.mark.parametrize("split", range(0, len(SMTP_CLIENT) + 1, 3))
def test_smtp_data_summarised_wherever_reads_split(split: int) -> None:
    rec = recorder("smtp")
    rec.server(b"220 hi\r\n")
    before_data = SMTP_CLIENT.index(b"Subject")
    # The server's 354 arrives after DATA and before the body, as on the wire.
    first, second = SMTP_CLIENT[:before_data], SMTP_CLIENT[before_data:]
    for chunk in (first[:split], first[split:]):
        rec.client(chunk)
    rec.server(b"354 go ahead\r\n")
    for chunk in (second[:split], second[split:]):
        rec.client(chunk)
    assert texts(rec) == ["EHLO x", "AUTH PLAIN ****", "MAIL FROM:<a@b>", "DATA",
                          "[message: 35 bytes]", ".", "QUIT"]
    assert rec.record.user == "alice"
    assert rec.record.credentials == [(False, True, "AUTH PLAIN")]
    assert rec.record.mail_commands_in_clear == ["MAIL", "DATA"]


def test_empty_message_body() -> None:
    rec = recorder("smtp")
    rec.client(b"DATA\r\n")
    rec.server(b"354 go ahead\r\n")
    rec.client(b".\r\nQUIT\r\n")
    assert texts(rec) == ["DATA", "[message: 0 bytes]", ".", "QUIT"]


@pytest.mark.parametrize("split", range(1, 12))
def test_only_crlf_dot_crlf_ends_the_message(split: int) -> None:
    rec = recorder("smtp")
    rec.client(b"DATA\r\n")
    rec.server(b"354 go ahead\r\n")
    stream = b"a\n.\r\nb\r\n.\r\nQUIT\r\n"  # a bare LF before a dot line does not end it (RFC 5321)
    rec.client(stream[:split])
    rec.client(stream[split:])
    assert texts(rec) == ["DATA", "[message: 8 bytes]", ".", "QUIT"]


def test_pop3_retr_body_is_summarised_and_pass_masked() -> None:
    rec = recorder("pop3")
    for command, reply in [(b"USER alice\r\n", b"+OK\r\n"), (b"PASS secret\r\n", b"+OK\r\n"),
                           (b"RETR 1\r\n", b"+OK 12 octets\r\nSubject: x\r\n\r\n..\r\nbody\r\n.\r\n")]:
        rec.client(command)
        rec.server(reply)
    assert texts(rec) == ["USER alice", "PASS ****", "RETR 1"]
    assert texts(rec, "server")[-3:] == ["+OK 12 octets", "[message: 24 bytes]", "."]
    assert "secret" not in str(rec.record.transcript)


def test_imap_literals_are_skipped_and_login_literal_masked() -> None:
    rec = recorder("imap")
    rec.client(b"a LOGIN alice {6}\r\n")
    rec.server(b"+ go\r\n")
    rec.client(b"secret\r\nb APPEND INBOX {11}\r\n")
    rec.client(b"Subject: x\n\r\nc FETCH 1 BODY[]\r\n")
    rec.server(b"* 1 FETCH (BODY[] {3}\r\nabc)\r\nc OK done\r\n")
    assert texts(rec) == ["a LOGIN alice {6}", "[literal: ****]", "b APPEND INBOX {11}", "[literal: 11 bytes]",
                          "c FETCH 1 BODY[]"]
    assert "secret" not in str(rec.record.transcript)
    assert texts(rec, "server")[-4:] == ["* 1 FETCH (BODY[] {3}", "[literal: 3 bytes]", ")", "c OK done"]


def test_large_message_is_linear() -> None:
    rec = recorder("smtp")
    rec.client(b"DATA\r\n")
    rec.server(b"354 go ahead\r\n")
    body = b"x" * 78 + b"\r\n"
    started = time.perf_counter()
    for _ in range(64):  # 64 reads of 160 KiB = 10 MiB
        rec.client(body * 2048)
    rec.client(b".\r\n")
    # Generous: this catches quadratic behaviour (seconds), not a slow machine.
    assert time.perf_counter() - started < 1.0
    assert texts(rec)[-2:] == [f"[message: {64 * 2048 * 80} bytes]", "."]


def test_lines_injected_after_the_stls_success_do_not_end_the_wait() -> None:
    rec = recorder("pop3")
    rec.client(b"STLS\r\nUSER alice\r\n")  # USER pipelined behind STLS
    rec.server(b"+OK Begin TLS negotiation\r\n+OK\r\nSASL X-MAILMODES-INJECTED\r\n.\r\n")
    rec.tls_started(None, via_starttls=True)
    assert rec.record.pipelined_bytes == len(b"USER alice\r\n")
    assert rec.record.credentials == []
