"""The HTTP API and the web dashboard (aiohttp), on the mail server's own event loop.

Handlers run on that loop, so they read the store and the journal directly, like the sessions
do. Everything about mail that goes out is hostile input: JSON strings only (json.dumps escapes
them), raw bytes only as downloads, and the dashboard inserts it with textContent under a strict
Content-Security-Policy. The routes are described by openapi.py, served at /openapi.json.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import quote

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from mailmodes import __version__
from mailmodes.config import Config, HttpConfig
from mailmodes.probe.explain import explain, options_from_config, targets_from_config
from mailmodes.protocols import PROTOCOLS
from mailmodes.record.journal import Journal
from mailmodes.record.report import render
from mailmodes.record.verdicts import REGISTRY, SEVERITIES
from mailmodes.store import StoreInterface
from mailmodes.tls.policy import TlsMode
from mailmodes.web.control import Controllable, ControlRoutes
from mailmodes.web.openapi import openapi_document
from mailmodes.web.views import (
    BadQuery,
    SessionJson,
    captured_list,
    captured_summary,
    delete_messages,
    find_mailbox,
    listener_view,
    mailbox_from_segment,
    mailbox_segment,
    message_detail,
    message_summary,
    messages_version,
    overview,
    parse_bool,
    parse_session_filter,
    report_card,
    sessions_version,
    user_messages,
)

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# No inline script or style anywhere, nothing from elsewhere: the dashboard is three files of ours.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}
DASHBOARD_FILES = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
EVENT_POLL_SECONDS = 0.25  # how often /api/events looks for changes
EVENT_KEEPALIVE_SECONDS = 15.0
WARM_SECONDS = 0.5  # how often finished sessions are serialised ahead of the first listing
WARM_BATCH = 50  # sessions serialised before the loop gets a turn (about 10 ms)
LOOPBACK_NAMES = ("localhost", "localhost.")
WILDCARD_ADDRESSES = ("0.0.0.0", "::", "")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # RFC 9110 section 9.2.1
EXPLAIN_CACHE_SECONDS = 30.0  # /api/explain answers from its last probe for this long (?refresh=1 re-probes)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status, content_type="application/json")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    response = json_response({"error": message, "status": status}, status)
    response.headers.update(headers or {})
    return response


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    """ "127.0.0.1:8025" -> "127.0.0.1", "[::1]:8025" -> "::1" (RFC 9110 section 7.2)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


