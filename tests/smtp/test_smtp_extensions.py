"""Issue 20, item 4: SMTPUTF8, PIPELINING, ENHANCEDSTATUSCODES, CHUNKING (BDAT), DSN and
REQUIRETLS, and the per-listener `smtp_extensions` that hides any of them. Real clients where one
implements the extension (swaks --pipeline, msmtp's DSN and pipelining, smtplib and curl for
SMTPUTF8), raw bytes for BDAT, which none of the installed clients sends."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.config import ConfigError
from mailmodes.protocols.smtp_extensions import (
    SMTP_EXTENSIONS,
    ParameterError,
    bdat_arguments,
    mail_extensions,
    parameters,
    rcpt_extensions,
    without_enhanced_code,
    xtext,
)
from support import CLIENT_TIMEOUT, HOSTNAME, make_config, one_session, run_client

HOST = "127.0.0.1"
ALL = set(SMTP_EXTENSIONS)


def mta(tls: str = "starttls-optional", **options: Any) -> dict[str, Any]:
    return {"name": "l", "protocol": "smtp", "tls": tls, "role": "mta", **options}


def inbox(server: ThreadedMailServer, user: str) -> list[bytes]:
    return server.call(lambda: [m.data for m in server.store.accounts[user].inbox.messages])


def keywords(client: smtplib.SMTP) -> set[str]:
    code, _ = client.ehlo()
    assert code == 250
    return {keyword.upper() for keyword in client.esmtp_features}


# --- EHLO ---------------------------------------------------------------------------------------


def test_ehlo_offers_the_extensions_and_requiretls_only_inside_tls(
        serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve(mta())
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        offered = keywords(client)
        assert ALL - {"REQUIRETLS"} <= offered and "REQUIRETLS" not in offered
        client.starttls(context=client_context)
        assert ALL <= keywords(client)
    implicit = serve(mta("implicit"))
    with smtplib.SMTP_SSL(HOST, implicit.port("l"), context=client_context, timeout=CLIENT_TIMEOUT) as client:
        assert ALL <= keywords(client)


def test_the_order_of_the_ehlo_lines(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta())
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        _, text = client.ehlo()
    assert text.decode().splitlines() == [
        HOSTNAME, "SIZE 26214400", "8BITMIME", "SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN",
        "STARTTLS", "AUTH LOGIN PLAIN", "HELP"]  # (aiosmtpd used to offer "AUTH LOGIN PLAIN failures")


@pytest.mark.parametrize("hidden", SMTP_EXTENSIONS)
def test_each_extension_can_be_hidden(serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext,
                                      hidden: str) -> None:
    server = serve(mta("implicit", smtp_extensions=[e for e in SMTP_EXTENSIONS if e != hidden]))
    with smtplib.SMTP_SSL(HOST, server.port("l"), context=client_context, timeout=CLIENT_TIMEOUT) as client:
        assert keywords(client) & ALL == ALL - {hidden}
        # ... and what it stood for is refused as a server without it would
        refused = {
            "SMTPUTF8": ("MAIL FROM:<alice@example.test> SMTPUTF8", 555),
            "PIPELINING": ("NOOP", 250),  # nothing to refuse: a pipelining client just must not pipeline
            "ENHANCEDSTATUSCODES": ("MAIL FROM:<alice@example.test> BOGUS=1", 555),
            "CHUNKING": ("BDAT 0 LAST", 500),
            "DSN": ("MAIL FROM:<alice@example.test> RET=HDRS", 555),
            "REQUIRETLS": ("MAIL FROM:<alice@example.test> REQUIRETLS", 555),
        }[hidden]
        code, text = client.docmd(refused[0])
        assert code == refused[1], text
        # Without ENHANCEDSTATUSCODES no reply carries one (RFC 2034 section 3).
        if hidden == "ENHANCEDSTATUSCODES":
            assert text == b"MAIL FROM parameters not recognized or not implemented"
            assert client.docmd("MAIL FROM:<alice@example.test>") == (250, b"OK")
        else:
            assert text[:2] in (b"5.", b"2.")


def test_nothing_offered(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta(smtp_extensions=[]))
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        assert keywords(client) & ALL == set()
        assert client.docmd("HELP") == (250, b"Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET "
                                             b"STARTTLS VRFY")  # no BDAT
        client.sendmail("alice@example.test", ["bob@example.test"], b"Subject: plain\r\n\r\nhi\r\n")
        assert client.docmd("RCPT TO:<bob@example.test>") == (503, b"Error: need MAIL command")
    assert len(inbox(server, "bob")) == 1


@pytest.mark.parametrize(("options", "message"), [
    ({"smtp_extensions": ["CHUNKING", "NOPE"]}, "smtp_extensions: must be a list of some of: SMTPUTF8, PIPELINING"),
    ({"smtp_extensions": "DSN"}, "smtp_extensions: must be a list, not str"),
])
def test_bad_smtp_extensions_are_config_errors(certs_dir: Any, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(certs_dir, (mta(**options),))
    with pytest.raises(ConfigError, match="smtp_extensions: is an SMTP option"):
        make_config(certs_dir, ({"protocol": "imap", "tls": "implicit", "smtp_extensions": []},))


# --- ENHANCEDSTATUSCODES, PIPELINING ------------------------------------------------------------


def test_replies_carry_enhanced_codes(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta())
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        assert client.docmd("MAIL FROM:<alice@example.test>") == (503, b"5.5.1 Error: send HELO first")
        assert client.docmd("EHLO") == (501, b"5.5.4 Syntax: EHLO hostname")
        client.ehlo()
        assert client.docmd("MAIL FROM:<alice@example.test> BOGUS=1") == (
            555, b"5.5.4 MAIL FROM parameters not recognized or not implemented")
        assert client.docmd("MAIL FROM:<alice@example.test> BODY=9BIT") == (
            501, b"5.5.4 Error: BODY can only be one of 7BIT, 8BITMIME")
        assert client.docmd("MAIL FROM:<alice@example.test>") == (250, b"2.1.0 OK")
        assert client.docmd("RCPT TO:<bob@example.test> BOGUS=1") == (
            555, b"5.5.4 RCPT TO parameters not recognized or not implemented")
        assert client.docmd("RCPT TO:<nobody@example.test>") == (550, b"5.1.1 User unknown")
        assert client.docmd("RCPT TO:<bob@example.test>") == (250, b"2.1.5 OK")
        assert client.docmd("RSET") == (250, b"2.0.0 OK")


@pytest.mark.parametrize("offered", [True, False])
def test_swaks_pipelines_when_offered(serve: Callable[..., ThreadedMailServer], offered: bool) -> None:
    extensions = SMTP_EXTENSIONS if offered else [e for e in SMTP_EXTENSIONS if e != "PIPELINING"]
    server = serve(mta(smtp_extensions=list(extensions)))
    result = run_client(["swaks", "--server", HOST, "--port", str(server.port("l")), "--pipeline", "--from",
                         "alice@example.test", "--to", "bob@example.test", "--timeout", "10"])
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert result.returncode == 0, result.stdout
    at = lines.index("-> MAIL FROM:<alice@example.test>")
    if offered:
        # MAIL, RCPT and DATA in one go, then the three replies (RFC 2920)
        assert lines[at:at + 6] == ["-> MAIL FROM:<alice@example.test>", "-> RCPT TO:<bob@example.test>", "-> DATA",
                                    "<-  250 2.1.0 OK", "<-  250 2.1.5 OK", "<-  354 End data with <CR><LF>.<CR><LF>"]
    else:
        # swaks falls back to one command at a time
        assert lines[at:at + 4] == ["-> MAIL FROM:<alice@example.test>", "<-  250 2.1.0 OK",
                                    "-> RCPT TO:<bob@example.test>", "<-  250 2.1.5 OK"]
    assert len(inbox(server, "bob")) == 1


# --- SMTPUTF8 -----------------------------------------------------------------------------------


def test_smtplib_sends_smtputf8(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta(), catch_all="bob")
    message = EmailMessage()
    message["From"] = "alice@example.test"
    message["To"] = "bücher@example.test"
    message["Subject"] = "Grüße"
    message.set_content("hällo")
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        # smtplib asks for SMTPUTF8 itself when an address is not ASCII and the server offers it
        assert client.send_message(message) == {}
    record = one_session(server)
    envelope, = record.envelopes
    assert envelope["smtputf8"] is True and envelope["recipients"][0]["address"] == "bücher@example.test"
    assert "Grüße".encode() in inbox(server, "bob")[0]


def test_without_smtputf8_smtplib_refuses_to_send(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta(smtp_extensions=["DSN"]), catch_all="bob")
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        message = EmailMessage()
        message["From"], message["To"] = "alice@example.test", "bücher@example.test"
        message.set_content("x")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.send_message(message)
        # and the server takes no non-ASCII command line (RFC 6531 section 3.2)
        client.send("RCPT TO:<bücher@example.test>\r\n".encode())
        assert client.getreply() == (500, b"Error: non-ASCII command, SMTPUTF8 not offered")  # no ENHANCEDSTATUSCODES


def test_curl_sends_smtputf8(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta(), catch_all="bob")
    result = run_client(["curl", "-sS", "--max-time", "10", f"smtp://{HOST}:{server.port('l')}", "--mail-from",
                         "alice@example.test", "--mail-rcpt", "bücher@example.test", "-T", "-"],
                        stdin=b"Subject: x\r\n\r\nhi\r\n")
    assert result.returncode == 0, result.stderr
    assert one_session(server).envelopes[0]["smtputf8"] is True


# --- DSN ----------------------------------------------------------------------------------------


def test_msmtp_dsn_parameters_are_recorded(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta())
    result = run_client(["msmtp", f"--host={HOST}", f"--port={server.port('l')}", "--tls=off",
                         "--from=alice@example.test", "--dsn-notify=success,failure", "--dsn-return=hdrs",
                         "bob@example.test"], stdin=b"Subject: dsn\n\nhi\n")
    assert result.returncode == 0, result.stderr
    envelope, = one_session(server).envelopes
    assert envelope["ret"] == "HDRS" and envelope["envid"] is None
    assert envelope["recipients"] == [{"address": "bob@example.test", "notify": ("SUCCESS", "FAILURE"), "orcpt": None}]
    assert envelope["via"] == "DATA" and envelope["reply"] == "250 2.0.0 OK: message accepted"


def test_envid_and_orcpt_are_decoded(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta())
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        assert client.docmd("MAIL FROM:<alice@example.test> RET=full ENVID=QQ314159+2Bx")[0] == 250
        assert client.docmd("RCPT TO:<bob@example.test> NOTIFY=NEVER ORCPT=rfc822;Bob+2Bdsn@example.test")[0] == 250
        assert client.data(b"Subject: dsn\r\n\r\nhi\r\n")[0] == 250
    envelope, = one_session(server).envelopes
    assert (envelope["ret"], envelope["envid"]) == ("FULL", "QQ314159+x")
    assert envelope["recipients"][0] == {"address": "bob@example.test", "notify": ("NEVER",),
                                         "orcpt": "rfc822;Bob+dsn@example.test"}


@pytest.mark.parametrize(("command", "reply"), [
    ("MAIL FROM:<alice@example.test> RET=ALL", "5.5.4 RET must be FULL or HDRS (RFC 3461 section 4.3)"),
    ("MAIL FROM:<alice@example.test> RET=FULL RET=HDRS", "5.5.4 Duplicate RET parameter"),
    ("MAIL FROM:<alice@example.test> ENVID=a=b", "5.5.4 ENVID is not valid xtext (RFC 3461 section 4)"),
    ("MAIL FROM:<alice@example.test> ENVID=" + "x" * 101, "5.5.4 ENVID longer than 100 characters (RFC 3461)"),
])
def test_bad_mail_dsn_parameters(serve: Callable[..., ThreadedMailServer], command: str, reply: str) -> None:
    server = serve(mta())
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        assert client.docmd(command) == (501, reply.encode())
        assert client.docmd("MAIL FROM:<alice@example.test>")[0] == 250  # the session goes on


@pytest.mark.parametrize("parameter", ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "NOTIFY=", "ORCPT=bob@example.test",
                                       "ORCPT=rfc822;", "NOTIFY=DELAY NOTIFY=DELAY"])
def test_bad_rcpt_dsn_parameters(serve: Callable[..., ThreadedMailServer], parameter: str) -> None:
    server = serve(mta())
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        client.docmd("MAIL FROM:<alice@example.test>")
        code, text = client.docmd(f"RCPT TO:<bob@example.test> {parameter}")
        assert code == 501 and text.startswith(b"5.5.4 "), text
        assert client.docmd("RCPT TO:<bob@example.test>")[0] == 250


# --- REQUIRETLS ---------------------------------------------------------------------------------


def test_requiretls_inside_tls_only(serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve(mta())
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        # not offered in the clear: refused like any unknown parameter
        assert client.docmd("MAIL FROM:<alice@example.test> REQUIRETLS") == (
            555, b"5.5.4 MAIL FROM parameters not recognized or not implemented")
        client.starttls(context=client_context)
        client.ehlo()
        assert client.docmd("MAIL FROM:<alice@example.test> REQUIRETLS=yes") == (
            501, b"5.5.4 REQUIRETLS takes no value (RFC 8689 section 4.1)")
        assert client.docmd("MAIL FROM:<alice@example.test> REQUIRETLS") == (250, b"2.1.0 OK")
        assert client.docmd("RCPT TO:<bob@example.test>")[0] == 250
        assert client.data(b"Subject: tls only\r\n\r\nhi\r\n")[0] == 250
    envelope, = one_session(server).envelopes
    assert envelope["requiretls"] is True


# --- CHUNKING: BDAT, byte by byte ---------------------------------------------------------------


class Raw:
    """A plain socket speaking SMTP: BDAT's octets exactly as written, replies as they come."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT)
        self.buffer = b""
        assert self.reply().startswith(b"220 ")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One whole reply (every line of a multi-line one)."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                data = self.sock.recv(65536)
                if not data:
                    raise ConnectionError(f"closed after {lines!r} {self.buffer!r}")
                self.buffer += data
            line, _, self.buffer = self.buffer.partition(b"\r\n")
            lines.append(line)
            if line[3:4] != b"-":
                return b"\r\n".join(lines)

    def replies(self, count: int) -> list[bytes]:
        return [self.reply() for _ in range(count)]

    def transaction(self, sender: bytes = b"alice@example.test") -> None:
        self.send(b"EHLO client.test\r\nMAIL FROM:<" + sender + b">\r\nRCPT TO:<bob@example.test>\r\n")
        ehlo, mail, rcpt = self.replies(3)
        assert b"CHUNKING" in ehlo and mail == b"250 2.1.0 OK" and rcpt == b"250 2.1.5 OK"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(serve: Callable[..., ThreadedMailServer]) -> Callable[..., tuple[ThreadedMailServer, Raw]]:
    opened: list[Raw] = []

    def start(**options: Any) -> tuple[ThreadedMailServer, Raw]:
        server = serve(mta(**options))
        opened.append(Raw(server.port("l")))
        return server, opened[-1]

    yield start
    for connection in opened:
        connection.close()


