"""Every protocol does what the one TLS decision (tls/policy.py) says, in every mode: STARTTLS offered
exactly when the policy offers it, and a login before TLS taken exactly when the policy allows
it, over real listeners and stdlib clients (including the scenarios that change the decision)."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import ssl
from collections.abc import Callable

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.scenarios.misbehaviour import Misbehaviour
from mailmodes.tls.policy import Security, TlsMode
from support import MODES

HOST = "127.0.0.1"
CASES = [(protocol, mode, None) for protocol in ("smtp", "imap", "pop3") for mode in MODES] + [
    (protocol, mode, scenario)
    for protocol in ("smtp", "imap", "pop3")
    for mode, scenario in (("starttls-required", "starttls-stripped"), ("implicit", "implicit-speaks-plaintext"))
]


def decided(protocol: str, mode: str, scenario: str | None) -> tuple[bool, Security]:
    """(TLS on the first byte, the Security a new connection starts with), as the server decides."""
    tls = Misbehaviour(scenario, protocol).tls(TlsMode(mode))
    return tls.tls_first, tls.security(encrypted=tls.tls_first)


def smtp_offers(port: int, context: ssl.SSLContext | None) -> tuple[bool, bool]:
    client = smtplib.SMTP_SSL(HOST, port, context=context, timeout=10) if context else smtplib.SMTP(HOST, port, timeout=10)
    with client:
        client.ehlo()
        starttls = client.has_extn("starttls")
        code, _ = client.docmd("AUTH", "PLAIN AGFsaWNlAGFsaWNlLXBhc3N3b3Jk")
    return starttls, code == 235


def imap_offers(port: int, context: ssl.SSLContext | None) -> tuple[bool, bool]:
    client = imaplib.IMAP4_SSL(HOST, port, ssl_context=context, timeout=10) if context else imaplib.IMAP4(HOST, port, timeout=10)
    with client:
        capabilities = client.capabilities
        try:
            client.login("alice", "alice-password")
            logged_in = True
        except imaplib.IMAP4.error:
            logged_in = False
    return "STARTTLS" in capabilities, logged_in and "LOGINDISABLED" not in capabilities


def pop3_offers(port: int, context: ssl.SSLContext | None) -> tuple[bool, bool]:
    client = poplib.POP3_SSL(HOST, port, context=context, timeout=10) if context else poplib.POP3(HOST, port, timeout=10)
    try:
        capabilities = client.capa()
        try:
            client.user("alice")
            client.pass_("alice-password")
            logged_in = True
        except poplib.error_proto:
            logged_in = False
        return "STLS" in capabilities, logged_in and "USER" in capabilities
    finally:
        client.quit()


OFFERS: dict[str, Callable[[int, ssl.SSLContext | None], tuple[bool, bool]]] = {
    "smtp": smtp_offers, "imap": imap_offers, "pop3": pop3_offers,
}


@pytest.mark.parametrize(("protocol", "mode", "scenario"), CASES)
def test_each_protocol_does_what_the_tls_decision_says(serve: Callable[..., ThreadedMailServer],
                                                       client_context: ssl.SSLContext, protocol: str, mode: str,
                                                       scenario: str | None) -> None:
    server = serve({"name": "l", "protocol": protocol, "tls": mode, **({"scenario": scenario} if scenario else {})})
    tls_first, security = decided(protocol, mode, scenario)
    offers_starttls, took_login = OFFERS[protocol](server.port("l"), client_context if tls_first else None)
    assert (offers_starttls, took_login) == (security.offers_starttls, security.may_authenticate)


def test_the_cases_cover_every_answer_of_the_policy() -> None:
    answers = {(decided(*case)[1].offers_starttls, decided(*case)[1].may_authenticate) for case in CASES}
    assert answers == {(True, False), (True, True), (False, True)}
