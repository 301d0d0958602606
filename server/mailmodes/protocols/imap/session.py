"""The IMAP session (RFC 3501; RFC 9051 once the client sends ENABLE IMAP4rev2) as a sans-I/O
state machine: bytes in, bytes out.

connection.py drives it through the `LineSession` protocol (events.py). The parser (parser.py) cuts and parses
commands and declares each one (`parser.COMMANDS`: grammar, handler, states, UID form); this
module holds the command logic and the store calls, and the selected mailbox as this client
knows it, with what it is told of other sessions' changes, is a `view.View`. TLS decisions come
only from `connection.security`; this module chooses words.
A listener's misbehaviour scenario (misbehaviour.py, KNOWN-BAD.md section 2) is asked at a few
fixed points: the greeting, the capability list, STARTTLS, LOGIN, and each command (chaos).
"""

from __future__ import annotations

import base64
import binascii
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
    COMMANDS,
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
    Rename,
    SearchArgs,
    SearchKey,
    SortArgs,
    Spans,
    StatusArgs,
    StoreArgs,
    ThreadArgs,
    parse_command,
    parse_section,
    quote_astring,
    split_head,
)
from mailmodes.protocols.sasl import CHALLENGE_RESPONSE, Challenge, Exchange, exchange, sasl_context
from mailmodes.protocols.imap.sort import sort
from mailmodes.protocols.imap.states import State
from mailmodes.protocols.imap.thread import thread
from mailmodes.protocols.imap.view import Modes, SearchUpdate, View, uid_set, within
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

