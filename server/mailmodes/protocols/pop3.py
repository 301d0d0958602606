"""POP3 (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH): a sans-I/O session.

Bytes go in through `Pop3Session.feed`; replies (bytes) and the instructions of events.py
(`StartTls`, `Close`, `NoTls`) come out. connection.py does the reading, writing and the TLS handshake; this module never
touches a socket. Whether TLS is on, may be offered, or must come before a login is asked of
`connection.security`; this module only chooses the POP3 wording.

A listener with a protocol scenario (KNOWN-BAD.md section 2) departs from the known-good path at a
few fixed points (greeting, CAPA, STLS, a command at the chaos stage); what it does there is
decided in misbehaviour.py. Without a scenario each point is one attribute check.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from mailmodes import __version__
from mailmodes.protocols import POP3_PROBE_MARK
from mailmodes.protocols.events import (
    SECRET,
    UNPARSED,
    Close,
    Connection,
    Delay,
    Heard,
    LoginAttempt,
    NoTls,
    Output,
    Pipelined,
    Skipped,
    Span,
    StartTls,
)
from mailmodes.protocols.sasl import CHALLENGE_RESPONSE, Challenge, Done, Exchange, exchange, sasl_context
from mailmodes.scenarios.misbehaviour import StartTlsPlan
from mailmodes.store import AccountInterface, MailboxInterface, Message, StoreInterface

CRLF = b"\r\n"
# RFC 5034 section 4: the 255-octet limit of RFC 2449 binds the AUTH command line itself; a SASL
# client response on its own line is not a command. Accept responses of up to 12288 octets (what
# RFC 4954 asks of SMTP servers), or the command limit if that is larger.
SASL_RESPONSE_LIMIT = 12288

# Replies whose wording PROTOCOL.md fixes.
PLAINTEXT_DISALLOWED = b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections\r\n"
AUTH_FAILED = b"-ERR [AUTH] Authentication failed\r\n"
TOO_MANY_AUTH_FAILURES = b"-ERR [AUTH] Authentication failed; too many failures, closing\r\n"
BEGIN_TLS = b"+OK Begin TLS negotiation\r\n"
TLS_ACTIVE = b"-ERR Command not permitted when TLS active\r\n"
LINE_TOO_LONG = b"-ERR Line too long\r\n"
TOO_MANY_BAD = b"-ERR Too many invalid commands\r\n"
UNKNOWN_COMMAND = b"-ERR Unknown command\r\n"
WRONG_STATE = b"-ERR Command not valid in this state\r\n"
SYNTAX_ERROR = b"-ERR Syntax error\r\n"
NO_SUCH_MESSAGE = b"-ERR No such message\r\n"
IN_USE = b"-ERR [IN-USE] Maildrop is locked by another POP3 session\r\n"
IDLE_TIMEOUT = b"-ERR [SYS/TEMP] Idle timeout, closing\r\n"
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
# The commands that carry a secret: what a chaos stage named "LOGIN" (IMAP's word) means in POP3.
LOGIN_COMMANDS = frozenset({"PASS", "APOP", "AUTH"})


class State(enum.Enum):
    """RFC 1939 section 3. UPDATE is entered by QUIT in TRANSACTION and ends the session."""

    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"


class LineTooLong:
    """Marker returned by `LineBuffer.next_line` for a line over the limit."""


TOO_LONG = LineTooLong()


class LineBuffer:
    """Splits client bytes into lines; over-long lines are reported once and skipped to their end.

    RFC 1939 section 3 says lines end in CRLF; a bare LF is accepted too (what lenient servers do,
    and harmless: a CR is never part of a command). The limit counts the CRLF, as RFC 2449
    section 4 counts "255 octets, including the terminating CRLF".
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._discarding = False
        self._skipped = 0  # octets dropped unread since take_skipped()

    def append(self, data: bytes) -> None:
        self._buffer += data

    def next_line(self, limit: int) -> bytes | LineTooLong | None:
        """The next complete line without its terminator, TOO_LONG, or None if none is complete."""
        buffer = self._buffer
        while True:
            end = buffer.find(b"\n")
            if self._discarding:
                # Resynchronise: drop the rest of the over-long line, which was answered already.
                if end < 0:
                    self._skipped += len(buffer)
                    buffer.clear()
                    return None
                self._skipped += end + 1
                del buffer[: end + 1]
                self._discarding = False
                continue
            if end < 0:
                if len(buffer) >= limit:
                    # Answer now rather than buffer without bound; the remainder is skipped.
                    self._skipped += len(buffer)
                    buffer.clear()
                    self._discarding = True
                    return TOO_LONG
                return None
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) + 2 > limit:
                self._skipped += end + 1
                return TOO_LONG
            return line

    def take_skipped(self) -> int:
        """Octets of over-long lines dropped since the last call."""
        skipped, self._skipped = self._skipped, 0
        return skipped

    def pending(self) -> int:
        """How many bytes are buffered (not yet a complete line or not yet taken)."""
        return len(self._buffer)

    def drop(self) -> int:
        """Forget everything buffered (after STLS); return how many bytes that was."""
        count = len(self._buffer)
        self._buffer.clear()
        self._discarding = False
        return count


