"""The HTTP API contract: every endpoint, the filters, errors as JSON, the headers, and the
OpenAPI description matching the routes. Real servers, real clients (smtplib, curl), real HTTP."""

from __future__ import annotations

import http.client
import json
import smtplib
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ListenerError, ThreadedMailServer
from mailmodes.config import HttpConfig
from mailmodes.protocols import PROTOCOLS
from mailmodes.protocols.imap.parser import decode_name
from mailmodes.tls.policy import TlsMode
from mailmodes.web.server import HttpServer
from support import make_config

HOST = "127.0.0.1"
PASSWORD = "alice-password"
LISTENERS = (
    {"name": "plain", "protocol": "smtp", "tls": "plaintext"},
    {"name": "submission", "protocol": "smtp", "tls": "starttls-required"},
    {"name": "submissions", "protocol": "smtp", "tls": "implicit"},
    {"name": "imaps", "protocol": "imap", "tls": "implicit"},
)


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        assert self.headers["Content-Type"].startswith("application/json"), self.headers["Content-Type"]
        return json.loads(self.body)


def request(server: ThreadedMailServer, path: str, method: str = "GET", host: str | None = None) -> Reply:
    connection = http.client.HTTPConnection(HOST, server.http_port, timeout=10)
    try:
        headers = {"Host": host} if host else {}
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.msg, response.read())
    finally:
        connection.close()


def get_json(server: ThreadedMailServer, path: str, status: int = 200) -> Any:
    reply = request(server, path)
    assert reply.status == status, reply.body
    return reply.json()


@pytest.fixture
def server(api_server: Callable[..., ThreadedMailServer]) -> ThreadedMailServer:
    return api_server(*LISTENERS)


def plaintext_login_and_send(server: ThreadedMailServer, message: bytes, to: str = "bob@example.test") -> None:
    with smtplib.SMTP(HOST, server.port("plain"), timeout=10) as client:
        client.login("alice", PASSWORD)
        client.sendmail("alice@example.test", [to], message)


def starttls_login(server: ThreadedMailServer, context: ssl.SSLContext) -> None:
    with smtplib.SMTP(HOST, server.port("submission"), timeout=10) as client:
        client.starttls(context=context)
        client.login("alice", PASSWORD)


# --- description, dashboard files, CA, health ----------------------------------------------


def test_openapi_describes_exactly_the_routes(server: ThreadedMailServer) -> None:
    document = get_json(server, "/openapi.json")
    assert document["openapi"] == "3.1.0"
    described = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    routes = {(method, path) for method, path, _ in HttpServer(server.server, HttpConfig(port=0)).routes()}
    assert described == routes
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_dashboard_files_and_security_headers(server: ThreadedMailServer) -> None:
    page = request(server, "/")
    assert page.status == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b'<script src="/static/app.js" defer></script>' in page.body
    assert b"<script>" not in page.body and b"style=" not in page.body  # nothing inline: CSP allows none
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        reply = request(server, f"/static/{name}")
        assert reply.status == 200 and reply.headers["Content-Type"] == f"{kind}; charset=utf-8"
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
    script = request(server, "/static/app.js").body
    for sink in (b".innerHTML", b".outerHTML", b"insertAdjacentHTML", b"document.write", b"eval("):
        assert sink not in script
    # The protocol and mode names come from /api/listeners: the dashboard writes none of them out.
    for name in (*PROTOCOLS, *(mode.value for mode in TlsMode)):
        assert f'"{name}"'.encode() not in script and f"<th>{name}</th>".encode() not in page.body, name
    missing = request(server, "/static/index.html")
    assert (missing.status, missing.json()) == (404, {"error": "no such dashboard file: 'index.html'", "status": 404})


def test_ca_pem_is_the_servers_ca(server: ThreadedMailServer) -> None:
    reply = request(server, "/ca.pem")
    assert reply.status == 200
    assert reply.body == Path(str(server.ca_file)).read_bytes()
    assert reply.body.startswith(b"-----BEGIN CERTIFICATE-----")
    assert reply.headers["Content-Disposition"] == 'attachment; filename="mailmodes-ca.pem"'


