"""Certificate and TLS scenarios (KNOWN-BAD.md section 1) against real clients.

Every buildable scenario is served on an implicit-TLS and on a STARTTLS SMTP port by a small
harness (MiniSmtp: just enough SMTP to reach TLS) that uses `contexts.tls_context_for` directly,
so the scenarios are verified without the app. The same checks run against the real app (SMTP, IMAP,
POP3, via the `serve` fixture and `scenario = "<id>"`) once app.py builds listener contexts from
`tls_context_for`.

Clients: `openssl s_client -verify_return_error -verify_hostname` with the project CA (refuses with
the documented verify error), curl with `--cacert` (exit 60 for certificate problems, 35 for
version/cipher failures), Python's ssl with and without verification.
"""

from __future__ import annotations

import difflib
import queue
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.config import load_config
from mailmodes.scenarios import badcerts
from mailmodes.scenarios.catalogue import (
    KNOWN_BAD_COMMAND,
    SCENARIOS,
    client_name,
    describe,
    listener_ports,
    scenario_for_sni,
)
from mailmodes.tls.certs import ensure_certificates
from mailmodes.tls.contexts import tls_context_for
from mailmodes.tls.handshake import server_context
from support import CLIENT_TIMEOUT, HOSTNAME, run_client

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
MODES = ("implicit", "starttls")

SECTION_1 = (
    "cert-expired", "cert-not-yet-valid", "cert-wrong-host", "cert-self-signed", "cert-untrusted-root",
    "cert-incomplete-chain", "cert-wildcard-apex", "cert-wildcard-multilabel", "cert-cn-only", "cert-rsa1024",
    "cert-sha1-signature", "tls-v1-0", "tls-v1-1", "tls-v1-2-only", "tls-v1-3-only", "tls-null-cipher",
    "tls-dh1024", "tls-static-rsa", "tls-cbc-sha1",
)
NOT_BUILDABLE = ("tls-sslv2", "tls-sslv3", "tls-rc4", "tls-3des", "tls-dh512")
# Issue 20: section 1 again, after section 2 (the port plan only ever grows).
ADDED = ("cert-ecdsa-only", "cert-rsa8192", "cert-1000-sans", "cert-sha1-intermediate", "cert-no-subject", "cert-idn",
         "cert-revoked", "tls-client-cert-required")
# valid certificates a correct client accepts (the one for cert-idn only by its own name)
VALID_ADDED = ("cert-ecdsa-only", "cert-rsa8192", "cert-1000-sans", "cert-no-subject")

