"""Issue 16 on the HTTP API: hostile mail in the listings (defect 1), DNS rebinding and cross-origin
requests (defect 2), the cap on event streams (defect 15), malformed requests (defect 16)."""

from __future__ import annotations

import http.client
import json
import logging
import smtplib
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.cli import _environment_document
from mailmodes.config import parse_config

HOST = "127.0.0.1"
MTA = {"name": "smtp", "protocol": "smtp", "tls": "plaintext", "role": "mta"}


def call(server: ThreadedMailServer, method: str, path: str, headers: dict[str, str] | None = None,
         ) -> tuple[int, bytes, http.client.HTTPMessage]:
    connection = http.client.HTTPConnection(HOST, server.http_port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read(), response.msg
    finally:
        connection.close()


# --- defect 1: headers the stdlib parser chokes on -----------------------------------------------


@pytest.mark.parametrize("header", [
    b"Message-ID: <>", b"Message-ID: <@x>", b"Message-ID: <[a]@x>", b"To: a@b, <",
])
def test_a_header_that_will_not_parse_is_shown_raw(api_server: Callable[..., ThreadedMailServer],
                                                  header: bytes) -> None:
    server = api_server(MTA)
    message = b"Subject: odd\r\n" + header + b"\r\n\r\nbody\r\n"
    with smtplib.SMTP(HOST, server.port("smtp"), timeout=10) as client:
        client.sendmail("bob@example.test", ["alice@example.test"], message)
    for path in ("/api/messages/alice", "/api/messages/alice/INBOX"):
        status, body, headers = call(server, "GET", path)
        assert (status, headers["Content-Type"]) == (200, "application/json"), body
        summary = json.loads(body)["messages"][0]["headers"]
        name = header.split(b":")[0].decode().lower().replace("-", "_")
        assert summary[name] == header.split(b": ", 1)[1].decode()
        assert summary["subject"] == "odd"
    status, body, _ = call(server, "GET", "/api/messages/alice/INBOX/1")
    assert status == 200, body


# --- defect 2: Host and Origin, wherever the API is bound -----------------------------------------


@pytest.fixture
def wide_open(api_server: Callable[..., ThreadedMailServer]) -> ThreadedMailServer:
    """The Docker image's setting: bound to every interface."""
    return api_server(MTA, http={"port": 0, "host": "0.0.0.0"})


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8025", "mail.example.test.attacker.example"])
def test_a_rebound_name_is_refused_when_bound_to_every_interface(wide_open: ThreadedMailServer, host: str) -> None:
    for method in ("GET", "DELETE"):
        status, body, _ = call(wide_open, method, "/api/sessions", {"Host": host})
        assert status == 403, body
        assert json.loads(body)["error"].startswith(f"Host {host!r} is not allowed")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:18025", "[::1]:8025", "mail.example.test:8025",
                                  "MAILMODES:8025", "mailmodes"])
def test_loopback_the_hostname_and_allowed_hosts_are_served(api_server: Callable[..., ThreadedMailServer],
                                                            host: str) -> None:
    """curl http://127.0.0.1:18025 from the Docker host, http://mailmodes:8025 (the compose service,
    MAILMODES_HTTP_ALLOWED_HOSTS in the image) or the hostname's alias from a compose network."""
    server = api_server(MTA, http={"port": 0, "host": "0.0.0.0", "allowed_hosts": ["mailmodes"]})
    assert call(server, "GET", "/api/health", {"Host": host})[0] == 200


def test_a_cross_origin_delete_is_refused(wide_open: ThreadedMailServer) -> None:
    port = wide_open.http_port
    own = {"Host": f"127.0.0.1:{port}"}
    status, body, _ = call(wide_open, "DELETE", "/api/sessions", {**own, "Origin": "http://attacker.example"})
    assert status == 403 and json.loads(body)["error"].startswith("Origin 'http://attacker.example' may not DELETE")
    assert call(wide_open, "DELETE", "/api/sessions", {**own, "Origin": "null"})[0] == 403
    # The dashboard's own requests, and scripts that send no Origin, go through.
    assert call(wide_open, "DELETE", "/api/sessions", {**own, "Origin": f"http://127.0.0.1:{port}"})[0] == 200
    assert call(wide_open, "DELETE", "/api/sessions", own)[0] == 200
    # Reading is not a change: a foreign Origin on GET is only a page that cannot read the answer.
    assert call(wide_open, "GET", "/api/health", {**own, "Origin": "http://attacker.example"})[0] == 200


# --- defect 15: event streams are capped ---------------------------------------------------------


@pytest.fixture
def streams() -> Iterator[list[http.client.HTTPConnection]]:
    opened: list[http.client.HTTPConnection] = []
    yield opened
    for connection in opened:
        connection.close()


def test_event_streams_beyond_the_cap_get_503(api_server: Callable[..., ThreadedMailServer],
                                              streams: list[http.client.HTTPConnection]) -> None:
    server = api_server(MTA, http={"port": 0, "max_event_clients": 2})
    for _ in range(2):
        connection = http.client.HTTPConnection(HOST, server.http_port, timeout=10)
        streams.append(connection)
        connection.request("GET", "/api/events")
        response = connection.getresponse()
        assert response.status == 200
        assert response.readline() == b"retry: 1000\n"  # streaming: the slot is held
    status, body, headers = call(server, "GET", "/api/events")
    assert status == 503 and headers["Retry-After"] == "5"
    assert json.loads(body)["error"] == "too many event streams (at most 2 at once)"
    for connection in streams:
        connection.close()
    streams.clear()
    # A slot comes back when its client goes away (the stream looks at every poll, 0.25 s).
    deadline = time.monotonic() + 5
    while call(server, "GET", "/api/health")[0] == 200 and time.monotonic() < deadline:
        connection = http.client.HTTPConnection(HOST, server.http_port, timeout=10)
        streams.append(connection)
        connection.request("GET", "/api/events")
        if connection.getresponse().status == 200:
            break
        time.sleep(0.05)
    else:
        pytest.fail("closed streams never gave their slots back")


# --- defect 16: a malformed request is a 400, not an ERROR traceback ------------------------------


def test_a_malformed_request_is_answered_400_quietly(api_server: Callable[..., ThreadedMailServer],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    server = api_server(MTA)
    caplog.set_level(logging.DEBUG)
    with socket.create_connection((HOST, server.http_port), timeout=10) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon here\r\n\r\n")
        assert sock.makefile("rb").readline().split(b" ")[1] == b"400"
    assert call(server, "GET", "/api/health")[0] == 200
    noisy = [r for r in caplog.get_records("call") if r.levelno >= logging.WARNING]
    assert not noisy, [f"{r.name}: {r.getMessage()}" for r in noisy]


def test_the_docker_variable_sets_allowed_hosts() -> None:
    data = _environment_document({"http": {"port": 8025}}, {"MAILMODES_HTTP_ALLOWED_HOSTS": " mailmodes , 10.0.0.5,"})
    http_config = parse_config(data).http
    assert http_config is not None and http_config.allowed_hosts == ("mailmodes", "10.0.0.5")
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    assert "MAILMODES_HTTP_ALLOWED_HOSTS=mailmodes" in dockerfile
