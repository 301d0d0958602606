"""The IMAP4rev1 session (RFC 3501) as a sans-I/O state machine: bytes in, bytes out.

connection.py drives it through the `LineSession` protocol (events.py). The parser (parser.py) cuts and parses
commands; this module keeps the state table, the per-session view of the selected mailbox and
the store calls. TLS decisions come only from `connection.security`; this module chooses words.
A listener's misbehaviour scenario (misbehaviour.py, KNOWN-BAD.md section 2) is asked at a few
fixed points: the greeting, the capability list, STARTTLS, LOGIN, and each command (chaos).

The selected-mailbox view: the client numbers messages by its own picture of the mailbox, which
changes only when we tell it (EXISTS, EXPUNGE). So each session keeps the list of messages it has
announced and the flags it last reported, and compares that with the store at the end of each
command (and while idling) to report what other sessions did (RFC 3501 5.2, 7.4.1).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import enum
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote_to_bytes

from mailmodes import __version__
from mailmodes.protocols.events import (
    LITERAL,
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
from mailmodes.protocols.imap import message as mime
from mailmodes.protocols.imap import mutf7
from mailmodes.protocols.imap.parser import (
    SYSTEM_FLAGS,
    AndKey,
    AppendArgs,
    Authenticate,
    CancelUpdateArgs,
    Command,
    CommandBytes,
    CommandError,
    CopyArgs,
    EnableArgs,
    ExpungeArgs,
    FetchArgs,
    FetchItem,
    Framer,
    IdArgs,
    Incomplete,
    LineTooLong,
    ListArgs,
    LiteralRequest,
    Login,
    MailboxArg,
    ModSeqKey,
    NotKey,
    OrKey,
    QResync,
    Rename,
    SearchArgs,
    SearchKey,
    SequenceSet,
    SortArgs,
    SortCriterion,
    Spans,
    StatusArgs,
    StoreArgs,
    ThreadArgs,
    parse_command,
    parse_section,
    quote_astring,
    split_head,
)
from mailmodes.protocols.imap.search import SearchContext, search
from mailmodes.protocols.sasl import CHALLENGE_RESPONSE, Challenge, Exchange, exchange, sasl_context
from mailmodes.protocols.imap.sort import sort
from mailmodes.protocols.imap.thread import thread
from mailmodes.scenarios.misbehaviour import StartTlsPlan
from mailmodes.store import (
    HIERARCHY_DELIMITER,
    INBOX,
    AccountInterface,
    MailboxError,
    MailboxInterface,
    Message,
    StoreInterface,
)

log = logging.getLogger(__name__)

# Advertised once authentication is possible (and after it), in this order.
EXTENSIONS = (
    "LITERAL+", "SASL-IR", "IDLE", "UIDPLUS", "UNSELECT", "MOVE", "NAMESPACE", "ID", "ENABLE", "SPECIAL-USE",
    "ESEARCH", "SEARCHRES", "SORT", "SORT=DISPLAY", "ESORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
    "CONTEXT=SEARCH", "CONTEXT=SORT", "BINARY", "MULTIAPPEND", "CATENATE", "LIST-EXTENDED", "LIST-STATUS", "CONDSTORE",
    "QRESYNC", "UTF8=ACCEPT",
)
PRIVACY_REQUIRED = "[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure connections"
AUTH_FAILED = "[AUTHENTICATIONFAILED] Authentication failed"  # RFC 5530
STARTTLS_OK = "Begin TLS negotiation now"
# Response conditions (RFC 3501 7.1): a chaos reply that starts with one of these has no tag yet.
_TAGGED_CONDITIONS = ("OK", "NO", "BAD")
_UNTAGGED_CONDITIONS = ("BYE", "PREAUTH")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_FLAG_ORDER = {flag: index for index, flag in enumerate(SYSTEM_FLAGS + ("\\Recent",))}
_SYSTEM_FLAGS_TEXT = " ".join(SYSTEM_FLAGS)
# RFC 3501 7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH (their UID forms may); SORT
# and THREAD are SEARCHes (RFC 5256 3, 4).
_NO_EXPUNGE_DURING = ("FETCH", "STORE", "SEARCH", "SORT", "THREAD")
_SAFE_ASTRING = re.compile(r"[^\r\n\x00\x80-\U0010ffff]*")
_SAFE_UTF8_ASTRING = re.compile(r"[^\r\n\x00\ud800-\udfff]*")  # lone surrogates: octets that were not UTF-8
# RFC 9755 3 (Net-Unicode, RFC 5198 2): no C0 or C1 controls, DEL, LINE or PARAGRAPH SEPARATOR.
_NOT_IN_NAMES = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# A relative IMAP URL to a message or part of one (RFC 5092 4 and 6: iabsolute-path), keys in any case.
_IMAP_URL = re.compile(
    rb"/(?P<mailbox>[^;/]+(?:/[^;/]+)*)(?i:;UIDVALIDITY=(?P<uidvalidity>\d{1,10}))?"
    rb"(?i:/;UID=(?P<uid>\d{1,10}))(?i:/;SECTION=(?P<section>[^/]+))?"
    rb"(?i:/;PARTIAL=(?P<origin>\d{1,10})(?:\.(?P<length>\d{1,10}))?)?"
)


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


Reply = tuple[str, str] | None  # (status, text) for the tagged response; None: sent already
# RFC 5267 4.3 lets a server refuse more (NOUPDATE); Dovecot keeps 10 per session.
MAX_SEARCH_UPDATES = 10


@dataclass
class View:
    """The selected mailbox as this client knows it (RFC 3501 5.2: numbers change only when told)."""

    mailbox: MailboxInterface
    readonly: bool
    messages: list[Message]  # index + 1 is the sequence number
    flags: dict[int, frozenset[str]]  # UID -> the flags this client was last told
    recent: set[int]  # UIDs that are \Recent in this session
    keywords: list[str]  # keywords announced in FLAGS
    uid_high: int  # the highest UID ever announced
    unwatch: Callable[[], None] = lambda: None
    dirty: bool = False  # the store changed (or reports are held back) since the last sync
    # "$" (RFC 5182): the UIDs the last SEARCH RETURN (SAVE) kept; an expunged one simply no
    # longer resolves to a message.
    saved: set[int] = field(default_factory=set)
    updates: dict[str, _SearchUpdate] = field(default_factory=dict)  # by tag, CONTEXT=SEARCH
    flags_version: int = -1  # the mailbox's flag_changes when this view last compared flags

    def largest_uid(self) -> int:
        return self.messages[-1].uid if self.messages else 0


@dataclass
class _SearchUpdate:
    """A SEARCH RETURN (UPDATE) kept running (RFC 5267 4.3), named by its command's tag."""

    tag: str
    key: SearchKey
    uid: bool
    uids: set[int]  # the result the client was last told, as UIDs
    # CONTEXT=SORT: a SORT RETURN (UPDATE)'s criteria and that result in sort order (as UIDs);
    # updates then carry positions in it. None for a SEARCH (position 0).
    criteria: tuple[SortCriterion, ...] | None = None
    order: list[int] = field(default_factory=list)


@dataclass
class _Pending:
    """Output gathered while handling input, and what net must do after sending it."""

    chunks: list[bytes] = field(default_factory=list)
    action: StartTls | Close | NoTls | None = None
    delay: float = 0.0  # before any of it: a login answer to a client that failed too often