# --- message bytes on the wire ------------------------------------------------------------------


def wire_size(data: bytes) -> int:
    """The size of `crlf_normalised(data)`, without building it (RFC 1939 section 11 sizes)."""
    if not data:
        return 0
    extra = data.count(b"\n") - data.count(b"\r\n")
    if not data.endswith(b"\n"):
        extra += 2
    return len(data) + extra


def crlf_normalised(data: bytes) -> bytes:
    """Every line ending as CRLF, and a final CRLF (RFC 1939 section 3: lines end in CRLF).

    Mail stored with bare LF (a file dropped in, an IMAP APPEND from a careless client) still goes
    out as CRLF lines. A lone CR is left alone: it is not a line ending.
    """
    if data.count(b"\n") != data.count(b"\r\n"):
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\n"):
        data += CRLF
    return data


def dot_stuffed(text: bytes) -> bytes:
    """RFC 1939 section 3: a line starting with "." gets one more, so ".\\r\\n" can end the reply."""
    text = text.replace(b"\r\n.", b"\r\n..")
    if text.startswith(b"."):
        text = b"." + text
    return text


def multiline(status: bytes, stuffed: bytes) -> bytes:
    """A multi-line reply: status line, the (CRLF-ended, already dot-stuffed) body, ".\\r\\n"."""
    return b"".join((status, CRLF, stuffed, b".\r\n"))


@dataclass(frozen=True)
class WireForm:
    """A message as RETR sends it. Kept with the message (Message.derived): the bytes never
    change, so only the first RETR of a message pays for the CRLF and dot-stuffing passes."""

    size: int  # octets with CRLF line endings, before stuffing: what LIST, STAT and RETR report
    stuffed: bytes

    @classmethod
    def of(cls, data: bytes) -> WireForm:
        text = crlf_normalised(data)
        # For mail that needs neither pass (the usual case) `stuffed` is `data` itself: no copy.
        return cls(len(text), dot_stuffed(text))


def wire_form(message: Message) -> WireForm:
    return cast(WireForm, message.derived("pop3.wire", WireForm.of))


def message_size(message: Message) -> int:
    return cast(int, message.derived("pop3.size", wire_size))


def top_of(text: bytes, lines: int) -> bytes:
    """RFC 1939 TOP: the headers, the blank line, then `lines` lines of the body (all if fewer).

    `text` is CRLF-normalised. A message without a blank line is all header.
    """
    if text.startswith(CRLF):
        body_start = 2
    else:
        blank = text.find(b"\r\n\r\n")
        if blank < 0:
            return text
        body_start = blank + 4
    end = body_start
    for _ in range(lines):
        found = text.find(CRLF, end)
        if found < 0:
            return text
        end = found + 2
    return text[:end]


# --- the session ---------------------------------------------------------------------------------


@dataclass
class Maildrop:
    """What a TRANSACTION works on: the INBOX as it was at login (RFC 1939 section 5).

    Message numbers and sizes stay fixed for the session; mail delivered meanwhile shows up at the
    next login. Deletions are only marks until QUIT.
    """

    account: AccountInterface
    mailbox: MailboxInterface
    messages: list[Message]
    deleted: set[int]

    def size(self, index: int) -> int:
        return message_size(self.messages[index])

    def live(self) -> list[int]:
        return [i for i in range(len(self.messages)) if i not in self.deleted]


Handler = Callable[["Pop3Session", str], list[Output]]
BOTH = frozenset({State.AUTHORIZATION, State.TRANSACTION})
AUTHORIZATION = frozenset({State.AUTHORIZATION})
TRANSACTION = frozenset({State.TRANSACTION})


