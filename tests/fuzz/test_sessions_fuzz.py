"""Issue 16, build item 3: property-based tests (hypothesis) over the sans-I/O cores. Whatever
bytes arrive, in whatever pieces: the session answers with protocol bytes or closes, never
raises, never reports an internal error (SERVERBUG), and says nothing once it has closed.

Derandomized (the examples are the same on every run, so a CI failure reproduces locally) and
bounded: max_examples keeps the whole module to a few seconds.
"""

from __future__ import annotations

from types import SimpleNamespace

from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailmodes.protocols.events import Close, Delay, NoTls, Output, StartTls
from mailmodes.protocols.imap.parser import CommandError, parse_command
from mailmodes.protocols.imap.session import ImapSession
from mailmodes.protocols.pop3 import LineBuffer, LineTooLong, Pop3Session
from mailmodes.protocols.smtp_hotpaths import parse_simple_path, scan_data, unstuff
from support import make_store, sans_io_connection

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow],
                print_blob=True, database=None)
SESSION_FUZZ = settings(FUZZ, max_examples=100)  # each example is a whole session

# Words the grammars know, so that examples get past the first token often enough to matter.
IMAP_WORDS = [
    b"a", b"b1", b"*", b"UID", b"LOGIN", b"alice", b"alice-password", b"SELECT", b"INBOX", b"EXAMINE", b"FETCH",
    b"STORE", b"SEARCH", b"COPY", b"MOVE", b"APPEND", b"IDLE", b"DONE", b"AUTHENTICATE", b"PLAIN", b"LIST", b"LSUB",
    b"STATUS", b"CREATE", b"DELETE", b"RENAME", b"NOOP", b"CAPABILITY", b"LOGOUT", b"STARTTLS", b"ENABLE", b"ID",
    b"NAMESPACE", b"EXPUNGE", b"CLOSE", b"UNSELECT", b"1", b"1:*", b"*:2", b"0", b"4294967296", b"(FLAGS)",
    b"BODY[]", b"BODY.PEEK[HEADER.FIELDS (SUBJECT)]", b"BODY[1.2.MIME]<0.10>", b"+FLAGS", b"(\\Seen)", b"ALL",
    b"OR", b"NOT", b"HEADER", b"SINCE", b"1-Feb-2022", b"{3}", b"{5+}", b"{0}", b"\"q\\\"uoted\"", b"()", b"NIL",
    b"(UIDNEXT MESSAGES)", b"%", b"\"\"", b"AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", b"=", b"\xff", b"\x00", b"\r", b"\n",
]
POP3_WORDS = [
    b"USER", b"PASS", b"APOP", b"AUTH", b"PLAIN", b"CAPA", b"STLS", b"STAT", b"LIST", b"UIDL", b"RETR", b"TOP",
    b"DELE", b"NOOP", b"RSET", b"QUIT", b"alice", b"alice-password", b"1", b"2", b"0", b"-1", b"99999999999999999999",
    b"*", b"=", b"AGFsaWNlAGFsaWNlLXBhc3N3b3Jk", b"d41d8cd98f00b204e9800998ecf8427e", b"\xc3\xa9" * 16, b"\xff",
    b"\x00", b"\r",
]


def lines_of(words: list[bytes]) -> st.SearchStrategy[bytes]:
    word = st.one_of(st.sampled_from(words), st.binary(max_size=8))
    line = st.lists(word, max_size=6).map(b" ".join)
    ending = st.sampled_from([b"\r\n", b"\r\n", b"\n", b""])
    return st.lists(st.tuples(line, ending).map(b"".join), min_size=1, max_size=8).map(b"".join)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[start:end] for start, end in zip(points, points[1:])]


def drive(session: ImapSession | Pop3Session, pieces: list[bytes]) -> list[Output]:
    """Feed the pieces as a connection would (acting on StartTls), checking each answer."""
    outputs = list(session.greeting())
    closed = False
    for piece in pieces:
        answer = session.feed(piece)
        if closed:
            assert all(not isinstance(item, bytes) or not item for item in answer), answer
        for item in answer:
            assert isinstance(item, (bytes, StartTls, Close, NoTls, Delay)), item
            if isinstance(item, bytes):
                assert item.endswith(b"\r\n") and b"SERVERBUG" not in item, item
            elif isinstance(item, StartTls):
                session.security.tls_started()
                answer += session.tls_started()
            elif isinstance(item, (Close, NoTls)):
                closed = True
        outputs += answer
    session.connection_lost()
    return outputs


