"""TLS I/O shared by every protocol: the known-good server context, the handshake's timeout,
and what a failed handshake leaves behind. The policy (what TLS a listener wants) is policy.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import logging
import ssl
import sys
from contextvars import ContextVar
from pathlib import Path

log = logging.getLogger(__name__)

# Mozilla's "intermediate" profile (ssl-config.mozilla.org, guidelines 5.7): for TLS 1.2 only
# ECDHE with AEAD suites (no CBC), and the key exchange groups X25519, P-256 and P-384. TLS 1.3's
# suites are OpenSSL's defaults, which are the profile's three. Its DHE suites need DH parameters,
# which are not loaded, so they are left out.
INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))
INTERMEDIATE_GROUPS = "X25519:prime256v1:secp384r1"
_SSL_CTRL_SET_GROUPS_LIST = 92  # OpenSSL's SSL_CTX_set1_groups_list() is this SSL_CTX_ctrl() call


def is_encrypted(transport: asyncio.BaseTransport | None) -> bool:
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def server_context(
    cert_file: Path,
    key_file: Path,
    *,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> ssl.SSLContext:
    """The known-good server context: TLS 1.2 and 1.3 only (RFC 8314 section 5, RFC 8997), with
    Mozilla's "intermediate" suites and groups."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = minimum
    context.maximum_version = maximum
    context.set_ciphers(INTERMEDIATE_CIPHERS)
    if not set_groups(context, INTERMEDIATE_GROUPS):
        log.warning("cannot restrict the TLS key exchange groups here; OpenSSL's defaults stay")
    context.load_cert_chain(cert_file, key_file)
    return context


def set_groups(context: ssl.SSLContext, groups: str) -> bool:
    """Restrict the key exchange groups (colon-separated OpenSSL names); False if impossible.

    Before Python 3.15 the ssl module sets at most one group (set_ecdh_curve), so OpenSSL's
    SSL_CTX_set1_groups_list is called on the context's SSL_CTX. CPython's SSLContext object holds
    that pointer right after its object header; it is used only once OpenSSL, asked for that
    SSL_CTX's options, gives the context's own.
    """
    setter = getattr(context, "set_groups", None)
    if setter is not None:
        setter(groups)
        return True
    if sys.implementation.name != "cpython":
        return False
    try:
        library = ctypes.CDLL(importlib.import_module("_ssl").__file__)
        get_options, control = library.SSL_CTX_get_options, library.SSL_CTX_ctrl
    except (OSError, AttributeError, TypeError):
        return False
    get_options.restype, get_options.argtypes = ctypes.c_uint64, [ctypes.c_void_p]
    control.restype = ctypes.c_long
    control.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or get_options(pointer) != context.options:
        return False
    return bool(control(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode()) == 1)


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
