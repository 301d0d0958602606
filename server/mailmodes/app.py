"""MailServer: every configured listener on one event loop, sharing one store.

`MailServer` is the async form (start/stop inside a running loop); `ThreadedMailServer` runs the
same thing on a loop of its own in a background thread, for synchronous tests and embedding.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import logging
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from mailmodes.config import Config, ConfigError, HttpConfig, Listener, chaos_table, with_scenario
from mailmodes.protocols.guards import AuthFailures
from mailmodes.protocols.smtp import SmtpListener
from mailmodes.record.journal import Journal
from mailmodes.scenarios.misbehaviour import Misbehaviour
from mailmodes.store import INBOX, SPECIAL_USE_MAILBOXES, Store
from mailmodes.tls.contexts import ServerContexts

if TYPE_CHECKING:
    from mailmodes.early import EarlyStart, Greeted
    from mailmodes.protocols.connection import LineServer
    from mailmodes.protocols.events import Connection, LineSession
    from mailmodes.scenarios.audit import AuditWalk
    from mailmodes.web.server import HttpServer

# Imported where they are first needed, not here: IMAP, POP3, the durable store, seeds and audit
# mode are most of the import time of `serve`, and a server without them starts that much
# sooner (issue 22: start to first banner).

log = logging.getLogger(__name__)
T = TypeVar("T")


def line_protocol(protocol: str) -> tuple[Callable[[Connection, Store, str], LineSession], bytes]:
    """protocol -> (session class, what a client over the connection limit is told)."""
    if protocol == "imap":
        from mailmodes.protocols.imap.session import ImapSession

        return ImapSession, b"* BYE [UNAVAILABLE] Too many connections\r\n"
    if protocol == "pop3":
        from mailmodes.protocols.pop3 import Pop3Session

        return Pop3Session, b"-ERR [SYS/TEMP] Too many connections\r\n"
    raise KeyError(protocol)


class ListenerError(Exception):
    """A listener could not be started; str() is one line that names the port and the way out."""


def build_store(config: Config) -> Store:
    """The in-memory store, or with [store] path the durable one, read back from its directory."""
    if config.store.path is None:
        store = Store(catch_all=config.catch_all)
    else:
        from mailmodes.disk_store import DiskStore

        store = DiskStore(config.store.path, config.catch_all)
    for user in config.users:
        store.add_account(user.name, user.password, user.addresses)
    store.local_domains.add(config.hostname.lower())
    store.accept_any = config.auth.accept_any
    return store


class MailServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = build_store(config)
        # With a durable store the session list is kept too: in [journal] path, else DIR/sessions.jsonl.
        kept = config.store.path is not None
        journal_path = config.journal.path or (config.store.path / "sessions.jsonl" if config.store.path else None)
        self.journal = Journal(config.journal.max_sessions, config.journal.max_transcript_lines, journal_path,
                               enabled=config.journal.enabled, one_client=config.journal.one_client, restore=kept)
        self.ports: dict[str, int] = {}
        self.auth_failures = AuthFailures()  # one count per client host for every listener
        self.listeners: dict[str, Listener] = {}
        self.ca_file: Path | None = None
        self._servers: list[asyncio.Server] = []
        self._protocol_servers: list[SmtpListener | LineServer] = []  # to end their connections on stop
        self.http_port: int | None = None  # the HTTP API and dashboard, when [http] is configured
        self._http: HttpServer | None = None
        self._contexts: ServerContexts | None = None
        # the current protocol server of each listener (set_scenario replaces them)
        self._smtp: dict[str, SmtpListener] = {}
        self._line: dict[str, LineServer] = {}
        self._configured = {listener.name: listener for listener in config.listeners}  # what reset() restores
        # Audit listeners: where each client is in its walk, and a protocol server per step.
        self.audits: dict[str, AuditWalk] = {}
        self._audit_servers: dict[str, list[SmtpListener | LineServer]] = {}

    async def start(self, early: EarlyStart | None = None) -> None:
        """`early`: serve's early start (early.py) bound the ports and greeted some SMTP clients
        already; the listeners take its sockets and those connections over."""
        try:
            await self._start(early)
        except BaseException:
            if early is not None:
                early.close()  # what no listener took yet
            raise

    async def _start(self, early: EarlyStart | None) -> None:
        contexts = self._contexts = ServerContexts(self.config.certs.dir, self.config.hostname)
        self.ca_file = contexts.ca_file
        # Before the first listener: a client never sees an empty mailbox. A durable store has its
        # seeds from its first start (and again after POST /api/reset), not once more per restart.
        if self.config.seeds and (self.config.store.path is None or _fresh_disk_store(self.store)):
            from mailmodes.seed import load_seeds

            load_seeds(self.store, self.config)
        await self.store.flush()
        if early is not None:
            early.stop_greeting()  # who comes now waits in the backlog for the listener
        try:
            for listener in self.config.listeners:
                sock = early.sockets.pop(listener.name) if early is not None else None
                server = await self._start_listener(listener, contexts.for_listener(listener), sock)
                self._servers.append(server)
                self.ports[listener.name] = server.sockets[0].getsockname()[1]
                self.listeners[listener.name] = listener
            while early is not None and early.greeted:
                await self._adopt(early.greeted.pop(0))
            if self.config.http is not None:
                http_sock = early.take_http() if early is not None else None
                await self._start_http(self.config.http, http_sock)
        except BaseException:
            await self.stop()
            raise

    async def _adopt(self, greeted: Greeted) -> None:
        """A connection early.py accepted and greeted: this listener's session from here on."""
        smtp = self._smtp[greeted.listener]

        def session() -> asyncio.Protocol:
            protocol = smtp()
            protocol.greeted_early = greeted.accepted_at  # type: ignore[attr-defined]
            return protocol

        try:
            await asyncio.get_running_loop().connect_accepted_socket(session, greeted.sock)
        except OSError:
            greeted.sock.close()  # gone before the server took it

    async def _start_listener(self, listener: Listener, context: ssl.SSLContext,
                              sock: socket.socket | None = None) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        host = listener.host or self.config.host
        if listener.audit:
            return await self._start_audit(listener, host)
        self._protocol_server(listener, context)
        name = listener.name
        # No ssl= here even for implicit TLS: the protocols do the handshake themselves, to record it.
        # Each accepted connection asks for the listener's current protocol server, which
        # set_scenario() replaces: new connections get the new scenario, open ones keep theirs.
        try:
            where = {"sock": sock} if sock is not None else {"host": host, "port": listener.port}
            if listener.protocol == "smtp":
                return await loop.create_server(lambda: self._smtp[name](), **where)
            from mailmodes.protocols.connection import serve_lines

            return await serve_lines(lambda reader, writer: self._line[name].handle(reader, writer), **where)
        except OSError as error:
            raise ListenerError(_explain_bind_error(listener, host, error)) from None

    def _protocol_server(self, listener: Listener, context: ssl.SSLContext) -> None:
        server = self._make_protocol_server(listener, context)
        if isinstance(server, SmtpListener):
            self._smtp[listener.name] = server
        else:
            self._line[listener.name] = server
        current = {*self._smtp.values(), *self._line.values(), *(s for v in self._audit_servers.values() for s in v)}
        # A replaced server is kept only while it has connections for stop() to end.
        self._protocol_servers = [old for old in self._protocol_servers if old in current or _busy(old)] + [server]

    def _make_protocol_server(self, listener: Listener, context: ssl.SSLContext) -> SmtpListener | LineServer:
        # One scenario and one TLS decision per listener, shared by all its connections.
        misbehaviour = Misbehaviour(listener.scenario, listener.protocol, listener.chaos,
                                    desync_hold=listener.desync_hold)
        tls = misbehaviour.tls(listener.tls)
        if listener.protocol == "smtp":
            return SmtpListener(listener, self.store, self.config.hostname, context, self.journal, misbehaviour, tls,
                                self.auth_failures)
        from mailmodes.protocols.connection import LineServer

        session_class, too_many = line_protocol(listener.protocol)
        hostname = self.config.hostname
        store = self.store
        return LineServer(listener, lambda connection: session_class(connection, store, hostname), context, too_many,
                          self.journal, misbehaviour, tls, self.auth_failures,
                          commit=store.flush if store.durable else None)

    async def _start_audit(self, listener: Listener, host: str) -> asyncio.Server:
        """Audit mode: a protocol server per step of the walk; each accepted connection goes to the
        step its client address is at (scenarios/audit.py)."""
        from mailmodes.scenarios.audit import AuditWalk, audit_chaos, audit_plan

        assert self._contexts is not None
        walk = self.audits[listener.name] = AuditWalk(audit_plan(listener.protocol, listener.tls))
        servers = []
        for scenario in walk.plan:
            chaos = audit_chaos(listener.protocol) if scenario == "chaos" else None
            step = with_scenario(listener, scenario, chaos, source=f"audit {listener.name}")
            servers.append(self._make_protocol_server(step, self._contexts.for_listener(step)))
        self._audit_servers[listener.name] = servers
        self._protocol_servers += servers
        loop = asyncio.get_running_loop()
        try:
            if listener.protocol == "smtp":
                smtp = cast(list[SmtpListener], servers)
                return await loop.create_server(lambda: AuditConnection(lambda peer: smtp[walk.take(peer)]()),
                                                host, listener.port)
            line = cast(list[LineServer], servers)

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await line[walk.take(_peer_host(writer.get_extra_info("peername")))].handle(reader, writer)

            from mailmodes.protocols.connection import serve_lines

            return await serve_lines(handle, host=host, port=listener.port)
        except OSError as error:
            raise ListenerError(_explain_bind_error(listener, host, error)) from None

    def set_scenario(self, name: str, scenario: str | None, chaos: Mapping[str, Any] | None = None) -> Listener:
        """Give a running listener another known-bad scenario (None: known-good), checked as the
        config's is (ConfigError). Connections accepted from now on get it; open ones keep theirs.
        The connection limit then counts the new connections only. A certificate scenario's
        certificates are made here, on the loop, the first time (cached in the certs dir after)."""
        if self.listeners[name].audit:
            raise ConfigError(f"listener {name!r} is an audit listener: it walks every scenario itself")
        listener = with_scenario(self.listeners[name], scenario, chaos)
        if self._contexts is None:
            raise RuntimeError("the server is not started")
        self._protocol_server(listener, self._contexts.for_listener(listener))
        self.listeners[name] = listener
        self.config = replace(self.config, listeners=tuple(
            listener if configured.name == name else configured for configured in self.config.listeners))
        return listener

    def reset(self) -> dict[str, Any]:
        """Back to how the server started: no finished sessions, no messages or mailboxes but the
        configured ones ([[seed]] mail loaded again), no captured mail, every listener with its
        configured scenario. Open connections go on (they keep their scenario)."""
        sessions = len(self.journal.sessions())
        self.journal.clear()
        messages = 0
        for account in self.store.accounts.values():
            for mailbox in account.mailboxes.values():
                messages += len(mailbox.expunge([message.uid for message in mailbox.messages]))
            standard = {INBOX, *SPECIAL_USE_MAILBOXES}
            # deepest first: a mailbox with inferiors cannot be deleted
            for name in sorted(set(account.mailboxes) - standard, key=lambda n: -n.count("/")):
                account.delete(name)
        captured = len(self.store.captured)
        self.store.captured.clear()
        tokens = self.store.tokens.clear()
        restored = [name for name, listener in self._configured.items()
                    if name in self.listeners and self.listeners[name] != listener]
        for name in restored:
            configured = self._configured[name]
            self.set_scenario(name, configured.scenario, chaos_table(configured.chaos))
        from mailmodes.seed import load_seeds

        seeded = load_seeds(self.store, self.config)
        return {"sessions": sessions, "messages": messages, "captured": captured, "listeners": restored,
                "seeded": seeded, "tokens": tokens}

    async def _start_http(self, config: HttpConfig, sock: socket.socket | None = None) -> None:
        # After the mail listeners: /api/ready is true from its first answer.
        # Imported only when [http] is configured: aiohttp costs ~0.1-0.25 s and ~13 MB at
        # start-up, so in a thread, while the mail listeners started already answer (after serve's
        # early start their clients are waiting).
        name = "mailmodes.web.server"
        web = sys.modules.get(name)
        if web is None:
            web = await asyncio.get_running_loop().run_in_executor(None, importlib.import_module, name)
        http: HttpServer = web.HttpServer(self, config)
        try:
            self.http_port = await http.start(sock)
        except (OSError, OverflowError) as error:  # OverflowError: --port-offset pushed it past 65535
            where = f"the HTTP API cannot bind {config.host}:{config.port}"
            if getattr(error, "errno", None) == errno.EADDRINUSE:
                raise ListenerError(f"{where}: the port is already in use; set [http] port "
                                    "(0 picks a free one) or use --port-offset") from None
            raise ListenerError(f"{where}: {getattr(error, 'strerror', None) or error}") from None
        self._http = http

    async def stop(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.stop()
        servers, self._servers = self._servers, []
        protocol_servers, self._protocol_servers = self._protocol_servers, []
        for server in servers:
            server.close()
        # Open sessions end here: from Python 3.12 wait_closed() waits for every connection, and
        # an idle client would otherwise hold the stop up until its idle timeout.
        for protocol_server in protocol_servers:
            protocol_server.abort_connections()
        for server in servers:
            await server.wait_closed()
        try:
            await self.store.flush()  # what the last sessions changed (a durable store)
        except OSError as error:
            log.error("%s", error)

    def port(self, name: str) -> int:
        return self.ports[name]


def _peer_host(peer: Any) -> str:
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


class AuditConnection(asyncio.Protocol):
    """An SMTP connection of an audit listener: the client's address, known only once the
    connection is made, chooses the step's protocol, which then gets every event. A TLS upgrade
    (STARTTLS, our implicit handshake) hands the transport to that protocol itself."""

    def __init__(self, choose: Callable[[str], asyncio.Protocol]) -> None:
        self.choose = choose
        self.inner: asyncio.Protocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.inner = self.choose(_peer_host(transport.get_extra_info("peername")))
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        assert self.inner is not None
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        assert self.inner is not None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


def _fresh_disk_store(store: Store) -> bool:
    """A durable store has its seeds from its first start, not once more per restart."""
    from mailmodes.disk_store import DiskStore

    return not isinstance(store, DiskStore) or store.fresh


def _busy(server: SmtpListener | LineServer) -> bool:
    if isinstance(server, SmtpListener):
        return bool(server.connections or server.handshakes)
    return bool(server.active)


def _explain_bind_error(listener: Listener, host: str, error: OSError) -> str:
    where = f"listener {listener.name!r} ({listener.protocol}) cannot bind {host}:{listener.port}"
    if error.errno == errno.EACCES:
        return (f"{where}: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE, "
                "or use --port-offset 10000")
    if error.errno == errno.EADDRINUSE:
        return f"{where}: the port is already in use; stop what holds it or use --port-offset"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"{where}: no such local address; use --host 127.0.0.1"
    return f"{where}: {error.strerror or error}"


class ThreadedMailServer:
    """The MailServer on its own event loop in a daemon thread; `start()` returns once it listens."""

    def __init__(self, config: Config) -> None:
        self.server = MailServer(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def store(self) -> Store:
        return self.server.store

    @property
    def journal(self) -> Journal:
        return self.server.journal

    @property
    def ports(self) -> dict[str, int]:
        return self.server.ports

    @property
    def ca_file(self) -> Path | None:
        return self.server.ca_file

    @property
    def http_port(self) -> int | None:
        return self.server.http_port

    @property
    def config(self) -> Config:
        return self.server.config

    def port(self, name: str) -> int:
        return self.server.port(name)

    def start(self, early: EarlyStart | None = None) -> ThreadedMailServer:
        """`early`: the ports early.begin() bound and the clients it greeted, as `serve` hands them on."""
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready, early), name="mailmodes", daemon=True)
        self._thread.start()
        ready.result()
        return self

    def _run(self, ready: Future[None], early: EarlyStart | None) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopped = asyncio.Event()
            try:
                await self.server.start(early)
            except BaseException as error:
                ready.set_exception(error)
                return
            ready.set_result(None)
            await self._stopped.wait()
            await self.server.stop()

        asyncio.run(main())

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` on the server's loop and return its result: the safe way to touch the
        store from another thread (sessions are woken from there)."""
        assert self._loop is not None

        async def run() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join()
        self._loop = None

    def __enter__(self) -> ThreadedMailServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
