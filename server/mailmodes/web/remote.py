"""A running server driven over its HTTP API, as a CI suite drives it: wait for mail and get it
back parsed, assert that none came, seed, change scenarios, reset. What the pytest plugin and
`mailmodes wait` use, against an in-process server and a container alike. Stdlib only.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any, ParamSpec, TypeVar
from urllib.parse import quote

from mailmodes.web.client import fetch_bytes, fetch_json, request_json, run_reporting

# The server refuses a longer ?wait=; a longer wait here is several polls in a row.
MAX_POLL_SECONDS = 300.0
URL = re.compile(r"""https?://[^\s<>"'()\[\]]+""")
P = ParamSpec("P")
R = TypeVar("R")


def in_thread(function: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
    """The async variant of a blocking helper: the same call on a worker thread, so a test's
    event loop (and an in-process server's) goes on while it waits."""
    @functools.wraps(function)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(function, *args, **kwargs)

    return run


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    data: bytes


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("href", "src") and value and value.startswith(("http://", "https://", "mailto:")):
                self.links.append(value)


@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the server holds it, parsed: headers, the text and HTML bodies, the
    attachments and every link, for assertions."""

    user: str
    mailbox: str
    uid: int
    flags: tuple[str, ...]
    internal_date: datetime
    raw: bytes
    email: EmailMessage = field(repr=False)

    @classmethod
    def parse(cls, user: str, summary: Mapping[str, Any], raw: bytes) -> ReceivedMessage:
        # Python's email package speaks "\n": parsed from CRLF, text parts would keep their "\r".
        parsed = BytesParser(policy=policy.default).parsebytes(raw.replace(b"\r\n", b"\n"))
        assert isinstance(parsed, EmailMessage)
        return cls(user, summary["mailbox"], summary["uid"], tuple(summary["flags"]),
                   datetime.fromisoformat(summary["internal_date"]), raw, parsed)

    def header(self, name: str) -> str | None:
        value = self.email.get(name)
        return None if value is None else str(value)

    @property
    def headers(self) -> list[tuple[str, str]]:
        return [(name, str(value)) for name, value in self.email.items()]

    @property
    def subject(self) -> str | None:
        return self.header("Subject")

    @property
    def sender(self) -> str | None:
        return self.header("From")

    @property
    def to(self) -> list[str]:
        return [address.addr_spec for name in ("To", "Cc") for value in self.email.get_all(name, [])
                for address in getattr(value, "addresses", ())]

    def _body(self, subtype: str) -> str | None:
        part = self.email.get_body(preferencelist=(subtype,))
        if part is None:
            return None
        content = part.get_content()
        return content if isinstance(content, str) else None

    @property
    def text(self) -> str | None:
        return self._body("plain")

    @property
    def html(self) -> str | None:
        return self._body("html")

    @property
    def attachments(self) -> list[Attachment]:
        found = []
        for part in self.email.iter_attachments():
            data = part.get_payload(decode=True)
            found.append(Attachment(part.get_filename(), part.get_content_type(),
                                    data if isinstance(data, bytes) else b""))
        return found

    @property
    def links(self) -> list[str]:
        """Every http(s) and mailto link of the HTML body (href, src) and URL in the text body, once each."""
        links: list[str] = []
        if self.html:
            parser = _Links()
            parser.feed(self.html)
            links += parser.links
        links += URL.findall(self.text or "")
        return list(dict.fromkeys(link.rstrip(".,;:!?") for link in links))

    def describe(self) -> str:
        return f"{self.mailbox}/{self.uid} From: {self.sender or '-'} To: {', '.join(self.to) or '-'} " \
               f"Subject: {self.subject if self.subject is not None else '-'}"


class WaitTimeout(AssertionError):
    """wait_for_message found too few; the message lists what did arrive."""


class UnexpectedMessage(AssertionError):
    """assert_no_message found one."""


def _filters(subject: str | None, sender: str | None, to: str | None, since: float | datetime | None,
             mailbox: str | None) -> dict[str, str]:
    moment = since.timestamp() if isinstance(since, datetime) else since
    chosen = {"subject": subject, "from": sender, "to": to, "mailbox": mailbox,
              "since": None if moment is None else repr(moment)}
    return {key: value for key, value in chosen.items() if value is not None}


def _describe_filters(filters: Mapping[str, str]) -> str:
    return f" matching {', '.join(f'{key}={value!r}' for key, value in filters.items())}" if filters else ""


class MailmodesApi:
    """One server's HTTP API, e.g. MailmodesApi("http://127.0.0.1:8025")."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.test_id: str | None = None  # the pytest fixtures set it: address() is then unique to the test
        self._before: dict[str, dict[str, Any]] = {}  # listener -> its scenario before set_scenario

    def address(self, user: str = "alice") -> str:
        """An address of the user that no other test uses (a +tag subaddress): filter on it with
        to=..., and parallel tests against one server never see each other's mail."""
        users = {entry["user"]: entry["addresses"] for entry in self.info()["users"]}
        if not users.get(user):
            raise LookupError(f"no user {user!r} with an address at {self.base_url} (users: {', '.join(users)})")
        local, _, domain = users[user][0].rpartition("@")
        seed = self.test_id if self.test_id is not None else secrets.token_hex(8)
        return f"{local}+t{hashlib.sha256(seed.encode()).hexdigest()[:12]}@{domain}"

    def get(self, path: str, query: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        return request_json(self.base_url, path, query, timeout=timeout or self.timeout)

    def send(self, method: str, path: str, body: bytes = b"", query: dict[str, str] | None = None,
             content_type: str = "application/json") -> Any:
        return request_json(self.base_url, path, query, method=method, body=body, content_type=content_type,
                            timeout=self.timeout)

    # --- reading ------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = self.get("/api/info")
        return info

    def listeners(self) -> list[dict[str, Any]]:
        listeners: list[dict[str, Any]] = self.get("/api/listeners")["listeners"]
        return listeners

    def user_for(self, address: str) -> str:
        """The user an address reaches (a +tag subaddress reaches its user)."""
        local, _, domain = address.lower().rpartition("@")
        plain = f"{local.partition('+')[0]}@{domain}"
        for user in self.info()["users"]:
            if address.lower() in user["addresses"] or plain in user["addresses"]:
                return str(user["user"])
        raise LookupError(f"no user of {self.base_url} receives mail for {address!r}")

    def summaries(self, user: str, filters: Mapping[str, str] | None = None, *, wait: float = 0.0,
                  count: int = 1) -> dict[str, Any]:
        """GET /api/messages/{user} with filters (the API's names), waiting up to `wait` seconds."""
        query = {**(filters or {}), "count": str(count)}
        if wait:
            query["wait"] = f"{wait:.3f}"
        answer: dict[str, Any] = self.get(f"/api/messages/{quote(user, safe='')}", query,
                                          timeout=wait + self.timeout)
        return answer

    def fetch(self, user: str, summaries: Iterable[Mapping[str, Any]]) -> list[ReceivedMessage]:
        return [ReceivedMessage.parse(user, summary, fetch_bytes(self.base_url, summary["raw_url"]))
                for summary in summaries]

    def find_messages(self, user: str, *, subject: str | None = None, sender: str | None = None, to: str | None = None,
                 since: float | datetime | None = None, mailbox: str | None = None) -> list[ReceivedMessage]:
        """The user's messages that match now, parsed (no waiting)."""
        found = self.summaries(user, _filters(subject, sender, to, since, mailbox))
        return self.fetch(user, found["messages"])

    def _resolve(self, user: str | None, to: str | None) -> str:
        if user is not None:
            return user
        if to is not None and "@" in to:
            return self.user_for(to)
        raise TypeError("name the user, or give to= an address of one")

    def wait_for_messages(self, user: str | None = None, *, count: int = 1, subject: str | None = None,
                          sender: str | None = None, to: str | None = None, since: float | datetime | None = None,
                          mailbox: str | None = None, timeout: float = 10.0) -> list[ReceivedMessage]:
        """At least `count` matching messages, parsed, as soon as they are there; WaitTimeout
        after `timeout` seconds, listing what arrived instead."""
        user = self._resolve(user, to)
        filters = _filters(subject, sender, to, since, mailbox)
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            found = self.summaries(user, filters, wait=min(remaining, MAX_POLL_SECONDS), count=count)
            if found["count"] >= count:
                return self.fetch(user, found["messages"])
            if time.monotonic() >= deadline:
                break
        arrived = self.fetch(user, self.summaries(user)["messages"])
        listing = "".join(f"\n  {message.describe()}" for message in arrived) or " none"
        raise WaitTimeout(f"waited {timeout:g} s for {count} message{'s' if count != 1 else ''} to {user}"
                          f"{_describe_filters(filters)}; {found['count']} matched. "
                          f"{user} has {len(arrived)}:{listing}")

    def wait_for_message(self, user: str | None = None, *, subject: str | None = None, sender: str | None = None,
                         to: str | None = None, since: float | datetime | None = None, mailbox: str | None = None,
                         timeout: float = 10.0) -> ReceivedMessage:
        """The first matching message, parsed, as soon as it is there (see wait_for_messages)."""
        return self.wait_for_messages(user, subject=subject, sender=sender, to=to, since=since, mailbox=mailbox,
                                      timeout=timeout)[0]

    def assert_no_message(self, user: str | None = None, *, subject: str | None = None, sender: str | None = None,
                          to: str | None = None, since: float | datetime | None = None, mailbox: str | None = None,
                          within: float = 0.5) -> None:
        """No matching message arrives within `within` seconds (0: none is there now)."""
        user = self._resolve(user, to)
        filters = _filters(subject, sender, to, since, mailbox)
        found = self.summaries(user, filters, wait=within)
        if found["count"]:
            listing = "".join(f"\n  {message.describe()}" for message in self.fetch(user, found["messages"]))
            raise UnexpectedMessage(f"expected no message to {user}{_describe_filters(filters)}, "
                                    f"got {found['count']}:{listing}")

    # --- changing -----------------------------------------------------------------------------

    def seed(self, user: str, data: bytes | str, mailbox: str = "INBOX", *, flags: Iterable[str] = (),
             internal_date: float | datetime | None = None, create: bool = False) -> dict[str, Any]:
        """Put a raw message into a mailbox; the stored message's summary."""
        query = {"flags": ",".join(flags)} if flags else {}
        if internal_date is not None:
            moment = internal_date.timestamp() if isinstance(internal_date, datetime) else internal_date
            query["internal_date"] = repr(moment)
        if create:
            query["create"] = "true"
        body = data.encode() if isinstance(data, str) else data
        stored: dict[str, Any] = self.send("POST", f"/api/messages/{quote(user, safe='')}/{quote(mailbox, safe='')}",
                                           body, query, content_type="message/rfc822")
        return stored

    def set_scenario(self, listener: str, scenario: str | None, chaos: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The listener's scenario for new connections; restore_scenarios() puts the one before back."""
        if listener not in self._before:
            for entry in self.listeners():
                if entry["name"] == listener:
                    self._before[listener] = {"scenario": entry["scenario"], "chaos": entry.get("chaos")}
        return self._put_scenario(listener, {"scenario": scenario, "chaos": None if chaos is None else dict(chaos)})

    def _put_scenario(self, listener: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {key: value for key, value in body.items() if value is not None or key == "scenario"}
        view: dict[str, Any] = self.send("PUT", f"/api/listeners/{quote(listener, safe='')}/scenario",
                                         json.dumps(body).encode())
        return view

    def restore_scenarios(self) -> None:
        """Every listener changed by set_scenario back to the scenario it had before."""
        before, self._before = self._before, {}
        for listener, body in before.items():
            self._put_scenario(listener, body)

    def reset(self) -> dict[str, Any]:
        """POST /api/reset: sessions, messages and captured mail gone, seeds and scenarios as configured."""
        self._before.clear()
        answer: dict[str, Any] = self.send("POST", "/api/reset")
        return answer

    wait_for_message_async = in_thread(wait_for_message)
    wait_for_messages_async = in_thread(wait_for_messages)
    assert_no_message_async = in_thread(assert_no_message)
    find_messages_async = in_thread(find_messages)
    seed_async = in_thread(seed)
    set_scenario_async = in_thread(set_scenario)
    reset_async = in_thread(reset)


def print_message(base_url: str, user: str, mailbox: str, uid: int, show: Callable[[ReceivedMessage], str]) -> int:
    """`mailmodes messages --uid`: one message, parsed, printed with `show` (cli.format_received)."""
    def action() -> None:
        path = f"/api/messages/{quote(user, safe='')}/{quote(mailbox, safe='')}/{uid}"
        summary = fetch_json(base_url, path)
        print(show(ReceivedMessage.parse(user, summary, fetch_bytes(base_url, path + "/raw"))))

    return run_reporting(action)