class ImapSession:
    """One IMAP connection. Implements net.LineSession."""

    def __init__(self, connection: Connection, store: StoreInterface, hostname: str) -> None:
        self.connection = connection
        self.security = connection.security
        self.limits = connection.listener.limits
        self.store = store
        self.hostname = hostname
        self.framer = Framer(self.limits.max_line_length)
        self.state = State.NOT_AUTHENTICATED
        self.account: AccountInterface | None = None
        self.view: View | None = None
        self.bad_commands = 0  # BAD responses on this connection, like SMTP's and POP3's budgets
        self.auth_failures = 0
        self.pipelined_after_starttls = 0
        self.notes = connection.notes
        self._skipping = ""  # why the framer drops what it drops next (for the journal)
        self._overheard: Framer | None = None
        # A command that reads raw lines after a continuation (IDLE, AUTHENTICATE), with its tag.
        self._continuation: Callable[[bytes], None] | None = None
        self._continuation_tag = ""
        self._idling = False
        self._pending = _Pending()
        self._command_start = 0  # where the current command's output starts in _pending.chunks
        # \Recent stays with the session that claimed it (RFC 3501 2.3.2), across re-SELECTs.
        self._claimed_recent: dict[MailboxInterface, set[int]] = {}
        # The listener's scenario. Without one every hook answers "known-good", and the hot path
        # (each command) checks one attribute: the chaos stages, empty.
        self.misbehaviour = connection.misbehaviour
        self._chaos_stages = self.misbehaviour.chaos_stages
        # RFC 7162 3.1: CONDSTORE, once enabled (ENABLE, SELECT (CONDSTORE) or a command that
        # uses a mod-sequence), stays on: HIGHESTMODSEQ on SELECT, MODSEQ in flag updates.
        self.condstore = False
        # RFC 7162 3.2: QRESYNC, once enabled (ENABLE QRESYNC only), also stays on: VANISHED
        # instead of EXPUNGE, UIDs in flag updates, SELECT (QRESYNC ...) and UID FETCH VANISHED.
        self.qresync = False
        # RFC 9755 (UTF8=ACCEPT), once enabled: UTF-8 in quoted strings and mailbox names both
        # ways (modified UTF-7 before), SEARCH without CHARSET, 8-bit headers in APPEND.
        self.utf8 = False

    # --- LineSession ----------------------------------------------------------------------

    def greeting(self) -> list[Output]:
        if self.misbehaviour.active:
            return self._scenario_greeting()
        # Never PREAUTH (RFC 9051 7.1.4 and PROTOCOL.md): every client logs in.
        return [f"* OK [CAPABILITY {self.capabilities()}] {self.hostname} ready\r\n".encode()]

    def feed(self, data: bytes) -> list[Output]:
        if self.state is State.LOGOUT:
            return []
        self.framer.feed(data)
        return self._guarded(self._process)

    def tls_started(self) -> list[Output]:
        # RFC 3501 6.2.1: the client must ask for CAPABILITY again; `capabilities()` reads the
        # security object, which now says "encrypted", so nothing else to forget here.
        if self.framer.buffered:
            # Only command-injection-vulnerable keeps plaintext pipelined behind STARTTLS (every
            # other listener dropped it): run it now as if it had come inside TLS (CVE-2011-0411).
            return self._guarded(self._process)
        return []

    def wake(self) -> list[Output]:
        if not self._idling or self.state is State.LOGOUT:
            return []
        return self._guarded(lambda: self._sync(allow_expunge=True))

    def timed_out(self) -> list[Output]:
        self._logout_state()
        # RFC 3501 5.4: the autologout timer; net closes the connection after this.
        return [b"* BYE Autologout; idle for too long\r\n", Close()]

    def connection_lost(self) -> None:
        self._logout_state()

    def overheard(self, data: bytes) -> None:
        # A framer of its own: the session's state (and its buffer, dropped at STARTTLS) stays as
        # it was, since nothing of this is run.
        if self._overheard is None:
            self._overheard = Framer(self.limits.max_line_length)
        framer = self._overheard
        framer.feed(data)
        while (event := framer.next_command()) is not None:
            if isinstance(event, LiteralRequest):
                framer.accept_literal()  # no "+" goes out: a client waiting for one sends no more
                self._note_piece(event, ended=False)
            elif isinstance(event, CommandBytes):
                try:
                    command = parse_command(event.data, utf8=self.utf8)
                except CommandError as error:
                    self._note_command(event.data, event.start, event.literals, error)
                    continue
                self._note_command(event.data, event.start, event.literals, command)
                if command.name in ("LOGIN", "AUTHENTICATE"):
                    self._login_refused(command)
        skipped = framer.take_skipped()
        if skipped:
            self.notes.note(Skipped(skipped, "line too long"))

    # --- Driving ----------------------------------------------------------------------------

    def _guarded(self, work: Callable[[], None]) -> list[Output]:
        """Run `work`, collecting its output; an internal error ends this session only."""
        self._pending = pending = _Pending()
        self._command_start = 0
        try:
            work()
        except Exception:
            log.exception("IMAP session with %s: internal error", self.connection.peer)
            # Drop the failing command's partial output: a half FETCH response is unparseable.
            del pending.chunks[self._command_start :]
            pending.chunks.append(b"* BYE [SERVERBUG] Internal server error, closing the connection\r\n")
            pending.action = Close()
        outputs: list[Output] = list(_batched(pending.chunks))
        if pending.delay:
            outputs.insert(0, Delay(pending.delay))
        if isinstance(pending.action, StartTls):
            # PROTOCOL.md: plaintext pipelined behind STARTTLS is dropped, and remembered (unless
            # the listener plays the vulnerable server: tls_started() runs it).
            if not pending.action.keep_pipelined:
                self.pipelined_after_starttls = self.framer.drop()
            if self.pipelined_after_starttls or self.framer.buffered:
                self.notes.note(Pipelined(self.pipelined_after_starttls or self.framer.buffered,
                                          executed=pending.action.keep_pipelined))
            outputs.append(pending.action)
        elif isinstance(pending.action, (Close, NoTls)):
            self._logout_state()
            outputs.append(pending.action)
        return outputs

    def _process(self) -> None:
        while self._pending.action is None:
            if self._continuation is not None:
                line = self.framer.next_line()
                self._note_skipped()
                if line is None:
                    return
                if isinstance(line, LineTooLong):
                    self._continuation = None
                    self._idling = False
                    self._skipping = "line too long"
                    self._bad(self._continuation_tag, "Line too long")
                else:
                    self._command_start = len(self._pending.chunks)
                    self._continuation(line)
                continue
            event = self.framer.next_command()
            self._note_skipped()
            if event is None:
                return
            if isinstance(event, CommandBytes):
                self._execute(event)
            elif isinstance(event, LiteralRequest):
                self._literal(event)
            else:
                tag, _ = split_head(event.head)
                self._skipping = "line too long"
                self._note_skipped()  # what the framer dropped of the command's earlier lines
                self._bad(tag, "Command line too long")

    def _note_skipped(self) -> None:
        skipped = self.framer.take_skipped()
        if skipped:
            self.notes.note(Skipped(skipped, self._skipping or "not read"))

    def _literal(self, request: LiteralRequest) -> None:
        """Answer a literal announcement before its bytes arrive (RFC 3501 7.5, RFC 7888)."""
        tag, name = split_head(request.head)
        limit = self.limits.max_literal_size
        # APPEND: each literal is one message (MULTIAPPEND sends several), each within the
        # message size limit; the command's literals together within the literal limit.
        too_big = request.total > limit
        if name == "APPEND" and request.size > self.limits.max_message_size:
            limit, too_big = self.limits.max_message_size, True
        refusal: tuple[str, str] | None = None  # (status, text)
        if tag is None:
            refusal = ("BAD", "Invalid tag")
        elif name not in COMMANDS and name != "UID":
            # No use reading a literal for a command that will be refused anyway.
            refusal = ("BAD", "Unknown command")
        elif too_big:
            refusal = ("NO", f"[TOOBIG] Literal too big (at most {limit} octets)")
        elif name in ("LOGIN", "AUTHENTICATE") and not self.security.may_authenticate:
            # Refuse before the password is sent in the clear.
            refusal = ("NO", PRIVACY_REQUIRED)
        # The command so far; if refused, that is all of it (a {n+} literal still comes, dropped).
        self._note_piece(request, ended=refusal is not None)
        if refusal is None:
            self.framer.accept_literal()
            if request.synchronizing:
                self._send(b"+ Ready for literal data\r\n")
            return
        self.framer.reject_literal()
        self._skipping = "the server refused the literal"
        if name in ("LOGIN", "AUTHENTICATE"):
            self.notes.note(LoginAttempt(name, None, secret_sent=not request.synchronizing, accepted=False))
        self._tagged(tag or "*", *refusal)  # a BAD is counted by _tagged too

    def _execute(self, event: CommandBytes) -> None:
        self._command_start = len(self._pending.chunks)
        try:
            command = parse_command(event.data, utf8=self.utf8)
        except CommandError as error:
            self._note_command(event.data, event.start, event.literals, error)
            self._bad(error.tag, error.message)
            return
        self._note_command(event.data, event.start, event.literals, command)
        if command.name in self._chaos_stages:
            if command.name in ("LOGIN", "AUTHENTICATE"):
                self._login_refused(command)
            self._chaos_reply(command.name, command.tag)
            return
        handler, states = COMMANDS[command.name]
        if self.state not in states:
            self._bad(command.tag, f"{command.name} is not valid in the {self.state.value} state")
            return
        reply = handler(self, command)
        if reply is None:
            return
        status, text = reply
        if status != "BAD" and self.view is not None:
            self._sync(allow_expunge=command.uid or command.name not in _NO_EXPUNGE_DURING)
        self._tagged(command.tag, status, text)

    # --- Output helpers ---------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self._pending.chunks.append(data)

    def _untagged(self, text: str) -> None:
        self._pending.chunks.append(f"* {text}\r\n".encode("utf-8", "surrogateescape"))

    def _tagged(self, tag: str, status: str, text: str) -> None:
        # Texts may echo client input (a mailbox name sent as a literal): never let it end the line.
        text = text.replace("\r", " ").replace("\n", " ")
        if status == "BAD":
            self._bad(tag, text)
            return
        self._pending.chunks.append(f"{tag} {status} {text}\r\n".encode("utf-8", "surrogateescape"))

    def _bad(self, tag: str | None, text: str) -> None:
        self._pending.chunks.append(f"{tag or '*'} BAD {text}\r\n".encode("utf-8", "surrogateescape"))
        self.bad_commands += 1
        if self.bad_commands >= self.limits.max_bad_commands:
            self._send(b"* BYE Too many invalid commands\r\n")
            self._pending.action = Close()

    def capabilities(self) -> str:
        # The scenario may add a canary or rename IMAP4rev1; known-good: the list unchanged.
        return " ".join(self.misbehaviour.capabilities(self._capability_names(), encrypted=self.security.encrypted))

    def _capability_names(self) -> list[str]:
        security = self.security
        names = ["IMAP4rev1"]
        if self.state is State.NOT_AUTHENTICATED and security.offers_starttls:
            names.append("STARTTLS")
        if not security.may_authenticate and self.state is State.NOT_AUTHENTICATED:
            # PROTOCOL.md: before TLS on a required port, exactly IMAP4rev1 STARTTLS LOGINDISABLED
            # (authenticated only after an imap-preauth greeting, which then lists the rest).
            names.append("LOGINDISABLED")
            return names
        if self.state is State.NOT_AUTHENTICATED:
            offered = self.connection.listener.mechanisms_offered(encrypted=security.encrypted)
            names.extend(f"AUTH={mechanism}" for mechanism in offered)
        names.extend(EXTENSIONS)
        return names

    def _logout_state(self) -> None:
        self._unselect()
        self._continuation = None
        self._idling = False
        self.state = State.LOGOUT

    # --- Scenarios (misbehaviour.py; KNOWN-BAD.md section 2) -----------------------------------

    def _scenario_greeting(self) -> list[Output]:
        misbehaviour = self.misbehaviour
        user = ""
        if misbehaviour.scenario == "imap-preauth":
            # RFC 3501 7.1.4: PREAUTH says the connection is already authenticated, here in the
            # clear; as whom is ours to choose: the first account.
            self.account = next(iter(self.store.accounts.values()), None)
            if self.account is not None:
                self.state, user = State.AUTHENTICATED, self.account.name
        if misbehaviour.capability_error() is not None:
            # capability-fails: no capabilities in the greeting, so that the client has to ask.
            default = f"* OK {self.hostname} ready"
        else:
            default = f"* OK [CAPABILITY {self.capabilities()}] {self.hostname} ready"
        step = misbehaviour.greeting(default, self.hostname, user)
        if step.line is None:
            self._logout_state()
            return list(step.actions)  # chaos: a disconnect at the greeting
        line = _chaos_line(step.line, "*")
        # Untagged (or premature tagged) lines after the greeting go in the same write.
        outputs: list[Output] = [line + "".join(f"{extra}\r\n" for extra in misbehaviour.after_greeting()).encode()]
        if Close() in step.actions or line.startswith(b"* BYE"):  # RFC 3501 7.1.5: after BYE, close
            self._logout_state()
            outputs.append(Close())
        return outputs

    def _chaos_reply(self, stage: str, tag: str) -> None:
        """chaos at this command: the configured reply instead of the command's, or a disconnect."""
        step = self.misbehaviour.at_command(stage)
        assert step is not None
        if step.line is not None:
            line = _chaos_line(step.line, tag)
            self._send(line)
            if not line.startswith(b"* BYE"):
                return
        # RFC 3501 7.1.5: after BYE the server closes the connection.
        self._pending.action = Close()

    def _planned_starttls(self, tag: str, plan: StartTlsPlan) -> Reply:
        """STARTTLS as the scenario plans it: refused, answered oddly, or followed by no TLS."""
        line = (plan.reply or f"{tag} OK {STARTTLS_OK}").replace("{tag}", tag) + "\r\n"
        # The injection rule (KNOWN-BAD.md): injected lines go out in the same write as the OK.
        self._send((line + plan.injected).encode())
        for action in plan.actions:
            assert isinstance(action, (StartTls, NoTls))
            self._pending.action = action
        return None

    def _referred(self, tag: str) -> bool:
        """login-referral: LOGIN / AUTHENTICATE answered with a referral to another server (RFC 2221)."""
        referral = self.misbehaviour.login_refusal(tag)
        if referral is None:
            return False
        self._send(f"{referral}\r\n".encode())
        return True

    # --- Any state --------------------------------------------------------------------------

    def _capability(self, command: Command) -> Reply:
        refusal = self.misbehaviour.capability_error(command.tag)
        if refusal is not None:  # capability-fails
            self._send(f"{refusal}\r\n".encode())
            return None
        self._untagged(f"CAPABILITY {self.capabilities()}")
        return "OK", "Capability completed"

    def _noop(self, command: Command) -> Reply:
        return "OK", f"{command.name} completed"

    def _logout(self, command: Command) -> Reply:
        self._unselect()
        self._send(b"* BYE Logging out\r\n")
        self._pending.action = Close()
        return "OK", "Logout completed"

    def _id(self, command: Command) -> Reply:
        assert isinstance(command.args, IdArgs)
        self._untagged(f'ID ("name" "mailmodes" "version" "{__version__}")')
        return "OK", "ID completed"

    # --- Not authenticated ------------------------------------------------------------------

    def _starttls(self, command: Command) -> Reply:
        if self.security.encrypted:
            return "BAD", "TLS is already active"
        if self.state is not State.NOT_AUTHENTICATED:
            return "BAD", "STARTTLS is only valid before authentication"
        if self.misbehaviour.strips_starttls:
            # starttls-stripped / protocol-downgrade: a server that never heard of STARTTLS
            # (RFC 3501 6.1: an unknown command is answered with BAD).
            return "BAD", "Unknown command"
        if not self.security.offers_starttls:
            return "NO", "[UNAVAILABLE] TLS is not available on this port"
        plan = self.misbehaviour.starttls(self.hostname)
        if plan is not None:
            return self._planned_starttls(command.tag, plan)
        self._pending.action = StartTls()
        return "OK", STARTTLS_OK

    def _login(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, Login)
        refused = self._refused_before_credentials(command)
        if refused is not None:
            return refused[0]
        user = args.user.decode("utf-8", "replace")
        account = self.store.authenticate(user, args.password.decode("utf-8", "replace"))
        self._login_decided("LOGIN", user, account)
        return self._logged_in(account)

    def _logged_in(self, account: AccountInterface | None) -> Reply:
        self._login_answered(failed=account is None)
        if account is None:
            return "NO", AUTH_FAILED
        self.account = account
        self.state = State.AUTHENTICATED
        return "OK", f"[CAPABILITY {self.capabilities()}] Logged in"

    def _login_answered(self, *, failed: bool) -> None:
        """Pause the answer for a client host that failed too often lately; at the connection's
        last allowed failure, BYE after it (guards.AuthFailures)."""
        limits = self.limits
        host = self.connection.peer[0]
        failures = self.connection.auth_failures
        self._pending.delay = failures.delay(host, limits.max_auth_failures_per_client, limits.auth_failure_delay)
        if not failed:
            return
        failures.failed(host)
        self.auth_failures += 1
        if self.auth_failures >= limits.max_auth_failures:
            self._send(b"* BYE Too many authentication failures\r\n")
            self._pending.action = Close()

    def _refused_before_credentials(self, command: Command) -> tuple[Reply] | None:
        """LOGIN's and AUTHENTICATE's refusal before any credential is looked at: no TLS yet, or
        login-referral (already answered: its reply is None); None when neither applies."""
        if not self.security.may_authenticate:
            self._login_refused(command)
            return ("NO", PRIVACY_REQUIRED),
        if self._referred(command.tag):
            self._login_refused(command)
            return (None,)
        return None

    def _authenticate(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, Authenticate)
        refused = self._refused_before_credentials(command)
        if refused is not None:
            return refused[0]
        if args.mechanism not in self.connection.listener.mechanisms_offered(encrypted=self.security.encrypted):
            self._login_refused(command)
            if args.mechanism in self.connection.listener.mechanisms:  # offered inside TLS only
                return "NO", f"[PRIVACYREQUIRED] AUTHENTICATE {args.mechanism} only inside TLS"
            return "NO", "[CANNOT] Unsupported authentication mechanism"
        if args.mechanism in CHALLENGE_RESPONSE:
            return self._challenge_response(command.tag, args)
        if args.initial is not None:
            # RFC 4959: "=" is an empty initial response.
            return self._sasl_plain(b"" if args.initial == b"=" else args.initial)
        self._send(b"+ \r\n")
        self._continuation_tag = command.tag
        self._continuation = self._authenticate_response
        return None

    def _authenticate_response(self, line: bytes) -> None:
        self._continuation = None
        if line == b"*":
            self.notes.note(Heard(line, None))
            self.notes.note(LoginAttempt("AUTHENTICATE PLAIN", None, secret_sent=False, accepted=False))
            # RFC 3501 6.2.2: a "*" line cancels, answered with BAD.
            self._bad(self._continuation_tag, "Authentication aborted")
            return
        self.notes.note(Heard(line, None, ((0, len(line), SECRET),)))
        reply = self._sasl_plain(line)
        assert reply is not None
        self._tagged(self._continuation_tag, *reply)

    def _challenge_response(self, tag: str, args: Authenticate) -> Reply:
        """CRAM-MD5 or SCRAM-SHA-256 (sasl.py): each challenge a "+ <base64>" continuation, each
        answer a line; "*" cancels (BAD, RFC 3501 6.2.2)."""
        conversation = exchange(args.mechanism, sasl_context(self.store, self.hostname, "imap", self.connection,
                                                             encrypted=self.security.encrypted))
        initial = None if args.initial is None else b"" if args.initial == b"=" else args.initial
        if initial:
            try:
                initial = base64.b64decode(initial, validate=True)
            except (binascii.Error, ValueError):
                self.notes.note(LoginAttempt(f"AUTHENTICATE {args.mechanism}", None, False, False))
                return "BAD", "Invalid base64 data"
        return self._sasl_step(tag, args.mechanism, conversation, initial)

    def _sasl_step(self, tag: str, mechanism: str, conversation: Exchange,
                   response: bytes | None) -> Reply:
        step = conversation.step(response)
        if isinstance(step, Challenge):
            if step.secret_sent:  # undecided until the client answers, if it ever does
                self.notes.note(LoginAttempt(f"AUTHENTICATE {mechanism}", conversation.user, True, None,
                                             expired_token=step.expired_token))
            self._send(b"+ " + base64.b64encode(step.data) + b"\r\n")
            self._continuation_tag = tag
            self._continuation = lambda line: self._sasl_answer(mechanism, conversation, line)
            return None
        account = self.store.accounts.get(step.account) if step.account else None
        # CRAM and SCRAM send a proof, LOGIN the password, XOAUTH2 and OAUTHBEARER a token (sasl.py).
        self.notes.note(LoginAttempt(f"AUTHENTICATE {mechanism}", step.account or step.user, step.secret_sent,
                                     account is not None, step.binding, step.expired_token))
        return self._logged_in(account)

    def _sasl_answer(self, mechanism: str, conversation: Exchange, line: bytes) -> None:
        self._continuation = None
        tag = self._continuation_tag
        if line == b"*":
            self.notes.note(Heard(line, None))
            self.notes.note(LoginAttempt(f"AUTHENTICATE {mechanism}", None, conversation.secret_sent, False))
            self._bad(tag, "Authentication aborted")
            return
        self.notes.note(Heard(line, None, ((0, len(line), SECRET),) if line else ()))
        try:
            answer = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            self.notes.note(LoginAttempt(f"AUTHENTICATE {mechanism}", None, conversation.secret_sent, False))
            self._bad(tag, "Invalid base64 data")
            return
        reply = self._sasl_step(tag, mechanism, conversation, answer)
        if reply is not None:
            self._tagged(tag, *reply)

    def _sasl_plain(self, response: bytes) -> Reply:
        try:
            decoded = base64.b64decode(response, validate=True)
        except (binascii.Error, ValueError):
            self.notes.note(LoginAttempt("AUTHENTICATE PLAIN", None, secret_sent=bool(response), accepted=False))
            return "BAD", "Invalid base64 data"
        parts = decoded.split(b"\0")
        if len(parts) != 3:
            self.notes.note(LoginAttempt("AUTHENTICATE PLAIN", None, secret_sent=bool(response), accepted=False))
            return "NO", AUTH_FAILED
        authzid, authcid, password = (part.decode("utf-8", "replace") for part in parts)
        account = self.store.authenticate(authcid, password)
        if account is not None and authzid not in ("", authcid, account.name):
            # RFC 4616: acting as another user is not offered.
            self._login_decided("AUTHENTICATE PLAIN", authcid, None)
            return "NO", "[AUTHORIZATIONFAILED] Authorization failed"
        self._login_decided("AUTHENTICATE PLAIN", authcid, account)
        return self._logged_in(account)

    # --- What the journal is told (events.py) -------------------------------------------------

    def _login_decided(self, command: str, tried: str, account: AccountInterface | None) -> None:
        """The store answered: logged in as `account` (its own name), or refused `tried`."""
        user = tried if account is None else account.name
        self.notes.note(LoginAttempt(command, user, secret_sent=True, accepted=account is not None))

    def _login_refused(self, command: Command) -> None:
        """LOGIN / AUTHENTICATE refused before the store was asked (no TLS, a referral, chaos)."""
        args = command.args
        if isinstance(args, Login):
            attempt = LoginAttempt("LOGIN", args.user.decode("utf-8", "replace"), bool(args.password), False)
        else:
            assert isinstance(args, Authenticate)
            attempt = LoginAttempt(f"AUTHENTICATE {args.mechanism}", None,
                                   args.initial not in (None, b"", b"="), False)
        self.notes.note(attempt)

    def _note_piece(self, request: LiteralRequest, *, ended: bool) -> None:
        """The lines of a command up to a literal still to come, in wire order (before the "+"
        that answers them): shown as far as the grammar accepts them as the start of a command."""
        try:
            command = parse_command(request.data, partial=True, utf8=self.utf8)
        except CommandError as error:
            self._note_command(request.data, request.start, request.literals, error, ended=ended)
            return
        self._note_command(request.data, request.start, request.literals, command, ended=ended)

    def _note_command(self, data: bytes, start: int, literals: Spans, parsed: Command | CommandError,
                      *, ended: bool = True) -> None:
        """What the client sent of a command, for the journal: literals as their size, the
        credentials the grammar found masked, and everything past the point where the grammar
        rejected it (past the command name, or the whole line for an unknown one) unshown."""
        tag, name = split_head(data)
        spans: list[Span] = [(begin, end, LITERAL) for begin, end in literals]
        if isinstance(parsed, Command):
            spans += [(begin, end, SECRET) for begin, end in parsed.secrets]
            verb = f"UID {parsed.name}" if parsed.uid else parsed.name
        elif isinstance(parsed, Incomplete):
            verb = name
        else:
            known = tag is not None and (name in COMMANDS or name == "UID")
            cut = min(len(data), len(tag) + len(name) + 2) if tag is not None and known else 0
            spans = [span for span in spans if span[1] <= cut] + [(cut, len(data), UNPARSED)]
            verb = name if known else ""
        self.notes.note(Heard(data, verb if ended else None, tuple(sorted(spans)), start))

    # --- Authenticated ----------------------------------------------------------------------

    def _account(self) -> AccountInterface:
        assert self.account is not None
        return self.account

    def _select(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, MailboxArg)
        if args.qresync is not None and not self.qresync:
            return "BAD", "QRESYNC is not enabled"  # RFC 7162 3.2.5
        if self.view is not None:
            # RFC 3501 6.3.1: a SELECT deselects the current mailbox even when it fails; RFC 7162
            # 3.2.11: [CLOSED] marks where its responses end (sent always, as Dovecot does).
            self._unselect()
            self._untagged("OK [CLOSED] Previous mailbox closed")
        mailbox = self._account().mailbox(args.mailbox)
        if mailbox is None:
            return "NO", f"[NONEXISTENT] Mailbox doesn't exist: {args.mailbox}"
        readonly = command.name == "EXAMINE"
        # \Recent belongs to the first session to see a message; EXAMINE only looks.
        claimed = self._claimed_recent.setdefault(mailbox, set())
        if readonly:
            recent = claimed | mailbox.recent_uids
        else:
            claimed |= mailbox.claim_recent()
            recent = claimed  # one set: what this view reports and what the session keeps
        messages = list(mailbox.messages)
        recent &= {m.uid for m in messages}
        keywords = sorted({flag for m in messages for flag in m.flags if not flag.startswith("\\")})
        view = View(
            mailbox, readonly, messages, {m.uid: frozenset(m.flags) for m in messages}, recent, keywords,
            uid_high=messages[-1].uid if messages else 0, flags_version=mailbox.flag_changes,
        )
        view.unwatch = mailbox.watch(self._mailbox_changed)
        self.view, self.state = view, State.SELECTED
        self._untagged(f"FLAGS ({self._flags_text(view)})")
        self._untagged(f"{len(messages)} EXISTS")
        self._untagged(f"{len(recent)} RECENT")
        first_unseen = next((n for n, m in enumerate(messages, 1) if "\\Seen" not in m.flags), None)
        if first_unseen is not None:
            self._untagged(f"OK [UNSEEN {first_unseen}] First unseen")
        self._permanent_flags(view)
        self._untagged(f"OK [UIDVALIDITY {mailbox.uidvalidity}] UIDs valid")
        self._untagged(f"OK [UIDNEXT {mailbox.uidnext}] Predicted next UID")
        if args.condstore or args.qresync is not None:
            self.condstore = True
        if self.condstore:
            self._untagged(f"OK [HIGHESTMODSEQ {mailbox.highest_modseq}] Highest")
        if args.qresync is not None and args.qresync.uidvalidity == mailbox.uidvalidity:
            # RFC 7162 3.2.5.1: with another UIDVALIDITY the client's knowledge is void, and
            # the SELECT is an ordinary one.
            self._resync(view, args.qresync)
        return "OK", "[READ-ONLY] EXAMINE completed" if readonly else "[READ-WRITE] SELECT completed"

    def _resync(self, view: View, known: QResync) -> None:
        """RFC 7162 3.2.5.1: what vanished since the client's mod-sequence (VANISHED (EARLIER))
        and every message changed since (FETCH with UID, FLAGS and MODSEQ), of the known UIDs
        only when the client listed them."""
        wanted = _within(known.known_uids.resolve(0)) if known.known_uids is not None else lambda uid: True
        self._vanished_earlier(view, known.modseq, wanted)
        for number, message in enumerate(view.messages, 1):
            if message.modseq > known.modseq and wanted(message.uid):
                self._send(b"* %d FETCH (UID %d %b%b)\r\n" % (
                    number, message.uid, self._flags_item(view, message), self._modseq_item(message)))

    def _vanished_earlier(self, view: View, modseq: int, wanted: Callable[[int], bool]) -> None:
        """* VANISHED (EARLIER): the UIDs `wanted` that were expunged after `modseq` (RFC 7162
        3.2.10), from the mailbox's tombstones."""
        gone = sorted(uid for uid, when in view.mailbox.expunged.items() if when > modseq and wanted(uid))
        if gone:
            self._send(b"* VANISHED (EARLIER) %b\r\n" % _uid_set(gone).encode())

    def _flags_text(self, view: View) -> str:
        return " ".join([_SYSTEM_FLAGS_TEXT, *view.keywords]).strip()

    def _permanent_flags(self, view: View) -> None:
        if view.readonly:
            self._untagged("OK [PERMANENTFLAGS ()] Read-only mailbox")
        else:
            # "\*": clients may create keywords (RFC 3501 7.1).
            self._untagged(f"OK [PERMANENTFLAGS ({self._flags_text(view)} \\*)] Flags permitted")

    def _mailbox_changed(self) -> None:
        if self.view is not None:
            self.view.dirty = True
        if self._idling:
            self.connection.wake()

    def _unselect(self) -> None:
        if self.view is not None:
            self.view.unwatch()
            self.view = None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED

    def _create(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, MailboxArg)
        account = self._account()
        name = args.mailbox.rstrip(HIERARCHY_DELIMITER)
        if account.mailbox(name) is not None:
            return "NO", "[ALREADYEXISTS] Mailbox already exists"
        if not _valid_new_name(name):
            return "NO", "[CANNOT] Invalid mailbox name"
        try:
            account.create(name)  # not subscribed (RFC 3501 6.3.3 and 6.3.6 are separate steps)
        except MailboxError as error:
            return "NO", f"[CANNOT] {error}"
        return "OK", "CREATE completed"

    def _delete(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, MailboxArg)
        account = self._account()
        if args.mailbox == INBOX:
            return "NO", "[CANNOT] INBOX cannot be deleted"
        if account.mailbox(args.mailbox) is None:
            return "NO", f"[NONEXISTENT] Mailbox doesn't exist: {args.mailbox}"
        try:
            account.delete(args.mailbox)
        except MailboxError as error:
            return "NO", f"[INUSE] {error}"
        return "OK", "DELETE completed"

    def _rename(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, Rename)
        account = self._account()
        new = args.new.rstrip(HIERARCHY_DELIMITER)
        if account.mailbox(args.old) is None:
            return "NO", f"[NONEXISTENT] Mailbox doesn't exist: {args.old}"
        if account.mailbox(new) is not None:
            return "NO", "[ALREADYEXISTS] Mailbox already exists"
        if not _valid_new_name(new) or new.startswith(args.old + HIERARCHY_DELIMITER):
            return "NO", "[CANNOT] Invalid mailbox name"
        try:
            account.rename(args.old, new)
        except MailboxError as error:
            return "NO", f"[CANNOT] {error}"
        return "OK", "RENAME completed"

    def _subscribe(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, MailboxArg)
        account = self._account()
        name = account.normalise(args.mailbox)
        if command.name == "UNSUBSCRIBE":
            # A subscription to a mailbox deleted since can still be dropped.
            if name not in account.subscriptions and account.mailbox(name) is None:
                return "NO", f"[NONEXISTENT] Mailbox doesn't exist: {args.mailbox}"
            account.subscriptions.discard(name)
            return "OK", "UNSUBSCRIBE completed"
        if account.mailbox(name) is None:
            return "NO", f"[NONEXISTENT] Mailbox doesn't exist: {args.mailbox}"
        account.subscriptions.add(name)
        return "OK", "SUBSCRIBE completed"

    def _list(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, ListArgs)
        lsub = command.name == "LSUB"
        if not args.pattern and not args.extended:
            # RFC 3501 6.3.8: an empty pattern asks for the delimiter and the reference's root.
            root = args.reference.split(HIERARCHY_DELIMITER, 1)[0]
            root += HIERARCHY_DELIMITER if HIERARCHY_DELIMITER in args.reference else ""
            if not lsub:
                self._untagged(f'LIST (\\Noselect) "{HIERARCHY_DELIMITER}" {_astring(root, self.utf8)}')
            return "OK", f"{command.name} completed"
        patterns = [ListPattern(args.reference + pattern) for pattern in (args.pattern, *args.more_patterns)]

        def matches(name: str) -> bool:
            return any(pattern.matches(name, fold_case=name == INBOX) for pattern in patterns)

        account = self._account()
        mailboxes = account.mailboxes
        if lsub:
            for name, noselect in _lsub_entries(mailboxes, account.subscriptions, matches):
                self._untagged(f'LSUB ({noselect}) "{HIERARCHY_DELIMITER}" {_astring(name, self.utf8)}')
            return "OK", f"{command.name} completed"
        selection, returns = set(args.selection), set(args.returns)
        childinfo: set[str] = set()
        if "SUBSCRIBED" in selection:
            # RFC 5258 3.1: the subscriptions that match, existing or not.
            names = {name for name in account.subscriptions if matches(name)}
            if "RECURSIVEMATCH" in selection:
                # RFC 5258 3.5: a matching name above a subscription that is not itself listed
                # is listed too, with CHILDINFO ("SUBSCRIBED").
                for subscribed in account.subscriptions - names:
                    parts = subscribed.split(HIERARCHY_DELIMITER)
                    childinfo.update(
                        parent for parent in (HIERARCHY_DELIMITER.join(parts[:depth]) for depth in range(1, len(parts)))
                        if matches(parent)
                    )
                names |= childinfo
        else:
            names = {name for name in mailboxes if matches(name)}
        show_subscribed = "SUBSCRIBED" in selection or "SUBSCRIBED" in returns
        for name in sorted(names, key=lambda n: (n != INBOX, n)):
            mailbox = mailboxes.get(name)
            if mailbox is None:
                attributes = ["\\NonExistent"]
            else:
                prefix = name + HIERARCHY_DELIMITER
                attributes = ["\\HasChildren" if any(other.startswith(prefix) for other in mailboxes) else "\\HasNoChildren"]
            if show_subscribed and name in account.subscriptions:
                attributes.append("\\Subscribed")
            if mailbox is not None and mailbox.special_use:
                attributes.append(mailbox.special_use)
            extra = ' (CHILDINFO ("SUBSCRIBED"))' if name in childinfo else ""
            self._untagged(f'LIST ({" ".join(attributes)}) "{HIERARCHY_DELIMITER}" {_astring(name, self.utf8)}{extra}')
            if args.status_items and mailbox is not None:
                self._status_response(mailbox, args.status_items)  # LIST-STATUS (RFC 5819)
        return "OK", f"{command.name} completed"

    def _status(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, StatusArgs)
        mailbox = self._account().mailbox(args.mailbox)
        if mailbox is None:
            return "NO", f"[NONEXISTENT] Mailbox doesn't exist: {args.mailbox}"
        if "HIGHESTMODSEQ" in args.items:
            self._enable_condstore()
        self._status_response(mailbox, args.items)
        return "OK", "STATUS completed"

    def _status_response(self, mailbox: MailboxInterface, wanted: tuple[str, ...]) -> None:
        view = self.view
        recent = len(view.recent) if view is not None and view.mailbox is mailbox else len(mailbox.recent_uids)
        values = {
            "MESSAGES": len(mailbox.messages),
            "RECENT": recent,
            "UIDNEXT": mailbox.uidnext,
            "UIDVALIDITY": mailbox.uidvalidity,
            "UNSEEN": sum(1 for m in mailbox.messages if "\\Seen" not in m.flags),
            "HIGHESTMODSEQ": mailbox.highest_modseq,
        }
        items = " ".join(f"{item} {values[item]}" for item in wanted)
        self._untagged(f"STATUS {_astring(mailbox.name, self.utf8)} ({items})")

    def _append(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, AppendArgs)
        mailbox = self._account().mailbox(args.mailbox)
        if mailbox is None:
            # RFC 3501 6.3.11: TRYCREATE tells the client that CREATE would help.
            return "NO", f"[TRYCREATE] Mailbox doesn't exist: {args.mailbox}"
        contents: list[bytes] = []
        for item in args.messages:
            if item.catenate:
                joined = self._catenated(item.catenate)
                if isinstance(joined, str):
                    return "NO", joined
                contents.append(joined)
            else:
                contents.append(mime.binary_parts_as_base64(item.message) if item.binary else item.message)
        if any(len(data) > self.limits.max_message_size for data in contents):
            return "NO", "[TOOBIG] Message too big"
        if not self.utf8 and any(not _header_block(data).isascii() for data in contents):
            # RFC 9755 4: 8-bit header fields only from a client that enabled UTF8=ACCEPT.
            return "NO", "[CANNOT] 8-bit header fields need ENABLE UTF8=ACCEPT"
        # RFC 3502: all the messages or none; everything that can refuse one is checked above.
        uids = []
        for item, data in zip(args.messages, contents, strict=True):
            flags = self._canonical_flags(item.flags)
            if self.view is not None and self.view.mailbox is mailbox:
                self._announce_keywords(self.view, flags)
            uids.append(mailbox.append(data, flags, item.internal_date).uid)
        # RFC 4315 3: one UID, or the uid-set of a MULTIAPPEND.
        return "OK", f"[APPENDUID {mailbox.uidvalidity} {_uid_set(uids)}] APPEND completed"

    def _catenated(self, parts: tuple[tuple[str, bytes], ...]) -> bytes | str:
        """CATENATE (RFC 4469 5): the parts joined, or the NO text naming the first bad URL."""
        out: list[bytes] = []
        for kind, value in parts:
            if kind == "TEXT":
                out.append(value)
                continue
            content = self._url_content(value)
            if content is None:
                return f"[BADURL {value.decode('utf-8', 'replace')}] CATENATE URL cannot be used"
            out.append(content)
        return b"".join(out)

    def _url_content(self, url: bytes) -> bytes | None:
        """The octets a relative IMAP URL names (RFC 5092: "/" mailbox [";UIDVALIDITY=" n]
        "/;UID=" n ["/;SECTION=" section] ["/;PARTIAL=" origin ["." length]]) in this user's
        mailboxes; None when it names nothing."""
        match = _IMAP_URL.fullmatch(url)
        if match is None:
            return None
        mailbox = self._account().mailbox(unquote_to_bytes(match["mailbox"]).decode("utf-8", "surrogateescape"))
        if mailbox is None or (match["uidvalidity"] and int(match["uidvalidity"]) != mailbox.uidvalidity):
            return None
        message = mailbox.by_uid(int(match["uid"]))
        if message is None:
            return None
        content = message.data
        if match["section"]:
            section = parse_section(unquote_to_bytes(match["section"]))
            if section is None:
                return None
            content = mime.parsed(message).section(section.part, section.kind, section.fields)
        if match["origin"]:
            origin = int(match["origin"])
            end = origin + int(match["length"]) if match["length"] else len(content)
            content = content[origin:end]
        return content

    def _namespace(self, command: Command) -> Reply:
        self._untagged(f'NAMESPACE (("" "{HIERARCHY_DELIMITER}")) NIL NIL')
        return "OK", "NAMESPACE completed"

    def _enable(self, command: Command) -> Reply:
        assert isinstance(command.args, EnableArgs)
        if self.state is not State.AUTHENTICATED:
            # RFC 5161 3.1: only before a mailbox is selected.
            return "BAD", "ENABLE is only valid before a mailbox is selected"
        # RFC 5161 3.2: ENABLED lists what this command enabled (CONDSTORE and QRESYNC need it;
        # QRESYNC implies CONDSTORE, RFC 7162 3.2.3).
        asked = command.args.capabilities
        enabled = [name for name, on in (("CONDSTORE", self.condstore), ("QRESYNC", self.qresync))
                   if name in asked and not on]
        self.condstore = self.condstore or bool(enabled)
        self.qresync = self.qresync or "QRESYNC" in enabled
        if "UTF8=ACCEPT" in asked and not self.utf8:
            enabled.append("UTF8=ACCEPT")
            self.utf8 = True
        self._untagged(" ".join(["ENABLED", *enabled]))
        return "OK", "ENABLE completed"

    def _enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 3.1): the first one, with a mailbox selected,
        also tells its HIGHESTMODSEQ, which SELECT did not."""
        if self.condstore:
            return
        self.condstore = True
        if self.view is not None:
            self._untagged(f"OK [HIGHESTMODSEQ {self.view.mailbox.highest_modseq}] Highest")

    def _idle(self, command: Command) -> Reply:
        # RFC 2177: report what is pending now, then as it happens until DONE.
        if self.view is not None:
            self._sync(allow_expunge=True)
        self._send(b"+ idling\r\n")
        self._continuation_tag = command.tag
        self._continuation = self._idle_line
        self._idling = True
        return None

    def _idle_line(self, line: bytes) -> None:
        self._continuation = None
        self._idling = False
        done = line.upper() == b"DONE"
        self.notes.note(Heard(line, None, () if done else ((0, len(line), UNPARSED),)))
        if not done:
            self._bad(self._continuation_tag, "Expected DONE to end IDLE")
            return
        if self.view is not None:
            self._sync(allow_expunge=True)
        self._tagged(self._continuation_tag, "OK", "IDLE terminated")

    # --- Selected ---------------------------------------------------------------------------

    def _selected(self) -> View:
        assert self.view is not None
        return self.view

    def _targets(self, sequence: SequenceSet, uid: bool) -> list[tuple[int, Message]] | None:
        """(sequence number, message) pairs, ascending; None if a sequence number is invalid."""
        view = self._selected()
        messages = view.messages
        if sequence.saved:
            return [(index + 1, m) for index, m in enumerate(messages) if m.uid in view.saved]
        indexes: Iterable[int]
        if uid:
            if not messages:
                return []
            # RFC 3501 6.4.8: "*" is the largest UID in use, so "n:*" always includes it.
            spans = [
                range(bisect.bisect_left(messages, low, key=_uid), bisect.bisect_right(messages, high, key=_uid))
                for low, high in sequence.resolve(messages[-1].uid)
            ]
        else:
            count = len(messages)
            spans = []
            for low, high in sequence.resolve(count):
                if low < 1 or high > count:
                    return None
                spans.append(range(low - 1, high))
        indexes = spans[0] if len(spans) == 1 else sorted(set().union(*spans))
        return [(index + 1, messages[index]) for index in indexes]

    def _ghosts(self, view: View) -> set[int]:
        """UIDs this client still sees that are gone from the store (EXPUNGE not yet sent)."""
        if not view.dirty:
            return set()
        present = {m.uid for m in view.mailbox.messages}
        return {m.uid for m in view.messages if m.uid not in present}

    def _check(self, command: Command) -> Reply:
        return "OK", "CHECK completed"

    def _close(self, command: Command) -> Reply:
        view = self._selected()
        if not view.readonly:
            # RFC 3501 6.4.2: expunge silently, no EXPUNGE responses.
            view.mailbox.expunge([m.uid for m in view.mailbox.messages if "\\Deleted" in m.flags])
        self._unselect()
        return "OK", "CLOSE completed"

    def _unselect_command(self, command: Command) -> Reply:
        """RFC 3691: leave the selected state like CLOSE, but expunge nothing."""
        self._unselect()
        return "OK", "UNSELECT completed"

    def _expunge(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, ExpungeArgs)
        view = self._selected()
        if view.readonly:
            return "NO", "[CANNOT] Mailbox is read-only"
        uids = [m.uid for m in view.messages if "\\Deleted" in m.flags]
        if args.uids is not None and args.uids.saved:
            uids = [uid for uid in uids if uid in view.saved]
        elif args.uids is not None:
            ranges = list(args.uids.resolve(view.largest_uid()))
            uids = [uid for uid in uids if any(low <= uid <= high for low, high in ranges)]
        view.mailbox.expunge(uids)  # the EXPUNGE responses come from the sync after this
        return "OK", "EXPUNGE completed"

    def _search(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, SearchArgs)
        view = self._selected()
        returns = args.returns
        if args.charset is not None and self.utf8:
            # RFC 9755 3: after ENABLE UTF8=ACCEPT a charset label can only conflict.
            return "BAD", "No CHARSET after ENABLE UTF8=ACCEPT"
        if args.charset not in (None, "UTF-8", "US-ASCII"):
            if returns is not None and "SAVE" in returns:
                view.saved = set()  # RFC 5182 2.1: a failed SEARCH ... SAVE empties "$"
            return "NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"
        if returns is not None and "UPDATE" in returns and command.tag in view.updates:
            return "BAD", "Duplicate search update tag"
        numbers = self._matching(view, args.key)
        if _uses_modseq(args.key):
            self._enable_condstore()
            self._search_result(command, view, numbers, returns, args.partial, modseq=True)
        else:
            self._search_result(command, view, numbers, returns, args.partial)
        if returns is not None and "UPDATE" in returns:
            uids = {view.messages[n - 1].uid for n in numbers}
            self._keep_update(view, _SearchUpdate(command.tag, args.key, command.uid, uids))
        return "OK", "SEARCH completed"

    def _keep_update(self, view: View, update: _SearchUpdate) -> None:
        """RFC 5267 4.3.1: past the limit the result was still sent, but no updates follow."""
        if len(view.updates) >= MAX_SEARCH_UPDATES:
            self._untagged(f'NO [NOUPDATE "{update.tag}"] Too many search updates')
        else:
            view.updates[update.tag] = update

    def _cancelupdate(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, CancelUpdateArgs)
        view = self._selected()
        unknown = [tag for tag in args.tags if tag not in view.updates]
        if unknown:
            return "BAD", f"Unknown search update tag {unknown[0]}"
        for tag in args.tags:
            del view.updates[tag]
        return "OK", "CANCELUPDATE completed"

    def _matching(self, view: View, key: SearchKey) -> list[int]:
        context = SearchContext(len(view.messages), view.largest_uid(), view.recent, view.saved)
        return search(key, view.messages, context)

    def _search_result(self, command: Command, view: View, numbers: list[int], returns: tuple[str, ...] | None,
                       partial: tuple[int, int] | None, name: str = "SEARCH", modseq: bool = False) -> None:
        """* SEARCH / * SORT, or with RETURN an ESEARCH (RFC 4731, RFC 5267) and the SAVE of
        RFC 5182. `numbers` are sequence numbers in the order to report (SORT's order)."""
        def highest(chosen: list[int]) -> int:
            return max(view.messages[n - 1].modseq for n in chosen)

        if returns is None:
            # RFC 7162 3.1.5: a SEARCH with MODSEQ ends "(MODSEQ <highest of those found>)".
            tail = b" (MODSEQ %d)" % highest(numbers) if modseq and numbers else b""
            if command.uid:
                numbers = [view.messages[n - 1].uid for n in numbers]
            self._send(b"* %b" % name.encode() + b"".join(b" %d" % n for n in numbers) + tail + b"\r\n")
            return
        options = set(returns) or {"ALL"}  # RFC 4731 3.1: RETURN () means RETURN (ALL)
        options -= {"UPDATE", "CONTEXT"}  # CONTEXT is a hint; UPDATE is kept by the caller
        if "SAVE" in options:
            kept = numbers
            if numbers and not options & {"ALL", "COUNT"} and options & {"MIN", "MAX"}:
                # RFC 5182 2.4: with only MIN and/or MAX, only those messages are saved.
                kept = ([numbers[0]] if "MIN" in options else []) + ([numbers[-1]] if "MAX" in options else [])
            view.saved = {view.messages[n - 1].uid for n in kept}
            options.discard("SAVE")
            if not options and "UPDATE" not in returns:
                return  # RFC 5182 2.1: SAVE alone sends no ESEARCH
        values = [view.messages[n - 1].uid for n in numbers] if command.uid else numbers
        line = _esearch(command.tag, command.uid, options, values, partial)
        if modseq and numbers:
            # RFC 7162 3.2.5 (as Dovecot): the highest MODSEQ of the messages returned; with
            # only MIN and/or MAX, of those.
            returned = numbers
            if not options & {"ALL", "COUNT", "PARTIAL"}:
                returned = ([numbers[0]] if "MIN" in options else []) + ([numbers[-1]] if "MAX" in options else [])
            if returned:
                line = line[:-2] + b" MODSEQ %d\r\n" % highest(returned)
        self._send(line)

    def _sort(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, SortArgs)
        view = self._selected()
        if args.charset not in ("UTF-8", "US-ASCII"):
            return "NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"
        returns = args.returns
        if returns is not None and "UPDATE" in returns and command.tag in view.updates:
            return "BAD", "Duplicate search update tag"
        matched = [(n, view.messages[n - 1]) for n in self._matching(view, args.key)]
        ordered = [number for number, _ in sort(args.criteria, matched)]
        self._search_result(command, view, ordered, returns, args.partial, "SORT")
        if returns is not None and "UPDATE" in returns:
            # CONTEXT=SORT (RFC 5267 4.3): kept like a SEARCH's, with its order.
            order = [view.messages[n - 1].uid for n in ordered]
            self._keep_update(view, _SearchUpdate(command.tag, args.key, command.uid, set(order), args.criteria, order))
        return "OK", "SORT completed"

    def _thread(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, ThreadArgs)
        view = self._selected()
        if args.charset not in ("UTF-8", "US-ASCII"):
            return "NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"
        matched = [(n, view.messages[n - 1]) for n in self._matching(view, args.key)]
        if command.uid:
            matched = [(message.uid, message) for _, message in matched]
        threads = thread(args.algorithm, matched)
        self._send(b"* THREAD " + threads + b"\r\n" if threads else b"* THREAD\r\n")
        return "OK", "THREAD completed"

    def _fetch(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, FetchArgs)
        view = self._selected()
        targets = self._targets(args.sequence, command.uid)
        if targets is None:
            return "BAD", "Invalid message sequence number"
        items = list(args.items)
        if command.uid and not any(item.name == "UID" for item in items):
            items.insert(0, FetchItem("UID"))  # RFC 3501 6.4.8
        if args.vanished and not self.qresync:
            return "BAD", "VANISHED needs ENABLE QRESYNC"  # RFC 7162 3.2.6
        if args.changedsince is not None or any(item.name == "MODSEQ" for item in items):
            self._enable_condstore()
        if args.vanished and args.changedsince is not None:
            # RFC 7162 3.2.6: the UIDs of the set expunged since, before the FETCH responses; "*"
            # reaches the last UID ever given, expunged or not.
            saved = view.saved
            requested = saved.__contains__ if args.sequence.saved else _within(
                args.sequence.resolve(view.mailbox.uidnext - 1))
            self._vanished_earlier(view, args.changedsince, requested)
        if args.changedsince is not None:
            # RFC 7162 3.1.4.1: only messages changed since, and with their MODSEQ.
            targets = [(n, m) for n, m in targets if m.modseq > args.changedsince]
            if not any(item.name == "MODSEQ" for item in items):
                items.append(FetchItem("MODSEQ"))
        marks_seen = not view.readonly and any(_marks_seen(item) for item in items)
        reports_flags = any(item.name == "FLAGS" for item in items)
        ghosts = self._ghosts(view)
        # Responses go out as a flat list of pieces joined once: a message's bytes are copied a
        # single time, however big (the FETCH BODY[] throughput target).
        labels = {item: _fetch_label(item) for item in items}
        binary_parts = [item.section.part for item in items if item.name.startswith("BINARY") and item.section]
        if binary_parts and any(
            mime.parsed(message).binary(part) is None for _, message in targets for part in binary_parts
        ):
            # RFC 3516 4.3: nothing is fetched when a part's encoding cannot be undone.
            return "NO", "[UNKNOWN-CTE] Unknown Content-Transfer-Encoding"
        chunks = self._pending.chunks
        for number, message in targets:
            seen_now = marks_seen and "\\Seen" not in message.flags and message.uid not in ghosts
            if seen_now:
                # RFC 3501 6.4.5: BODY[...] sets \Seen; the changed flags SHOULD be returned.
                view.mailbox.set_flags(message, message.flags | {"\\Seen"})
            if reports_flags or seen_now:
                # A keyword another session set must be announced before this line shows it.
                self._announce_keywords(view, message.flags)
            chunks.append(b"* %d FETCH (" % number)
            for index, item in enumerate(items):
                if index:
                    chunks.append(b" ")
                self._fetch_item(view, item, labels[item], message, chunks)
            if seen_now and not reports_flags:
                chunks += (b" ", self._flags_item(view, message))
            if seen_now and self.condstore:
                # RFC 7162 3.2.4: a flag change by FETCH carries UID and MODSEQ too.
                if not any(item.name == "UID" for item in items):
                    chunks.append(b" UID %d" % message.uid)
                if not any(item.name == "MODSEQ" for item in items):
                    chunks.append(self._modseq_item(message))
            chunks.append(b")\r\n")
        return "OK", "FETCH completed"

    def _fetch_item(self, view: View, item: FetchItem, label: bytes, message: Message, out: list[bytes]) -> None:
        """Append one fetch-att's response (msg-att, RFC 3501 section 7.4.2) to `out`."""
        section = item.section
        data = message.data
        if section is not None:
            if item.name == "BODY":
                content = mime.parsed(message).section(section.part, section.kind, section.fields)
            else:
                decoded = mime.parsed(message).binary(section.part)
                assert decoded is not None  # _fetch checked for UNKNOWN-CTE first
                if item.name == "BINARY.SIZE":
                    out.append(b"%b %d" % (label, len(decoded)))
                    return
                content = decoded
            if item.partial is not None:
                origin, count = item.partial
                content = content[origin : origin + count]
            # RFC 3516 4.2: literal8 when the octets include NUL.
            marker = b"~" if item.name == "BINARY" and b"\0" in content else b""
            out += (b"%b %b{%d}\r\n" % (label, marker, len(content)), content)
            return
        name = item.name
        if name == "UID":
            out.append(b"UID %d" % message.uid)
        elif name == "MODSEQ":
            out.append(b"MODSEQ (%d)" % message.modseq)
        elif name == "FLAGS":
            out.append(self._flags_item(view, message))
        elif name == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % len(data))
        elif name == "INTERNALDATE":
            out.append(b"INTERNALDATE " + _internal_date(message.internal_date).encode())
        elif name == "ENVELOPE":
            out += (b"ENVELOPE ", mime.parsed(message).envelope())
        elif name in ("BODY", "BODYSTRUCTURE"):
            out += (label, b" ", mime.parsed(message).bodystructure(name == "BODYSTRUCTURE"))
        else:
            if name == "RFC822":
                content = data
            elif name == "RFC822.HEADER":
                content = mime.parsed(message).section((), "HEADER")
            else:  # RFC822.TEXT
                content = mime.parsed(message).section((), "TEXT")
            out += (b"%b {%d}\r\n" % (label, len(content)), content)

    def _flags_item(self, view: View, message: Message) -> bytes:
        view.flags[message.uid] = frozenset(message.flags)
        return b"FLAGS " + _flag_list(message.flags, message.uid in view.recent).encode()

    def _store(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, StoreArgs)
        view = self._selected()
        targets = self._targets(args.sequence, command.uid)
        if targets is None:
            return "BAD", "Invalid message sequence number"
        if view.readonly:
            return "NO", "[CANNOT] Mailbox is read-only"
        flags = set(self._canonical_flags(args.flags))
        self._announce_keywords(view, flags)
        modified: list[int] = []
        if args.unchangedsince is not None:
            self._enable_condstore()
        # RFC 2180 4.2.1, as Dovecot: a message another session expunged (EXPUNGE not yet sent
        # here) is skipped and the rest updated; a "mark read" on a range must not fail for it.
        ghosts = self._ghosts(view)
        for number, message in targets:
            if message.uid in ghosts:
                continue
            if args.unchangedsince is not None and message.modseq > args.unchangedsince:
                # RFC 7162 3.1.3: changed since the client looked: left alone, and named.
                modified.append(message.uid if command.uid else number)
                continue
            if args.mode == "+":
                new = message.flags | flags
            elif args.mode == "-":
                new = message.flags - flags
            else:
                new = frozenset(flags)
            self._announce_keywords(view, new)  # the message may carry another session's keyword
            view.mailbox.set_flags(message, new)
            if args.silent:
                view.flags[message.uid] = frozenset(message.flags)
                continue
            # RFC 3501 6.4.6: the new flags come back as if fetched (with the UID for UID STORE,
            # and always once CONDSTORE is on, RFC 7162 3.2.4).
            uid = b"UID %d " % message.uid if command.uid or self.condstore else b""
            self._send(b"* %d FETCH (%b%b%b)\r\n" % (number, uid, self._flags_item(view, message), self._modseq_item(message)))
        if modified:
            return "OK", f"[MODIFIED {_uid_set(modified)}] Conditional STORE failed"
        return "OK", "STORE completed"

    def _modseq_item(self, message: Message) -> bytes:
        """RFC 7162 3.1.4: with CONDSTORE on, flag updates carry the message's MODSEQ."""
        return b" MODSEQ (%d)" % message.modseq if self.condstore else b""

    def _canonical_flags(self, flags: Iterable[str]) -> tuple[str, ...]:
        """Keywords take the spelling already used in the mailbox ($Junk and $junk are one)."""
        view = self.view
        known = {keyword.casefold(): keyword for keyword in view.keywords} if view is not None else {}
        return tuple(dict.fromkeys(flag if flag.startswith("\\") else known.get(flag.casefold(), flag) for flag in flags))

    def _announce_keywords(self, view: View, flags: Iterable[str]) -> None:
        """RFC 3501 7.2.6: a new keyword means a new FLAGS (and PERMANENTFLAGS) response, before
        any FETCH shows it. Called per message on the FETCH path, so the usual case (nothing
        new) is settled without folding case."""
        new = [flag for flag in flags if not flag.startswith("\\") and flag not in view.keywords]
        if not new:
            return
        known = {keyword.casefold() for keyword in view.keywords}
        new = [flag for flag in new if flag.casefold() not in known]
        if not new:
            return
        view.keywords.extend(dict.fromkeys(new))
        self._untagged(f"FLAGS ({self._flags_text(view)})")
        self._permanent_flags(view)

    def _copy(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, CopyArgs)
        view = self._selected()
        move = command.name == "MOVE"
        targets = self._targets(args.sequence, command.uid)
        if targets is None:
            return "BAD", "Invalid message sequence number"
        if move and view.readonly:
            return "NO", "[CANNOT] Mailbox is read-only"
        target = self._account().mailbox(args.mailbox)
        if target is None:
            return "NO", f"[TRYCREATE] Mailbox doesn't exist: {args.mailbox}"
        ghosts = self._ghosts(view)
        if any(message.uid in ghosts for _, message in targets):
            return "NO", "[EXPUNGEISSUED] Some of the requested messages no longer exist"
        if not targets:
            return "OK", "No messages found"
        source_uids = [message.uid for _, message in targets]
        copies = [target.append(m.data, m.flags, m.internal_date) for _, m in targets]
        # RFC 4315 section 3: COPYUID names the source and destination UIDs, pairwise.
        code = f"[COPYUID {target.uidvalidity} {_uid_set(source_uids)} {_uid_set([c.uid for c in copies])}]"
        if not move:
            return "OK", f"{code} COPY completed"
        # RFC 6851 section 4.3: COPYUID goes in an untagged OK before the EXPUNGE responses.
        self._untagged(f"OK {code} Moved UIDs")
        view.mailbox.expunge(source_uids)
        return "OK", "MOVE completed"

    # --- Reporting changes ------------------------------------------------------------------

    def _sync(self, allow_expunge: bool) -> None:
        """Tell the client what changed in the store since it last heard (RFC 3501 5.2, 7.4.1)."""
        view = self.view
        if view is None or not view.dirty:
            return
        current = view.mailbox.messages
        count = len(view.messages)
        held_back = False
        unchanged = count == 0 or (len(current) >= count and current[count - 1] is view.messages[-1])
        if not unchanged:
            if allow_expunge:
                present = {m.uid for m in current}
                if view.updates:
                    self._report_update_removals(view, present)
                self._report_expunges(view, present)
            else:
                held_back = True
        self._report_new(view, current)
        self._report_flags(view)
        if view.updates:
            self._report_updates(view)
        view.dirty = held_back

    def _report_update_removals(self, view: View, present: set[int]) -> None:
        """RFC 5267 4.3: an expunged message leaves each result (REMOVEFROM) while its sequence
        number still means it, before the EXPUNGE."""
        numbers = {m.uid: n for n, m in enumerate(view.messages, 1)}
        for update in view.updates.values():
            gone = update.uids - present
            if not gone:
                continue
            update.uids -= gone
            if update.criteria is not None:
                removed = _sort_removals(update, update.uids, numbers)
                self._send(_sort_update_line(update, removed, []))
            else:
                self._send(_update_line(update, sorted(gone if update.uid else (numbers[u] for u in gone)), []))

    def _report_updates(self, view: View) -> None:
        """RFC 5267 4.3: ADDTO and REMOVEFROM for each SEARCH RETURN (UPDATE) whose result changed.
        Position 0 throughout, as Dovecot: a SEARCH result has no order to place into."""
        ghosts = self._ghosts(view)
        numbers = {m.uid: n for n, m in enumerate(view.messages, 1)}
        for update in view.updates.values():
            now = {view.messages[n - 1].uid for n in self._matching(view, update.key)} - ghosts
            removed, added = update.uids - now - ghosts, now - update.uids
            update.uids = (update.uids & ghosts) | now
            if update.criteria is not None:
                if removed or added:
                    self._report_sort_update(view, update, numbers)
                continue
            if removed or added:
                def ids(uids: set[int]) -> list[int]:
                    return sorted(uids if update.uid else (numbers[u] for u in uids))

                self._send(_update_line(update, ids(removed), ids(added)))

    def _report_sort_update(self, view: View, update: _SearchUpdate, numbers: dict[int, int]) -> None:
        """CONTEXT=SORT: a SORT's criteria read only what never changes in a message, so what
        stays in the result keeps its order; removals are counted on the result as it shrinks,
        additions placed at their final positions, in ascending order (RFC 5267 4.3.3, 4.3.4)."""
        assert update.criteria is not None
        removed = _sort_removals(update, update.uids, numbers)
        members = [(numbers[uid], view.messages[numbers[uid] - 1]) for uid in sorted(update.uids)]
        known = set(update.order)
        update.order = [message.uid for _, message in sort(update.criteria, members)]
        added = [(position, _update_id(update, uid, numbers))
                 for position, uid in enumerate(update.order, 1) if uid not in known]
        self._send(_sort_update_line(update, removed, added))

    def _report_expunges(self, view: View, present: set[int]) -> None:
        kept: list[Message] = []
        vanished: list[int] = []
        for message in view.messages:
            if message.uid in present:
                kept.append(message)
                continue
            view.flags.pop(message.uid, None)
            view.recent.discard(message.uid)
            if self.qresync:
                vanished.append(message.uid)  # RFC 7162 3.2.10: one VANISHED, no EXPUNGE
                continue
            # Each EXPUNGE renumbers the rest at once, so the next one counts from `kept`.
            self._send(b"* %d EXPUNGE\r\n" % (len(kept) + 1))
        if vanished:
            self._send(b"* VANISHED %b\r\n" % _uid_set(vanished).encode())
        view.messages = kept

    def _report_new(self, view: View, current: list[Message]) -> None:
        start = len(current)
        while start and current[start - 1].uid > view.uid_high:
            start -= 1
        new = current[start:]
        if not new:
            return
        self._announce_keywords(view, {flag for m in new for flag in m.flags})
        view.messages.extend(new)
        for message in new:
            view.flags[message.uid] = frozenset(message.flags)
        view.uid_high = new[-1].uid
        if view.readonly:
            view.recent |= {m.uid for m in new} & view.mailbox.recent_uids
        else:
            view.recent |= view.mailbox.claim_recent()  # the same set as _claimed_recent holds
        self._untagged(f"{len(view.messages)} EXISTS")
        self._untagged(f"{len(view.recent)} RECENT")

    def _report_flags(self, view: View) -> None:
        if view.flags_version == view.mailbox.flag_changes:
            return  # no flag changed anywhere: no need to compare every message's
        view.flags_version = view.mailbox.flag_changes
        for number, message in enumerate(view.messages, 1):
            if view.flags.get(message.uid) != frozenset(message.flags):
                self._announce_keywords(view, message.flags)
                # RFC 7162 3.2.4: once CONDSTORE is on, flag updates name the UID.
                uid = b"UID %d " % message.uid if self.condstore else b""
                self._send(b"* %d FETCH (%b%b%b)\r\n" % (
                    number, uid, self._flags_item(view, message), self._modseq_item(message)))


