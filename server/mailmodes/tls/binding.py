"""Channel bindings of a server-side TLS connection, for SCRAM's -PLUS mechanisms (RFC 5802
section 6): `tls-server-end-point` (RFC 5929 section 4) and `tls-exporter` (RFC 9266).

Python's ssl offers only `get_channel_binding("tls-unique")` (undefined for TLS 1.3), so:
- tls-server-end-point hashes the certificate this server sent, which handshake.py's message
  hook keeps from our Certificate message (`mailmodes_certificate_message`); no certificate
  message (a resumed session) means no binding;
- tls-exporter is OpenSSL's SSL_export_keying_material, called through ctypes on the SSL object
  (found as handshake.staple_ocsp finds the SSL_CTX, and checked against the SSL object's own
  version() before use); TLS 1.3 only (RFC 9266 section 3 needs extended master secret on 1.2).
Either gives None where it cannot be had: the exchange then fails, it never binds to nothing.
"""

from __future__ import annotations

import ctypes
import ssl
from typing import Any

from mailmodes.tls.handshake import openssl_function, ssl_get_version, ssl_pointer

CHANNEL_BINDINGS = ("tls-server-end-point", "tls-exporter")
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"  # RFC 9266 section 2
EXPORTER_LENGTH = 32
_CERTIFICATE = 11  # RFC 8446 4 / RFC 5246 7.4: the Certificate handshake message


def channel_binding(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, kind: str) -> bytes | None:
    if ssl_object is None:
        return None
    if kind == "tls-server-end-point":
        message = getattr(ssl_object, "mailmodes_certificate_message", None)
        der = first_certificate(message) if isinstance(message, bytes) else None
        return None if der is None else end_point_hash(der)
    if kind == "tls-exporter":
        return exporter(ssl_object)
    if kind == "client-identity":
        return client_identity(ssl_object)
    return None


def client_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
    """SASL EXTERNAL's identity: the commonName of the client's certificate, which the handshake
    verified (only a listener with client_certificate asks for one), UTF-8; None without one."""
    try:
        certificate = ssl_object.getpeercert()
    except ValueError:
        return None
    if not certificate:
        return None
    subject: Any = certificate.get("subject", ())  # ((("commonName", "alice"),), ...)
    names = [value for rdn in subject for key, value in rdn if key == "commonName"]
    return str(names[0]).encode() if names else None


def is_certificate_message(data: bytes) -> bool:
    return bool(data) and data[0] == _CERTIFICATE


def first_certificate(message: bytes) -> bytes | None:
    """The leaf's DER from a Certificate handshake message (4-byte header first), TLS 1.3
    (context, then entries with extensions) or TLS 1.2 (a bare list): told apart by which
    layout's lengths add up."""
    body = message[4:]
    if len(body) >= 4 and body[0] == 0 and int.from_bytes(body[1:4], "big") == len(body) - 4:
        entries = body[4:]  # TLS 1.3: an empty certificate_request_context
    elif len(body) >= 3 and int.from_bytes(body[0:3], "big") == len(body) - 3:
        entries = body[3:]
    else:
        return None
    if len(entries) < 3:
        return None
    size = int.from_bytes(entries[0:3], "big")
    der = entries[3:3 + size]
    return der if len(der) == size and size else None


def end_point_hash(der: bytes) -> bytes:
    """RFC 5929 section 4.1: the certificate hashed with its signature's hash, MD5 and SHA-1
    (and none, as Ed25519 has) becoming SHA-256."""
    from cryptography import x509  # only when a client binds: not on every connection's path
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes

    try:
        algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    except (ValueError, UnsupportedAlgorithm):
        algorithm = None
    if algorithm is None or isinstance(algorithm, (hashes.MD5, hashes.SHA1)):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(der)
    return digest.finalize()


def exporter(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
    """RFC 9266's 32 bytes, or None (not TLS 1.3, or no way to reach OpenSSL here)."""
    export = openssl_function("SSL_export_keying_material", ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p,
                              ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t,
                              ctypes.c_int)
    version = ssl_get_version()
    if export is None or version is None or ssl_object.version() != "TLSv1.3":
        return None
    pointer = ssl_pointer(ssl_object)
    if not pointer or version(pointer) != b"TLSv1.3":
        return None
    out = ctypes.create_string_buffer(EXPORTER_LENGTH)
    if export(pointer, out, EXPORTER_LENGTH, EXPORTER_LABEL, len(EXPORTER_LABEL), None, 0, 0) != 1:
        return None
    return out.raw