class _BadRequestsAtDebug(logging.Filter):
    """aiohttp logs every malformed request (a bad request line or header) as an ERROR with a
    traceback. That is the client's input, answered with 400, not our bug: log it at debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            log.debug("malformed HTTP request: %s", error)
            return False
        return True


# The HTTP server's own logger, given to aiohttp instead of its module-wide "aiohttp.server".
server_log = logging.getLogger("mailmodes.web.http")
server_log.addFilter(_BadRequestsAtDebug())


def _safe_filename(*parts: object) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(str(part) for part in parts))[:120] or "message"


class MailState(Protocol):
    """What the API reads of the mail server it serves; app.MailServer is one. Only this shape,
    so that the API never depends on app.py, which starts it."""

    @property
    def config(self) -> Config: ...
    @property
    def store(self) -> StoreInterface: ...
    @property
    def journal(self) -> Journal: ...
    @property
    def ports(self) -> Mapping[str, int]: ...  # running listeners: name -> bound port
    @property
    def ca_file(self) -> Path | None: ...  # None until the server has made its certificates


class HttpServer:
    """Start with `await start()` (returns the bound port), stop with `await stop()`."""

    def __init__(self, server: MailState, config: HttpConfig) -> None:
        self.server = server
        self.config = config
        self.port: int | None = None
        self._sessions_json = SessionJson()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._warmer: asyncio.Task[None] | None = None
        self._explained: tuple[float, dict[str, Any]] | None = None  # (monotonic time it finished, table)
        self._explain_lock = asyncio.Lock()  # one probe at a time; requests that wait share its result
        # Wait, seed, scenario and reset (control.py) need what app.MailServer has beyond MailState.
        self._control = ControlRoutes(cast(Controllable, server), self._closing, json_response, lambda: server.ports)
        self._event_clients = 0
        # Host names besides loopback that this server answers to (see _check_host).
        self._hosts = frozenset({server.config.hostname.lower(), *config.allowed_hosts}
                                | ({config.host.lower()} if config.host not in WILDCARD_ADDRESSES else set()))
        self._dashboard = {
            name: resources.files("mailmodes.web").joinpath("dashboard", name).read_bytes() for name in DASHBOARD_FILES
        }

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self, sock: socket.socket | None = None) -> int:
        """Serve on [http]'s address, or on `sock` when serve's early start bound it (early.py)."""
        app = web.Application(middlewares=[self._check_host, self._check_origin, self._errors_as_json])
        app.on_response_prepare.append(self._add_security_headers)
        for method, path, handler in self.routes():
            app.router.add_route(method, path, handler)
        # A short shutdown: the only long requests are /api/events, ended by _closing first.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, logger=server_log)
        await runner.setup()
        try:
            site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, self.config.host,
                                                                                   self.config.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self._warmer = asyncio.create_task(self._warm_sessions())
        return self.port

    async def _warm_sessions(self) -> None:
        """Serialise each finished session shortly after it ends, a few at a time, so that the
        first listing of a full journal costs what every later one does (to_json is slow)."""
        while not self._closing.is_set():
            done = 0
            finished = self.server.journal.sessions()
            self._sessions_json.forget_except(finished)  # what rotated out of the journal
            for record in finished:
                if not self._sessions_json.is_cached(record):
                    self._sessions_json.encode(record, transcript=False)
                    done += 1
                    if done % WARM_BATCH == 0:
                        await asyncio.sleep(0)  # let sessions and requests run in between
            try:
                await asyncio.wait_for(self._closing.wait(), WARM_SECONDS)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        self._closing.set()
        warmer, self._warmer = self._warmer, None
        if warmer is not None:
            await warmer
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) for every route; openapi.py describes each of them."""
        return [
            ("GET", "/", self.dashboard_index),
            ("GET", "/static/{name}", self.dashboard_file),
            ("GET", "/openapi.json", self.openapi),
            ("GET", "/ca.pem", self.ca_pem),
            ("GET", "/api/health", self.health),
            ("GET", "/api/ready", self.ready),
            ("GET", "/api/info", self.info),
            ("GET", "/api/listeners", self.listeners),
            ("GET", "/api/explain", self.explained),
            ("POST", "/api/explain", self.explain),
            ("GET", "/api/verdicts", self.verdicts),
            ("GET", "/api/sessions", self.sessions),
            ("DELETE", "/api/sessions", self.delete_sessions),
            ("GET", "/api/sessions/{id}", self.session),
            ("GET", "/api/report", self.report),
            ("GET", "/api/events", self.events),
            ("GET", "/api/messages", self.messages_overview),
            ("DELETE", "/api/messages", self.delete_all_messages),
            ("GET", "/api/messages/{user}", self.user_messages),
            ("DELETE", "/api/messages/{user}", self.delete_user_messages),
            ("GET", "/api/messages/{user}/{mailbox}", self.mailbox_messages),
            ("DELETE", "/api/messages/{user}/{mailbox}", self.delete_mailbox_messages),
            ("GET", "/api/messages/{user}/{mailbox}/{uid}", self.message),
            ("GET", "/api/messages/{user}/{mailbox}/{uid}/raw", self.message_raw),
            ("GET", "/api/captured", self.captured),
            ("DELETE", "/api/captured", self.delete_captured),
            ("GET", "/api/captured/{id}", self.captured_message),
            ("GET", "/api/captured/{id}/raw", self.captured_raw),
            *self._control.routes(),
        ]

    # --- middleware ---------------------------------------------------------------------------

    @web.middleware
    async def _check_host(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer only requests that name this server: a loopback name or address, the configured
        hostname, its bound address, or one of [http] allowed_hosts, wherever it is bound. A web
        page whose name was re-pointed at this server (DNS rebinding) still sends its own name in
        Host."""
        name = _host_name(request.host).lower()
        if not (_is_loopback(name) or name in self._hosts):
            return error_response(403, f"Host {request.host!r} is not allowed: this server answers loopback "
                                       "names (127.0.0.1, localhost, [::1]), its hostname, and [http] allowed_hosts")
        return await handler(request)

    @web.middleware
    async def _check_origin(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Requests that start work or change state are never GETs, so no <img> or link can send
        them; and a page of another origin cannot send them either: a browser names the page's
        origin in Origin, and a plain form POST needs no CORS preflight, so refuse it here."""
        origin = request.headers.get("Origin")
        # "null" (a sandboxed page) and an https:// page of the same name are other origins too.
        if request.method not in SAFE_METHODS and origin is not None and origin.lower() != f"http://{request.host}".lower():
            return error_response(403, f"Origin {origin!r} may not {request.method} here: only this "
                                       "server's own pages (or a client sending no Origin) may")
        return await handler(request)

    @web.middleware
    async def _errors_as_json(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return error_response(error.status, error.message)
        except BadQuery as error:
            return error_response(400, str(error))
        except web.HTTPException as error:
            if error.status < 400:
                raise
            headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
            return error_response(error.status, error.reason, headers)

    @staticmethod
    async def _add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")

    # --- dashboard, description, CA -----------------------------------------------------------

    async def dashboard_index(self, request: web.Request) -> web.Response:
        return web.Response(body=self._dashboard["index.html"], content_type="text/html", charset="utf-8")

    async def dashboard_file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in DASHBOARD_FILES or name == "index.html":
            raise ApiError(404, f"no such dashboard file: {name!r}")
        return web.Response(body=self._dashboard[name], content_type=DASHBOARD_FILES[name], charset="utf-8")

    async def openapi(self, request: web.Request) -> web.Response:
        return json_response(openapi_document(__version__))

    async def ca_pem(self, request: web.Request) -> web.Response:
        ca_file = self.server.ca_file
        if ca_file is None:
            raise ApiError(503, "the CA certificate is not made yet")
        return web.Response(
            body=ca_file.read_bytes(),
            content_type="application/x-pem-file",
            headers={"Content-Disposition": 'attachment; filename="mailmodes-ca.pem"'},
        )

    # --- health and the server ----------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return json_response({"status": "ok", "version": __version__})

    async def ready(self, request: web.Request) -> web.Response:
        server = self.server
        ready = not self._closing.is_set() and len(server.ports) == len(server.config.listeners)
        return json_response({"ready": ready, "listening": len(server.ports)}, 200 if ready else 503)

    async def info(self, request: web.Request) -> web.Response:
        config = self.server.config
        return json_response({
            "version": __version__,
            "hostname": config.hostname,
            "http_port": self.port,
            "ca": "/ca.pem",
            "users": [{"user": user.name, "addresses": list(user.addresses)} for user in config.users],
        })

    async def listeners(self, request: web.Request) -> web.Response:
        server = self.server
        return json_response({
            "listeners": [listener_view(listener, server.config, server.ports) for listener in server.config.listeners],
            # The dashboard lays its matrix out by these, so the names live in Python only.
            "protocols": list(PROTOCOLS),
            "tls_modes": [mode.value for mode in TlsMode],
        })

    async def verdicts(self, request: web.Request) -> web.Response:
        """The verdict registry: what the dashboard's legend and colours are made of."""
        return json_response({"severities": list(SEVERITIES), "verdicts": [kind.as_dict() for kind in REGISTRY]})

    async def explained(self, request: web.Request) -> web.Response:
        """The last probe's table, if there is one: a GET never starts a probe."""
        cached = self._explained
        if cached is None:
            raise ApiError(404, "no probe has run yet: POST /api/explain runs one")
        return self._explain_response(cached, cached=True)

    async def explain(self, request: web.Request) -> web.Response:
        """`mailmodes explain` against this server's own running listeners: every listener in every
        client setting, with the server's CA. The probe blocks for about the greeting timeout
        (1.5 s), so it runs on a thread; its result is kept EXPLAIN_CACHE_SECONDS, and a request
        that arrives while a probe runs gets that probe's result rather than starting another."""
        refresh = parse_bool(dict(request.query), "refresh", False)
        asked = time.monotonic()
        async with self._explain_lock:
            cached = self._explained
            if cached is not None and (cached[0] >= asked  # finished while this request waited
                                       or (not refresh and asked - cached[0] < EXPLAIN_CACHE_SECONDS)):
                return self._explain_response(cached, cached=True)
            self._explained = await self._run_explain()
            return self._explain_response(self._explained, cached=False)

    async def _run_explain(self) -> tuple[float, dict[str, Any]]:
        server = self.server
        ports = dict(server.ports)  # running listeners only
        targets = [target for target in targets_from_config(server.config, ports) if target.name in ports]
        options = options_from_config(server.config, server.ca_file)
        started = time.time()
        loop = asyncio.get_running_loop()
        table = await loop.run_in_executor(None, lambda: explain(targets, options))
        finished = time.time()
        await loop.run_in_executor(None, lambda: server.journal.settle(options.timeout))
        return time.monotonic(), {
            **self._with_sessions(table.as_dict()),
            # The probe's own sessions are in the journal, marked as a probe's ("probe": true, kept
            # out of verdict queries); these bound them (GET /api/sessions?probe=true&since=...&until=...).
            "started": _iso_ms(started, math.floor),
            "finished": _iso_ms(finished, math.ceil),
            "seconds": round(finished - started, 3),
            "user": options.credentials.user if options.credentials else None,
            "cache_seconds": EXPLAIN_CACHE_SECONDS,
        }

    def _with_sessions(self, table: dict[str, Any]) -> dict[str, Any]:
        """Each cell with the id of the probe session it produced (found by the probe's own port), so
        the dashboard can link the cell to its transcript."""
        produced = {(record.listener, int(record.client.rsplit(":", 1)[1])): record.id
                    for record in self.server.journal.sessions(probes=True)}
        for row in table["rows"]:
            for cell in row["cells"]:
                cell["session"] = produced.get((row["listener"], cell["client_port"]))
        return table

    @staticmethod
    def _explain_response(explained: tuple[float, dict[str, Any]], *, cached: bool) -> web.Response:
        age = 0.0 if not cached else round(time.monotonic() - explained[0], 3)
        return json_response({**explained[1], "cached": cached, "age": age})

    # --- sessions -----------------------------------------------------------------------------

    async def sessions(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        session_filter = parse_session_filter(query)
        transcript = parse_bool(query, "transcript", True)
        journal = self.server.journal
        records = session_filter.select(journal)
        body = self._sessions_json.listing(records, transcript=transcript)
        self._sessions_json.forget_except(journal.sessions(include_open=True))
        return web.Response(body=body, content_type="application/json")

    async def report(self, request: web.Request) -> web.Response:
        card, format = report_card(self.server.journal, dict(request.query))
        if format == "json":
            return json_response(card.as_dict())
        content_type = "application/xml" if format == "junit" else "text/plain"
        return web.Response(text=render(card.as_dict(), format), content_type=content_type, charset="utf-8")

    async def session(self, request: web.Request) -> web.Response:
        wanted = _int_segment(request, "id")
        for record in self.server.journal.sessions(include_open=True):
            if record.id == wanted:
                return web.Response(body=self._sessions_json.encode(record, transcript=True),
                                    content_type="application/json")
        raise ApiError(404, f"no session {wanted} (finished sessions are kept up to [journal] max_sessions)")

    async def delete_sessions(self, request: web.Request) -> web.Response:
        journal = self.server.journal
        count = len(journal.sessions())
        journal.clear()
        self._sessions_json.forget_except(journal.sessions(include_open=True))
        return json_response({"deleted": count})

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events (HTML Living Standard section 9.2): one "change" event whenever the
        sessions or the messages change, so the dashboard refetches what changed. Each stream
        polls, so at most [http] max_event_clients run at once."""
        if self._event_clients >= self.config.max_event_clients:
            return error_response(503, f"too many event streams (at most {self.config.max_event_clients} at once)",
                                  {"Retry-After": "5"})
        self._event_clients += 1
        try:
            return await self._event_stream(request)
        finally:
            self._event_clients -= 1

    async def _event_stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
        await response.prepare(request)
        last: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        quiet = 0.0
        try:
            await response.write(b"retry: 1000\n\n")
            while not self._closing.is_set():
                if request.transport is None or request.transport.is_closing():
                    break  # the browser went away: give the slot back now, not at the next write
                current = (sessions_version(self.server.journal), messages_version(self.server.store))
                if current != last:
                    changed = {"sessions": last is None or current[0] != last[0],
                               "messages": last is None or current[1] != last[1]}
                    await response.write(b"event: change\ndata: " + json.dumps(changed).encode() + b"\n\n")
                    last, quiet = current, 0.0
                elif quiet >= EVENT_KEEPALIVE_SECONDS:
                    await response.write(b": keepalive\n\n")
                    quiet = 0.0
                try:
                    await asyncio.wait_for(self._closing.wait(), EVENT_POLL_SECONDS)
                except TimeoutError:
                    quiet += EVENT_POLL_SECONDS
        except ConnectionError:
            pass  # the browser went away
        return response

    # --- messages -----------------------------------------------------------------------------

    def _account_name(self, request: web.Request) -> str:
        user = request.match_info["user"]
        if user not in self.server.store.accounts:
            raise ApiError(404, f"no user {user!r}")
        return user

    def _mailbox(self, request: web.Request) -> Any:
        user = self._account_name(request)
        # Every route with {mailbox} starts /api/messages/{user}/{mailbox}: the fifth raw part.
        name = mailbox_from_segment(request.rel_url.raw_parts[4])
        mailbox = find_mailbox(self.server.store, user, name)
        if mailbox is None:
            raise ApiError(404, f"user {user!r} has no mailbox {name!r}")
        return mailbox

    def _message(self, request: web.Request) -> tuple[Any, Any]:
        mailbox = self._mailbox(request)
        uid = _int_segment(request, "uid")
        message = mailbox.by_uid(uid)
        if message is None:
            raise ApiError(404, f"mailbox {mailbox.name!r} has no message with UID {uid}")
        return mailbox, message

    async def messages_overview(self, request: web.Request) -> web.Response:
        return json_response(overview(self.server.store))

    async def user_messages(self, request: web.Request) -> web.Response:
        user = self._account_name(request)
        if request.query:  # filters, ?wait=: control.py's long poll
            return await self._control.find_messages(request, user)
        return json_response({"user": user, "messages": user_messages(self.server.store, user)})

    async def mailbox_messages(self, request: web.Request) -> web.Response:
        mailbox = self._mailbox(request)
        return json_response({
            "user": request.match_info["user"], "mailbox": mailbox.name, "uidvalidity": mailbox.uidvalidity,
            "messages": [message_summary(mailbox, message) for message in mailbox.messages],
        })

    async def message(self, request: web.Request) -> web.Response:
        mailbox, message = self._message(request)
        user = request.match_info["user"]
        return json_response({
            "user": user, **message_summary(mailbox, message), **message_detail(message.data),
            "raw_url": f"/api/messages/{quote(user, safe='')}/{mailbox_segment(mailbox.name)}/{message.uid}/raw",
        })

    async def message_raw(self, request: web.Request) -> web.Response:
        mailbox, message = self._message(request)
        filename = _safe_filename(request.match_info["user"], mailbox.name, message.uid) + ".eml"
        return _download(message.data, filename)

    async def delete_all_messages(self, request: web.Request) -> web.Response:
        store = self.server.store
        captured = len(store.captured)
        store.captured.clear()
        deleted = delete_messages(store)
        await store.flush()  # a durable store: gone from disk before the answer says so
        return json_response({"deleted": deleted, "captured_deleted": captured})

    async def delete_user_messages(self, request: web.Request) -> web.Response:
        deleted = delete_messages(self.server.store, self._account_name(request))
        await self.server.store.flush()
        return json_response({"deleted": deleted})

    async def delete_mailbox_messages(self, request: web.Request) -> web.Response:
        mailbox = self._mailbox(request)
        deleted = delete_messages(self.server.store, request.match_info["user"], mailbox.name)
        await self.server.store.flush()
        return json_response({"deleted": deleted})

    # --- captured outbound mail ---------------------------------------------------------------

    def _captured(self, request: web.Request) -> tuple[int, Any]:
        index = _int_segment(request, "id")
        captured = self.server.store.captured
        if not 1 <= index <= len(captured):
            raise ApiError(404, f"no captured message {index} ({len(captured)} captured)")
        return index, captured[index - 1]

    async def captured(self, request: web.Request) -> web.Response:
        return json_response({"messages": captured_list(self.server.store)})

    async def captured_message(self, request: web.Request) -> web.Response:
        index, captured = self._captured(request)
        return json_response({**captured_summary(index, captured), **message_detail(captured.data),
                              "raw_url": f"/api/captured/{index}/raw"})

    async def captured_raw(self, request: web.Request) -> web.Response:
        index, captured = self._captured(request)
        return _download(captured.data, f"captured-{index}.eml")

    async def delete_captured(self, request: web.Request) -> web.Response:
        captured = self.server.store.captured
        count = len(captured)
        captured.clear()
        await self.server.store.flush()
        return json_response({"deleted": count})


def _iso_ms(timestamp: float, rounding: Callable[[float], int]) -> str:
    """ISO 8601 UTC to the millisecond, rounded down (floor) or up (ceil), like the journal's times."""
    return datetime.fromtimestamp(rounding(timestamp * 1000) / 1000, UTC).isoformat(timespec="milliseconds")


def _int_segment(request: web.Request, name: str) -> int:
    text = request.match_info[name]
    if not text.isascii() or not text.isdigit():
        raise ApiError(400, f"{name}: {text!r} is not a whole number")
    return int(text)


def _download(data: bytes, filename: str) -> web.Response:
    # RFC 2046 section 5.2.1: message/rfc822, sent as an attachment so a browser never renders it.
    return web.Response(body=data, content_type="message/rfc822",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
