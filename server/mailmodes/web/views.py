"""The JSON shapes the HTTP API serves: listeners, sessions, messages. No I/O, no aiohttp.

Everything here reads the store and the journal; callers run it on the server's event loop (the
HTTP handlers do), so the store needs no locking. Mail content is hostile input: it only ever
leaves here as JSON strings (json.dumps escapes it) or as raw bytes for a download.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any
from urllib.parse import quote, unquote

from mailmodes.config import Config, Listener, chaos_table
from mailmodes.record.journal import Journal, SessionRecord
from mailmodes.record.report import FORMATS, ReportCard, build
from mailmodes.store import CapturedMessage, Mailbox, MailboxInterface, Message, Store, StoreInterface

# The headers a list of messages shows (decoded from RFC 2047 encoded-words).
SUMMARY_HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID")
# A text part longer than this is cut in the message view (the raw download has it all).
MAX_TEXT_SHOWN = 256 * 1024


class BadQuery(ValueError):
    """A query parameter the API cannot use; str() names the parameter and what is allowed."""


# --- listeners --------------------------------------------------------------------------------


def listener_view(listener: Listener, config: Config, ports: Mapping[str, int]) -> dict[str, Any]:
    return {
        "name": listener.name,
        "protocol": listener.protocol,
        "host": listener.host or config.host,
        "port": ports.get(listener.name),
        "configured_port": listener.port,
        "mode": str(listener.tls),
        "role": listener.role if listener.protocol == "smtp" else None,
        "scenario": listener.scenario,
        "chaos": chaos_table(listener.chaos),
        "running": listener.name in ports,
    }


# --- sessions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionFilter:
    listener: str | None = None
    protocol: str | None = None
    mode: str | None = None
    user: str | None = None
    verdict: str | None = None
    client: str | None = None
    since: float | None = None  # started at or after (seconds since the epoch)
    until: float | None = None  # started before
    after_id: int | None = None
    include_open: bool = True
    limit: int | None = None  # the last N that match
    probe: bool | None = None  # True: only our probes' sessions; False: none; None: both (a verdict query: none)

    def matches(self, record: SessionRecord) -> bool:
        probe = False if self.probe is None and self.verdict is not None else self.probe
        return (
            (probe is None or record.probe == probe) and
            (self.listener is None or record.listener == self.listener)
            and (self.protocol is None or record.protocol == self.protocol)
            and (self.mode is None or record.tls_mode == self.mode)
            and (self.user is None or record.user == self.user)
            and (self.verdict is None or record.has(self.verdict))
            and (self.client is None or record.client_host == self.client or record.client == self.client)
            and (self.since is None or record.started >= self.since)
            and (self.until is None or record.started < self.until)
            and (self.after_id is None or record.id > self.after_id)
        )

    def select(self, journal: Journal) -> list[SessionRecord]:
        records = sorted(journal.sessions(include_open=self.include_open), key=lambda r: r.id)
        chosen = [record for record in records if self.matches(record)]
        return chosen[-self.limit:] if self.limit else chosen


def parse_session_filter(query: dict[str, str]) -> SessionFilter:
    """The API's query parameters (all optional) -> a SessionFilter; BadQuery names a bad one."""
    known = {"listener", "protocol", "mode", "user", "verdict", "client", "since", "until", "after_id",
             "open", "limit", "transcript", "probe"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise BadQuery(f"unknown query parameter {unknown[0]!r} (allowed: {', '.join(sorted(known))})")
    return SessionFilter(
        listener=query.get("listener") or None,
        protocol=query.get("protocol") or None,
        mode=query.get("mode") or None,
        user=query.get("user") or None,
        verdict=query.get("verdict") or None,
        client=query.get("client") or None,
        since=parse_time(query, "since"),
        until=parse_time(query, "until"),
        after_id=parse_int(query, "after_id", minimum=0),
        include_open=parse_bool(query, "open", True),
        limit=parse_int(query, "limit", minimum=1),
        probe=parse_bool(query, "probe", False) if query.get("probe") else None,
    )


REPORT_PARAMETERS = ("client", "since", "until", "protocol", "listener")


def report_card(journal: Journal, query: dict[str, str]) -> tuple[ReportCard, str]:
    """GET /api/report: the card of the finished client sessions the query scopes, and the format
    asked for. Probes are never on a card."""
    known = {*REPORT_PARAMETERS, "format"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise BadQuery(f"unknown query parameter {unknown[0]!r} (allowed: {', '.join(sorted(known))})")
    format = query.get("format") or "json"
    if format not in FORMATS:
        raise BadQuery(f"format: {format!r} is not one of {', '.join(FORMATS)}")
    scope = {name: query[name] for name in REPORT_PARAMETERS if query.get(name)}
    chosen = parse_session_filter({**scope, "probe": "false", "open": "false"})
    return build(chosen.select(journal), scope), format


def parse_time(query: dict[str, str], name: str) -> float | None:
    """ISO 8601 (a time without an offset is UTC) or seconds since the epoch."""
    text = query.get(name)
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadQuery(f"{name}: {text!r} is neither an ISO 8601 time nor seconds since the epoch") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def parse_int(query: dict[str, str], name: str, minimum: int) -> int | None:
    text = query.get(name)
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise BadQuery(f"{name}: {text!r} is not a whole number") from None
    if value < minimum:
        raise BadQuery(f"{name}: must be at least {minimum}")
    return value


def parse_bool(query: dict[str, str], name: str, default: bool) -> bool:
    text = query.get(name, "").lower()
    if not text:
        return default
    if text in ("1", "true", "yes"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise BadQuery(f"{name}: {text!r} is not one of true, false")


class SessionJson:
    """Finished sessions serialised once: a record does not change after Journal.finish, and
    listing a full journal (1,000 sessions) must stay well under 100 ms."""

    def __init__(self) -> None:
        # id -> (the record, with transcript, without); the record is kept to notice a reused id
        self._cache: dict[int, tuple[SessionRecord, bytes, bytes]] = {}

    def encode(self, record: SessionRecord, *, transcript: bool) -> bytes:
        cached = self._cache.get(record.id)
        if cached is None or cached[0] is not record:
            full, summary = self._dump(record)
            if record.ended is None:  # still open: it changes as the client talks
                return full if transcript else summary
            cached = self._cache[record.id] = (record, full, summary)
        return cached[1] if transcript else cached[2]

    def is_cached(self, record: SessionRecord) -> bool:
        cached = self._cache.get(record.id)
        return cached is not None and cached[0] is record

    @staticmethod
    def _dump(record: SessionRecord) -> tuple[bytes, bytes]:
        """(with transcript, without): to_json() once, it is the costly part."""
        shape = record.to_json()
        full = json.dumps(shape).encode()
        shape["transcript_lines"] = len(shape.pop("transcript"))
        return full, json.dumps(shape).encode()

    def forget_except(self, records: Iterable[SessionRecord]) -> None:
        """Drop what the journal no longer holds (rotated out, or cleared)."""
        keep = {record.id for record in records}
        for stale in [key for key in self._cache if key not in keep]:
            del self._cache[stale]

    def listing(self, records: list[SessionRecord], *, transcript: bool) -> bytes:
        parts = b",".join(self.encode(record, transcript=transcript) for record in records)
        return b'{"count": %d, "sessions": [%s]}' % (len(records), parts)


# --- messages ---------------------------------------------------------------------------------


def _parse(data: bytes, headers_only: bool) -> EmailMessage | None:
    try:
        parsed = BytesParser(policy=policy.default).parsebytes(data, headersonly=headers_only)
    # Hostile input: the stdlib parser is lenient, but never let one message break a list.
    except Exception:  # noqa: BLE001
        return None
    return parsed if isinstance(parsed, EmailMessage) else None


def _header(message: EmailMessage, name: str) -> str | None:
    try:
        value = message.get(name)
    # Malformed header that the folding/decoding code chokes on: show it raw, as sent (asking
    # again through the message, under any policy, would run the same failing parser).
    except Exception:  # noqa: BLE001
        wanted = name.lower()
        raw = next((value for key, value in message.raw_items() if key.lower() == wanted), None)
        return None if raw is None else str(raw)
    return None if value is None else str(value)


def header_summary(message: EmailMessage | None) -> dict[str, str | None]:
    key = {name: name.lower().replace("-", "_") for name in SUMMARY_HEADERS}
    if message is None:
        return {key[name]: None for name in SUMMARY_HEADERS}
    return {key[name]: _header(message, name) for name in SUMMARY_HEADERS}


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def message_summary(mailbox: MailboxInterface, message: Message) -> dict[str, Any]:
    parsed = message.derived("api-headers", lambda data: _parse(data, headers_only=True))
    return {
        "mailbox": mailbox.name,
        "uid": message.uid,
        "flags": sorted(message.flags),
        "size": message.size,
        "internal_date": _iso(message.internal_date),
        "headers": header_summary(parsed if isinstance(parsed, EmailMessage) else None),
    }


def _parts(message: EmailMessage) -> Iterator[dict[str, Any]]:
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        raw = payload if isinstance(payload, bytes) else b""
        text: str | None = None
        if part.get_content_maintype() == "text":
            # HTML stays source text: the dashboard shows it in a <pre>, never renders it.
            charset = part.get_content_charset() or "us-ascii"
            try:
                text = raw.decode(charset, "replace")
            except LookupError:  # an unknown charset name
                text = raw.decode("utf-8", "replace")
        yield {
            "content_type": part.get_content_type(),
            "charset": part.get_content_charset(),
            "filename": _safe_call(part.get_filename),
            "size": len(raw),
            "text": text[:MAX_TEXT_SHOWN] if text is not None else None,
            "truncated": text is not None and len(text) > MAX_TEXT_SHOWN,
        }


def _safe_call(function: Any) -> Any:
    try:
        return function()
    # Hostile parameters (RFC 2231 continuations gone wrong).
    except Exception:  # noqa: BLE001
        return None


def message_detail(message_bytes: bytes) -> dict[str, Any]:
    """Every header (decoded) and every leaf part, text parts as text."""
    parsed = _parse(message_bytes, headers_only=False)
    if parsed is None:
        return {"header_list": [], "parts": [], "parse_error": True}
    header_list = [[name, _header_value(name, value)] for name, value in parsed.raw_items()]
    try:
        parts = list(_parts(parsed))
    # A body structure the stdlib cannot walk: headers are still useful.
    except Exception:  # noqa: BLE001
        return {"header_list": header_list, "parts": [], "parse_error": True}
    return {"header_list": header_list, "parts": parts, "parse_error": False}


def _header_value(name: str, value: Any) -> str:
    try:
        return str(policy.default.header_fetch_parse(name, value) if isinstance(value, str) else value)
    # As above: a header that will not decode is shown as sent.
    except Exception:  # noqa: BLE001
        return str(value)


def mailbox_from_segment(raw: str) -> str:
    """A mailbox name from its URL path segment as sent. Names keep octets that are not UTF-8
    (IMAP accepts them: parser.decode_name); aiohttp's match_info would leave such an octet as
    the text "%E9", so the raw segment is decoded here the same way as IMAP decodes names."""
    return unquote(raw, errors="surrogateescape")


def mailbox_segment(name: str) -> str:
    """The URL path segment that mailbox_from_segment reads back as `name`."""
    return quote(name.encode("utf-8", "surrogateescape"), safe="")


def find_mailbox(store: StoreInterface, user: str, mailbox: str) -> MailboxInterface | None:
    account = store.accounts.get(user)
    return None if account is None else account.mailbox(mailbox)


def overview(store: StoreInterface) -> dict[str, Any]:
    users = []
    for name, account in store.accounts.items():
        mailboxes = [
            {"name": box.name, "special_use": box.special_use, "messages": len(box.messages),
             "size": sum(m.size for m in box.messages), "uidvalidity": box.uidvalidity}
            for box in account.mailboxes.values()
        ]
        users.append({"user": name, "addresses": list(account.addresses), "mailboxes": mailboxes})
    return {"users": users, "captured": len(store.captured)}


def user_messages(store: StoreInterface, user: str) -> list[dict[str, Any]]:
    account = store.accounts[user]
    return [message_summary(box, message) for box in account.mailboxes.values() for message in box.messages]


def delete_messages(store: StoreInterface, user: str | None = None, mailbox: str | None = None) -> int:
    """Expunge messages (all, one user's, or one mailbox's); IMAP sessions see EXPUNGE as usual."""
    deleted = 0
    for name, account in store.accounts.items():
        if user is not None and name != user:
            continue
        for box in account.mailboxes.values():
            if mailbox is None or box is account.mailbox(mailbox):
                deleted += len(box.expunge([m.uid for m in box.messages]))
    return deleted


def captured_summary(index: int, captured: CapturedMessage) -> dict[str, Any]:
    return {
        "id": index,
        "sender_account": captured.sender_account,
        "mail_from": captured.mail_from,
        "recipients": list(captured.recipients),
        "received": _iso(captured.received),
        "size": len(captured.data),
        "headers": header_summary(_parse(captured.data, headers_only=True)),
    }


def captured_list(store: StoreInterface) -> list[dict[str, Any]]:
    # ids count from 1 in arrival order; they restart after DELETE /api/captured
    return [captured_summary(index, message) for index, message in enumerate(store.captured, 1)]


# --- change detection for /api/events ---------------------------------------------------------


def sessions_version(journal: Journal) -> tuple[int, ...]:
    """Changes whenever a session opens, says something, or finishes (or the journal is cleared)."""
    records = journal.sessions(include_open=True)
    finished = [r for r in records if r.ended is not None]
    version = [len(finished), finished[-1].id if finished else 0]
    for record in records:
        if record.ended is None:
            version += [record.id, len(record.lines)]
    return tuple(version)


def messages_version(store: StoreInterface) -> tuple[int, ...]:
    version = [len(store.captured)]
    for account in store.accounts.values():
        for box in account.mailboxes.values():
            version += [box.uidnext, len(box.messages)]
    return tuple(version)
