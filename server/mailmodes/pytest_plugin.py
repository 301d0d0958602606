"""pytest plugin (entry point pytest11 "mailmodes"): a real mailmodes server for each test.

    def test_my_client_uses_starttls(mailmodes_server):
        my_client.send(host="127.0.0.1", port=mailmodes_server.port("smtp-starttls-required"),
                       cafile=mailmodes_server.ca_file)
        assert not mailmodes_server.sessions(verdict="credentials-in-clear")

`mailmodes_server` has one listener per protocol per TLS mode, named "<protocol>-<mode>"; choose
others with `@pytest.mark.mailmodes(listeners=[...], scenarios=[...])` or start servers yourself
with the `mailmodes_factory` fixture. Every port is ephemeral (port 0) and the certificates live
in a per-session temporary directory, which pytest-xdist makes per worker: parallel workers never
share a port or a file.

`mailmodes` is the faster way for a whole suite: one server per session (per xdist worker), reset
before each test, or with `--mailmodes-url URL` (ini `mailmodes_url`) a server or container that
is already running ("noproc"), driven by its HTTP API alone. Both have the helpers of
web/remote.py: wait_for_message, assert_no_message, seed, set_scenario (undone after the test),
reset, address() (unique per test), and their `_async` variants.

The report card: `mailmodes_report_card(client, scenarios=None, ...)` runs a callable client
against each scenario (its own server, so the card is that client's) and returns the card;
`assert_passes(card)` fails with every failed scenario and its reason.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

from mailmodes.protocols import PROTOCOLS
from mailmodes.tls.policy import TlsMode
from mailmodes.web.client import ApiUnreachable, fetch_bytes
from mailmodes.web.remote import MailmodesApi

if TYPE_CHECKING:
    from mailmodes.app import ThreadedMailServer
    from mailmodes.record.journal import Journal, SessionRecord
    from mailmodes.record.report import ReportCard
    from mailmodes.store import CapturedMessage, Store, StoreInterface

HOSTNAME = "mail.example.test"
MODES = tuple(mode.value for mode in TlsMode)
DEFAULT_USERS = (
    {"name": "alice", "password": "alice-password", "addresses": ["alice@example.test"]},
    {"name": "bob", "password": "bob-password", "addresses": ["bob@example.test"]},
)
SETTLE_TIMEOUT = 5.0  # how long sessions() waits for connections that are still closing


def default_listeners(protocols: Iterable[str] = PROTOCOLS, modes: Iterable[str] = MODES) -> list[dict[str, Any]]:
    """One listener per protocol per mode, "<protocol>-<mode>" (SMTP in the submission role)."""
    modes = tuple(modes)
    return [{"name": f"{protocol}-{mode}", "protocol": protocol, "port": 0, "tls": mode}
            for protocol in protocols for mode in modes]


def scenario_listeners(scenario: str, protocols: Iterable[str] = PROTOCOLS) -> list[dict[str, Any]]:
    """A scenario on an implicit-TLS and a STARTTLS listener per protocol it is for:
    "<protocol>-implicit-<scenario>" and "<protocol>-starttls-<scenario>"."""
    from mailmodes.scenarios.catalogue import SCENARIOS

    known = SCENARIOS.get(scenario)  # an unknown id is left to the config check, which names it
    return [
        {"name": f"{protocol}-{kind}-{scenario}", "protocol": protocol, "port": 0, "tls": mode, "scenario": scenario}
        for protocol in protocols if known is None or protocol in known.protocols
        for kind, mode in (("implicit", "implicit"), ("starttls", "starttls-required"))
    ]


class MailmodesServer(MailmodesApi):
    """A started server, as a test sees it. Reads of the store go through the server's loop; the
    helpers of MailmodesApi (wait_for_message, seed, ...) go through its HTTP API."""

    host = "127.0.0.1"

    def __init__(self, threaded: ThreadedMailServer) -> None:
        self.threaded = threaded
        port = threaded.http_port
        # Started with http=False: the helpers then fail at once, naming the port 0 they cannot reach.
        super().__init__(f"http://{self.host}:{port or 0}")

    # --- where to connect ---------------------------------------------------------------------

    @property
    def ports(self) -> dict[str, int]:
        return dict(self.threaded.ports)

    def port(self, name: str) -> int:
        """The bound port of a listener, e.g. port("imap-implicit")."""
        try:
            return self.threaded.ports[name]
        except KeyError:
            raise KeyError(f"no listener {name!r}; listeners: {', '.join(self.threaded.ports)}") from None

    @property
    def hostname(self) -> str:
        return self.threaded.config.hostname

    @property
    def ca_file(self) -> Path:
        assert self.threaded.ca_file is not None
        return self.threaded.ca_file

    @cached_property
    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the test CA and checks names (127.0.0.1, localhost and
        the configured hostname are in the server certificate)."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def http_port(self) -> int | None:
        return self.threaded.http_port

    @property
    def http_url(self) -> str | None:
        """The dashboard and API, e.g. "http://127.0.0.1:40123" (None if started with http=False)."""
        return None if self.http_port is None else f"http://{self.host}:{self.http_port}"

    # --- what happened ------------------------------------------------------------------------

    @property
    def store(self) -> StoreInterface:
        return self.threaded.store

    @property
    def journal(self) -> Journal:
        return self.threaded.journal

    def call(self, function: Callable[[], Any]) -> Any:
        """Run `function` on the server's event loop (the safe way to touch the store)."""
        return self.threaded.call(function)

    def sessions(self, verdict: str | None = None, listener: str | None = None, *, protocol: str | None = None,
                 user: str | None = None, timeout: float = SETTLE_TIMEOUT) -> list[SessionRecord]:
        """Finished sessions, oldest first, optionally only those with a verdict (code) etc.

        Waits up to `timeout` seconds for connections that are still open to finish first: a
        client that has just returned may not have been seen to close yet, and a session gets
        its verdicts only when it ends.
        """
        self.settle(timeout)
        return [
            record for record in self.journal.sessions(verdict=verdict, listener=listener)
            if (protocol is None or record.protocol == protocol) and (user is None or record.user == user)
        ]

    def session_dicts(self, verdict: str | None = None, listener: str | None = None, **filters: Any) -> list[dict[str, Any]]:
        """As sessions(), in the public JSON shape (the API's and the journal file's)."""
        return [record.to_json() for record in self.sessions(verdict, listener, **filters)]

    def settle(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait (up to `timeout`) until every session open now has finished. A connection is open
        from the moment it is accepted, its TLS handshake included (an implicit-TLS client whose
        handshake has failed on its side may not have been seen to fail yet)."""
        self.journal.settle(timeout)

    def messages(self, user: str, mailbox: str = "INBOX") -> list[bytes]:
        """The raw messages in a user's mailbox, oldest first."""
        def read() -> list[bytes]:
            box = self.store.accounts[user].mailbox(mailbox)
            if box is None:
                raise KeyError(f"user {user!r} has no mailbox {mailbox!r}")
            return [message.data for message in box.messages]

        result: list[bytes] = self.call(read)
        return result

    def captured(self) -> list[CapturedMessage]:
        """Mail that authenticated clients sent to non-local addresses (kept, never relayed)."""
        result: list[CapturedMessage] = self.call(lambda: list(self.store.captured))
        return result

    def clear(self) -> None:
        """Forget every finished session, message and captured message: start clean."""
        from mailmodes.web.views import delete_messages

        self.settle()
        self.journal.clear()

        def wipe() -> None:
            delete_messages(self.store)
            self.store.captured.clear()

        self.call(wipe)

    def stop(self) -> None:
        self.threaded.stop()


def _certs_dir(base: Path, hostname: str) -> Path:
    # One directory per hostname: certs.py remakes the server certificate when the name changes.
    from mailmodes.tls.certs import ensure_certificates

    path = base if hostname == HOSTNAME else base / hostname
    ensure_certificates(path, hostname)
    return path


def start_server(certs_base: Path, listeners: Iterable[dict[str, Any]] | None = None, *,
                 scenarios: Iterable[str] = (), protocols: Iterable[str] = PROTOCOLS,
                 modes: Iterable[str] = MODES, users: Iterable[dict[str, Any]] | None = None,
                 hostname: str = HOSTNAME, http: bool = True, **config: Any) -> MailmodesServer:
    """Start a server: `listeners` (TOML-shaped dicts; ports are forced to 0), else one per
    protocol per mode; plus both listeners of each scenario; any other top-level config keys."""
    from mailmodes.app import ThreadedMailServer
    from mailmodes.config import parse_config

    protocols = tuple(protocols)
    chosen = list(listeners) if listeners is not None else default_listeners(protocols, modes)
    for scenario in scenarios:
        chosen += scenario_listeners(scenario, protocols)
    # A per-test server meets the one client under test: sessions can be tied to each other
    # (`fallback`). A test that runs several clients against one server says journal={"one_client": False}.
    journal = {"one_client": True, **config.pop("journal", {})}
    data: dict[str, Any] = {
        "journal": journal,
        "hostname": hostname,
        "certs": {"dir": str(_certs_dir(certs_base, hostname))},
        "users": list(users if users is not None else DEFAULT_USERS),
        "listeners": [{**listener, "port": 0} for listener in chosen],
        **config,
    }
    if http:
        data["http"] = {"port": 0, "host": "127.0.0.1"}
    threaded = ThreadedMailServer(parse_config(data, source="mailmodes pytest plugin")).start()
    return MailmodesServer(threaded)


class MailmodesRemote(MailmodesApi):
    """A server this test run did not start ("noproc": `--mailmodes-url`), known by its API only.
    port(name) is the port the server bound: behind published container ports that differ, map
    them yourself (or publish each port as itself)."""

    def __init__(self, base_url: str, ca_dir: Path) -> None:
        super().__init__(base_url)
        self.host = urlsplit(base_url).hostname or "127.0.0.1"
        self._ca_dir = ca_dir

    @cached_property
    def ports(self) -> dict[str, int]:
        return {entry["name"]: entry["port"] for entry in self.listeners() if entry["port"] is not None}

    def port(self, name: str) -> int:
        try:
            return self.ports[name]
        except KeyError:
            raise KeyError(f"no listener {name!r} at {self.base_url}; listeners: {', '.join(self.ports)}") from None

    @property
    def http_url(self) -> str:
        return self.base_url

    @cached_property
    def ca_file(self) -> Path:
        path = self._ca_dir / "ca.pem"
        path.write_bytes(fetch_bytes(self.base_url, "/ca.pem"))
        return path

    @cached_property
    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


# --- the report card: a callable client against each scenario -----------------------------------

CLIENT_TIMEOUT = 5.0  # what a target suggests the client waits, at most, for any one step


@dataclass(frozen=True)
class ScenarioTarget:
    """One port of the report card's server, as the client under test is given it: connect to
    host:port, speak `protocol`, use implicit TLS when `implicit` (else STARTTLS, as the client
    would be set up for port 587/143/110), verify the certificate as `server_hostname` (the
    wildcard scenarios need their own name) against `ca_file`, log in as user/password."""

    protocol: str
    scenario: str  # a scenario id, or a known-good mode
    tls: str  # the listener's TLS mode
    port: int
    server_hostname: str
    ca_file: Path
    host: str = "127.0.0.1"
    user: str = "alice"
    password: str = "alice-password"
    timeout: float = CLIENT_TIMEOUT

    @property
    def implicit(self) -> bool:
        return self.tls == TlsMode.IMPLICIT.value

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the test CA and checks names: what a correct client uses."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def report_listeners(scenarios: Iterable[str] | None = None,
                     protocols: Iterable[str] = PROTOCOLS) -> list[dict[str, Any]]:
    """The listeners of a report card run: each scenario (default: every buildable one but the
    SASL ones, which offer the mechanisms they test only when named; then the
    four known-good modes) on each of its protocols, on the ports the known-bad plan gives it
    (certificate and TLS scenarios implicit and STARTTLS, the others STARTTLS)."""
    from mailmodes.scenarios.catalogue import PLAN_CHAOS, SCENARIO_MECHANISMS, SCENARIOS, plan_modes

    protocols = tuple(protocols)
    # The SASL scenarios only when named: they test mechanisms most clients are not set up for.
    chosen = list(scenarios) if scenarios is not None else [
        *(s.id for s in SCENARIOS.values() if s.buildable and s.kind != "auth"), *MODES]
    listeners: list[dict[str, Any]] = []
    for scenario_id in chosen:
        if scenario_id in MODES:
            listeners += [{"name": f"{protocol}-{scenario_id}", "protocol": protocol, "port": 0, "tls": scenario_id}
                          for protocol in protocols]
            continue
        scenario = SCENARIOS.get(scenario_id)
        if scenario is None:
            raise ValueError(f"no scenario {scenario_id!r}: `mailmodes scenarios` lists them, and the modes are "
                             f"{', '.join(MODES)}")
        for protocol in (p for p in protocols if p in scenario.protocols):
            for mode in plan_modes(scenario) or (TlsMode.IMPLICIT,):
                kind = "implicit" if mode is TlsMode.IMPLICIT else "starttls"
                listener: dict[str, Any] = {"name": f"{protocol}-{kind}-{scenario_id}", "protocol": protocol,
                                            "port": 0, "tls": mode.value, "scenario": scenario_id}
                if scenario_id == "chaos":
                    stage, reply = PLAN_CHAOS[protocol]
                    listener["chaos"] = {"stage": stage, "reply": reply}
                if scenario_id in SCENARIO_MECHANISMS:
                    listener["sasl_mechanisms"] = list(SCENARIO_MECHANISMS[scenario_id])
                listeners.append(listener)
    return listeners


