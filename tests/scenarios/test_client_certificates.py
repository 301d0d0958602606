"""Issue 20, client certificates: a listener's `client_certificate = "require" | "request"`, client
certificates from the test CA (`mailmodes certs --client NAME`, `--bad` for one from an untrusted
CA), SASL EXTERNAL, and the journal naming the certificate the client showed (or none). Clients:
openssl s_client -cert, and Python's ssl (imaplib, smtplib)."""

from __future__ import annotations

import imaplib
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.scenarios.badcerts import bad_client_certificate, client_certificate
from support import CLIENT_TIMEOUT, HOSTNAME, one_session, run_client

HOST = "127.0.0.1"
MECHANISMS = ["PLAIN", "EXTERNAL"]


def listener(protocol: str, tls: str, mode: str, **options: Any) -> dict[str, Any]:
    return {"name": "l", "protocol": protocol, "tls": tls, "client_certificate": mode,
            "sasl_mechanisms": MECHANISMS, **options}


def context_with(ca_file: Path, certificate: Path | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if certificate is not None:
        context.load_cert_chain(certificate)
    return context


def _certs_command(certs_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailmodes", "certs", *args], capture_output=True, text=True,
                          timeout=60, cwd=certs_dir.parent,
                          env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "server"),
                               "PATH": "/usr/bin:/bin", "MAILMODES_CERTS_DIR": str(certs_dir),
                               "MAILMODES_HOSTNAME": HOSTNAME})


def test_the_cli_makes_good_and_bad_client_certificates(certs_dir: Path) -> None:
    good = _certs_command(certs_dir, "--client", "carol", "--client", "dave")
    assert good.returncode == 0, good.stderr
    assert f"{certs_dir}/clients/carol.pem (key and certificate) for CN=carol, from the test CA" in good.stdout
    assert (certs_dir / "clients" / "dave.pem").exists()
    bad = _certs_command(certs_dir, "--client", "carol", "--bad")
    assert "carol-untrusted.pem" in bad.stdout and "from an untrusted CA" in bad.stdout
    refused = _certs_command(certs_dir, "--client", "../x")
    assert refused.returncode == 2 and "a plain name" in refused.stderr


def test_python_imap_external_with_a_certificate(serve: Callable[..., ThreadedMailServer], certs_dir: Path,
                                                 ca_file: Path) -> None:
    server = serve(listener("imap", "implicit", "request"))
    alice = client_certificate(certs_dir, HOSTNAME, "alice")
    with imaplib.IMAP4_SSL(HOST, server.port("l"), ssl_context=context_with(ca_file, alice),
                           timeout=CLIENT_TIMEOUT) as client:
        assert "AUTH=EXTERNAL" in client.capabilities
        assert client.authenticate("EXTERNAL", lambda _: b"")[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
    record = one_session(server)
    assert record.client_certificate == "CN=alice"
    assert record.user == "alice" and record.logins == [("AUTHENTICATE EXTERNAL", "alice", True, True)]
    assert any("client certificate CN=alice" in line.text for line in record.transcript)
    assert record.to_json()["client_certificate"] == "CN=alice"


def test_request_without_a_certificate_connects_but_external_fails(serve: Callable[..., ThreadedMailServer],
                                                                   ca_file: Path) -> None:
    server = serve(listener("imap", "implicit", "request"))
    with imaplib.IMAP4_SSL(HOST, server.port("l"), ssl_context=context_with(ca_file, None),
                           timeout=CLIENT_TIMEOUT) as client:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.authenticate("EXTERNAL", lambda _: b"")
        assert client.login("bob", "bob-password")[0] == "OK"
    record = one_session(server)
    assert record.client_certificate is None and record.user == "bob"


def test_external_for_another_user_is_refused(serve: Callable[..., ThreadedMailServer], certs_dir: Path,
                                              ca_file: Path) -> None:
    server = serve(listener("smtp", "starttls-required", "request"))
    alice = client_certificate(certs_dir, HOSTNAME, "alice")
    with smtplib.SMTP(HOST, server.port("l"), timeout=CLIENT_TIMEOUT) as client:
        client.ehlo()
        assert "EXTERNAL" not in client.esmtp_features.get("auth", "")  # never in the clear
        client.starttls(context=context_with(ca_file, alice))
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["EXTERNAL", "PLAIN"]
        assert client.docmd("AUTH EXTERNAL Ym9i")[0] == 535  # authzid "bob": not the certificate's
        assert client.docmd("AUTH EXTERNAL =") == (235, b"2.7.0 Authentication successful")
    assert one_session(server).client_certificate == "CN=alice"


def test_require_without_a_certificate_has_no_handshake(serve: Callable[..., ThreadedMailServer],
                                                        ca_file: Path) -> None:
    server = serve(listener("imap", "implicit", "require"))
    with pytest.raises((ssl.SSLError, ConnectionError, imaplib.IMAP4.abort, OSError)):
        with imaplib.IMAP4_SSL(HOST, server.port("l"), ssl_context=context_with(ca_file, None),
                               timeout=CLIENT_TIMEOUT) as client:
            client.noop()
    record = one_session(server)
    assert record.client_certificate is None and record.user is None and record.tls_version is None


def s_client(port: int, ca_file: Path, certificate: Path | None, starttls: str | None, stdin: bytes) -> Any:
    args = ["openssl", "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(ca_file), "-verify_return_error",
            "-crlf", "-ign_eof", "-quiet"]
    if certificate is not None:
        args += ["-cert", str(certificate), "-key", str(certificate)]
    if starttls:
        args += ["-starttls", starttls]
    return run_client(args, stdin=stdin)


def test_openssl_s_client_with_a_certificate_and_external(serve: Callable[..., ThreadedMailServer], certs_dir: Path,
                                                          ca_file: Path) -> None:
    server = serve(listener("smtp", "starttls-required", "require"))
    bob = client_certificate(certs_dir, HOSTNAME, "bob")
    result = s_client(server.port("l"), ca_file, bob, "smtp", b"EHLO client.test\nAUTH EXTERNAL =\nQUIT\n")
    assert "250-AUTH EXTERNAL PLAIN" in result.stdout, result.stdout + result.stderr
    assert "235 2.7.0 Authentication successful" in result.stdout
    record = one_session(server)
    assert record.client_certificate == "CN=bob" and record.user == "bob"


def test_openssl_s_client_without_or_with_a_bad_certificate(serve: Callable[..., ThreadedMailServer],
                                                            certs_dir: Path, ca_file: Path) -> None:
    server = serve(listener("imap", "implicit", "request"))
    plain = s_client(server.port("l"), ca_file, None, None, b"a1 AUTHENTICATE EXTERNAL =\na2 LOGOUT\n")
    assert "a1 NO [AUTHENTICATIONFAILED]" in plain.stdout, plain.stdout + plain.stderr
    bad = bad_client_certificate(certs_dir, HOSTNAME, "alice")
    refused = s_client(server.port("l"), ca_file, bad, None, b"a1 AUTHENTICATE EXTERNAL =\na2 LOGOUT\n")
    assert "a1 OK" not in refused.stdout
    assert "unknown ca" in refused.stderr.lower() or refused.returncode != 0, refused.stderr
    first, second = sorted(server.journal.wait_for(2), key=lambda record: record.id)
    assert first.client_certificate is None and first.tls_version is not None
    assert second.client_certificate is None and second.user is None and second.tls_version is None