class Pop3Session:
    """One POP3 connection, driven by net.LineServer through the LineSession protocol."""

    def __init__(self, connection: Connection, store: StoreInterface, hostname: str, *,
                 apop: bool | None = None) -> None:
        self.connection = connection
        self.security = connection.security
        self.store = store
        self.hostname = hostname
        self.limits = connection.listener.limits
        self.state = State.AUTHORIZATION
        # Bytes the client sent after STLS, before the handshake: dropped, remembered for verdicts.
        self.pipelined_after_starttls = 0
        self.bad_commands = 0
        self.auth_failures = 0
        self.closed = False
        self.maildrop: Maildrop | None = None
        self.notes = connection.notes
        self._lines = LineBuffer()
        self._overheard: LineBuffer | None = None
        self._user: str | None = None  # accepted by USER, for the very next command
        self._previous_user: str | None = None
        self._in_sasl = False
        # CRAM-MD5 / SCRAM-SHA-256 under way (sasl.py): its mechanism and exchange (_in_sasl too).
        self._exchange: tuple[str, Exchange] | None = None
        self._locked: str | None = None
        # RFC 1939 section 7: APOP needs a timestamp in the greeting, unique per connection.
        if apop is None:
            apop = connection.listener.apop
        self._apop_timestamp = (
            f"<{os.getpid()}.{secrets.token_hex(8)}@{hostname}>" if apop else None
        )
        # The listener's scenario; each hook on the known-good path is one attribute check.
        self.misbehaviour = connection.misbehaviour
        self._scenario = self.misbehaviour.active
        self._chaos_stages = self.misbehaviour.chaos_stages
        self._keep_pipelined = False  # command-injection-vulnerable, between STLS and tls_started()

    # --- LineSession -----------------------------------------------------------------------------

    def greeting(self) -> list[Output]:
        line = f"+OK {self.hostname} POP3 ready"
        if self._apop_timestamp:
            line += f" {self._apop_timestamp}"
        if self._scenario:
            return self._scenario_greeting(line)
        return [line.encode() + CRLF]

    def feed(self, data: bytes) -> list[Output]:
        if self.closed:
            return []
        self._lines.append(data)
        return self._run_lines()

    def _run_lines(self) -> list[Output]:
        """Answer every complete buffered line, up to a STLS that starts TLS."""
        outputs: list[Output] = []
        while not self.closed:
            limit = self.limits.max_line_length
            if self._in_sasl:
                limit = max(limit, SASL_RESPONSE_LIMIT)
            line = self._lines.next_line(limit)
            skipped = self._lines.take_skipped()
            if skipped:
                self.notes.note(Skipped(skipped, "line too long"))
            if line is None:
                break
            if isinstance(line, LineTooLong):
                self._in_sasl, self._exchange = False, None
                self._user = None
                outputs += self._bad(LINE_TOO_LONG)
                continue
            authorizing = self.state is State.AUTHORIZATION
            replies = self._sasl_response(line) if self._in_sasl else self._command(line)
            if authorizing and (AUTH_FAILED in replies or self.state is State.TRANSACTION):
                replies = self._login_answered(replies)
            outputs += replies
            if any(isinstance(reply, NoTls) for reply in replies):
                break  # the session is over: no TLS follows the success line
            if any(isinstance(reply, StartTls) for reply in replies):
                if self._keep_pipelined:
                    # command-injection-vulnerable: deliberately the CVE-2011-0411 bug; the
                    # plaintext behind STLS stays buffered and tls_started() runs it inside TLS.
                    self.pipelined_after_starttls = self._lines.pending()
                else:
                    # RFC 2595 section 4 / CVE-2011-0411: nothing sent in plaintext after STLS may
                    # be taken as sent over TLS.
                    self.pipelined_after_starttls = self._lines.drop()
                if self.pipelined_after_starttls:
                    self.notes.note(Pipelined(self.pipelined_after_starttls, executed=self._keep_pipelined))
                break
        return _merged(outputs)

    def tls_started(self) -> list[Output]:
        # RFC 2595 section 4: forget what the client said before TLS (e.g. the USER argument).
        self._user = None
        self._in_sasl, self._exchange = False, None
        if self._keep_pipelined:
            self._keep_pipelined = False
            return self._run_lines()
        return []

    def wake(self) -> list[Output]:
        return []

    def timed_out(self) -> list[Output]:
        # RFC 1939 section 3 would close silently; a line saying why helps whoever reads the trace.
        # The session does not enter UPDATE: nothing is deleted.
        self.closed = True
        return [IDLE_TIMEOUT, Close()]

    def connection_lost(self) -> None:
        # RFC 1939 section 3: a session ended other than by QUIT does not enter UPDATE, so marked
        # messages stay. The maildrop lock goes with the connection.
        self.closed = True
        self._unlock()

    def overheard(self, data: bytes) -> None:
        # A line buffer of its own: nothing of this is run, so the session's state stays as it was.
        if self._overheard is None:
            self._overheard = LineBuffer()
        lines = self._overheard
        lines.append(data)
        while (line := lines.next_line(self.limits.max_line_length)) is not None:
            if isinstance(line, LineTooLong):
                continue
            keyword = line.partition(b" ")[0].decode("ascii", "replace").upper()
            self._note_command(line, keyword if keyword in COMMANDS else "")
            self._unanswered(keyword, line)
        skipped = lines.take_skipped()
        if skipped:
            self.notes.note(Skipped(skipped, "line too long"))

    def _unanswered(self, keyword: str, line: bytes) -> None:
        """Credentials that no handler decides (chaos answered instead, or nobody listens): a
        failed attempt, and whether the secret went out; a USER only names someone."""
        argument = line.partition(b" ")[2].decode("utf-8", "replace")
        if keyword == "USER":
            self.notes.note(LoginAttempt("USER", argument or None, secret_sent=False, accepted=None))
        elif keyword == "AUTH":
            if argument:  # a bare AUTH only asks for the list (see _auth)
                self._attempt(f"AUTH {argument.split(' ')[0].upper()}", None, _secret_at(keyword, line) is not None)
        elif keyword in LOGIN_COMMANDS:
            self._attempt(keyword, None, _secret_at(keyword, line) is not None)

    # --- dispatch --------------------------------------------------------------------------------

    def _command(self, line: bytes) -> list[Output]:
        text = line.decode("utf-8", "surrogateescape")
        keyword, _, argument = text.partition(" ")
        keyword = keyword.upper()
        entry = COMMANDS.get(keyword) if keyword.isascii() else None
        self._note_command(line, keyword if entry is not None or text.strip().upper() == POP3_PROBE_MARK else "")
        # RFC 1939 PASS: valid only immediately after a successful USER, so any other command
        # forgets the name.
        self._previous_user, self._user = self._user, None
        if self._chaos_stages:
            chaotic = self._chaos_at(keyword)
            if chaotic is not None:
                self._unanswered(keyword, line)
                return chaotic
        if entry is None:
            return self._bad(UNKNOWN_COMMAND)
        states, handler = entry
        if self.state not in states:
            return self._bad(WRONG_STATE)
        return handler(self, argument)

    def _login_answered(self, replies: list[Output]) -> list[Output]:
        """A login's answer: paused for a client host that failed too often lately, and at the
        connection's last allowed failure a goodbye instead (guards.AuthFailures)."""
        limits = self.limits
        host = self.connection.peer[0]
        failures = self.connection.auth_failures
        delay = failures.delay(host, limits.max_auth_failures_per_client, limits.auth_failure_delay)
        if AUTH_FAILED in replies:
            failures.failed(host)
            self.auth_failures += 1
            if self.auth_failures >= limits.max_auth_failures:
                self.closed = True
                replies = [TOO_MANY_AUTH_FAILURES, Close()]
        return [Delay(delay), *replies] if delay else replies

    def _note_command(self, line: bytes, verb: str) -> None:
        """A command line for the journal: shown but for its credential; a line that names no
        command is not shown at all (it may be anything, a password sent out of turn included)."""
        if not verb:
            spans: tuple[Span, ...] = ((0, len(line), UNPARSED),) if line else ()
        else:
            secret = _secret_at(verb, line)
            spans = ((secret, len(line), SECRET),) if secret is not None else ()
        self.notes.note(Heard(line, verb, spans))

    def _attempt(self, command: str, user: str | None, secret_sent: bool,
                 account: AccountInterface | None = None, step: Done | None = None) -> None:
        """Credentials offered with `command` and decided: logged in as `account`, or refused."""
        name = account.name if account is not None else user
        self.notes.note(LoginAttempt(command, name, secret_sent, account is not None,
                                     *((step.binding, step.expired_token) if step is not None else ())))

    def _bad(self, reply: bytes) -> list[Output]:
        """A protocol error: answer it, and close once the listener's budget is spent."""
        self.bad_commands += 1
        if self.bad_commands >= self.limits.max_bad_commands:
            self.closed = True
            return [TOO_MANY_BAD, Close()]
        return [reply]

    # --- scenarios (KNOWN-BAD.md section 2; the texts live in misbehaviour.py) -------------------

    def _scenario_greeting(self, line: str) -> list[Output]:
        """greeting-reject, pretls-alert, and chaos at GREETING (a reply or a disconnect)."""
        # greeting-reject: RFC 1939 section 4 says the greeting "can be any positive response";
        # a negative one refuses service, and there is nothing more to say.
        step = self.misbehaviour.greeting(line, self.hostname)
        self.closed = Close() in step.actions
        return ([] if step.line is None else [step.line.encode() + CRLF]) + list(step.actions)

    def _planned_stls(self, plan: StartTlsPlan) -> list[Output]:
        """The STLS reply of a STARTTLS scenario, and what follows it: TLS, no TLS, or plaintext
        (RFC 2595 section 4: only "+OK" may start the negotiation). Injected lines go in the same
        write as the success line, so that they normally reach the client in one segment
        (KNOWN-BAD.md injection rule)."""
        reply = plan.reply.encode() + CRLF if plan.reply is not None else BEGIN_TLS
        self._keep_pipelined = any(isinstance(action, StartTls) and action.keep_pipelined for action in plan.actions)
        return [reply + plan.injected.encode(), *plan.actions]

    def _chaos_at(self, keyword: str) -> list[Output] | None:
        """chaos: the configured reply or a disconnect instead of running the command."""
        step = self.misbehaviour.at_command(keyword, *(("LOGIN",) if keyword in LOGIN_COMMANDS else ()))
        if step is None:
            return None
        self.closed = Close() in step.actions
        return ([] if step.line is None else [step.line.encode() + CRLF]) + list(step.actions)

    # --- AUTHORIZATION ---------------------------------------------------------------------------

    def _capa(self, argument: str) -> list[Output]:
        """RFC 2449 section 5; the list depends on TLS state (PROTOCOL.md, POP3)."""
        capabilities = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self.security.may_authenticate:
            offered = self.connection.listener.mechanisms_offered(encrypted=self.security.encrypted)
            capabilities += ["USER", "SASL " + " ".join(offered)]
        if self.security.offers_starttls and self.state is State.AUTHORIZATION:
            capabilities.append("STLS")
        capabilities.append(f"IMPLEMENTATION mailmodes-{__version__}")
        if self._scenario:
            error = self.misbehaviour.capability_error()
            if error is not None:
                return [error.encode() + CRLF]  # capability-fails
            shown = self.misbehaviour.capabilities(capabilities, encrypted=self.security.encrypted)
            capabilities = _one_sasl_line(shown)
        body = "".join(f"{capability}\r\n" for capability in capabilities)
        return [b"+OK Capability list follows\r\n" + body.encode() + b".\r\n"]

    def _stls(self, argument: str) -> list[Output]:
        """RFC 2595 section 4: only in AUTHORIZATION, never once TLS is up."""
        if self.security.encrypted:
            return [TLS_ACTIVE]
        if self.state is not State.AUTHORIZATION:
            return self._bad(WRONG_STATE)
        if argument:
            return self._bad(SYNTAX_ERROR)
        if not self.security.offers_starttls:
            # Also what starttls-stripped answers: STLS was not advertised (KNOWN-BAD.md section 2).
            return [b"-ERR TLS not available\r\n"]
        if self._scenario:
            plan = self.misbehaviour.starttls(self.hostname)
            if plan is not None:
                return self._planned_stls(plan)
        return [BEGIN_TLS, StartTls()]

    def _user_command(self, argument: str) -> list[Output]:
        # Refused at USER, so a well-behaved client never sends the password (PROTOCOL.md).
        if not self.security.may_authenticate:
            self._attempt("USER", argument or None, secret_sent=False)
            return [PLAINTEXT_DISALLOWED]
        if not argument:
            return self._bad(SYNTAX_ERROR)
        # A name, no decision yet: the PASS that follows decides.
        self.notes.note(LoginAttempt("USER", argument, secret_sent=False, accepted=None))
        self._user = argument
        # The same reply whether or not the user exists, so USER cannot be used to probe accounts.
        return [b"+OK\r\n"]

    def _pass(self, argument: str) -> list[Output]:
        user = self._previous_user
        if not self.security.may_authenticate:
            self._attempt("PASS", user, secret_sent=bool(argument))
            return [PLAINTEXT_DISALLOWED]
        if user is None:
            self._attempt("PASS", None, secret_sent=bool(argument))
            return self._bad(b"-ERR No username given\r\n")
        # RFC 1939 PASS: the argument is the rest of the line, spaces included.
        return self._login("PASS", user, argument)

    def _apop(self, argument: str) -> list[Output]:
        """RFC 1939 section 7: APOP name digest, digest = MD5(timestamp + secret) in lower hex."""
        name, _, digest = argument.partition(" ")
        timestamp = self._apop_timestamp
        refused: list[Output] | None = None
        if timestamp is None:
            refused = [b"-ERR APOP not enabled\r\n"]
        elif not self.security.may_authenticate:
            refused = [PLAINTEXT_DISALLOWED]
        elif not name or len(digest) != 32 or not _HEX_DIGITS.issuperset(digest):
            refused = self._bad(SYNTAX_ERROR)
        if refused is not None:
            self._attempt("APOP", name or None, secret_sent=bool(digest))
            return refused
        assert timestamp is not None
        account = self._find_account(name)
        if account is not None:
            secret = (timestamp + account.password).encode("utf-8", "surrogateescape")
            expected = hashlib.md5(secret, usedforsecurity=False).hexdigest()
            if hmac.compare_digest(expected, digest.lower()):
                return self._logged_in("APOP", account)
        self._attempt("APOP", name, secret_sent=True)
        return [AUTH_FAILED]

    def _auth(self, argument: str) -> list[Output]:
        """RFC 5034: AUTH mechanism [initial-response]; only PLAIN (RFC 4616) is offered."""
        words = argument.split(" ") if argument else []
        if not words:
            # No mechanism: list them (the RFC 1734-era form that mutt sends after CAPA fails).
            # No name and no secret went out, so this is no login attempt.
            offered = self.connection.listener.mechanisms_offered(encrypted=self.security.encrypted)
            listed = "".join(f"{mechanism}\r\n" for mechanism in offered)
            return [PLAINTEXT_DISALLOWED] if not self.security.may_authenticate else [f"+OK\r\n{listed}.\r\n".encode()]
        mechanism = words[0].upper()
        command = f"AUTH {mechanism}"
        refused: list[Output] | None = None
        if not self.security.may_authenticate:
            refused = [PLAINTEXT_DISALLOWED]
        elif mechanism not in self.connection.listener.mechanisms_offered(encrypted=self.security.encrypted):
            refused = ([b"-ERR [AUTH] " + mechanism.encode() + b" only inside TLS\r\n"]
                       if mechanism in self.connection.listener.mechanisms
                       else [b"-ERR Unsupported authentication mechanism\r\n"])
        elif len(words) > 2:
            refused = self._bad(SYNTAX_ERROR)
        if refused is not None:
            self._attempt(command, None, secret_sent=len(words) > 1 and words[1] not in ("", "="))
            return refused
        if mechanism in CHALLENGE_RESPONSE:
            return self._challenge_response(mechanism, words[1] if len(words) == 2 else None)
        if len(words) == 2:
            return self._plain(words[1])
        # RFC 5034 section 4: an empty challenge is "+" SP and nothing else.
        self._in_sasl = True
        return [b"+ \r\n"]

    def _challenge_response(self, mechanism: str, initial: str | None) -> list[Output]:
        """CRAM-MD5 or SCRAM-SHA-256 (sasl.py): challenges as "+ <base64>" (RFC 5034 section 4)."""
        conversation = exchange(mechanism, sasl_context(self.store, self.hostname, "pop3", self.connection,
                                                        encrypted=self.security.encrypted))
        response: bytes | None = None
        if initial is not None:
            try:
                response = b"" if initial == "=" else binascii.a2b_base64(initial.encode(), strict_mode=True)
            except (binascii.Error, ValueError):
                self._attempt(f"AUTH {mechanism}", None, secret_sent=False)
                return [b"-ERR Invalid base64 data\r\n"]
        return self._sasl_step(mechanism, conversation, response)

    def _sasl_step(self, mechanism: str, conversation: Exchange, response: bytes | None) -> list[Output]:
        step = conversation.step(response)
        if isinstance(step, Challenge):
            if step.secret_sent:  # undecided until the client answers, if it ever does
                self.notes.note(LoginAttempt(f"AUTH {mechanism}", conversation.user, True, None,
                                             expired_token=step.expired_token))
            self._in_sasl, self._exchange = True, (mechanism, conversation)
            return [b"+ " + base64.b64encode(step.data) + CRLF]
        account = self.store.accounts.get(step.account) if step.account else None
        command = f"AUTH {mechanism}"
        if account is None:
            # CRAM and SCRAM send a proof, LOGIN the password, XOAUTH2 and OAUTHBEARER a token.
            self._attempt(command, step.user, secret_sent=step.secret_sent, step=step)
            return [AUTH_FAILED]
        replies = self._open_maildrop(account)
        self._attempt(command, account.name, secret_sent=step.secret_sent,
                      account=account if self.state is State.TRANSACTION else None, step=step)
        return replies

    def _sasl_response(self, line: bytes) -> list[Output]:
        self._in_sasl = False
        if self._exchange is not None:
            (mechanism, conversation), self._exchange = self._exchange, None
            if line == b"*":
                self.notes.note(Heard(line, None))
                self._attempt(f"AUTH {mechanism}", None, secret_sent=conversation.secret_sent)
                return [b"-ERR Authentication cancelled\r\n"]
            self.notes.note(Heard(line, None, ((0, len(line), SECRET),) if line else ()))
            try:
                answer = binascii.a2b_base64(line, strict_mode=True)
            except (binascii.Error, ValueError):
                self._attempt(f"AUTH {mechanism}", None, secret_sent=conversation.secret_sent)
                return [b"-ERR Invalid base64 data\r\n"]
            return self._sasl_step(mechanism, conversation, answer)
        if line == b"*":
            self.notes.note(Heard(line, None))
            self._attempt("AUTH PLAIN", None, secret_sent=False)
            # RFC 5034 section 4: the client cancels; the AUTH command fails with -ERR.
            return [b"-ERR Authentication cancelled\r\n"]
        self.notes.note(Heard(line, None, ((0, len(line), SECRET),)))
        return self._plain(line.decode("ascii", "replace"))

    def _plain(self, response: str) -> list[Output]:
        secret_sent = response not in ("", "=")
        # RFC 5034 section 4: "=" is a zero-length response.
        try:
            raw = b"" if response == "=" else binascii.a2b_base64(response.encode(), strict_mode=True)
        except (binascii.Error, ValueError):
            self._attempt("AUTH PLAIN", None, secret_sent)
            return [b"-ERR Invalid base64 data\r\n"]
        # RFC 4616 section 2: [authzid] NUL authcid NUL passwd, in UTF-8.
        parts = raw.split(b"\0")
        try:
            authzid, authcid, password = (part.decode("utf-8") for part in parts)
        except ValueError:  # not three parts, or not UTF-8
            self._attempt("AUTH PLAIN", None, secret_sent)
            return [AUTH_FAILED]
        if authzid and authzid != authcid:
            # Acting as another user is not supported.
            self._attempt("AUTH PLAIN", authcid, secret_sent)
            return [AUTH_FAILED]
        return self._login("AUTH PLAIN", authcid, password)

    def _login(self, command: str, name: str, password: str) -> list[Output]:
        account = self.store.authenticate(name, password)
        if account is None:
            self._attempt(command, name, secret_sent=True)
            return [AUTH_FAILED]
        return self._logged_in(command, account)

    def _logged_in(self, command: str, account: AccountInterface) -> list[Output]:
        """The credentials were right; the login counts once the maildrop is open (not IN-USE)."""
        replies = self._open_maildrop(account)
        opened = self.state is State.TRANSACTION
        self._attempt(command, account.name, secret_sent=True, account=account if opened else None)
        return replies

    def _find_account(self, name: str) -> AccountInterface | None:
        account = self.store.accounts.get(name)
        if account is None:
            wanted = name.lower()
            account = next((a for a in self.store.accounts.values() if wanted in a.addresses), None)
        return account

    def _open_maildrop(self, account: AccountInterface) -> list[Output]:
        """RFC 1939 section 4: lock the maildrop, fix the message list, enter TRANSACTION."""
        if not self.store.lock_maildrop(account.name):
            # RFC 2449 section 8.1 [IN-USE]; RFC 1939 section 4: the session stays in
            # AUTHORIZATION, the client may try again or QUIT.
            return [IN_USE]
        self._locked = account.name
        mailbox = account.inbox
        messages = list(mailbox.messages)
        self.maildrop = Maildrop(account, mailbox, messages, set())
        self.state = State.TRANSACTION
        return [f"+OK Logged in, {len(messages)} messages\r\n".encode()]

    def _unlock(self) -> None:
        if self._locked is not None:
            self.store.unlock_maildrop(self._locked)
            self._locked = None

    # --- both states -----------------------------------------------------------------------------

    def _quit(self, argument: str) -> list[Output]:
        self.closed = True
        if self.state is State.TRANSACTION and self.maildrop is not None:
            # RFC 1939 section 6: UPDATE state, the only place marked messages are removed.
            self.state = State.UPDATE
            maildrop = self.maildrop
            maildrop.mailbox.expunge(maildrop.messages[i].uid for i in sorted(maildrop.deleted))
            self._unlock()
        return [f"+OK {self.hostname} POP3 server signing off\r\n".encode(), Close()]

    # --- TRANSACTION -----------------------------------------------------------------------------

    def _drop(self) -> Maildrop:
        assert self.maildrop is not None, "TRANSACTION without a maildrop"
        return self.maildrop

    def _message(self, argument: str) -> int | list[Output]:
        """The 0-based index of a message-number argument that names a live message, or a reply."""
        if not (argument.isascii() and argument.isdigit()):
            return self._bad(SYNTAX_ERROR)
        number = int(argument)
        maildrop = self._drop()
        if not 1 <= number <= len(maildrop.messages):
            return [NO_SUCH_MESSAGE]
        if number - 1 in maildrop.deleted:
            return [f"-ERR Message {number} already deleted\r\n".encode()]
        return number - 1

    def _stat(self, argument: str) -> list[Output]:
        if argument:
            return self._bad(SYNTAX_ERROR)
        maildrop = self._drop()
        live = maildrop.live()
        octets = sum(maildrop.size(i) for i in live)
        return [f"+OK {len(live)} {octets}\r\n".encode()]

    def _list(self, argument: str) -> list[Output]:
        maildrop = self._drop()
        if argument:
            index = self._message(argument)
            if isinstance(index, list):
                return index
            return [f"+OK {index + 1} {maildrop.size(index)}\r\n".encode()]
        live = maildrop.live()
        sizes = [maildrop.size(i) for i in live]
        lines = "".join(f"{i + 1} {size}\r\n" for i, size in zip(live, sizes))
        status = f"+OK {len(live)} messages ({sum(sizes)} octets)\r\n"
        return [(status + lines + ".\r\n").encode()]

    def _uidl(self, argument: str) -> list[Output]:
        # RFC 1939 section 7: the unique-id persists across sessions. UIDVALIDITY.UID is what IMAP
        # calls the same message, so both protocols agree on identity.
        maildrop = self._drop()
        prefix = maildrop.mailbox.uidvalidity
        if argument:
            index = self._message(argument)
            if isinstance(index, list):
                return index
            return [f"+OK {index + 1} {prefix}.{maildrop.messages[index].uid}\r\n".encode()]
        lines = "".join(f"{i + 1} {prefix}.{maildrop.messages[i].uid}\r\n" for i in maildrop.live())
        return [("+OK\r\n" + lines + ".\r\n").encode()]

    def _retr(self, argument: str) -> list[Output]:
        index = self._message(argument)
        if isinstance(index, list):
            return index
        wire = wire_form(self._drop().messages[index])
        return [multiline(b"+OK %d octets" % wire.size, wire.stuffed)]

    def _top(self, argument: str) -> list[Output]:
        words = argument.split(" ")
        if len(words) != 2 or not (words[1].isascii() and words[1].isdigit()):
            return self._bad(SYNTAX_ERROR)
        index = self._message(words[0])
        if isinstance(index, list):
            return index
        text = crlf_normalised(self._drop().messages[index].data)
        return [multiline(b"+OK", dot_stuffed(top_of(text, int(words[1]))))]

    def _dele(self, argument: str) -> list[Output]:
        index = self._message(argument)
        if isinstance(index, list):
            return index
        self._drop().deleted.add(index)
        return [f"+OK Message {index + 1} deleted\r\n".encode()]

    def _noop(self, argument: str) -> list[Output]:
        return [b"+OK\r\n"]

    def _rset(self, argument: str) -> list[Output]:
        maildrop = self._drop()
        maildrop.deleted.clear()
        return [f"+OK {len(maildrop.messages)} messages\r\n".encode()]


