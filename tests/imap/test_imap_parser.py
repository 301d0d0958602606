"""The IMAP grammar without I/O: framing (literals, pipelining, limits) and command arguments."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from mailmodes.protocols.imap.parser import (
    STAR,
    AndKey,
    AppendArgs,
    AppendMessage,
    Authenticate,
    CommandBytes,
    CommandError,
    CopyArgs,
    DateKey,
    FetchItem,
    FlagKey,
    Framer,
    HeaderKey,
    IdArgs,
    LineTooLong,
    ListArgs,
    LiteralRequest,
    Login,
    NewKey,
    NotKey,
    OrKey,
    RecentKey,
    SearchArgs,
    Section,
    SequenceKey,
    SequenceSet,
    SizeKey,
    StatusArgs,
    StoreArgs,
    TextKey,
    parse_command,
    split_head,
)


def frame_all(framer: Framer, *, accept: bool = True) -> list[object]:
    events: list[object] = []
    while (event := framer.next_command()) is not None:
        events.append(event)
        if isinstance(event, LiteralRequest):
            framer.accept_literal() if accept else framer.reject_literal()
    return events


# --- Framer --------------------------------------------------------------------------------


def test_pipelined_commands_come_out_one_by_one() -> None:
    framer = Framer(8192)
    framer.feed(b"a NOOP\r\nb CAPABILITY\r\nc LOGOUT\r\n")
    assert frame_all(framer) == [CommandBytes(b"a NOOP"), CommandBytes(b"b CAPABILITY"), CommandBytes(b"c LOGOUT")]


def test_a_command_split_across_reads_frames_the_same() -> None:
    whole = b'a LOGIN {5}\r\nalice "pw"\r\nb NOOP\r\n'
    for cut in range(1, len(whole)):
        framer = Framer(8192)
        events: list[object] = []
        for piece in (whole[:cut], whole[cut:]):
            framer.feed(piece)
            events += frame_all(framer)
        assert [e for e in events if isinstance(e, CommandBytes)] == [
            CommandBytes(b'a LOGIN {5}\r\nalice "pw"', start=13, literals=((13, 18),)),
            CommandBytes(b"b NOOP"),
        ], cut


def test_byte_at_a_time() -> None:
    framer = Framer(8192)
    events: list[object] = []
    for byte in b"x SELECT {5+}\r\nINBOX\r\n":
        framer.feed(bytes([byte]))
        events += frame_all(framer)
    assert events == [LiteralRequest(b"x SELECT {5+}", 5, False, 5, b"x SELECT {5+}\r\n"),
                      CommandBytes(b"x SELECT {5+}\r\nINBOX", start=15, literals=((15, 20),))]


def test_synchronizing_literal_is_announced_once_before_its_bytes() -> None:
    framer = Framer(8192)
    framer.feed(b"a LOGIN {5}\r\n")
    assert framer.next_command() == LiteralRequest(b"a LOGIN {5}", 5, True, 5, b"a LOGIN {5}\r\n")
    framer.accept_literal()
    assert framer.next_command() is None
    framer.feed(b"ali")
    assert framer.next_command() is None
    framer.feed(b"ce {3}\r\n")
    # Each event carries the command so far and where its new part starts: the journal shows
    # every byte once, in wire order.
    assert framer.next_command() == LiteralRequest(b"a LOGIN {5}\r\nalice {3}", 3, True, 8,
                                                   b"a LOGIN {5}\r\nalice {3}\r\n", 13, ((13, 18),))
    framer.accept_literal()
    framer.feed(b"pw!\r\n")
    assert framer.next_command() == CommandBytes(b"a LOGIN {5}\r\nalice {3}\r\npw!", 24, ((13, 18), (24, 27)))


def test_literal_may_contain_line_breaks_and_braces() -> None:
    framer = Framer(8192)
    framer.feed(b"a APPEND INBOX {12}\r\nx\r\n{3}\r\nyz\r\n\r\nb NOOP\r\n")
    assert frame_all(framer)[1:] == [CommandBytes(b"a APPEND INBOX {12}\r\nx\r\n{3}\r\nyz\r\n", 21, ((21, 33),)),
                                     CommandBytes(b"b NOOP")]


def test_refused_synchronizing_literal_is_not_read() -> None:
    framer = Framer(8192)
    framer.feed(b"a APPEND INBOX {99999}\r\nb NOOP\r\n")
    assert isinstance(framer.next_command(), LiteralRequest)
    framer.reject_literal()
    # RFC 3501 7.5: without "+" the client does not send the literal; what follows is a command.
    assert framer.next_command() == CommandBytes(b"b NOOP")


def test_refused_non_synchronizing_literal_is_swallowed() -> None:
    framer = Framer(8192)
    framer.feed(b"a APPEND INBOX {10+}\r\n0123456")
    assert isinstance(framer.next_command(), LiteralRequest)
    framer.reject_literal()
    assert framer.next_command() is None
    framer.feed(b"789 more {4+}\r\nNOOP\r\nb NOOP\r\n")
    assert framer.next_command() == CommandBytes(b"b NOOP")
    # The literal and the rest of its line, dropped unread: counted for the journal, once.
    assert framer.take_skipped() == len(b"0123456789 more {4+}\r\nNOOP\r\n")
    assert framer.take_skipped() == 0


def test_line_too_long_resyncs_at_the_next_line() -> None:
    framer = Framer(20)
    framer.feed(b"a SEARCH SUBJECT " + b"x" * 30)
    assert framer.next_command() == LineTooLong(b"a SEARCH SUBJECT " + b"x" * 30)
    framer.feed(b"yyyy\r\nb NOOP\r\n")
    assert framer.next_command() == CommandBytes(b"b NOOP")
    assert framer.take_skipped() == len(b"a SEARCH SUBJECT " + b"x" * 30 + b"yyyy\r\n")


def test_line_length_counts_all_text_of_a_command_but_not_literals() -> None:
    framer = Framer(30)
    framer.feed(b"a LOGIN {40}\r\n" + b"u" * 40 + b" pass\r\n")
    events = frame_all(framer)
    assert events[-1] == CommandBytes(b"a LOGIN {40}\r\n" + b"u" * 40 + b" pass", 14, ((14, 54),))
    framer.feed(b"b LOGIN {1}\r\nu " + b"p" * 30 + b"\r\n")
    assert isinstance(frame_all(framer)[-1], LineTooLong)


def test_bare_lf_and_empty_lines() -> None:
    framer = Framer(8192)
    framer.feed(b"\r\n\na NOOP\nb NOOP\r\n")
    assert frame_all(framer) == [CommandBytes(b"a NOOP"), CommandBytes(b"b NOOP")]


def test_drop_forgets_and_counts_the_buffer() -> None:
    framer = Framer(8192)
    framer.feed(b"a STARTTLS\r\nb LOGIN alice secret\r\n")
    assert framer.next_command() == CommandBytes(b"a STARTTLS")
    assert framer.drop() == len(b"b LOGIN alice secret\r\n")
    assert framer.next_command() is None


def test_next_line_for_continuations() -> None:
    framer = Framer(10)
    framer.feed(b"DONE\r\nAAAA")
    assert framer.next_line() == b"DONE"
    assert framer.next_line() is None
    framer.feed(b"AAAAAAAAA")
    assert isinstance(framer.next_line(), LineTooLong)


def test_split_head() -> None:
    assert split_head(b"a001 append INBOX {5}") == ("a001", "APPEND")
    assert split_head(b"+ bad") == (None, "")
    assert split_head(b"tag") == (None, "")


# --- Commands ------------------------------------------------------------------------------


def test_login_with_atoms_quoted_strings_and_literals() -> None:
    assert parse_command(b"a LOGIN alice pw").args == Login(b"alice", b"pw")
    assert parse_command(b'a login "al\\"ice" "p w\\\\"').args == Login(b'al"ice', b"p w\\")
    assert parse_command(b"a LOGIN {5}\r\nalice {2+}\r\npw").args == Login(b"alice", b"pw")


def test_tag_and_name() -> None:
    command = parse_command(b"A0001.x uid fetch 1:* FLAGS")
    assert (command.tag, command.name, command.uid) == ("A0001.x", "FETCH", True)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"a FOO", "Unknown command"),
        (b"a UID NOOP", "Unknown UID command NOOP"),
        (b"a NOOP extra", "Unexpected extra arguments"),
        (b"a LOGIN alice", "Missing argument"),
        (b"a  NOOP", "Expected an atom"),
        (b"a SELECT", "Missing argument"),
        (b'a LOGIN "alice pw', "Expected a quoted string"),
        (b"a FETCH 0 FLAGS", "Invalid sequence number"),
        (b"a FETCH 1 FOO", "Unknown FETCH item FOO"),
        (b"a FETCH 1 BODY[1.HEADER.FOO]", "Invalid section HEADER.FOO"),
        (b"a FETCH 1 BODY[MIME]", "Invalid section MIME"),
        (b"a STORE 1 +FLAGS (\\Recent)", "Invalid system flag \\RECENT"),
        (b"a STORE 1 +FLAGS (\\Foo)", "Invalid system flag \\FOO"),
        (b"a STORE 1 FOO (\\Seen)", "Invalid STORE item FOO"),
        (b"a SEARCH FOO", "Unknown search key FOO"),
        (b"a SEARCH SINCE 31-Feb-2020", "Invalid date"),
        (b"a STATUS INBOX (MESSAGES FOO)", "Unknown STATUS item FOO"),
        (b"a APPEND INBOX hello", "APPEND needs the message as a literal"),
    ],
)
def test_errors_name_the_tag(line: bytes, message: str) -> None:
    with pytest.raises(CommandError) as error:
        parse_command(line)
    assert (error.value.tag, error.value.message) == ("a", message)


def test_invalid_tag() -> None:
    with pytest.raises(CommandError) as error:
        parse_command(b"+ NOOP")
    assert error.value.tag is None


def test_sequence_sets() -> None:
    args = parse_command(b"a FETCH 1,3:5,7:*,*,9:2 UID").args
    assert args.sequence == SequenceSet(((1, 1), (3, 5), (7, STAR), (STAR, STAR), (9, 2)))
    assert list(args.sequence.resolve(8)) == [(1, 1), (3, 5), (7, 8), (8, 8), (2, 9)]
    # RFC 3501 6.4.8: 559:* includes the last UID even when 559 is above it.
    assert list(SequenceSet(((559, STAR),)).resolve(20)) == [(20, 559)]
    assert str(args.sequence) == "1,3:5,7:*,*,9:2"


def test_fetch_macros_and_items() -> None:
    assert parse_command(b"a FETCH 1 fast").args.items == (
        FetchItem("FLAGS"), FetchItem("INTERNALDATE"), FetchItem("RFC822.SIZE"),
    )
    assert [i.name for i in parse_command(b"a FETCH 1 ALL").args.items] == [
        "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE",
    ]
    assert [i.name for i in parse_command(b"a FETCH 1 FULL").args.items][-1] == "BODY"
    items = parse_command(
        b"a FETCH 1 (UID body.peek[HEADER.FIELDS (From \"To\")] BODY[1.2.MIME] BODY[]<0.100> "
        b"BODY[3.TEXT] BODY[HEADER.FIELDS.NOT (X-A)] BODYSTRUCTURE RFC822.SIZE BODY[4]<10.5>)"
    ).args.items
    assert items == (
        FetchItem("UID"),
        FetchItem("BODY", Section((), "HEADER.FIELDS", ("From", "To")), peek=True),
        FetchItem("BODY", Section((1, 2), "MIME")),
        FetchItem("BODY", Section(), partial=(0, 100)),
        FetchItem("BODY", Section((3,), "TEXT")),
        FetchItem("BODY", Section((), "HEADER.FIELDS.NOT", ("X-A",))),
        FetchItem("BODYSTRUCTURE"),
        FetchItem("RFC822.SIZE"),
        FetchItem("BODY", Section((4,)), partial=(10, 5)),
    )
    assert items[1].section is not None and items[1].section.label() == "HEADER.FIELDS (FROM TO)"
    assert items[2].section is not None and items[2].section.label() == "1.2.MIME"


def test_store() -> None:
    assert parse_command(b"a STORE 2:4 +FLAGS.SILENT (\\deleted $Junk)").args == StoreArgs(
        SequenceSet(((2, 4),)), "+", True, ("\\Deleted", "$Junk")
    )
    assert parse_command(b"a UID STORE 5 FLAGS \\Seen \\Answered").args == StoreArgs(
        SequenceSet(((5, 5),)), "", False, ("\\Seen", "\\Answered")
    )
    assert parse_command(b"a STORE 1 -FLAGS ()").args == StoreArgs(SequenceSet(((1, 1),)), "-", False, ())


def test_append_with_flags_and_date() -> None:
    args = parse_command(b'a APPEND saved (\\Seen) " 7-Feb-1994 21:52:25 -0800" {3}\r\nabc').args
    when = datetime(1994, 2, 7, 21, 52, 25, tzinfo=timezone(-timedelta(hours=8)))
    assert args == AppendArgs("saved", (AppendMessage(("\\Seen",), when, b"abc"),))
    assert parse_command(b"a APPEND inbox {0+}\r\n").args == AppendArgs("INBOX", (AppendMessage((), None, b""),))
    # MULTIAPPEND (RFC 3502): several messages, each with its own flags and date; literal8 too.
    args = parse_command(b"a APPEND x {1+}\r\na (\\Seen) {1+}\r\nb ~{1+}\r\n\0").args
    assert args == AppendArgs(
        "x", (AppendMessage((), None, b"a"), AppendMessage(("\\Seen",), None, b"b"), AppendMessage((), None, b"\0", True))
    )


def test_list_status_copy_authenticate_id() -> None:
    assert parse_command(b'a LIST "" *').args == ListArgs("", "*")
    assert parse_command(b"a LIST ~/Mail/ %/a]").args == ListArgs("~/Mail/", "%/a]")
    assert parse_command(b"a STATUS Sent (messages UIDNEXT)").args == StatusArgs("Sent", ("MESSAGES", "UIDNEXT"))
    assert parse_command(b'a MOVE 1:2 "My Box"').args == CopyArgs(SequenceSet(((1, 2),)), "My Box")
    assert parse_command(b"a AUTHENTICATE plain AGFsaWNlAHB3").args == Authenticate("PLAIN", b"AGFsaWNlAHB3")
    assert parse_command(b"a AUTHENTICATE PLAIN =").args == Authenticate("PLAIN", b"=")
    assert parse_command(b"a AUTHENTICATE PLAIN").args == Authenticate("PLAIN", None)
    assert parse_command(b'a ID ("name" "x" "version" NIL)').args == IdArgs((("name", "x"), ("version", None)))
    assert parse_command(b"a ID NIL").args == IdArgs(None)


def test_search_program() -> None:
    args = parse_command(
        b"a SEARCH CHARSET utf-8 OR FROM alice (UNSEEN LARGER 100) NOT 2:4 SINCE 1-Feb-1994 "
        b'HEADER X-Foo "" NEW OLD KEYWORD $Junk SENTON "12-Mar-2021" TEXT {3}\r\nabc UID 1:*'
    ).args
    assert args == SearchArgs(
        "UTF-8",
        AndKey((
            OrKey(HeaderKey("From", "alice"), AndKey((FlagKey("\\Seen", False), SizeKey(True, 100)))),
            NotKey(SequenceKey(SequenceSet(((2, 4),)), uid=False)),
            DateKey(False, "SINCE", date(1994, 2, 1)),
            HeaderKey("X-Foo", ""),
            NewKey(),
            RecentKey(False),
            FlagKey("$Junk", True),
            DateKey(True, "ON", date(2021, 3, 12)),
            TextKey("abc", body_only=False),
            SequenceKey(SequenceSet(((1, STAR),)), uid=True),
        )),
    )
    assert parse_command(b"a SEARCH ALL").args == SearchArgs(None, parse_command(b"a SEARCH ALL").args.key)