def _chaos_line(reply: str, tag: str) -> bytes:
    """A configured chaos reply as a response line. A text that starts with a condition gets its
    prefix: the command's tag for OK/NO/BAD, "*" for BYE/PREAUTH (always untagged, RFC 3501 7.1);
    one that starts with a tag, "*" or "+" goes out as written."""
    condition = reply.split(" ", 1)[0].upper()
    if condition in _TAGGED_CONDITIONS:
        reply = f"{tag} {reply}"
    elif condition in _UNTAGGED_CONDITIONS:
        reply = f"* {reply}"
    return f"{reply}\r\n".encode("utf-8", "surrogateescape")


def _lsub_entries(
    mailboxes: Mapping[str, MailboxInterface], subscriptions: set[str], matches: Callable[[str], bool]
) -> list[tuple[str, str]]:
    """LSUB results: the matching subscriptions, also of mailboxes deleted since (RFC 3501
    6.3.9). When "%" hides a subscribed name, its unsubscribed parent that matches is listed
    with \\Noselect."""
    entries: dict[str, str] = {}
    for name in sorted(subscriptions):
        if matches(name):
            entries[name] = ""
            continue
        parts = name.split(HIERARCHY_DELIMITER)
        for depth in range(1, len(parts)):
            parent = HIERARCHY_DELIMITER.join(parts[:depth])
            if parent not in entries and parent not in subscriptions and matches(parent):
                entries[parent] = "\\Noselect"
    return sorted(entries.items(), key=lambda item: (item[0] != INBOX, item[0]))


