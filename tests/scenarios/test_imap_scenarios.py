"""IMAP misbehaviour scenarios (KNOWN-BAD.md section 2) against real clients, and their verdicts.

For each scenario: a real client in its strict mode (curl --ssl-reqd, imaplib with starttls())
refuses or copes, sends no secret in the clear, and the journal shows no bad verdict; where a
client falls for it (curl without --ssl-reqd or with --ssl, a deliberately naive scripted client
below), the expected verdict is recorded. The vulnerable-server scenario is probed by pipelining
`b NOOP` behind `a STARTTLS` in one segment.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.record.journal import SessionRecord
from support import HOSTNAME, IMAP_EXTENSIONS, one_session, run_client, verdict_codes

HOST = "127.0.0.1"
TIMEOUT = 10
SECRET = "alice-password"
CAPS = IMAP_EXTENSIONS
# What a client that falls for a scenario earns; a strict client earns none of these.
BAD_VERDICTS = {
    "credentials-in-clear", "mail-in-clear", "used-preauth", "acted-on-injection", "used-stale-capability",
    "used-injected-state", "no-upgrade", "fallback", "plaintext-on-tls-port",
}
Serve = Callable[..., ThreadedMailServer]


def listener(scenario: str | None, tls: str = "starttls-required", **extra: Any) -> dict[str, Any]:
    chosen = {"scenario": scenario} if scenario else {}
    return {"name": "imap", "protocol": "imap", "tls": tls, **chosen, **extra}


def bad(record: SessionRecord) -> set[str]:
    return verdict_codes(record) & BAD_VERDICTS


def client_lines(record: SessionRecord) -> list[str]:
    return [line.text for line in record.transcript if line.sender == "client"]


def curl(server: ThreadedMailServer, ca_file: Path, *options: str, path: str = "/",
         scheme: str = "imap") -> tuple[int, str, str]:
    url = f"{scheme}://{HOST}:{server.port('imap')}{path}"
    result = run_client(["curl", "-sS", "--max-time", "5", "--cacert", str(ca_file), "-u", f"alice:{SECRET}",
                         *options, url])
    return result.returncode, result.stdout, result.stderr


class Raw:
    """A raw IMAP connection: exact bytes, nothing interpreted."""

    def __init__(self, port: int) -> None:
        self.sock: socket.socket = socket.create_connection((HOST, port), timeout=TIMEOUT)
        self.buffer = b""

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed; unread: {self.buffer!r}")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def until(self, tag: str) -> list[bytes]:
        """Every line up to and including the tagged one."""
        lines = [self.line()]
        while not lines[-1].startswith(tag.encode() + b" "):
            lines.append(self.line())
        return lines

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


class NaiveClient(Raw):
    """A deliberately naive client: it believes every response line it has read, whenever and
    however it came (before TLS, behind the STARTTLS OK), and never asks again."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.seen = [self.line().decode()]
        self.tag = 0

    def command(self, text: str) -> str:
        self.tag += 1
        tag = f"n{self.tag}"
        self.send(f"{tag} {text}\r\n".encode())
        lines = [line.decode() for line in self.until(tag)]
        self.seen += lines
        return lines[-1]

    def starttls(self, context: ssl.SSLContext) -> None:
        assert self.command("STARTTLS").endswith("OK Begin TLS negotiation now")
        # What came in the same read after the OK is taken as the server's word too.
        self.seen += [line.decode() for line in self.buffer.split(b"\r\n") if line]
        self.buffer = b""
        if not any(line.startswith("* BYE") for line in self.seen):
            self.sock = context.wrap_socket(self.sock, server_hostname=HOSTNAME)

    def mechanisms(self) -> list[str]:
        words = " ".join(self.seen).replace("]", " ").split()
        return [word[5:] for word in words if word.startswith("AUTH=")]

    def mailboxes(self) -> list[str]:
        return [line.rsplit(" ", 1)[1] for line in self.seen if line.startswith("* LIST ")]


def imaplib_starttls(server: ThreadedMailServer, context: ssl.SSLContext) -> imaplib.IMAP4:
    imap = imaplib.IMAP4(HOST, server.port("imap"), timeout=TIMEOUT)
    try:
        imap.starttls(ssl_context=context)
    except BaseException:
        with contextlib.suppress(OSError):  # a failed handshake has already closed the socket
            imap.shutdown()
        raise
    return imap


# --- Exact bytes on the wire -------------------------------------------------------------------