def test_health_ready_info_listeners(server: ThreadedMailServer) -> None:
    assert get_json(server, "/api/health") == {"status": "ok", "version": "0.1.0"}
    assert get_json(server, "/api/ready") == {"ready": True, "listening": 4}
    info = get_json(server, "/api/info")
    assert info == {"version": "0.1.0", "hostname": "mail.example.test", "http_port": server.http_port, "ca": "/ca.pem",
                    "users": [{"user": "alice", "addresses": ["alice@example.test"]},
                              {"user": "bob", "addresses": ["bob@example.test"]}]}
    listeners = get_json(server, "/api/listeners")["listeners"]
    assert listeners[1] == {"name": "submission", "protocol": "smtp", "host": HOST, "port": server.port("submission"),
                            "configured_port": 0, "mode": "starttls-required", "role": "submission",
                            "scenario": None, "chaos": None, "running": True}
    assert [(entry["name"], entry["role"]) for entry in listeners] == [
        ("plain", "submission"), ("submission", "submission"), ("submissions", "submission"), ("imaps", None)]


def test_listeners_name_every_protocol_and_mode_for_the_dashboard(server: ThreadedMailServer) -> None:
    # The dashboard's matrix has a row per protocol and a column per mode, from this answer only.
    answer = get_json(server, "/api/listeners")
    assert answer["protocols"] == ["smtp", "imap", "pop3"] == list(PROTOCOLS)
    assert answer["tls_modes"] == ["implicit", "starttls-required", "starttls-optional", "plaintext"]
    assert answer["tls_modes"] == [mode.value for mode in TlsMode]
    described = get_json(server, "/openapi.json")["paths"]["/api/listeners"]["get"]["responses"]["200"]
    properties = described["content"]["application/json"]["schema"]["properties"]
    assert properties["protocols"]["const"] == answer["protocols"]
    assert properties["tls_modes"]["const"] == answer["tls_modes"]


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "status", "error"), [
    ("/nowhere", 404, "Not Found"),
    ("/api/sessions/12345", 404, "no session 12345 (finished sessions are kept up to [journal] max_sessions)"),
    ("/api/sessions/x1", 400, "id: 'x1' is not a whole number"),
    ("/api/sessions?limit=0", 400, "limit: must be at least 1"),
    ("/api/sessions?since=yesterday", 400, "since: 'yesterday' is neither an ISO 8601 time nor seconds since the epoch"),
    ("/api/sessions?open=maybe", 400, "open: 'maybe' is not one of true, false"),
    ("/api/sessions?colour=red", 400, ("unknown query parameter 'colour' (allowed: after_id, client, limit, listener, "
                                       "mode, open, probe, protocol, since, transcript, until, user, verdict)")),
    ("/api/messages/carol", 404, "no user 'carol'"),
    ("/api/messages/alice/Nope", 404, "user 'alice' has no mailbox 'Nope'"),
    ("/api/messages/alice/INBOX/7", 404, "mailbox 'INBOX' has no message with UID 7"),
    ("/api/messages/alice/INBOX/7/raw", 404, "mailbox 'INBOX' has no message with UID 7"),
    ("/api/captured/1", 404, "no captured message 1 (0 captured)"),
])
def test_errors_are_json_with_the_status(server: ThreadedMailServer, path: str, status: int, error: str) -> None:
    reply = request(server, path)
    assert (reply.status, reply.json()) == (status, {"error": error, "status": status})
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


def test_wrong_method_is_json_405_with_allow(server: ThreadedMailServer) -> None:
    reply = request(server, "/api/sessions", method="POST")
    assert (reply.status, reply.json()) == (405, {"error": "Method Not Allowed", "status": 405})
    assert set(reply.headers["Allow"].split(",")) == {"GET", "DELETE"}


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8025", "10.0.0.1"])
def test_foreign_host_header_is_refused(server: ThreadedMailServer, host: str) -> None:
    """DNS rebinding: a page from evil.example re-pointed at 127.0.0.1 still says Host: evil.example."""
    reply = request(server, "/api/sessions", host=host)
    assert reply.status == 403
    assert reply.json()["error"].startswith(f"Host {host!r} is not allowed")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8025", "[::1]:8025", "127.0.0.2"])