# Output goes to net in pieces of about this size rather than one join: memory stays flat for a
# FETCH of many big messages, and per-chunk consumers (the transcript recorder) stay linear.
OUTPUT_PIECE = 64 * 1024


def _batched(chunks: list[bytes]) -> Iterator[bytes]:
    batch: list[bytes] = []
    size = 0
    for chunk in chunks:
        batch.append(chunk)
        size += len(chunk)
        if size >= OUTPUT_PIECE:
            yield b"".join(batch) if len(batch) > 1 else chunk
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def _uid(message: Message) -> int:
    return message.uid


def _fetch_label(item: FetchItem) -> bytes:
    """The name a fetch-att has in the response: BODY.PEEK[...] answers as BODY[...]<origin>."""
    if item.section is None:
        return item.name.encode()
    label = f"{'BODY' if item.name == 'BODY' else item.name}[{item.section.label()}]"
    if item.partial is not None:
        label += f"<{item.partial[0]}>"
    return label.encode()


def _marks_seen(item: FetchItem) -> bool:
    return (item.section is not None and not item.peek) or item.name in ("RFC822", "RFC822.TEXT")


def _flag_list(flags: Iterable[str], recent: bool) -> str:
    listed = [*flags, "\\Recent"] if recent else flags
    ordered = sorted(listed, key=lambda flag: (_FLAG_ORDER.get(flag, len(_FLAG_ORDER)), flag))
    return "(" + " ".join(ordered) + ")"


