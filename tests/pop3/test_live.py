"""POP3 on real loopback listeners in every TLS mode, driven with poplib, raw sockets and curl."""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import IO

import pytest

from mailmodes.app import ThreadedMailServer
from support import MODES, curl_settings, make_config, run_client

HOST = "127.0.0.1"
TIMEOUT = 10
# A client speaking plaintext to an implicit-TLS port waits for a greeting that never comes.
HANG = 3
GREETING = b"+OK mail.example.test POP3 ready"
PLAINTEXT_DISALLOWED = b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections"
# Dots at line starts, to see the byte-stuffing on the wire and its undoing in clients.
MESSAGE = (
    b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: dots\r\n\r\n"
    b".leading dot\r\n..two dots\r\nplain line\r\n"
)
WIRE = MESSAGE.replace(b"\r\n.", b"\r\n..")


def pop3_listener(mode: str, **extra: object) -> dict[str, object]:
    return {"name": f"pop3-{mode}", "protocol": "pop3", "tls": mode, **extra}


SMTP_MTA = {"name": "smtp", "protocol": "smtp", "tls": "plaintext", "role": "mta"}
IMAP_PLAIN = {"name": "imap", "protocol": "imap", "tls": "plaintext"}


def deliver(server: ThreadedMailServer, data: bytes, to: str = "alice@example.test") -> None:
    """Through SMTP, as mail really arrives (port 25 role: local delivery needs no AUTH)."""
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=TIMEOUT) as client:
        client.sendmail("bob@example.test", [to], data)


def inbox(server: ThreadedMailServer, user: str = "alice") -> list[bytes]:
    return server.call(lambda: [m.data for m in server.store.accounts[user].inbox.messages])


def connect(server: ThreadedMailServer, mode: str, context: ssl.SSLContext) -> poplib.POP3:
    port = server.port(f"pop3-{mode}")
    if mode == "implicit":
        return poplib.POP3_SSL(HOST, port, context=context, timeout=TIMEOUT)
    return poplib.POP3(HOST, port, timeout=TIMEOUT)


def command(pop: poplib.POP3, line: str) -> bytes:
    """Send any command and return its +OK line (poplib raises error_proto on -ERR)."""
    shortcmd: Callable[[str], bytes] = getattr(pop, "_shortcmd")
    return shortcmd(line)


def login(pop: poplib.POP3, user: str = "alice") -> None:
    pop.user(user)
    pop.pass_(f"{user}-password")


def login_stat_quit(pop: poplib.POP3) -> bytes:
    """Log in as alice, find her one message (MESSAGE) in the maildrop, QUIT; return QUIT's reply."""
    login(pop)
    assert pop.stat() == (1, len(MESSAGE))
    return pop.quit()


@pytest.fixture(scope="module")
def matrix_server(certs_dir: Path) -> Iterator[ThreadedMailServer]:
    """One POP3 listener per mode, all reading alice's maildrop with one message in it."""
    listeners = tuple(pop3_listener(mode) for mode in MODES) + (SMTP_MTA,)
    server = ThreadedMailServer(make_config(certs_dir, listeners)).start()
    try:
        deliver(server, MESSAGE)
        yield server
    finally:
        server.stop()


# --- poplib x mode --------------------------------------------------------------------------------


