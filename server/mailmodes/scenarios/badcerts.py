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
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mailmodes.scenarios.catalogue import IDN_HOST_LABEL, WRONG_HOST, sni_name
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

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
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
    key = new_key()
    leaf = _sign_with_sha1(inputs, key, inputs.hostname, _openssl_extensions(inputs.names))
    return Built(key, (leaf,), leaf_until(leaf))


def _sign_with_sha1(inputs: Inputs, key: rsa.RSAPrivateKey, common_name: str, extensions: str) -> x509.Certificate:
    """A certificate for `key` that the project CA signs with SHA-1 (`openssl x509 -req -sha1`),
    with the extensions of the [leaf] section of `extensions` (openssl's extension-file syntax)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertificateBuildError(f"{inputs.scenario_id} needs the openssl command, which is not installed")
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    inputs.scenario_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=inputs.scenario_dir) as work:
        folder = Path(work)
        (folder / "leaf.csr").write_bytes(request.public_bytes(serialization.Encoding.PEM))
        (folder / "leaf.ext").write_text(extensions)
        command = [
            openssl, "x509", "-req", "-in", str(folder / "leaf.csr"),
            "-CA", str(inputs.certs_dir / "ca.pem"), "-CAkey", str(inputs.certs_dir / "ca.key"),
            "-set_serial", str(x509.random_serial_number()), "-days", str(LEAF_DAYS), "-sha1",
            "-extfile", str(folder / "leaf.ext"), "-extensions", "leaf", "-out", str(folder / "leaf.pem"),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise CertificateBuildError(f"openssl x509 -sha1 failed: {result.stderr.strip()}")
        return x509.load_pem_x509_certificate((folder / "leaf.pem").read_bytes())


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


# --- the rest of the badssl catalogue (issue 20) -------------------------------------------------


def build_ecdsa_only(inputs: Inputs) -> Built:
    """An ECDSA P-256 leaf (the project CA's RSA signature on it), and no RSA certificate at all."""
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = issue_leaf(inputs.authority, inputs.hostname, inputs.names, key)
    return Built(key, (leaf,), leaf_until(leaf))


def build_rsa8192(inputs: Inputs) -> Built:
    """An 8192-bit RSA leaf. Making the key takes seconds (3 s, sometimes 20, on one core), once:
    it is cached like every scenario certificate."""
    key = new_key(8192)
    leaf = issue_leaf(inputs.authority, inputs.hostname, inputs.names, key)
    return Built(key, (leaf,), leaf_until(leaf))


SAN_COUNT = 1000


def build_1000_sans(inputs: Inputs) -> Built:
    """1,000 subjectAltNames: filler names under the host name first, the usual names last, so a
    client has to read them all to find its own."""
    filler = [f"san-{number:04}.{inputs.hostname}" for number in range(SAN_COUNT - len(inputs.names))]
    key = new_key()
    leaf = issue_leaf(inputs.authority, inputs.hostname, [*filler, *inputs.names], key)
    return Built(key, (leaf,), leaf_until(leaf))


SHA1_INTERMEDIATE_NAME = "mailmodes SHA-1 intermediate CA"


def build_sha1_intermediate(inputs: Inputs) -> Built:
    """A SHA-256 leaf from an intermediate that the project CA signed with SHA-1; both are sent."""
    intermediate_key = new_key()
    extensions = (
        "[leaf]\n"
        "basicConstraints = critical, CA:TRUE, pathlen:0\n"
        "keyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid\n"
    )
    intermediate = _sign_with_sha1(inputs, intermediate_key, SHA1_INTERMEDIATE_NAME, extensions)
    key = new_key()
    leaf = issue_leaf(Authority(intermediate, intermediate_key), inputs.hostname, inputs.names, key)
    return Built(key, (leaf, intermediate), min(leaf_until(leaf), leaf_until(intermediate)))


def build_no_subject(inputs: Inputs) -> Built:
    """An empty subject; the names only in a critical subjectAltName, as RFC 5280 section 4.1.2.6
    requires then. Valid, but a client that reads the subject CN finds nothing."""
    key = new_key()
    start = now() - dt.timedelta(days=1)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(inputs.authority.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=366))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(inputs.authority.key.public_key()),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(name)) if _is_ip(name) else x509.DNSName(name)
             for name in inputs.names]), critical=True)
        .sign(inputs.authority.key, hashes.SHA256())
    )
    return Built(key, (leaf,), leaf_until(leaf))