def test_loopback_host_headers_are_served(server: ThreadedMailServer, host: str) -> None:
    assert request(server, "/api/health", host=host).status == 200


# --- sessions ------------------------------------------------------------------------------


def test_sessions_listing_filters_and_shape(server: ThreadedMailServer, client_context: ssl.SSLContext) -> None:
    plaintext_login_and_send(server, b"Subject: one\r\n\r\nbody\r\n")
    starttls_login(server, client_context)
    with smtplib.SMTP_SSL(HOST, server.port("submissions"), context=client_context, timeout=10) as client:
        client.noop()
    records = server.journal.wait_for(3)
    plain, upgraded, implicit = sorted(records, key=lambda r: r.id)

    listing = get_json(server, "/api/sessions")
    assert listing["count"] == 3
    assert listing["sessions"] == [json.loads(json.dumps(r.to_json())) for r in (plain, upgraded, implicit)]

    def ids(query: str) -> list[int]:
        return [s["id"] for s in get_json(server, f"/api/sessions?{query}")["sessions"]]

    assert ids("verdict=credentials-in-clear") == [plain.id]
    assert ids("listener=submission") == [upgraded.id]
    assert ids("user=alice") == [plain.id, upgraded.id]
    assert ids("mode=implicit") == [implicit.id]
    assert ids("protocol=imap") == []
    assert ids(f"after_id={plain.id}") == [upgraded.id, implicit.id]
    assert ids("limit=2") == [upgraded.id, implicit.id]
    assert ids(f"client={HOST}") == [plain.id, upgraded.id, implicit.id]
    assert ids(f"since={upgraded.started}") == [upgraded.id, implicit.id]
    assert ids(f"until={upgraded.started}") == [plain.id]
    assert ids("since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00") == []

    summary = get_json(server, "/api/sessions?transcript=false&verdict=credentials-in-clear")["sessions"][0]
    assert "transcript" not in summary and summary["transcript_lines"] == len(plain.transcript)
    assert summary["verdicts"] == ["credentials-in-clear"]
    assert summary["verdict_details"] == [{"code": "credentials-in-clear",
                                           "detail": "AUTH PLAIN: the secret itself was sent unencrypted"}]

    one = get_json(server, f"/api/sessions/{upgraded.id}")
    assert one["starttls"] is True and one["tls_version"] == "TLSv1.3" and one["verdicts"] == []
    lines = [(line["sender"], line["tls"], line["text"]) for line in one["transcript"]]
    handshake = next(i for i, line in enumerate(lines) if line[2].startswith("[TLS established"))
    assert lines[handshake - 1] == ("server", False, "220 2.0.0 Ready to start TLS")
    assert lines[handshake][:2] == ("server", True)
    assert all(tls for _, tls, _ in lines[handshake:]) and not any(tls for _, tls, _ in lines[:handshake])
    assert PASSWORD not in json.dumps(one)


def test_open_sessions_are_listed_live_and_can_be_left_out(server: ThreadedMailServer) -> None:
    with smtplib.SMTP(HOST, server.port("plain"), timeout=10) as client:
        client.ehlo()
        live = get_json(server, "/api/sessions")["sessions"]
        assert [(s["listener"], s["ended"], s["verdicts"]) for s in live] == [("plain", None, [])]
        assert [line["text"] for line in live[0]["transcript"]][:2] == [
            "220 mail.example.test ESMTP mailmodes 0.1.0", "ehlo [127.0.0.1]"]
        assert get_json(server, "/api/sessions?open=false")["count"] == 0
    server.journal.wait_for(1)
    assert get_json(server, "/api/sessions?open=false")["sessions"][0]["ended"] is not None