def run_report_card(certs_base: Path, client: Callable[[ScenarioTarget], Any], scenarios: Iterable[str] | None = None,
                    *, protocols: Iterable[str] = PROTOCOLS, scope: dict[str, Any] | None = None,
                    **config: Any) -> ReportCard:
    """Start a server with a listener per scenario (report_listeners), call `client(target)` once
    for each, one after another, and return the report card of what the client did. An exception
    from the client is its business (a client that refuses a bad certificate raises): it is
    swallowed, and the card says what the server saw. Every row is on the card, reached or not."""
    from mailmodes.record.report import build
    from mailmodes.scenarios.catalogue import client_name

    listeners = report_listeners(scenarios, protocols)
    server = start_server(certs_base, listeners, http=False, **config)
    records: list[SessionRecord] = []
    try:
        for listener in listeners:
            target = ScenarioTarget(listener["protocol"], listener.get("scenario") or listener["tls"], listener["tls"],
                                    server.port(listener["name"]),
                                    client_name(listener.get("scenario") or "", server.hostname), server.ca_file)
            try:
                client(target)
            except Exception:  # noqa: BLE001 - refusing is what a correct client does on most scenarios
                pass
            # Each target is a scenario of its own: a TLS failure on the last one (a refused
            # certificate) must not make this one's EHLO a `fallback`. clear() forgets the
            # history of failed attempts; the session ids go on counting.
            records += server.sessions()
            server.journal.clear()
        expected = [(listener["protocol"], listener.get("scenario") or listener["tls"]) for listener in listeners]
        return build(records, scope or {"server": "report card run"}, expected)
    finally:
        server.stop()