# scenario -> (OpenSSL verify error number and text, the alert OpenSSL sends, as the server sees it)
CERT_REFUSALS = {
    "cert-expired": (10, "certificate has expired", "alert certificate expired"),
    "cert-not-yet-valid": (9, "certificate is not yet valid", "alert bad certificate"),
    "cert-wrong-host": (62, "hostname mismatch", "alert bad certificate"),
    "cert-self-signed": (18, "self-signed certificate", "alert unknown ca"),
    "cert-untrusted-root": (19, "self-signed certificate in certificate chain", "alert unknown ca"),
    "cert-incomplete-chain": (20, "unable to get local issuer certificate", "alert unknown ca"),
    "cert-wildcard-apex": (62, "hostname mismatch", "alert bad certificate"),
    "cert-wildcard-multilabel": (62, "hostname mismatch", "alert bad certificate"),
    "cert-rsa1024": (66, "EE certificate key too weak", "alert bad certificate"),
    "cert-sha1-signature": (68, "CA signature digest algorithm too weak", "alert bad certificate"),
    "cert-sha1-intermediate": (68, "CA signature digest algorithm too weak", "alert bad certificate"),
}
CERTIFICATE_SCENARIOS = (*CERT_REFUSALS, "cert-cn-only", *VALID_ADDED, "cert-revoked")
# scenario -> (version, cipher) that OpenSSL's default client negotiates: the known-good ones, and
# the two "dubious" ones that default OpenSSL (and so curl) still accepts.
OPENSSL_CONNECTS = {
    "cert-cn-only": ("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    "tls-v1-2-only": ("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384"),
    "tls-v1-3-only": ("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
    "tls-static-rsa": ("TLSv1.2", "AES256-GCM-SHA384"),
    "tls-cbc-sha1": ("TLSv1.2", "ECDHE-RSA-AES128-SHA"),
    **{scenario: ("TLSv1.3", "TLS_AES_256_GCM_SHA384") for scenario in VALID_ADDED},
    "cert-revoked": ("TLSv1.3", "TLS_AES_256_GCM_SHA384"),  # s_client never checks the stapled status
}
# scenario -> (what default OpenSSL prints, the server's view, the s_client options a deliberately
# weakened client needs, the version and cipher it then negotiates)
OPENSSL_WEAK_REFUSALS = {
    # OpenSSL 3 at level 1+ refuses the MD5+SHA-1 signature TLS 1.0/1.1 put on the key exchange.
    "tls-v1-0": ("legacy sigalg disallowed or unsupported", "alert internal error",
                 ["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"], ("TLSv1", "ECDHE-RSA-AES256-SHA")),
    "tls-v1-1": ("legacy sigalg disallowed or unsupported", "alert internal error",
                 ["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], ("TLSv1.1", "ECDHE-RSA-AES256-SHA")),
    "tls-null-cipher": ("alert handshake failure", "no shared cipher",
                        ["-cipher", "NULL-SHA256:@SECLEVEL=0"], ("TLSv1.2", "NULL-SHA256")),
    "tls-dh1024": ("dh key too small", "alert handshake failure",
                   ["-cipher", "DHE-RSA-AES256-GCM-SHA384:@SECLEVEL=1"], ("TLSv1.2", "DHE-RSA-AES256-GCM-SHA384")),
}
# curl's exit status with --cacert on implicit SMTP (0 = it completed the SMTP session)
CURL_EXIT = {
    **{scenario: 60 for scenario in CERT_REFUSALS},  # CURLE_PEER_FAILED_VERIFICATION
    **{scenario: 35 for scenario in OPENSSL_WEAK_REFUSALS},  # CURLE_SSL_CONNECT_ERROR
    **{scenario: 0 for scenario in OPENSSL_CONNECTS},
}


# --- the harness --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """The server's view of one TLS handshake."""

    version: str | None = None
    cipher: str | None = None
    error: str | None = None  # e.g. "[SSL: ...] sslv3 alert certificate expired (...)"


class HandshakeFailed(Exception):
    pass


class MiniSmtp:
    """Just enough SMTP for s_client, curl and smtplib to reach TLS on one scenario's context:
    greeting, EHLO (with STARTTLS before TLS on a STARTTLS port, RFC 3207 section 4), STARTTLS,
    QUIT, and `250 2.0.0 OK` for anything else."""

    def __init__(self, context: ssl.SSLContext, *, implicit: bool) -> None:
        self.context = context
        self.implicit = implicit
        self.handshakes: queue.Queue[Handshake] = queue.Queue()
        self.listener = socket.create_server((HOST, 0))
        self.port: int = self.listener.getsockname()[1]
        self.threads: list[threading.Thread] = []
        self.stopping = threading.Event()
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        while True:
            connection, _ = self.listener.accept()
            if self.stopping.is_set():  # the connection stop() made to wake us
                connection.close()
                return
            thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _serve(self, plain: socket.socket) -> None:
        plain.settimeout(CLIENT_TIMEOUT)
        opened = [plain]  # closed in reverse: the TLS socket, if any, then the plain one
        try:
            self._dialogue(plain, opened)
        except (HandshakeFailed, OSError):
            pass
        finally:
            for connection in reversed(opened):
                connection.close()

    def _dialogue(self, connection: socket.socket, opened: list[socket.socket]) -> None:
        if self.implicit:
            connection = self._handshake(connection)
            opened.append(connection)
        encrypted = self.implicit
        connection.sendall(f"220 {HOSTNAME} ESMTP scenario harness\r\n".encode())
        buffer = b""
        while True:
            while b"\r\n" not in buffer:
                data = connection.recv(4096)
                if not data:
                    return
                buffer += data
            line, _, buffer = buffer.partition(b"\r\n")
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                starttls = b"" if encrypted else b"250-STARTTLS\r\n"
                connection.sendall(f"250-{HOSTNAME}\r\n".encode() + starttls + b"250 HELP\r\n")
            elif verb == b"STARTTLS" and not encrypted:
                connection.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                # RFC 3207 section 4.2: anything the client sent before TLS is discarded.
                connection, buffer, encrypted = self._handshake(connection), b"", True
                opened.append(connection)
            elif verb == b"QUIT":
                connection.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                connection.sendall(b"250 2.0.0 OK\r\n")

    def _handshake(self, connection: socket.socket) -> ssl.SSLSocket:
        try:
            tls = self.context.wrap_socket(connection, server_side=True)
        except (ssl.SSLError, OSError) as error:
            self.handshakes.put(Handshake(error=str(error)))
            raise HandshakeFailed from error
        cipher = tls.cipher()
        self.handshakes.put(Handshake(tls.version(), cipher[0] if cipher else None))
        return tls

    def handshake(self) -> Handshake:
        return self.handshakes.get(timeout=CLIENT_TIMEOUT)

    def stop(self) -> None:
        # Closing a listening socket does not wake a thread blocked in accept(): connect instead.
        self.stopping.set()
        socket.create_connection((HOST, self.port), timeout=CLIENT_TIMEOUT).close()
        self.accepting.join()
        self.listener.close()
        for thread in self.threads:
            thread.join(CLIENT_TIMEOUT)


@pytest.fixture(scope="module")
def contexts(certs_dir: Path) -> dict[str, ssl.SSLContext]:
    return {s.id: tls_context_for(s.id, certs_dir, HOSTNAME) for s in SCENARIOS.values() if s.buildable}


@pytest.fixture
def harness(contexts: dict[str, ssl.SSLContext]) -> Iterator[Callable[[str, str], MiniSmtp]]:
    started: list[MiniSmtp] = []

    def start(scenario: str, mode: str) -> MiniSmtp:
        server = MiniSmtp(contexts[scenario], implicit=mode == "implicit")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def s_client(port: int, name: str, ca_file: Path, *options: str, starttls: str | None = None,
             stdin: bytes = b"QUIT\r\n") -> tuple[int, str]:
    args = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-servername", name, "-verify_hostname", name,
            "-CAfile", str(ca_file), "-verify_return_error", *options]
    if starttls:
        args += ["-starttls", starttls]
    result = run_client(args, stdin=stdin)
    return result.returncode, result.stdout + result.stderr


def negotiated(output: str) -> tuple[str, str]:
    """(protocol, cipher) from s_client's output.

    The "New, TLSv1.0, Cipher is X" line names the version that defined the cipher, not the one
    negotiated: the protocol comes from the session's "Protocol  :" line, which s_client prints
    for TLS 1.2 and below (for TLS 1.3 the two agree).
    """
    lines = [line.strip() for line in output.splitlines()]
    new = next(line for line in lines if line.startswith("New, "))
    protocol, cipher = new.removeprefix("New, ").split(", Cipher is ")
    session = [line.removeprefix("Protocol  : ") for line in lines if line.startswith("Protocol  : ")]
    return (session[0] if session else protocol), cipher


def curl(port: int, name: str, ca_file: Path) -> tuple[int, str]:
    result = run_client([
        "curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "--resolve", f"{name}:{port}:{HOST}",
        f"smtps://{name}:{port}",
    ])
    return result.returncode, result.stderr


def starttls_option(mode: str) -> str | None:
    return "smtp" if mode == "starttls" else None


# --- the catalogue ------------------------------------------------------------------------------


def test_every_section_1_id_is_listed() -> None:
    section_1 = tuple(s.id for s in SCENARIOS.values() if s.kind in ("certificate", "tls"))
    assert section_1 == SECTION_1 + NOT_BUILDABLE + ADDED
    assert [s for s in section_1 if SCENARIOS[s].buildable] == list(SECTION_1 + ADDED)
    for scenario_id in NOT_BUILDABLE:
        scenario = SCENARIOS[scenario_id]
        assert scenario.why_not and scenario.sni_label is None


def test_only_certificates_are_chosen_by_sni() -> None:
    by_sni = {s.id: s.sni_label for s in SCENARIOS.values() if s.sni_label}
    plain = (*CERT_REFUSALS, *VALID_ADDED, "cert-revoked")
    assert by_sni == {**{scenario: scenario.removeprefix("cert-") for scenario in plain}, "cert-idn": "xn--bcher-kva"}
    assert [s.id for s in SCENARIOS.values() if s.bad_certificate] == [*CERT_REFUSALS, "cert-revoked"]


@pytest.mark.parametrize(("server_name", "expected"), [
    ("expired.mail.example.test", "cert-expired"),
    ("EXPIRED.Mail.Example.Test.", "cert-expired"),
    ("sha1-signature.mail.example.test", "cert-sha1-signature"),
    ("wildcard-multilabel.mail.example.test", "cert-wildcard-multilabel"),
    ("mail.example.test", None),
    ("expired.other.test", None),
    ("expired.mail.example.test.evil.test", None),
    ("a.expired.mail.example.test", None),
    ("cn-only.mail.example.test", None),  # a CN holds one name: not by SNI
    ("tls-v1-0.mail.example.test", None),  # versions and ciphers cannot change after the ClientHello
    ("sslv3.mail.example.test", None),
    ("xn--bcher-kva.mail.example.test", "cert-idn"),  # the A-label a correct client sends
    ("idn.mail.example.test", None),
    ("revoked.mail.example.test", "cert-revoked"),
    ("client-cert-required.mail.example.test", None),
    (None, None),
    ("", None),
])
def test_scenario_for_sni(server_name: str | None, expected: str | None) -> None:
    assert scenario_for_sni(server_name, HOSTNAME) == expected


def test_unknown_and_unbuildable_ids_are_refused_clearly(certs_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown certificate/TLS scenario 'cert-nope'; known: cert-expired, "):
        tls_context_for("cert-nope", certs_dir, HOSTNAME)
    with pytest.raises(ValueError, match=r"'tls-rc4' cannot be built here: .*enable-weak-ssl-ciphers"):
        tls_context_for("tls-rc4", certs_dir, HOSTNAME)


# --- certificates: refused by verifying clients, accepted by a client that checks nothing --------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", sorted(CERT_REFUSALS))
def test_openssl_refuses_bad_certificate(harness: Callable[[str, str], MiniSmtp], ca_file: Path, scenario: str,
                                         mode: str) -> None:
    number, text, alert = CERT_REFUSALS[scenario]
    server = harness(scenario, mode)
    status, output = s_client(server.port, client_name(scenario, HOSTNAME), ca_file, starttls=starttls_option(mode))
    assert status != 0
    assert f"verify error:num={number}:{text}\n" in output
    error = server.handshake().error
    assert error is not None and alert in error


@pytest.mark.parametrize("scenario", sorted(CURL_EXIT))
def test_curl_on_implicit_smtp(harness: Callable[[str, str], MiniSmtp], ca_file: Path, scenario: str) -> None:
    server = harness(scenario, "implicit")
    status, stderr = curl(server.port, client_name(scenario, HOSTNAME), ca_file)
    assert status == CURL_EXIT[scenario], stderr
    if scenario in CERT_REFUSALS and CERT_REFUSALS[scenario][0] == 62:
        # curl checks the name itself, after OpenSSL's chain verification succeeded
        name = client_name(scenario, HOSTNAME)
        assert f"curl: (60) SSL: no alternative certificate subject name matches target host name '{name}'" in stderr
    elif scenario in CERT_REFUSALS:
        assert f"curl: (60) SSL certificate problem: {CERT_REFUSALS[scenario][1]}" in stderr


def python_session(port: int, mode: str, context: ssl.SSLContext, name: str) -> tuple[int, bytes]:
    """EHLO then NOOP over TLS with smtplib; the NOOP reply."""
    if mode == "implicit":
        client: smtplib.SMTP = smtplib.SMTP_SSL(HOST, port, context=context, timeout=CLIENT_TIMEOUT)
    else:
        client = smtplib.SMTP(HOST, port, timeout=CLIENT_TIMEOUT)
        client.starttls(context=context)
    with client:
        client.ehlo(name)
        return client.noop()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", sorted(CERTIFICATE_SCENARIOS))
def test_unverified_python_client_completes(harness: Callable[[str, str], MiniSmtp], scenario: str,
                                            mode: str) -> None:
    server = harness(scenario, mode)
    unverified = ssl._create_unverified_context()
    assert python_session(server.port, mode, unverified, "client.test") == (250, b"2.0.0 OK")
    assert server.handshake() == Handshake("TLSv1.3", "TLS_AES_256_GCM_SHA384")


@pytest.mark.parametrize("scenario", sorted(CERT_REFUSALS))
def test_verifying_python_client_refuses(harness: Callable[[str, str], MiniSmtp], ca_file: Path,
                                         scenario: str) -> None:
    server = harness(scenario, "implicit")
    context = ssl.create_default_context(cafile=str(ca_file))
    name = client_name(scenario, HOSTNAME)
    with socket.create_connection((HOST, server.port), timeout=CLIENT_TIMEOUT) as raw, \
            pytest.raises(ssl.SSLCertVerificationError) as refused:
        context.wrap_socket(raw, server_hostname=name)
    number, text, _ = CERT_REFUSALS[scenario]
    assert refused.value.verify_code == number
    # Python checks the name itself and words that failure its own way.
    expected = f"Hostname mismatch, certificate is not valid for '{name}'." if number == 62 else text
    assert refused.value.verify_message == expected


def test_cn_only_is_accepted_by_openssl_and_python(harness: Callable[[str, str], MiniSmtp], ca_file: Path) -> None:
    """OpenSSL's host name check falls back to the CN when there is no DNS SAN (RFC 6125 6.4.4),
    and Python's ssl keeps that default (hostname_checks_common_name)."""
    server = harness("cert-cn-only", "implicit")
    status, output = s_client(server.port, HOSTNAME, ca_file)
    assert status == 0, output
    assert "Verify return code: 0 (ok)" in output
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection((HOST, server.port), timeout=CLIENT_TIMEOUT) as raw, \
            context.wrap_socket(raw, server_hostname=HOSTNAME) as tls:
        assert tls.recv(100) == f"220 {HOSTNAME} ESMTP scenario harness\r\n".encode()


# --- protocol versions and cipher suites --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", sorted(OPENSSL_CONNECTS))
def test_openssl_connects(harness: Callable[[str, str], MiniSmtp], ca_file: Path, scenario: str, mode: str) -> None:
    server = harness(scenario, mode)
    status, output = s_client(server.port, HOSTNAME, ca_file, starttls=starttls_option(mode))
    assert status == 0, output
    assert "Verify return code: 0 (ok)" in output
    version, cipher = OPENSSL_CONNECTS[scenario]
    assert negotiated(output) == (version, cipher)
    assert server.handshake() == Handshake(version, cipher)


@pytest.mark.parametrize(("scenario", "other"), [("tls-v1-2-only", "-tls1_3"), ("tls-v1-3-only", "-tls1_2")])
def test_only_one_version_is_offered(harness: Callable[[str, str], MiniSmtp], ca_file: Path, scenario: str,
                                     other: str) -> None:
    server = harness(scenario, "implicit")
    status, output = s_client(server.port, HOSTNAME, ca_file, other)
    assert status != 0
    assert "alert protocol version" in output
    error = server.handshake().error
    assert error is not None and "unsupported protocol" in error


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", sorted(OPENSSL_WEAK_REFUSALS))
def test_openssl_refuses_weak_tls_unless_weakened(harness: Callable[[str, str], MiniSmtp], ca_file: Path,
                                                  scenario: str, mode: str) -> None:
    refusal, server_view, weaken, (version, cipher) = OPENSSL_WEAK_REFUSALS[scenario]
    server = harness(scenario, mode)
    status, output = s_client(server.port, HOSTNAME, ca_file, starttls=starttls_option(mode))
    assert status != 0
    assert refusal in output
    error = server.handshake().error
    assert error is not None and server_view in error

    status, output = s_client(server.port, HOSTNAME, ca_file, *weaken, starttls=starttls_option(mode))
    assert status == 0, output
    assert negotiated(output) == (version, cipher)
    assert server.handshake() == Handshake(version, cipher)


@pytest.mark.parametrize("scenario", ["tls-static-rsa", "tls-cbc-sha1", "tls-null-cipher", "tls-dh1024",
                                      "tls-v1-0", "tls-v1-1"])
def test_python_default_client_refuses_weak_tls(harness: Callable[[str, str], MiniSmtp], ca_file: Path,
                                                scenario: str) -> None:
    """Python's own cipher list has no static RSA and no SHA-1 suites, so it refuses even the two
    that OpenSSL's defaults accept."""
    server = harness(scenario, "implicit")
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection((HOST, server.port), timeout=CLIENT_TIMEOUT) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname=HOSTNAME)
    assert server.handshake().error is not None


# --- choosing a certificate scenario by SNI -----------------------------------------------------


@pytest.fixture(scope="module")
def sni_context(certs_dir: Path, contexts: dict[str, ssl.SSLContext]) -> ssl.SSLContext:
    """A known-good context that switches to a scenario's context by SNI, as a listener would."""
    paths = ensure_certificates(certs_dir, HOSTNAME)
    context = server_context(paths.cert_file, paths.key_file)

    def choose(connection: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        scenario = scenario_for_sni(server_name, HOSTNAME)
        if scenario is not None:
            connection.context = contexts[scenario]

    context.sni_callback = choose  # type: ignore[assignment]
    return context


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scenario", sorted(CERT_REFUSALS))
def test_sni_chooses_the_certificate(sni_context: ssl.SSLContext, ca_file: Path, scenario: str, mode: str) -> None:
    server = MiniSmtp(sni_context, implicit=mode == "implicit")
    try:
        name = badcerts.sni_name(scenario, HOSTNAME)
        number, text, alert = CERT_REFUSALS[scenario]
        status, output = s_client(server.port, name, ca_file, starttls=starttls_option(mode))
        assert status != 0
        assert f"verify error:num={number}:{text}\n" in output
        error = server.handshake().error
        assert error is not None and alert in error
        # Without a scenario's name the same listener is known-good.
        status, output = s_client(server.port, HOSTNAME, ca_file, starttls=starttls_option(mode))
        assert status == 0, output
        assert server.handshake() == Handshake("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    finally:
        server.stop()


# --- the certificate cache ----------------------------------------------------------------------


def test_certificates_are_cached_and_remade_when_stale(tmp_path: Path) -> None:
    first = badcerts.scenario_certificate("cert-wrong-host", tmp_path, HOSTNAME)
    assert first == tmp_path / "scenarios" / "cert-wrong-host.pem"
    assert first.stat().st_mode & 0o777 == 0o600
    content = first.read_bytes()
    tls_context_for("cert-wrong-host", tmp_path, HOSTNAME)
    assert first.read_bytes() == content  # reused, not remade

    badcerts.scenario_certificate("cert-wrong-host", tmp_path, "other.example.test")
    remade_for_host = first.read_bytes()
    assert remade_for_host != content

    (tmp_path / "ca.pem").unlink()  # a new project CA: everything under it is remade
    badcerts.scenario_certificate("cert-wrong-host", tmp_path, "other.example.test")
    assert first.read_bytes() != remade_for_host

    first.write_text("garbage")
    tls_context_for("cert-wrong-host", tmp_path, HOSTNAME)
    assert first.read_bytes().startswith(b"# mailmodes: ")


# --- the badssl-for-mail layout -----------------------------------------------------------------

PORT_PLAN = {("smtp", "implicit"): 11000, ("smtp", "starttls-required"): 12000,
             ("imap", "implicit"): 13000, ("imap", "starttls-required"): 14000,
             ("pop3", "implicit"): 15000, ("pop3", "starttls-required"): 16000}


def test_known_bad_toml_follows_the_port_plan() -> None:
    path = REPO / "config" / "known-bad.toml"
    config = load_config(path)
    assert [u.name for u in config.users] == ["alice", "bob"]
    planned = {
        (scenario_id, protocol, mode): base + index
        for index, scenario_id in enumerate(SCENARIOS)
        if SCENARIOS[scenario_id].buildable and SCENARIOS[scenario_id].kind in ("certificate", "tls")
        for (protocol, mode), base in PORT_PLAN.items()
    }
    # Section 2: one port per protocol, the STARTTLS one (implicit-speaks-plaintext: the implicit one).
    for index, scenario_id in enumerate(SCENARIOS):
        if SCENARIOS[scenario_id].kind not in ("certificate", "tls"):
            mode = "implicit" if scenario_id == "implicit-speaks-plaintext" else "starttls-required"
            for protocol in SCENARIOS[scenario_id].protocols:
                planned[(scenario_id, protocol, mode)] = PORT_PLAN[(protocol, mode)] + index
    actual = {(listener.scenario, listener.protocol, str(listener.tls)): listener.port for listener in config.listeners}
    assert actual == planned
    assert all(listener.role == "submission" for listener in config.listeners if listener.protocol == "smtp")
    assert len(tomllib.loads(path.read_text())["listeners"]) == len(planned)

    table = describe(listener_ports(config.listeners))
    assert "cert-expired" in table and "smtp 11000/12000  imap 13000/14000  pop3 15000/16000" in table
    assert "tls-cbc-sha1" in table and "smtp 11018/12018  imap 13018/14018  pop3 15018/16018" in table
    assert "cert-ecdsa-only" in table and "smtp 11046/12046  imap 13046/14046  pop3 15046/16046" in table


def test_known_bad_toml_is_what_the_catalogue_generates() -> None:
    generated = subprocess.run([sys.executable, "-m", "mailmodes", "scenarios", "--known-bad-config"],
                               capture_output=True, check=True, timeout=60).stdout
    committed = (REPO / "config" / "known-bad.toml").read_bytes()
    if committed != generated:
        diff = difflib.unified_diff(committed.decode().splitlines(), generated.decode().splitlines(),
                                    "config/known-bad.toml", "generated", lineterm="")
        pytest.fail(f"config/known-bad.toml is not what the scenario catalogue generates; regenerate it with "
                    f"`{KNOWN_BAD_COMMAND}`:\n" + "\n".join(list(diff)[:40]), pytrace=False)


# The scenario numbers of the port plan as first published (session 1): users' configs and scripts
# name these ports, so a new scenario takes the next number and no existing one moves.
PUBLISHED_NUMBERS = {"cert-expired": 0, "tls-v1-0": 11, "starttls-stripped": 24, "starttls-silence": 29,
                     "chaos": 44, "starttls-dropped": 45, "cert-ecdsa-only": 46, "tls-client-cert-required": 53}


def test_the_port_plan_only_ever_grows() -> None:
    numbers = {scenario_id: index for index, scenario_id in enumerate(SCENARIOS)}
    assert {scenario_id: numbers[scenario_id] for scenario_id in PUBLISHED_NUMBERS} == PUBLISHED_NUMBERS
    assert max(numbers.values()) >= max(PUBLISHED_NUMBERS.values())


def test_describe_lists_everything() -> None:
    table = describe()
    for scenario in SCENARIOS.values():
        assert scenario.id in table
        assert (scenario.correct_client if scenario.buildable else scenario.why_not) in table
    assert "SNI expired.<hostname>" in table
    assert table.index("Not buildable here:") < table.index("tls-sslv3")
    # section 1 is listed together, though its later ids come after section 2 in the catalogue
    assert table.index("cert-revoked") < table.index("STARTTLS and protocol scenarios") < table.index("chaos")


# --- the same against the app, once app.py uses tls_context_for ---------------------------------

LIVE_PROTOCOLS = {
    # protocol -> (s_client -starttls value, what to say before closing)
    "smtp": ("smtp", b"QUIT\r\n"),
    "imap": ("imap", b"a LOGOUT\r\n"),
    "pop3": ("pop3", b"QUIT\r\n"),
}


@pytest.mark.parametrize("scenario", [*SECTION_1, *VALID_ADDED, "cert-sha1-intermediate", "cert-revoked"])
def test_app_serves_the_scenario(serve: Callable[..., ThreadedMailServer], ca_file: Path, scenario: str) -> None:
    listeners = [
        {"name": f"{protocol}-{mode}", "protocol": protocol, "tls": mode, "scenario": scenario}
        for protocol in LIVE_PROTOCOLS for mode in ("implicit", "starttls-required")
    ]
    server = serve(*listeners)
    assert set(server.ports) == {listener["name"] for listener in listeners}
    for protocol, (starttls, goodbye) in LIVE_PROTOCOLS.items():
        for mode in ("implicit", "starttls-required"):
            port = server.port(f"{protocol}-{mode}")
            how = starttls if mode != "implicit" else None
            status, output = s_client(port, client_name(scenario, HOSTNAME), ca_file, starttls=how, stdin=goodbye)
            where = f"{scenario} {protocol} {mode}"
            if scenario in CERT_REFUSALS:
                number, text, _ = CERT_REFUSALS[scenario]
                assert status != 0, where
                assert f"verify error:num={number}:{text}\n" in output, where
            elif scenario in OPENSSL_WEAK_REFUSALS:
                assert status != 0, where
                assert "New, (NONE), Cipher is (NONE)" in output, where
                if scenario != "tls-null-cipher":
                    # The client's own decision. For NULL it is the server's ("no shared
                    # cipher"), whose alert asyncio's start_tls does not flush before closing.
                    assert OPENSSL_WEAK_REFUSALS[scenario][0] in output, where
            else:
                assert status == 0, where + output
                assert negotiated(output) == OPENSSL_CONNECTS[scenario], where


def test_dh1024_parameters_are_the_second_oakley_group(tmp_path: Path) -> None:
    path = badcerts.dh1024_params(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL refuses 1024-bit DH at its default level
    context.load_dh_params(str(path))
    text = run_client(["openssl", "dhparam", "-in", str(path), "-noout", "-text"]).stdout
    assert "DH Parameters: (1024 bit)" in text and "G:    2 (0x2)" in text
    shown_prime = "".join(line.strip() for line in text.split("P:", 1)[1].split("G:", 1)[0].splitlines())
    assert int(shown_prime.replace(":", ""), 16) == badcerts.OAKLEY_GROUP_2


# --- the rest of the badssl catalogue (issue 20) ------------------------------------------------

IDN_NAME = f"bücher.{HOSTNAME}"
IDN_A_LABEL_NAME = f"xn--bcher-kva.{HOSTNAME}"


def verified_peer(port: int, ca_file: Path, name: str = HOSTNAME,
                  context: ssl.SSLContext | None = None) -> tuple[dict[str, object], bytes | None, bytes]:
    """What a strict Python client (the project CA, host name checked) sees: the verified
    certificate, its DER form, and the greeting."""
    context = context or ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection((HOST, port), timeout=CLIENT_TIMEOUT) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        return tls.getpeercert(), tls.getpeercert(binary_form=True), tls.recv(100)


def test_ecdsa_only(harness: Callable[[str, str], MiniSmtp], ca_file: Path) -> None:
    server = harness("cert-ecdsa-only", "implicit")
    _, der, greeting = verified_peer(server.port, ca_file)
    assert greeting.startswith(b"220 ")
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    assert der is not None
    assert isinstance(x509.load_der_x509_certificate(der).public_key(), ec.EllipticCurvePublicKey)
    status, output = s_client(server.port, HOSTNAME, ca_file, "-tls1_2")
    assert status == 0 and negotiated(output) == ("TLSv1.2", "ECDHE-ECDSA-AES256-GCM-SHA384"), output
    assert [server.handshake().error for _ in range(2)] == [None, None]
    # A client that can only check RSA signatures finds nothing to agree on.
    status, output = s_client(server.port, HOSTNAME, ca_file, "-tls1_2", "-cipher", "aRSA")
    assert status != 0 and "Cipher is (NONE)" in output
    error = server.handshake().error
    assert error is not None and "no shared cipher" in error


def test_rsa8192(harness: Callable[[str, str], MiniSmtp], ca_file: Path) -> None:
    server = harness("cert-rsa8192", "implicit")
    status, output = s_client(server.port, HOSTNAME, ca_file)
    assert status == 0 and "Server public key is 8192 bit" in output, output
    assert verified_peer(server.port, ca_file)[2].startswith(b"220 ")


def test_1000_sans(harness: Callable[[str, str], MiniSmtp], ca_file: Path) -> None:
    server = harness("cert-1000-sans", "implicit")
    certificate, _, _ = verified_peer(server.port, ca_file, "localhost")
    names = certificate["subjectAltName"]
    assert isinstance(names, tuple) and len(names) == 1000
    assert names[0] == ("DNS", f"san-0000.{HOSTNAME}") and ("DNS", "localhost") in names[-6:]
    # ... and no name the leaf does not list
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        verified_peer(server.port, ca_file, f"san-1000.{HOSTNAME}")


def test_sha1_intermediate_is_the_only_flaw(harness: Callable[[str, str], MiniSmtp], ca_file: Path) -> None:
    """The weak signature is the intermediate's: OpenSSL names depth 1, and a client that lowers its
    security level to 0 (SHA-1 allowed) verifies the rest of the chain."""
    server = harness("cert-sha1-intermediate", "implicit")
    status, output = s_client(server.port, HOSTNAME, ca_file)
    assert status != 0
    assert "depth=1 CN = mailmodes SHA-1 intermediate CA\nverify error:num=68:" in output, output
    status, output = s_client(server.port, HOSTNAME, ca_file, "-cipher", "DEFAULT:@SECLEVEL=0")
    assert status == 0 and "Verify return code: 0 (ok)" in output, output


def test_no_subject(harness: Callable[[str, str], MiniSmtp], ca_file: Path) -> None:
    server = harness("cert-no-subject", "implicit")
    certificate, der, greeting = verified_peer(server.port, ca_file)
    assert greeting.startswith(b"220 ") and certificate["subject"] == ()
    from cryptography import x509
    assert der is not None
    parsed = x509.load_der_x509_certificate(der)
    assert len(parsed.subject) == 0
    assert parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical
    status, output = s_client(server.port, HOSTNAME, ca_file)
    assert status == 0 and "Verify return code: 0 (ok)" in output, output


def test_idn(harness: Callable[[str, str], MiniSmtp], ca_file: Path) -> None:
    """Python's ssl sends and checks the A-label of bücher.<hostname> (its idna codec), so does curl
    (libidn2); a client that compares the name as typed (UTF-8) finds no match."""
    server = harness("cert-idn", "implicit")
    assert client_name("cert-idn", HOSTNAME) == IDN_NAME
    certificate, _, greeting = verified_peer(server.port, ca_file, IDN_NAME)
    assert greeting.startswith(b"220 ") and certificate["subjectAltName"] == (("DNS", IDN_A_LABEL_NAME),)
    status, output = s_client(server.port, IDN_A_LABEL_NAME, ca_file)
    assert status == 0 and "Verify return code: 0 (ok)" in output, output
    status, output = s_client(server.port, IDN_NAME, ca_file)
    assert status != 0 and "verify error:num=62:hostname mismatch" in output
    # curl converts the URL's host (libidn2); --resolve takes the name as given, the A-label.
    result = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "--resolve",
                         f"{IDN_A_LABEL_NAME}:{server.port}:{HOST}", f"smtps://{IDN_NAME}:{server.port}"])
    assert result.returncode == 0, result.stderr
    # The known-good name is not on it: the scenario is about the IDN only.
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        verified_peer(server.port, ca_file, HOSTNAME)


def test_idn_is_chosen_by_its_a_label(sni_context: ssl.SSLContext, ca_file: Path) -> None:
    server = MiniSmtp(sni_context, implicit=True)
    try:
        certificate, _, _ = verified_peer(server.port, ca_file, IDN_NAME)
        assert certificate["subjectAltName"] == (("DNS", IDN_A_LABEL_NAME),)
    finally:
        server.stop()


def curl_cert_status(port: int, ca_file: Path, *, starttls: bool = False) -> tuple[int, str]:
    scheme = "smtp" if starttls else "smtps"
    result = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "--cert-status",
                         *(["--ssl-reqd"] if starttls else []), "--resolve", f"{HOSTNAME}:{port}:{HOST}",
                         f"{scheme}://{HOSTNAME}:{port}"])
    return result.returncode, result.stderr


@pytest.mark.parametrize("mode", MODES)
def test_revoked_is_stapled(harness: Callable[[str, str], MiniSmtp], ca_file: Path, mode: str) -> None:
    """openssl s_client -status shows the stapled response (and goes on: it never enforces it);
    curl --cert-status refuses (91); curl without it never asks, and connects (CURL_EXIT)."""
    server = harness("cert-revoked", mode)
    status, output = s_client(server.port, HOSTNAME, ca_file, "-status", starttls=starttls_option(mode))
    assert status == 0, output
    assert "OCSP Response Status: successful (0x0)" in output and "Cert Status: revoked" in output
    assert "Revocation Reason: keyCompromise (0x1)" in output
    status, _ = s_client(server.port, HOSTNAME, ca_file, starttls=starttls_option(mode))
    assert status == 0
    status, stderr = curl_cert_status(server.port, ca_file, starttls=mode == "starttls")
    assert status == 91 and "SSL certificate revocation reason: keyCompromise (1)" in stderr, stderr


def test_known_good_staples_nothing(harness: Callable[[str, str], MiniSmtp], ca_file: Path) -> None:
    server = harness("tls-v1-3-only", "implicit")
    status, output = s_client(server.port, HOSTNAME, ca_file, "-status")
    assert status == 0 and "OCSP response: no response sent" in output
    assert curl_cert_status(server.port, ca_file)[0] == 91  # curl: "No OCSP response received"


def test_revoked_by_sni(sni_context: ssl.SSLContext, ca_file: Path) -> None:
    server = MiniSmtp(sni_context, implicit=True)
    try:
        status, output = s_client(server.port, badcerts.sni_name("cert-revoked", HOSTNAME), ca_file, "-status",
                                  "-verify_hostname", HOSTNAME)
        assert status == 0 and "Cert Status: revoked" in output, output
    finally:
        server.stop()


@pytest.mark.parametrize("mode", MODES)
def test_client_certificate_required(harness: Callable[[str, str], MiniSmtp], certs_dir: Path, ca_file: Path,
                                     mode: str) -> None:
    server = harness("tls-client-cert-required", mode)
    # TLS 1.3: the refusal comes after the client's side of the handshake is done; -ign_eof keeps
    # s_client reading until it arrives.
    status, output = s_client(server.port, HOSTNAME, ca_file, "-ign_eof", starttls=starttls_option(mode))
    assert status != 0 and "alert certificate required" in output, output
    error = server.handshake().error
    assert error is not None and "peer did not return a certificate" in error
    bundle = badcerts.client_certificate(certs_dir, HOSTNAME)
    status, output = s_client(server.port, HOSTNAME, ca_file, "-cert", str(bundle), "-key", str(bundle),
                              starttls=starttls_option(mode))
    assert status == 0 and "Verify return code: 0 (ok)" in output, output
    assert server.handshake().error is None


def test_client_certificate_required_python_and_curl(harness: Callable[[str, str], MiniSmtp], certs_dir: Path,
                                                     ca_file: Path) -> None:
    server = harness("tls-client-cert-required", "implicit")
    # TLS 1.3: the client's side of the handshake is done before the server has judged it, so the
    # refusal comes with the first read.
    with pytest.raises(ssl.SSLError, match="TLSV13_ALERT_CERTIFICATE_REQUIRED"):
        verified_peer(server.port, ca_file)
    context = ssl.create_default_context(cafile=str(ca_file))
    bundle = badcerts.client_certificate(certs_dir, HOSTNAME)
    context.load_cert_chain(bundle)
    assert verified_peer(server.port, ca_file, context=context)[2].startswith(b"220 ")
    # A certificate the project CA did not issue is refused like none.
    other = ssl.create_default_context(cafile=str(ca_file))
    other.load_cert_chain(badcerts.scenario_certificate("cert-self-signed", certs_dir, HOSTNAME))
    with pytest.raises(ssl.SSLError, match="ALERT_UNKNOWN_CA|TLSV1_ALERT_UNKNOWN_CA"):
        verified_peer(server.port, ca_file, context=other)
    result = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "--cert", str(bundle),
                         "--key", str(bundle), "--resolve", f"{HOSTNAME}:{server.port}:{HOST}",
                         f"smtps://{HOSTNAME}:{server.port}"])
    assert result.returncode == 0, result.stderr
    result = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file),
                         "--resolve", f"{HOSTNAME}:{server.port}:{HOST}", f"smtps://{HOSTNAME}:{server.port}"])
    # Refused: curl reads the alert, or (the harness closes right after sending it) finds the
    # connection gone first: "getpeername() failed", "Connection reset by peer".
    assert result.returncode in (35, 56), result.stderr


