"""The express lane (smtp_adapter.py, issue 22) answers exactly as aiosmtpd's own loop does.

The same byte streams go to one listener twice: once as it runs by default, where the lane
answers the plain MAIL, RCPT, DATA, RSET and NOOP lines itself, and once with aiosmtpd's log
enabled, which keeps the lane out (a session then runs all in aiosmtpd's loop). The client must
receive the same bytes, the journal must hold the same record (transcript text, counters,
envelopes, verdicts; not the times) and the store the same mail. Every stream is sent step by
step (the client waits for each reply), in one write, and cut into pieces at random. The lane
must also really answer: with it, the replies to commands that arrive together leave together.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import socket
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.record.journal import SessionRecord

LINE_LIMIT = 120
SIZE_LIMIT = 2000
MAIL = b"MAIL FROM:<c@client.test>\r\n"
RCPT = b"RCPT TO:<alice@example.test>\r\n"
BODY = b"Subject: hi\r\n\r\n..dot-stuffed\r\nHello.\r\n.\r\n"
FULL_LINE = b"x" * (LINE_LIMIT - 2) + b"\r\n"

# Each step gets exactly one reply (its last line "NNN text"); the streams end with QUIT.
SCRIPTS: dict[str, list[bytes]] = {
    "one message": [b"EHLO t\r\n", MAIL, RCPT, b"DATA\r\n", BODY, b"QUIT\r\n"],
    "three transactions, RSET and NOOP": [
        b"EHLO t\r\n", MAIL, RCPT, b"DATA\r\n", BODY, b"NOOP\r\n", b"mail from: <d@client.test>\n",
        b"rcpt to:<alice@example.test>\n", b"RCPT TO:<bob@example.test>\r\n", b"data\r\n", b".\r\n", b"RSET\r\n",
        MAIL, b"RSET\r\n", b"NOOP\r\n", MAIL, RCPT, b"DATA\r\n", b"a\r\n" * 40 + b".\r\n", b"QUIT\r\n",
    ],
    "refusals aiosmtpd words": [
        MAIL, b"EHLO t\r\n", RCPT, b"DATA\r\n", MAIL, MAIL, b"DATA\r\n", b"RCPT TO:<nobody@example.test>\r\n",
        b"RCPT TO:<someone@elsewhere.test>\r\n", b"DATA\r\n", b"NOOP x\r\n", b"RSET x\r\n", b"DATA x\r\n",
        b"RCPT TO:<alice@example.test> NOTIFY=NEVER\r\n", b"BOGUS\r\n", b"QUIT\r\n",
    ],
    "parameters and unusual paths": [
        b"EHLO t\r\n", b"MAIL FROM:<c@client.test> SIZE=100 BODY=8BITMIME\r\n", b"RCPT TO:<\"q r\"@example.test>\r\n",
        RCPT, b"DATA\r\n", BODY, b"MAIL FROM:<>\r\n", b"RCPT TO:<postmaster>\r\n", b"DATA\r\n", BODY,
        b"MAIL  FROM:<c@client.test>\r\n", b"MAIL FROM:<c@client.test>\r\r\n", b"QUIT\r\n",
    ],
    "HELO session": [b"HELO t\r\n", MAIL, RCPT, b"DATA\r\n", BODY, b"QUIT\r\n"],
    "messages at and over the limits": [
        b"EHLO t\r\n", MAIL, RCPT, b"DATA\r\n", FULL_LINE * 3 + b".\r\n",
        MAIL, RCPT, b"DATA\r\n", b"y" * (LINE_LIMIT * 3) + b"\r\n.\r\n",
        MAIL, RCPT, b"DATA\r\n", FULL_LINE * 40 + b".\r\n",
        MAIL, RCPT, b"DATA\r\n", b"after\r\n.\r\n", b"QUIT\r\n",
    ],
    "an over-long command line": [b"EHLO t\r\n", b"NOOP " + b"z" * 600 + b"\r\n", MAIL, b"QUIT\r\n"],
    "EHLO again, and its odd forms": [
        b"EHLO t\r\n", MAIL, b"ehlo [127.0.0.1]\n", RCPT, b"EHLO\r\n", b"EHLO a b\r\n", b"EHLO   spaced\r\n",
        b"EHLO " + b"h" * 600 + b"\r\n", b"HELO again\r\n", MAIL, RCPT, b"DATA\r\n", BODY, b"EHLO t\r\n",
        b"QUIT\r\nNOOP\r\nBOGUS\r\n",
    ],
}


@pytest.fixture
def lane_server(serve: Callable[..., ThreadedMailServer]) -> ThreadedMailServer:
    limits = {"max_line_length": LINE_LIMIT, "max_message_size": SIZE_LIMIT, "max_bad_commands": 50}
    return serve({"name": "plain", "protocol": "smtp", "tls": "plaintext", "role": "mta", "limits": limits},
                 {"name": "implicit", "protocol": "smtp", "tls": "implicit", "role": "mta", "limits": limits},
                 {"name": "starttls", "protocol": "smtp", "tls": "starttls-optional", "role": "mta", "limits": limits})


@pytest.fixture
def aiosmtpd_log_on() -> Iterator[Callable[[bool], None]]:
    logger = logging.getLogger("mail.log")
    level = logger.level

    def switch(on: bool) -> None:
        logger.setLevel(logging.INFO if on else level)

    yield switch
    logger.setLevel(level)


def connect(server: ThreadedMailServer, listener: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port(listener)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return tls(server, sock) if listener == "implicit" else sock


def tls(server: ThreadedMailServer, sock: socket.socket) -> socket.socket:
    return ssl.create_default_context(cafile=str(server.ca_file)).wrap_socket(sock, server_hostname="localhost")


def read_replies(sock: socket.socket, count: int) -> bytes:
    """Read until `count` final reply lines ("NNN text") have come, or the server closed."""
    received = b""
    while count and _final_lines(received) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received


def _final_lines(data: bytes) -> int:
    return sum(1 for line in data.split(b"\r\n")[:-1] if line[3:4] == b" ")


def converse(server: ThreadedMailServer, listener: str, steps: list[bytes], how: str | int) -> bytes:
    """Everything the client receives. The first step goes alone; then `how` says: "step" (each
    after the reply to the one before), "together" (all the rest in one write) or a seed for
    random cuts, the client reading the replies to the steps each piece completed before it
    sends the next (so that pieces do not merge on the way)."""
    sock = connect(server, listener)
    try:
        received = read_replies(sock, 1)  # the greeting
        if listener == "starttls":  # in the clear: EHLO and STARTTLS, then all of it inside TLS
            for step in (b"EHLO t\r\n", b"STARTTLS\r\n"):
                sock.sendall(step)
                received += read_replies(sock, 1)
            sock = tls(server, sock)
        sock.sendall(steps[0])
        received += read_replies(sock, 1)
        rest = steps[1:]
        if how == "step":
            pieces = rest
        else:
            stream = b"".join(rest)
            cuts = [] if how == "together" else sorted(random.Random(how).sample(range(1, len(stream)), 20))
            pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
        step_ends = list(itertools.accumulate(len(step) for step in rest))
        sent = answered = 0
        for piece in pieces:
            sock.sendall(piece)
            sent += len(piece)
            completed = sum(1 for end in step_ends if end <= sent)
            received += read_replies(sock, completed - answered)
            answered = completed
        while chunk := sock.recv(65536):  # until the server closes after QUIT
            received += chunk
    finally:
        sock.close()
    return received


def summary(record: SessionRecord) -> dict[str, Any]:
    """The record as the API shows it, without what differs between any two sessions."""
    shown = {field.name: getattr(record, field.name) for field in dataclasses.fields(record)}
    for varying in ("id", "client", "started", "ended", "first_client_bytes"):
        shown.pop(varying)
    shown["lines"] = [(sender, encrypted, text) for _, sender, encrypted, text in record.lines]
    shown["verdicts"] = sorted(verdict.code for verdict in record.verdicts)
    return shown


def run(server: ThreadedMailServer, listener: str, steps: list[bytes],
        how: str | int) -> tuple[bytes, dict[str, Any], list[bytes]]:
    before = len(server.journal.sessions(listener=listener))
    replies = converse(server, listener, steps, how)
    record = server.journal.wait_for(before + 1, listener=listener)[-1]
    inbox = server.call(lambda: empty_inbox(server))
    return replies, summary(record), inbox


def empty_inbox(server: ThreadedMailServer) -> list[bytes]:
    """alice's messages, taken out of her INBOX (on the server's loop: server.call)."""
    inbox = server.store.accounts["alice"].inbox
    messages = [message.data for message in inbox.messages]
    inbox.expunge([message.uid for message in inbox.messages])
    return messages


@pytest.mark.parametrize("listener", ["plain", "implicit", "starttls"])
@pytest.mark.parametrize("how", ["step", "together", 1, 2, 3, 4])
@pytest.mark.parametrize("script", list(SCRIPTS))
def test_the_lane_answers_as_aiosmtpd_does(lane_server: ThreadedMailServer,
                                            aiosmtpd_log_on: Callable[[bool], None],
                                            script: str, how: str | int, listener: str) -> None:
    steps = SCRIPTS[script]
    with_lane = run(lane_server, listener, steps, how)
    aiosmtpd_log_on(True)
    without_lane = run(lane_server, listener, steps, how)
    aiosmtpd_log_on(False)
    assert with_lane[0] == without_lane[0]  # byte for byte what the client got
    assert with_lane[1]["lines"] == without_lane[1]["lines"]  # the transcript
    assert with_lane[1] == without_lane[1]  # the journal's record
    assert with_lane[2] == without_lane[2]  # the mail stored
    assert with_lane[0].endswith(b"221 2.0.0 Bye\r\n")


@pytest.mark.parametrize("lane", [True, False])
def test_the_lane_answers_pipelined_commands_in_one_write(lane_server: ThreadedMailServer,
                                                           aiosmtpd_log_on: Callable[[bool], None], lane: bool) -> None:
    """MAIL, RCPT and DATA in one write get their three replies in one write: the lane answered
    them as they arrived, not aiosmtpd's loop one at a time (it writes each reply alone)."""
    aiosmtpd_log_on(not lane)
    with connect(lane_server, "plain") as sock:
        read_replies(sock, 1)
        sock.sendall(b"EHLO t\r\n")
        read_replies(sock, 1)
        sent = lane_server.call(lambda: _writes(lane_server))
        sock.sendall(MAIL + RCPT + b"DATA\r\n")
        replies = read_replies(sock, 3)
        assert replies.splitlines()[0].startswith(b"250") and replies.splitlines()[2].startswith(b"354")
        assert lane_server.call(lambda: _writes(lane_server)) == sent + int(lane)
        sock.sendall(BODY + b"QUIT\r\n")
        read_replies(sock, 2)


def _writes(server: ThreadedMailServer) -> int:
    """The writes of replies the express lane made on the plain listener's open connection."""
    (session,) = server.server._smtp["plain"].connections
    return session.express_writes