def assert_passes(card: ReportCard, *, allow: Iterable[str] = (), inconclusive: bool = True) -> None:
    """Fail, listing every failed scenario with its reason, unless the card has none; `allow`:
    scenario ids (or "protocol/scenario") known to fail; inconclusive=False fails on those too."""
    allowed = set(allow)
    bad = [row for row in card.rows
           if (row.outcome == "failed" or (not inconclusive and row.outcome == "inconclusive"))
           and row.scenario not in allowed and f"{row.protocol}/{row.scenario}" not in allowed]
    if bad:
        lines = [f"  {row.protocol} {row.scenario}: {row.outcome}: {row.reason}"
                 + (f" (session #{row.deciding.id})" if row.deciding is not None else "") for row in bad]
        raise AssertionError(f"{len(bad)} of {len(card.rows)} scenarios did not pass:\n" + "\n".join(lines))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailmodes")
    group.addoption("--mailmodes-url", metavar="URL", default=None,
                    help="drive the mailmodes server (or container) whose HTTP API is at URL instead of starting one")
    group.addoption("--mailmodes-reset", choices=("auto", "always", "never"), default=None,
                    help="reset the `mailmodes` server before each test: auto (default) = only one this run started")
    parser.addini("mailmodes_url", "as --mailmodes-url", default="")
    parser.addini("mailmodes_reset", "as --mailmodes-reset: auto, always or never", default="auto")


