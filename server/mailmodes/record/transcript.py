"""From what the protocol sessions say they read to a masked transcript and the facts the verdicts need.

No I/O, and no parser of the client's input: the sessions (imap/session.py, pop3.py, and the SMTP
adapter for aiosmtpd) are the only ones that know which client bytes are a command, a literal, a
credential or a message, and they say so with notes (protocols/events.py: Heard, LoginAttempt,
MessageRead ...) that the I/O layers hand to a `Recorder`. It shows each piece as it was told:
credentials as ****, literals and messages as their size, and what a session could not make out
only as its size. The server's output is cut into lines here (it holds no secret; IMAP literals
and POP3 message bodies are summarised).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from mailmodes.protocols.events import (
    CLIENT_HELLO,
    LITERAL,
    Heard,
    LoginAttempt,
    MessageRead,
    Note,
    Pipelined,
    Skipped,
    SpanKind,
)
from mailmodes.record.journal import Journal, SessionRecord
from mailmodes.scenarios.catalogue import REVOCATION_SCENARIOS
from mailmodes.scenarios.misbehaviour import CANARY_EXISTS, CANARY_INJECTED, CANARY_MAILBOX, CANARY_PRETLS
from mailmodes.tls.handshake import (
    CLIENT_HELLO_SEEN,
    FINISHED,
    SERVER_FLIGHT_SENT,
    asked_certificate_status,
    client_hello_sni,
    handshake_progress,
)

MASK = "****"
CANARY_PREFIX = "X-MAILMODES-"
MAX_LINE_SHOWN = 500
MAX_LOGINS_KEPT = 32  # a client trying passwords in a loop must not grow its record without bound
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r?\n?$")

# What a client did that touches mail, per protocol (KNOWN-BAD.md: mail-in-clear). IMAP's come
# from its command declarations (imap/parser.py: COMMANDS), which the session passes on as
# `Heard.mail`: the record knows no protocol implementation.
MAIL_COMMANDS: dict[str, set[str]] = {
    "smtp": {"MAIL", "RCPT", "DATA", "BDAT"},
    "imap": set(),
    "pop3": {"RETR", "TOP"},
}
STARTTLS_COMMAND = {"smtp": "STARTTLS", "imap": "STARTTLS", "pop3": "STLS"}
NON_TLS_REASONS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
                   "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"}
# How each kind of span shows in place of its bytes (LITERAL also ends the line before it).
SHOWN: dict[SpanKind, str] = {
    "literal": "[literal: {} bytes]",
    "secret": MASK,
    "unparsed": "[not understood: {} bytes]",
    "client-hello": "[TLS ClientHello, {} bytes]",
    "tls": "[TLS: {} bytes]",
}
UNKNOWN_VERB = "(unknown)"
# A handshake that ended short, by how far it got.
PROGRESS = {CLIENT_HELLO_SEEN: "after its ClientHello", SERVER_FLIGHT_SENT: "after the server's certificate"}


def _text(line: bytes) -> str:
    shown = line.rstrip(b"\r\n").decode("utf-8", "replace")
    return shown if len(shown) <= MAX_LINE_SHOWN else shown[:MAX_LINE_SHOWN] + f"... [{len(shown)} chars]"


def rendered(heard: Heard) -> list[str]:
    """The transcript lines of one piece the session read: its text cut at line ends, each span
    in place as SHOWN says. An empty line right after a literal is the end of the command line
    that closed with it, not a line of its own."""
    lines: list[str] = []
    current: list[str] = []
    after_literal = False

    def text(chunk: bytes) -> None:
        nonlocal after_literal
        *complete, rest = chunk.split(b"\n")
        for part in complete:
            shown = "".join(current) + _text(part)
            if shown or not after_literal:
                lines.append(shown)
            current.clear()
            after_literal = False
        if rest:
            current.append(_text(rest))
            after_literal = False

    position = heard.start
    for begin, end, kind in heard.spans:
        if end <= position:
            continue
        text(heard.data[position:max(begin, position)])
        if kind == LITERAL:
            if current:
                lines.append("".join(current))
                current.clear()
            lines.append(SHOWN[kind].format(end - begin))
            after_literal = True
        else:
            current.append(SHOWN[kind].format(end - max(begin, position)))
            after_literal = False
        position = end
    text(heard.data[position:])
    if current:
        lines.append("".join(current))
    return lines


class _Stream:
    """The server's bytes cut into lines, IMAP literals and dot-terminated message bodies (POP3
    RETR/TOP) in a single pass by offset: cost stays linear in the bytes."""

    # RFC 1939 3: a multi-line response ends with CRLF "." CRLF (a bare LF before the dot does not
    # end it). The body starts at a line start.
    TERMINATOR = b"\r\n.\r\n"
    LINE_START = b"\r\n"
    __slots__ = ("buffer", "literal", "literal_size", "in_message", "message_bytes", "tail")

    def __init__(self) -> None:
        self.buffer = b""
        self.literal = 0  # literal bytes still to skip
        self.literal_size = 0
        self.in_message = False
        self.message_bytes = 0
        self.tail = self.LINE_START  # the last bytes of the message so far, for a terminator split across reads

    def expect_literal(self, size: int) -> None:
        self.literal = self.literal_size = size

    def expect_message(self) -> None:
        self.in_message, self.message_bytes, self.tail = True, 0, self.LINE_START

    def feed(self, data: bytes, on_line: Callable[[bytes], bool], on_literal: Callable[[int], None],
             on_message: Callable[[int], None]) -> bytes:
        """Hand each complete unit to its callback; if on_line returns True, stop and return the
        rest of the data unprocessed. (The callbacks are passed per call, not kept: bound methods
        kept here would cost every idle connection about 450 bytes.)"""
        if not (self.buffer or self.literal or self.in_message) and data[-1:] == b"\n" \
                and data.find(b"\n") == len(data) - 1:
            on_line(data)  # the common case, one whole command or reply line, without the loop
            return b""
        buffer = self.buffer + data if self.buffer else data
        position, size = 0, len(buffer)
        while position < size:
            if self.literal:
                taken = min(self.literal, size - position)
                position += taken
                self.literal -= taken
                if not self.literal:
                    on_literal(self.literal_size)
            elif self.in_message:
                end = self._message_end(buffer, position)
                if end is None:
                    self.message_bytes += size - position
                    position = size
                else:
                    self.message_bytes += end - position
                    self.in_message = False
                    position = end
                    on_message(self.message_bytes - 3)  # without the terminating ".\r\n"
            else:
                end = buffer.find(b"\n", position)
                if end < 0:
                    break
                line, position = buffer[position:end + 1], end + 1
                if on_line(line):
                    self.buffer = b""
                    return buffer[position:]
        self.buffer = buffer[position:]
        return b""

    def _message_end(self, buffer: bytes, position: int) -> int | None:
        size = len(self.TERMINATOR)
        joined = self.tail + buffer[position:position + size]
        found = joined.find(self.TERMINATOR)
        if found >= 0:
            return position + found + size - len(self.tail)
        found = buffer.find(self.TERMINATOR, position)
        if found >= 0:
            return found + size
        self.tail = (self.tail + buffer[max(position, len(buffer) - size + 1):])[1 - size:]
        return None


class Recorder:
    """Feeds one SessionRecord. The I/O layers call `client` with every chunk read (before the
    session sees it), `note` with what the session made of it, `server` / `server_reply` with
    what was sent, `tls_started` after a handshake and `tls_failed` when one failed."""

    __slots__ = ("record", "max_lines", "protocol", "_lines", "_encrypted", "_server", "_last_verb",
                 "_pipelined", "_pipelined_executed", "_saw_client_bytes")

    def __init__(self, record: SessionRecord, max_lines: int) -> None:
        self.record = record
        self.max_lines = max_lines
        self.protocol = record.protocol
        self._lines = record.lines
        self._encrypted = False
        self._server = _Stream()
        self._last_verb = ""
        self._pipelined = 0  # plaintext behind a STARTTLS, until we know whether TLS starts
        self._pipelined_executed = False
        self._saw_client_bytes = False

    # ---- transcript -------------------------------------------------------------------------
    def _add(self, sender: str, text: str, at: float | None = None) -> None:
        # Called for every line of every session: kept to the bare minimum of lookups.
        lines = self._lines
        if len(lines) < self.max_lines:
            lines.append(((time.time() if at is None else at) - self.record.started, sender, self._encrypted, text))
        else:
            self.record.transcript_truncated += 1

    # ---- TLS --------------------------------------------------------------------------------
    def tls_started(self, ssl_object: Any, *, via_starttls: bool) -> None:
        record = self.record
        if ssl_object is not None:
            record.tls_version = ssl_object.version()
            cipher = ssl_object.cipher()
            record.cipher = cipher[0] if cipher else None
            self._note_sni(ssl_object)
            record.tls_handshake = FINISHED
            record.client_certificate = certificate_subject(ssl_object)
        if via_starttls:
            record.starttls = True
        self._encrypted = record.tls_version is not None
        self._add("server", f"[TLS established: {record.tls_version} {record.cipher}"
                            + (f", SNI {record.sni}" if record.sni else "")
                            + (f", client certificate {record.client_certificate}" if record.client_certificate
                               else "") + "]")
        pending, executed, self._pipelined = self._pipelined, self._pipelined_executed, 0
        if via_starttls and pending:
            record.pipelined_bytes += pending
            self._add("client", f"[{pending} plaintext bytes pipelined after {STARTTLS_COMMAND[self.protocol]}: "
                                + ("EXECUTED inside TLS by this vulnerable server]" if executed
                                   else "discarded, never executed]"))

    def _note_sni(self, ssl_object: Any) -> None:
        """What the SNI callback (contexts.py) noted on the SSL object: the name, and the scenario
        it chose."""
        record = self.record
        record.sni = getattr(ssl_object, "mailmodes_sni", None)
        scenario = getattr(ssl_object, "mailmodes_scenario", None)
        if scenario:
            record.scenario = scenario
        record.bad_certificate = bool(getattr(ssl_object, "mailmodes_bad_certificate", record.bad_certificate))
        record.asked_certificate_status = asked_certificate_status(ssl_object)
        if record.scenario in REVOCATION_SCENARIOS and not record.asked_certificate_status:
            record.bad_certificate = False  # it never asked whether the certificate was revoked: it cannot know

    def tls_failed(self, error: BaseException | None, ssl_object: Any = None) -> None:
        """A handshake did not complete: note the client's alert, or what it sent instead, and the
        SNI name it asked for (`ssl_object`: see tls.handshake.HandshakeWatch)."""
        record = self.record
        self._pipelined = 0
        if ssl_object is not None:
            self._note_sni(ssl_object)
        # How far it got, from OpenSSL itself (tls/handshake.py): a client that sent its
        # ClientHello and hung up on our certificate is no port probe.
        progress = record.tls_handshake = handshake_progress(ssl_object, error)
        reason = getattr(error, "reason", None) or ""
        if isinstance(reason, str) and ("ALERT" in reason):
            record.tls_alert = reason.split("ALERT_", 1)[-1].lower()
        elif reason in NON_TLS_REASONS:
            record.tls_failure = "the client sent something that is not TLS"
            record.first_client_bytes = record.first_client_bytes or b"?"
        elif isinstance(error, (TimeoutError, ConnectionAbortedError)):  # asyncio's handshake timeout
            record.tls_failure = (f"the handshake timed out {PROGRESS[progress]}" if progress in PROGRESS
                                  else "no TLS handshake: the client sent no ClientHello before the timeout")
        elif error is None or isinstance(error, (ConnectionError, EOFError)) or \
                reason in ("UNEXPECTED_EOF_WHILE_READING", ""):
            record.tls_failure = (f"the client closed the connection {PROGRESS[progress]}, without an alert"
                                  if progress in PROGRESS else "no TLS handshake: the client closed the connection first")
            record.closed_before_handshake = progress is None and not record.first_client_bytes
        else:
            record.tls_failure = reason or type(error).__name__
        detail = record.tls_alert and f"alert {record.tls_alert}" or record.tls_failure
        self._add("server", f"[TLS handshake failed: {detail}]")

    # ---- client side ------------------------------------------------------------------------
    def client(self, data: bytes) -> None:
        """Raw bytes as read, before the session sees them: only how the client began is kept
        (the verdicts about the port's TLS); what they mean comes in notes."""
        if not self._saw_client_bytes and data:
            self._saw_client_bytes = True
            if not self._encrypted:
                self.record.first_client_bytes = data[:32]

    def note(self, event: Note) -> None:
        """What the session made of the client's bytes (protocols/events.py)."""
        if isinstance(event, Heard):
            self._heard(event)
        elif isinstance(event, LoginAttempt):
            self._login(event)
        elif isinstance(event, MessageRead):
            self._add("client", f"[message: {event.size} bytes]" if event.complete
                      else f"[message: {event.size} bytes, unfinished: the connection ended]")
            if event.complete:
                self._add("client", ".")
        elif isinstance(event, Pipelined):
            self._pipelined += event.size
            self._pipelined_executed = event.executed
        elif isinstance(event, Skipped):
            self._add("client", f"[{event.size} bytes not read: {event.why}]")

    def _heard(self, heard: Heard) -> None:
        for start, end, kind in heard.spans:
            if kind == CLIENT_HELLO and self.record.sni is None:
                # A ClientHello where no TLS layer is still names whom the client wanted.
                self.record.sni = client_hello_sni(heard.data[start:end])
        lines = rendered(heard)
        for text in lines:
            self._client_line(text)
        if heard.verb is not None:
            self._command(heard.verb, lines[0] if lines else "", heard.mail)

    def command(self, line: bytes, verb: str) -> None:
        """note(Heard(line, verb)) for one whole command line (ending in its only LF) with nothing
        in it to hide or leave out: SMTP's express lane, for which rendered() is one _text."""
        text = _text(line)
        self._client_line(text)
        self._command(verb, text, False)

    def _client_line(self, text: str) -> None:
        self._add("client", text)
        if CANARY_PREFIX in text:
            self._canaries(text)

    def _command(self, verb: str, first_line: str, mail: bool) -> None:
        self._count(verb or UNKNOWN_VERB, mail)
        if verb == STARTTLS_COMMAND[self.protocol] and not self._encrypted:
            self.record.starttls_attempted = True
        elif self.protocol == "imap" and first_line:
            self._injected_state(verb, first_line)

    def _canaries(self, text: str) -> None:
        for canary in (CANARY_INJECTED, CANARY_PRETLS):
            if canary in text and (canary, self._encrypted) not in self.record.canaries:
                self.record.canaries.append((canary, self._encrypted))

    def _injected_state(self, verb: str, text: str) -> None:
        """pretls-state-injection: the client selected the canary mailbox or fetched the canary
        message number (the command's shown text, as the session parsed it)."""
        words = text.split(" ")
        if CANARY_MAILBOX in text or (verb in ("FETCH", "STORE", "COPY", "MOVE") and len(words) > 2
                                      and str(CANARY_EXISTS) in words[2]):
            if len(self.record.used_injected_state) < 8:
                self.record.used_injected_state.append(f"{verb} {' '.join(words[2:])[:60]}")

    def _count(self, command: str, mail: bool = False) -> None:
        self._last_verb = command
        record = self.record
        if self._encrypted:
            if not record.commands_after_tls:
                record.first_command_after_tls = command
            record.commands_after_tls += 1
        else:
            record.commands_before_tls += 1
            if len(record.verbs_before_tls) < 64:
                record.verbs_before_tls.append(command)
            in_clear = record.mail_commands_in_clear
            if (mail or command in MAIL_COMMANDS[self.protocol]) and command not in in_clear:
                in_clear.append(command)  # each verb once: a long session must not grow this

    def _login(self, attempt: LoginAttempt) -> None:
        record = self.record
        fact = (self._encrypted, attempt.secret_sent, attempt.command)
        if fact not in record.credentials:  # each kind once: repeated logins must not grow this
            record.credentials.append(fact)
        binding = (self._encrypted, attempt.command, attempt.binding) if attempt.binding is not None else None
        if binding is not None and binding not in record.channel_bindings:
            record.channel_bindings.append(binding)
        if attempt.expired_token and attempt.command not in record.expired_tokens:
            record.expired_tokens.append(attempt.command)
        if attempt.accepted is None:
            return
        if attempt.accepted:
            record.user = attempt.user
        if len(record.logins) < MAX_LOGINS_KEPT:
            record.logins.append((attempt.command, attempt.user, self._encrypted, attempt.accepted))

    # ---- server side ------------------------------------------------------------------------
    def server(self, data: bytes) -> None:
        self._server.feed(data, self._server_line, self._server_literal_done, self._server_message_done)

    def _server_literal_done(self, size: int) -> None:
        self._add("server", f"[literal: {size} bytes]")

    def _server_message_done(self, size: int) -> None:
        self._add("server", f"[message: {size} bytes]")
        self._add("server", ".")

    def _server_line(self, line: bytes) -> bool:
        if self.protocol == "imap":
            literal = _LITERAL.search(line)
            if literal:
                self._server.expect_literal(int(literal.group(1)))
        self.server_reply(_text(line))
        return False

    def greeted_at_accept(self, text: str) -> None:
        """The greeting early.py sent as it accepted the connection (when the record starts), before
        this session was made."""
        self._add("server", text, at=self.record.started)

    def server_replies(self, lines: tuple[str, ...]) -> None:
        """server_reply for each line of one SMTP reply (an EHLO's, say), which left in one write."""
        record, transcript = self.record, self._lines
        at, tls = time.time() - record.started, self._encrypted
        room = max(0, self.max_lines - len(transcript))
        transcript.extend([(at, "server", tls, text) for text in lines[:room]])
        record.transcript_truncated += len(lines) - min(room, len(lines))

    def server_reply(self, text: str) -> None:
        """One reply line, already text (SMTP's push hands them over one by one)."""
        self._add("server", text)
        if self.protocol == "pop3" and text.startswith("+OK") and self._last_verb in ("RETR", "TOP"):
            self._server.expect_message()


class _NullRecorder(Recorder):
    """The recorder of a disabled journal: every hook does nothing."""

    __slots__ = ()

    def client(self, data: bytes) -> None:
        pass

    def note(self, event: Note) -> None:
        pass

    def command(self, line: bytes, verb: str) -> None:
        pass

    def server(self, data: bytes) -> None:
        pass

    def server_reply(self, text: str) -> None:
        pass

    def server_replies(self, lines: tuple[str, ...]) -> None:
        pass

    def greeted_at_accept(self, text: str) -> None:
        pass

    def tls_started(self, ssl_object: Any, *, via_starttls: bool) -> None:
        pass

    def tls_failed(self, error: BaseException | None, ssl_object: Any = None) -> None:
        pass


def certificate_subject(ssl_object: Any) -> str | None:
    """The subject of the certificate the client showed (verified: the listener asked for one
    from the project CA), as "CN=alice, O=..."; None when it showed none."""
    try:
        certificate = ssl_object.getpeercert()
    except (ValueError, AttributeError):
        return None
    if not certificate:
        return None
    names = [f"{_SHORT_NAMES.get(key, key)}={value}" for rdn in certificate.get("subject", ()) for key, value in rdn]
    return ", ".join(names) or "(no subject)"


_SHORT_NAMES = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU", "countryName": "C",
                "emailAddress": "emailAddress", "localityName": "L", "stateOrProvinceName": "ST"}


def recorder_for(journal: Journal, record: SessionRecord) -> Recorder:
    return Recorder(record, journal.max_transcript_lines) if journal.enabled else _NullRecorder(record, 0)
