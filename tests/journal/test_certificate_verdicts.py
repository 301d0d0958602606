"""Certificate and TLS scenarios through the whole server: what the journal says about the client."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.scenarios.badcerts import sni_name
from mailmodes.scenarios.catalogue import SCENARIOS, client_name
from support import HOSTNAME, one_session, run_client, verdict_codes

HOST = "127.0.0.1"
BAD_CERTIFICATES = sorted(s.id for s in SCENARIOS.values() if s.bad_certificate and s.buildable)
# what openssl s_client refuses: not a revoked certificate, whose stapled status it never enforces
REFUSED_BY_OPENSSL = [scenario for scenario in BAD_CERTIFICATES if scenario != "cert-revoked"]


def listener(scenario: str | None, tls: str = "implicit", protocol: str = "smtp") -> dict[str, object]:
    return {"name": "l", "protocol": protocol, "tls": tls, **({"scenario": scenario} if scenario else {})}


def openssl(port: int, ca_file: Path, name: str, *extra: str) -> int:
    return run_client(["openssl", "s_client", "-connect", f"{HOST}:{port}", "-servername", name,
                       "-verify_hostname", name, "-CAfile", str(ca_file), "-verify_return_error", *extra],
                      stdin=b"").returncode


@pytest.mark.parametrize("scenario", REFUSED_BY_OPENSSL)
def test_verifying_client_is_recorded_as_rejecting(serve: Callable[..., ThreadedMailServer], ca_file: Path,
                                                   scenario: str) -> None:
    server = serve(listener(scenario))
    assert openssl(server.port("l"), ca_file, client_name(scenario, HOSTNAME)) != 0
    record = one_session(server)
    assert "rejected-certificate" in verdict_codes(record), record.tls_failure
    assert record.tls_alert and record.tls_version is None


@pytest.mark.parametrize(("scenario", "alert"), [("cert-expired", "certificate_expired"),
                                                 ("cert-untrusted-root", "unknown_ca"),
                                                 ("cert-wrong-host", "bad_certificate")])
def test_the_alert_is_named(serve: Callable[..., ThreadedMailServer], ca_file: Path, scenario: str,
                            alert: str) -> None:
    server = serve(listener(scenario))
    openssl(server.port("l"), ca_file, client_name(scenario, HOSTNAME))
    assert one_session(server).tls_alert == alert


@pytest.mark.parametrize("scenario", REFUSED_BY_OPENSSL)
def test_client_that_verifies_nothing_accepts_the_bad_certificate(serve: Callable[..., ThreadedMailServer],
                                                                   scenario: str) -> None:
    server = serve(listener(scenario))
    context = ssl._create_unverified_context()
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # the weak-key scenarios need it on the client too
    with smtplib.SMTP_SSL(HOST, server.port("l"), context=context, timeout=10) as client:
        assert client.noop()[0] == 250
    record = one_session(server)
    assert "accepted-bad-certificate" in verdict_codes(record)
    assert record.scenario == scenario


def test_starttls_with_a_bad_certificate(serve: Callable[..., ThreadedMailServer], ca_file: Path,
                                         tmp_path: Path) -> None:
    server = serve(listener("cert-expired", tls="starttls-required"))
    result = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "--ssl-reqd",
                         "-u", "alice:alice-password", f"smtp://{HOST}:{server.port('l')}"])
    assert result.returncode == 60 and "expired" in result.stderr
    record = one_session(server)
    assert "rejected-certificate" in verdict_codes(record)
    assert record.credentials == []
    # swaks without --tls-verify checks nothing: it goes on, and is told so.
    swaks = run_client(["swaks", "--server", HOST, "--port", str(server.port("l")), "--tls", "--quit-after", "EHLO",
                        "--timeout", "10"])
    assert swaks.returncode == 0, swaks.stdout
    assert "accepted-bad-certificate" in verdict_codes(server.journal.wait_for(2)[-1])


def test_certificate_scenario_chosen_by_sni(serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    server = serve(listener(None, tls="starttls-required"))
    name = sni_name("cert-expired", HOSTNAME)
    assert openssl(server.port("l"), ca_file, name, "-starttls", "smtp") != 0
    record = one_session(server)
    assert "rejected-certificate" in verdict_codes(record)
    # A well-named client gets the good certificate on the same port and earns nothing.
    assert openssl(server.port("l"), ca_file, "localhost", "-starttls", "smtp") == 0
    good = server.journal.wait_for(2)[-1]
    assert good.sni == "localhost" and good.scenario is None and good.tls_version


@pytest.mark.parametrize(("protocol", "tls", "starttls"), [
    ("smtp", "starttls-required", ["-starttls", "smtp"]), ("smtp", "implicit", []),
    ("imap", "starttls-required", ["-starttls", "imap"]), ("imap", "implicit", []),
    ("pop3", "starttls-required", ["-starttls", "pop3"]), ("pop3", "implicit", []),
])
def test_a_rejected_sni_scenario_is_recorded_with_its_name(serve: Callable[..., ThreadedMailServer], ca_file: Path,
                                                           protocol: str, tls: str, starttls: list[str]) -> None:
    server = serve(listener(None, tls=tls, protocol=protocol))
    name = sni_name("cert-expired", HOSTNAME)
    assert openssl(server.port("l"), ca_file, name, *starttls) != 0
    record = one_session(server)
    assert (record.sni, record.scenario, record.tls_alert) == (name, "cert-expired", "certificate_expired")
    assert "rejected-certificate" in verdict_codes(record)


def test_sni_scenario_accepted_is_recorded(serve: Callable[..., ThreadedMailServer]) -> None:
    server = serve(listener(None))
    name = sni_name("cert-self-signed", HOSTNAME)
    context = ssl._create_unverified_context()
    with context.wrap_socket(socket.create_connection((HOST, server.port("l")), timeout=10),
                             server_hostname=name) as tls, tls.makefile("rb") as reader:
        assert reader.readline().startswith(b"220 ")
        tls.sendall(b"NOOP\r\n")
        assert reader.readline().startswith(b"250 ")
    record = one_session(server)
    assert (record.sni, record.scenario) == (name, "cert-self-signed")
    assert "accepted-bad-certificate" in verdict_codes(record)


def test_old_tls_version_earns_weak_tls(serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    server = serve(listener("tls-v1-0"))
    assert openssl(server.port("l"), ca_file, "localhost", "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0") == 0
    record = one_session(server)
    assert record.tls_version == "TLSv1"
    assert "weak-tls" in verdict_codes(record)


def test_revoked_certificate_refused_after_the_handshake(serve: Callable[..., ThreadedMailServer],
                                                         ca_file: Path) -> None:
    """curl --cert-status asks for the status (status_request), reads the stapled OCSP response once
    the handshake is done, and leaves: the journal says it rejected the certificate. curl without it
    never asks, so it cannot know: it goes on, and earns only the note revocation-not-checked."""
    server = serve(listener("cert-revoked"))
    port = server.port("l")
    refusing = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "--cert-status",
                           "--resolve", f"{HOSTNAME}:{port}:{HOST}", "-u", "alice:alice-password",
                           f"smtps://{HOSTNAME}:{port}"])
    assert refusing.returncode == 91, refusing.stderr
    record = one_session(server)
    assert record.asked_certificate_status is True
    assert "rejected-certificate" in verdict_codes(record)
    assert record.credentials == []
    going_on = run_client(["curl", "-sS", "--max-time", "10", "--cacert", str(ca_file), "--resolve",
                           f"{HOSTNAME}:{port}:{HOST}", "-u", "alice:alice-password", f"smtps://{HOSTNAME}:{port}"])
    assert going_on.returncode == 0, going_on.stderr
    record = server.journal.wait_for(2)[-1]
    assert record.asked_certificate_status is False
    assert verdict_codes(record) == {"revocation-not-checked"}


def test_a_client_that_asks_for_the_status_and_goes_on_accepted_the_revoked_certificate(
        serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    """openssl s_client -status asks, prints "Cert Status: revoked" and goes on regardless: unlike a
    client that never asked, it saw the revocation."""
    server = serve(listener("cert-revoked"))
    result = run_client(["openssl", "s_client", "-connect", f"{HOST}:{server.port('l')}", "-CAfile", str(ca_file),
                         "-status", "-ign_eof"], stdin=b"EHLO client.test\r\nQUIT\r\n")
    assert result.returncode == 0 and "Cert Status: revoked" in result.stdout, result.stdout
    record = one_session(server)
    assert record.asked_certificate_status is True
    assert "accepted-bad-certificate" in verdict_codes(record)
    assert "revocation-not-checked" not in verdict_codes(record)


def test_msmtp_refuses_the_revoked_certificate(serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    """GnuTLS (msmtp's TLS library) asks for the status and enforces a stapled revocation."""
    server = serve(listener("cert-revoked"))
    result = run_client(["msmtp", "--serverinfo", "--host", HOST, "--port", str(server.port("l")), "--tls=on",
                         "--tls-starttls=off", f"--tls-trust-file={ca_file}", "--domain=client.test"])
    assert result.returncode == 69, result.stdout + result.stderr
    assert "The certificate chain is revoked" in result.stderr
    assert "rejected-certificate" in verdict_codes(one_session(server))