# Binary-clean: no dot-stuffing, a "." line, bare CR and LF and NUL are content like any other.
CONTENT = b"Subject: chunks\r\n\r\n.\r\nline\rbare\nnul\x00\r\n.\r\n"


def test_bdat_chunks_make_the_message_exactly(raw: Callable[..., tuple[ThreadedMailServer, Raw]]) -> None:
    server, client = raw()
    client.transaction()
    first, second = CONTENT[:20], CONTENT[20:]
    client.send(b"BDAT %d\r\n" % len(first) + first)
    assert client.reply() == b"250 2.0.0 20 octets received"
    client.send(b"BDAT %d LAST\r\n" % len(second) + second)
    assert client.reply() == b"250 2.0.0 OK: message accepted"
    client.send(b"QUIT\r\n")
    assert client.reply() == b"221 2.0.0 Bye"
    assert inbox(server, "bob") == [CONTENT]
    record = one_session(server)
    assert record.envelopes[0]["via"] == "BDAT" and record.envelopes[0]["chunks"] == 2
    assert record.envelopes[0]["size"] == len(CONTENT)
    client_lines = [line.text for line in record.transcript if line.sender == "client"]
    assert client_lines[3:7] == ["BDAT 20", "[literal: 20 bytes]", f"BDAT {len(second)} LAST",
                                 f"[literal: {len(second)} bytes]"]


