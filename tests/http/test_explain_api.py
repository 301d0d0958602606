"""POST /api/explain: `mailmodes explain` against the server's own listeners, over real loopback
connections, served as the table's JSON and kept for a while so the dashboard cannot hammer it;
GET /api/explain only reads the kept table. The probe's sessions are marked as a probe's."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.web.server import EXPLAIN_CACHE_SECONDS
from support import smtp_after_ehlo, verdict_codes

HOST = "127.0.0.1"
LISTENERS = (
    {"name": "submissions", "protocol": "smtp", "tls": "implicit"},
    {"name": "submission", "protocol": "smtp", "tls": "starttls-required"},
    {"name": "imaps", "protocol": "imap", "tls": "implicit"},
    {"name": "pop3", "protocol": "pop3", "tls": "starttls-required"},
)
CELLS_PER_PROBE = len(LISTENERS) * 4

# The words of tests/explain/test_explain_table.py: what `mailmodes explain` says for these modes.
WORKS = ("works", "works (TLS 1.3)")
REFUSED = ("refused", "refused before login: server requires STARTTLS")
HANGS = ("hangs", "hangs waiting for a greeting (the port speaks TLS first) — timed out after 1.5s")
WRONG_VERSION = ("tls-error", "TLS error: wrong version number (the port speaks plaintext first)")
# Columns: implicit TLS, STARTTLS required, STARTTLS if available, no TLS.
EXPECTED = {
    "submissions": (WORKS, HANGS, HANGS, HANGS),
    "submission": (WRONG_VERSION, WORKS, WORKS, REFUSED),
    "imaps": (WORKS, HANGS, HANGS, HANGS),
    "pop3": (WRONG_VERSION, WORKS, WORKS, REFUSED),
}


def get(server: ThreadedMailServer, path: str, status: int = 200, method: str = "GET",
        headers: dict[str, str] | None = None) -> Any:
    connection = http.client.HTTPConnection(HOST, server.http_port, timeout=30)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == status, body
    assert response.getheader("Content-Type").startswith("application/json")
    return json.loads(body)


def post(server: ThreadedMailServer, path: str, status: int = 200, headers: dict[str, str] | None = None) -> Any:
    return get(server, path, status, "POST", headers)


@pytest.fixture
def server(api_server: Callable[..., ThreadedMailServer]) -> ThreadedMailServer:
    return api_server(*LISTENERS)


def test_the_table_of_the_servers_own_listeners(server: ThreadedMailServer) -> None:
    table = post(server, "/api/explain")
    assert table["cached"] is False and table["age"] == 0.0
    assert [s["setting"] for s in table["settings"]] == ["implicit", "starttls-required", "starttls-if-available",
                                                         "none"]
    assert [(s["thunderbird"], s["outlook"]) for s in table["settings"]] == [
        ("SSL/TLS", "SSL/TLS"), ("STARTTLS", "STARTTLS"), ("STARTTLS, if available (older versions)", "Auto"),
        ("None", "None")]
    assert [row["listener"] for row in table["rows"]] == list(EXPECTED)
    for row in table["rows"]:
        assert row["port"] == server.port(row["listener"]) and row["address"] == f"{HOST}:{row['port']}"
        assert row["mode"] == next(listener["tls"] for listener in LISTENERS if listener["name"] == row["listener"])
        assert [c["setting"] for c in row["cells"]] == [s["setting"] for s in table["settings"]]
        assert tuple((c["outcome"], c["text"]) for c in row["cells"]) == EXPECTED[row["listener"]], row["listener"]
        assert all(c["reason"] for c in row["cells"])
    submission = {c["setting"]: c["reason"] for c in table["rows"][1]["cells"]}
    assert submission["none"].endswith("login: 538 5.7.11 Encryption required for requested authentication "
                                       "mechanism")
    assert 1.5 <= table["seconds"] < 9 and table["user"] == "alice"
    assert table["cache_seconds"] == EXPLAIN_CACHE_SECONDS


def test_the_probes_own_sessions_are_in_the_journal_between_started_and_finished(server: ThreadedMailServer) -> None:
    table = post(server, "/api/explain")
    server.journal.wait_for(CELLS_PER_PROBE)
    query = urlencode({"since": table["started"], "until": table["finished"], "transcript": "true"})
    sessions = get(server, f"/api/sessions?{query}")["sessions"]
    assert len(sessions) == CELLS_PER_PROBE
    assert all(s["probe"] for s in sessions), [s["transcript"][:3] for s in sessions if not s["probe"]]
    assert {s["user"] for s in sessions} == {"alice", None}  # logged in as the first user, where it could
    # Its SMTP sessions (those that got as far as EHLO) name the probe.
    ehlo = [line["text"] for s in sessions for line in s["transcript"]
            if line["sender"] == "client" and line["text"].startswith("EHLO")]
    assert ehlo and set(ehlo) == {"EHLO probe.mailmodes.invalid"}


def test_the_result_is_kept_and_refresh_probes_again(server: ThreadedMailServer) -> None:
    first = post(server, "/api/explain")
    sessions = len(server.journal.wait_for(CELLS_PER_PROBE))

    started = time.monotonic()
    kept = post(server, "/api/explain")
    assert time.monotonic() - started < 0.5
    assert kept["cached"] is True and 0 < kept["age"] < EXPLAIN_CACHE_SECONDS
    assert {k: v for k, v in kept.items() if k not in ("cached", "age")} == \
        {k: v for k, v in first.items() if k not in ("cached", "age")}
    assert post(server, "/api/explain?refresh=0")["started"] == first["started"]
    assert len(server.journal.sessions(include_open=True)) == sessions  # nothing connected

    again = post(server, "/api/explain?refresh=1")
    assert again["cached"] is False and again["started"] > first["finished"]
    assert len(server.journal.wait_for(sessions + CELLS_PER_PROBE)) == sessions + CELLS_PER_PROBE
    assert get(server, "/api/explain")["started"] == again["started"]

    post(server, "/api/explain?refresh=maybe", status=400)


def test_requests_during_a_probe_share_it_and_the_api_keeps_answering(server: ThreadedMailServer) -> None:
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(post(server, "/api/explain?refresh=1")))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    server.journal.wait_for(1)  # the probe is under way: its first connection has finished
    # The probe runs on a thread, not on the loop the API and the mail listeners share.
    started = time.monotonic()
    assert get(server, "/api/health")["status"] == "ok"
    assert time.monotonic() - started < 0.5
    for thread in threads:
        thread.join(30)
    assert len(results) == 3
    assert len({result["started"] for result in results}) == 1  # one probe, not three
    assert sorted(result["cached"] for result in results) == [False, True, True]
    assert len(server.journal.wait_for(CELLS_PER_PROBE)) == CELLS_PER_PROBE
    assert len(server.journal.sessions(include_open=True)) == CELLS_PER_PROBE


def test_a_get_never_starts_a_probe(server: ThreadedMailServer) -> None:
    """An <img src=".../api/explain?refresh=1"> on any web page must not make the server probe."""
    # 404: no table yet, so the GET ran no probe (a probe's GET would have answered its table).
    get(server, "/api/explain?refresh=1", status=404)
    assert server.journal.sessions(include_open=True) == []
    table = post(server, "/api/explain")
    assert get(server, "/api/explain?refresh=1")["started"] == table["started"]  # the kept table, as it was


def test_a_page_of_another_origin_cannot_start_a_probe(server: ThreadedMailServer) -> None:
    """A plain form POST needs no CORS preflight: the Origin it carries is refused."""
    post(server, "/api/explain", status=403, headers={"Origin": "http://evil.example"})
    get(server, "/api/sessions", status=403, method="DELETE", headers={"Origin": "null"})
    own = f"http://{HOST}:{server.http_port}"
    assert post(server, "/api/explain", headers={"Origin": own})["cached"] is False


def test_probe_sessions_are_kept_out_of_verdict_queries_and_of_the_eviction_of_client_sessions(
        api_server: Callable[..., ThreadedMailServer]) -> None:
    server = api_server(*LISTENERS, journal={"max_sessions": 5})
    sock, reader = smtp_after_ehlo(server.port("submission"))  # a client that earns a verdict
    with sock:
        sock.sendall(b"AUTH LOGIN\r\nQUIT\r\n")
        reader.read()
    client = server.journal.wait_for(1)[0]
    assert "credentials-in-clear" in verdict_codes(client)
    post(server, "/api/explain")
    probes = server.journal.wait_for(CELLS_PER_PROBE + 1)
    assert client in probes  # 16 probe sessions did not push the client's one out of a journal of 5
    assert [s["id"] for s in get(server, "/api/sessions?verdict=credentials-in-clear")["sessions"]] == [client.id]
    assert [r.id for r in server.journal.sessions(verdict="credentials-in-clear")] == [client.id]
    assert len(get(server, "/api/sessions?probe=true")["sessions"]) == CELLS_PER_PROBE
    assert [s["id"] for s in get(server, "/api/sessions?probe=false")["sessions"]] == [client.id]