def test_client_certificates_are_cached(tmp_path: Path) -> None:
    first = badcerts.client_certificate(tmp_path, HOSTNAME)
    assert first == tmp_path / "clients" / "client.pem" and first.stat().st_mode & 0o777 == 0o600
    content = first.read_bytes()
    assert badcerts.client_certificate(tmp_path, HOSTNAME).read_bytes() == content
    assert badcerts.client_certificate(tmp_path, HOSTNAME, "other") != first


@pytest.mark.parametrize("scenario", ["cert-idn", "tls-client-cert-required"])
def test_app_serves_the_added_scenario(serve: Callable[..., ThreadedMailServer], certs_dir: Path, ca_file: Path,
                                       scenario: str) -> None:
    listeners = [
        {"name": f"{protocol}-{mode}", "protocol": protocol, "tls": mode, "scenario": scenario}
        for protocol in LIVE_PROTOCOLS for mode in ("implicit", "starttls-required")
    ]
    server = serve(*listeners)
    bundle = badcerts.client_certificate(certs_dir, HOSTNAME)
    for protocol, (starttls, goodbye) in LIVE_PROTOCOLS.items():
        for mode in ("implicit", "starttls-required"):
            port = server.port(f"{protocol}-{mode}")
            how = starttls if mode != "implicit" else None
            where = f"{scenario} {protocol} {mode}"
            if scenario == "cert-idn":
                status, output = s_client(port, IDN_A_LABEL_NAME, ca_file, starttls=how, stdin=goodbye)
                assert status == 0 and "Verify return code: 0 (ok)" in output, where + output
            else:
                status, output = s_client(port, HOSTNAME, ca_file, "-ign_eof", starttls=how, stdin=goodbye)
                # The server refuses, but asyncio closes a failed handshake without flushing the
                # alert (as for tls-null-cipher above): the client sees the connection end, or reset
                # (errno 104) when its own bytes arrive after the close.
                assert status != 0, where + output
                assert any(end in output for end in ("alert certificate required", "unexpected eof while reading",
                                                     "read:errno=104")), where + output
                status, output = s_client(port, HOSTNAME, ca_file, "-cert", str(bundle), "-key", str(bundle),
                                          starttls=how, stdin=goodbye)
                assert status == 0 and "Verify return code: 0 (ok)" in output, where + output