def test_delete_sessions_starts_clean(server: ThreadedMailServer) -> None:
    plaintext_login_and_send(server, b"Subject: x\r\n\r\nx\r\n")
    plaintext_login_and_send(server, b"Subject: y\r\n\r\ny\r\n")
    server.journal.wait_for(2)
    reply = request(server, "/api/sessions", method="DELETE")
    assert (reply.status, reply.json()) == (200, {"deleted": 2})
    assert get_json(server, "/api/sessions") == {"count": 0, "sessions": []}
    plaintext_login_and_send(server, b"Subject: z\r\n\r\nz\r\n")
    [record] = server.journal.wait_for(1)
    assert [s["id"] for s in get_json(server, "/api/sessions")["sessions"]] == [record.id]


# --- messages ------------------------------------------------------------------------------

HOSTILE = (b"From: =?utf-8?q?Ren=C3=A9e_=3Cx=3E?= <renee@example.test>\r\n"
           b"To: bob@example.test\r\n"
           b"Subject: =?utf-8?b?4pyTIDxzY3JpcHQ+YWxlcnQoMSk8L3NjcmlwdD4=?=\r\n"
           b"Date: Tue, 01 Oct 2024 10:00:00 +0000\r\n"
           b"Message-ID: <1@example.test>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: multipart/alternative; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain; charset=latin-1\r\n\r\nCaf\xe9 \x1b[31m\r\n"
           b"--b\r\nContent-Type: text/html\r\n\r\n<b onclick=x()>hi</b>\r\n"
           b"--b--\r\n")


def test_messages_per_user_mailbox_detail_and_raw(server: ThreadedMailServer) -> None:
    plaintext_login_and_send(server, HOSTILE)
    plaintext_login_and_send(server, b"Subject: second\r\n\r\nsecond\r\n")

    overview = get_json(server, "/api/messages")
    bob = next(user for user in overview["users"] if user["user"] == "bob")
    inbox = bob["mailboxes"][0]
    assert (inbox["name"], inbox["messages"]) == ("INBOX", 2)
    assert [box["name"] for box in bob["mailboxes"]] == ["INBOX", "Sent", "Drafts", "Trash", "Junk"]
    assert overview["captured"] == 0

    listing = get_json(server, "/api/messages/bob/INBOX")
    first = listing["messages"][0]
    assert first["uid"] == 1 and first["size"] == len(HOSTILE) and first["flags"] == []
    # the decoded display name is quoted again, so its "<x>" cannot pass for an address
    assert first["headers"] == {"from": '"Renée <x>" <renee@example.test>', "to": "bob@example.test", "cc": None,
                                "subject": "\u2713 <script>alert(1)</script>",
                                "date": "Tue, 01 Oct 2024 10:00:00 +0000", "message_id": "<1@example.test>"}
    assert get_json(server, "/api/messages/bob")["messages"] == listing["messages"]
    assert get_json(server, "/api/messages/bob/inbox")["mailbox"] == "INBOX"  # RFC 3501 5.1: any case

    detail = get_json(server, "/api/messages/bob/INBOX/1")
    assert detail["raw_url"] == "/api/messages/bob/INBOX/1/raw"
    assert ["Subject", "\u2713 <script>alert(1)</script>"] in detail["header_list"]
    assert [(p["content_type"], p["text"]) for p in detail["parts"]] == [
        # RFC 2046 section 5.1.1: the CRLF before a boundary belongs to the boundary
        ("text/plain", "Caf\u00e9 \x1b[31m"), ("text/html", "<b onclick=x()>hi</b>")]

    raw = request(server, "/api/messages/bob/INBOX/1/raw")
    assert raw.status == 200 and raw.body == HOSTILE
    assert raw.headers["Content-Type"] == "message/rfc822"
    assert raw.headers["Content-Disposition"] == 'attachment; filename="bob-INBOX-1.eml"'


