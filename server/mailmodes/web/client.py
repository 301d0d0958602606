"""`mailmodes sessions --api URL` and `mailmodes messages --api URL`: read a running server's
HTTP API (the same data the dashboard shows). Stdlib urllib only; loopback by default."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

EXIT_UNREACHABLE = 1
TIMEOUT = 10.0


class ApiUnreachable(Exception):
    """The API did not answer, or answered with an error; str() is the one line to show."""


def fetch_json(base_url: str, path: str, query: dict[str, str] | None = None) -> Any:
    return request_json(base_url, path, query)


def request_json(base_url: str, path: str, query: dict[str, str] | None = None, *, method: str = "GET",
                 body: bytes | None = None, content_type: str = "application/json",
                 timeout: float = TIMEOUT) -> Any:
    """The JSON answer of one request; ApiUnreachable (one line) if there is none, or an error."""
    with open_url(base_url, path, query, method=method, body=body, content_type=content_type,
                  timeout=timeout) as response:
        try:
            return json.load(response)
        except OSError as error:  # a read that timed out, a connection reset
            raise ApiUnreachable(f"{base_url}{path}: the answer did not come ({error})") from None


def fetch_bytes(base_url: str, path: str) -> bytes:
    with open_url(base_url, path) as response:
        data: bytes = response.read()
        return data


def open_url(base_url: str, path: str, query: dict[str, str] | None = None, *, method: str = "GET",
             body: bytes | None = None, content_type: str = "application/json", timeout: float = TIMEOUT) -> Any:
    url = base_url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
    if not url.startswith(("http://", "https://")):
        raise ApiUnreachable(f"{base_url}: the API URL must start with http:// (e.g. http://127.0.0.1:8025)")
    headers = {"Content-Type": content_type} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        try:
            message = json.load(error).get("error", error.reason)
        except (ValueError, AttributeError):
            message = error.reason
        raise ApiUnreachable(f"{url}: {error.code} {message}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ApiUnreachable(f"{url}: cannot reach the API ({reason}); is `mailmodes serve` running with [http]?") from None


def printable(value: Any) -> Any:
    """Mail and transcripts are hostile input: no control character reaches the terminal (an
    ESC in a Subject could rewrite the screen); they are shown escaped, like repr() does."""
    if isinstance(value, str):
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)
    if isinstance(value, list):
        return [printable(item) for item in value]
    if isinstance(value, dict):
        return {key: printable(item) for key, item in value.items()}
    return value


def run_reporting(action: Callable[[], None]) -> int:
    try:
        action()
    except ApiUnreachable as error:
        print(f"mailmodes: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return 0


def print_sessions(base_url: str, query: dict[str, str], show: Callable[[dict[str, Any]], str], *,
                   follow: bool = False) -> int:
    """Finished sessions from the API, printed with `show` (cli.format_session); with `follow`,
    then each one as it finishes, woken by /api/events rather than by polling."""
    def action() -> None:
        entries = fetch_json(base_url, "/api/sessions", {"open": "false", **query})["sessions"]
        for entry in entries:
            print(show(printable(entry)), flush=follow)
        if not follow:
            return
        last = max((entry["id"] for entry in entries), default=0)
        later = {key: value for key, value in query.items() if key != "limit"}
        # keepalives come every 15 s: a minute of silence means the server is gone
        with open_url(base_url, "/api/events", timeout=60.0) as events:
            for line in events:
                if not (line.startswith(b"data: ") and json.loads(line[6:]).get("sessions")):
                    continue
                fresh = fetch_json(base_url, "/api/sessions", {"open": "false", **later, "after_id": str(last)})
                for entry in fresh["sessions"]:
                    print(show(printable(entry)), flush=True)
                    last = max(last, entry["id"])
        raise ApiUnreachable(f"{base_url}: the server closed the event stream (stopped?)")

    return run_reporting(action)


def format_message(entry: dict[str, Any]) -> str:
    headers = entry["headers"]
    flags = f" [{' '.join(entry['flags'])}]" if entry["flags"] else ""
    return (f"  {entry['mailbox']:<8} uid {entry['uid']:<4} {entry['size']:>7} bytes  {entry['internal_date']}{flags}\n"
            f"      From: {headers['from'] or '-'}\n"
            f"      Subject: {headers['subject'] if headers['subject'] is not None else '-'}")


def format_captured(entry: dict[str, Any]) -> str:
    return (f"  #{entry['id']} from account {entry['sender_account']}: MAIL FROM {entry['mail_from']} "
            f"to {', '.join(entry['recipients'])}, {entry['size']} bytes, {entry['received']}\n"
            f"      Subject: {entry['headers']['subject'] if entry['headers']['subject'] is not None else '-'}")


def print_messages(base_url: str, user: str | None) -> int:
    """Every user's messages (or one user's), then the captured outbound mail."""
    def action() -> None:
        users = [user] if user else [u["user"] for u in fetch_json(base_url, "/api/messages")["users"]]
        for name in users:
            messages = fetch_json(base_url, f"/api/messages/{quote(name, safe='')}")["messages"]
            print(f"{printable(name)}: {len(messages)} message{'s' if len(messages) != 1 else ''}")
            for entry in messages:
                print(format_message(printable(entry)))
        if user is None:
            captured = fetch_json(base_url, "/api/captured")["messages"]
            print(f"captured outbound (never relayed): {len(captured)}")
            for entry in captured:
                print(format_captured(printable(entry)))

    return run_reporting(action)
