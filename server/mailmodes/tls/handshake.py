"""TLS I/O shared by every protocol: the known-good server context, the handshake's timeout,
and what a failed handshake leaves behind. The policy (what TLS a listener wants) is policy.py.
"""

from __future__ import annotations

import asyncio
import ssl
from contextvars import ContextVar
from pathlib import Path


def is_encrypted(transport: asyncio.BaseTransport | None) -> bool:
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def server_context(
    cert_file: Path,
    key_file: Path,
    *,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> ssl.SSLContext:
    """The known-good server context: TLS 1.2 and 1.3 only (RFC 8314 section 5, RFC 8997)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = minimum
    context.maximum_version = maximum
    context.load_cert_chain(cert_file, key_file)
    return context


class HandshakeWatch:
    """Keeps the SSL object of a server-side handshake, for when the handshake fails.

    asyncio hands the SSL object out (extra info "ssl_object") only once a handshake succeeds,
    but it carries what our SNI callback noted (contexts.py): the name the client asked for and
    the scenario that name chose. Without it a client that picked a certificate scenario by SNI
    and rejected it would be recorded without either. The callback runs in a copy of the context
    that started the handshake, so a context variable carries the watch to it:

        with HandshakeWatch() as watch:
            await loop.start_tls(...)      # on failure: watch.ssl_object
    """

    __slots__ = ("ssl_object", "_token")
    _current: ContextVar[HandshakeWatch | None] = ContextVar("mailmodes_handshake_watch", default=None)

    def __init__(self) -> None:
        self.ssl_object: ssl.SSLObject | None = None

    def __enter__(self) -> HandshakeWatch:
        self._token = self._current.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._current.reset(self._token)

    @classmethod
    def saw(cls, ssl_object: ssl.SSLObject) -> None:
        """Called by the SNI callback, during the handshake."""
        watch = cls._current.get()
        if watch is not None:
            watch.ssl_object = ssl_object


def handshake_timeout(idle_timeout: float) -> float:
    """How long a client may take over its TLS handshake: a client that waits for a plaintext
    greeting on an implicit port is told nothing, so do not keep it for a whole idle timeout."""
    return min(idle_timeout, 30.0)
