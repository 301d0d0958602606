"""The fast MAIL/RCPT address and DATA paths (smtp_hotpaths.py) behave exactly as aiosmtpd's own.

First byte for byte without I/O, then over real sockets: the same byte streams, cut into pieces
at random, go to a mailmodes listener and to a bare aiosmtpd server with the same limits, and the
reply codes and the stored message must agree.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailmodes.app import ThreadedMailServer
from mailmodes.protocols.smtp_hotpaths import (
    DataBatch,
    lines_within,
    parse_simple_path,
    scan_data,
    unstuff,
)

LINE_LIMIT = 120
SIZE_LIMIT = 2000


def aiosmtpd_getaddr(arg: str) -> tuple[str | None, str | None]:
    return SMTP._getaddr(SimpleNamespace(local_part_limit=0), arg)  # type: ignore[arg-type]


# --- addresses -------------------------------------------------------------------------------

COMMON_PATHS = [
    "<alice@example.test>",
    "<bench@client.test> SIZE=2048",
    "<a.b+tag@sub.example.test>   BODY=8BITMIME SIZE=10",
    "<x@y>\tSIZE=1",
    "<o'neil!#$%&*/=?^_`{|}~-@host-1.example>",
    "<alice@example.test>SIZE=5",
    "<alice@example.test>   ",
]
UNUSUAL_PATHS = [
    "<>", "<@route.test:alice@example.test>", '<"quoted local"@example.test>', "<alice@[127.0.0.1]>",
    "<alice@example.test> (comment) SIZE=1", "<alice@example.test>(comment)", "alice@example.test",
    "<alice@example.test", "<.alice@example.test>", "<alice.@example.test>", "<a..b@example.test>",
    "<alice@example..test>", "<alice@example.test.>", "<älice@example.test>", "<alice@exämple.test>",
    " <alice@example.test>", "<alice @example.test>", "<alice@ example.test>", "<alice@example.test >",
    "<alice@@example.test>", "<@>", "<alice>", "",
]


@pytest.mark.parametrize("arg", COMMON_PATHS)
def test_common_paths_take_the_fast_path_with_aiosmtpds_result(arg: str) -> None:
    fast = parse_simple_path(arg)
    assert fast is not None, "the common form must not fall back to the slow parser"
    assert fast == aiosmtpd_getaddr(arg)


@pytest.mark.parametrize("arg", UNUSUAL_PATHS)
def test_unusual_paths_are_left_to_aiosmtpd_or_agree(arg: str) -> None:
    fast = parse_simple_path(arg)
    assert fast is None or fast == aiosmtpd_getaddr(arg)


def random_path(rng: random.Random) -> str:
    """A path that is often well-formed and often broken in one small way."""
    words = ["a", "b9", "x+y", "o'n", "Z_z", "-", "~", "é", '"q"', " ", "", "[1]", "a:b", "\\"]
    local = ".".join(rng.choice(words) for _ in range(rng.randint(1, 3)))
    domain = ".".join(rng.choice(["ex", "test", "h-1", "9", "", "é", " x", "[1.2.3.4]"]) for _ in range(rng.randint(1, 3)))
    tail = rng.choice(["", " SIZE=1", "\t x", "(c)", " (c) x", "SIZE=1", "  ", " \x0b", " ", ">", "\r"])
    path = f"<{local}@{domain}>{tail}"
    if rng.random() < 0.3:
        at = rng.randrange(len(path) + 1)
        path = path[:at] + rng.choice("<>@.() \t\"[]:\\,;") + path[at:]
    return path


def test_random_paths_agree_with_aiosmtpd_whenever_the_fast_path_answers() -> None:
    rng = random.Random(5321)
    answered = 0
    for _ in range(20_000):
        arg = random_path(rng)
        fast = parse_simple_path(arg)
        if fast is not None:
            answered += 1
            assert fast == aiosmtpd_getaddr(arg), arg
    assert answered > 1000  # the generator does reach the fast path


# --- DATA without I/O --------------------------------------------------------------------------


@pytest.mark.parametrize(("buffer", "expected"), [
    (b"", DataBatch(0, False)),
    (b"partial line", DataBatch(0, False)),
    (b".\r\nQUIT\r\n", DataBatch(0, True)),
    (b"a\r\nb\r\npart", DataBatch(6, False)),
    (b"a\r\n.\r\nQUIT\r\n", DataBatch(3, True)),
    (b"\r\n.\r\n", DataBatch(2, True)),
    (b"a\n.\nb\r\n", DataBatch(7, False)),  # bare LFs end no line in SMTP
    (b"..\r\n.\r\n", DataBatch(4, True)),
    (b"a\r\n.\r", DataBatch(3, False)),
])
def test_scan_data(buffer: bytes, expected: DataBatch) -> None:
    assert scan_data(buffer) == expected
    assert scan_data(bytearray(buffer)) == expected


def test_consumed_includes_the_end_of_data_line() -> None:
    assert DataBatch(3, True).consumed == 6 and DataBatch(3, False).consumed == 3


@pytest.mark.parametrize(("stuffed", "plain"), [
    (b"", b""),
    (b"no dots\r\n", b"no dots\r\n"),
    (b"..\r\n", b".\r\n"),
    (b"...x\r\n.y\r\nz.\r\n", b"..x\r\ny\r\nz.\r\n"),
    (b"a\n.b\r\n", b"a\n.b\r\n"),  # not a line start in SMTP
])
def test_unstuff(stuffed: bytes, plain: bytes) -> None:
    assert unstuff(stuffed) == plain


def test_lines_within_counts_the_crlf() -> None:
    assert lines_within(b"x" * 8 + b"\r\n", 10)
    assert not lines_within(b"x" * 9 + b"\r\n", 10)
    assert lines_within((b"x" * 8 + b"\r\n") * 5, 10)
    assert not lines_within((b"x" * 8 + b"\r\n") * 4 + b"x" * 9 + b"\r\n", 10)


# --- DATA over real sockets, against bare aiosmtpd ---------------------------------------------


class KeepContent:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(envelope.original_content or b"")
        return "250 OK"


class BareAiosmtpd:
    """aiosmtpd with nothing of ours, on its own loop thread, with the test's limits."""

    def __init__(self) -> None:
        self.handler = KeepContent()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        class Limited(SMTP):
            line_length_limit = LINE_LIMIT

        def factory() -> SMTP:
            return Limited(self.handler, hostname="bare.test", data_size_limit=SIZE_LIMIT)

        created = asyncio.run_coroutine_threadsafe(self.loop.create_server(factory, "127.0.0.1", 0), self.loop)
        self.server = created.result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    def messages(self) -> list[bytes]:
        return asyncio.run_coroutine_threadsafe(self._messages(), self.loop).result(10)

    async def _messages(self) -> list[bytes]:
        return list(self.handler.messages)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def bare() -> Iterator[BareAiosmtpd]:
    server = BareAiosmtpd()
    yield server
    server.stop()


