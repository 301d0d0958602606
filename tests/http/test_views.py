"""The API's JSON shapes without a server: session serialisation, filters, hostile mail."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from mailmodes.config import parse_config
from mailmodes.record.journal import Journal, SessionRecord
from mailmodes.store import Mailbox
from mailmodes.web.views import (
    BadQuery,
    SessionJson,
    message_detail,
    message_summary,
    parse_session_filter,
    parse_time,
)

LISTENER = parse_config({"listeners": [{"name": "plain", "protocol": "smtp", "port": 0, "tls": "plaintext"}]},
                        source="test").listeners[0]


def finished(journal: Journal, user: str | None = None, lines: int = 3) -> SessionRecord:
    record = journal.open(LISTENER, ("127.0.0.1", 40000))
    record.user = user
    record.lines = [(0.1 * n, "client", False, f"line {n} \u2028 </script>") for n in range(lines)]
    journal.finish(record)
    return record


def test_listing_is_the_public_shape_and_reuses_finished_sessions() -> None:
    journal = Journal()
    records = [finished(journal, "alice"), finished(journal)]
    cache = SessionJson()
    listing = json.loads(cache.listing(records, transcript=True))
    assert listing == {"count": 2, "sessions": [json.loads(json.dumps(r.to_json())) for r in records]}
    summary = json.loads(cache.listing(records, transcript=False))["sessions"][0]
    assert "transcript" not in summary and summary["transcript_lines"] == 3
    assert cache.is_cached(records[0])
    # A finished record does not change, so the cached bytes are served as they are.
    assert cache.encode(records[0], transcript=True) is cache.encode(records[0], transcript=True)
    journal.clear()
    cache.forget_except(journal.sessions(include_open=True))
    assert not cache.is_cached(records[0])


def test_open_sessions_are_never_cached() -> None:
    journal = Journal()
    record = journal.open(LISTENER, ("127.0.0.1", 40000))
    cache = SessionJson()
    first = json.loads(cache.encode(record, transcript=True))
    record.lines.append((0.0, "server", False, "220 hi"))
    assert json.loads(cache.encode(record, transcript=True))["transcript"] != first["transcript"]
    assert not cache.is_cached(record)


def test_filters() -> None:
    journal = Journal()
    alice, nobody = finished(journal, "alice"), finished(journal)
    assert parse_session_filter({"user": "alice"}).select(journal) == [alice]
    assert parse_session_filter({"after_id": str(alice.id)}).select(journal) == [nobody]
    assert parse_session_filter({"limit": "1"}).select(journal) == [nobody]
    assert parse_session_filter({"until": str(alice.started)}).select(journal) == []
    with pytest.raises(BadQuery, match="after_id: must be at least 0"):
        parse_session_filter({"after_id": "-1"})


@pytest.mark.parametrize(("text", "expected"), [
    ("1700000000", 1700000000.0),
    ("1700000000.5", 1700000000.5),
    ("2023-11-14T22:13:20Z", 1700000000.0),
    ("2023-11-14T22:13:20", 1700000000.0),  # no offset: UTC
    ("2023-11-14T23:13:20+01:00", 1700000000.0),
])
def test_times(text: str, expected: float) -> None:
    assert parse_time({"since": text}, "since") == expected


@pytest.mark.parametrize("data", [
    b"",
    b"\x00\xff\xfe",
    b"Subject: =?bogus?q?x?=\r\nFrom: <<<@@@>>>\r\nTo: ;;;,,\r\n\r\n",
    b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
    b"Content-Type: text/plain; charset=no-such-charset\r\n\r\n\xe9\r\n",
    b"Content-Type: application/octet-stream; name*0*=''%ff; name*1=\"x\r\n\r\nAAAA\r\n",
])
def test_hostile_mail_never_raises(data: bytes) -> None:
    mailbox = Mailbox("INBOX")
    message = mailbox.append(data, internal_date=datetime(2024, 1, 1, tzinfo=timezone.utc))
    summary = message_summary(mailbox, message)
    assert summary["size"] == len(data) and summary["internal_date"] == "2024-01-01T00:00:00.000+00:00"
    detail = message_detail(data)
    json.dumps(detail)  # always serialisable
    assert isinstance(detail["parts"], list)


def test_unknown_charset_falls_back_to_utf8() -> None:
    detail = message_detail(b"Content-Type: text/plain; charset=no-such-charset\r\n\r\ncaf\xc3\xa9\r\n")
    assert detail["parts"][0]["text"] == "caf\u00e9\r\n"
