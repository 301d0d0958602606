"""SMTP: who may send to whom and where accepted mail goes, AUTH, and the listener that makes
the connections (with our own implicit-TLS handshake). aiosmtpd itself is met only through the
adapter in smtp_adapter.py.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable
from typing import Any, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from mailmodes.config import Listener
from mailmodes.protocols.guards import AuthFailures, ClientSlots
from mailmodes.protocols.smtp_adapter import ACCEPTED, Accepted, MailmodesSMTP
from mailmodes.record.journal import Journal
from mailmodes.scenarios.misbehaviour import Misbehaviour
from mailmodes.store import AccountInterface, StoreInterface
from mailmodes.tls.handshake import ServerTlsProtocol, handshake_timeout, start_server_tls
from mailmodes.tls.policy import ListenerTls

RELAY_DENIED = "554 5.7.1 Relay access denied"
USER_UNKNOWN = "550 5.1.1 User unknown"
POSTMASTER = "postmaster"


class DeliveryHandler:
    """aiosmtpd handler: who may send to whom, and where accepted mail goes. Never relays.

    Stateless: one per listener, shared by its connections."""

    def __init__(self, store: StoreInterface) -> None:
        self.store = store

    @functools.cached_property
    def hooks(self) -> dict[str, Callable[..., Any]]:
        """The table aiosmtpd builds from a handler's handle_* methods for every connection, made
        once here and shared."""
        return {name.removeprefix("handle_"): getattr(self, name) for name in dir(self) if name.startswith("handle_")}

    def local_recipient(self, address: str) -> AccountInterface | None:
        """The account that receives mail for `address`. RFC 5321 section 4.5.1: every server
        takes mail for "postmaster", bare or at any local domain; without such an address that is
        the catch-all, else the first configured user."""
        account = self.store.recipient(address)
        if account is not None:
            return account
        local_part, _, domain = address.rpartition("@")
        if address.lower() == POSTMASTER or (local_part.lower() == POSTMASTER and self.store.is_local_domain(domain)):
            return self._postmaster()
        return None

    def _postmaster(self) -> AccountInterface | None:
        accounts = self.store.accounts.values()
        named = next((a for a in accounts if any(x.startswith(POSTMASTER + "@") for x in a.addresses)), None)
        return named or self.store.accounts.get(self.store.catch_all or "") or next(iter(accounts), None)

    def recipient(self, session: Session, envelope: Envelope, address: str) -> str:
        """RCPT's answer; an accepted address is added to the envelope. (The handle_* hooks are
        aiosmtpd's; the express lane of smtp_adapter.py calls these synchronous halves.)"""
        domain = address.rpartition("@")[2]
        if self.local_recipient(address) is not None:
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 OK"
        if self.store.is_local_domain(domain):
            return USER_UNKNOWN
        elif not session.authenticated:
            return RELAY_DENIED
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    def sender(self, envelope: Envelope, address: str, mail_options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    def take(self, session: Session, envelope: Envelope) -> None:
        """The message into the store (in memory; a durable store also needs its flush)."""
        data = envelope.original_content or b""
        local: list[AccountInterface] = []
        outbound: list[str] = []
        for address in envelope.rcpt_tos:
            account = self.local_recipient(address)
            if account is None:
                outbound.append(address)
            else:
                local.append(account)
        self.store.deliver(local, data)
        if outbound:
            login = getattr(session.auth_data, "login", b"") or b""
            sender = login.decode(errors="replace")
            self.store.capture(sender, envelope.mail_from or "", outbound, data)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        return self.recipient(session, envelope, address)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        return self.sender(envelope, address, mail_options)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.take(session, envelope)
        try:
            await self.store.flush()  # a durable store: on disk before the 250
        except OSError:
            return "451 4.3.0 Mail not stored: the server cannot write to its store"
        return ACCEPTED


class ScenarioDeliveryHandler(DeliveryHandler):
    """The handler of a listener with a scenario: EHLO passes through it. A known-good listener
    has no EHLO hook at all, so aiosmtpd answers EHLO on its own, straight path."""

    async def handle_EHLO(
        self, server: MailmodesSMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        """aiosmtpd's EHLO reply, passed through the listener's scenario (known-good: unchanged)."""
        misbehaviour = server.misbehaviour
        refusal = "500 5.5.1 Command not recognized" if misbehaviour.refuses_ehlo else misbehaviour.capability_error()
        if refusal:
            return [refusal]
        session.host_name = hostname
        keywords = misbehaviour.capabilities([line[4:] for line in responses[1:]], encrypted=server.security.encrypted)
        lines = [responses[0][4:], *keywords]
        return [f"250{' ' if i == len(lines) - 1 else '-'}{line}" for i, line in enumerate(lines)]


class Authenticator:
    def __init__(self, store: StoreInterface) -> None:
        self.store = store

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            try:
                account = self.store.authenticate(auth_data.login.decode(), auth_data.password.decode())
            except UnicodeDecodeError:
                account = None
            if account is not None:
                return AuthResult(success=True, auth_data=Accepted(auth_data.login, account.name))
        return AuthResult(success=False, handled=False)


class ImplicitTls(asyncio.Protocol):
    """Accepts plain TCP and does the TLS handshake itself before handing over to aiosmtpd, so
    that a client's alert (a rejected certificate) or its plaintext is recorded, not just logged."""

    def __init__(self, inner: MailmodesSMTP, context: ssl.SSLContext, pending: set[ImplicitTls]) -> None:
        self.inner = inner
        self.context = context
        self.pending = pending  # the listener's handshakes in progress (SmtpListener.abort_connections)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.pending.add(self)
        # The record is open from the accept, as IMAP's and POP3's are: a reader waiting for open
        # sessions (the pytest plugin) waits for this handshake too.
        self.inner.open_record(transport)
        # From here on the TLS layer is the transport's protocol: on success it hands aiosmtpd's
        # session the TLS transport (connection_made), and this protocol hears nothing more.
        layer, handshake = start_server_tls(transport, self.inner, self.context,
                                            handshake_timeout(self.inner.listener.limits.idle_timeout))
        handshake.add_done_callback(functools.partial(self._handshake_done, layer))

    def _handshake_done(self, layer: ServerTlsProtocol, handshake: asyncio.Future[None]) -> None:
        self.pending.discard(self)
        error = None if handshake.cancelled() else handshake.exception()
        if error is None and layer._app_transport is None:  # the connection ended mid-handshake, quietly
            error = ConnectionAbortedError("the connection closed during the TLS handshake")
        if error is not None:
            self.inner.handshake_failed(error, getattr(layer, "_sslobj", None))
            if self.transport is not None:
                self.transport.close()


class SmtpListener:
    """The protocol factory of one SMTP listener (pass it to loop.create_server), which can also
    end every connection it made."""

    def __init__(self, listener: Listener, store: StoreInterface, hostname: str, tls_context: ssl.SSLContext | None,
                 journal: Journal, misbehaviour: Misbehaviour, tls: ListenerTls,
                 auth_failures: AuthFailures | None = None) -> None:
        self.listener, self.hostname, self.tls_context, self.journal = listener, hostname, tls_context, journal
        self.misbehaviour, self.tls = misbehaviour, tls
        self.connections: set[MailmodesSMTP] = set()
        self.handshakes: set[ImplicitTls] = set()
        self.clients = ClientSlots()
        self.auth_failures = auth_failures or AuthFailures()
        self.ehlo_replies: dict[tuple[bool, bool], str] = {}
        # Stateless, so one of each per listener: every idle connection is that much smaller.
        self.handler = ScenarioDeliveryHandler(store) if self.misbehaviour.active else DeliveryHandler(store)
        self.authenticator = Authenticator(store)

    def __call__(self) -> asyncio.Protocol:
        session = MailmodesSMTP(self.listener, self.handler, self.authenticator, self.hostname, self.tls_context,
                                self.connections, self.journal, self.misbehaviour, self.tls, self.clients,
                                self.auth_failures, self.ehlo_replies)
        if self.tls.tls_first:
            assert self.tls_context is not None
            return ImplicitTls(session, self.tls_context, self.handshakes)
        return session

    def abort_connections(self) -> None:
        """The server is stopping: drop every connection at once (no TLS goodbye to wait for)."""
        for handshake in list(self.handshakes):
            if handshake.transport is not None:
                handshake.transport.abort()
        for session in list(self.connections):
            if session.transport is not None:
                cast(asyncio.Transport, session.transport).abort()
            if session.reading_after_failure is not None:
                session.reading_after_failure.cancel()