# RFC 1939 sections 4-7, RFC 2449 (CAPA), RFC 2595 (STLS), RFC 5034 (AUTH): keyword -> (the states
# it is valid in, handler). STLS is listed in both states so that it can say why it is refused.
COMMANDS: dict[str, tuple[frozenset[State], Handler]] = {
    "CAPA": (BOTH, Pop3Session._capa),
    "QUIT": (BOTH, Pop3Session._quit),
    "STLS": (BOTH, Pop3Session._stls),
    "USER": (AUTHORIZATION, Pop3Session._user_command),
    "PASS": (AUTHORIZATION, Pop3Session._pass),
    "APOP": (AUTHORIZATION, Pop3Session._apop),
    "AUTH": (AUTHORIZATION, Pop3Session._auth),
    "STAT": (TRANSACTION, Pop3Session._stat),
    "LIST": (TRANSACTION, Pop3Session._list),
    "UIDL": (TRANSACTION, Pop3Session._uidl),
    "RETR": (TRANSACTION, Pop3Session._retr),
    "TOP": (TRANSACTION, Pop3Session._top),
    "DELE": (TRANSACTION, Pop3Session._dele),
    "NOOP": (TRANSACTION, Pop3Session._noop),
    "RSET": (TRANSACTION, Pop3Session._rset),
}