def test_bdat_pipelined_in_one_write(raw: Callable[..., tuple[ThreadedMailServer, Raw]]) -> None:
    """Everything at once, as RFC 3030 section 4.2 allows with PIPELINING: the octets after each
    BDAT line are never read as commands, though they look like them."""
    server, client = raw()
    chunk = b"QUIT\r\nRSET\r\n"
    client.send(b"EHLO c\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
                b"BDAT 12\r\n" + chunk + b"BDAT 0 LAST\r\nNOOP\r\n")
    assert client.replies(6)[1:] == [b"250 2.1.0 OK", b"250 2.1.5 OK", b"250 2.0.0 12 octets received",
                                     b"250 2.0.0 OK: message accepted", b"250 2.0.0 OK"]
    assert inbox(server, "bob") == [chunk]


@pytest.mark.parametrize("arg", [b"", b"x", b"-1", b"5 NOTLAST", b"5 LAST MORE", b"1" * 19, "\u0661".encode()])
def test_bdat_syntax(raw: Callable[..., tuple[ThreadedMailServer, Raw]], arg: bytes) -> None:
    _, client = raw()
    client.transaction()
    client.send(b"BDAT " + arg + b"\r\n" if arg else b"BDAT\r\n")
    assert client.reply() == b"501 5.5.4 Syntax: BDAT <size> [LAST]"
    client.send(b"NOOP\r\n")
    assert client.reply() == b"250 2.0.0 OK"