def _internal_date(when: datetime) -> str:
    """date-time (RFC 3501 section 9): "dd-Mon-yyyy hh:mm:ss +zzzz", day padded with a space."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (
        f'"{when.day:2d}-{_MONTHS[when.month - 1]}-{when.year:04d} '
        f'{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"'
    )


def _update_line(update: _SearchUpdate, removed: list[int], added: list[int]) -> bytes:
    parts = [f'* ESEARCH (TAG "{update.tag}")'] + (["UID"] if update.uid else [])
    if removed:
        parts.append(f"REMOVEFROM (0 {_uid_set(removed)})")
    if added:
        parts.append(f"ADDTO (0 {_uid_set(added)})")
    return (" ".join(parts) + "\r\n").encode()


def _within(ranges: Iterable[tuple[int, int]]) -> Callable[[int], bool]:
    """Whether a number falls in one of `ranges` (low, high), by bisection: a client's set may
    hold thousands of ranges, asked about for every message or expunged UID."""
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    starts = [low for low, _ in merged]

    def contains(number: int) -> bool:
        index = bisect.bisect_right(starts, number) - 1
        return index >= 0 and number <= merged[index][1]

    return contains


def _update_id(update: _SearchUpdate, uid: int, numbers: dict[int, int]) -> int:
    return uid if update.uid else numbers[uid]


def _sort_removals(update: _SearchUpdate, kept: set[int], numbers: dict[int, int]) -> list[tuple[int, int]]:
    """(position, id) for each message of a SORT update's order not in `kept`, counted on the
    result as it shrinks (RFC 5267 4.3.4); the order keeps the rest."""
    removed: list[tuple[int, int]] = []
    order: list[int] = []
    for uid in update.order:
        if uid in kept:
            order.append(uid)
        else:
            removed.append((len(order) + 1, _update_id(update, uid, numbers)))
    update.order = order
    return removed


def _position_pairs(updates: list[tuple[int, int]], removal: bool) -> str:
    """context-position SP sequence-set pairs (RFC 5267 4.3.2). A set stands for its members in
    ascending order at consecutive positions from its own, so a run joins a set only while its
    ids ascend and its positions continue (for a removal: stay, as the result shrinks)."""
    groups: list[tuple[int, list[int]]] = []
    for position, value in updates:
        if groups:
            start, values = groups[-1]
            expected = start if removal else start + len(values)
            if position == expected and value > values[-1]:
                values.append(value)
                continue
        groups.append((position, [value]))
    return " ".join(f"{position} {_uid_set(values)}" for position, values in groups)


def _sort_update_line(update: _SearchUpdate, removed: list[tuple[int, int]], added: list[tuple[int, int]]) -> bytes:
    parts = [f'* ESEARCH (TAG "{update.tag}")'] + (["UID"] if update.uid else [])
    if removed:
        parts.append(f"REMOVEFROM ({_position_pairs(removed, True)})")
    if added:
        parts.append(f"ADDTO ({_position_pairs(added, False)})")
    return (" ".join(parts) + "\r\n").encode()


def _uses_modseq(key: SearchKey) -> bool:
    """Whether a search program has a MODSEQ key anywhere (iteratively: nesting is bounded
    by the parser, but a long AND of keys is not)."""
    stack = [key]
    while stack:
        current = stack.pop()
        if isinstance(current, ModSeqKey):
            return True
        if isinstance(current, NotKey):
            stack.append(current.key)
        elif isinstance(current, OrKey):
            stack += (current.left, current.right)
        elif isinstance(current, AndKey):
            stack.extend(current.keys)
    return False


def _esearch(tag: str, uid: bool, options: set[str], values: list[int], partial: tuple[int, int] | None) -> bytes:
    """* ESEARCH (RFC 4731 3.1): the options asked for, in Dovecot's order; MIN, MAX and ALL
    only when something matched, COUNT always. `values` are in SEARCH's ascending order or in
    SORT's: then MIN and MAX are the first and last sorted (RFC 5267 3.2) and ALL keeps the order."""
    parts = [f'* ESEARCH (TAG "{tag}")']
    if uid:
        parts.append("UID")
    if values:
        if "MIN" in options:
            parts.append(f"MIN {values[0]}")
        if "MAX" in options:
            parts.append(f"MAX {values[-1]}")
        if "ALL" in options:
            parts.append(f"ALL {_uid_set(values)}")
    if partial is not None:
        # RFC 5267 4.4: the low:high-th results (1-based), NIL when none falls in the range.
        low, high = partial
        chosen = values[low - 1 : high]
        parts.append(f"PARTIAL ({low}:{high} {_uid_set(chosen) if chosen else 'NIL'})")
    if "COUNT" in options:
        parts.append(f"COUNT {len(values)}")
    return (" ".join(parts) + "\r\n").encode()