@pytest.mark.parametrize(("scenario", "greeting"), [
    ("greeting-invalid", [b"* HELLO there mail.example.test"]),
    ("greeting-reject", [b"* BYE mail.example.test refuses service"]),
    ("imap-preauth", [b"* PREAUTH [CAPABILITY IMAP4rev1] mail.example.test logged in as alice"]),
    ("capability-fails", [b"* OK mail.example.test ready"]),
    ("stale-capability", [(b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED AUTH=X-MAILMODES-PRETLS] "
                           b"mail.example.test ready")]),
    # IMAP4, and no IMAP4rev2 either.
    ("protocol-downgrade", [f"* OK [CAPABILITY IMAP4 AUTH=PLAIN {CAPS.replace('IMAP4rev2 ', '')}] mail.example.test ready".encode()]),
    ("pretls-alert", [b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mail.example.test ready",
                      b"* OK [ALERT] Your mailbox is full: log in at http://mailmodes.invalid/ to fix it"]),
    ("pretls-state-injection", [b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mail.example.test ready",
                                b'* LIST () "/" X-MAILMODES-STATE', b"* 54321 EXISTS",
                                b"* STATUS X-MAILMODES-STATE (MESSAGES 54321)"]),
    ("premature-tagged-ok", [b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mail.example.test ready",
                             *(b"%s OK LOGIN completed" % tag for tag in (b"A001", b"A1", b"a001", b"1", b"a1",
                                                                         b"A0001"))]),
])
def test_greeting_bytes(serve: Serve, scenario: str, greeting: list[bytes]) -> None:
    raw = Raw(serve(listener(scenario)).port("imap"))
    try:
        assert [raw.line() for _ in greeting] == greeting
        assert raw.buffer == b""  # one write: nothing else came with it
    finally:
        raw.close()


@pytest.mark.parametrize(("scenario", "reply"), [
    ("starttls-rejected", b"a NO STARTTLS is refused"),
    ("starttls-tempfail", b"a NO [UNAVAILABLE] TLS not available right now"),
    ("starttls-unexpected-reply", b"+ continue"),
    ("starttls-stripped", b"a BAD Unknown command"),
    ("protocol-downgrade", b"a BAD Unknown command"),
])
def test_starttls_refusals_keep_the_session_in_plaintext(serve: Serve, scenario: str, reply: bytes) -> None:
    raw = Raw(serve(listener(scenario)).port("imap"))
    try:
        raw.line()
        raw.send(b"a STARTTLS\r\nb NOOP\r\n")
        assert raw.line() == reply
        assert raw.line() == b"b OK NOOP completed"
    finally:
        raw.close()


@pytest.mark.parametrize(("scenario", "injected"), [
    ("response-injection", b"* CAPABILITY IMAP4rev1 AUTH=X-MAILMODES-INJECTED\r\n"),
    ("injected-bye", b"* BYE Server going down\r\n"),
])
def test_injected_lines_travel_in_the_same_segment_as_the_ok(serve: Serve, scenario: str, injected: bytes) -> None:
    raw = Raw(serve(listener(scenario)).port("imap"))
    try:
        raw.line()
        raw.send(b"a STARTTLS\r\n")
        assert raw.sock.recv(65536) == b"a OK Begin TLS negotiation now\r\n" + injected
    finally:
        raw.close()


def test_no_handshake_answers_the_client_hello_with_plaintext(serve: Serve) -> None:
    raw = Raw(serve(listener("starttls-no-handshake")).port("imap"))
    try:
        raw.line()
        raw.send(b"a STARTTLS\r\n")
        assert raw.line() == b"a OK Begin TLS negotiation now"
        raw.send(b"\x16\x03\x01\x00\x05hello")
        assert raw.sock.recv(100) == b"HTTP/1.0 400 this is not TLS\r\n\r\n"
        assert raw.sock.recv(100) == b""
    finally:
        raw.close()


def test_silence_never_answers_and_closes_without_a_word(serve: Serve) -> None:
    raw = Raw(serve(listener("starttls-silence"), limits={"idle_timeout": 1}).port("imap"))
    try:
        raw.line()
        raw.send(b"a STARTTLS\r\n")
        assert raw.line() == b"a OK Begin TLS negotiation now"
        raw.send(b"\x16\x03\x01\x00\x05hello")
        assert raw.sock.recv(100) == b""  # the idle timeout, and no plaintext BYE
    finally:
        raw.close()


# --- Strict clients: curl --ssl-reqd --------------------------------------------------------

