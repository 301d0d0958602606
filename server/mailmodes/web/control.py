"""What a CI suite asks of a running server over HTTP, beyond reading it: wait for mail (a long
poll), put mail in (seed), change a listener's scenario, and reset everything between tests.

The long poll is woken by the store itself (Store.arrival_hooks, and the watchers of the user's
mailboxes for IMAP APPEND, COPY and MOVE), never by polling: a waiting request costs nothing until
mail arrives, and answers within a loop turn of it.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol
from urllib.parse import quote

from aiohttp import web

from mailmodes.config import Config, ConfigError, Listener
from mailmodes.seed import check_flags, crlf, target_mailbox
from mailmodes.store import AccountInterface, MailboxInterface, Message, StoreInterface
from mailmodes.store import DEFAULT_SCOPE
from mailmodes.web.views import BadQuery, listener_view, message_summary, parse_bool, parse_int, parse_time

MAX_WAIT_SECONDS = 300.0  # the longest ?wait= a request may ask for (CI jobs have their own timeouts)
MAX_SEED_BYTES = 25 * 1024 * 1024  # the default max_message_size: what a client could have sent
Respond = Callable[[Any, int], web.Response]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Controllable(Protocol):
    """The mail server as runtime control sees it (app.MailServer is one): server.MailState's
    config and store, and the two changes only app.py can make."""

    @property
    def config(self) -> Config: ...
    @property
    def store(self) -> StoreInterface: ...
    def set_scenario(self, name: str, scenario: str | None, chaos: Mapping[str, Any] | None = None) -> Listener: ...
    def reset(self) -> dict[str, Any]: ...


def refused(status: int, message: str) -> web.HTTPException:
    """An error the API's error middleware turns into {"error": message, "status": status}."""
    kinds: dict[int, type[web.HTTPException]] = {400: web.HTTPBadRequest, 404: web.HTTPNotFound,
                                                  413: web.HTTPRequestEntityTooLarge}
    kind = kinds[status]
    if kind is web.HTTPRequestEntityTooLarge:
        return web.HTTPRequestEntityTooLarge(MAX_SEED_BYTES, MAX_SEED_BYTES + 1, reason=message)
    return kind(reason=message)


@dataclass(frozen=True)
class MessageQuery:
    """GET /api/messages/{user}?subject=...: which messages, and how long to wait for them."""

    subject: str | None = None  # substring of the decoded Subject, any case
    sender: str | None = None  # substring of the decoded From
    recipient: str | None = None  # substring of the decoded To or Cc
    since: float | None = None  # internal date at or after (seconds since the epoch)
    mailbox: str | None = None
    count: int = 1  # with wait: answer once this many match
    wait: float = 0.0

    KNOWN = ("subject", "from", "to", "since", "mailbox", "count", "wait")

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> MessageQuery:
        unknown = sorted(set(query) - set(cls.KNOWN))
        if unknown:
            raise BadQuery(f"unknown query parameter {unknown[0]!r} (allowed: {', '.join(sorted(cls.KNOWN))})")
        values = dict(query)
        wait = 0.0
        if values.get("wait"):
            try:
                wait = float(values["wait"])
            except ValueError:
                raise BadQuery(f"wait: {values['wait']!r} is not a number of seconds") from None
            if not 0 <= wait <= MAX_WAIT_SECONDS:
                raise BadQuery(f"wait: must be between 0 and {MAX_WAIT_SECONDS:g} seconds")
        return cls(
            subject=values.get("subject") or None,
            sender=values.get("from") or None,
            recipient=values.get("to") or None,
            since=parse_time(values, "since"),
            mailbox=values.get("mailbox") or None,
            count=parse_int(values, "count", minimum=1) or 1,
            wait=wait,
        )

    def matches(self, summary: dict[str, Any], message: Message) -> bool:
        headers = summary["headers"]

        def has(needle: str | None, *names: str) -> bool:
            return needle is None or any(needle.lower() in (headers[name] or "").lower() for name in names)

        return (has(self.subject, "subject") and has(self.sender, "from") and has(self.recipient, "to", "cc")
                and (self.since is None or message.internal_date.timestamp() >= self.since))

    def select(self, user: str, account: AccountInterface) -> list[dict[str, Any]]:
        boxes = list(account.mailboxes.values())
        if self.mailbox is not None:
            box = account.mailbox(self.mailbox)
            boxes = [box] if box is not None else []
        found = []
        for box in boxes:
            for message in box.messages:
                summary = message_summary(box, message)
                if self.matches(summary, message):
                    found.append({**summary, "raw_url": _raw_url(user, box, message)})
        return found


