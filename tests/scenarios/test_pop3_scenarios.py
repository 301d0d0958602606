"""POP3 misbehaviour scenarios (KNOWN-BAD.md section 2) against real and deliberately naive clients.

Per scenario: a real client in its strict mode (curl --ssl-reqd, poplib with stls()) refuses or copes,
sends no credentials in the clear, and the journal shows no bad verdict; where a client falls for
the trick (curl without --ssl-reqd, a small naive client written here), the journal records the
expected verdict. The first part drives the sans-I/O session directly for the exact bytes.
"""

from __future__ import annotations

import poplib
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest

from mailmodes import __version__
from mailmodes.app import ThreadedMailServer
from mailmodes.protocols.events import Close, NoTls, Output, StartTls
from mailmodes.protocols.pop3 import Pop3Session
from mailmodes.scenarios.misbehaviour import GARBAGE, Chaos
from mailmodes.tls.policy import TlsMode
from support import (
    HOSTNAME,
    make_store,
    one_session,
    run_client,
    sans_io_connection,
    verdict_codes,
)

HOST = "127.0.0.1"
TIMEOUT = 10
GREETING = f"+OK {HOSTNAME} POP3 ready\r\n".encode()
BEGIN_TLS = b"+OK Begin TLS negotiation\r\n"
INJECTED = b"+OK\r\nSASL X-MAILMODES-INJECTED\r\n.\r\n"
IMPL = f"IMPLEMENTATION mailmodes-{__version__}\r\n"
BASE_CAPS = "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\n"
ALERT = b"+OK [SYS/PERM] Your mailbox is full: log in at http://mailmodes.invalid/ to fix it"
MESSAGE = b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n"
WRONG_STATE = b"-ERR Command not valid in this state"
ServeFixture = Callable[..., ThreadedMailServer]


# --- the session without sockets: exact bytes at each hook -----------------------------------------


def session(scenario: str | None, mode: TlsMode = TlsMode.STARTTLS_REQUIRED, chaos: Chaos | None = None,
            *, encrypted: bool = False) -> Pop3Session:
    connection = sans_io_connection("pop3", mode, encrypted=encrypted, peer=("127.0.0.1", 1), scenario=scenario,
                                    chaos=chaos)
    return Pop3Session(connection, make_store(), HOSTNAME)


def capa(*extra: str) -> bytes:
    return ("+OK Capability list follows\r\n" + BASE_CAPS + "".join(f"{e}\r\n" for e in extra) + IMPL
            + ".\r\n").encode()


def test_known_good_listener_has_no_scenario_state() -> None:
    pop = session(None)
    assert not pop.misbehaviour.active and not pop.misbehaviour.chaos_stages
    assert pop.greeting() == [GREETING]
    assert pop.feed(b"CAPA\r\nSTLS\r\nNOOP\r\n") == [capa("STLS") + BEGIN_TLS, StartTls()]
    assert pop.pipelined_after_starttls == len(b"NOOP\r\n")
    assert pop.tls_started() == []


@pytest.mark.parametrize(("scenario", "reply"), [
    ("starttls-rejected", b"-ERR STLS is refused\r\n"),
    ("starttls-tempfail", b"-ERR [SYS/TEMP] TLS not available right now\r\n"),
    ("starttls-unexpected-reply", b"+Okay\r\n"),
])
def test_stls_refused_and_session_stays_plaintext(scenario: str, reply: bytes) -> None:
    pop = session(scenario)
    assert pop.feed(b"STLS\r\n") == [reply]
    # Still plaintext, still STARTTLS-required: the policy refuses a login as before.
    assert pop.feed(b"USER alice\r\n") == [
        b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections\r\n"
    ]


def test_stripped_is_a_plaintext_listener_that_refuses_stls() -> None:
    # app.py gives starttls-stripped the PLAINTEXT policy; the session only words the refusal.
    pop = session("starttls-stripped", TlsMode.PLAINTEXT)
    assert pop.feed(b"CAPA\r\n") == [capa("USER", "SASL PLAIN")]
    assert pop.feed(b"STLS\r\n") == [b"-ERR TLS not available\r\n"]