def _uid_set(uids: list[int]) -> str:
    """A compact uid-set: 1:3,5 (RFC 4315 section 4). The order of `uids` is kept, ascending
    runs collapsed (ESORT's ALL is in sort order, RFC 5267 3.2)."""
    spans: list[list[int]] = []
    for uid in uids:
        if spans and uid == spans[-1][1] + 1:
            spans[-1][1] = uid
        else:
            spans.append([uid, uid])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in spans)


def _astring(name: str, utf8: bool) -> str:
    """A mailbox name as an atom or quoted string: in modified UTF-7, or with UTF8=ACCEPT in
    UTF-8 (RFC 9755 3); a literal, octet for octet, for a name that neither can spell (octets
    that were not UTF-8)."""
    if not utf8:
        encoded = mutf7.encode(name)
        if encoded is not None and _SAFE_ASTRING.fullmatch(encoded):
            return quote_astring(encoded)
    elif _SAFE_UTF8_ASTRING.fullmatch(name):
        # UTF-8 only ever in a quoted string, never in an atom.
        return quote_astring(name) if name.isascii() else '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raw = name.encode("utf-8", "surrogateescape")
    return f"{{{len(raw)}}}\r\n" + raw.decode("utf-8", "surrogateescape")


class ListPattern:
    """LIST wildcards (RFC 3501 6.3.8): "*" matches anything, "%" anything but the delimiter.

    Never by backtracking: a regex of many ".*" takes exponential time on a near-miss, and this
    runs on the event loop. The pattern is an NFA whose set of live positions is one integer's
    bits, advanced once per character of the name with a few shifts and masks: time linear in
    the name, times the pattern's length in machine words.
    """

    def __init__(self, pattern: str) -> None:
        tokens: list[str] = []
        for char in pattern:
            if char in "*%" and tokens and tokens[-1] in "*%":
                # "%*" and "*%" are "*", "%%" is "%": then a wildcard is never followed by one,
                # and one shift is the whole epsilon closure.
                tokens[-1] = "*" if "*" in (char, tokens[-1]) else "%"
            else:
                tokens.append(char)
        self.star = self.percent = 0
        self.literals: dict[str, int] = {}
        self.literals_folded: dict[str, int] = {}
        for position, token in enumerate(tokens):
            bit = 1 << position
            if token == "*":
                self.star |= bit
            elif token == "%":
                self.percent |= bit
            else:
                self.literals[token] = self.literals.get(token, 0) | bit
                folded = token.upper()
                self.literals_folded[folded] = self.literals_folded.get(folded, 0) | bit
        self.accept = 1 << len(tokens)
        self.wild = self.star | self.percent
        self.minimum = len(tokens) - bin(self.wild).count("1")  # every literal takes a character

    def matches(self, name: str, *, fold_case: bool = False) -> bool:
        if len(name) < self.minimum:
            return False
        literals = self.literals_folded if fold_case else self.literals
        if fold_case:
            name = name.upper()
        star, percent, wild = self.star, self.percent, self.wild
        live = 1 | ((1 & wild) << 1)
        for char in name:
            live = ((live & literals.get(char, 0)) << 1) | (live & star) | (
                0 if char == HIERARCHY_DELIMITER else live & percent
            )
            if not live:
                return False
            live |= (live & wild) << 1
        return bool(live & self.accept)


