"""Session records, transcripts and client verdicts: what the API, the CLI and tests read.

Each connection gets a `SessionRecord`. The I/O layers feed it the bytes on the wire through a
`Recorder` (transcript.py masks secrets and notes what the client did); when the connection ends,
`Journal.finish` derives the verdicts and keeps the record (the last N only; appended as one JSON
line to a file when configured).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mailmodes.config import Listener
from mailmodes.misbehaviour import CANARY_INJECTED, CANARY_PRETLS
from mailmodes.scenarios import SCENARIOS
from mailmodes.tls.policy import TlsMode

# A plaintext session this soon after a failed TLS attempt from the same host is a fallback.
# Same client host, same protocol: loopback test suites run many unrelated clients from one
# address, so the window is short.
FALLBACK_WINDOW = 10.0
# A client that closes a TLS-first connection this soon without sending a byte is a port probe (a
# Kubernetes tcpSocket check, `nc -z`), not a client set up for plaintext that waited for a greeting.
PROBE_WINDOW = 1.0
WEAK_CIPHER_MARKERS = ("NULL", "RC4", "DES", "EXPORT", "anon", "MD5")


@dataclass(slots=True)
class TranscriptLine:
    at: float  # seconds since the session started (rounded to ms in the JSON form)
    sender: str  # "client" | "server"
    tls: bool  # True once the connection was encrypted
    text: str


@dataclass
class Verdict:
    code: str
    detail: str


@dataclass(slots=True)
class SessionRecord:
    id: int
    listener: str
    protocol: str
    tls_mode: str
    scenario: str | None
    client: str
    client_host: str
    started: float
    ended: float | None = None
    tls_version: str | None = None
    cipher: str | None = None
    sni: str | None = None
    starttls: bool = False
    starttls_attempted: bool = False
    tls_alert: str | None = None
    tls_failure: str | None = None
    tls_handshake: str | None = None  # how far a handshake got (tls/handshake.py stages); None: none began
    user: str | None = None  # the account a login was accepted as (failed attempts: logins)
    # Facts noted while the session runs; verdicts are derived from them at the end.
    bad_certificate: bool = False
    credentials: list[tuple[bool, bool, str]] = field(default_factory=list)  # (encrypted, secret sent, command)
    # Every decided login attempt (the first MAX_LOGINS_KEPT): (command, user tried, encrypted, accepted).
    logins: list[tuple[str, str | None, bool, bool]] = field(default_factory=list)
    mail_commands_in_clear: list[str] = field(default_factory=list)
    commands_before_tls: int = 0
    commands_after_tls: int = 0
    first_command_after_tls: str | None = None
    verbs_before_tls: list[str] = field(default_factory=list)  # the first few, for the scenario verdicts
    canaries: list[tuple[str, bool]] = field(default_factory=list)  # (canary, encrypted) the client used
    used_injected_state: list[str] = field(default_factory=list)
    pipelined_bytes: int = 0
    first_client_bytes: bytes = b""
    closed_before_handshake: bool = False  # the client hung up on a handshake it never began
    # (at, sender, tls, text) as plain tuples: CPython stops tracking tuples of strings and numbers
    # in its cyclic GC, so a full journal costs later collections nothing (TranscriptLine objects
    # would be scanned at every full collection, slowing the whole server as the journal fills).
    lines: list[tuple[float, str, bool, str]] = field(default_factory=list)
    transcript_truncated: int = 0
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def transcript(self) -> list[TranscriptLine]:
        return [TranscriptLine(*line) for line in self.lines]

    @property
    def encrypted(self) -> bool:
        return self.tls_version is not None

    def has(self, code: str) -> bool:
        return any(verdict.code == code for verdict in self.verdicts)

    def to_json(self) -> dict[str, Any]:
        """The public form: what the JSONL file, the HTTP API and the pytest fixture expose."""
        return {
            "id": self.id,
            "listener": self.listener,
            "protocol": self.protocol,
            "tls_mode": self.tls_mode,
            "scenario": self.scenario,
            "client": self.client,
            "started": _iso(self.started),
            "ended": _iso(self.ended) if self.ended else None,
            "tls_version": self.tls_version,
            "cipher": self.cipher,
            "sni": self.sni,
            "starttls": self.starttls,
            "starttls_attempted": self.starttls_attempted,
            "tls_alert": self.tls_alert,
            "tls_handshake": self.tls_handshake,
            "user": self.user,
            "logins": [{"command": command, "user": user, "tls": tls, "accepted": accepted}
                       for command, user, tls, accepted in self.logins],
            "verdicts": [verdict.code for verdict in self.verdicts],
            "verdict_details": [asdict(verdict) for verdict in self.verdicts],
            "transcript": [{"at": round(at, 3), "sender": sender, "tls": tls, "text": text}
                           for at, sender, tls, text in self.lines],
            "transcript_truncated": self.transcript_truncated,
        }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


class Journal:
    """The last `max_sessions` finished sessions, plus the ones still open. Thread-safe for readers."""

    def __init__(self, max_sessions: int = 1000, max_transcript_lines: int = 500, path: Path | None = None,
                 *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.max_transcript_lines = max_transcript_lines
        self.path = path
        self._finished: deque[SessionRecord] = deque(maxlen=max_sessions)
        self._open: dict[int, SessionRecord] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._finished_changed = threading.Condition(self._lock)
        # (host, protocol) -> time of the last failed TLS attempt, for the fallback verdict
        self._tls_failures: dict[tuple[str, str], float] = {}

    def open(self, listener: Listener, peer: tuple[Any, ...], started: float | None = None) -> SessionRecord:
        """A record for a new connection (`started`: when it was accepted, if earlier than now)."""
        host, port = (str(peer[0]), int(peer[1])) if len(peer) >= 2 else ("", 0)
        record = SessionRecord(
            id=next(self._ids),
            listener=listener.name,
            protocol=listener.protocol,
            tls_mode=str(listener.tls),
            scenario=listener.scenario,
            client=f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            client_host=host,
            started=started or time.time(),
            bad_certificate=listener.scenario in SCENARIOS and SCENARIOS[listener.scenario].bad_certificate,
        )
        if self.enabled:
            with self._lock:
                self._open[record.id] = record
        return record

    def finish(self, record: SessionRecord) -> None:
        if record.ended is not None or not self.enabled:
            return
        record.ended = time.time()
        record.verdicts = list(self._verdicts(record))
        line = json.dumps(record.to_json()) + "\n" if self.path is not None else ""
        with self._lock:
            self._open.pop(record.id, None)
            self._finished.append(record)
            if self.path is not None:
                # Under the lock, so a reader woken below finds the line already written.
                with self.path.open("a", encoding="utf-8") as file:
                    file.write(line)
            self._finished_changed.notify_all()

    def sessions(
        self, *, verdict: str | None = None, listener: str | None = None, include_open: bool = False
    ) -> list[SessionRecord]:
        with self._lock:
            records = list(self._finished) + (list(self._open.values()) if include_open else [])
        return self._match(records, verdict=verdict, listener=listener)

    @staticmethod
    def _match(records: list[SessionRecord], verdict: str | None = None,
               listener: str | None = None) -> list[SessionRecord]:
        return [
            r for r in records
            if (verdict is None or r.has(verdict)) and (listener is None or r.listener == listener)
        ]

    def wait_for(self, count: int = 1, timeout: float = 10.0, **filters: Any) -> list[SessionRecord]:
        """Block (another thread than the server's) until `count` finished sessions match."""
        with self._finished_changed:
            self._finished_changed.wait_for(lambda: len(self._match(list(self._finished), **filters)) >= count,
                                            timeout)
            return self._match(list(self._finished), **filters)

    def clear(self) -> None:
        with self._lock:
            self._finished.clear()
            self._tls_failures.clear()

    def _verdicts(self, record: SessionRecord) -> Iterable[Verdict]:
        mode = TlsMode(record.tls_mode)
        in_clear = [(secret, command) for encrypted, secret, command in record.credentials if not encrypted]
        if in_clear:
            sent = [command for secret, command in in_clear if secret]
            yield Verdict("credentials-in-clear",
                          f"{sent[0]}: the secret itself was sent unencrypted" if sent
                          else f"{in_clear[0][1]} attempted unencrypted (no secret sent)")
        if record.mail_commands_in_clear and mode.uses_starttls:
            yield Verdict("mail-in-clear", "before TLS although STARTTLS was on offer: "
                          + ", ".join(dict.fromkeys(record.mail_commands_in_clear)))
        if record.pipelined_bytes:
            fate = ("EXECUTED inside TLS by this deliberately vulnerable server"
                    if record.scenario == "command-injection-vulnerable" else "discarded")
            yield Verdict("pipelined-after-starttls",
                          f"{record.pipelined_bytes} plaintext bytes followed the STARTTLS command "
                          f"before the handshake ({fate})")
        probe = _is_probe(record)
        if (record.tls_alert or record.tls_failure) and not probe:
            self._tls_failures[(record.client_host, record.protocol)] = record.ended or time.time()
            if record.tls_alert:
                yield Verdict("rejected-certificate" if _is_certificate_alert(record.tls_alert) else "tls-failed",
                              f"the client aborted the handshake with alert {record.tls_alert}")
        if record.encrypted and record.bad_certificate and _acted_after_tls(record):
            yield Verdict("accepted-bad-certificate",
                          f"the client went on after the handshake although the certificate was bad "
                          f"({record.scenario})")
        if record.encrypted and (record.tls_version in ("TLSv1", "TLSv1.1", "SSLv3")
                                 or any(m in (record.cipher or "") for m in WEAK_CIPHER_MARKERS)):
            yield Verdict("weak-tls", f"negotiated {record.tls_version} with {record.cipher}")
        first = record.first_client_bytes
        if mode is TlsMode.IMPLICIT and not record.encrypted and record.tls_alert is None:
            if first and first[:1] != b"\x16":
                yield Verdict("plaintext-on-tls-port",
                              f"the client sent {first[:20]!r} instead of a TLS ClientHello: this port speaks "
                              "TLS from the first byte (implicit TLS, 'SSL/TLS'); the client is set up for "
                              "STARTTLS or no encryption")
            elif not first and not probe:
                yield Verdict("plaintext-on-tls-port",
                              "the client sent nothing and waited: it expected a plaintext greeting, but this "
                              "port speaks TLS from the first byte (implicit TLS, 'SSL/TLS'); set the client "
                              "to SSL/TLS, or use the STARTTLS port")
        if mode is not TlsMode.IMPLICIT and first[:2] == b"\x16\x03":
            yield Verdict("tls-on-plaintext-port",
                          "the client opened with a TLS ClientHello, but this port starts in plaintext "
                          "(STARTTLS or no encryption); the client is set up for implicit TLS ('SSL/TLS'): "
                          "set it to STARTTLS, or use the implicit-TLS port")
        if (mode.uses_starttls and not record.starttls_attempted and _acted_in_clear(record)
                and record.scenario is None):
            yield Verdict("no-upgrade", "STARTTLS was on offer and would have worked; the client never used it")
        if (not record.encrypted and _acted_in_clear(record) and not record.starttls_attempted
                and record.tls_alert is None and record.tls_failure is None):
            failed_at = self._tls_failures.get((record.client_host, record.protocol))
            if failed_at is not None and record.started - failed_at < FALLBACK_WINDOW:
                yield Verdict("fallback", "a failed TLS attempt from this client was followed by this plaintext "
                              "session")
        yield from _scenario_verdicts(record)


GOODBYE_COMMANDS = {"QUIT", "LOGOUT"}


def _is_probe(record: SessionRecord) -> bool:
    return record.closed_before_handshake and (record.ended or time.time()) - record.started < PROBE_WINDOW


def _acted_in_clear(record: SessionRecord) -> bool:
    """The client sent something before TLS other than its goodbye. A client that reads the
    greeting and says QUIT (a health check such as `mailmodes check`, a port probe) has done
    nothing that TLS should have protected, so it earns neither no-upgrade nor fallback."""
    return any(verb not in GOODBYE_COMMANDS for verb in record.verbs_before_tls)


def _acted_after_tls(record: SessionRecord) -> bool:
    """Likewise after the handshake: only going on past a goodbye accepts a bad certificate."""
    return record.commands_after_tls > 1 or (
        record.commands_after_tls == 1 and record.first_command_after_tls not in GOODBYE_COMMANDS)


CAPABILITY_COMMANDS = {"EHLO", "HELO", "CAPABILITY", "CAPA"}
AUTH_COMMANDS = {"AUTH", "AUTHENTICATE", "LOGIN", "USER", "APOP"}


def _scenario_verdicts(record: SessionRecord) -> Iterable[Verdict]:
    """Verdicts that only the STARTTLS / protocol scenarios (KNOWN-BAD.md section 2) can earn."""
    injected = [encrypted for canary, encrypted in record.canaries if canary == CANARY_INJECTED]
    first_after = record.first_command_after_tls
    if injected:
        yield Verdict("acted-on-injection", f"the client used the injected canary {CANARY_INJECTED}")
    elif (record.scenario == "response-injection" and record.protocol == "smtp" and first_after is not None
          and first_after not in CAPABILITY_COMMANDS | {"QUIT"}):
        yield Verdict("acted-on-injection", f"after TLS the client sent {first_after} without a new EHLO: it took "
                      "the EHLO reply injected behind the STARTTLS success line")
    if any(canary == CANARY_PRETLS and encrypted for canary, encrypted in record.canaries):
        yield Verdict("used-stale-capability", f"the client used {CANARY_PRETLS}, offered only before TLS")
    elif (record.scenario == "stale-capability" and first_after is not None
          and first_after in AUTH_COMMANDS):
        yield Verdict("used-stale-capability", f"warning: after TLS the client went straight to {first_after} "
                      "without asking for the capabilities again")
    if record.used_injected_state:
        yield Verdict("used-injected-state", "the client acted on state injected before TLS: "
                      + "; ".join(record.used_injected_state[:3]))
    if record.scenario == "imap-preauth" and set(record.verbs_before_tls) - {"CAPABILITY", "LOGOUT"}:
        yield Verdict("used-preauth", "the client went on after a plaintext PREAUTH greeting instead of closing "
                      "(RFC 9051 7.1.4)")


CERTIFICATE_ALERTS = ("certificate", "unknown ca", "unknown_ca", "bad certificate", "decrypt error",
                      "access denied", "handshake failure")


def _is_certificate_alert(alert: str) -> bool:
    return any(marker in alert.lower().replace("_", " ") for marker in CERTIFICATE_ALERTS)