def build_idn(inputs: Inputs) -> Built:
    """Only the internationalized name, as its A-label (a dNSName is ASCII, RFC 5280 section 7.2):
    xn--bcher-kva.<hostname>, which is bücher.<hostname>."""
    name = f"{IDN_HOST_LABEL}.{inputs.hostname}"
    key = new_key()
    leaf = issue_leaf(inputs.authority, name, [name], key)
    return Built(key, (leaf,), leaf_until(leaf))


def build_revoked(inputs: Inputs) -> Built:
    """A leaf sent with the project CA: curl (and OpenSSL's OCSP code) find the issuer of the
    stapled OCSP response's certificate ID in the chain the server sends (`revoked_ocsp_response`)."""
    key = new_key()
    leaf = issue_leaf(inputs.authority, inputs.hostname, inputs.names, key)
    return Built(key, (leaf, inputs.authority.certificate), leaf_until(leaf))


BUILDERS.update({
    "cert-ecdsa-only": build_ecdsa_only,
    "cert-rsa8192": build_rsa8192,
    "cert-1000-sans": build_1000_sans,
    "cert-sha1-intermediate": build_sha1_intermediate,
    "cert-no-subject": build_no_subject,
    "cert-idn": build_idn,
    "cert-revoked": build_revoked,
})


OCSP_VALIDITY = dt.timedelta(days=7)
OCSP_REMAKE_AFTER = dt.timedelta(days=1)


def revoked_ocsp_response(bundle: Path, certs_dir: Path, hostname: str) -> Callable[[], bytes]:
    """For cert-revoked: a function giving the DER OCSP response (RFC 6960) the server staples,
    signed by the project CA itself: the leaf revoked a day ago for keyCompromise. A response
    lives 7 days and is remade after one, so a server that runs for weeks never staples a stale one."""
    leaf = x509.load_pem_x509_certificates(bundle.read_bytes())[0]
    made: list[tuple[dt.datetime, bytes]] = []

    def response() -> bytes:
        if made and now() - made[0][0] < OCSP_REMAKE_AFTER:
            return made[0][1]
        authority = inputs_for("cert-revoked", certs_dir, hostname).authority
        start = now()
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response(cert=leaf, issuer=authority.certificate, algorithm=hashes.SHA1(),
                          cert_status=ocsp.OCSPCertStatus.REVOKED, this_update=start - dt.timedelta(hours=1),
                          next_update=start + OCSP_VALIDITY, revocation_time=start - dt.timedelta(days=1),
                          revocation_reason=x509.ReasonFlags.key_compromise)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, authority.certificate)
        )
        der = builder.sign(authority.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
        made[:] = [(start, der)]
        return der

    return response


CLIENT_DAYS = 366


def client_certificate(certs_dir: Path, hostname: str, name: str = "client") -> Path:
    """A client certificate (extendedKeyUsage clientAuth) for `name` from the project CA, key and
    certificate in one PEM file, certs_dir/clients/<name>.pem: for tls-client-certificate-required."""
    inputs = inputs_for("client", certs_dir, hostname)

    def build() -> Built:
        key = new_key()
        leaf = issue_leaf(inputs.authority, name, [], key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        return Built(key, (leaf,), leaf_until(leaf))

    identity = {"format": FORMAT, "kind": "client", "name": name, "ca": inputs.ca_fingerprint}
    return cached_bundle(certs_dir / "clients" / f"{name}.pem", identity, build)


def bad_client_certificate(certs_dir: Path, hostname: str, name: str = "client") -> Path:
    """A client certificate for `name` from the untrusted second CA (never the project's): one a
    client_certificate listener must refuse (alert unknown_ca), certs_dir/clients/<name>-untrusted.pem."""
    inputs = inputs_for("client", certs_dir, hostname)

    def build() -> Built:
        key = new_key()
        leaf = issue_leaf(untrusted_authority(inputs), name, [], key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        return Built(key, (leaf,), leaf_until(leaf))

    identity = {"format": FORMAT, "kind": "untrusted-client", "name": name, "ca": inputs.ca_fingerprint}
    return cached_bundle(certs_dir / "clients" / f"{name}-untrusted.pem", identity, build)


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