def test_mailbox_names_with_a_hierarchy_delimiter(server: ThreadedMailServer) -> None:
    def add() -> None:
        server.store.accounts["alice"].create("Work/2024 \"q\"").append(b"Subject: filed\r\n\r\nx\r\n", {"\\Seen"})

    server.call(add)
    listing = get_json(server, "/api/messages/alice/Work%2F2024%20%22q%22")
    assert listing["mailbox"] == 'Work/2024 "q"'
    assert [(m["uid"], m["flags"], m["headers"]["subject"]) for m in listing["messages"]] == [(1, ["\\Seen"], "filed")]
    detail = get_json(server, "/api/messages/alice/Work%2F2024%20%22q%22/1")
    assert detail["raw_url"] == "/api/messages/alice/Work%2F2024%20%22q%22/1/raw"
    raw = request(server, detail["raw_url"])
    assert raw.headers["Content-Disposition"] == 'attachment; filename="alice-Work_2024_q_-1.eml"'


def test_mailbox_names_that_are_not_utf8_open_as_listed(server: ThreadedMailServer) -> None:
    # IMAP keeps a name's octets as sent (CREATE {7}\r\ncaf\xe9 x/\xff); the API names them in
    # the URL percent-encoded, octet for octet.
    name = decode_name(b"caf\xe9 x/\xff")

    def add() -> None:
        server.store.accounts["alice"].create(name).append(b"Subject: odd\r\n\r\nx\r\n")

    server.call(add)
    listed = {box["name"] for user in get_json(server, "/api/messages")["users"] for box in user["mailboxes"]}
    assert name in listed
    listing = get_json(server, "/api/messages/alice/caf%E9%20x%2F%FF")
    assert listing["mailbox"] == name
    assert [m["headers"]["subject"] for m in listing["messages"]] == ["odd"]
    detail = get_json(server, "/api/messages/alice/caf%E9%20x%2F%FF/1")
    assert detail["raw_url"] == "/api/messages/alice/caf%E9%20x%2F%FF/1/raw"
    assert request(server, detail["raw_url"]).body == b"Subject: odd\r\n\r\nx\r\n"
    # The text "%E9" is a different name, and "caf\u00e9" in UTF-8 another one.
    get_json(server, "/api/messages/alice/caf%25E9%20x%2F%FF", status=404)
    get_json(server, "/api/messages/alice/caf%C3%A9%20x%2F%FF", status=404)
    assert request(server, "/api/messages/alice/caf%E9%20x%2F%FF", method="DELETE").json() == {"deleted": 1}


def test_deleting_messages_per_mailbox_per_user_and_all(server: ThreadedMailServer) -> None:
    for _ in range(2):
        plaintext_login_and_send(server, b"Subject: to bob\r\n\r\nx\r\n")
    plaintext_login_and_send(server, b"Subject: to alice\r\n\r\nx\r\n", to="alice@example.test")
    plaintext_login_and_send(server, b"Subject: away\r\n\r\nx\r\n", to="someone@elsewhere.example")
    server.call(lambda: server.store.accounts["bob"].mailboxes["Trash"].append(b"Subject: t\r\n\r\n"))

    assert request(server, "/api/messages/bob/Trash", method="DELETE").json() == {"deleted": 1}
    assert request(server, "/api/messages/bob", method="DELETE").json() == {"deleted": 2}
    assert get_json(server, "/api/messages/bob")["messages"] == []
    assert len(get_json(server, "/api/messages/alice")["messages"]) == 1
    assert request(server, "/api/messages", method="DELETE").json() == {"deleted": 1, "captured_deleted": 1}
    assert get_json(server, "/api/messages/alice")["messages"] == []
    assert get_json(server, "/api/captured") == {"messages": []}
    plaintext_login_and_send(server, b"Subject: after\r\n\r\nx\r\n")
    assert [m["uid"] for m in get_json(server, "/api/messages/bob/INBOX")["messages"]] == [3]  # UIDs go on