# scenario -> (curl's exit code, its documented error)
CURL_REFUSES = {
    "starttls-stripped": (64, "(64) STARTTLS not available."),
    "starttls-rejected": (64, "(64) STARTTLS denied"),
    "starttls-tempfail": (64, "(64) STARTTLS denied"),
    "starttls-unexpected-reply": (8, "(8) Unexpected continuation response"),
    "starttls-no-handshake": (35, "wrong version number"),
    "starttls-dropped": (35, "SSL_ERROR_SYSCALL"),
    "starttls-silence": (35, "SSL_ERROR_SYSCALL"),
    "capability-fails": (64, "(64) STARTTLS not available."),  # fixed in 7.79 (CVE-2021-22946)
    "protocol-downgrade": (64, "(64) STARTTLS not available."),
    "imap-preauth": (64, "(64) STARTTLS not available."),
    "response-injection": (8, "(8) Weird server reply"),  # fixed in 7.79 (CVE-2021-22947)
    "injected-bye": (8, "(8) Weird server reply"),
    "premature-tagged-ok": (64, "(64) STARTTLS not available."),
    "greeting-invalid": (8, "(8) Got unexpected imap-server response"),
    "greeting-reject": (8, "(8) Got unexpected imap-server response"),
    "login-referral": (67, "(67) Login denied"),
}
# Verdicts the journal gives curl although it refused safely (none: a CAPABILITY after PREAUTH
# is not "using" it, and closing on an injected BYE looks the same as refusing the extra bytes).
CURL_NOTED: dict[str, set[str]] = {}


@pytest.mark.parametrize("scenario", CURL_REFUSES)
def test_curl_ssl_reqd_refuses(serve: Serve, ca_file: Path, scenario: str) -> None:
    server = serve(listener(scenario), limits={"idle_timeout": 1})
    code, _, err = curl(server, ca_file, "--ssl-reqd")
    assert (code, CURL_REFUSES[scenario][1] in err) == (CURL_REFUSES[scenario][0], True), err
    record = one_session(server)
    assert not record.credentials or all(encrypted for encrypted, _, _ in record.credentials)
    assert bad(record) <= CURL_NOTED.get(scenario, set()), record.verdicts
    if scenario == "imap-preauth":
        assert client_lines(record) == ["A001 CAPABILITY"]


@pytest.mark.parametrize("scenario", ["stale-capability", "pretls-state-injection", "pretls-alert"])
def test_curl_ssl_reqd_completes_where_tls_works(serve: Serve, ca_file: Path, scenario: str) -> None:
    server = serve(listener(scenario))
    code, out, err = curl(server, ca_file, "--ssl-reqd")
    assert code == 0, err
    assert '* LIST (\\HasNoChildren) "/" INBOX\r\n' in out and "X-MAILMODES" not in out
    record = one_session(server)
    assert record.starttls and not bad(record), record.verdicts
    # It asked for the capabilities again after TLS and used PLAIN, not a canary.
    assert client_lines(record)[2:4] == ["A003 CAPABILITY", "A004 AUTHENTICATE PLAIN ****"]


def test_curl_imaps_refuses_an_implicit_port_that_speaks_plaintext(serve: Serve, ca_file: Path) -> None:
    server = serve(listener("implicit-speaks-plaintext", tls="implicit"))
    code, _, err = curl(server, ca_file, scheme="imaps")
    assert code == 35, err
    record = one_session(server)
    assert not record.credentials and not bad(record), record.verdicts


# --- Clients that fall for it: curl without --ssl-reqd -------------------------------------

# scenario -> (listener mode, curl options, path, curl's exit code, verdicts)
CURL_FALLS = {
    "starttls-stripped": ("starttls-required", (), "/INBOX?ALL", 0, {"credentials-in-clear", "mail-in-clear"}),
    "protocol-downgrade": ("starttls-required", (), "/", 0, {"credentials-in-clear"}),
    "capability-fails": ("starttls-required", (), "/", 67, {"credentials-in-clear"}),
    # It took "A001 OK" (sent before it asked anything) for its CAPABILITY's answer, never saw
    # LOGINDISABLED, and sent LOGIN.
    "premature-tagged-ok": ("starttls-required", (), "/", 67, {"credentials-in-clear"}),
    # Opportunistic --ssl: a refused STARTTLS makes it carry on in plaintext.
    "starttls-rejected": ("starttls-optional", ("--ssl",), "/", 0, {"credentials-in-clear"}),
    "starttls-tempfail": ("starttls-optional", ("--ssl",), "/", 0, {"credentials-in-clear"}),
}