def test_response_injection_is_one_write_with_the_success_line() -> None:
    pop = session("response-injection")
    assert pop.feed(b"STLS\r\n") == [BEGIN_TLS + INJECTED, StartTls()]


def test_no_handshake_hands_the_client_hello_to_the_connection_for_plaintext() -> None:
    # connection.py answers the ClientHello with the plan's plaintext and closes (the live tests below).
    pop = session("starttls-no-handshake")
    assert pop.feed(b"STLS\r\nCAPA\r\n") == [BEGIN_TLS, NoTls(GARBAGE)]


def test_dropped_hands_the_client_hello_to_the_connection_to_close_on() -> None:
    pop = session("starttls-dropped")
    assert pop.feed(b"STLS\r\n") == [BEGIN_TLS, NoTls(b"")]


def test_silence_hands_the_client_hello_to_the_connection_to_swallow() -> None:
    pop = session("starttls-silence")
    assert pop.feed(b"STLS\r\n") == [BEGIN_TLS, NoTls(None)]


def test_capability_fails_before_and_after_tls() -> None:
    assert session("capability-fails").feed(b"CAPA\r\n") == [b"-ERR CAPA not available\r\n"]
    assert session("capability-fails", encrypted=True).feed(b"CAPA\r\n") == [b"-ERR CAPA not available\r\n"]


def test_stale_capability_canary_only_before_tls() -> None:
    assert session("stale-capability").feed(b"CAPA\r\n") == [
        capa("STLS").replace(b".\r\n", b"SASL X-MAILMODES-PRETLS\r\n.\r\n")
    ]
    # Where SASL PLAIN is already offered, the canary joins that line (RFC 2449 section 6.3).
    optional = session("stale-capability", TlsMode.STARTTLS_OPTIONAL)
    assert optional.feed(b"CAPA\r\n") == [capa("USER", "SASL PLAIN X-MAILMODES-PRETLS", "STLS")]
    encrypted = session("stale-capability", encrypted=True)
    assert encrypted.feed(b"CAPA\r\n") == [capa("USER", "SASL PLAIN")]


@pytest.mark.parametrize(("scenario", "greeting"), [
    ("greeting-reject", [f"-ERR {HOSTNAME} refuses service\r\n".encode(), Close()]),
    ("pretls-alert", [ALERT + b"\r\n"]),
])
def test_greetings(scenario: str, greeting: list[Output]) -> None:
    assert session(scenario).greeting() == greeting


def test_vulnerable_runs_pipelined_plaintext_after_the_handshake() -> None:
    pop = session("command-injection-vulnerable")
    assert pop.feed(b"STLS\r\nNOOP\r\n") == [BEGIN_TLS, StartTls(keep_pipelined=True)]
    assert pop.pipelined_after_starttls == len(b"NOOP\r\n")
    assert pop.tls_started() == [WRONG_STATE + b"\r\n"]


@pytest.mark.parametrize(("chaos", "command", "outputs"), [
    (Chaos(stage="RETR", reply="-ERR [SYS/TEMP] chaos"), b"CAPA\r\n", [capa("STLS")]),
    (Chaos(stage="CAPA", reply="-ERR [SYS/TEMP] chaos"), b"CAPA\r\n", [b"-ERR [SYS/TEMP] chaos\r\n"]),
    (Chaos(stage="capa", disconnect=True), b"CAPA\r\nNOOP\r\n", [Close()]),
    # "LOGIN" (IMAP's word) names the POP3 commands that carry the secret.
    (Chaos(stage="LOGIN", reply="-ERR [SYS/TEMP] not now"), b"AUTH PLAIN\r\n", [b"-ERR [SYS/TEMP] not now\r\n"]),
    # The delay is the connection's, before every write (test_chaos_delay_before_every_reply).
    (Chaos(delay=0.25), b"CAPA\r\nQUIT\r\n",
     [capa("STLS") + f"+OK {HOSTNAME} POP3 server signing off\r\n".encode(), Close()]),
])
def test_chaos(chaos: Chaos, command: bytes, outputs: list[Output]) -> None:
    assert session("chaos", chaos=chaos).feed(command) == outputs