def test_captured_outbound_list_detail_raw_delete(server: ThreadedMailServer) -> None:
    message = b"Subject: =?utf-8?q?d=C3=A9j=C3=A0?=\r\nTo: x@elsewhere.example\r\n\r\nbye\r\n"
    plaintext_login_and_send(server, message, to="x@elsewhere.example")
    [entry] = get_json(server, "/api/captured")["messages"]
    assert {key: entry[key] for key in ("id", "sender_account", "mail_from", "recipients", "size")} == {
        "id": 1, "sender_account": "alice", "mail_from": "alice@example.test",
        "recipients": ["x@elsewhere.example"], "size": len(message)}
    assert entry["headers"]["subject"] == "d\u00e9j\u00e0"
    detail = get_json(server, "/api/captured/1")
    assert detail["parts"][0]["text"] == "bye\r\n" and detail["raw_url"] == "/api/captured/1/raw"
    raw = request(server, "/api/captured/1/raw")
    assert (raw.body, raw.headers["Content-Disposition"]) == (message, 'attachment; filename="captured-1.eml"')
    assert request(server, "/api/captured", method="DELETE").json() == {"deleted": 1}
    assert get_json(server, "/api/captured/1", status=404)["status"] == 404


def test_unparseable_mail_still_lists(server: ThreadedMailServer) -> None:
    junk = b"\xff\xfe\x00 not a header\r\nSubject: \xff\r\n\r\n\x00\x01"
    server.call(lambda: server.store.accounts["bob"].inbox.append(junk))
    [entry] = get_json(server, "/api/messages/bob/INBOX")["messages"]
    assert entry["size"] == len(junk)
    detail = get_json(server, "/api/messages/bob/INBOX/1")
    assert request(server, "/api/messages/bob/INBOX/1/raw").body == junk
    assert isinstance(detail["parts"], list)


# --- live events ---------------------------------------------------------------------------


def read_event(response: http.client.HTTPResponse) -> tuple[str, Any]:
    """The next SSE event (comments and retry: lines skipped)."""
    name, data = "message", ""
    while True:
        line = response.readline().decode()
        assert line, "the event stream ended"
        if line == "\n" and data:
            return name, json.loads(data)
        if line.startswith("event: "):
            name = line[len("event: "):].strip()
        elif line.startswith("data: "):
            data += line[len("data: "):].strip()


def test_events_announce_changes_and_end_when_the_server_stops(api_server: Callable[..., ThreadedMailServer]) -> None:
    server = api_server(*LISTENERS)
    connection = http.client.HTTPConnection(HOST, server.http_port, timeout=10)
    connection.request("GET", "/api/events")
    response = connection.getresponse()
    assert response.status == 200 and response.headers["Content-Type"] == "text/event-stream"
    assert read_event(response) == ("change", {"sessions": True, "messages": True})
    plaintext_login_and_send(server, b"Subject: live\r\n\r\nx\r\n")
    seen = {"sessions": False, "messages": False}
    while not all(seen.values()):
        name, changed = read_event(response)
        assert name == "change"
        seen = {key: seen[key] or changed[key] for key in seen}
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 2.0  # the open stream does not hold the shutdown
    assert response.read() == b""
    connection.close()


# --- configuration and lifecycle -----------------------------------------------------------


def test_no_http_table_means_no_http_server(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve({"name": "plain", "protocol": "smtp", "tls": "plaintext"})
    assert server.http_port is None and server.config.http is None


def test_http_port_in_use_names_the_port(api_server: Callable[..., ThreadedMailServer], certs_dir: Path) -> None:
    first = api_server(*LISTENERS[:1])
    config = make_config(certs_dir, LISTENERS[:1], http={"port": first.http_port})
    with pytest.raises(ListenerError) as caught:
        ThreadedMailServer(config).start()
    assert str(caught.value) == (f"the HTTP API cannot bind 127.0.0.1:{first.http_port}: the port is already in use; "
                                 "set [http] port (0 picks a free one) or use --port-offset")


@pytest.fixture
def two_servers(api_server: Callable[..., ThreadedMailServer]) -> Iterator[tuple[ThreadedMailServer, ThreadedMailServer]]:
    yield api_server(*LISTENERS[:1]), api_server(*LISTENERS[:1])


def test_each_server_has_its_own_api(two_servers: tuple[ThreadedMailServer, ThreadedMailServer]) -> None:
    first, second = two_servers
    assert first.http_port != second.http_port
    plaintext_login_and_send(first, b"Subject: one\r\n\r\n")
    first.journal.wait_for(1)
    assert get_json(first, "/api/sessions")["count"] == 1
    assert get_json(second, "/api/sessions")["count"] == 0