@pytest.mark.parametrize("scenario", CURL_FALLS)
def test_curl_without_ssl_reqd_falls_for_it(serve: Serve, ca_file: Path, scenario: str) -> None:
    mode, options, path, expected_code, verdicts = CURL_FALLS[scenario]
    server = serve(listener(scenario, tls=mode))
    code, _, err = curl(server, ca_file, *options, path=path)
    assert code == expected_code, err
    record = one_session(server)
    assert bad(record) == verdicts, record.verdicts
    assert not record.encrypted


# --- Strict clients: imaplib ---------------------------------------------------------------

# scenario -> (what imaplib raises, a piece of its message), at connect or at starttls()
IMAPLIB_REFUSES: dict[str, tuple[type[BaseException], str | None]] = {
    "starttls-stripped": (imaplib.IMAP4.abort, "TLS not supported by server"),
    "protocol-downgrade": (imaplib.IMAP4.abort, "TLS not supported by server"),
    "imap-preauth": (imaplib.IMAP4.abort, "TLS not supported by server"),
    "starttls-rejected": (imaplib.IMAP4.error, "Couldn't establish TLS session"),
    "starttls-tempfail": (imaplib.IMAP4.error, "Couldn't establish TLS session"),
    "starttls-no-handshake": (ssl.SSLError, "WRONG_VERSION_NUMBER"),
    "starttls-dropped": (ssl.SSLEOFError, "UNEXPECTED_EOF_WHILE_READING"),
    "starttls-silence": (OSError, None),  # EOF in the handshake: the server closed after 1 s
    "capability-fails": (imaplib.IMAP4.error, "CAPABILITY command error: BAD"),
    "premature-tagged-ok": (imaplib.IMAP4.abort, "unexpected response: b'A001 OK LOGIN completed'"),
    "greeting-invalid": (imaplib.IMAP4.error, "HELLO there"),
    "greeting-reject": (imaplib.IMAP4.error, "refuses service"),
}


@pytest.mark.parametrize("scenario", IMAPLIB_REFUSES)
def test_imaplib_starttls_raises(serve: Serve, client_context: ssl.SSLContext, scenario: str) -> None:
    server = serve(listener(scenario), limits={"idle_timeout": 1})
    error, message = IMAPLIB_REFUSES[scenario]
    with pytest.raises(error, match=message and re.escape(message)):
        imaplib_starttls(server, client_context)
    record = one_session(server)
    assert not record.credentials and not record.mail_commands_in_clear
    # After PREAUTH imaplib asks CAPABILITY (in its constructor) before it refuses, like curl:
    # that alone is not using the PREAUTH.
    assert not bad(record), record.verdicts


@pytest.mark.parametrize("scenario", ["response-injection", "injected-bye", "stale-capability",
                                      "pretls-state-injection", "pretls-alert"])
def test_imaplib_ignores_what_came_before_tls(serve: Serve, client_context: ssl.SSLContext, scenario: str) -> None:
    server = serve(listener(scenario))
    imap = imaplib_starttls(server, client_context)
    assert "X-MAILMODES-PRETLS" not in imap.capabilities and "AUTH=PLAIN" in imap.capabilities
    assert imap.login("alice", SECRET)[0] == "OK"
    assert imap.select("INBOX") == ("OK", [b"0"])  # not the injected 54321
    typ, listed = imap.list()
    assert typ == "OK" and not any(b"X-MAILMODES" in line for line in listed if isinstance(line, bytes))
    imap.logout()
    record = one_session(server)
    assert record.starttls and record.encrypted and not bad(record), record.verdicts


def test_imaplib_does_not_follow_a_login_referral(serve: Serve, client_context: ssl.SSLContext) -> None:
    server = serve(listener("login-referral"))
    imap = imaplib_starttls(server, client_context)
    with pytest.raises(imaplib.IMAP4.error, match=r"REFERRAL imap://alice@mailmodes.invalid/"):
        imap.login("alice", SECRET)
    imap.logout()
    record = one_session(server)
    assert record.credentials == [(True, True, "LOGIN")] and not bad(record), record.verdicts


def test_imaplib_ssl_refuses_plaintext_on_an_implicit_port(serve: Serve, client_context: ssl.SSLContext) -> None:
    server = serve(listener("implicit-speaks-plaintext", tls="implicit"))
    with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
        imaplib.IMAP4_SSL(HOST, server.port("imap"), ssl_context=client_context, timeout=TIMEOUT)
    record = one_session(server)
    assert not record.credentials and not bad(record), record.verdicts


