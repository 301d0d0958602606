"""The SMTP x TLS-mode matrix with real command-line clients (CLIENTS.md): curl, swaks, msmtp,
openssl s_client. Matching modes deliver; mismatching ones fail the documented way."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from mailmodes.app import ThreadedMailServer
from support import curl_settings, run_client

HOST = "127.0.0.1"
AUTH = ["alice", "alice-password"]
# A client speaking plaintext to an implicit-TLS port waits for a greeting that never comes.
HANG = 3


def message(subject: str) -> bytes:
    return f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n\r\nbody\r\n".encode()


def delivered(server: ThreadedMailServer, subject: str) -> bool:
    needle = f"Subject: {subject}\r\n".encode()
    return server.call(lambda: any(needle in m.data for m in server.store.accounts["bob"].inbox.messages))


# curl: client setting -> (URL scheme, options); CLIENTS.md
CURL_SETTINGS = curl_settings("smtp")
# (client setting, server mode) -> curl's exit status; 0 means delivered.
CURL_OUTCOMES = {
    ("implicit", "implicit"): 0,
    ("implicit", "starttls-required"): 35,  # TLS ClientHello answered by a 220 greeting
    ("implicit", "starttls-optional"): 35,
    ("implicit", "plaintext"): 35,
    ("required", "implicit"): 28,  # waits for a greeting, the server waits for a ClientHello
    ("required", "starttls-required"): 0,
    ("required", "starttls-optional"): 0,
    ("required", "plaintext"): 64,  # STARTTLS not on offer: curl refuses to go on
    ("opportunistic", "implicit"): 28,
    ("opportunistic", "starttls-required"): 0,
    ("opportunistic", "starttls-optional"): 0,
    ("opportunistic", "plaintext"): 0,
    ("none", "implicit"): 28,
    ("none", "starttls-required"): 55,  # MAIL answered 530: curl skipped AUTH, none advertised
    ("none", "starttls-optional"): 0,
    ("none", "plaintext"): 0,
}


@pytest.mark.parametrize(("setting", "mode"), sorted(CURL_OUTCOMES))
def test_curl(matrix_server: ThreadedMailServer, ca_file: Path, tmp_path: Path, setting: str, mode: str) -> None:
    scheme, options = CURL_SETTINGS[setting]
    subject = f"curl {setting} {mode} {uuid.uuid4()}"
    mail = tmp_path / "mail.eml"
    mail.write_bytes(message(subject))
    port = matrix_server.port(f"smtp-{mode}")
    result = run_client([
        "curl", "-sS", "-v", "--max-time", str(HANG), "--cacert", str(ca_file), "-u", ":".join(AUTH),
        "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test", "-T", str(mail),
        *options, f"{scheme}://{HOST}:{port}",
    ])
    expected = CURL_OUTCOMES[(setting, mode)]
    assert result.returncode == expected, result.stderr
    assert delivered(matrix_server, subject) == (expected == 0)
    if mode == "starttls-required":
        before_tls = result.stderr.split("Ready to start TLS")[0]
        assert "AUTH" not in before_tls.replace("Must issue", "")
    if expected == 55:
        assert "530" in result.stderr


SWAKS_SETTINGS = {
    "implicit": ["--tls-on-connect", "--tls-verify", "--tls-ca-path"],
    "required": ["--tls", "--tls-verify", "--tls-ca-path"],
    "opportunistic": ["--tls-optional-strict", "--tls-verify", "--tls-ca-path"],
    "none": [],
}
SWAKS_DELIVERS = {
    ("implicit", "implicit"),
    ("required", "starttls-required"),
    ("required", "starttls-optional"),
    ("opportunistic", "starttls-required"),
    ("opportunistic", "starttls-optional"),
    ("opportunistic", "plaintext"),
    ("none", "starttls-optional"),
    ("none", "plaintext"),
}


@pytest.mark.parametrize("mode", ["implicit", "starttls-required", "starttls-optional", "plaintext"])
@pytest.mark.parametrize("setting", sorted(SWAKS_SETTINGS))
def test_swaks(matrix_server: ThreadedMailServer, ca_file: Path, setting: str, mode: str) -> None:
    subject = f"swaks {setting} {mode} {uuid.uuid4()}"
    options = SWAKS_SETTINGS[setting] + ([str(ca_file)] if SWAKS_SETTINGS[setting] else [])
    result = run_client([
        "swaks", "--server", HOST, "--port", str(matrix_server.port(f"smtp-{mode}")),
        "--from", "alice@example.test", "--to", "bob@example.test", "--header", f"Subject: {subject}",
        "--auth", "PLAIN", "--auth-user", AUTH[0], "--auth-password", AUTH[1], "--timeout", str(HANG), *options,
    ])
    should_deliver = (setting, mode) in SWAKS_DELIVERS
    assert (result.returncode == 0) == should_deliver, result.stdout + result.stderr
    assert delivered(matrix_server, subject) == should_deliver
    # swaks marks lines received in plaintext "<-" and inside TLS "<~": on a required listener
    # AUTH is only ever advertised inside TLS.
    if mode == "starttls-required":
        assert not [line for line in result.stdout.splitlines() if line.startswith("<-") and "AUTH" in line]


MSMTP_SETTINGS = {
    "implicit": ["--tls=on", "--tls-starttls=off", "--auth=on"],
    "required": ["--tls=on", "--tls-starttls=on", "--auth=on"],
    "none": ["--tls=off", "--auth=plain"],
}
MSMTP_DELIVERS = {
    ("implicit", "implicit"),
    ("required", "starttls-required"),
    ("required", "starttls-optional"),
    ("none", "starttls-optional"),
    ("none", "plaintext"),
}


@pytest.mark.parametrize("mode", ["implicit", "starttls-required", "starttls-optional", "plaintext"])
@pytest.mark.parametrize("setting", sorted(MSMTP_SETTINGS))
def test_msmtp(matrix_server: ThreadedMailServer, ca_file: Path, setting: str, mode: str) -> None:
    subject = f"msmtp {setting} {mode} {uuid.uuid4()}"
    result = run_client(
        ["msmtp", "-C", "/dev/null", f"--host={HOST}", f"--port={matrix_server.port(f'smtp-{mode}')}",
         f"--user={AUTH[0]}", f"--passwordeval=echo {AUTH[1]}", "--from=alice@example.test",
         f"--tls-trust-file={ca_file}", f"--timeout={HANG}", *MSMTP_SETTINGS[setting], "bob@example.test"],
        stdin=message(subject),
    )
    should_deliver = (setting, mode) in MSMTP_DELIVERS
    assert (result.returncode == 0) == should_deliver, result.stderr
    assert delivered(matrix_server, subject) == should_deliver


@pytest.mark.parametrize(("mode", "starttls"), [("implicit", []), ("starttls-required", ["-starttls", "smtp"]),
                                                ("starttls-optional", ["-starttls", "smtp"])])
def test_openssl_verifies_the_certificate(matrix_server: ThreadedMailServer, ca_file: Path, mode: str,
                                          starttls: list[str]) -> None:
    result = run_client([
        "openssl", "s_client", "-connect", f"{HOST}:{matrix_server.port(f'smtp-{mode}')}", "-servername", "localhost",
        "-verify_hostname", "localhost", "-CAfile", str(ca_file), "-verify_return_error", *starttls,
    ], stdin=b"QUIT\r\n")
    assert result.returncode == 0, result.stderr
    assert "Verify return code: 0 (ok)" in result.stdout
    assert "TLSv1.3" in result.stdout


@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_below_1_2_is_refused(matrix_server: ThreadedMailServer, ca_file: Path, version: str) -> None:
    result = run_client([
        "openssl", "s_client", "-connect", f"{HOST}:{matrix_server.port('smtp-implicit')}", "-CAfile", str(ca_file),
        version, "-cipher", "DEFAULT:@SECLEVEL=0",
    ])
    assert result.returncode != 0
    assert "Cipher is (NONE)" in result.stdout or "no protocols available" in result.stderr