def _header_block(data: bytes) -> bytes:
    """A message's header fields: up to the first empty line (all of it if there is none)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    return data if end < 0 else data[:end]


def _valid_new_name(name: str) -> bool:
    if not name or name.startswith(HIERARCHY_DELIMITER) or any(c in name for c in "%*"):
        return False
    if _NOT_IN_NAMES.search(name):
        return False
    return all(name.split(HIERARCHY_DELIMITER))


ANY = frozenset({State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED})
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})
Handler = Callable[[ImapSession, Command], Reply]
# The state table: each command's handler and the states it is valid in (RFC 3501 section 6).
COMMANDS: dict[str, tuple[Handler, frozenset[State]]] = {
    "CAPABILITY": (ImapSession._capability, ANY),
    "NOOP": (ImapSession._noop, ANY),
    "LOGOUT": (ImapSession._logout, ANY),
    "ID": (ImapSession._id, ANY),
    "STARTTLS": (ImapSession._starttls, ANY),
    "LOGIN": (ImapSession._login, NOT_AUTHENTICATED),
    "AUTHENTICATE": (ImapSession._authenticate, NOT_AUTHENTICATED),
    "SELECT": (ImapSession._select, AUTHENTICATED),
    "EXAMINE": (ImapSession._select, AUTHENTICATED),
    "CREATE": (ImapSession._create, AUTHENTICATED),
    "DELETE": (ImapSession._delete, AUTHENTICATED),
    "RENAME": (ImapSession._rename, AUTHENTICATED),
    "SUBSCRIBE": (ImapSession._subscribe, AUTHENTICATED),
    "UNSUBSCRIBE": (ImapSession._subscribe, AUTHENTICATED),
    "LIST": (ImapSession._list, AUTHENTICATED),
    "LSUB": (ImapSession._list, AUTHENTICATED),
    "STATUS": (ImapSession._status, AUTHENTICATED),
    "APPEND": (ImapSession._append, AUTHENTICATED),
    "NAMESPACE": (ImapSession._namespace, AUTHENTICATED),
    "ENABLE": (ImapSession._enable, AUTHENTICATED),
    "IDLE": (ImapSession._idle, AUTHENTICATED),
    "CHECK": (ImapSession._check, SELECTED),
    "CLOSE": (ImapSession._close, SELECTED),
    "UNSELECT": (ImapSession._unselect_command, SELECTED),
    "EXPUNGE": (ImapSession._expunge, SELECTED),
    "SEARCH": (ImapSession._search, SELECTED),
    "SORT": (ImapSession._sort, SELECTED),
    "THREAD": (ImapSession._thread, SELECTED),
    "CANCELUPDATE": (ImapSession._cancelupdate, SELECTED),
    "FETCH": (ImapSession._fetch, SELECTED),
    "STORE": (ImapSession._store, SELECTED),
    "COPY": (ImapSession._copy, SELECTED),
    "MOVE": (ImapSession._copy, SELECTED),
}