def test_plaintext_client_on_an_implicit_port_that_speaks_plaintext(serve: Serve) -> None:
    server = serve(listener("implicit-speaks-plaintext", tls="implicit"))
    imap = imaplib.IMAP4(HOST, server.port("imap"), timeout=TIMEOUT)
    assert imap.login("alice", SECRET)[0] == "OK"
    imap.logout()
    record = one_session(server)
    assert {"credentials-in-clear", "plaintext-on-tls-port"} <= verdict_codes(record)


# --- Clients that fall for it: the naive client ----------------------------------------------


def test_naive_client_uses_the_injected_mechanism(serve: Serve, client_context: ssl.SSLContext) -> None:
    server = serve(listener("response-injection"))
    naive = NaiveClient(server.port("imap"))
    naive.starttls(client_context)
    assert naive.mechanisms() == ["X-MAILMODES-INJECTED"]
    assert naive.command("AUTHENTICATE X-MAILMODES-INJECTED") == "n2 NO [CANNOT] Unsupported authentication mechanism"
    naive.command("LOGOUT")
    naive.close()
    record = one_session(server)
    assert bad(record) == {"acted-on-injection"}, record.verdicts


def test_naive_client_gives_up_on_the_injected_bye(serve: Serve, client_context: ssl.SSLContext) -> None:
    server = serve(listener("injected-bye"))
    naive = NaiveClient(server.port("imap"))
    naive.starttls(client_context)
    assert naive.seen[-1] == "* BYE Server going down"
    naive.close()
    record = one_session(server)
    # Closing on the injected BYE looks, from the server, exactly like curl refusing the extra
    # bytes (safe): no verdict either way, only no TLS.
    assert not bad(record) and not record.encrypted, record.verdicts


def test_naive_client_uses_the_pre_tls_capability(serve: Serve, client_context: ssl.SSLContext) -> None:
    server = serve(listener("stale-capability"))
    naive = NaiveClient(server.port("imap"))
    naive.starttls(client_context)  # and never asks for CAPABILITY again
    assert naive.mechanisms() == ["X-MAILMODES-PRETLS"]
    assert naive.command("AUTHENTICATE X-MAILMODES-PRETLS") == "n2 NO [CANNOT] Unsupported authentication mechanism"
    naive.close()
    record = one_session(server)
    assert bad(record) == {"used-stale-capability"}, record.verdicts


def test_naive_client_selects_the_injected_mailbox(serve: Serve, client_context: ssl.SSLContext) -> None:
    server = serve(listener("pretls-state-injection"))
    naive = NaiveClient(server.port("imap"))
    naive.starttls(client_context)
    assert naive.command(f"LOGIN alice {SECRET}").startswith("n2 OK")
    mailbox = naive.mailboxes()[0]
    assert naive.command(f"SELECT {mailbox}") == f"n3 NO [NONEXISTENT] Mailbox doesn't exist: {mailbox}"
    naive.close()
    record = one_session(server)
    assert bad(record) == {"used-injected-state"}, record.verdicts


def test_naive_client_goes_on_after_preauth(serve: Serve) -> None:
    server = serve(listener("imap-preauth"))
    naive = NaiveClient(server.port("imap"))
    assert naive.seen[0].startswith("* PREAUTH")
    assert naive.command("SELECT INBOX") == "n1 OK [READ-WRITE] SELECT completed"
    naive.close()
    record = one_session(server)
    assert bad(record) == {"used-preauth", "mail-in-clear"}, record.verdicts


def test_naive_client_logs_in_after_an_invalid_greeting(serve: Serve) -> None:
    server = serve(listener("greeting-invalid", tls="starttls-optional"))
    naive = NaiveClient(server.port("imap"))
    assert naive.command(f"LOGIN alice {SECRET}").startswith("n1 OK")
    naive.close()
    record = one_session(server)
    assert bad(record) == {"credentials-in-clear"}, record.verdicts


# --- The vulnerable server (CVE-2011-0411 class) ---------------------------------------------


def pipelined_probe(port: int, context: ssl.SSLContext) -> list[bytes]:
    """`a STARTTLS` and `b NOOP` in one segment, TLS, then `c NOOP`: every line inside TLS."""
    raw = Raw(port)
    try:
        raw.line()
        raw.send(b"a STARTTLS\r\nb NOOP\r\n")
        assert raw.line() == b"a OK Begin TLS negotiation now" and raw.buffer == b""
        raw.sock = context.wrap_socket(raw.sock, server_hostname=HOSTNAME)
        raw.send(b"c NOOP\r\n")
        return raw.until("c")
    finally:
        raw.close()