def _secret_at(keyword: str, line: bytes) -> int | None:
    """Where the credential in a PASS, APOP or AUTH command line begins, split as the handlers
    split it (it runs to the end of the line): PASS's whole argument (RFC 1939), APOP's digest,
    AUTH's initial response (RFC 5034)."""
    _, space, argument = line.partition(b" ")
    if not space or keyword not in LOGIN_COMMANDS:
        return None
    start = len(line) - len(argument)
    if keyword != "PASS":
        first, space, _ = argument.partition(b" ")
        start += len(first) + 1 if space else len(argument)
    return start if start < len(line) else None


def _one_sasl_line(capabilities: list[str]) -> list[str]:
    """RFC 2449 section 6.3: SASL names every mechanism on one line, so a scenario's canary mechanism
    joins the SASL line already there instead of adding a second one (which clients overwrite)."""
    sasl = [index for index, capability in enumerate(capabilities) if capability.startswith("SASL ")]
    if len(sasl) < 2:
        return capabilities
    mechanisms = " ".join(capabilities[index][5:] for index in sasl)
    merged = [capability for index, capability in enumerate(capabilities) if index not in sasl[1:]]
    merged[sasl[0]] = f"SASL {mechanisms}"
    return merged


def _merged(outputs: list[Output]) -> list[Output]:
    """Join adjacent byte strings, so pipelined replies go out in one write."""
    merged: list[Output] = []
    run: list[bytes] = []
    for item in outputs:
        if isinstance(item, bytes):
            run.append(item)
            continue
        if run:
            merged.append(b"".join(run))
            run = []
        merged.append(item)
    if run:
        merged.append(b"".join(run))
    return merged
