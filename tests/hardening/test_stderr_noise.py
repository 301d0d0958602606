"""Issue 16, defect 16: what hostile or unlucky clients do leaves nothing on the server's stderr
(no WARNING per client mistake, no traceback, no "Future exception was never retrieved" at
SIGTERM). `mailmodes serve` as a subprocess, every port ephemeral."""

from __future__ import annotations

import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
from pathlib import Path

from support import require_tool

HOST = "127.0.0.1"
CONFIG = """
hostname = "mail.example.test"
[certs]
dir = "certs"
[http]
port = 0
[[users]]
name = "alice"
password = "alice-password"
addresses = ["alice@example.test"]
[[listeners]]
name = "smtp"
protocol = "smtp"
port = 0
tls = "starttls-optional"
role = "mta"
[[listeners]]
name = "smtp-expired"
protocol = "smtp"
port = 0
tls = "starttls-optional"
scenario = "cert-expired"
[[listeners]]
name = "smtps-wrong-host"
protocol = "smtp"
port = 0
tls = "implicit"
scenario = "cert-wrong-host"
[[listeners]]
name = "imaps-wrong-host"
protocol = "imap"
port = 0
tls = "implicit"
scenario = "cert-wrong-host"
[[listeners]]
name = "imap"
protocol = "imap"
port = 0
tls = "starttls-required"
[[listeners]]
name = "pop3"
protocol = "pop3"
port = 0
tls = "starttls-required"
"""
LISTENING = re.compile(r"^listening (\S+) +\S+ +127\.0\.0\.1:(\d+)")
DASHBOARD = re.compile(r"^dashboard http://127\.0\.0\.1:(\d+)/")


def test_hostile_clients_leave_stderr_empty(tmp_path: Path) -> None:
    (tmp_path / "mailmodes.toml").write_text(CONFIG)
    process = subprocess.Popen([sys.executable, "-m", "mailmodes", "serve", "--config", "mailmodes.toml"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ports, http_port = _wait_ready(process)
        context = ssl.create_default_context(cafile=str(tmp_path / "certs" / "ca.pem"))
        _smtp_mistakes(ports["smtp"])
        _rejected_starttls(ports["smtp-expired"], context)
        for name in ("smtps-wrong-host", "imaps-wrong-host"):
            _rejected_implicit_tls(ports[name], context)
        for protocol in ("imap", "pop3"):
            _starttls_and_nothing_to_say(ports[protocol], protocol)
        _malformed_http(http_port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    _, stderr = process.communicate()
    assert stderr == "", stderr


def _wait_ready(process: subprocess.Popen[str]) -> tuple[dict[str, int], int]:
    assert process.stdout is not None
    ports: dict[str, int] = {}
    http_port = 0
    for line in process.stdout:
        if match := LISTENING.match(line):
            ports[match[1]] = int(match[2])
        elif match := DASHBOARD.match(line):
            http_port = int(match[1])
        elif line.strip() == "ready":
            return ports, http_port
    raise AssertionError(f"no 'ready' line; stderr: {process.stderr.read() if process.stderr else ''}")


def _smtp_mistakes(port: int) -> None:
    with smtplib.SMTP(HOST, port, timeout=10) as client:
        client.ehlo("client.example")
        assert client.docmd("XYZ")[0] == 500
        assert client.docmd("AUTH", "PLAIN")[0] == 334
        assert client.docmd("*")[0] == 501  # the client cancels (RFC 4954 section 4)
        assert client.docmd("QUFCREVGRw==")[0] == 500  # base64 where a command belongs
        assert client.docmd("MAIL", "FROM:<a@")[0] >= 500


def _rejected_starttls(port: int, context: ssl.SSLContext) -> None:
    with smtplib.SMTP(HOST, port, timeout=10) as client:
        client.ehlo("client.example")
        try:
            client.starttls(context=context)
        except ssl.SSLCertVerificationError:
            pass
        else:
            raise AssertionError("an expired certificate was accepted")


def _starttls_and_nothing_to_say(port: int, protocol: str) -> None:
    """openssl s_client -starttls with no input: its end of file can arrive with the handshake's
    last message (asyncio then warned "returning true from eof_received() has no effect")."""
    require_tool("openssl")
    for _ in range(3):
        subprocess.run(["openssl", "s_client", "-connect", f"{HOST}:{port}", "-starttls", protocol],
                       input=b"", capture_output=True, timeout=20)


def _rejected_implicit_tls(port: int, context: ssl.SSLContext) -> None:
    for _ in range(3):
        try:
            with context.wrap_socket(socket.create_connection((HOST, port), timeout=10),
                                     server_hostname="mail.example.test"):
                raise AssertionError("a certificate for the wrong name was accepted")
        except ssl.SSLCertVerificationError:
            pass
    # openssl goes on sending after its verification failed, as careless clients do.
    subprocess.run([require_tool("openssl"), "s_client", "-connect", f"{HOST}:{port}", "-verify_return_error",
                    "-verify_hostname", "mail.example.test"], input=b"a NOOP\r\n", capture_output=True, timeout=20)


def _malformed_http(port: int) -> None:
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nno colon\r\n\r\n")
        assert sock.recv(100).split(b" ")[1] == b"400"
