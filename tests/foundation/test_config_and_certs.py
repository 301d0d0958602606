"""Config validation and the test CA / leaf certificate (pure, no sockets)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mailmodes.cli import default_config
from mailmodes.config import ConfigError, load_config, parse_config
from mailmodes.tls.certs import ensure_certificates
from mailmodes.tls.policy import TlsMode

REPO = Path(__file__).resolve().parents[2]


def test_default_config_is_the_seven_standard_listeners() -> None:
    config = default_config()
    plan = {(l.protocol, l.port, l.tls, l.role if l.protocol == "smtp" else "") for l in config.listeners}
    assert plan == {
        ("smtp", 25, TlsMode.STARTTLS_OPTIONAL, "mta"), ("smtp", 465, TlsMode.IMPLICIT, "submission"),
        ("smtp", 587, TlsMode.STARTTLS_REQUIRED, "submission"), ("imap", 143, TlsMode.STARTTLS_REQUIRED, ""),
        ("imap", 993, TlsMode.IMPLICIT, ""), ("pop3", 110, TlsMode.STARTTLS_REQUIRED, ""),
        ("pop3", 995, TlsMode.IMPLICIT, ""),
    }
    assert len(config.users) == 2
    assert load_config(REPO / "config" / "default.toml").listeners == config.listeners


def test_matrix_config_has_every_protocol_in_every_mode() -> None:
    config = load_config(REPO / "config" / "matrix.toml")
    cells = {(l.protocol, l.tls) for l in config.listeners}
    assert cells == {(p, m) for p in ("smtp", "imap", "pop3") for m in TlsMode}
    assert all(l.port >= 1024 for l in config.listeners)


def test_limits_resolve_protocol_defaults_then_global_then_listener() -> None:
    config = parse_config({
        "limits": {"idle_timeout": 60},
        "listeners": [
            {"protocol": "pop3", "port": 0, "tls": "plaintext"},
            {"protocol": "imap", "port": 0, "tls": "plaintext", "limits": {"max_line_length": 100}},
        ],
    })
    pop3, imap = config.listeners
    assert (pop3.limits.max_line_length, pop3.limits.idle_timeout) == (255, 60.0)
    assert (imap.limits.max_line_length, imap.limits.idle_timeout) == (100, 60.0)


@pytest.mark.parametrize(("data", "message"), [
    ({"users": [{"name": "a"}]}, "users[0].password: is required"),
    ({"users": [{"name": "a", "password": "p", "addresses": ["nope"]}]}, "users[0].addresses: must be a list"),
    ({"listeners": [{"protocol": "smtp", "port": 70000, "tls": "implicit"}]}, "listeners[0].port: 70000 is not a port"),
    ({"listeners": [{"protocol": "smtp", "port": 1, "tls": "implicit", "role": "relay"}]},
     "listeners[0].role: 'relay' is not one of: submission, mta"),
    ({"listeners": [{"protocol": "smtp", "port": 1, "tls": "implicit", "limits": {"max_connections": 0}}]},
     "listeners[0].limits.max_connections: must be greater than 0"),
    ({"limits": {"idle_timeout": "soon"}}, "limits.idle_timeout: must be a float, not str"),
    ({"catch_all": "carol"}, "catch_all: names no configured user"),
    ({"listeners": [{"protocol": "smtp", "port": 1, "tls": "implicit", "cert_file": "x.pem"}]},
     "listeners[0].key_file: cert_file and key_file go together"),
])
def test_bad_config_names_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data, source="t.toml")
    assert str(error.value).startswith("t.toml: ")
    assert message in str(error.value)


def _san_and_cn(path: Path) -> tuple[x509.Extension[x509.SubjectAlternativeName], str]:
    leaf = x509.load_pem_x509_certificate(path.read_bytes())
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName), str(cn)


def test_leaf_has_name_in_cn_and_non_critical_san_and_is_reused(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, "mail.example.test")
    san, cn = _san_and_cn(paths.cert_file)
    assert cn == "mail.example.test"
    assert not san.critical
    assert set(san.value.get_values_for_type(x509.DNSName)) == {"mail.example.test", "localhost"}
    assert {str(ip) for ip in san.value.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600
    before = paths.cert_file.read_bytes(), paths.ca_file.read_bytes()
    ensure_certificates(tmp_path, "mail.example.test")
    assert (paths.cert_file.read_bytes(), paths.ca_file.read_bytes()) == before


def test_changed_hostname_gets_a_new_leaf_from_the_same_ca(tmp_path: Path) -> None:
    first = ensure_certificates(tmp_path, "mail.example.test")
    ca = first.ca_file.read_bytes()
    ensure_certificates(tmp_path, "other.example.test")
    _, cn = _san_and_cn(first.cert_file)
    assert cn == "other.example.test"
    assert first.ca_file.read_bytes() == ca


def test_toml_examples_parse() -> None:
    for path in (REPO / "config").glob("*.toml"):
        tomllib.loads(path.read_text())
        load_config(path)


def test_fingerprint_record_is_only_a_shortcut(tmp_path: Path) -> None:
    paths = ensure_certificates(tmp_path, "mail.example.test")
    leaf = paths.cert_file.read_bytes()
    (tmp_path / "certs.json").unlink()  # without the record, the files are checked in depth and kept
    ensure_certificates(tmp_path, "mail.example.test")
    assert paths.cert_file.read_bytes() == leaf
    paths.cert_file.write_bytes(b"not a certificate")  # a changed file no longer matches the record
    ensure_certificates(tmp_path, "mail.example.test")
    assert paths.cert_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_starting_with_current_certificates_does_not_load_cryptography(tmp_path: Path) -> None:
    ensure_certificates(tmp_path, "mail.example.test")
    code = ("import sys; from pathlib import Path; from mailmodes.app import MailServer; "
            "from mailmodes.tls.certs import ensure_certificates; "
            f"ensure_certificates(Path({str(tmp_path)!r}), 'mail.example.test'); "
            "print('cryptography' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.stdout.strip() == "False", result.stderr


def test_servers_starting_together_on_one_empty_certs_folder_agree_on_one_ca(tmp_path: Path) -> None:
    """Four processes making the certificates at once (pytest workers, containers on one volume):
    the leaf left in the folder is signed by the CA left beside it, and openssl says so."""
    certs = tmp_path / "certs"
    script = ("import sys; from pathlib import Path; from mailmodes.tls.certs import ensure_certificates; "
              "sys.stdin.read(); ensure_certificates(Path(sys.argv[1]), 'mail.example.test')")
    makers = [subprocess.Popen([sys.executable, "-c", script, str(certs)], stdin=subprocess.PIPE) for _ in range(4)]
    for maker in makers:  # released together: each is past its imports and waiting on stdin
        assert maker.stdin is not None
        maker.stdin.close()
    assert [maker.wait(timeout=120) for maker in makers] == [0, 0, 0, 0]
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(certs / "ca.pem"), str(certs / "server.pem")],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK"), verify.stdout + verify.stderr