def test_implicit(matrix_server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    with closing(connect(matrix_server, "implicit", client_context)) as pop:
        assert pop.getwelcome() == GREETING
        capabilities = pop.capa()
        assert "STLS" not in capabilities
        assert capabilities["SASL"] == ["PLAIN"] and "USER" in capabilities
        with pytest.raises(poplib.error_proto, match="Command not permitted when TLS active"):
            command(pop, "STLS")
        assert login_stat_quit(pop).startswith(b"+OK")


def test_starttls_required(matrix_server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    with closing(connect(matrix_server, "starttls-required", client_context)) as pop:
        assert pop.getwelcome() == GREETING
        capabilities = pop.capa()
        assert "STLS" in capabilities
        assert "USER" not in capabilities and "SASL" not in capabilities
        # Refused at USER, so a well-behaved client never sends the password in the clear.
        with pytest.raises(poplib.error_proto) as refused:
            pop.user("alice")
        assert refused.value.args[0] == PLAINTEXT_DISALLOWED
        with pytest.raises(poplib.error_proto) as refused:
            command(pop, "AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk")
        assert refused.value.args[0] == PLAINTEXT_DISALLOWED
        assert pop.stls(context=client_context) == b"+OK Begin TLS negotiation"
        assert isinstance(pop.sock, ssl.SSLSocket)
        capabilities = pop.capa()
        assert "STLS" not in capabilities
        assert capabilities["SASL"] == ["PLAIN"] and "USER" in capabilities
        with pytest.raises(poplib.error_proto, match="Command not permitted when TLS active"):
            command(pop, "STLS")
        login_stat_quit(pop)


def test_starttls_optional(matrix_server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    with closing(connect(matrix_server, "starttls-optional", client_context)) as pop:
        capabilities = pop.capa()
        assert {"STLS", "USER", "SASL"} <= set(capabilities)
        login_stat_quit(pop)  # the teaching mode: a login before TLS is allowed
    with closing(connect(matrix_server, "starttls-optional", client_context)) as pop:
        pop.stls(context=client_context)
        assert "STLS" not in pop.capa()
        login_stat_quit(pop)


def test_plaintext(matrix_server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    with closing(connect(matrix_server, "plaintext", client_context)) as pop:
        capabilities = pop.capa()
        assert "STLS" not in capabilities and "USER" in capabilities
        with pytest.raises(poplib.error_proto, match="TLS not available"):
            command(pop, "STLS")
        login_stat_quit(pop)


@pytest.mark.parametrize("mode", MODES)
def test_auth_plain_with_poplib(matrix_server: ThreadedMailServer, client_context: ssl.SSLContext, mode: str) -> None:
    with closing(connect(matrix_server, mode, client_context)) as pop:
        if mode.startswith("starttls"):
            pop.stls(context=client_context)
        # RFC 5034: with the initial response, and with the "+ " continuation.
        assert command(pop, "AUTH PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk").startswith(b"+OK")
        pop.quit()
    with closing(connect(matrix_server, mode, client_context)) as pop:
        if mode.startswith("starttls"):
            pop.stls(context=client_context)
        assert command(pop, "AUTH PLAIN") == b"+ "
        with pytest.raises(poplib.error_proto) as failed:
            command(pop, "AGFsaWNlAHdyb25n")
        assert failed.value.args[0] == b"-ERR [AUTH] Authentication failed"
        pop.quit()


def test_stls_discards_pipelined_plaintext(matrix_server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    """RFC 2595 / CVE-2011-0411: a USER pipelined behind STLS must not count once TLS is up."""
    with socket.create_connection((HOST, matrix_server.port("pop3-starttls-optional")), timeout=TIMEOUT) as raw:
        reader = raw.makefile("rb")
        assert reader.readline() == GREETING + b"\r\n"
        raw.sendall(b"STLS\r\nUSER alice\r\n")
        assert reader.readline() == b"+OK Begin TLS negotiation\r\n"
        with client_context.wrap_socket(raw, server_hostname=HOST) as tls:
            tls.sendall(b"PASS alice-password\r\n")
            assert tls.recv(4096) == b"-ERR No username given\r\n"


def test_stls_discards_plaintext_beyond_one_read(serve: Callable[..., ThreadedMailServer],
                                                 client_context: ssl.SSLContext) -> None:
    """The same attack with more than one read's worth of bytes behind STLS (CVE-2011-0411)."""
    server = serve(pop3_listener("starttls-optional"))
    with socket.create_connection((HOST, server.port("pop3-starttls-optional")), timeout=TIMEOUT) as raw:
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(b"STLS\r\n" + b"x" * 70000 + b"\r\nUSER alice\r\n")
        assert reader.readline() == b"+OK Begin TLS negotiation\r\n"
        try:
            tls = client_context.wrap_socket(raw, server_hostname=HOST)
        except (ssl.SSLError, ConnectionError):
            return  # the plaintext reached the TLS layer and broke the handshake: nothing executed
        with tls:
            tls.sendall(b"PASS alice-password\r\n")
            assert tls.recv(4096) == b"-ERR No username given\r\n"
            tls.sendall(b"QUIT\r\n")
            tls.recv(4096)


# --- mail flow, maildrop semantics ----------------------------------------------------------------


@pytest.fixture
def flow_server(serve: Callable[..., ThreadedMailServer]) -> ThreadedMailServer:
    return serve(pop3_listener("plaintext"), pop3_listener("implicit"), SMTP_MTA, IMAP_PLAIN)


def read_multiline(reader: IO[bytes]) -> bytes:
    lines = []
    while True:
        line = reader.readline()
        assert line, "connection closed mid-reply"
        lines.append(line)
        if line == b".\r\n":
            return b"".join(lines)


def test_smtp_then_retr_gives_the_same_bytes_dot_stuffed(flow_server: ThreadedMailServer,
                                                         client_context: ssl.SSLContext) -> None:
    deliver(flow_server, MESSAGE)
    with socket.create_connection((HOST, flow_server.port("pop3-plaintext")), timeout=TIMEOUT) as raw:
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(b"USER alice\r\nPASS alice-password\r\nRETR 1\r\n")
        assert reader.readline() == b"+OK\r\n"
        assert reader.readline() == b"+OK Logged in, 1 messages\r\n"
        assert read_multiline(reader) == f"+OK {len(MESSAGE)} octets\r\n".encode() + WIRE + b".\r\n"
        raw.sendall(b"QUIT\r\n")
        assert reader.readline().startswith(b"+OK")
    # poplib undoes the stuffing: the client gets back exactly what SMTP accepted.
    with closing(connect(flow_server, "implicit", client_context)) as pop:
        login(pop)
        _, lines, octets = pop.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == MESSAGE
        pop.quit()


def test_dele_and_quit_removes_the_message_everywhere(flow_server: ThreadedMailServer,
                                                      client_context: ssl.SSLContext) -> None:
    deliver(flow_server, b"Subject: first\r\n\r\none\r\n")
    deliver(flow_server, b"Subject: second\r\n\r\ntwo\r\n")
    with closing(connect(flow_server, "implicit", client_context)) as pop:
        login(pop)
        unique_ids = pop.uidl()[1]
        pop.dele(1)
        assert len(inbox(flow_server)) == 2  # only marked until QUIT
        pop.quit()
    assert inbox(flow_server) == [b"Subject: second\r\n\r\ntwo\r\n"]
    with imaplib.IMAP4(HOST, flow_server.port("imap"), timeout=TIMEOUT) as imap:
        imap.login("alice", "alice-password")
        imap.select("INBOX")
        _, found = imap.uid("SEARCH", "ALL")
        assert found == [b"2"]
        _, (uidvalidity,) = imap.response("UIDVALIDITY")
        imap.logout()
    # POP3's unique id is IMAP's UIDVALIDITY.UID: both name the same message the same way.
    assert unique_ids == [b"1 %s.1" % uidvalidity, b"2 %s.2" % uidvalidity]


def login_when_free(server: ThreadedMailServer, context: ssl.SSLContext) -> poplib.POP3:
    """Log in as soon as a dropped session has let go of the lock (its connection_lost ran)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        pop = connect(server, "implicit", context)
        try:
            login(pop)
            return pop
        except poplib.error_proto as error:
            pop.close()
            if b"[IN-USE]" not in error.args[0] or time.monotonic() > deadline:
                raise


def test_dropped_connection_deletes_nothing(flow_server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    deliver(flow_server, b"Subject: keep me\r\n\r\n")
    pop = connect(flow_server, "implicit", client_context)
    login(pop)
    pop.dele(1)
    pop.close()  # no QUIT: no UPDATE state
    with closing(login_when_free(flow_server, client_context)) as again:
        assert again.stat() == (1, 20)
        again.quit()
    assert inbox(flow_server) == [b"Subject: keep me\r\n\r\n"]


def test_second_session_gets_in_use(flow_server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    with closing(connect(flow_server, "implicit", client_context)) as first:
        login(first)
        with closing(connect(flow_server, "plaintext", client_context)) as second:
            second.user("alice")
            with pytest.raises(poplib.error_proto) as refused:
                second.pass_("alice-password")
            assert refused.value.args[0].startswith(b"-ERR [IN-USE] ")
            login(second, "bob")  # another maildrop is free
            second.quit()
        first.quit()
    with closing(connect(flow_server, "plaintext", client_context)) as third:
        login(third)
        third.quit()


def test_mail_delivered_during_a_session_shows_at_next_login(flow_server: ThreadedMailServer,
                                                             client_context: ssl.SSLContext) -> None:
    deliver(flow_server, b"Subject: one\r\n\r\n")
    with closing(connect(flow_server, "implicit", client_context)) as pop:
        login(pop)
        deliver(flow_server, b"Subject: two\r\n\r\n")
        assert pop.stat()[0] == 1
        uids = pop.uidl()[1]
        pop.quit()
    with closing(connect(flow_server, "implicit", client_context)) as pop:
        login(pop)
        assert pop.stat()[0] == 2
        assert pop.uidl()[1][0] == uids[0]  # the same unique id across sessions
        pop.quit()


# --- limits ---------------------------------------------------------------------------------------


def test_idle_timeout(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(pop3_listener("plaintext", limits={"idle_timeout": 0.3}))
    with socket.create_connection((HOST, server.port("pop3-plaintext")), timeout=TIMEOUT) as raw:
        reader = raw.makefile("rb")
        assert reader.readline() == GREETING + b"\r\n"
        assert reader.readline() == b"-ERR [SYS/TEMP] Idle timeout, closing\r\n"
        assert reader.readline() == b""


def test_connection_limit(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(pop3_listener("plaintext", limits={"max_connections": 1}))
    port = server.port("pop3-plaintext")
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as first:
        assert first.makefile("rb").readline() == GREETING + b"\r\n"
        with socket.create_connection((HOST, port), timeout=TIMEOUT) as second:
            assert second.makefile("rb").readline() == b"-ERR [SYS/TEMP] Too many connections\r\n"


def test_line_limit_and_bad_command_budget(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(pop3_listener("plaintext", limits={"max_bad_commands": 3}))
    with socket.create_connection((HOST, server.port("pop3-plaintext")), timeout=TIMEOUT) as raw:
        reader = raw.makefile("rb")
        reader.readline()
        raw.sendall(b"NOOP " + b"x" * 300 + b"\r\nCAPA\r\n")
        assert reader.readline() == b"-ERR Line too long\r\n"
        assert reader.readline() == b"+OK Capability list follows\r\n"
        read_multiline(reader)
        raw.sendall(b"BOGUS\r\nBOGUS\r\nCAPA\r\n")
        assert reader.readline() == b"-ERR Unknown command\r\n"
        assert reader.readline() == b"-ERR Too many invalid commands\r\n"
        assert reader.readline() == b""


# --- curl x mode (CLIENTS.md) ---------------------------------------------------------------------

# client setting -> (URL scheme, options)
CURL_SETTINGS = curl_settings("pop3")
# (client setting, server mode) -> curl's exit status; 0 means it listed the maildrop.
CURL_OUTCOMES = {
    ("implicit", "implicit"): 0,
    ("implicit", "starttls-required"): 35,  # a TLS ClientHello answered by "+OK ... POP3 ready"
    ("implicit", "starttls-optional"): 35,
    ("implicit", "plaintext"): 35,
    ("required", "implicit"): 28,  # waits for a greeting; the server waits for a ClientHello
    ("required", "starttls-required"): 0,
    ("required", "starttls-optional"): 0,
    ("required", "plaintext"): 64,  # STLS not on offer: curl refuses to go on
    ("opportunistic", "implicit"): 28,
    ("opportunistic", "starttls-required"): 0,
    ("opportunistic", "starttls-optional"): 0,
    ("opportunistic", "plaintext"): 0,
    ("none", "implicit"): 28,
    ("none", "starttls-required"): 67,  # neither USER nor SASL advertised: "Login denied"
    ("none", "starttls-optional"): 0,
    ("none", "plaintext"): 0,
}


def curl(server: ThreadedMailServer, ca_file: Path, setting: str, mode: str, path: str = "") -> tuple[int, str, str]:
    scheme, options = CURL_SETTINGS[setting]
    port = server.port(f"pop3-{mode}")
    result = run_client([
        "curl", "-sS", "-v", "--max-time", str(HANG), "--cacert", str(ca_file), "-u", "alice:alice-password",
        *options, f"{scheme}://{HOST}:{port}/{path}",
    ])
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize(("setting", "mode"), sorted(CURL_OUTCOMES))
def test_curl(matrix_server: ThreadedMailServer, ca_file: Path, setting: str, mode: str) -> None:
    returncode, stdout, stderr = curl(matrix_server, ca_file, setting, mode)
    expected = CURL_OUTCOMES[(setting, mode)]
    assert returncode == expected, stderr
    if expected == 0:
        assert stdout == f"1 {len(MESSAGE)}\r\n"
    if mode == "starttls-required":
        # Nothing that could carry a password crossed the wire before TLS.
        before_tls = stderr.split("Begin TLS negotiation")[0]
        assert "> USER" not in before_tls and "> AUTH" not in before_tls and "> PASS" not in before_tls


@pytest.mark.parametrize("mode", MODES)
def test_curl_retr(matrix_server: ThreadedMailServer, ca_file: Path, mode: str) -> None:
    setting = {"implicit": "implicit", "starttls-required": "required"}.get(mode, "none")
    returncode, stdout, stderr = curl(matrix_server, ca_file, setting, mode, "1")
    assert returncode == 0, stderr
    assert stdout.encode() == MESSAGE


def test_apop_is_a_listener_option(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "pop3", "protocol": "pop3", "tls": "plaintext", "apop": True})
    client = poplib.POP3(HOST, server.port("pop3"), timeout=TIMEOUT)
    assert re.search(rb"<[^>]+@mail\.example\.test>$", client.getwelcome())
    assert client.apop("alice", "alice-password").startswith(b"+OK")
    client.quit()
