"""The known-bad certificates behind the certificate scenarios, made once in certs_dir/scenarios/.

Every bad certificate has exactly one flaw: apart from it, it names the configured host name,
localhost, the loopback addresses and the scenario's SNI name (`expired.<hostname>`, so that a
scenario chosen by SNI shows the same flaw and not a name mismatch) and is issued by the project
CA, like the known-good leaf (certs.py). A client that trusts the project CA therefore refuses it
for that flaw and no other.

Each certificate is cached as one PEM file holding a header line (what it was made for and until
when it may be reused), the private key and the chain the server sends, written in one atomic
rename: two servers starting at once can never pair one's key with the other's certificate.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mailmodes.scenarios.catalogue import WRONG_HOST, sni_name
from mailmodes.tls.certs import ensure_certificates, server_names
from mailmodes.tls.pki import Authority, issue_leaf, make_authority, new_key

# Bump when a builder changes, so that certificates cached by an older version are made again.
FORMAT = 1
HEADER = "# mailmodes: "
REUSE_MARGIN = dt.timedelta(days=30)
LEAF_DAYS = 397
UNTRUSTED_CA_NAME = "mailmodes UNTRUSTED CA (never give this to a client)"
INTERMEDIATE_NAME = "mailmodes test intermediate CA"

# RFC 2409 section 6.2, the Second Oakley Group: the 1024-bit MODP prime (generator 2) that the
# servers hit by Logjam actually used. A well-known group is more faithful than fresh parameters,
# and needs no generation, which takes several seconds for 1024 bits.
OAKLEY_GROUP_2 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
    16,
)


class CertificateBuildError(Exception):
    """A scenario certificate could not be made; str() says why in one line."""


@dataclass(frozen=True)
class Inputs:
    """What every builder may use: the project CA and the names of the known-good leaf."""

    scenario_id: str
    certs_dir: Path
    hostname: str
    authority: Authority
    ca_fingerprint: str

    @property
    def names(self) -> list[str]:
        return [*server_names(self.hostname), sni_name(self.scenario_id, self.hostname)]

    @property
    def scenario_dir(self) -> Path:
        return self.certs_dir / "scenarios"


@dataclass(frozen=True)
class Built:
    """A freshly made certificate: its key, the chain to send (leaf first) and its reuse limit."""

    key: rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...]
    reuse_until: dt.datetime


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def inputs_for(scenario_id: str, certs_dir: Path, hostname: str) -> Inputs:
    """Make sure the project CA exists (certs.ensure_certificates) and load it."""
    paths = ensure_certificates(certs_dir, hostname)
    ca_pem = paths.ca_file.read_bytes()
    certificate = x509.load_pem_x509_certificate(ca_pem)
    key = serialization.load_pem_private_key((certs_dir / "ca.key").read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    fingerprint = certificate.fingerprint(hashes.SHA256()).hex()
    return Inputs(scenario_id, certs_dir, hostname, Authority(certificate, key), fingerprint)


# --- the bad certificates -------------------------------------------------------------------


def leaf_until(certificate: x509.Certificate) -> dt.datetime:
    """A valid leaf is reused until shortly before it expires."""
    return certificate.not_valid_after_utc - REUSE_MARGIN


def build_expired(inputs: Inputs) -> Built:
    key = new_key()
    start = now()
    leaf = issue_leaf(inputs.authority, inputs.hostname, inputs.names, key,
                      not_before=start - dt.timedelta(days=LEAF_DAYS + 30),
                      not_after=start - dt.timedelta(days=30))
    # Once expired it stays expired: only a new CA or host name makes it stale.
    return Built(key, (leaf,), inputs.authority.certificate.not_valid_after_utc - REUSE_MARGIN)


def build_not_yet_valid(inputs: Inputs) -> Built:
    key = new_key()
    start = now() + dt.timedelta(days=365)
    leaf = issue_leaf(inputs.authority, inputs.hostname, inputs.names, key, not_before=start)
    return Built(key, (leaf,), start - REUSE_MARGIN)


def build_wrong_host(inputs: Inputs) -> Built:
    key = new_key()
    leaf = issue_leaf(inputs.authority, WRONG_HOST, [WRONG_HOST], key)
    return Built(key, (leaf,), leaf_until(leaf))


def build_self_signed(inputs: Inputs) -> Built:
    """A leaf (CA:FALSE) that signs itself, as a freshly installed server often has."""
    key = new_key()
    itself = Authority(_placeholder_certificate(inputs.hostname, key), key)
    leaf = issue_leaf(itself, inputs.hostname, inputs.names, key)
    return Built(key, (leaf,), leaf_until(leaf))


def _placeholder_certificate(common_name: str, key: rsa.RSAPrivateKey) -> x509.Certificate:
    """issue_leaf takes its issuer name from an Authority: give it the leaf's own subject."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now()).not_valid_after(now() + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


def build_untrusted_root(inputs: Inputs) -> Built:
    """A leaf from a second CA; the server sends that root too, as private-CA servers often do,
    so the client sees a complete chain that it has no reason to trust."""
    root = untrusted_authority(inputs)
    key = new_key()
    leaf = issue_leaf(root, inputs.hostname, inputs.names, key)
    return Built(key, (leaf, root.certificate), min(leaf_until(leaf), leaf_until(root.certificate)))