def _option(config: pytest.Config, name: str) -> str:
    value = config.getoption(f"--mailmodes-{name}")
    return str(value if value is not None else config.getini(f"mailmodes_{name}"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mailmodes(listeners=None, *, scenarios=(), protocols=..., modes=..., users=None, http=True, **config): "
        "how the mailmodes_server fixture starts its server",
    )


@pytest.fixture(scope="session")
def mailmodes_certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA and server certificate, made once per session (per xdist worker)."""
    return _certs_dir(tmp_path_factory.mktemp("mailmodes-certs"), HOSTNAME)


@pytest.fixture
def mailmodes_factory(mailmodes_certs_dir: Path) -> Iterator[Callable[..., MailmodesServer]]:
    """mailmodes_factory(listeners=None, *, scenarios=(), ...) -> a started MailmodesServer;
    every server started here is stopped after the test."""
    started: list[MailmodesServer] = []

    def start(*args: Any, **kwargs: Any) -> MailmodesServer:
        server = start_server(mailmodes_certs_dir, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def mailmodes_server(request: pytest.FixtureRequest,
                     mailmodes_factory: Callable[..., MailmodesServer]) -> MailmodesServer:
    """A fresh server for this test: one listener per protocol per mode unless the test's
    `@pytest.mark.mailmodes(...)` says otherwise."""
    marker = request.node.get_closest_marker("mailmodes")
    if marker is None:
        return mailmodes_factory()
    return mailmodes_factory(*marker.args, **marker.kwargs)


@pytest.fixture
def mailmodes_report_card(request: pytest.FixtureRequest,
                          mailmodes_certs_dir: Path) -> Callable[..., ReportCard]:
    """mailmodes_report_card(client, scenarios=None, *, protocols=..., **config) -> the report card
    of `client` (a callable taking a ScenarioTarget) against each scenario; see run_report_card."""

    def run(client: Callable[[ScenarioTarget], Any], scenarios: Iterable[str] | None = None,
            **kwargs: Any) -> ReportCard:
        kwargs.setdefault("scope", {"test": request.node.nodeid})
        return run_report_card(mailmodes_certs_dir, client, scenarios, **kwargs)

    return run


@pytest.fixture(scope="session")
def mailmodes_proc(request: pytest.FixtureRequest, mailmodes_certs_dir: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailmodesServer | MailmodesRemote]:
    """The session's server: started once (one listener per protocol per mode, as mailmodes_server),
    or the running one given by --mailmodes-url / ini mailmodes_url."""
    url = _option(request.config, "url")
    if url:
        remote = MailmodesRemote(url, tmp_path_factory.mktemp("mailmodes-remote"))
        try:
            ready = remote.get("/api/ready")
        except ApiUnreachable as error:
            raise pytest.UsageError(f"--mailmodes-url: {error}") from None
        if not ready.get("ready"):
            raise pytest.UsageError(f"--mailmodes-url: {url} is not ready: {json.dumps(ready)}")
        yield remote
        return
    server = start_server(mailmodes_certs_dir)
    yield server
    server.stop()


@pytest.fixture
def mailmodes(request: pytest.FixtureRequest,
              mailmodes_proc: MailmodesServer | MailmodesRemote) -> Iterator[MailmodesServer | MailmodesRemote]:
    """The session's server for this test: reset first (a server this run started; see
    --mailmodes-reset), with address() unique to the test and every set_scenario undone after it."""
    reset = _option(request.config, "reset")
    if isinstance(mailmodes_proc, MailmodesServer):
        mailmodes_proc.settle()  # a session the last test left closing would land in this one's journal
    if reset == "always" or (reset == "auto" and isinstance(mailmodes_proc, MailmodesServer)):
        mailmodes_proc.reset()
    # xdist workers share a noproc server: the worker is part of the test's identity
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    mailmodes_proc.test_id = f"{worker}:{request.node.nodeid}"
    try:
        yield mailmodes_proc
    finally:
        mailmodes_proc.test_id = None
        mailmodes_proc.restore_scenarios()
