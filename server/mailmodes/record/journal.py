"""Session records, transcripts and client verdicts: what the API, the CLI and tests read.

Each connection gets a `SessionRecord`. The I/O layers feed it the bytes on the wire through a
`Recorder` (transcript.py masks secrets and notes what the client did); when the connection ends,
`Journal.finish` derives the verdicts and keeps the record (the last N only; appended as one JSON
line to a file when configured). With `restore` (a durable store) that file is also read back at
start, so the session list survives a restart.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mailmodes.config import Listener
from mailmodes.probe.marks import is_probe_session
from mailmodes.record.verdicts import History, evaluate
from mailmodes.scenarios.catalogue import SCENARIOS

log = logging.getLogger(__name__)

# Probe sessions (our own `check`, `explain`, the dashboard's Run) are kept apart, this many at
# most, so that a health check every 30 s never pushes a client's session out of the journal.
MAX_PROBE_SESSIONS = 200



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
    asked_certificate_status: bool | None = None  # its ClientHello had status_request (None: no ClientHello)
    user: str | None = None  # the account a login was accepted as (failed attempts: logins)
    client_certificate: str | None = None  # the subject of the certificate the client showed, if any
    # Facts noted while the session runs; verdicts are derived from them at the end.
    bad_certificate: bool = False
    credentials: list[tuple[bool, bool, str]] = field(default_factory=list)  # (encrypted, secret sent, command)
    # Every decided login attempt (the first MAX_LOGINS_KEPT): (command, user tried, encrypted, accepted).
    logins: list[tuple[str, str | None, bool, bool]] = field(default_factory=list)
    # SCRAM's gs2 channel-binding flags as sent: (encrypted, command, flag), each kind once.
    channel_bindings: list[tuple[bool, str, str]] = field(default_factory=list)
    expired_tokens: list[str] = field(default_factory=list)  # the commands that sent an expired bearer token
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
    # How far a handshake got: "client-hello" (seen), "server-flight" (sent), "alert", "finished";
    # None when unknown. To be filled in by the transcript's handshake facts (not wired yet).
    idle_timeout: bool = False  # the server closed the connection because the client went quiet
    answered_early: str | None = None  # the command a client sent before its first reply inside TLS was written
    # The client scope the session belongs to ("server": every session of a one-client server);
    # None: nothing ties it to any other session, so no cross-session verdict (fallback) is claimed.
    scope: str | None = None
    probe: bool = False  # one of our own probes, marked in-band (probe/marks.py)
    # SMTP: each message transaction the server answered, with the extensions the client used
    # (DSN, REQUIRETLS, SMTPUTF8, BDAT: protocols/smtp_extensions.py); never the content.
    envelopes: list[dict[str, Any]] = field(default_factory=list)
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
            "asked_certificate_status": self.asked_certificate_status,
            "user": self.user,
            "client_certificate": self.client_certificate,
            "probe": self.probe,
            "scope": self.scope,
            "logins": [{"command": command, "user": user, "tls": tls, "accepted": accepted}
                       for command, user, tls, accepted in self.logins],
            "verdicts": [verdict.code for verdict in self.verdicts],
            "verdict_details": [asdict(verdict) for verdict in self.verdicts],
            "transcript": [{"at": round(at, 3), "sender": sender, "tls": tls, "text": text}
                           for at, sender, tls, text in self.lines],
            "transcript_truncated": self.transcript_truncated,
            "envelopes": self.envelopes,
        }


    @classmethod
    def from_json(cls, value: dict[str, Any]) -> SessionRecord:
        """A record read back from its public form (a journal file line). What only the verdicts
        needed (credentials, canaries ...) is not in that form; the verdicts themselves are."""
        client = str(value["client"])
        return cls(
            id=int(value["id"]), listener=value["listener"], protocol=value["protocol"], tls_mode=value["tls_mode"],
            scenario=value["scenario"], client=client, client_host=client.rpartition(":")[0].strip("[]"),
            started=datetime.fromisoformat(value["started"]).timestamp(),
            ended=datetime.fromisoformat(value["ended"]).timestamp() if value["ended"] else None,
            tls_version=value["tls_version"], cipher=value["cipher"], sni=value["sni"], starttls=value["starttls"],
            starttls_attempted=value["starttls_attempted"], tls_alert=value["tls_alert"],
            tls_handshake=value["tls_handshake"], asked_certificate_status=value.get("asked_certificate_status"),
            user=value["user"], probe=value["probe"], scope=value["scope"],
            client_certificate=value.get("client_certificate"),
            logins=[(login["command"], login["user"], login["tls"], login["accepted"]) for login in value["logins"]],
            verdicts=[Verdict(verdict["code"], verdict["detail"]) for verdict in value["verdict_details"]],
            lines=[(line["at"], line["sender"], line["tls"], line["text"]) for line in value["transcript"]],
            transcript_truncated=value["transcript_truncated"], envelopes=list(value.get("envelopes", [])),
        )


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


class Journal:
    """The last `max_sessions` finished client sessions, the last probe sessions, and the ones still
    open. Thread-safe for readers. `one_client`: every session is from one client (a per-test
    server), which is what lets `fallback` tie one session to another."""

    def __init__(self, max_sessions: int = 1000, max_transcript_lines: int = 500, path: Path | None = None,
                 *, enabled: bool = True, one_client: bool = False, restore: bool = False) -> None:
        self.enabled = enabled
        self.max_transcript_lines = max_transcript_lines
        self.path = path
        self.one_client = one_client
        self._finished: deque[SessionRecord] = deque(maxlen=max_sessions)
        self._probes: deque[SessionRecord] = deque(maxlen=MAX_PROBE_SESSIONS)
        self._open: dict[int, SessionRecord] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._finished_changed = threading.Condition(self._lock)
        self._history = History()
        # Told of each finished session, with its verdicts (`serve -v` prints a line); on the server's loop.
        self.finished_hooks: list[Callable[[SessionRecord], None]] = []
        self.restore = restore and path is not None
        if self.restore:
            self._restore()

    def _restore(self) -> None:
        """The sessions of the journal file, as a restart finds them: the last max_sessions kept
        (and the file cut down to them once it holds twice as many). A line a kill cut short is
        skipped. New sessions are numbered after the last one read."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        lines = data.splitlines()
        records = []
        for line in lines:
            try:
                records.append(SessionRecord.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                log.warning("journal: %s: a line that is no session record is skipped", self.path)
        for record in records:
            (self._probes if record.probe else self._finished).append(record)
        self._ids = itertools.count(max((record.id for record in records), default=0) + 1)
        kept = [*self._finished, *self._probes]
        if len(lines) > 2 * len(kept) or (data and not data.endswith(b"\n")):
            self._rewrite(sorted(kept, key=lambda record: record.ended or 0.0))

    def _rewrite(self, records: list[SessionRecord]) -> None:
        assert self.path is not None
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("w", encoding="utf-8") as file:
            file.writelines(json.dumps(record.to_json()) + "\n" for record in records)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

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
            scope="server" if self.one_client else None,
        )
        if self.enabled:
            with self._lock:
                self._open[record.id] = record
        return record

    def finish(self, record: SessionRecord) -> None:
        if record.ended is not None or not self.enabled:
            return
        record.ended = time.time()
        record.probe = is_probe_session(record.protocol, record.sni, record.lines)
        if not record.probe:  # our own probe is judged by the explain table, not by verdicts
            with self._lock:  # the history is shared with other threads (clear)
                record.verdicts = [Verdict(code, detail) for code, detail in evaluate(record, self._history)]
                self._history.note(record)
        line = json.dumps(record.to_json()) + "\n" if self.path is not None else ""
        with self._lock:
            self._open.pop(record.id, None)
            (self._probes if record.probe else self._finished).append(record)
            if self.path is not None:
                # Under the lock, so a reader woken below finds the line already written.
                with self.path.open("a", encoding="utf-8") as file:
                    file.write(line)
            self._finished_changed.notify_all()
        for hook in list(self.finished_hooks):
            hook(record)

    def sessions(
        self, *, verdict: str | None = None, listener: str | None = None, include_open: bool = False,
        probes: bool | None = None,
    ) -> list[SessionRecord]:
        """Finished sessions in the order they ended (and the open ones after them). `probes`: True
        only our probes', False none of them; None (the default) both, except that a verdict query
        never matches a probe: a probe's verdicts describe the probe's client setting, not a client."""
        with self._lock:
            records = self._all_finished() + (list(self._open.values()) if include_open else [])
        return self._match(records, verdict=verdict, listener=listener, probes=probes)

    def _all_finished(self) -> list[SessionRecord]:
        return list(heapq.merge(self._finished, self._probes, key=lambda record: record.ended or 0.0))

    @staticmethod
    def _match(records: list[SessionRecord], verdict: str | None = None, listener: str | None = None,
               probes: bool | None = None) -> list[SessionRecord]:
        if probes is None and verdict is not None:
            probes = False
        return [
            r for r in records
            if (verdict is None or r.has(verdict)) and (listener is None or r.listener == listener)
            and (probes is None or r.probe == probes)
        ]

    def wait_for(self, count: int = 1, timeout: float = 10.0, **filters: Any) -> list[SessionRecord]:
        """Block (another thread than the server's) until `count` finished sessions match."""
        with self._finished_changed:
            self._finished_changed.wait_for(lambda: len(self._match(self._all_finished(), **filters)) >= count,
                                            timeout)
            return self._match(self._all_finished(), **filters)

    def settle(self, timeout: float) -> None:
        """Block until every session open now has finished (or `timeout` passed)."""
        with self._finished_changed:
            waiting = set(self._open)
            self._finished_changed.wait_for(lambda: not waiting & set(self._open), timeout)

    def clear(self) -> None:
        with self._lock:
            self._finished.clear()
            self._probes.clear()
            self._history.clear()
            if self.restore:  # kept sessions are cleared too, or a restart would bring them back
                self._rewrite([])