def build_incomplete_chain(inputs: Inputs) -> Built:
    """A leaf from an intermediate of the project CA; the intermediate is not sent (RFC 8446
    section 4.4.2 wants the chain sent; clients without AIA fetching cannot complete it)."""
    intermediate = intermediate_authority(inputs)
    key = new_key()
    leaf = issue_leaf(intermediate, inputs.hostname, inputs.names, key)
    return Built(key, (leaf,), min(leaf_until(leaf), leaf_until(intermediate.certificate)))


def wildcard_multilabel_pattern(hostname: str) -> str:
    """`*.<parent of hostname>`: for mail.example.test that is `*.example.test`, which would match
    mail.example.test but not wildcard-multilabel.mail.example.test (two labels)."""
    parent = hostname.partition(".")[2]
    return f"*.{parent or hostname}"


def build_wildcard_apex(inputs: Inputs) -> Built:
    """Only `*.wildcard-apex.<hostname>`; a client connects as wildcard-apex.<hostname>.

    RFC 6125 section 6.4.3: `*` matches exactly one whole label, so never the apex itself. The
    apex is the scenario's SNI name rather than the configured host, so that choosing the
    scenario by SNI still shows the flaw: `*.<hostname>` would match `wildcard-apex.<hostname>`.
    """
    pattern = f"*.{sni_name(inputs.scenario_id, inputs.hostname)}"
    key = new_key()
    leaf = issue_leaf(inputs.authority, pattern, [pattern], key)
    return Built(key, (leaf,), leaf_until(leaf))


def build_wildcard_multilabel(inputs: Inputs) -> Built:
    """Only `*.<parent of hostname>`; a client connects as wildcard-multilabel.<hostname>."""
    pattern = wildcard_multilabel_pattern(inputs.hostname)
    key = new_key()
    leaf = issue_leaf(inputs.authority, pattern, [pattern], key)
    return Built(key, (leaf,), leaf_until(leaf))


def build_cn_only(inputs: Inputs) -> Built:
    """The host name only in the subject CN, no subjectAltName (RFC 6125 section 6.4.4: a client
    may fall back to the CN only when there is no SAN; RFC 7817 section 3 allows CN-ID).
    A CN holds one name, so this scenario cannot also be chosen by SNI."""
    key = new_key()
    leaf = issue_leaf(inputs.authority, inputs.hostname, [], key)
    return Built(key, (leaf,), leaf_until(leaf))


def build_rsa1024(inputs: Inputs) -> Built:
    key = new_key(1024)
    leaf = issue_leaf(inputs.authority, inputs.hostname, inputs.names, key)
    return Built(key, (leaf,), leaf_until(leaf))