def converse(sock: socket.socket, pieces: list[bytes]) -> list[tuple[int, bytes]]:
    """Send the pieces one send() each (the last one ends with QUIT), then read every reply until
    the server closes."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for piece in pieces:
        sock.sendall(piece)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    replies = [line for line in data.split(b"\r\n") if line and line[3:4] != b"-"]
    return [(int(line[:3]), line[4:]) for line in replies]


def stream_cases() -> list[tuple[str, bytes]]:
    """(name, what the client sends after 354), each followed by NOOP and QUIT in the stream."""
    line = b"x" * (LINE_LIMIT - 2) + b"\r\n"
    cases = [
        ("plain", b"Subject: hi\r\n\r\nHello.\r\n.\r\n"),
        ("empty", b".\r\n"),
        ("stuffed", b"..starts with a dot\r\n...two\r\n.\r\n"),
        ("first-line-stuffed", b"..\r\nbody\r\n.\r\n"),
        ("bare-lf-and-cr", b"a\n.\nb\rc\r\n.\r\r\nd\r\n.\r\n"),
        ("line-at-limit", line * 3 + b".\r\n"),
        ("line-one-over", b"x" * (LINE_LIMIT - 1) + b"\r\nafter\r\n.\r\n"),
        ("line-two-over", b"x" * LINE_LIMIT + b"\r\n.\r\n"),
        ("line-far-over", b"y" * (LINE_LIMIT * 5) + b"\r\n.\r\n"),
        ("long-line-then-terminator-split", b"y" * (LINE_LIMIT * 3) + b"\r\n.\r\n"),
        ("size-at-limit", line * (SIZE_LIMIT // len(line)) + b"z" * (SIZE_LIMIT % len(line) - 2) + b"\r\n.\r\n"),
        ("size-one-over", line * (SIZE_LIMIT // len(line)) + b"z" * (SIZE_LIMIT % len(line) - 1) + b"\r\n.\r\n"),
        ("size-far-over", line * 60 + b".\r\n"),
        ("over-size-then-long-line", line * 20 + b"y" * (LINE_LIMIT * 2) + b"\r\n.\r\n"),
        ("long-line-then-over-size", b"y" * (LINE_LIMIT * 2) + b"\r\n" + line * 20 + b".\r\n"),
        ("long-line-ending-over-size", line * 16 + b"y" * (LINE_LIMIT * 2) + b"\r\n.\r\n"),
    ]
    return cases


@pytest.mark.parametrize("split_seed", range(6))
@pytest.mark.parametrize(("name", "body"), stream_cases(), ids=[name for name, _ in stream_cases()])
def test_data_agrees_with_bare_aiosmtpd(serve: Callable[..., ThreadedMailServer], bare: BareAiosmtpd,
                                        name: str, body: bytes, split_seed: int) -> None:
    ours = serve({"name": "smtp", "protocol": "smtp", "tls": "plaintext", "role": "mta",
                  "limits": {"max_line_length": LINE_LIMIT, "max_message_size": SIZE_LIMIT}})
    opening = [b"EHLO t\r\n", b"MAIL FROM:<c@client.test>\r\n", b"RCPT TO:<alice@example.test>\r\n", b"DATA\r\n"]
    stream = body + b"NOOP\r\nQUIT\r\n"
    if split_seed == 0:
        pieces = [stream]  # the whole message and the next commands in one write
    else:
        rng = random.Random(split_seed)
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(1, 12))))
        pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)])]
    results = []
    for port in (ours.port("smtp"), bare.port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            replies = converse(sock, [*opening, *pieces])
        results.append([code for code, _ in replies])
    assert results[0] == results[1]
    assert results[0][4] == 354 and results[0][-2:] == [250, 221]  # NOOP and QUIT: the session went on
    kept_by_bare = bare.messages()
    ours_kept = ours.call(lambda: [m.data for m in ours.store.accounts["alice"].inbox.messages])
    accepted = results[0][5] == 250  # 220, EHLO, MAIL, RCPT, 354, then the reply to DATA
    assert len(ours_kept) == int(accepted)
    if accepted:
        assert ours_kept[0] == kept_by_bare[-1]


def test_a_client_gone_in_the_middle_of_data_leaves_nothing_half_stored(
        serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "smtp", "protocol": "smtp", "tls": "plaintext", "role": "mta"})
    opening = b"EHLO t\r\nMAIL FROM:<c@client.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
    with socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=10) as sock, \
            sock.makefile("rb") as reader:
        sock.sendall(opening + b"Subject: half\r\n\r\nfirst line\r\nsecond li")
        while not reader.readline().startswith(b"354 "):
            pass
    assert server.journal.wait_for(1)[0].ended is not None  # the server saw the client go
    with socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=10) as sock:
        replies = converse(sock, [opening, b"Subject: whole\r\n\r\nbody\r\n.\r\nQUIT\r\n"])
    assert [code for code, _ in replies] == [220, 250, 250, 250, 354, 250, 221]
    kept = server.call(lambda: [m.data for m in server.store.accounts["alice"].inbox.messages])
    assert kept == [b"Subject: whole\r\n\r\nbody\r\n"]
