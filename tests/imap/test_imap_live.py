"""IMAP on real loopback listeners: the mode matrix with imaplib, imapclient and curl, mail flow
from SMTP, IDLE, several sessions on one mailbox, and the limits as a client meets them."""

from __future__ import annotations

import imaplib
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from mailmodes.app import ThreadedMailServer
from support import IMAP_EXTENSIONS, MODES, make_config, run_client

HOST = "127.0.0.1"
TIMEOUT = 10
CAPS = IMAP_EXTENSIONS
MESSAGE = (
    b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: live test\r\n"
    b"Message-ID: <live-1@example.test>\r\n\r\nHello Alice,\r\n.a dot line\r\nbye\r\n"
)
SMTP_MTA = {"name": "smtp", "protocol": "smtp", "tls": "plaintext", "role": "mta"}
SUBMISSION = {"name": "submission", "protocol": "smtp", "tls": "starttls-required"}


def imap_listener(mode: str, **extra: object) -> dict[str, object]:
    return {"name": f"imap-{mode}", "protocol": "imap", "tls": mode, **extra}


def deliver(server: ThreadedMailServer, data: bytes = MESSAGE, to: str = "alice@example.test") -> None:
    """Through SMTP on the MTA port, as mail really arrives."""
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=TIMEOUT) as smtp:
        smtp.sendmail("bob@example.test", [to], data)