def test_bdat_refusals_still_read_the_chunk(raw: Callable[..., tuple[ThreadedMailServer, Raw]]) -> None:
    _, client = raw()
    client.send(b"EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")
    assert client.replies(3)[1:] == [b"503 5.5.1 Error: need MAIL command", b"250 2.0.0 OK"]
    client.send(b"MAIL FROM:<alice@example.test>\r\nBDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    assert client.replies(3) == [b"250 2.1.0 OK", b"503 5.5.1 Error: need RCPT command", b"250 2.0.0 OK"]


def test_bdat_needs_ehlo_and_auth(serve: Callable[..., ThreadedMailServer]) -> None:
    submission = serve({"name": "l", "protocol": "smtp", "tls": "plaintext", "role": "submission"})
    client = Raw(submission.port("l"))
    try:
        client.send(b"BDAT 6\r\nQUIT\r\nEHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")
        replies = client.replies(4)
        assert replies[0] == b"503 5.5.1 Error: send HELO first"
        assert replies[2] == b"530 5.7.0 Authentication required" and replies[3] == b"250 2.0.0 OK"
    finally:
        client.close()


def test_bdat_before_starttls_reads_the_chunk_then_refuses(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(mta("starttls-required"))
    client = Raw(server.port("l"))
    try:
        client.send(b"EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")
        assert client.replies(3)[1:] == [b"530 5.7.0 Must issue a STARTTLS command first", b"250 2.0.0 OK"]
    finally:
        client.close()


def test_bdat_over_the_size_limit(raw: Callable[..., tuple[ThreadedMailServer, Raw]]) -> None:
    server, client = raw(limits={"max_message_size": 100})
    client.transaction()
    # the first chunk fits, the second takes it over: read, dropped, 552, and the transaction is over
    client.send(b"BDAT 60\r\n" + b"a" * 60 + b"BDAT 60\r\n" + b"b" * 60 + b"BDAT 0 LAST\r\nNOOP\r\n")
    assert client.replies(4) == [b"250 2.0.0 60 octets received",
                                 b"552 5.3.4 Message size exceeds fixed maximum message size",
                                 b"503 5.5.1 Error: need MAIL command", b"250 2.0.0 OK"]
    # a huge chunk is read through without being kept
    client.transaction()
    client.send(b"BDAT 3000000 LAST\r\n" + b"c" * 3000000 + b"NOOP\r\n")
    assert client.replies(2) == [b"552 5.3.4 Message size exceeds fixed maximum message size", b"250 2.0.0 OK"]
    # and the next message within the limit goes through
    client.transaction()
    client.send(b"BDAT 5 LAST\r\nhello")
    assert client.reply() == b"250 2.0.0 OK: message accepted"
    assert inbox(server, "bob") == [b"hello"]


def test_data_after_bdat_and_rset(raw: Callable[..., tuple[ThreadedMailServer, Raw]]) -> None:
    server, client = raw()
    client.transaction()
    client.send(b"BDAT 3\r\nabcDATA\r\nRSET\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\n"
                b"DATA\r\n")
    assert client.replies(6) == [b"250 2.0.0 3 octets received", b"503 5.5.1 DATA not allowed after BDAT in one "
                                 b"transaction", b"250 2.0.0 OK", b"250 2.1.0 OK", b"250 2.1.5 OK",
                                 b"354 End data with <CR><LF>.<CR><LF>"]
    client.send(b"by DATA\r\n.\r\n")
    assert client.reply() == b"250 2.0.0 OK: message accepted"
    assert inbox(server, "bob") == [b"by DATA\r\n"]


def test_bdat_without_chunking(raw: Callable[..., tuple[ThreadedMailServer, Raw]]) -> None:
    _, client = raw(smtp_extensions=["DSN"])
    client.send(b"EHLO c\r\nBDAT 4 LAST\r\n")
    ehlo, refused = client.replies(2)
    assert b"CHUNKING" not in ehlo and refused == b"500 Error: command not recognized"


def test_bdat_connection_ends_in_a_chunk(raw: Callable[..., tuple[ThreadedMailServer, Raw]]) -> None:
    server, client = raw()
    client.transaction()
    client.send(b"BDAT 100 LAST\r\nonly part")
    client.sock.shutdown(socket.SHUT_WR)
    record = one_session(server)
    assert record.envelopes == [] and inbox(server, "bob") == []
    assert "[literal: 9 bytes]" in [line.text for line in record.transcript]


# --- the sans-I/O parsing -----------------------------------------------------------------------


def test_parsing() -> None:
    assert parameters("SIZE=10 ret=hdrs REQUIRETLS") == [("SIZE", "10"), ("RET", "hdrs"), ("REQUIRETLS", None)]
    assert bdat_arguments("10") == (10, False) and bdat_arguments("0 last") == (0, True)
    assert bdat_arguments("١") is None and bdat_arguments("10 LAST x") is None
    assert xtext("a+2Bb+3Dc", "ENVID", 100) == "a+b=c"
    with pytest.raises(ParameterError):
        xtext("a+2b", "ENVID", 100)  # hexchar is upper case
    extensions = mail_extensions(parameters("RET=HDRS REQUIRETLS"), {"DSN"}, encrypted=True)
    assert extensions.ret == "HDRS" and not extensions.requiretls and extensions.taken == {"RET"}
    assert rcpt_extensions(parameters("NOTIFY=SUCCESS"), set()).taken == set()
    assert without_enhanced_code("250 2.1.0 OK") == "250 OK"
    assert without_enhanced_code("250-a\r\n250 2.0.0 b") == "250-a\r\n250 b"
    assert without_enhanced_code("250 mail.example.test") == "250 mail.example.test"