def test_vulnerable_server_runs_pipelined_plaintext_inside_tls(serve: Serve, client_context: ssl.SSLContext) -> None:
    server = serve(listener("command-injection-vulnerable"))
    assert pipelined_probe(server.port("imap"), client_context) == [b"b OK NOOP completed", b"c OK NOOP completed"]
    record = one_session(server)
    assert any("EXECUTED inside TLS" in line.text for line in record.transcript)
    assert "pipelined-after-starttls" in verdict_codes(record)


@pytest.mark.parametrize("scenario", [None, "stale-capability"])
def test_other_listeners_discard_pipelined_plaintext(serve: Serve, client_context: ssl.SSLContext,
                                                     scenario: str | None) -> None:
    server = serve(listener(scenario))
    lines = pipelined_probe(server.port("imap"), client_context)
    assert lines[-1] == b"c OK NOOP completed" and b"b OK NOOP completed" not in lines
    record = one_session(server)
    assert any("discarded, never executed" in line.text for line in record.transcript)


# --- chaos ---------------------------------------------------------------------------------


def chaos_listener(**chaos: Any) -> dict[str, Any]:
    return listener("chaos", tls="plaintext", chaos=chaos)


def test_chaos_reply_at_login_gets_the_tag(serve: Serve) -> None:
    server = serve(chaos_listener(stage="LOGIN", reply="NO [UNAVAILABLE] Try again later"))
    imap = imaplib.IMAP4(HOST, server.port("imap"), timeout=TIMEOUT)
    with pytest.raises(imaplib.IMAP4.error, match=r"\[UNAVAILABLE\] Try again later"):
        imap.login("alice", SECRET)
    assert imap.noop()[0] == "OK"  # the session goes on
    imap.logout()
    record = one_session(server)
    server_lines = [line.text for line in record.transcript if line.sender == "server"]
    assert any(line.endswith(" NO [UNAVAILABLE] Try again later") and line.split()[0] != "NO"
               for line in server_lines)


def test_chaos_disconnect_at_select(serve: Serve) -> None:
    server = serve(chaos_listener(stage="SELECT", disconnect=True))
    imap = imaplib.IMAP4(HOST, server.port("imap"), timeout=TIMEOUT)
    imap.login("alice", SECRET)
    with pytest.raises(imaplib.IMAP4.abort):
        imap.select("INBOX")
    imap.shutdown()
    one_session(server)


@pytest.mark.parametrize(("chaos", "raised"), [
    ({"stage": "GREETING", "disconnect": True}, imaplib.IMAP4.abort),
    ({"stage": "GREETING", "reply": "BYE Too busy"}, imaplib.IMAP4.error),
])
def test_chaos_at_the_greeting(serve: Serve, chaos: dict[str, Any], raised: type[Exception]) -> None:
    server = serve(chaos_listener(**chaos))
    with pytest.raises(raised):
        imaplib.IMAP4(HOST, server.port("imap"), timeout=TIMEOUT)
    record = one_session(server)
    assert [line.text for line in record.transcript if line.sender == "server"] == (
        ["* BYE Too busy"] if "reply" in chaos else [])


def test_chaos_delay_before_every_reply(serve: Serve) -> None:
    server = serve(chaos_listener(delay=0.2))
    started = time.monotonic()
    imap = imaplib.IMAP4(HOST, server.port("imap"), timeout=TIMEOUT)  # greeting + CAPABILITY
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert imap.noop()[0] == "OK"
    assert time.monotonic() - started >= 0.2
    imap.logout()


def test_client_that_logs_in_after_an_unexpected_starttls_reply_is_recorded(serve: Serve) -> None:
    server = serve(listener("starttls-unexpected-reply"))
    with socket.create_connection((HOST, server.port("imap")), timeout=TIMEOUT) as sock, sock.makefile("rb") as reader:
        reader.readline()
        sock.sendall(b"a STARTTLS\r\n")
        assert reader.readline() == b"+ continue\r\n"
        sock.sendall(f"b LOGIN alice {SECRET}\r\nc LOGOUT\r\n".encode())
        reader.read()
    record = one_session(server)
    assert "credentials-in-clear" in verdict_codes(record) and record.pipelined_bytes == 0
