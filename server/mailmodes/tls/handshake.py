"""TLS I/O shared by every protocol: the known-good server context, the handshake's timeout,
and what a failed handshake leaves behind. The policy (what TLS a listener wants) is policy.py.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import importlib
import logging
import socket
import ssl
import sys
import warnings
from asyncio import sslproto
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailmodes.config import ResolvedLimits
from mailmodes.protocols.events import CLIENT_HELLO, TLS_BYTES, Heard, Span
from mailmodes.tls.policy import DEFAULT_TLS_PROFILE, TLS_PROFILES

log = logging.getLogger(__name__)

# Mozilla's "intermediate" profile (ssl-config.mozilla.org, guidelines 5.7): for TLS 1.2 only
# ECDHE with AEAD suites (no CBC), and the key exchange groups X25519, P-256 and P-384. TLS 1.3's
# suites are OpenSSL's defaults, which are the profile's three. Its DHE suites need DH parameters,
# which are not loaded, so they are left out (a subset of the profile: no ffdhe group either).
INTERMEDIATE_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))
INTERMEDIATE_GROUPS = "X25519:prime256v1:secp384r1"
# Mozilla's "old" list for TLS 1.0-1.2, again without its DHE suites (no DH parameters). Its
# DES-CBC3-SHA is not in Debian's OpenSSL 3 (no enable-weak-ssl-ciphers), so OpenSSL skips it.
# @SECLEVEL=0: OpenSSL 3 refuses TLS 1.0/1.1 (their MD5+SHA-1 handshake signature) at any
# higher level.
OLD_CIPHERS = ":".join((
    INTERMEDIATE_CIPHERS,
    "ECDHE-ECDSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA256", "ECDHE-ECDSA-AES128-SHA", "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA384", "ECDHE-ECDSA-AES256-SHA", "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA256", "AES256-SHA256", "AES128-SHA", "AES256-SHA",
    "DES-CBC3-SHA", "@SECLEVEL=0",
))
_SSL_CTRL_SET_GROUPS_LIST = 92  # OpenSSL's SSL_CTX_set1_groups_list() is this SSL_CTX_ctrl() call


@dataclass(frozen=True)
class TlsProfile:
    """What one `tls_profile` (policy.TLS_PROFILES) sets on a known-good server context."""

    minimum: ssl.TLSVersion
    maximum: ssl.TLSVersion
    ciphers: str  # TLS 1.2 and below; TLS 1.3 keeps OpenSSL's three suites, every profile's
    groups: str
    server_order: bool  # the server picks the suite ("old": "Cipher preference: server chooses")


PROFILES = {
    "old": TlsProfile(ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_3, OLD_CIPHERS, INTERMEDIATE_GROUPS, True),
    "intermediate": TlsProfile(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3, INTERMEDIATE_CIPHERS,
                               INTERMEDIATE_GROUPS, False),
    # TLS 1.3 only; its cipher list is never used, but set_ciphers needs one that matches.
    "modern": TlsProfile(ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3, INTERMEDIATE_CIPHERS,
                         INTERMEDIATE_GROUPS, False),
}
assert tuple(PROFILES) == TLS_PROFILES


def is_encrypted(transport: asyncio.BaseTransport | None) -> bool:
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def server_context(cert_file: Path, key_file: Path, *, profile: str = DEFAULT_TLS_PROFILE) -> ssl.SSLContext:
    """A server context after one of Mozilla's profiles; the known-good default, "intermediate",
    offers TLS 1.2 and 1.3 only (RFC 8314 section 5, RFC 8997) with its suites and groups."""
    settings = PROFILES[profile]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        # Python deprecates TLSVersion.TLSv1; offering it is what "old" is for.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = settings.minimum
        context.maximum_version = settings.maximum
    context.set_ciphers(settings.ciphers)
    # Python sets OP_CIPHER_SERVER_PREFERENCE on every context; Mozilla's intermediate and modern
    # let the client choose (it knows whether it has AES hardware), old lets the server.
    if settings.server_order:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if not set_groups(context, settings.groups):
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
    try:
        get_options, control = openssl().SSL_CTX_get_options, openssl().SSL_CTX_ctrl
    except AttributeError:  # no OpenSSL to reach (None), or not these functions
        return False
    get_options.restype, get_options.argtypes = ctypes.c_uint64, [ctypes.c_void_p]
    control.restype = ctypes.c_long
    control.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_char_p]
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or get_options(pointer) != context.options:
        return False
    return bool(control(pointer, _SSL_CTRL_SET_GROUPS_LIST, 0, groups.encode()) == 1)



_SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB = 63  # SSL_CTX_set_tlsext_status_cb(), an SSL_CTX_callback_ctrl() call
_SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP = 71  # SSL_set_tlsext_status_ocsp_resp(), an SSL_ctrl() call
_StatusCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def staple_ocsp(context: ssl.SSLContext, response: Callable[[], bytes]) -> bool:
    """Staple `response()` (a DER OCSP response) to every handshake whose client asks for the
    certificate status (RFC 6066 section 8); False if impossible here.

    Python's ssl has no server-side stapling, so OpenSSL's status callback is set on the
    context's SSL_CTX, found as in set_groups. The callback runs inside OpenSSL's handshake (ctypes
    takes the GIL for it) and hands OpenSSL a copy made with OPENSSL_malloc, which OpenSSL frees.
    OpenSSL asks the SSL_CTX in use after the SNI callback, so a scenario chosen by SNI staples too.
    """
    library = openssl()
    try:
        get_options, callback_control = library.SSL_CTX_get_options, library.SSL_CTX_callback_ctrl
        control, allocate = library.SSL_ctrl, library.CRYPTO_malloc
    except AttributeError:  # no OpenSSL to reach (None), or not these functions
        return False
    get_options.restype, get_options.argtypes = ctypes.c_uint64, [ctypes.c_void_p]
    callback_control.restype = ctypes.c_long
    callback_control.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    control.restype, control.argtypes = ctypes.c_long, [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    allocate.restype, allocate.argtypes = ctypes.c_void_p, [ctypes.c_size_t, ctypes.c_char_p, ctypes.c_int]
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer or get_options(pointer) != context.options:
        return False

    def on_status_request(ssl_pointer: int, _argument: int) -> int:
        try:
            der = response()
            buffer = allocate(len(der), b"mailmodes", 0)
            if buffer:
                ctypes.memmove(buffer, der, len(der))
                control(ssl_pointer, _SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP, len(der), buffer)
        except Exception:  # an exception must not cross into OpenSSL: the handshake goes on unstapled
            log.exception("cannot staple the OCSP response")
        return 0  # SSL_TLSEXT_ERR_OK

    callback = _StatusCallback(on_status_request)
    context.mailmodes_ocsp_callback = callback  # type: ignore[attr-defined]  # keeps it alive with the context
    return bool(callback_control(pointer, _SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB, ctypes.cast(callback, ctypes.c_void_p)))


class ServerTlsProtocol(sslproto.SSLProtocol):
    """asyncio's TLS layer (the one loop.start_tls and aiosmtpd's STARTTLS put on a connection)
    with a buffer sized for mail sessions: asyncio allocates and zeroes 256 KiB for every
    connection, ~20 us of a ~1 ms handshake (issue 22). A TLS record holds at most 16 KiB, so
    one read still takes several.

    With `keeps_socket` set, a handshake that fails leaves `kept_socket`: a second descriptor of
    the connection's socket, taken as asyncio is about to close its own, to read what the client
    sends next in the clear (read_after_failure). Taken only then, not for every handshake.
    """

    max_size = 64 * 1024
    keeps_socket = False
    kept_socket: socket.socket | None = None

    def _fatal_error(self, exc: BaseException, message: str = "Fatal error on transport") -> None:
        # asyncio's own failure path (a failed handshake, its timeout), before it closes the socket.
        if self.keeps_socket and self.kept_socket is None and self._transport is not None \
                and "ssl_object" not in self._extra:  # asyncio adds it once a handshake succeeds
            self.kept_socket = spare_socket(self._transport)
        super()._fatal_error(exc, message)


def start_server_tls(transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol, context: ssl.SSLContext,
                     timeout: float | None = None, *, keeps_socket: bool = False
                     ) -> tuple[ServerTlsProtocol, asyncio.Future[None]]:
    """Begin the server side of a TLS handshake on `transport`, as loop.start_tls does but with
    our layer and without a task to await it in (one per connection on an implicit-TLS port).
    The future is done when the handshake is: on success the layer has called
    protocol.connection_made with the TLS transport; a failure (the client's alert, the timeout,
    asyncio's default where `timeout` is None) is its exception. A connection that ended
    mid-handshake without one leaves the layer's `_app_transport` None."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    # typeshed says int for the timeout; asyncio takes any number.
    layer = ServerTlsProtocol(loop, protocol, context, waiter, server_side=True,
                              ssl_handshake_timeout=timeout)  # type: ignore[arg-type]
    layer.keeps_socket = keeps_socket
    transport.set_protocol(layer)
    layer.connection_made(transport)
    return layer, waiter


class HandshakeWatch:
    """What a server-side handshake started by loop.start_tls (or StreamWriter.start_tls) on
    `transport` left behind when it failed: asyncio hands the SSL object out (extra info
    "ssl_object") only once a handshake succeeds, but the TLS layer it puts on the transport keeps
    it, and with it what our SNI callback noted (contexts.py: the name the client asked for, the
    scenario it chose) and how far OpenSSL got (handshake_progress). Without it a client that
    picked a certificate scenario by SNI and rejected it would be recorded without either.

        watch = HandshakeWatch(transport)
        await writer.start_tls(...)            # on failure: watch.ssl_object, watch.unread()

    By the time a failure reaches the caller the transport has let go of the layer, so the watch
    takes it from the transport just after start_tls put it there: start_tls sets it before its
    first pause (the write buffer drained, as it is after a short reply) and schedules the
    handshake's start behind the callback the watch scheduled first.
    """

    __slots__ = ("transport", "ssl_protocol")

    def __init__(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.ssl_protocol: object = None  # asyncio's TLS layer on the transport (which asyncio hides)
        asyncio.get_running_loop().call_soon(self._look)

    def _look(self) -> None:
        protocol = self.transport.get_protocol()
        if isinstance(protocol, sslproto.SSLProtocol):
            self.ssl_protocol = protocol

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        return getattr(self.ssl_protocol, "_sslobj", None)

    def unread(self) -> bytes:
        return unread(self.ssl_protocol)


def unread(ssl_protocol: object) -> bytes:
    """What the client sent behind the record that ended its handshake, if it came in the same
    read (plaintext after a rejected certificate, say): asyncio's SSL protocol holds it unread in
    its private `_incoming` memory BIO (b"" should that ever change)."""
    incoming = getattr(ssl_protocol, "_incoming", None)
    return incoming.read() if isinstance(incoming, ssl.MemoryBIO) else b""


# How far a server-side handshake got (SessionRecord.tls_handshake): each stage only ever
# follows the one before.
CLIENT_HELLO_SEEN = "client-hello"  # the client's ClientHello arrived
SERVER_FLIGHT_SENT = "server-flight"  # we answered it: our certificate and the rest of our flight
CLIENT_ALERT = "alert"  # the client sent an alert instead of going on
FINISHED = "finished"  # the client's Finished arrived: the handshake is done
# Read once a handshake has failed, from OpenSSL's own state machine (SSL_get_state: ssl.h's
# OSSL_HANDSHAKE_STATE, the message the server was at), rather than from a hook on every TLS
# message of every handshake (~30 calls of Python each, ~25 us of a ~1 ms handshake: issue 22).
# Before the server's flight is complete it is at the ClientHello or writing its answer; after
# it, waiting for (or reading) what the client sends back: a TLS 1.2 ServerHelloDone or a TLS 1.3
# (or resumed) Finished ends the flight, and TLS 1.3 then passes through its early-data states.
_TLS_ST_OK = 1
_TLS_ST_SR_FINISHED = 32
_AFTER_OUR_FLIGHT = frozenset({
    26,  # TLS_ST_SW_SRVR_DONE
    27, 28, 29, 30, 31,  # TLS_ST_SR_CERT, _KEY_EXCH, _CERT_VRFY, _NEXT_PROTO, _CHANGE
    33,  # TLS_ST_SW_SESSION_TICKET
    36,  # TLS_ST_SW_FINISHED
    46, 47, 49,  # TLS_ST_EARLY_DATA, TLS_ST_PENDING_EARLY_DATA_END, TLS_ST_SR_END_OF_EARLY_DATA
})


def handshake_progress(ssl_object: ssl.SSLObject | None, error: BaseException | None) -> str | None:
    """How far the failed server-side handshake of `ssl_object` got, ending in `error`; None if
    no ClientHello arrived (or OpenSSL cannot be asked here)."""
    pointer, get_state = verified_ssl_pointer(ssl_object), _ssl_get_state()
    if pointer is None or get_state is None:
        return None
    state = get_state(pointer)
    if state == _TLS_ST_OK or state == _TLS_ST_SR_FINISHED:
        return FINISHED
    if state == 0:  # TLS_ST_BEFORE
        return None
    reason = getattr(error, "reason", None) or ""
    if "ALERT" in reason or isinstance(error, ssl.SSLZeroReturnError):  # a fatal alert, or close_notify
        return CLIENT_ALERT
    return SERVER_FLIGHT_SENT if state in _AFTER_OUR_FLIGHT else CLIENT_HELLO_SEEN


_SSL_CTRL_GET_TLSEXT_STATUS_REQ_TYPE = 127  # SSL_get_tlsext_status_type(), an SSL_ctrl() call
_TLSEXT_STATUSTYPE_OCSP = 1


def asked_certificate_status(ssl_object: ssl.SSLObject | None) -> bool | None:
    """Did the client's ClientHello ask for the certificate's OCSP status (the status_request
    extension, RFC 6066 section 8)? Only a client that asks can learn that a certificate was
    revoked. None if no ClientHello arrived (or OpenSSL cannot be asked here)."""
    pointer = verified_ssl_pointer(ssl_object)
    control, get_state = _ssl_ctrl(), _ssl_get_state()
    if pointer is None or control is None or get_state is None or get_state(pointer) == 0:
        return None
    return bool(control(pointer, _SSL_CTRL_GET_TLSEXT_STATUS_REQ_TYPE, 0, None) == _TLSEXT_STATUSTYPE_OCSP)


def ssl_pointer(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> int | None:
    """OpenSSL's SSL of an SSL object: CPython's PySSLSocket (the _sslobj inside SSLObject and
    SSLSocket) has PyObject_HEAD, the socket's weak reference, then the SSL pointer. Use
    verified_ssl_pointer, unless checking it otherwise."""
    inner = getattr(ssl_object, "_sslobj", None)
    if inner is None or not _CPYTHON:
        return None
    pointer: int | None = ctypes.c_void_p.from_address(id(inner) + _SSL_POINTER_OFFSET).value
    return pointer


_CPYTHON = sys.implementation.name == "cpython"
_SSL_POINTER_OFFSET = object.__basicsize__ + ctypes.sizeof(ctypes.c_void_p)


def verified_ssl_pointer(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> int | None:
    """ssl_pointer, once OpenSSL confirms it: CPython stores its PySSLSocket as the SSL's app data
    (SSL_set_app_data, for its own callbacks), so SSL_get_ex_data(ssl, 0) must give that object."""
    pointer, app_data = ssl_pointer(ssl_object), _ssl_get_ex_data()
    if pointer is None or app_data is None:
        return None
    if app_data(pointer, 0) != id(ssl_object._sslobj):  # type: ignore[union-attr]  # ssl_pointer found it
        return None
    return pointer


@functools.cache
def openssl() -> Any:
    """The OpenSSL the ssl module uses (through its _ssl extension), for ctypes; None where it
    cannot be reached (not CPython, no shared library). A PyDLL: the calls made through it are
    short getters and setters, and keeping the GIL spares each one a release and a re-take
    (a few of them on every TLS session, Recorder.tls_started)."""
    if sys.implementation.name != "cpython":
        return None
    try:
        return ctypes.PyDLL(importlib.import_module("_ssl").__file__)
    except (OSError, TypeError):
        return None


@functools.cache
def openssl_function(name: str, restype: Any, *argtypes: Any) -> Any:
    """One of OpenSSL's functions with its result and argument types set, or None."""
    try:
        function = getattr(openssl(), name)
    except AttributeError:  # no OpenSSL to reach (None), or no such function
        return None
    function.restype, function.argtypes = restype, list(argtypes)
    return function


# The ones every TLS session asks (Recorder.tls_started), looked up once.
_ssl_get_ex_data = functools.cache(lambda: openssl_function("SSL_get_ex_data", ctypes.c_void_p, ctypes.c_void_p,
                                                            ctypes.c_int))
_ssl_get_state = functools.cache(lambda: openssl_function("SSL_get_state", ctypes.c_int, ctypes.c_void_p))
_ssl_ctrl = functools.cache(lambda: openssl_function("SSL_ctrl", ctypes.c_long, ctypes.c_void_p, ctypes.c_int,
                                                     ctypes.c_long, ctypes.c_void_p))


# RFC 6066 section 3: the server_name extension.
_SERVER_NAME = 0


def client_hello_extensions(message: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, body) of each extension of a ClientHello handshake message (RFC 8446 4.1.2: type and
    length first), as far as the bytes go."""
    at = 4 + 2 + 32  # handshake header, legacy_version, random
    for width in (1, 2, 1):  # legacy_session_id, cipher_suites, legacy_compression_methods
        if at + width > len(message):
            return
        at += width + int.from_bytes(message[at:at + width], "big")
    end = min(len(message), at + 2 + int.from_bytes(message[at:at + 2], "big"))
    at += 2
    while at + 4 <= end:
        kind, size = int.from_bytes(message[at:at + 2], "big"), int.from_bytes(message[at + 2:at + 4], "big")
        yield kind, message[at + 4:at + 4 + size]
        at += 4 + size


def read_after_failure_for(limits: ResolvedLimits) -> tuple[float, int]:
    """How long and how much read_after_failure reads: the listener's limits, and never longer
    than the client may be idle."""
    return min(limits.read_after_failed_tls, limits.idle_timeout), limits.read_after_failed_tls_bytes


def handshake_timeout(idle_timeout: float) -> float:
    """How long a client may take over its TLS handshake: a client that waits for a plaintext
    greeting on an implicit port is told nothing, so do not keep it for a whole idle timeout."""
    return min(idle_timeout, 30.0)


def tls_record_size(data: bytes) -> int | None:
    """The size of the TLS handshake record `data` begins with, or None if it begins otherwise.

    RFC 8446 5.1: content type 22 (handshake), legacy version 3.x, a 16-bit length; no mail
    command starts with these bytes."""
    if len(data) >= 5 and data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x04:
        return 5 + int.from_bytes(data[3:5], "big")
    return None


def tls_heard(data: bytes, *, first: bool) -> Heard:
    """TLS bytes where the protocol was expected (a client set for implicit TLS on a plaintext
    port, or one that answered a STARTTLS which no TLS followed), for the journal: its ClientHello
    record (if `first` holds one: a handshake record whose message is type 1) and the rest, by size."""
    spans: list[Span] = []
    size = tls_record_size(data) if first else None
    if size is not None and data[5:6] == b"\x01":
        spans.append((0, min(size, len(data)), CLIENT_HELLO))
    shown = spans[-1][1] if spans else 0
    if shown < len(data):
        spans.append((shown, len(data), TLS_BYTES))
    return Heard(data, None, tuple(spans))


def client_hello_sni(data: bytes) -> str | None:
    """The server name a ClientHello record asks for (RFC 8446 4.1.2, RFC 6066 section 3), or None
    when the bytes are no whole ClientHello or name none. Read where no TLS layer is, for the
    journal: a client set for implicit TLS on a plaintext-first port still says whom it wanted."""
    if tls_record_size(data) is None or data[5:6] != b"\x01":
        return None
    for kind, body in client_hello_extensions(data[5:]):
        if kind == _SERVER_NAME and body[2:3] == b"\x00":  # its first entry a host_name
            length = int.from_bytes(body[3:5], "big")
            return body[5:5 + length].decode("ascii", "replace") or None
    return None


def spare_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    """A second descriptor of the connection's socket, taken before a STARTTLS handshake: when
    the handshake fails asyncio closes its own at once, and this one keeps the connection open to
    read what the client sends next (read_after_failure). Close it when it is not needed."""
    sock = transport.get_extra_info("socket")
    return sock.dup() if sock is not None else None


async def read_after_failure(sock: socket.socket, received: Callable[[bytes], None], *, seconds: float,
                             limit: int, unread: bytes = b"") -> None:
    """Hand `received` what the client sends in the clear after its handshake failed (swaks
    --tls-optional sends its AUTH PLAIN, password and all), for `seconds` and up to `limit`
    bytes (`unread` first: what came in with the handshake's last record), answering nothing;
    then close `sock`, and with it the connection."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    try:
        if unread:
            received(unread[:limit])
            limit -= len(unread)
        sock.setblocking(False)
        while limit > 0 and (remaining := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(sock, min(limit, 65536)), remaining)
            except (TimeoutError, OSError):
                return
            if not data:
                return
            limit -= len(data)
            received(data)
    finally:
        sock.close()