def build_sha1_signature(inputs: Inputs) -> Built:
    """A leaf the project CA signed with SHA-1. cryptography refuses to sign with SHA-1, so the
    `openssl x509 -req -sha1` command signs a request that cryptography made."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertificateBuildError("cert-sha1-signature needs the openssl command, which is not installed")
    key = new_key()
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, inputs.hostname)]))
        .sign(key, hashes.SHA256())
    )
    inputs.scenario_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=inputs.scenario_dir) as work:
        folder = Path(work)
        (folder / "leaf.csr").write_bytes(request.public_bytes(serialization.Encoding.PEM))
        (folder / "leaf.ext").write_text(_openssl_extensions(inputs.names))
        command = [
            openssl, "x509", "-req", "-in", str(folder / "leaf.csr"),
            "-CA", str(inputs.certs_dir / "ca.pem"), "-CAkey", str(inputs.certs_dir / "ca.key"),
            "-set_serial", str(x509.random_serial_number()), "-days", str(LEAF_DAYS), "-sha1",
            "-extfile", str(folder / "leaf.ext"), "-extensions", "leaf", "-out", str(folder / "leaf.pem"),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise CertificateBuildError(f"openssl x509 -sha1 failed: {result.stderr.strip()}")
        leaf = x509.load_pem_x509_certificate((folder / "leaf.pem").read_bytes())
    return Built(key, (leaf,), leaf_until(leaf))


def _openssl_extensions(names: list[str]) -> str:
    """The known-good leaf's extensions (certs.issue_leaf) in openssl's extension-file syntax."""
    alt_names = ",".join(f"IP:{name}" if _is_ip(name) else f"DNS:{name}" for name in names)
    return (
        "[leaf]\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\n"
        "extendedKeyUsage = serverAuth\n"
        "authorityKeyIdentifier = keyid\n"
        f"subjectAltName = {alt_names}\n"
    )


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


BUILDERS: dict[str, Callable[[Inputs], Built]] = {
    "cert-expired": build_expired,
    "cert-not-yet-valid": build_not_yet_valid,
    "cert-wrong-host": build_wrong_host,
    "cert-self-signed": build_self_signed,
    "cert-untrusted-root": build_untrusted_root,
    "cert-incomplete-chain": build_incomplete_chain,
    "cert-wildcard-apex": build_wildcard_apex,
    "cert-wildcard-multilabel": build_wildcard_multilabel,
    "cert-cn-only": build_cn_only,
    "cert-rsa1024": build_rsa1024,
    "cert-sha1-signature": build_sha1_signature,
}


# --- the authorities behind two of them ---------------------------------------------------------


def untrusted_authority(inputs: Inputs) -> Authority:
    """A second root CA, kept in certs_dir/scenarios/ and never handed to any client."""
    path = inputs.scenario_dir / "untrusted-ca.pem"

    def build() -> Built:
        root = make_authority(UNTRUSTED_CA_NAME)
        return Built(root.key, (root.certificate,), leaf_until(root.certificate))

    return _load_authority(cached_bundle(path, {"format": FORMAT, "kind": "untrusted-ca"}, build))


def intermediate_authority(inputs: Inputs) -> Authority:
    """An intermediate CA under the project CA (remade whenever the project CA is)."""
    path = inputs.scenario_dir / "intermediate-ca.pem"

    def build() -> Built:
        key = new_key()
        certificate = make_intermediate(inputs.authority, INTERMEDIATE_NAME, key)
        return Built(key, (certificate,), leaf_until(certificate))

    identity = {"format": FORMAT, "kind": "intermediate-ca", "ca": inputs.ca_fingerprint}
    return _load_authority(cached_bundle(path, identity, build))


def make_intermediate(parent: Authority, common_name: str, key: rsa.RSAPrivateKey) -> x509.Certificate:
    start = now() - dt.timedelta(days=1)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailmodes"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(parent.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(min(start + dt.timedelta(days=1825), parent.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), critical=False
        )
        .sign(parent.key, hashes.SHA256())
    )


def _load_authority(path: Path) -> Authority:
    data = path.read_bytes()
    key = serialization.load_pem_private_key(data, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return Authority(x509.load_pem_x509_certificate(data), key)


# --- the cache ----------------------------------------------------------------------------------


def scenario_certificate(scenario_id: str, certs_dir: Path, hostname: str) -> Path:
    """The cached PEM file (key + chain to send) for a certificate scenario, made if needed."""
    build = BUILDERS.get(scenario_id)
    if build is None:
        raise KeyError(scenario_id)
    inputs = inputs_for(scenario_id, certs_dir, hostname)
    identity = {"format": FORMAT, "kind": scenario_id, "hostname": hostname, "ca": inputs.ca_fingerprint}
    return cached_bundle(inputs.scenario_dir / f"{scenario_id}.pem", identity, lambda: build(inputs))


def cached_bundle(path: Path, identity: dict[str, object], build: Callable[[], Built]) -> Path:
    """Reuse `path` if it was made for the same identity and may still be used; else build it."""
    if _is_reusable(path, identity):
        return path
    built = build()
    header = HEADER + json.dumps({**identity, "reuse_until": built.reuse_until.isoformat()}) + "\n"
    key = built.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in built.chain)
    write_private(path, header.encode() + key + chain)
    return path


def _is_reusable(path: Path, identity: dict[str, object]) -> bool:
    try:
        first_line = path.read_text().splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return False
    if not first_line.startswith(HEADER):
        return False
    try:
        recorded = json.loads(first_line[len(HEADER):])
        reuse_until = dt.datetime.fromisoformat(recorded.pop("reuse_until"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return recorded == identity and now() < reuse_until


def write_private(path: Path, data: bytes) -> None:
    """Write a file holding a private key: 0600 from the start, then renamed into place, so that
    a reader sees either the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


# --- Diffie-Hellman parameters ------------------------------------------------------------------


def _der(tag: int, content: bytes) -> bytes:
    length = len(content)
    if length < 0x80:
        return bytes([tag, length]) + content
    octets = length.to_bytes((length.bit_length() + 7) // 8, "big")  # the long form, X.690 8.1.3.5
    return bytes([tag, 0x80 | len(octets)]) + octets + content


def _der_integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))  # a leading 0 keeps it positive


def dh_parameters_pem(prime: int, generator: int) -> bytes:
    """PKCS #3 DHParameter ::= SEQUENCE { prime INTEGER, base INTEGER }, as the PEM that
    ssl.SSLContext.load_dh_params reads. Encoded here: cryptography deprecates finite-field DH,
    and with it the one call that wrote this."""
    body = base64.encodebytes(_der(0x30, _der_integer(prime) + _der_integer(generator))).replace(b"\n", b"")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"-----BEGIN DH PARAMETERS-----\n" + b"\n".join(lines) + b"\n-----END DH PARAMETERS-----\n"


def dh1024_params(certs_dir: Path) -> Path:
    """A PEM file with the 1024-bit DH group for tls-dh1024 (written once; it never changes)."""
    path = certs_dir / "scenarios" / "dh1024.pem"
    data = dh_parameters_pem(OAKLEY_GROUP_2, 2)
    if not path.is_file() or path.read_bytes() != data:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_bytes(data)
        os.replace(temporary, path)
    return path
