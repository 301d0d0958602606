"""The certificate authority and the server certificates, built with cryptography.

Imported only when something has to be made or checked in depth (certs.py decides), because
cryptography's x509 costs ~9 MB and ~0.1 s at every start of a server that needs none of it.
The leaf carries the host name in the subject CN *and* in a non-critical SAN: some clients still
want a CN, and some scanners reject a critical SAN next to a non-empty subject (CLIENTS.md).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "mailmodes test CA"
LEAF_LIFETIME = dt.timedelta(days=366)  # Mozilla's "intermediate" maximum (CA/B Forum's is 397)
KEY_SIZE = 2048
RENEW_BEFORE = dt.timedelta(days=30)  # a certificate this close to its end is made again


@dataclass(frozen=True)
class Authority:
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


def make_server_certificates(ca_file: Path, cert_file: Path, key_file: Path, hostname: str,
                             names: list[str]) -> dt.datetime:
    """Reuse what is current in the certs dir (ca_file's, which also holds ca.key), make what is
    missing or stale; return until when the files may be reused without this check (for the
    fingerprint record certs.py keeps)."""
    certs_dir = ca_file.parent
    ca_certificate = _load_ca_certificate(ca_file)
    if ca_certificate is not None:
        leaf = _current_leaf(cert_file, key_file, ca_certificate, names)
        if leaf is not None:
            return leaf.not_valid_after_utc - RENEW_BEFORE
    authority = load_authority(certs_dir)
    if authority is None:
        authority = make_authority(CA_NAME)
        write_key(certs_dir / "ca.key", authority.key)
        write_cert(ca_file, authority.certificate)
    key = new_key()
    leaf = issue_leaf(authority, hostname, names, key)
    write_key(key_file, key)
    write_cert(cert_file, leaf)
    return leaf.not_valid_after_utc - RENEW_BEFORE


def new_key(size: int = KEY_SIZE) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def make_authority(common_name: str) -> Authority:
    key = new_key()
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailmodes"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Authority(certificate, key)


def issue_leaf(
    authority: Authority,
    common_name: str,
    names: list[str],
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    not_before = not_before or now - dt.timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after or not_before + LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(  # keyEncipherment is for RSA key transport only (RFC 5480 section 3 for EC keys)
            x509.KeyUsage(True, False, isinstance(key, rsa.RSAPrivateKey), False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
    return builder.sign(authority.key, hashes.SHA256())


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def _load_ca_certificate(path: Path) -> x509.Certificate | None:
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    if certificate.not_valid_after_utc - RENEW_BEFORE < dt.datetime.now(dt.timezone.utc):
        return None
    return certificate


def _load_key(path: Path) -> rsa.RSAPrivateKey | None:
    try:
        # Our own keys, written by us: skipping OpenSSL's slow RSA consistency check is safe and
        # saves about 0.1 s per key at every start.
        key = serialization.load_pem_private_key(path.read_bytes(), password=None,
                                                 unsafe_skip_rsa_key_validation=True)
    except (OSError, ValueError):
        return None
    return key if isinstance(key, rsa.RSAPrivateKey) else None


def load_authority(certs_dir: Path) -> Authority | None:
    """The project CA (certificate and key) from the certs dir, or None if missing or stale."""
    certificate = _load_ca_certificate(certs_dir / "ca.pem")
    key = _load_key(certs_dir / "ca.key")
    if certificate is None or key is None or key.public_key() != certificate.public_key():
        return None
    return Authority(certificate, key)


def _current_leaf(cert_file: Path, key_file: Path, ca_certificate: x509.Certificate,
                  names: list[str]) -> x509.Certificate | None:
    try:
        leaf = x509.load_pem_x509_certificate(cert_file.read_bytes())
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        leaf.verify_directly_issued_by(ca_certificate)
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return None
    key = _load_key(key_file)
    current = (
        key is not None
        and key.public_key() == leaf.public_key()
        and set(san) == set(_general_names(names))
        and leaf.not_valid_after_utc - RENEW_BEFORE > dt.datetime.now(dt.timezone.utc)
    )
    return leaf if current else None


def write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Create with 0600 from the start, so the key is never readable by others even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, 0o600)


def write_cert(path: Path, certificate: x509.Certificate) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