def imap_session(mode: str) -> ImapSession:
    store = make_store()
    store.accounts["alice"].inbox.append(b"Subject: one\r\n\r\nbody\r\n")
    store.accounts["alice"].inbox.append(b"Subject: two\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                                         b"\r\npart\r\n--b--\r\n")
    return ImapSession(sans_io_connection("imap", mode, limits={"max_bad_commands": 50}), store, "mail.example.test")


def pop3_session(mode: str, apop: bool) -> Pop3Session:
    store = make_store()
    store.accounts["alice"].inbox.append(b"Subject: one\r\n\r\n.dot\r\nbody\r\n")
    connection = sans_io_connection("pop3", mode, limits={"max_bad_commands": 50})
    return Pop3Session(connection, store, "mail.example.test", apop=apop)


LOGGED_IN = b"a LOGIN alice alice-password\r\nb SELECT INBOX\r\n"


@SESSION_FUZZ
@given(data=lines_of(IMAP_WORDS), cuts=st.lists(st.integers(min_value=0), max_size=6),
       mode=st.sampled_from(["plaintext", "starttls-required", "implicit"]), logged_in=st.booleans())
def test_imap_session_answers_anything(data: bytes, cuts: list[int], mode: str, logged_in: bool) -> None:
    drive(imap_session(mode), chunked((LOGGED_IN if logged_in else b"") + data, cuts))


@FUZZ
@given(data=st.binary(max_size=300))
def test_imap_parser_either_parses_or_says_why(data: bytes) -> None:
    try:
        parse_command(data)
    except CommandError as error:
        assert isinstance(error.message, str)


@SESSION_FUZZ
@given(data=lines_of(IMAP_WORDS))
def test_imap_parser_on_command_shaped_lines(data: bytes) -> None:
    for line in data.split(b"\r\n"):
        try:
            parse_command(line)
        except CommandError:
            pass


@SESSION_FUZZ
@given(data=lines_of(POP3_WORDS), cuts=st.lists(st.integers(min_value=0), max_size=6),
       mode=st.sampled_from(["plaintext", "starttls-required", "implicit"]), apop=st.booleans(),
       logged_in=st.booleans())
def test_pop3_session_answers_anything(data: bytes, cuts: list[int], mode: str, apop: bool, logged_in: bool) -> None:
    prefix = b"USER alice\r\nPASS alice-password\r\n" if logged_in else b""
    drive(pop3_session(mode, apop), chunked(prefix + data, cuts))


@FUZZ
@given(pieces=st.lists(st.binary(max_size=400), max_size=8), limit=st.integers(min_value=4, max_value=300))
def test_pop3_lines_never_exceed_the_limit(pieces: list[bytes], limit: int) -> None:
    buffer = LineBuffer()
    for piece in pieces:
        buffer.append(piece)
        while (line := buffer.next_line(limit)) is not None:
            assert isinstance(line, LineTooLong) or len(line) + 2 <= limit
        assert buffer.pending() < limit


# --- SMTP's fast paths: aiosmtpd's own answer whenever they take the input --------------------


def aiosmtpd_getaddr(arg: str) -> tuple[str | None, str | None]:
    return SMTP._getaddr(SimpleNamespace(local_part_limit=0), arg)  # type: ignore[arg-type]


PATH_TEXT = st.text(alphabet=st.sampled_from(list("<>@.ab-_+ \t()\"[]:\\é1")), max_size=30)


@FUZZ
@given(arg=PATH_TEXT)
def test_the_simple_path_agrees_with_aiosmtpd(arg: str) -> None:
    fast = parse_simple_path(arg)
    if fast is not None:
        assert fast == aiosmtpd_getaddr(arg)


@FUZZ
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=10),
       tail=st.binary(max_size=20))
def test_dot_stuffing_round_trips_and_the_scan_finds_the_end(lines: list[bytes], tail: bytes) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    stuffed = b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)
    assert unstuff(stuffed) == message
    batch = scan_data(stuffed + b".\r\n" + tail)
    assert batch.terminated and batch.lines == len(stuffed)
    unterminated = scan_data(stuffed + tail.replace(b"\n", b""))
    assert unterminated.lines <= len(stuffed) + len(tail)