def imaplib_connect(server: ThreadedMailServer, mode: str, context: ssl.SSLContext) -> imaplib.IMAP4:
    port = server.port(f"imap-{mode}")
    if mode == "implicit":
        return imaplib.IMAP4_SSL(HOST, port, ssl_context=context, timeout=TIMEOUT)
    return imaplib.IMAP4(HOST, port, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def matrix_server(certs_dir: Path) -> Iterator[ThreadedMailServer]:
    """One IMAP listener per mode over one store in which alice has one message."""
    listeners = tuple(imap_listener(mode) for mode in MODES) + (SMTP_MTA,)
    server = ThreadedMailServer(make_config(certs_dir, listeners)).start()
    try:
        deliver(server)
        yield server
    finally:
        server.stop()


# --- imaplib x mode ------------------------------------------------------------------------


def test_imaplib_implicit(matrix_server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    with imaplib_connect(matrix_server, "implicit", client_context) as imap:
        assert imap.welcome == f"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN {CAPS}] mail.example.test ready".encode()
        assert imap.login("alice", "alice-password")[0] == "OK"
        assert imap.select("INBOX", readonly=True) == ("OK", [b"1"])
        typ, data = imap.fetch("1", "(BODY.PEEK[])")
        assert typ == "OK" and data[0][1] == MESSAGE  # type: ignore[index]
        assert imap.unselect() == ("OK", [b"UNSELECT completed"])
        assert imap.logout()[0] == "BYE"


def test_imaplib_starttls_required(matrix_server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    with imaplib_connect(matrix_server, "starttls-required", client_context) as imap:
        assert imap.welcome == b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mail.example.test ready"
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            imap.login("alice", "alice-password")
        assert imap.starttls(ssl_context=client_context)[0] == "OK"
        assert "LOGINDISABLED" not in imap.capabilities and "STARTTLS" not in imap.capabilities
        assert "AUTH=PLAIN" in imap.capabilities
        assert imap.login("alice", "alice-password")[0] == "OK"
        assert imap.select("INBOX", readonly=True) == ("OK", [b"1"])
        imap.logout()


def test_imaplib_starttls_optional(matrix_server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    with imaplib_connect(matrix_server, "starttls-optional", client_context) as imap:
        assert imap.welcome.startswith(b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN ")
        assert imap.starttls(ssl_context=client_context)[0] == "OK"
        assert imap.login("alice", "alice-password")[0] == "OK"
        imap.logout()
    # "TLS, if available" may also carry on in plaintext: login is allowed there.
    with imaplib_connect(matrix_server, "starttls-optional", client_context) as imap:
        assert imap.login("alice", "alice-password")[0] == "OK"
        imap.logout()


def test_imaplib_plaintext(matrix_server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    with imaplib_connect(matrix_server, "plaintext", client_context) as imap:
        assert "STARTTLS" not in imap.capabilities
        assert imap.xatom("STARTTLS") == ("NO", [b"[UNAVAILABLE] TLS is not available on this port"])
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login("alice", "wrong")
        assert imap.authenticate("PLAIN", lambda _: b"\0alice\0alice-password")[0] == "OK"
        imap.logout()


# --- imapclient x mode -----------------------------------------------------------------------


def imapclient_connect(server: ThreadedMailServer, mode: str, context: ssl.SSLContext) -> IMAPClient:
    port = server.port(f"imap-{mode}")
    client = IMAPClient(HOST, port, ssl=mode == "implicit", ssl_context=context, timeout=TIMEOUT)
    if mode.startswith("starttls"):
        client.starttls(context)
    return client


@pytest.mark.parametrize("mode", MODES)
def test_imapclient(matrix_server: ThreadedMailServer, client_context: ssl.SSLContext, mode: str) -> None:
    client = imapclient_connect(matrix_server, mode, client_context)
    try:
        client.login("alice", "alice-password")
        # IMAPClient upper-cases the names it was given (IMAP4rev2 as IMAP4REV2).
        assert set(CAPS.upper().encode().split()) <= set(client.capabilities())
        folders = {name: flags for flags, _, name in client.list_folders()}
        assert folders["INBOX"] == (b"\\HasNoChildren",)
        assert folders["Sent"] == (b"\\HasNoChildren", b"\\Sent")
        assert client.find_special_folder(b"\\Trash") == "Trash"
        assert client.namespace().personal == (("", "/"),)
        info = client.select_folder("INBOX", readonly=True)
        assert info[b"EXISTS"] == 1 and info[b"READ-ONLY"] == [b""]
        uids = client.search(["FROM", "bob", "SUBJECT", "live"])
        assert uids == [1]
        fetched = client.fetch(uids, ["ENVELOPE", "BODYSTRUCTURE", "RFC822.SIZE", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])[1]
        assert fetched[b"ENVELOPE"].subject == b"live test"
        assert fetched[b"ENVELOPE"].from_[0].mailbox == b"bob"
        assert fetched[b"RFC822.SIZE"] == len(MESSAGE)
        assert fetched[b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: live test\r\n\r\n"
        assert fetched[b"BODYSTRUCTURE"][:2] == (b"text", b"plain")
    finally:
        client.logout()


def test_imapclient_refuses_plain_login_on_required_port(
    matrix_server: ThreadedMailServer, client_context: ssl.SSLContext
) -> None:
    client = IMAPClient(HOST, matrix_server.port("imap-starttls-required"), ssl=False, timeout=TIMEOUT)
    try:
        with pytest.raises(LoginError, match="PRIVACYREQUIRED"):
            client.login("alice", "alice-password")
    finally:
        client.logout()


# --- curl x mode -------------------------------------------------------------------------------


CURL_URL = {
    "implicit": ("imaps", []),
    "starttls-required": ("imap", ["--ssl-reqd"]),
    "starttls-optional": ("imap", ["--ssl"]),
    "plaintext": ("imap", []),
}


def curl(server: ThreadedMailServer, ca_file: Path, mode: str, path: str = "/", *extra: str) -> tuple[int, str, str]:
    scheme, options = CURL_URL[mode]
    url = f"{scheme}://{HOST}:{server.port(f'imap-{mode}')}{path}"
    result = run_client(
        ["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "-u", "alice:alice-password", *options,
         *extra, url]
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_curl_lists_and_fetches(matrix_server: ThreadedMailServer, ca_file: Path, mode: str) -> None:
    code, out, err = curl(matrix_server, ca_file, mode)
    assert code == 0, err
    assert '* LIST (\\HasNoChildren) "/" INBOX\r\n' in out
    assert '* LIST (\\HasNoChildren \\Junk) "/" Junk\r\n' in out
    code, out, err = curl(matrix_server, ca_file, mode, "/INBOX;UID=1")
    assert code == 0, err
    assert out.encode() == MESSAGE


def test_curl_plaintext_client_on_required_port_is_denied(matrix_server: ThreadedMailServer, ca_file: Path) -> None:
    port = matrix_server.port("imap-starttls-required")
    result = run_client(["curl", "-sS", "--max-time", "10", "-u", "alice:alice-password", f"imap://{HOST}:{port}/"])
    assert result.returncode == 67, result.stderr  # CLIENTS.md: (67) Login denied


# --- Mail flow and several sessions ------------------------------------------------------


def test_submission_then_fetch_on_implicit_returns_the_same_bytes(
    serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext
) -> None:
    server = serve(SUBMISSION, imap_listener("implicit"))
    with smtplib.SMTP(HOST, server.port("submission"), timeout=TIMEOUT) as smtp:
        smtp.starttls(context=client_context)
        smtp.login("bob", "bob-password")
        smtp.sendmail("bob@example.test", ["alice@example.test"], MESSAGE)
    with imaplib_connect(server, "implicit", client_context) as imap:
        imap.login("alice", "alice-password")
        imap.select("INBOX")
        typ, data = imap.uid("FETCH", "1", "(BODY[] FLAGS)")
        assert typ == "OK"
        assert data[0][1] == MESSAGE  # type: ignore[index]
        typ, data = imap.fetch("1", "FLAGS")
        assert b"\\Seen" in data[0]  # type: ignore[operator]
        imap.logout()


def test_idle_sees_a_new_delivery(serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    server = serve(SMTP_MTA, imap_listener("implicit"))
    client = imapclient_connect(server, "implicit", client_context)
    try:
        client.login("alice", "alice-password")
        assert client.select_folder("INBOX")[b"EXISTS"] == 0
        client.idle()
        deliver(server)
        responses = client.idle_check(timeout=TIMEOUT)
        assert (1, b"EXISTS") in responses
        client.idle_done()
        assert client.search("ALL") == [1]
    finally:
        client.logout()


def test_two_sessions_see_each_others_store_and_expunge(
    serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext
) -> None:
    server = serve(SMTP_MTA, imap_listener("plaintext"))
    for _ in range(3):
        deliver(server)
    one = imapclient_connect(server, "plaintext", client_context)
    two = imapclient_connect(server, "plaintext", client_context)
    try:
        for client in (one, two):
            client.login("alice", "alice-password")
            client.select_folder("INBOX")
        one.add_flags([2], [b"\\Flagged"])
        one.delete_messages([3])
        one.expunge()
        assert two.noop()[1] == [(3, b"EXPUNGE"), (2, b"FETCH", (b"FLAGS", (b"\\Flagged",)))]
        two.set_flags([1], [b"\\Answered", b"$Done"])
        two.idle()
        two.idle_done()
        responses = one.noop()[1]
        # \Recent: this session selected first, so the delivered messages are recent here.
        assert (1, b"FETCH", (b"FLAGS", (b"\\Answered", b"\\Recent", b"$Done"))) in responses
        assert one.search(["FLAGGED"]) == [2] and two.search(["ANSWERED"]) == [1]
    finally:
        one.logout()
        two.logout()


# --- Limits as a client meets them ---------------------------------------------------------


def raw_session(server: ThreadedMailServer, name: str) -> socket.socket:
    sock = socket.create_connection((HOST, server.port(name)), timeout=TIMEOUT)
    assert sock.recv(4096).startswith(b"* OK [CAPABILITY ")
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_idle_timeout_autologout(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(imap_listener("plaintext", limits={"idle_timeout": 0.3}))
    with closing(raw_session(server, "imap-plaintext")) as sock:
        assert read_until_closed(sock) == b"* BYE Autologout; idle for too long\r\n"


def test_literal_and_bad_command_limits(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(imap_listener("plaintext", limits={"max_literal_size": 1000, "max_bad_commands": 2}))
    with closing(raw_session(server, "imap-plaintext")) as sock:
        sock.sendall(b"a LOGIN alice alice-password\r\n")
        assert sock.recv(4096).startswith(b"a OK ")
        sock.sendall(b"b APPEND INBOX {1001}\r\n")
        assert sock.recv(4096) == b"b NO [TOOBIG] Literal too big (at most 1000 octets)\r\n"
        sock.sendall(b"c BOGUS\r\nd BOGUS\r\n")
        assert read_until_closed(sock) == (
            b"c BAD Unknown command\r\nd BAD Unknown command\r\n* BYE Too many invalid commands\r\n"
        )


def test_connections_per_listener(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(imap_listener("plaintext", limits={"max_connections": 1}))
    port = server.port("imap-plaintext")
    with closing(raw_session(server, "imap-plaintext")), closing(socket.create_connection((HOST, port))) as second:
        assert read_until_closed(second) == b"* BYE [UNAVAILABLE] Too many connections\r\n"