# Advertised once authentication is possible (and after it), in this order. IMAP4rev2 (RFC 9051)
# first, next to IMAP4rev1: a client switches to it with ENABLE IMAP4rev2.
EXTENSIONS = (
    "IMAP4rev2", "LITERAL+", "SASL-IR", "IDLE", "UIDPLUS", "UNSELECT", "MOVE", "NAMESPACE", "ID", "ENABLE",
    "SPECIAL-USE",
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


Reply = tuple[str, str] | None  # (status, text) for the tagged response; None: sent already


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
        self.modes = Modes()  # CONDSTORE, QRESYNC, UTF8=ACCEPT: what ENABLE and friends switched on

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
        return self._guarded(lambda: self._report_changes(allow_expunge=True))

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
                    command = parse_command(event.data, utf8=self.modes.utf8_names)
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
            command = parse_command(event.data, utf8=self.modes.utf8_names)
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
        handler, states, holds_expunges = _DISPATCH[command.name]
        if self.state not in states:
            self._bad(command.tag, f"{command.name} is not valid in the {self.state.value} state")
            return
        reply = handler(self, command)
        if reply is None:
            return
        status, text = reply
        if status != "BAD" and self.view is not None:
            self.view.sync(allow_expunge=command.uid or not holds_expunges)
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
            command = parse_command(request.data, partial=True, utf8=self.modes.utf8_names)
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
            name = parsed.name
        elif isinstance(parsed, Incomplete):
            verb = name
        else:
            known = tag is not None and (name in COMMANDS or name == "UID")
            cut = min(len(data), len(tag) + len(name) + 2) if tag is not None and known else 0
            spans = [span for span in spans if span[1] <= cut] + [(cut, len(data), UNPARSED)]
            verb = name if known else ""
        declaration = COMMANDS.get(name) if verb else None
        mail = declaration is not None and declaration.mail
        self.notes.note(Heard(data, verb if ended else None, tuple(sorted(spans)), start, mail=mail and ended))

    # --- Authenticated ----------------------------------------------------------------------

    def _account(self) -> AccountInterface:
        assert self.account is not None
        return self.account

    def _select(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, MailboxArg)
        if args.qresync is not None and not self.modes.qresync:
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
        if self.modes.rev2:
            recent = set()  # RFC 9051 Appendix E: no \Recent; left for IMAP4rev1 sessions to claim
        elif readonly:
            recent = claimed | mailbox.recent_uids
        else:
            claimed |= mailbox.claim_recent()
            recent = claimed  # one set: what this view reports and what the session keeps
        messages = list(mailbox.messages)
        recent &= {m.uid for m in messages}
        keywords = sorted({flag for m in messages for flag in m.flags if not flag.startswith("\\")})
        view = View(
            mailbox, readonly, messages, {m.uid: frozenset(m.flags) for m in messages}, recent, keywords,
            uid_high=messages[-1].uid if messages else 0, send=self._send, modes=self.modes,
            flags_version=mailbox.flag_changes,
        )
        view.unwatch = mailbox.watch(self._mailbox_changed)
        self.view, self.state = view, State.SELECTED
        self._untagged(f"FLAGS ({view.flags_text()})")
        self._untagged(f"{len(messages)} EXISTS")
        if not self.modes.rev2:  # RFC 9051 6.3.2: no RECENT and no UNSEEN code
            self._untagged(f"{len(recent)} RECENT")
            first_unseen = next((n for n, m in enumerate(messages, 1) if "\\Seen" not in m.flags), None)
            if first_unseen is not None:
                self._untagged(f"OK [UNSEEN {first_unseen}] First unseen")
        view.permanent_flags()
        self._untagged(f"OK [UIDVALIDITY {mailbox.uidvalidity}] UIDs valid")
        self._untagged(f"OK [UIDNEXT {mailbox.uidnext}] Predicted next UID")
        if args.condstore or args.qresync is not None:
            self.modes.condstore = True
        if self.modes.condstore:
            self._untagged(f"OK [HIGHESTMODSEQ {mailbox.highest_modseq}] Highest")
        if self.modes.rev2:
            # RFC 9051 6.3.2: the mailbox's LIST response, its attributes accurate.
            self._list_response(self._account(), mailbox.name, mailbox)
        if args.qresync is not None and args.qresync.uidvalidity == mailbox.uidvalidity:
            # RFC 7162 3.2.5.1: with another UIDVALIDITY the client's knowledge is void, and
            # the SELECT is an ordinary one.
            view.resync(args.qresync)
        return "OK", "[READ-ONLY] EXAMINE completed" if readonly else "[READ-WRITE] SELECT completed"

    def _report_changes(self, allow_expunge: bool) -> None:
        if self.view is not None:
            self.view.sync(allow_expunge)

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
                self._untagged(f'LIST (\\Noselect) "{HIERARCHY_DELIMITER}" {_astring(root, self.modes.utf8_names)}')
            return "OK", f"{command.name} completed"
        patterns = [ListPattern(args.reference + pattern) for pattern in (args.pattern, *args.more_patterns)]

        def matches(name: str) -> bool:
            return any(pattern.matches(name, fold_case=name == INBOX) for pattern in patterns)

        account = self._account()
        mailboxes = account.mailboxes
        if lsub:
            for name, noselect in _lsub_entries(mailboxes, account.subscriptions, matches):
                self._untagged(f'LSUB ({noselect}) "{HIERARCHY_DELIMITER}" {_astring(name, self.modes.utf8_names)}')
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
            extra = ' (CHILDINFO ("SUBSCRIBED"))' if name in childinfo else ""
            self._list_response(account, name, mailbox, subscribed=show_subscribed, extra=extra)
            if args.status_items and mailbox is not None:
                self._status_response(mailbox, args.status_items)  # LIST-STATUS (RFC 5819)
        return "OK", f"{command.name} completed"

    def _list_response(self, account: AccountInterface, name: str, mailbox: MailboxInterface | None, *,
                       subscribed: bool = False, extra: str = "") -> None:
        """One LIST response: the children attributes always (RFC 5258 4, part of IMAP4rev2),
        \\Subscribed when asked, the special use (RFC 6154)."""
        if mailbox is None:
            attributes = ["\\NonExistent"]
        else:
            prefix = name + HIERARCHY_DELIMITER
            children = any(other.startswith(prefix) for other in account.mailboxes)
            attributes = ["\\HasChildren" if children else "\\HasNoChildren"]
        if subscribed and name in account.subscriptions:
            attributes.append("\\Subscribed")
        if mailbox is not None and mailbox.special_use:
            attributes.append(mailbox.special_use)
        spelled = _astring(name, self.modes.utf8_names)
        self._untagged(f'LIST ({" ".join(attributes)}) "{HIERARCHY_DELIMITER}" {spelled}{extra}')

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
            # RFC 9051 6.3.11: the \\Deleted messages, and the octets of all (RFC 8438).
            "DELETED": sum(1 for m in mailbox.messages if "\\Deleted" in m.flags),
            "SIZE": sum(m.size for m in mailbox.messages),
        }
        items = " ".join(f"{item} {values[item]}" for item in wanted)
        self._untagged(f"STATUS {_astring(mailbox.name, self.modes.utf8_names)} ({items})")

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
        if not self.modes.utf8_names and any(not _header_block(data).isascii() for data in contents):
            # RFC 9755 4: 8-bit header fields only from a client that enabled UTF8=ACCEPT (or
            # IMAP4rev2, whose messages may have UTF-8 headers: RFC 9051 Appendix E).
            return "NO", "[CANNOT] 8-bit header fields need ENABLE UTF8=ACCEPT"
        # RFC 3502: all the messages or none; everything that can refuse one is checked above.
        uids = []
        for item, data in zip(args.messages, contents, strict=True):
            flags = self._canonical_flags(item.flags)
            if self.view is not None and self.view.mailbox is mailbox:
                self.view.announce_keywords(flags)
            uids.append(mailbox.append(data, flags, item.internal_date).uid)
        # RFC 4315 3: one UID, or the uid-set of a MULTIAPPEND.
        return "OK", f"[APPENDUID {mailbox.uidvalidity} {uid_set(uids)}] APPEND completed"

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
        enabled = [name for name, on in (("CONDSTORE", self.modes.condstore), ("QRESYNC", self.modes.qresync))
                   if name in asked and not on]
        self.modes.condstore = self.modes.condstore or bool(enabled)
        self.modes.qresync = self.modes.qresync or "QRESYNC" in enabled
        if "IMAP4REV2" in asked and not self.modes.rev2:
            enabled.append("IMAP4rev2")  # RFC 9051 6.3.1: switches this session to IMAP4rev2
            self.modes.rev2 = True
        if "UTF8=ACCEPT" in asked and not self.modes.utf8:
            enabled.append("UTF8=ACCEPT")
            self.modes.utf8 = True
        self._untagged(" ".join(["ENABLED", *enabled]))
        return "OK", "ENABLE completed"

    def _enable_condstore(self) -> None:
        """A CONDSTORE-enabling command (RFC 7162 3.1): the first one, with a mailbox selected,
        also tells its HIGHESTMODSEQ, which SELECT did not."""
        if self.modes.condstore:
            return
        self.modes.condstore = True
        if self.view is not None:
            self._untagged(f"OK [HIGHESTMODSEQ {self.view.mailbox.highest_modseq}] Highest")

    def _idle(self, command: Command) -> Reply:
        # RFC 2177: report what is pending now, then as it happens until DONE.
        self._report_changes(allow_expunge=True)
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
        self._report_changes(allow_expunge=True)
        self._tagged(self._continuation_tag, "OK", "IDLE terminated")

    # --- Selected ---------------------------------------------------------------------------

    def _selected(self) -> View:
        assert self.view is not None
        return self.view

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
        if returns is None and self.modes.rev2:
            returns = ()  # RFC 9051 6.4.4: no RETURN is RETURN (ALL), answered with ESEARCH
        if args.charset is not None and self.modes.utf8:
            # RFC 9755 3: after ENABLE UTF8=ACCEPT a charset label can only conflict.
            return "BAD", "No CHARSET after ENABLE UTF8=ACCEPT"
        if args.charset not in (None, "UTF-8", "US-ASCII"):
            if returns is not None and "SAVE" in returns:
                view.saved = set()  # RFC 5182 2.1: a failed SEARCH ... SAVE empties "$"
            return "NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"
        if returns is not None and "UPDATE" in returns and command.tag in view.updates:
            return "BAD", "Duplicate search update tag"
        numbers = view.matching(args.key)
        if _uses_modseq(args.key):
            self._enable_condstore()
            self._search_result(command, view, numbers, returns, args.partial, modseq=True)
        else:
            self._search_result(command, view, numbers, returns, args.partial)
        if returns is not None and "UPDATE" in returns:
            uids = {view.messages[n - 1].uid for n in numbers}
            view.keep_update(SearchUpdate(command.tag, args.key, command.uid, uids))
        return "OK", "SEARCH completed"

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
        matched = [(n, view.messages[n - 1]) for n in view.matching(args.key)]
        ordered = [number for number, _ in sort(args.criteria, matched)]
        self._search_result(command, view, ordered, returns, args.partial, "SORT")
        if returns is not None and "UPDATE" in returns:
            # CONTEXT=SORT (RFC 5267 4.3): kept like a SEARCH's, with its order.
            order = [view.messages[n - 1].uid for n in ordered]
            view.keep_update(SearchUpdate(command.tag, args.key, command.uid, set(order), args.criteria, order))
        return "OK", "SORT completed"

    def _thread(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, ThreadArgs)
        view = self._selected()
        if args.charset not in ("UTF-8", "US-ASCII"):
            return "NO", "[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset"
        matched = [(n, view.messages[n - 1]) for n in view.matching(args.key)]
        if command.uid:
            matched = [(message.uid, message) for _, message in matched]
        threads = thread(args.algorithm, matched)
        self._send(b"* THREAD " + threads + b"\r\n" if threads else b"* THREAD\r\n")
        return "OK", "THREAD completed"

    def _fetch(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, FetchArgs)
        view = self._selected()
        targets = view.targets(args.sequence, command.uid)
        if targets is None:
            return "BAD", "Invalid message sequence number"
        items = list(args.items)
        if command.uid and not any(item.name == "UID" for item in items):
            items.insert(0, FetchItem("UID"))  # RFC 3501 6.4.8
        if args.vanished and not self.modes.qresync:
            return "BAD", "VANISHED needs ENABLE QRESYNC"  # RFC 7162 3.2.6
        if args.changedsince is not None or any(item.name == "MODSEQ" for item in items):
            self._enable_condstore()
        if args.vanished and args.changedsince is not None:
            # RFC 7162 3.2.6: the UIDs of the set expunged since, before the FETCH responses; "*"
            # reaches the last UID ever given, expunged or not.
            saved = view.saved
            requested = saved.__contains__ if args.sequence.saved else within(
                args.sequence.resolve(view.mailbox.uidnext - 1))
            view.vanished_earlier(args.changedsince, requested)
        if args.changedsince is not None:
            # RFC 7162 3.1.4.1: only messages changed since, and with their MODSEQ.
            targets = [(n, m) for n, m in targets if m.modseq > args.changedsince]
            if not any(item.name == "MODSEQ" for item in items):
                items.append(FetchItem("MODSEQ"))
        marks_seen = not view.readonly and any(_marks_seen(item) for item in items)
        reports_flags = any(item.name == "FLAGS" for item in items)
        ghosts = view.ghosts()
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
                view.announce_keywords(message.flags)
            chunks.append(b"* %d FETCH (" % number)
            for index, item in enumerate(items):
                if index:
                    chunks.append(b" ")
                self._fetch_item(view, item, labels[item], message, chunks)
            if seen_now and not reports_flags:
                chunks += (b" ", view.flags_item(message))
            if seen_now and self.modes.condstore:
                # RFC 7162 3.2.4: a flag change by FETCH carries UID and MODSEQ too.
                if not any(item.name == "UID" for item in items):
                    chunks.append(b" UID %d" % message.uid)
                if not any(item.name == "MODSEQ" for item in items):
                    chunks.append(view.modseq_item(message))
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
            out.append(view.flags_item(message))
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

    def _store(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, StoreArgs)
        view = self._selected()
        targets = view.targets(args.sequence, command.uid)
        if targets is None:
            return "BAD", "Invalid message sequence number"
        if view.readonly:
            return "NO", "[CANNOT] Mailbox is read-only"
        flags = set(self._canonical_flags(args.flags))
        view.announce_keywords(flags)
        modified: list[int] = []
        if args.unchangedsince is not None:
            self._enable_condstore()
        # RFC 2180 4.2.1, as Dovecot: a message another session expunged (EXPUNGE not yet sent
        # here) is skipped and the rest updated; a "mark read" on a range must not fail for it.
        ghosts = view.ghosts()
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
            view.announce_keywords(new)  # the message may carry another session's keyword
            view.mailbox.set_flags(message, new)
            if args.silent:
                view.flags[message.uid] = frozenset(message.flags)
                continue
            # RFC 3501 6.4.6: the new flags come back as if fetched (with the UID for UID STORE,
            # and always once CONDSTORE is on, RFC 7162 3.2.4).
            uid = b"UID %d " % message.uid if command.uid or self.modes.condstore else b""
            self._send(b"* %d FETCH (%b%b%b)\r\n" % (number, uid, view.flags_item(message), view.modseq_item(message)))
        if modified:
            return "OK", f"[MODIFIED {uid_set(modified)}] Conditional STORE failed"
        return "OK", "STORE completed"

    def _canonical_flags(self, flags: Iterable[str]) -> tuple[str, ...]:
        """Keywords take the spelling already used in the mailbox ($Junk and $junk are one)."""
        view = self.view
        known = {keyword.casefold(): keyword for keyword in view.keywords} if view is not None else {}
        return tuple(dict.fromkeys(flag if flag.startswith("\\") else known.get(flag.casefold(), flag) for flag in flags))

    def _copy(self, command: Command) -> Reply:
        args = command.args
        assert isinstance(args, CopyArgs)
        view = self._selected()
        move = command.name == "MOVE"
        targets = view.targets(args.sequence, command.uid)
        if targets is None:
            return "BAD", "Invalid message sequence number"
        if move and view.readonly:
            return "NO", "[CANNOT] Mailbox is read-only"
        target = self._account().mailbox(args.mailbox)
        if target is None:
            return "NO", f"[TRYCREATE] Mailbox doesn't exist: {args.mailbox}"
        ghosts = view.ghosts()
        if any(message.uid in ghosts for _, message in targets):
            return "NO", "[EXPUNGEISSUED] Some of the requested messages no longer exist"
        if not targets:
            return "OK", "No messages found"
        source_uids = [message.uid for _, message in targets]
        copies = [target.append(m.data, m.flags, m.internal_date) for _, m in targets]
        # RFC 4315 section 3: COPYUID names the source and destination UIDs, pairwise.
        code = f"[COPYUID {target.uidvalidity} {uid_set(source_uids)} {uid_set([c.uid for c in copies])}]"
        if not move:
            return "OK", f"{code} COPY completed"
        # RFC 6851 section 4.3: COPYUID goes in an untagged OK before the EXPUNGE responses.
        self._untagged(f"OK {code} Moved UIDs")
        view.mailbox.expunge(source_uids)
        return "OK", "MOVE completed"


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
            parts.append(f"ALL {uid_set(values)}")
    if partial is not None:
        # RFC 5267 4.4: the low:high-th results (1-based), NIL when none falls in the range.
        low, high = partial
        chosen = values[low - 1 : high]
        parts.append(f"PARTIAL ({low}:{high} {uid_set(chosen) if chosen else 'NIL'})")
    if "COUNT" in options:
        parts.append(f"COUNT {len(values)}")
    return (" ".join(parts) + "\r\n").encode()


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


Handler = Callable[[ImapSession, Command], Reply]
# The dispatch table, from the command declarations (parser.COMMANDS): each command's handler, the
# states it is valid in and whether it holds back EXPUNGE. getattr fails here, at import, for a
# declaration naming no method.
_DISPATCH: dict[str, tuple[Handler, frozenset[State], bool]] = {
    name: (getattr(ImapSession, declaration.handler), declaration.states, declaration.holds_expunges)
    for name, declaration in COMMANDS.items()
}
