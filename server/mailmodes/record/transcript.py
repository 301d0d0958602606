"""From the bytes on the wire to a masked transcript and the facts the verdicts need.

No I/O: the I/O layers (connection.py for IMAP and POP3, smtp.py for SMTP) hand every chunk they read
or write to a `Recorder`. A small per-protocol dialect knows which lines carry secrets (AUTH
payloads, PASS, LOGIN passwords: never stored), which commands touch mail, and where message
content runs (summarised as a byte count, not kept).
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Callable
from typing import Any

from mailmodes.record.journal import Journal, SessionRecord
from mailmodes.scenarios.misbehaviour import (
    CANARY_EXISTS,
    CANARY_INJECTED,
    CANARY_MAILBOX,
    CANARY_PRETLS,
)

MASK = "****"
CANARY_PREFIX = "X-MAILMODES-"
MAX_LINE_SHOWN = 500
_LITERAL = re.compile(rb"\{(\d+)\+?\}\r?\n?$")

# What a client did that touches mail, per protocol (KNOWN-BAD.md: mail-in-clear).
MAIL_COMMANDS = {
    "smtp": {"MAIL", "RCPT", "DATA", "BDAT"},
    "imap": {"SELECT", "EXAMINE", "FETCH", "UID FETCH", "APPEND", "UID SEARCH", "SEARCH"},
    "pop3": {"RETR", "TOP"},
}
STARTTLS_COMMAND = {"smtp": "STARTTLS", "imap": "STARTTLS", "pop3": "STLS"}
NON_TLS_REASONS = {"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
                   "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"}


def _text(line: bytes) -> str:
    shown = line.rstrip(b"\r\n").decode("utf-8", "replace")
    return shown if len(shown) <= MAX_LINE_SHOWN else shown[:MAX_LINE_SHOWN] + f"... [{len(shown)} chars]"


def _plain_user(payload: str) -> str | None:
    """The authentication identity in a SASL PLAIN initial response (RFC 4616), if decodable."""
    try:
        parts = base64.b64decode(payload, validate=True).split(b"\0")
    except (binascii.Error, ValueError):
        return None
    return parts[1].decode("utf-8", "replace") if len(parts) == 3 else None


class _Stream:
    """One direction's bytes cut into lines, IMAP literals and dot-terminated message bodies
    (SMTP DATA, POP3 RETR/TOP) in a single pass by offset: cost stays linear in the bytes."""

    # RFC 5321 4.1.1.4: the end of the data is CRLF "." CRLF (a bare LF before the dot does not end
    # it: aiosmtpd reads on, and so must the transcript). The data starts at a line start.
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
    """Feeds one SessionRecord. Call `client`/`server` with raw bytes, `tls_started` after a
    handshake, `tls_failed` when one failed."""

    __slots__ = ("record", "max_lines", "protocol", "_lines", "_encrypted", "_client", "_command",
                 "_after_literal", "_server", "_secret_next", "_secret_command", "_last_command",
                 "_literal_command", "_starttls_tag", "_pending_pipelined", "_starttls_accepted",
                 "_saw_client_bytes")

    def __init__(self, record: SessionRecord, max_lines: int) -> None:
        self.record = record
        self.max_lines = max_lines
        self.protocol = record.protocol
        self._lines = record.lines
        self._encrypted = False
        self._client = _Stream()
        self._command: Callable[[str], str] = getattr(self, f"_{record.protocol}_command")
        self._after_literal = False
        self._server = _Stream()
        self._secret_next = False  # the next client line answers an AUTH challenge
        self._secret_command = ""
        self._last_command = ""
        self._literal_command = ""
        self._starttls_tag: str | None = None  # set while a STARTTLS awaits its reply
        self._pending_pipelined = b""
        self._starttls_accepted = False
        self._saw_client_bytes = False

    # ---- transcript -------------------------------------------------------------------------
    def _add(self, sender: str, text: str) -> None:
        # Called for every line of every session: kept to the bare minimum of lookups.
        lines = self._lines
        if len(lines) < self.max_lines:
            lines.append((time.time() - self.record.started, sender, self._encrypted, text))
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
        if via_starttls:
            record.starttls = True
        self._encrypted = record.tls_version is not None
        self._add("server", f"[TLS established: {record.tls_version} {record.cipher}"
                            + (f", SNI {record.sni}" if record.sni else "") + "]")
        pending, self._pending_pipelined = self._pending_pipelined, b""
        self._starttls_tag = None
        self._client.buffer = b""
        if via_starttls and pending:
            record.pipelined_bytes += len(pending)
            executed = record.scenario == "command-injection-vulnerable"
            self._add("client", f"[{len(pending)} plaintext bytes pipelined after {STARTTLS_COMMAND[self.protocol]}: "
                                + ("EXECUTED inside TLS by this vulnerable server]" if executed
                                   else "discarded, never executed]"))
            if executed:
                self.client(pending)

    def _note_sni(self, ssl_object: Any) -> None:
        """What the SNI callback (contexts.py) noted on the SSL object: the name, and the scenario
        it chose."""
        record = self.record
        record.sni = getattr(ssl_object, "mailmodes_sni", None)
        scenario = getattr(ssl_object, "mailmodes_scenario", None)
        if scenario:
            record.scenario = scenario
        record.bad_certificate = bool(getattr(ssl_object, "mailmodes_bad_certificate", record.bad_certificate))

    def tls_failed(self, error: BaseException | None, ssl_object: Any = None) -> None:
        """A handshake did not complete: note the client's alert, or what it sent instead, and the
        SNI name it asked for (`ssl_object`: see tls.HandshakeWatch)."""
        record = self.record
        if ssl_object is not None:
            self._note_sni(ssl_object)
        reason = getattr(error, "reason", None) or ""
        if isinstance(reason, str) and ("ALERT" in reason):
            record.tls_alert = reason.split("ALERT_", 1)[-1].lower()
        elif reason in NON_TLS_REASONS:
            record.tls_failure = "the client sent something that is not TLS"
            record.first_client_bytes = record.first_client_bytes or b"?"
        elif isinstance(error, (TimeoutError, ConnectionAbortedError)):  # asyncio's handshake timeout
            record.tls_failure = "no TLS handshake: the client sent no ClientHello before the timeout"
        elif error is None or isinstance(error, (ConnectionError, EOFError)) or \
                reason in ("UNEXPECTED_EOF_WHILE_READING", ""):
            record.tls_failure = "no TLS handshake: the client closed the connection first"
            record.closed_before_handshake = not record.first_client_bytes
        else:
            record.tls_failure = reason or type(error).__name__
        detail = record.tls_alert and f"alert {record.tls_alert}" or record.tls_failure
        self._add("server", f"[TLS handshake failed: {detail}]")

    # ---- client side ------------------------------------------------------------------------
    def client(self, data: bytes) -> None:
        if not self._saw_client_bytes and data:
            self._saw_client_bytes = True
            if not self._encrypted:
                self.record.first_client_bytes = data[:32]
        if self._starttls_tag is not None and not self._encrypted:
            # Bytes behind a STARTTLS, before its reply: kept aside until we know whether TLS starts.
            self._pending_pipelined += data
            return
        rest = self._client.feed(data, self._client_line, self._client_literal_done, self._client_message_done)
        if rest:
            self._pending_pipelined = rest
        if len(self._client.buffer) > 65536:  # no endless buffering of a line-less flood
            self._add("client", f"[{len(self._client.buffer)} bytes without a line end]")
            self._client.buffer = b""

    def _client_message_done(self, size: int) -> None:
        self._add("client", f"[message: {size} bytes]")
        self._add("client", ".")

    def _client_literal_done(self, size: int) -> None:
        self._after_literal = True
        if self._literal_command in ("LOGIN", "AUTHENTICATE"):
            self._credential(self._literal_command, secret=True)
            self._add("client", f"[literal: {MASK}]")
        else:
            self._add("client", f"[literal: {size} bytes]")

    def _client_line(self, line: bytes) -> bool:
        """Record one client line; True when the rest of the read is held back (STARTTLS)."""
        text = _text(line)
        if not text and self._after_literal:
            self._after_literal = False
            return False  # the end of a command line that closed with a literal
        self._after_literal = False
        if self._secret_next:
            self._secret_next = False
            if text.strip() == "*":
                self._add("client", "*")
                return False
            self._credential(self._secret_command, secret=True)
            self._add("client", MASK)
            return False
        if CANARY_PREFIX in text:
            for canary in (CANARY_INJECTED, CANARY_PRETLS):
                if canary in text and (canary, self._encrypted) not in self.record.canaries:
                    self.record.canaries.append((canary, self._encrypted))
        shown = self._command(text)
        literal = _LITERAL.search(line) if self.protocol == "imap" else None
        if literal:
            self._client.expect_literal(int(literal.group(1)))
            self._literal_command = self._last_command
        self._add("client", shown)
        return self._starttls_tag is not None

    def _count(self, command: str) -> None:
        self._last_command = command
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
            if command in MAIL_COMMANDS[self.protocol] and command not in in_clear:
                in_clear.append(command)  # each verb once: a long session must not grow this

    def _starttls_requested(self, tag: str) -> None:
        if not self._encrypted:
            self._starttls_tag = tag
            self._starttls_accepted = False
            self.record.starttls_attempted = True

    def _credential(self, command: str, *, secret: bool) -> None:
        fact = (self._encrypted, secret, command)
        if fact not in self.record.credentials:  # each kind once: repeated logins must not grow this
            self.record.credentials.append(fact)

    def _sasl(self, verb: str, words: list[str], shown_prefix: str) -> str:
        """AUTH / AUTHENTICATE <mechanism> [initial-response]."""
        mechanism = words[0].upper() if words else ""
        self._secret_command = f"{verb} {mechanism}".strip()
        if len(words) > 1:
            if mechanism == "PLAIN" and words[1] != "=":
                self.record.user = _plain_user(words[1]) or self.record.user
            self._credential(self._secret_command, secret=words[1] not in ("=", ""))
            return f"{shown_prefix}{verb} {words[0]} {MASK}"
        self._credential(self._secret_command, secret=False)
        return f"{shown_prefix}{verb} {' '.join(words)}".rstrip()

    def _smtp_command(self, text: str) -> str:
        verb, _, rest = text.partition(" ")
        verb = verb.upper()
        self._count(verb)
        if verb == "AUTH":
            return self._sasl("AUTH", rest.split(), "")
        if verb == "STARTTLS":
            self._starttls_requested("")
        return text

    def _imap_command(self, text: str) -> str:
        words = text.split(" ")
        if len(words) < 2:
            self._count(text.upper())
            return text
        tag, verb, args = words[0], words[1].upper(), words[2:]
        if verb == "UID" and args:
            verb = f"UID {args[0].upper()}"
        self._count(verb)
        if verb == "LOGIN":
            if args:
                self.record.user = args[0].strip('"')
            if len(args) >= 2 and not _LITERAL.search(args[-1].encode()):
                self._credential("LOGIN", secret=True)
                return f"{tag} LOGIN {args[0]} {MASK}"
            self._credential("LOGIN", secret=False)
            return text
        if verb == "AUTHENTICATE":
            return self._sasl("AUTHENTICATE", args, f"{tag} ")
        if verb == "STARTTLS":
            self._starttls_requested(tag)
        elif CANARY_MAILBOX in text or (verb in ("FETCH", "STORE", "COPY", "MOVE") and args
                                        and str(CANARY_EXISTS) in args[0]):
            if len(self.record.used_injected_state) < 8:
                self.record.used_injected_state.append(f"{verb} {' '.join(args)[:60]}")
        return text

    def _pop3_command(self, text: str) -> str:
        verb, _, rest = text.partition(" ")
        verb = verb.upper()
        self._count(verb)
        if verb == "USER":
            self.record.user = rest.strip() or self.record.user
            self._credential("USER", secret=False)
        elif verb == "PASS":
            self._credential("PASS", secret=True)
            return f"PASS {MASK}"
        elif verb == "APOP":
            name = rest.split(" ")[0]
            self.record.user = name or self.record.user
            self._credential("APOP", secret=True)
            return f"APOP {name} {MASK}"
        elif verb == "AUTH":
            return self._sasl("AUTH", rest.split(), "")
        elif verb == "STLS":
            self._starttls_requested("")
        return text

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

    def server_reply(self, text: str) -> None:
        """One reply line, already text (SMTP's push hands them over one by one)."""
        self._add("server", text)
        if self._starttls_tag is not None:
            self._starttls_reply(text)
        if self.protocol == "smtp":
            if text.startswith("334 "):
                self._secret_next = True
            elif text.startswith("354"):
                self._client.expect_message()
        elif self.protocol == "imap":
            if text.startswith("+") and self._last_command == "AUTHENTICATE":
                self._secret_next = True
        elif text.startswith("+ ") and self._last_command == "AUTH" or text == "+":
            self._secret_next = True
        elif text.startswith("+OK") and self._last_command in ("RETR", "TOP"):
            self._server.expect_message()

    def _starttls_reply(self, text: str) -> None:
        """The reply to STARTTLS: on success the handshake follows; otherwise bytes held back
        behind the STARTTLS were ordinary pipelining and are replayed into the transcript."""
        if self._starttls_accepted:
            return  # lines after the success line (injected ones, in some scenarios) change nothing
        tag = self._starttls_tag or ""
        if self.protocol == "imap" and not text.startswith((f"{tag} ", "+")):
            return  # an untagged response before the tagged one (a "+" is an answer, if a wrong one)
        succeeded = (text.startswith("220") if self.protocol == "smtp"
                     else text.startswith("+OK") if self.protocol == "pop3"
                     else text.split(" ")[1:2] == ["OK"])
        if succeeded:
            self._starttls_accepted = True
            return  # tls_started() or tls_failed() follows
        pending, self._pending_pipelined, self._starttls_tag = self._pending_pipelined, b"", None
        if pending:
            self.client(pending)



class _NullRecorder(Recorder):
    """The recorder of a disabled journal: every hook does nothing."""

    __slots__ = ()

    def client(self, data: bytes) -> None:
        pass

    def server(self, data: bytes) -> None:
        pass

    def server_reply(self, text: str) -> None:
        pass

    def tls_started(self, ssl_object: Any, *, via_starttls: bool) -> None:
        pass

    def tls_failed(self, error: BaseException | None, ssl_object: Any = None) -> None:
        pass


def recorder_for(journal: Journal, record: SessionRecord) -> Recorder:
    return Recorder(record, journal.max_transcript_lines) if journal.enabled else _NullRecorder(record, 0)
