"""Fixtures for the HTTP API and dashboard tests: a server with the API on an ephemeral port, and
a real headless Chromium driven over the DevTools protocol (a websocket, via aiohttp).

Why DevTools and not `chromium --dump-dom --virtual-time-budget`: the dashboard keeps an
EventSource (/api/events) open, and virtual time never advances while a fetch is pending, so a
dump would wait forever. DevTools also lets a test wait for the page to change by itself, which
is what "live, without manual refresh" means.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mailmodes.app import ThreadedMailServer
from support import require_tool

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
STEP_TIMEOUT = 20.0  # seconds for any one browser step
DEVTOOLS_LINE = re.compile(rb"DevTools listening on (ws://\S+)")

# Resolves once `predicate` (a JS expression) is truthy, re-checked on every DOM change; rejects
# after `ms` milliseconds so a failing test ends with a message rather than a hang.
WAIT_FOR_JS = """
new Promise((resolve, reject) => {
  const check = () => { try { const value = (%s); if (value) { observer.disconnect(); resolve(value); } }
                        catch (error) { /* not there yet */ } };
  const observer = new MutationObserver(check);
  observer.observe(document, {subtree: true, childList: true, characterData: true, attributes: true});
  setTimeout(() => { observer.disconnect(); reject(new Error("timed out waiting for: " + %s)); }, %d);
  check();
})
"""


class Devtools:
    """The browser-level DevTools websocket: numbered commands, events handed to `on_event`."""

    def __init__(self, websocket: aiohttp.ClientWebSocketResponse) -> None:
        self.websocket = websocket
        self.on_event: Callable[[dict[str, Any]], None] = lambda event: None
        self._next_id = 0

    async def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._next_id += 1
        wanted = self._next_id
        message: dict[str, Any] = {"id": wanted, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self.websocket.send_str(json.dumps(message))
        while True:
            reply = json.loads(await self.websocket.receive_str(timeout=STEP_TIMEOUT))
            if reply.get("id") == wanted:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.on_event(reply)


class Page:
    """One browser tab, synchronous for tests: every call runs the DevTools exchange to the end."""

    def __init__(self, runner: asyncio.Runner, devtools: Devtools, session: str) -> None:
        self._runner = runner
        self._devtools = devtools
        self._session = session
        self.dialogs: list[dict[str, Any]] = []  # alert() and friends: must stay empty
        self.console: list[str] = []  # console messages and log entries (CSP violations land here)
        self.exceptions: list[str] = []
        devtools.on_event = self._note_event

    def _note_event(self, event: dict[str, Any]) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Page.javascriptDialogOpening":
            self.dialogs.append(params)
            # answer it, or the page would stay blocked
            asyncio.ensure_future(self._devtools.call("Page.handleJavaScriptDialog", {"accept": True}, self._session))
        elif method == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"]))
        elif method == "Log.entryAdded":
            self.console.append(params["entry"]["text"])
        elif method == "Runtime.exceptionThrown":
            self.exceptions.append(json.dumps(params["exceptionDetails"]))

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self._runner.run(self._devtools.call(method, params, self._session))

    def open(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result["result"].get("value")

    def wait_for(self, predicate: str, timeout_ms: int = 15000) -> Any:
        return self.evaluate(WAIT_FOR_JS % (predicate, json.dumps(predicate), timeout_ms))

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.write_bytes(base64.b64decode(data))
        return path


async def _launch(chromium: str, profile: Path) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    seen = b""
    while True:
        line = await asyncio.wait_for(process.stderr.readline(), STEP_TIMEOUT)
        if not line:
            raise AssertionError(f"chromium exited before DevTools listened: {seen.decode(errors='replace')}")
        seen += line
        found = DEVTOOLS_LINE.search(line)
        if found:
            # keep reading stderr in the background so chromium never blocks on a full pipe
            asyncio.ensure_future(_drain(process.stderr))
            return process, found.group(1).decode()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def _open_tab(browser_url: str) -> tuple[aiohttp.ClientSession, Devtools, str]:
    client = aiohttp.ClientSession()
    devtools = Devtools(await client.ws_connect(browser_url, max_msg_size=0))
    target = await devtools.call("Target.createTarget", {"url": "about:blank"})
    attached = await devtools.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
    return client, devtools, attached["sessionId"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Page]:
    """A fresh headless Chromium with one tab (Page, Runtime and Log events on)."""
    chromium = require_tool("chromium")
    with asyncio.Runner() as runner:
        process, browser_url = runner.run(_launch(chromium, tmp_path / "chromium-profile"))
        try:
            client, devtools, session = runner.run(_open_tab(browser_url))
            page = Page(runner, devtools, session)
            for domain in ("Page", "Runtime", "Log"):
                page.call(f"{domain}.enable")
            page.call("Emulation.setDeviceMetricsOverride",
                      {"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
            yield page
            runner.run(devtools.websocket.close())
            runner.run(client.close())
        finally:
            if process.returncode is None:
                process.terminate()
                runner.run(process.wait())


@pytest.fixture
def api_server(serve: Callable[..., ThreadedMailServer]) -> Callable[..., ThreadedMailServer]:
    """api_server(*listeners, **top) -> a started server with the HTTP API on an ephemeral port."""

    def start(*listeners: dict[str, Any], **top: Any) -> ThreadedMailServer:
        top.setdefault("http", {"port": 0})
        return serve(*listeners, **top)

    return start