@pytest.mark.parametrize(("chaos", "greeting"), [
    (Chaos(stage="GREETING", reply="-ERR [SYS/TEMP] busy"), [b"-ERR [SYS/TEMP] busy\r\n"]),
    (Chaos(stage="GREETING", disconnect=True), [Close()]),
    (Chaos(delay=0.5), [GREETING]),
])
def test_chaos_greeting(chaos: Chaos, greeting: list[Output]) -> None:
    assert session("chaos", chaos=chaos).greeting() == greeting


# --- real servers, real clients --------------------------------------------------------------------


def pop3(scenario: str | None, tls: str = "starttls-required", **extra: Any) -> dict[str, Any]:
    listener = {"name": "pop3", "protocol": "pop3", "tls": tls, **extra}
    return listener if scenario is None else {**listener, "scenario": scenario}


def start(serve: ServeFixture, scenario: str, tls: str = "starttls-required", **extra: Any) -> ThreadedMailServer:
    # A short idle timeout ends starttls-silence (and any client left waiting) quickly.
    server = serve(pop3(scenario, tls, **extra), limits={"idle_timeout": 1})
    server.call(lambda: server.store.deliver([server.store.accounts["alice"]], MESSAGE))
    return server


def curl(server: ThreadedMailServer, ca_file: Path, *options: str, scheme: str = "pop3",
         path: str = "") -> subprocess.CompletedProcess[str]:
    return run_client([
        "curl", "-sS", "-v", "--max-time", "5", "--cacert", str(ca_file), "-u", "alice:alice-password",
        *options, f"{scheme}://{HOST}:{server.port('pop3')}/{path}",
    ])


def assert_no_secret_sent(record: Any, client_log: str = "") -> None:
    assert record.credentials == [], record.credentials
    for command in ("> USER", "> PASS", "> AUTH"):
        assert command not in client_log


# curl --ssl-reqd against each scenario: (exit status, its documented error, a server line it saw)
CURL_STRICT = {
    "starttls-stripped": (64, "curl: (64) STLS not supported.", "< SASL PLAIN"),
    "starttls-rejected": (64, "curl: (64) STARTTLS denied", "< -ERR STLS is refused"),
    "starttls-tempfail": (64, "curl: (64) STARTTLS denied", "< -ERR [SYS/TEMP] TLS not available right now"),
    "starttls-unexpected-reply": (64, "curl: (64) STARTTLS denied", "< +Okay"),
    "starttls-no-handshake": (35, "wrong version number", "< +OK Begin TLS negotiation"),
    "starttls-dropped": (35, "SSL_ERROR_SYSCALL", "< +OK Begin TLS negotiation"),
    "starttls-silence": (35, "curl: (35)", "< +OK Begin TLS negotiation"),
    # CVE-2021-22946: an old curl went on without TLS when CAPA failed.
    "capability-fails": (64, "curl: (64) STLS not supported.", "< -ERR CAPA not available"),
    # CVE-2021-22947: an old curl took the injected lines as the answer to its CAPA inside TLS.
    "response-injection": (8, "curl: (8) Weird server reply", "< +OK Begin TLS negotiation"),
    "greeting-reject": (8, "curl: (8) Got unexpected pop3-server response", f"< -ERR {HOSTNAME} refuses service"),
}


@pytest.mark.parametrize("scenario", sorted(CURL_STRICT))
def test_curl_ssl_reqd_refuses(serve: ServeFixture, ca_file: Path, scenario: str) -> None:
    status, error, seen = CURL_STRICT[scenario]
    server = start(serve, scenario)
    result = curl(server, ca_file, "--ssl-reqd")
    assert result.returncode == status, result.stderr
    assert error in result.stderr
    assert seen in result.stderr.splitlines()
    record = one_session(server)
    assert_no_secret_sent(record, result.stderr)
    assert verdict_codes(record) == set()


