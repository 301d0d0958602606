"""Issue 16, defect 14: the known-good TLS context follows Mozilla's "intermediate" profile
(ssl-config.mozilla.org): TLS 1.2 and 1.3, ECDHE with AEAD suites only, X25519/P-256/P-384, a
certificate of at most 366 days. Probed with openssl s_client, one setting at a time."""

from __future__ import annotations

import datetime as dt
import ssl
import subprocess
from collections.abc import Callable

import pytest
from cryptography import x509

from mailmodes.app import ThreadedMailServer
from support import require_tool

HOST = "127.0.0.1"


def handshake(port: int, *options: str) -> subprocess.CompletedProcess[str]:
    """openssl s_client with `options`; returncode 0 when the handshake completed."""
    return subprocess.run([require_tool("openssl"), "s_client", "-connect", f"{HOST}:{port}", "-brief", *options],
                          input="", capture_output=True, text=True, timeout=20)


@pytest.fixture
def server(serve: Callable[..., ThreadedMailServer]) -> ThreadedMailServer:
    return serve({"name": "imaps", "protocol": "imap", "tls": "implicit"},
                 {"name": "submission", "protocol": "smtp", "tls": "starttls-required"})


@pytest.mark.parametrize("cipher", ["ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA384", "ECDHE-RSA-AES128-SHA",
                                    "AES128-GCM-SHA256", "DHE-RSA-AES128-SHA256"])
def test_tls12_suites_outside_the_profile_are_refused(server: ThreadedMailServer, cipher: str) -> None:
    assert handshake(server.port("imaps"), "-tls1_2", "-cipher", cipher).returncode != 0


@pytest.mark.parametrize("cipher", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                                    "ECDHE-RSA-CHACHA20-POLY1305"])
def test_tls12_suites_of_the_profile_work(server: ThreadedMailServer, cipher: str) -> None:
    result = handshake(server.port("imaps"), "-tls1_2", "-cipher", cipher)
    assert result.returncode == 0, result.stderr
    assert f"Ciphersuite: {cipher}" in result.stderr


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("group", ["X448", "secp521r1", "ffdhe2048"])
def test_groups_outside_the_profile_are_refused(server: ThreadedMailServer, version: str, group: str) -> None:
    assert handshake(server.port("imaps"), version, "-groups", group).returncode != 0


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("group", ["X25519", "P-256", "P-384"])
def test_groups_of_the_profile_work(server: ThreadedMailServer, version: str, group: str) -> None:
    result = handshake(server.port("imaps"), version, "-groups", group)
    assert result.returncode == 0, result.stderr


def test_starttls_gets_the_same_profile(server: ThreadedMailServer) -> None:
    port = server.port("submission")
    assert handshake(port, "-starttls", "smtp", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256").returncode != 0
    assert handshake(port, "-starttls", "smtp", "-groups", "X448").returncode != 0
    assert handshake(port, "-starttls", "smtp", "-groups", "X25519").returncode == 0


def test_the_certificate_lives_at_most_366_days(server: ThreadedMailServer) -> None:
    pem = ssl.get_server_certificate((HOST, server.port("imaps")))
    certificate = x509.load_pem_x509_certificate(pem.encode())
    lifespan = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifespan <= dt.timedelta(days=366)


def test_a_weak_scenario_keeps_its_weak_suites(serve: Callable[..., ThreadedMailServer]) -> None:
    """The deliberately weak contexts (tls/contexts.py) are not the known-good one."""
    server = serve({"name": "cbc", "protocol": "imap", "tls": "implicit", "scenario": "tls-cbc-sha1"})
    result = handshake(server.port("cbc"), "-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA:@SECLEVEL=0")
    assert result.returncode == 0, result.stderr