def _raw_url(user: str, box: MailboxInterface, message: Message) -> str:
    return f"/api/messages/{quote(user, safe='')}/{quote(box.name, safe='')}/{message.uid}/raw"


class ControlRoutes:
    def __init__(self, server: Controllable, closing: asyncio.Event, respond: Respond,
                 ports: Callable[[], Mapping[str, int]]) -> None:
        self.server = server
        self.closing = closing
        self.respond = respond
        self.ports = ports  # the running listeners' bound ports, as MailState has them

    def routes(self) -> list[tuple[str, str, Handler]]:
        return [
            ("POST", "/api/messages/{user}/{mailbox}", self.seed),
            ("PUT", "/api/listeners/{name}/scenario", self.put_scenario),
            ("POST", "/api/reset", self.reset),
            ("POST", "/api/tokens", self.issue_token),
            ("GET", "/api/tokens", self.list_tokens),
            ("DELETE", "/api/tokens/{id}", self.revoke_token),
        ]

    def _account(self, user: str) -> AccountInterface:
        account = self.server.store.accounts.get(user)
        if account is None:
            raise refused(404, f"no user {user!r}")
        return account

    # --- wait for mail ------------------------------------------------------------------------

    async def find_messages(self, request: web.Request, user: str) -> web.Response:
        """The user's messages that match the query; with ?wait=S, answer as soon as `count` match
        (or after S seconds with what matches then: maybe nothing)."""
        query = MessageQuery.parse(request.query)
        account = self._account(user)
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + query.wait
        woken = asyncio.Event()

        def wake(*_: object) -> None:
            woken.set()

        store = self.server.store
        store.arrival_hooks.append(wake)
        # Mailbox watchers also see IMAP APPEND/COPY/MOVE (and flag changes: a harmless extra look).
        unwatch: dict[str, Callable[[], None]] = {}
        try:
            while True:
                for name, box in account.mailboxes.items():
                    if name not in unwatch:
                        unwatch[name] = box.watch(wake)
                found = query.select(user, account)
                remaining = deadline - loop.time()
                if len(found) >= query.count or remaining <= 0 or self.closing.is_set():
                    break
                woken.clear()
                await _first(woken, self.closing, remaining)
        finally:
            if wake in store.arrival_hooks:
                store.arrival_hooks.remove(wake)
            for stop in unwatch.values():
                stop()
        return self.respond({"user": user, "count": len(found), "messages": found,
                             "waited": round(loop.time() - started, 3),
                             "timed_out": query.wait > 0 and len(found) < query.count}, 200)

    # --- seed ---------------------------------------------------------------------------------

    async def seed(self, request: web.Request) -> web.Response:
        """POST raw RFC 5322 bytes into a mailbox: ?flags=\\Seen,\\Flagged&internal_date=...&create=true."""
        user = request.match_info["user"]
        account = self._account(user)
        query = dict(request.query)
        known = {"flags", "internal_date", "create"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise BadQuery(f"unknown query parameter {unknown[0]!r} (allowed: {', '.join(sorted(known))})")
        try:
            flags = check_flags(query.get("flags", "").replace(",", " ").split())
        except ValueError as error:
            raise BadQuery(f"flags: {error}") from None
        moment = parse_time(query, "internal_date")
        internal_date = None if moment is None else datetime.fromtimestamp(moment, timezone.utc)
        create = parse_bool(query, "create", False)
        data = await _read_body(request, MAX_SEED_BYTES)
        if not data.strip():
            raise refused(400, "the body must be the message: raw RFC 5322 bytes (headers, a blank line, the body)")
        name = request.match_info["mailbox"]
        box = target_mailbox(account, name, create=create)
        if box is None:
            raise refused(404, f"user {user!r} has no mailbox {name!r} (add create=true to make it)")
        message = self.server.store.add_message(account, box, crlf(data), flags, internal_date)
        await self.server.store.flush()  # a durable store: on disk before the 201
        summary = {"user": user, **message_summary(box, message), "raw_url": _raw_url(user, box, message)}
        response = self.respond(summary, 201)
        response.headers["Location"] = summary["raw_url"].removesuffix("/raw")
        return response

    # --- runtime control ----------------------------------------------------------------------

    async def put_scenario(self, request: web.Request) -> web.Response:
        """{"scenario": "chaos" | "<id>" | null, "chaos": {...}}: the listener's scenario for
        every connection from now on."""
        name = request.match_info["name"]
        names = [listener.name for listener in self.server.config.listeners]
        if name not in names:
            raise refused(404, f"no listener {name!r} (listeners: {', '.join(names)})")
        body = await _json_body(request)
        unknown = sorted(set(body) - {"scenario", "chaos"})
        if unknown or "scenario" not in body:
            raise refused(400, f"the body is {{\"scenario\": id or null, \"chaos\": {{...}}}}; "
                               f"{'unknown key ' + repr(unknown[0]) if unknown else 'scenario is missing'}")
        try:
            self.server.set_scenario(name, body["scenario"], body.get("chaos"))
        except ConfigError as error:
            raise refused(400, str(error)) from None
        server = self.server
        listener = next(listener for listener in server.config.listeners if listener.name == name)
        return self.respond(listener_view(listener, server.config, self.ports()), 200)

    # --- OAuth bearer tokens (store.py) -------------------------------------------------------

    async def issue_token(self, request: web.Request) -> web.Response:
        """{"user": name, "scope": "mail", "expires_in": seconds}: a token for XOAUTH2 and
        OAUTHBEARER. expires_in may be 0 or negative (an expired token, for the refusal)."""
        body = await _json_body(request)
        unknown = sorted(set(body) - {"user", "scope", "expires_in"})
        if unknown:
            raise refused(400, f"unknown key {unknown[0]!r} (allowed: expires_in, scope, user)")
        user = body.get("user")
        if not isinstance(user, str) or not user:
            raise refused(400, "user: the account's name (or one of its addresses) is required")
        found = self.server.store.credentials(user)
        if found is None:
            raise refused(404, f"no user {user!r}")
        scope = body.get("scope", " ".join(DEFAULT_SCOPE))
        if isinstance(scope, list):
            scope = " ".join(str(word) for word in scope)
        if not isinstance(scope, str) or not scope.split():
            raise refused(400, "scope: words separated by spaces, e.g. \"mail\" or \"imap smtp\"")
        expires_in = body.get("expires_in", 3600)
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)):
            raise refused(400, "expires_in: a number of seconds")
        token = self.server.store.tokens.issue(found[0], tuple(scope.split()), float(expires_in))
        return self.respond(token.as_dict(time.time(), with_token=True), 201)

    async def list_tokens(self, request: web.Request) -> web.Response:
        now = time.time()
        return self.respond({"tokens": [token.as_dict(now) for token in self.server.store.tokens.listed()]}, 200)

    async def revoke_token(self, request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        if not self.server.store.tokens.revoke(ident):
            raise refused(404, f"no token {ident!r}")
        return self.respond({"revoked": ident}, 200)

    async def reset(self, request: web.Request) -> web.Response:
        result = self.server.reset()
        await self.server.store.flush()
        return self.respond(result, 200)


async def _first(event: asyncio.Event, closing: asyncio.Event, timeout: float) -> None:
    """Until `event` or `closing` is set, or `timeout` seconds pass."""
    waits = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(closing.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def _read_body(request: web.Request, limit: int) -> bytes:
    # Read the stream ourselves: aiohttp's request.read() stops at client_max_size (1 MiB).
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > limit:
            raise refused(413, f"the message is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await _read_body(request, 64 * 1024) or b"null")
    except (ValueError, UnicodeDecodeError):
        raise refused(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise refused(400, "the body must be a JSON object")
    return body