@pytest.mark.parametrize("scenario", ["stale-capability", "pretls-alert", "command-injection-vulnerable"])
def test_curl_ssl_reqd_copes(serve: ServeFixture, ca_file: Path, scenario: str) -> None:
    server = start(serve, scenario)
    result = curl(server, ca_file, "--ssl-reqd", path="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.encode() == MESSAGE
    # curl asks for the capabilities again after TLS (RFC 2595 section 4) and uses only those.
    before, after = result.stderr.split("< +OK Begin TLS negotiation")
    assert "> CAPA" in after and "> AUTH PLAIN" in after and "X-MAILMODES" not in after
    assert "> USER" not in before and "> AUTH" not in before
    assert verdict_codes(one_session(server)) == set()


def test_curl_without_ssl_reqd_falls_for_stripping(serve: ServeFixture, ca_file: Path) -> None:
    server = start(serve, "starttls-stripped")
    result = curl(server, ca_file, path="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.encode() == MESSAGE
    record = one_session(server)
    assert verdict_codes(record) == {"credentials-in-clear", "mail-in-clear"}
    assert record.credentials == [(False, True, "AUTH PLAIN")]  # one attempt: its response is the secret


def test_curl_without_ssl_reqd_falls_back_when_capa_fails(serve: ServeFixture, ca_file: Path) -> None:
    # The CVE-2021-22946 behaviour in curl's opportunistic default: no CAPA, so no STLS, so USER in
    # the clear. On a STARTTLS-optional listener the password follows.
    server = start(serve, "capability-fails", "starttls-optional")
    result = curl(server, ca_file)
    assert result.returncode == 0, result.stderr
    record = one_session(server)
    assert verdict_codes(record) == {"credentials-in-clear"}
    assert (False, True, "PASS") in record.credentials


# --- poplib, strict: stls() before any login ---------------------------------------------------------


def strict_poplib(server: ThreadedMailServer, context: ssl.SSLContext) -> None:
    """poplib as a careful program uses it: STLS first, capabilities again, then the login."""
    pop = poplib.POP3(HOST, server.port("pop3"), timeout=TIMEOUT)
    try:
        pop.stls(context=context)
        assert "STLS" not in pop.capa()
        pop.user("alice")
        pop.pass_("alice-password")
        assert pop.stat() == (1, len(MESSAGE))
        pop.quit()
    finally:
        # After a failed handshake poplib still holds the socket that wrap_socket took over (and
        # closed): its close() then fails on the shutdown.
        with suppress(OSError):
            pop.close()


# scenario -> (exception, its message): poplib stops before any credential.
POPLIB_REFUSES: dict[str, tuple[type[Exception], str]] = {
    "starttls-stripped": (poplib.error_proto, "-ERR STLS not supported by server"),
    "starttls-rejected": (poplib.error_proto, "-ERR STLS is refused"),
    "starttls-tempfail": (poplib.error_proto, r"-ERR \[SYS/TEMP\] TLS not available right now"),
    # poplib takes any line starting with "+" as success (its _getresp), so it tries the handshake,
    # which the plaintext server answers with "-ERR": still no credentials.
    "starttls-unexpected-reply": (ssl.SSLError, "WRONG_VERSION_NUMBER|wrong version number"),
    "starttls-no-handshake": (ssl.SSLError, "WRONG_VERSION_NUMBER|wrong version number"),
    "starttls-dropped": (ssl.SSLEOFError, "UNEXPECTED_EOF_WHILE_READING"),
    "starttls-silence": (ssl.SSLError, "EOF|UNEXPECTED_EOF"),
    # poplib's capa() words the server's "-ERR CAPA not available" its own way; stls() stops there.
    "capability-fails": (poplib.error_proto, "-ERR CAPA not supported by server"),
}


@pytest.mark.parametrize("scenario", sorted(POPLIB_REFUSES))
def test_poplib_stls_refuses(serve: ServeFixture, client_context: ssl.SSLContext, scenario: str) -> None:
    error, message = POPLIB_REFUSES[scenario]
    server = start(serve, scenario)
    with pytest.raises(error, match=message):
        strict_poplib(server, client_context)
    record = one_session(server)
    assert_no_secret_sent(record)
    assert verdict_codes(record) == set()


@pytest.mark.parametrize("scenario", ["response-injection", "stale-capability", "pretls-alert",
                                      "command-injection-vulnerable"])
def test_poplib_stls_copes(serve: ServeFixture, client_context: ssl.SSLContext, scenario: str) -> None:
    server = start(serve, scenario)
    strict_poplib(server, client_context)
    record = one_session(server)
    assert record.encrypted and record.starttls
    assert verdict_codes(record) == set()


def raw_greeting_then_close(server: ThreadedMailServer) -> bytes:
    """The greeting, asserting the server closed after it. (poplib.POP3 raises on a -ERR greeting
    but leaks its socket, so this check reads the bytes itself.)"""
    with closing(socket.create_connection((HOST, server.port("pop3")), timeout=TIMEOUT)) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_greeting_reject_closes(serve: ServeFixture) -> None:
    server = start(serve, "greeting-reject")
    assert raw_greeting_then_close(server) == f"-ERR {HOSTNAME} refuses service\r\n".encode()
    record = one_session(server)
    assert record.commands_before_tls == 0
    assert verdict_codes(record) == set()


def test_pretls_alert_is_the_greeting(serve: ServeFixture) -> None:
    # Whether a client shows it as the server's word is a manual check (KNOWN-BAD.md section 2).
    server = start(serve, "pretls-alert")
    with closing(poplib.POP3(HOST, server.port("pop3"), timeout=TIMEOUT)) as pop:
        assert pop.getwelcome() == ALERT
        pop.quit()


def test_implicit_speaks_plaintext(serve: ServeFixture, ca_file: Path, client_context: ssl.SSLContext) -> None:
    server = start(serve, "implicit-speaks-plaintext", "implicit")
    result = curl(server, ca_file, scheme="pop3s")
    assert result.returncode == 35, result.stderr
    assert "wrong version number" in result.stderr
    with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER|wrong version number"):
        poplib.POP3_SSL(HOST, server.port("pop3"), context=client_context, timeout=TIMEOUT)
    for record in server.journal.wait_for(2):
        assert_no_secret_sent(record)
        assert verdict_codes(record) == set()


def test_plaintext_client_falls_for_implicit_speaks_plaintext(serve: ServeFixture) -> None:
    server = start(serve, "implicit-speaks-plaintext", "implicit")
    with closing(poplib.POP3(HOST, server.port("pop3"), timeout=TIMEOUT)) as pop:
        pop.user("alice")
        pop.pass_("alice-password")
        pop.quit()
    assert verdict_codes(one_session(server)) == {"credentials-in-clear", "plaintext-on-tls-port"}


# --- deliberately naive clients --------------------------------------------------------------------


class RawClient:
    """A POP3 client on a raw socket, so that each test decides what it reads when."""

    def __init__(self, server: ThreadedMailServer) -> None:
        self.sock = socket.create_connection((HOST, server.port("pop3")), timeout=TIMEOUT)
        self.buffer = b""
        self.raw: socket.socket = self.sock

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def multiline(self) -> list[bytes]:
        lines = []
        while (line := self.line()) != b".":
            lines.append(line)
        return lines

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def starttls(self, context: ssl.SSLContext) -> None:
        self.sock = context.wrap_socket(self.raw, server_hostname=HOSTNAME)

    def close(self) -> None:
        self.sock.close()


def sasl_mechanisms(capa_lines: list[bytes]) -> list[str]:
    return [word for line in capa_lines if line.startswith(b"SASL ") for word in line.decode().split()[1:]]


def test_naive_client_acts_on_injected_capabilities(serve: ServeFixture, client_context: ssl.SSLContext) -> None:
    """Like curl before 7.79 (CVE-2021-22947): what arrived in plaintext behind the STLS success line
    stays in the read buffer and is taken as the reply to the first command inside TLS."""
    server = start(serve, "response-injection")
    client = RawClient(server)
    assert client.line() == GREETING.rstrip()
    client.send(b"STLS\r\n")
    # The injection rule: the success line and the injected lines arrive in one segment.
    assert client.sock.recv(65536) == BEGIN_TLS + INJECTED
    client.buffer = INJECTED  # the naive part: the buffer is not emptied at STLS
    client.starttls(client_context)
    client.send(b"CAPA\r\n")
    assert client.line() == b"+OK"
    mechanisms = sasl_mechanisms(client.multiline())
    assert mechanisms == ["X-MAILMODES-INJECTED"]
    client.send(f"AUTH {mechanisms[0]}\r\n".encode())
    assert client.line() == b"+OK Capability list follows"  # the real reply to CAPA, read late
    client.close()
    record = one_session(server)
    assert verdict_codes(record) == {"acted-on-injection"}


def test_naive_client_uses_stale_capability(serve: ServeFixture, client_context: ssl.SSLContext) -> None:
    server = start(serve, "stale-capability")
    client = RawClient(server)
    client.line()
    client.send(b"CAPA\r\n")
    assert client.line() == b"+OK Capability list follows"
    mechanisms = sasl_mechanisms(client.multiline())
    assert mechanisms == ["X-MAILMODES-PRETLS"]
    client.send(b"STLS\r\n")
    assert client.line() == BEGIN_TLS.rstrip()
    client.starttls(client_context)
    client.send(f"AUTH {mechanisms[0]}\r\n".encode())  # no CAPA again: RFC 2595 section 4 asks for it
    assert client.line() == b"-ERR Unsupported authentication mechanism"
    client.close()
    record = one_session(server)
    assert verdict_codes(record) == {"used-stale-capability"}
    assert "X-MAILMODES-PRETLS" in record.verdicts[0].detail


def test_client_that_skips_capa_after_tls_is_warned(serve: ServeFixture, client_context: ssl.SSLContext) -> None:
    server = start(serve, "stale-capability")
    with closing(poplib.POP3(HOST, server.port("pop3"), timeout=TIMEOUT)) as pop:
        assert pop.capa()["SASL"] == ["X-MAILMODES-PRETLS"]
        # poplib.stls() asks CAPA before STLS only; a client that logs in next never asked again.
        pop.stls(context=client_context)
        pop.user("alice")
        pop.pass_("alice-password")
        pop.quit()
    record = one_session(server)
    # Not asking again is a SHOULD missed, a note; using the canary would be the fault (issue 14, 5).
    assert verdict_codes(record) == {"capabilities-not-refreshed"}
    from mailmodes.record.verdicts import BY_CODE

    assert BY_CODE["capabilities-not-refreshed"].severity == "note"
    assert BY_CODE["used-stale-capability"].severity == "client-fault"
    assert record.verdicts[0].detail.startswith("after TLS the client went straight to USER")


# --- the deliberately vulnerable server (CVE-2011-0411) -------------------------------------------


def probe_pipelined_noop(server: ThreadedMailServer, name: str, context: ssl.SSLContext) -> bytes:
    """Send STLS and NOOP in one segment, do TLS, then CAPA: the first line inside TLS answers
    the NOOP if the server ran the plaintext it had buffered, else it answers the CAPA."""
    sock = socket.create_connection((HOST, server.port(name)), timeout=TIMEOUT)
    with closing(sock):
        reader = sock.makefile("rb", buffering=0)
        assert reader.readline() == GREETING
        sock.sendall(b"STLS\r\nNOOP\r\n")
        assert reader.readline() == BEGIN_TLS
        with context.wrap_socket(sock, server_hostname=HOSTNAME) as tls:
            tls.sendall(b"CAPA\r\n")
            first = tls.makefile("rb").readline()
            tls.sendall(b"QUIT\r\n")
    return first


def test_vulnerable_server_runs_injected_command_inside_tls(serve: ServeFixture,
                                                             client_context: ssl.SSLContext) -> None:
    server = serve(pop3("command-injection-vulnerable", name="vulnerable"), pop3(None, name="pop3"))
    assert probe_pipelined_noop(server, "vulnerable", client_context) == WRONG_STATE + b"\r\n"
    assert probe_pipelined_noop(server, "pop3", client_context) == b"+OK Capability list follows\r\n"
    records = {record.listener: record for record in server.journal.wait_for(2)}
    vulnerable, good = records["vulnerable"], records["pop3"]
    assert "[6 plaintext bytes pipelined after STLS: EXECUTED inside TLS by this vulnerable server]" in [
        line.text for line in vulnerable.transcript]
    assert "[6 plaintext bytes pipelined after STLS: discarded, never executed]" in [
        line.text for line in good.transcript]
    assert verdict_codes(vulnerable) == verdict_codes(good) == {"pipelined-after-starttls"}


# --- chaos -----------------------------------------------------------------------------------------


def test_chaos_reply_at_login(serve: ServeFixture, client_context: ssl.SSLContext) -> None:
    server = start(serve, "chaos", chaos={"stage": "PASS", "reply": "-ERR [SYS/TEMP] chaos says no"})
    with closing(poplib.POP3(HOST, server.port("pop3"), timeout=TIMEOUT)) as pop:
        pop.stls(context=client_context)
        pop.user("alice")
        with pytest.raises(poplib.error_proto) as refused:
            pop.pass_("alice-password")
        assert refused.value.args == (b"-ERR [SYS/TEMP] chaos says no",)
        assert pop.quit() == f"+OK {HOSTNAME} POP3 server signing off".encode()
    assert verdict_codes(one_session(server)) == set()


def test_chaos_disconnect_at_retr(serve: ServeFixture, ca_file: Path) -> None:
    server = start(serve, "chaos", chaos={"stage": "RETR", "disconnect": True})
    result = curl(server, ca_file, "--ssl-reqd", path="1")
    assert result.returncode == 56, result.stderr  # curl: "Recv failure" / connection closed
    assert "> RETR 1" in result.stderr
    # The maildrop lock went with the connection: the next session logs in at once.
    assert curl(server, ca_file, "--ssl-reqd").stdout == f"1 {len(MESSAGE)}\r\n"


def test_chaos_greeting_reply(serve: ServeFixture, ca_file: Path) -> None:
    server = start(serve, "chaos", chaos={"stage": "GREETING", "reply": "-ERR [SYS/TEMP] busy, try later"})
    result = curl(server, ca_file, "--ssl-reqd")
    assert result.returncode == 8, result.stderr
    assert "< -ERR [SYS/TEMP] busy, try later" in result.stderr.splitlines()
    assert_no_secret_sent(one_session(server), result.stderr)


def test_chaos_disconnect_at_greeting(serve: ServeFixture) -> None:
    server = start(serve, "chaos", chaos={"stage": "GREETING", "disconnect": True})
    assert raw_greeting_then_close(server) == b""


def test_chaos_delay_before_every_reply(serve: ServeFixture, client_context: ssl.SSLContext) -> None:
    server = start(serve, "chaos", chaos={"delay": 0.2})
    started = time.monotonic()
    with closing(poplib.POP3(HOST, server.port("pop3"), timeout=TIMEOUT)) as pop:  # greeting
        pop.stls(context=client_context)  # CAPA, STLS
        pop.user("alice")
        pop.pass_("alice-password")
        assert pop.stat() == (1, len(MESSAGE))
        pop.quit()
    # Seven replies, each 0.2 s late.
    assert time.monotonic() - started >= 7 * 0.2
    assert verdict_codes(one_session(server)) == set()
