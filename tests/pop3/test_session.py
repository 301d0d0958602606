"""The POP3 session without sockets: bytes in, exact bytes out (RFC 1939, 2449, 2595, 5034)."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

import pytest

from mailmodes import __version__
from mailmodes.protocols.events import Close, Output, StartTls
from mailmodes.protocols.pop3 import (
    Pop3Session,
    crlf_normalised,
    dot_stuffed,
    top_of,
    wire_form,
    wire_size,
)
from mailmodes.store import Store
from mailmodes.tls.policy import TlsMode
from support import make_store, sans_io_connection

HOST = "mail.example.test"
IMPL = f"IMPLEMENTATION mailmodes-{__version__}\r\n"
BASE_CAPS = "TOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nEXPIRE NEVER\r\n"
PLAINTEXT_DISALLOWED = b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections\r\n"
AUTH_FAILED = b"-ERR [AUTH] Authentication failed\r\n"
LOGIN_ALICE = b"USER alice\r\nPASS alice-password\r\n"


@dataclass
class Client:
    """A session and the helpers to talk to it as a client would."""

    session: Pop3Session
    store: Store

    def send(self, data: bytes) -> bytes:
        """Feed bytes; return what the server sent, asserting it sent only bytes."""
        outputs = self.session.feed(data)
        assert all(isinstance(item, bytes) for item in outputs), outputs
        return b"".join(outputs)  # type: ignore[arg-type]

    def outputs(self, data: bytes) -> list[Output]:
        return self.session.feed(data)

    def login(self) -> None:
        assert self.send(LOGIN_ALICE).startswith(b"+OK\r\n+OK Logged in")

    @property
    def inbox_uids(self) -> list[int]:
        return [m.uid for m in self.store.accounts["alice"].inbox.messages]


def make_client(
    mode: TlsMode = TlsMode.PLAINTEXT,
    store: Store | None = None,
    *,
    apop: bool = False,
    tls_available: bool = True,
    **limits: int,
) -> Client:
    connection = sans_io_connection("pop3", mode, tls_available=tls_available, peer=("127.0.0.1", 1), limits=limits)
    store = store or make_store()
    return Client(Pop3Session(connection, store, HOST, apop=apop), store)


def capa(*extra: str) -> bytes:
    return ("+OK Capability list follows\r\n" + BASE_CAPS + "".join(f"{e}\r\n" for e in extra) + IMPL + ".\r\n").encode()


def plain(authzid: str, user: str, password: str) -> bytes:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode())


# --- greeting and CAPA per mode -------------------------------------------------------------------


def test_greeting() -> None:
    assert make_client().session.greeting() == [b"+OK mail.example.test POP3 ready\r\n"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (TlsMode.STARTTLS_REQUIRED, capa("STLS")),
        (TlsMode.STARTTLS_OPTIONAL, capa("USER", "SASL PLAIN", "STLS")),
        (TlsMode.PLAINTEXT, capa("USER", "SASL PLAIN")),
        (TlsMode.IMPLICIT, capa("USER", "SASL PLAIN")),
    ],
)
def test_capa_per_mode(mode: TlsMode, expected: bytes) -> None:
    assert make_client(mode).send(b"CAPA\r\n") == expected


@pytest.mark.parametrize("mode", [TlsMode.STARTTLS_REQUIRED, TlsMode.STARTTLS_OPTIONAL])
def test_capa_after_stls_drops_stls_and_offers_login(mode: TlsMode) -> None:
    client = make_client(mode)
    assert client.outputs(b"STLS\r\n") == [b"+OK Begin TLS negotiation\r\n", StartTls()]
    client.session.security.tls_started()  # what connection.py does after the handshake
    assert client.session.tls_started() == []
    assert client.send(b"CAPA\r\n") == capa("USER", "SASL PLAIN")
    assert client.send(b"STLS\r\n") == b"-ERR Command not permitted when TLS active\r\n"


def test_capa_in_transaction_has_no_stls() -> None:
    client = make_client(TlsMode.STARTTLS_OPTIONAL)
    client.login()
    assert client.send(b"capa\r\n") == capa("USER", "SASL PLAIN")


# --- starttls-required: refuse at USER, never read a password in the clear ----------------------


@pytest.mark.parametrize(
    "command",
    [b"USER alice\r\n", b"PASS alice-password\r\n", b"AUTH PLAIN\r\n", b"AUTH PLAIN " + plain("", "alice", "alice-password") + b"\r\n", b"AUTH\r\n"],
)
def test_required_refuses_login_before_tls(command: bytes) -> None:
    client = make_client(TlsMode.STARTTLS_REQUIRED)
    assert client.send(command) == PLAINTEXT_DISALLOWED
    assert client.session.state.value == "authorization"


def test_required_refuses_apop_before_tls() -> None:
    client = make_client(TlsMode.STARTTLS_REQUIRED, apop=True)
    assert client.send(b"APOP alice " + b"0" * 32 + b"\r\n") == PLAINTEXT_DISALLOWED


def test_required_user_then_pass_never_logs_in() -> None:
    client = make_client(TlsMode.STARTTLS_REQUIRED)
    assert client.send(LOGIN_ALICE) == PLAINTEXT_DISALLOWED * 2
    assert client.send(b"STAT\r\n") == b"-ERR Command not valid in this state\r\n"


def test_required_login_after_tls() -> None:
    client = make_client(TlsMode.STARTTLS_REQUIRED)
    client.outputs(b"STLS\r\n")
    client.session.security.tls_started()
    client.session.tls_started()
    assert client.send(LOGIN_ALICE) == b"+OK\r\n+OK Logged in, 0 messages\r\n"


# --- STLS ---------------------------------------------------------------------------------------


def test_stls_drops_and_counts_pipelined_bytes() -> None:
    client = make_client(TlsMode.STARTTLS_OPTIONAL)
    outputs = client.outputs(b"CAPA\r\nSTLS\r\nUSER alice\r\nPASS alice-password\r\n")
    assert outputs == [capa("USER", "SASL PLAIN", "STLS") + b"+OK Begin TLS negotiation\r\n", StartTls()]
    assert client.session.pipelined_after_starttls == len(b"USER alice\r\nPASS alice-password\r\n")
    client.session.security.tls_started()
    client.session.tls_started()
    # Nothing of the plaintext USER survived: PASS alone is refused.
    assert client.send(b"PASS alice-password\r\n") == b"-ERR No username given\r\n"


def test_stls_forgets_user_given_before_tls() -> None:
    client = make_client(TlsMode.STARTTLS_OPTIONAL)
    assert client.send(b"USER alice\r\n") == b"+OK\r\n"
    client.outputs(b"STLS\r\n")
    client.session.security.tls_started()
    client.session.tls_started()
    assert client.send(b"PASS alice-password\r\n") == b"-ERR No username given\r\n"


def test_stls_without_pipelining_counts_zero() -> None:
    client = make_client(TlsMode.STARTTLS_REQUIRED)
    assert client.outputs(b"STLS\r\n") == [b"+OK Begin TLS negotiation\r\n", StartTls()]
    assert client.session.pipelined_after_starttls == 0


def test_stls_on_implicit_is_refused() -> None:
    assert make_client(TlsMode.IMPLICIT).send(b"STLS\r\n") == b"-ERR Command not permitted when TLS active\r\n"


def test_stls_on_plaintext_listener_is_not_available() -> None:
    assert make_client(TlsMode.PLAINTEXT).send(b"STLS\r\n") == b"-ERR TLS not available\r\n"


def test_stls_without_certificate_is_not_available() -> None:
    client = make_client(TlsMode.STARTTLS_OPTIONAL, tls_available=False)
    assert client.send(b"CAPA\r\n") == capa("USER", "SASL PLAIN")
    assert client.send(b"STLS\r\n") == b"-ERR TLS not available\r\n"


def test_stls_only_in_authorization_state() -> None:
    client = make_client(TlsMode.STARTTLS_OPTIONAL)
    client.login()
    assert client.send(b"STLS\r\n") == b"-ERR Command not valid in this state\r\n"


def test_stls_with_argument_is_a_syntax_error() -> None:
    assert make_client(TlsMode.STARTTLS_OPTIONAL).send(b"STLS now\r\n") == b"-ERR Syntax error\r\n"


# --- USER/PASS, AUTH PLAIN, APOP ------------------------------------------------------------------


def test_user_pass_login() -> None:
    client = make_client()
    client.store.accounts["alice"].inbox.append(b"Subject: a\r\n\r\nhi\r\n")
    assert client.send(LOGIN_ALICE) == b"+OK\r\n+OK Logged in, 1 messages\r\n"
    assert client.session.state.value == "transaction"


def test_login_by_address_and_password_with_spaces() -> None:
    store = make_store()
    store.add_account("carol", "pass with spaces", ["carol@example.test"])
    client = make_client(store=store)
    assert client.send(b"USER carol@example.test\r\nPASS pass with spaces\r\n") == b"+OK\r\n+OK Logged in, 0 messages\r\n"


def test_bad_password() -> None:
    client = make_client()
    assert client.send(b"USER alice\r\nPASS wrong\r\n") == b"+OK\r\n" + AUTH_FAILED
    assert client.send(b"USER nobody\r\nPASS wrong\r\n") == b"+OK\r\n" + AUTH_FAILED
    assert client.send(LOGIN_ALICE) == b"+OK\r\n+OK Logged in, 0 messages\r\n"


def test_pass_must_follow_user_immediately() -> None:
    client = make_client()
    assert client.send(b"PASS alice-password\r\n") == b"-ERR No username given\r\n"
    assert client.send(b"USER alice\r\nCAPA\r\n").startswith(b"+OK\r\n+OK Capability")
    assert client.send(b"PASS alice-password\r\n") == b"-ERR No username given\r\n"


def test_user_without_name() -> None:
    assert make_client().send(b"USER\r\n") == b"-ERR Syntax error\r\n"


def test_auth_plain_with_initial_response() -> None:
    client = make_client(TlsMode.IMPLICIT)
    reply = client.send(b"AUTH PLAIN " + plain("", "alice", "alice-password") + b"\r\n")
    assert reply == b"+OK Logged in, 0 messages\r\n"


def test_auth_plain_with_continuation() -> None:
    client = make_client()
    assert client.send(b"AUTH PLAIN\r\n") == b"+ \r\n"
    assert client.send(plain("alice", "alice", "alice-password") + b"\r\n") == b"+OK Logged in, 0 messages\r\n"


def test_auth_plain_cancelled() -> None:
    client = make_client()
    assert client.send(b"AUTH PLAIN\r\n*\r\n") == b"+ \r\n-ERR Authentication cancelled\r\n"
    assert client.session.state.value == "authorization"


def test_auth_plain_failures() -> None:
    client = make_client()
    assert client.send(b"AUTH PLAIN " + plain("", "alice", "nope") + b"\r\n") == AUTH_FAILED
    assert client.send(b"AUTH PLAIN " + plain("bob", "alice", "alice-password") + b"\r\n") == AUTH_FAILED
    assert client.send(b"AUTH PLAIN =\r\n") == AUTH_FAILED
    assert client.send(b"AUTH PLAIN not*base64\r\n") == b"-ERR Invalid base64 data\r\n"
    assert client.send(b"AUTH PLAIN\r\n!!!\r\n") == b"+ \r\n-ERR Invalid base64 data\r\n"


def test_auth_lists_mechanisms_and_refuses_others() -> None:
    client = make_client()
    assert client.send(b"AUTH\r\n") == b"+OK\r\nPLAIN\r\n.\r\n"
    assert client.send(b"AUTH CRAM-MD5\r\n") == b"-ERR Unsupported authentication mechanism\r\n"
    assert client.send(b"auth plain\r\n") == b"+ \r\n"


def test_apop() -> None:
    client = make_client(apop=True)
    (greeting,) = client.session.greeting()
    assert isinstance(greeting, bytes)
    match = re.fullmatch(rb"\+OK mail\.example\.test POP3 ready (<[^>]+@mail\.example\.test>)\r\n", greeting)
    assert match
    digest = hashlib.md5(match.group(1) + b"alice-password").hexdigest().encode()
    assert client.send(b"APOP alice " + b"0" * 32 + b"\r\n") == AUTH_FAILED
    assert client.send(b"APOP alice " + digest + b"\r\n") == b"+OK Logged in, 0 messages\r\n"


def test_apop_timestamp_differs_per_session() -> None:
    assert make_client(apop=True).session.greeting() != make_client(apop=True).session.greeting()


def test_apop_off_by_default() -> None:
    client = make_client()
    assert client.send(b"APOP alice " + b"0" * 32 + b"\r\n") == b"-ERR APOP not enabled\r\n"


# --- maildrop: snapshot, STAT/LIST/UIDL, lock ----------------------------------------------------


def test_stat_list_uidl() -> None:
    client = make_client()
    inbox = client.store.accounts["alice"].inbox
    inbox.append(b"Subject: one\r\n\r\n1\r\n")
    inbox.append(b"Subject: two\n\nbare LF\n")  # sized as sent: with CRLF
    client.login()
    v = inbox.uidvalidity
    assert client.send(b"STAT\r\n") == b"+OK 2 44\r\n"
    assert client.send(b"LIST\r\n") == b"+OK 2 messages (44 octets)\r\n1 19\r\n2 25\r\n.\r\n"
    assert client.send(b"LIST 2\r\n") == b"+OK 2 25\r\n"
    assert client.send(b"UIDL\r\n") == f"+OK\r\n1 {v}.1\r\n2 {v}.2\r\n.\r\n".encode()
    assert client.send(b"UIDL 1\r\n") == f"+OK 1 {v}.1\r\n".encode()
    assert client.send(b"LIST 3\r\n") == b"-ERR No such message\r\n"
    assert client.send(b"LIST 0\r\n") == b"-ERR No such message\r\n"
    assert client.send(b"LIST x\r\n") == b"-ERR Syntax error\r\n"


def test_uidl_is_stable_across_sessions() -> None:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    for n in range(3):
        inbox.append(f"Subject: {n}\r\n\r\n".encode())
    first = make_client(store=store)
    first.login()
    assert first.outputs(b"DELE 1\r\nQUIT\r\n")[-1] == Close()
    first.session.connection_lost()
    second = make_client(store=store)
    second.login()
    v = inbox.uidvalidity
    assert second.send(b"UIDL\r\n") == f"+OK\r\n1 {v}.2\r\n2 {v}.3\r\n.\r\n".encode()


def test_snapshot_fixed_at_login() -> None:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    inbox.append(b"Subject: old\r\n\r\n")
    client = make_client(store=store)
    client.login()
    inbox.append(b"Subject: new\r\n\r\n")
    assert client.send(b"STAT\r\n") == b"+OK 1 16\r\n"
    client.outputs(b"QUIT\r\n")
    client.session.connection_lost()
    later = make_client(store=store)
    later.login()
    assert later.send(b"STAT\r\n") == b"+OK 2 32\r\n"


def test_maildrop_lock() -> None:
    store = make_store()
    first, second = make_client(store=store), make_client(store=store)
    first.login()
    assert second.send(LOGIN_ALICE) == b"+OK\r\n-ERR [IN-USE] Maildrop is locked by another POP3 session\r\n"
    assert second.session.state.value == "authorization"
    # The refused session must not release the lock it never had.
    second.session.connection_lost()
    third = make_client(store=store)
    assert third.send(LOGIN_ALICE).endswith(b"[IN-USE] Maildrop is locked by another POP3 session\r\n")
    # Bob's maildrop is a different one.
    assert third.send(b"USER bob\r\nPASS bob-password\r\n") == b"+OK\r\n+OK Logged in, 0 messages\r\n"


def test_lock_released_at_quit() -> None:
    store = make_store()
    first = make_client(store=store)
    first.login()
    assert first.outputs(b"QUIT\r\n") == [b"+OK mail.example.test POP3 server signing off\r\n", Close()]
    make_client(store=store).login()


def test_lock_released_when_connection_drops() -> None:
    store = make_store()
    first = make_client(store=store)
    first.login()
    first.session.connection_lost()
    make_client(store=store).login()


# --- RETR / TOP: CRLF and dot-stuffing -----------------------------------------------------------


def test_retr_dot_stuffs() -> None:
    client = make_client()
    client.store.accounts["alice"].inbox.append(b"Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\nend\r\n")
    client.login()
    assert client.send(b"RETR 1\r\n") == (
        b"+OK 42 octets\r\nSubject: dots\r\n\r\n..leading\r\n...two\r\n..\r\nend\r\n.\r\n"
    )


def test_retr_normalises_bare_lf_and_missing_final_newline() -> None:
    client = make_client()
    inbox = client.store.accounts["alice"].inbox
    inbox.append(b".Subject: lf\n\nline\n.dot\r\nlast")
    inbox.append(b"")
    client.login()
    assert client.send(b"LIST 1\r\n") == b"+OK 1 34\r\n"
    assert client.send(b"RETR 1\r\n") == (
        b"+OK 34 octets\r\n..Subject: lf\r\n\r\nline\r\n..dot\r\nlast\r\n.\r\n"
    )
    assert client.send(b"RETR 2\r\n") == b"+OK 0 octets\r\n.\r\n"


def test_top() -> None:
    client = make_client()
    inbox = client.store.accounts["alice"].inbox
    inbox.append(b"Subject: t\r\nX: y\r\n\r\n.one\r\ntwo\r\nthree\r\n")
    inbox.append(b"Subject: no body\r\n")
    inbox.append(b"Subject: lf\n\na\nb\n")
    client.login()
    head = b"+OK\r\nSubject: t\r\nX: y\r\n\r\n"
    assert client.send(b"TOP 1 0\r\n") == head + b".\r\n"
    assert client.send(b"TOP 1 2\r\n") == head + b"..one\r\ntwo\r\n.\r\n"
    assert client.send(b"TOP 1 99\r\n") == head + b"..one\r\ntwo\r\nthree\r\n.\r\n"
    assert client.send(b"TOP 2 5\r\n") == b"+OK\r\nSubject: no body\r\n.\r\n"
    assert client.send(b"TOP 3 1\r\n") == b"+OK\r\nSubject: lf\r\n\r\na\r\n.\r\n"
    assert client.send(b"TOP 1\r\n") == b"-ERR Syntax error\r\n"
    assert client.send(b"TOP 1 -1\r\n") == b"-ERR Syntax error\r\n"
    assert client.send(b"TOP 4 1\r\n") == b"-ERR No such message\r\n"


@pytest.mark.parametrize(
    "data",
    [b"", b"a", b"a\n", b"a\r\n", b"a\r", b"\n\n", b"a\r\nb\nc", b"\r\r\n", b"x\n\r\n.\r"],
)
def test_wire_size_matches_normalised_length(data: bytes) -> None:
    text = crlf_normalised(data)
    assert wire_size(data) == len(text)
    assert text == b"" or text.endswith(b"\r\n")
    assert b"\n" not in text.replace(b"\r\n", b"")


def test_helpers() -> None:
    assert dot_stuffed(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n"
    assert top_of(b"\r\nbody\r\n", 0) == b"\r\n"
    assert top_of(b"\r\nbody\r\n", 1) == b"\r\nbody\r\n"


# --- DELE / RSET / QUIT --------------------------------------------------------------------------


def three_messages() -> Client:
    client = make_client()
    for n in range(1, 4):
        client.store.accounts["alice"].inbox.append(f"Subject: {n}\r\n\r\n".encode())
    client.login()
    return client


def test_dele_marks_and_quit_expunges() -> None:
    client = three_messages()
    assert client.send(b"DELE 2\r\n") == b"+OK Message 2 deleted\r\n"
    assert client.send(b"DELE 2\r\n") == b"-ERR Message 2 already deleted\r\n"
    assert client.send(b"RETR 2\r\n") == b"-ERR Message 2 already deleted\r\n"
    assert client.send(b"STAT\r\n") == b"+OK 2 28\r\n"
    assert client.send(b"LIST\r\n") == b"+OK 2 messages (28 octets)\r\n1 14\r\n3 14\r\n.\r\n"
    assert client.inbox_uids == [1, 2, 3]  # only a mark so far
    assert client.outputs(b"QUIT\r\n") == [b"+OK mail.example.test POP3 server signing off\r\n", Close()]
    assert client.inbox_uids == [1, 3]
    client.session.connection_lost()
    assert client.inbox_uids == [1, 3]


def test_rset_unmarks() -> None:
    client = three_messages()
    client.send(b"DELE 1\r\nDELE 3\r\n")
    assert client.send(b"RSET\r\n") == b"+OK 3 messages\r\n"
    assert client.send(b"STAT\r\n") == b"+OK 3 42\r\n"
    client.outputs(b"QUIT\r\n")
    assert client.inbox_uids == [1, 2, 3]


def test_dropped_connection_deletes_nothing() -> None:
    client = three_messages()
    client.send(b"DELE 1\r\nDELE 2\r\n")
    client.session.connection_lost()
    assert client.inbox_uids == [1, 2, 3]


def test_timeout_deletes_nothing() -> None:
    client = three_messages()
    client.send(b"DELE 1\r\n")
    assert client.session.timed_out() == [b"-ERR [SYS/TEMP] Idle timeout, closing\r\n", Close()]
    client.session.connection_lost()
    assert client.inbox_uids == [1, 2, 3]


def test_quit_in_authorization() -> None:
    client = make_client()
    assert client.outputs(b"QUIT\r\n") == [b"+OK mail.example.test POP3 server signing off\r\n", Close()]
    assert client.outputs(b"CAPA\r\n") == []


def test_message_deleted_by_imap_meanwhile_is_still_retrievable_and_quit_is_fine() -> None:
    client = three_messages()
    inbox = client.store.accounts["alice"].inbox
    inbox.expunge([1])
    assert client.send(b"RETR 1\r\n") == b"+OK 14 octets\r\nSubject: 1\r\n\r\n.\r\n"
    client.outputs(b"DELE 1\r\nDELE 2\r\nQUIT\r\n")
    assert client.inbox_uids == [3]


def test_noop() -> None:
    client = three_messages()
    assert client.send(b"NOOP\r\n") == b"+OK\r\n"


# --- parser: states, unknown commands, limits, pipelining -----------------------------------------


def test_unknown_and_wrong_state_commands() -> None:
    client = make_client()
    assert client.send(b"HELO\r\n") == b"-ERR Unknown command\r\n"
    assert client.send(b"\r\n") == b"-ERR Unknown command\r\n"
    assert client.send("RÉTR 1\r\n".encode()) == b"-ERR Unknown command\r\n"
    assert client.send(b"RETR 1\r\n") == b"-ERR Command not valid in this state\r\n"
    assert client.send(b"NOOP\r\n") == b"-ERR Command not valid in this state\r\n"
    client.login()
    assert client.send(b"USER alice\r\n") == b"-ERR Command not valid in this state\r\n"
    assert client.send(b"AUTH PLAIN\r\n") == b"-ERR Command not valid in this state\r\n"


def test_line_limit_counts_the_crlf() -> None:
    client = make_client()
    fits = b"USER " + b"a" * 248 + b"\r\n"  # 255 octets with CRLF (RFC 2449 section 4)
    assert len(fits) == 255
    assert client.send(fits) == b"+OK\r\n"
    assert client.send(b"USER " + b"a" * 249 + b"\r\n") == b"-ERR Line too long\r\n"


def test_long_line_is_answered_once_and_skipped() -> None:
    client = make_client()
    assert client.send(b"USER " + b"a" * 300) == b"-ERR Line too long\r\n"
    assert client.send(b"b" * 1000) == b""
    assert client.send(b"bbb\r\nCAPA\r\n") == capa("USER", "SASL PLAIN")


def test_configured_line_limit() -> None:
    client = make_client(max_line_length=20)
    assert client.send(b"USER alice-abcdefghi\r\n") == b"-ERR Line too long\r\n"
    assert client.send(b"USER alice\r\n") == b"+OK\r\n"


def test_bad_command_budget() -> None:
    client = make_client(max_bad_commands=3)
    assert client.send(b"X\r\nY\r\n") == b"-ERR Unknown command\r\n" * 2
    assert client.outputs(b"Z\r\nCAPA\r\n") == [b"-ERR Too many invalid commands\r\n", Close()]
    assert client.outputs(b"CAPA\r\n") == []


def test_long_lines_count_against_the_budget() -> None:
    client = make_client(max_bad_commands=2)
    assert client.send(b"A" * 300 + b"\r\n") == b"-ERR Line too long\r\n"
    assert client.outputs(b"A" * 300 + b"\r\n") == [b"-ERR Too many invalid commands\r\n", Close()]


def test_pipelined_commands_answered_in_order_in_one_write() -> None:
    client = three_messages()
    outputs = client.outputs(b"STAT\r\nLIST 1\r\nNOOP\r\n")
    assert outputs == [b"+OK 3 42\r\n+OK 1 14\r\n+OK\r\n"]


def test_bytes_split_anywhere() -> None:
    client = make_client()
    data = LOGIN_ALICE + b"STAT\r\n"
    received = b"".join(client.send(data[i : i + 1]) for i in range(len(data)))
    assert received == b"+OK\r\n+OK Logged in, 0 messages\r\n+OK 0 0\r\n"


def test_bare_lf_line_endings_from_client() -> None:
    client = make_client()
    assert client.send(b"USER alice\nPASS alice-password\nSTAT\n") == b"+OK\r\n+OK Logged in, 0 messages\r\n+OK 0 0\r\n"


def test_wake_is_silent() -> None:
    assert make_client().session.wake() == []


def test_sasl_response_may_be_longer_than_a_command_line() -> None:
    # RFC 5034 section 4: the 255-octet limit is for the AUTH command; a long initial response
    # goes on its own line after "+ " instead.
    store = make_store()
    store.add_account("long", "p" * 300, ["long@example.test"])
    client = make_client(store=store)
    response = plain("", "long", "p" * 300)
    assert len(response) > 255
    assert client.send(b"AUTH PLAIN " + response + b"\r\n") == b"-ERR Line too long\r\n"
    assert client.send(b"AUTH PLAIN\r\n" + response + b"\r\n") == b"+ \r\n+OK Logged in, 0 messages\r\n"


def test_wire_form_is_computed_once_per_message() -> None:
    store = make_store()
    inbox = store.accounts["alice"].inbox
    clean = inbox.append(b"Subject: clean\r\n\r\nbody\r\n")
    dotted = inbox.append(b"Subject: dotted\n\n.x\n")
    assert wire_form(clean) is wire_form(clean)
    assert wire_form(clean).stuffed is clean.data  # nothing to change: no copy kept
    assert wire_form(dotted).stuffed == b"Subject: dotted\r\n\r\n..x\r\n"
    replies = []
    for _ in range(2):
        client = make_client(store=store)
        client.login()
        replies.append(client.send(b"RETR 2\r\n"))
        client.session.connection_lost()
    assert replies[0] == replies[1] == b"+OK 23 octets\r\nSubject: dotted\r\n\r\n..x\r\n.\r\n"
