"""smtplib set up two ways, as a report card client (a callable taking a ScenarioTarget): one that
does what a correct client does, one that "just wants it to work"."""

from __future__ import annotations

import smtplib
import socket
import ssl

from mailmodes.pytest_plugin import ScenarioTarget

HOST = "127.0.0.1"


def dial(context: ssl.SSLContext | None, name: str, port: int, timeout: float | None) -> socket.socket:
    """A connection to 127.0.0.1 (TLS verifying `name` when given a context): the wildcard
    scenarios need their own name, which no resolver here knows. Closed when the handshake fails."""
    sock = socket.create_connection((HOST, port), timeout)
    if context is None:
        return sock
    try:
        return context.wrap_socket(sock, server_hostname=name)
    except BaseException:
        sock.close()
        raise


class Smtp(smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return dial(None, host, port, timeout)


class SmtpSsl(smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return dial(self.context, host, port, timeout)


def careless_context() -> ssl.SSLContext:
    """No verification, and OpenSSL's security level lowered too (at the default level 2 OpenSSL
    itself refuses a 1024-bit key and a SHA-1 signature, verification or not)."""
    context = ssl._create_unverified_context()
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def smtp_client(target: ScenarioTarget, *, careful: bool) -> None:
    context = target.ssl_context() if careful else careless_context()
    if target.implicit:
        client: smtplib.SMTP = SmtpSsl(target.server_hostname, target.port, context=context, timeout=target.timeout)
    else:
        client = Smtp(target.server_hostname, target.port, timeout=target.timeout)
    with client:
        client.ehlo_or_helo_if_needed()
        if not target.implicit:
            if client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
            elif careful:
                return  # set to STARTTLS: no STARTTLS, no login
        client.login(target.user, target.password)
        client.sendmail("alice@example.test", ["bob@example.test"], b"Subject: report card\r\n\r\nhi\r\n")


def careful(target: ScenarioTarget) -> None:
    smtp_client(target, careful=True)


def careless(target: ScenarioTarget) -> None:
    smtp_client(target, careful=False)
