"""Issue 20, item 5: `tls_profile` per listener, after Mozilla's server-side TLS guidelines 5.7
(old / intermediate / modern). What each profile really offers, probed with openssl s_client one
version, suite and group at a time, on implicit TLS and STARTTLS listeners of the real app."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.config import ConfigError
from support import make_config, require_tool

HOST = "127.0.0.1"
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
INTERMEDIATE_TLS12 = ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305")
# What "old" adds for an RSA certificate (its DHE suites need DH parameters, not loaded; DES-CBC3-SHA
# is not in Debian's OpenSSL 3).
OLD_ONLY_TLS12 = ("ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA384", "ECDHE-RSA-AES256-SHA",
                  "AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-SHA256", "AES256-SHA256", "AES128-SHA",
                  "AES256-SHA")
PROFILE_GROUPS = ("X25519", "P-256", "P-384")
OTHER_GROUPS = ("X448", "P-521", "ffdhe2048", "ffdhe3072")


def handshake(port: int, *options: str) -> subprocess.CompletedProcess[str]:
    """openssl s_client -brief with `options`; returncode 0 when the handshake completed."""
    return subprocess.run([require_tool("openssl"), "s_client", "-connect", f"{HOST}:{port}", "-brief", *options],
                          input="", capture_output=True, text=True, timeout=20)


def offered(port: int, *options: str) -> bool:
    return handshake(port, *options).returncode == 0


@pytest.fixture(scope="module")
def server(certs_dir: Path) -> Iterator[ThreadedMailServer]:
    listeners = tuple(
        {"name": f"{profile}-{mode}", "protocol": "smtp", "tls": mode, "tls_profile": profile}
        for profile in ("old", "intermediate", "modern") for mode in ("implicit", "starttls-required")
    ) + ({"name": "default", "protocol": "imap", "tls": "implicit"},)
    with ThreadedMailServer(make_config(certs_dir, listeners)) as started:
        yield started


def all_tls12_suites() -> list[str]:
    result = subprocess.run([require_tool("openssl"), "ciphers", "-tls1_2", "ALL:@SECLEVEL=0"],
                            capture_output=True, text=True, check=True)
    return [suite for suite in result.stdout.strip().split(":") if not suite.startswith("TLS_")]


def tls12_suites_offered(port: int, *starttls: str) -> set[str]:
    return {suite for suite in all_tls12_suites()
            if offered(port, *starttls, "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0")}


def test_the_default_is_intermediate_exactly_as_offered(server: ThreadedMailServer) -> None:
    """The known-good default (no tls_profile): every TLS 1.2 suite OpenSSL knows, tried one by one."""
    port = server.port("default")
    assert tls12_suites_offered(port) == set(INTERMEDIATE_TLS12)
    for suite in TLS13_SUITES:
        assert offered(port, "-tls1_3", "-ciphersuites", suite), suite
    assert not offered(port, "-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256")
    for version in ("-tls1_2", "-tls1_3"):
        for group in PROFILE_GROUPS:
            assert offered(port, version, "-groups", group), (version, group)
        for group in OTHER_GROUPS:
            assert not offered(port, version, "-groups", group), (version, group)
    for old in ("-tls1", "-tls1_1"):
        assert not offered(port, old, "-cipher", "DEFAULT:@SECLEVEL=0")


@pytest.mark.parametrize("mode", ["implicit", "starttls-required"])
def test_intermediate_named_is_the_default(server: ThreadedMailServer, mode: str) -> None:
    port = server.port(f"intermediate-{mode}")
    starttls = ("-starttls", "smtp") if mode != "implicit" else ()
    assert offered(port, *starttls, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert not offered(port, *starttls, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256")
    assert not offered(port, *starttls, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert offered(port, *starttls, "-tls1_3")


@pytest.mark.parametrize("mode", ["implicit", "starttls-required"])
def test_modern_is_tls13_only(server: ThreadedMailServer, mode: str) -> None:
    port = server.port(f"modern-{mode}")
    starttls = ("-starttls", "smtp") if mode != "implicit" else ()
    result = handshake(port, *starttls)
    assert result.returncode == 0 and "Protocol version: TLSv1.3" in result.stderr, result.stderr
    for suite in TLS13_SUITES:
        assert offered(port, *starttls, "-ciphersuites", suite), suite
    assert not offered(port, *starttls, "-tls1_2")
    for group in PROFILE_GROUPS:
        assert offered(port, *starttls, "-groups", group), group
    for group in OTHER_GROUPS:
        assert not offered(port, *starttls, "-groups", group), group


def test_old_offers_tls1_to_1_3_and_its_suites(server: ThreadedMailServer) -> None:
    port = server.port("old-implicit")
    assert tls12_suites_offered(port) == set(INTERMEDIATE_TLS12) | set(OLD_ONLY_TLS12)
    # OpenSSL 3 clients need @SECLEVEL=0 for TLS 1.0/1.1 (their MD5+SHA-1 handshake signature).
    for version, shown in (("-tls1", "TLSv1"), ("-tls1_1", "TLSv1.1")):
        result = handshake(port, version, "-cipher", "DEFAULT:@SECLEVEL=0")
        assert result.returncode == 0, result.stderr
        assert f"Protocol version: {shown}\n" in result.stderr
        # ... and a default OpenSSL 3 client refuses them on its own.
        assert not offered(port, version)
    assert "Protocol version: TLSv1.3" in handshake(port).stderr
    for group in OTHER_GROUPS:  # (its static RSA suites need no group: ask for ECDHE)
        assert not offered(port, "-tls1_2", "-cipher", "kECDHE:@SECLEVEL=0", "-groups", group), group
    assert offered(port, "-tls1_2", "-cipher", "kECDHE:@SECLEVEL=0", "-groups", "X25519")


def test_old_lets_the_server_choose_the_suite(server: ThreadedMailServer) -> None:
    """"Cipher preference: server chooses": a client preferring CBC-SHA1 still gets AES-GCM."""
    result = handshake(server.port("old-implicit"), "-tls1_2", "-cipher",
                       "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0")
    assert "Ciphersuite: ECDHE-RSA-AES128-GCM-SHA256" in result.stderr, result.stderr
    result = handshake(server.port("intermediate-implicit"), "-tls1_2", "-cipher",
                       "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256")
    assert "Ciphersuite: ECDHE-RSA-CHACHA20-POLY1305" in result.stderr, result.stderr


def test_old_starttls(server: ThreadedMailServer) -> None:
    result = handshake(server.port("old-starttls-required"), "-starttls", "smtp", "-tls1_1", "-cipher",
                       "DEFAULT:@SECLEVEL=0")
    assert result.returncode == 0 and "Protocol version: TLSv1.1" in result.stderr, result.stderr


def test_an_unknown_profile_is_a_config_error(certs_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"listeners\[0\]\.tls_profile: 'ancient' is not one of: old, "
                                          r"intermediate, modern"):
        make_config(certs_dir, ({"protocol": "smtp", "tls": "implicit", "tls_profile": "ancient"},))


def test_a_scenario_keeps_its_own_settings(serve: Callable[..., ThreadedMailServer]) -> None:
    """tls_profile is for known-good contexts: a TLS scenario's versions stay the scenario's."""
    server = serve({"name": "v13", "protocol": "smtp", "tls": "implicit", "scenario": "tls-v1-3-only",
                    "tls_profile": "old"})
    assert not offered(server.port("v13"), "-tls1_2")
