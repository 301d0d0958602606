"""Channel bindings of a server-side TLS connection, for SCRAM's -PLUS mechanisms (RFC 5802
section 6): `tls-server-end-point` (RFC 5929 section 4) and `tls-exporter` (RFC 9266).

Python's ssl offers only `get_channel_binding("tls-unique")` (undefined for TLS 1.3), so:
- tls-server-end-point hashes the certificate this server presents on the connection, which
  OpenSSL gives (SSL_get_certificate, as DER by i2d_X509): the one our Certificate message
  carried, or, in a resumed session, carried when the session began;
- tls-exporter is OpenSSL's SSL_export_keying_material, called through ctypes on the SSL object
  (handshake.verified_ssl_pointer); TLS 1.3 only (RFC 9266 section 3 needs extended master secret on 1.2).
Either gives None where it cannot be had: the exchange then fails, it never binds to nothing.
"""

from __future__ import annotations

import ctypes
import ssl
from typing import Any

from mailmodes.tls.handshake import openssl_function, verified_ssl_pointer

CHANNEL_BINDINGS = ("tls-server-end-point", "tls-exporter")
EXPORTER_LABEL = b"EXPORTER-Channel-Binding"  # RFC 9266 section 2
EXPORTER_LENGTH = 32


def channel_binding(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, kind: str) -> bytes | None:
    if ssl_object is None:
        return None
    if kind == "tls-server-end-point":
        der = own_certificate(ssl_object)
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


def own_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes | None:
    """The DER of the certificate this end of the connection presents, or None."""
    get_certificate = openssl_function("SSL_get_certificate", ctypes.c_void_p, ctypes.c_void_p)
    to_der = openssl_function("i2d_X509", ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
    pointer = verified_ssl_pointer(ssl_object)
    if pointer is None or get_certificate is None or to_der is None:
        return None
    certificate = get_certificate(pointer)
    size = to_der(certificate, None) if certificate else 0
    if size <= 0:
        return None
    out = ctypes.create_string_buffer(size)
    cursor = ctypes.c_void_p(ctypes.addressof(out))  # i2d_X509 writes at *cursor and moves it on
    return out.raw if to_der(certificate, ctypes.byref(cursor)) == size else None


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
    pointer = verified_ssl_pointer(ssl_object)
    if export is None or pointer is None or ssl_object.version() != "TLSv1.3":
        return None
    out = ctypes.create_string_buffer(EXPORTER_LENGTH)
    if export(pointer, out, EXPORTER_LENGTH, EXPORTER_LABEL, len(EXPORTER_LABEL), None, 0, 0) != 1:
        return None
    return out.raw
