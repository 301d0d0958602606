"""Verdicts that tell the truth about real clients (issue 14): each test drives real clients that
behave well or badly in the way a verdict names, checks what the client itself printed, and then
what the journal concluded."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from support import run_client, verdict_codes

HOST = "127.0.0.1"
SECRET = "alice-password"
MESSAGE = b"Subject: t\r\n\r\nbody\r\n"
SCHEMES = {"smtp": "smtps", "imap": "imaps", "pop3": "pop3s"}


def curl(*args: str) -> list[str]:
    return ["curl", "-v", "--max-time", "10", *args]


def swaks(port: int, *args: str) -> list[str]:
    return ["swaks", "--server", HOST, "--port", str(port), "--from", "alice@example.test", "--to",
            "bob@example.test", "--timeout", "10", *args]


def msmtp(port: int, *args: str) -> list[str]:
    return ["msmtp", "-C", "/dev/null", f"--host={HOST}", f"--port={port}", "--from=alice@example.test",
            "--timeout=10", "--debug", *args, "bob@example.test"]


# --- defect 2: a ClientHello on a STARTTLS port earns tls-on-plaintext-port only -----------------


@pytest.mark.parametrize("mode", ["starttls-optional", "starttls-required"])
@pytest.mark.parametrize("protocol", ["smtp", "imap", "pop3"])
def test_an_implicit_tls_client_on_a_starttls_port_tried_tls(serve: Callable[..., ThreadedMailServer],
                                                              ca_file: Path, protocol: str, mode: str) -> None:
    server = serve({"name": "l", "protocol": protocol, "tls": mode})
    port = server.port("l")
    result = run_client(curl("--cacert", str(ca_file), "-u", f"alice:{SECRET}", f"{SCHEMES[protocol]}://{HOST}:{port}/"))
    assert result.returncode == 35 and "wrong version number" in result.stderr, result.stderr
    openssl = run_client(["openssl", "s_client", "-connect", f"{HOST}:{port}", "-CAfile", str(ca_file),
                          "-verify_return_error", "-brief"])
    assert openssl.returncode != 0 and "wrong version number" in openssl.stdout + openssl.stderr
    for record in server.journal.wait_for(2):
        assert verdict_codes(record) == {"tls-on-plaintext-port"}, (record.verdicts, record.first_client_bytes)


# --- defect 3: fallback only on evidence that two sessions are one client's ----------------------


def test_different_clients_sharing_an_address_are_never_blamed_for_each_other(
        serve: Callable[..., ThreadedMailServer], ca_file: Path, tmp_path: Path) -> None:
    """As in CI or Docker: strict clients fail at TLS against a bad certificate while careless ones
    send plaintext to the next port, all from 127.0.0.1, interleaved within seconds."""
    server = serve({"name": "expired", "protocol": "smtp", "tls": "starttls-required", "scenario": "cert-expired"},
                   {"name": "optional", "protocol": "smtp", "tls": "starttls-optional"},
                   {"name": "pop3-expired", "protocol": "pop3", "tls": "implicit", "scenario": "cert-expired"},
                   {"name": "pop3", "protocol": "pop3", "tls": "starttls-optional"})
    expired, optional = server.port("expired"), server.port("optional")
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    mail = ["-u", f"alice:{SECRET}", "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test",
            "-T", str(tmp_path / "m.eml")]
    strict_curl = run_client(curl("--cacert", str(ca_file), "--ssl-reqd", *mail, f"smtp://{HOST}:{expired}"))
    assert strict_curl.returncode == 60 and "certificate has expired" in strict_curl.stderr
    careless_swaks = run_client(swaks(optional, "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", SECRET))
    assert careless_swaks.returncode == 0 and " -> AUTH PLAIN" in careless_swaks.stdout, careless_swaks.stdout
    strict_openssl = run_client(["openssl", "s_client", "-connect", f"{HOST}:{expired}", "-starttls", "smtp",
                                 "-CAfile", str(ca_file), "-verify_return_error", "-brief"])
    assert strict_openssl.returncode != 0 and "certificate has expired" in strict_openssl.stdout + strict_openssl.stderr
    careless_msmtp = run_client(msmtp(optional, "--auth=plain", "--user=alice", f"--passwordeval=echo {SECRET}",
                                      "--tls=off"), stdin=MESSAGE)
    assert careless_msmtp.returncode == 0 and "--> AUTH PLAIN" in careless_msmtp.stdout, careless_msmtp.stdout
    strict_pop3 = run_client(curl("--cacert", str(ca_file), "-u", f"alice:{SECRET}",
                                  f"pop3s://{HOST}:{server.port('pop3-expired')}/"))
    assert strict_pop3.returncode == 60
    careless_pop3 = run_client(curl("-u", f"alice:{SECRET}", f"pop3://{HOST}:{server.port('pop3')}/"))
    assert careless_pop3.returncode == 0 and "> PASS" in careless_pop3.stderr + careless_pop3.stdout or \
        "AUTH PLAIN" in careless_pop3.stderr
    with smtplib.SMTP(HOST, optional, timeout=10) as careless_smtplib:
        careless_smtplib.login("alice", SECRET)
    records = server.journal.wait_for(7)
    assert len(records) == 7
    assert sum("rejected-certificate" in verdict_codes(r) for r in records) == 3
    assert sum("credentials-in-clear" in verdict_codes(r) for r in records) == 4
    assert [r.id for r in records if "fallback" in verdict_codes(r)] == []


def curl_then_without_tls(port: int, ca_file: Path, tmp_path: Path) -> tuple[str, str]:
    """A careless client: a script that retries without TLS when TLS fails ("curl --ssl-reqd || curl")."""
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    mail = ["-u", f"alice:{SECRET}", "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test",
            "-T", str(tmp_path / "m.eml")]
    first = run_client(curl("--cacert", str(ca_file), "--ssl-reqd", *mail, f"smtp://{HOST}:{port}"))
    assert first.returncode != 0 and "< 220" in first.stderr, first.stderr
    second = run_client(curl(*mail, f"smtp://{HOST}:{port}"))
    assert second.returncode == 0 and "> AUTH PLAIN" in second.stderr, second.stderr
    return first.stderr, second.stderr


@pytest.mark.parametrize("scenario", ["starttls-no-handshake", "starttls-dropped"])
def test_a_client_that_retries_without_tls_after_a_starttls_without_tls_falls_back(
        mailmodes_factory: Callable[..., Any], tmp_path: Path, scenario: str) -> None:
    """It got the STARTTLS success line and then plaintext (or a close) instead of TLS: that is a
    failed TLS attempt, and a plaintext retry by the same client is a fallback. The pytest plugin's
    per-test server is the client scope: it meets the one client under test."""
    server = mailmodes_factory([{"name": "l", "protocol": "smtp", "tls": "starttls-optional", "scenario": scenario}])
    failed, retried = curl_then_without_tls(server.port("l"), server.ca_file, tmp_path)
    assert "> STARTTLS" in failed and ("wrong version number" in failed or "SSL_connect" in failed), failed
    first, second = server.sessions()
    assert "fallback" not in verdict_codes(first)
    assert {"fallback", "credentials-in-clear"} <= verdict_codes(second), second.verdicts
    assert second.scope == "server"


def test_the_same_retry_on_a_shared_server_is_not_claimed(serve: Callable[..., ThreadedMailServer], ca_file: Path,
                                                          tmp_path: Path) -> None:
    """Without a client scope nothing shows the two connections are one client's: no guess."""
    server = serve({"name": "l", "protocol": "smtp", "tls": "starttls-optional", "scenario": "starttls-no-handshake"})
    curl_then_without_tls(server.port("l"), ca_file, tmp_path)
    assert [verdict_codes(r) & {"fallback"} for r in server.journal.wait_for(2)] == [set(), set()]


# --- defect 1: a client that verifies after the handshake rejected the certificate too -----------


def detail(record: Any, code: str) -> str:
    return next(v.detail for v in record.verdicts if v.code == code)


def test_clients_that_check_the_certificate_after_the_handshake_rejected_it(
        serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    """curl checks the host name once the handshake is done, msmtp (GnuTLS) the whole chain: the
    handshake completes, they send nothing and close. swaks without --tls-verify goes on."""
    server = serve({"name": "wrong-host", "protocol": "smtp", "tls": "implicit", "scenario": "cert-wrong-host"},
                   {"name": "expired", "protocol": "smtp", "tls": "implicit", "scenario": "cert-expired"})
    strict_curl = run_client(curl("--cacert", str(ca_file), f"smtps://{HOST}:{server.port('wrong-host')}"))
    assert strict_curl.returncode == 60 and "no alternative certificate subject name matches" in strict_curl.stderr
    assert "TLS handshake, Finished" in strict_curl.stderr  # the handshake itself completed
    strict_msmtp = run_client(msmtp(server.port("expired"), "--tls=on", "--tls-starttls=off",
                                    f"--tls-trust-file={ca_file}"), stdin=MESSAGE)
    assert "TLS certificate verification failed" in strict_msmtp.stderr and "expired" in strict_msmtp.stderr
    careless_swaks = run_client(swaks(server.port("wrong-host"), "--tls-on-connect", "--quit-after", "EHLO"))
    assert careless_swaks.returncode == 0 and " ~> EHLO" in careless_swaks.stdout, careless_swaks.stdout
    curl_record, msmtp_record, swaks_record = server.journal.wait_for(3)
    for record in (curl_record, msmtp_record):
        assert record.encrypted and verdict_codes(record) == {"rejected-certificate"}, record.verdicts
        assert detail(record, "rejected-certificate").startswith("rejected after the handshake")
    assert verdict_codes(swaks_record) == {"accepted-bad-certificate"}


def test_getmail_saying_only_rset_after_its_host_name_check_did_not_accept(
        serve: Callable[..., ThreadedMailServer], ca_file: Path, tmp_path: Path) -> None:
    server = serve({"name": "pop3s", "protocol": "pop3", "tls": "implicit", "scenario": "cert-wrong-host"})
    (tmp_path / "mbox").write_bytes(b"")
    (tmp_path / "getmailrc").write_text(
        f"[retriever]\ntype = SimplePOP3SSLRetriever\nserver = {HOST}\nport = {server.port('pop3s')}\n"
        f"username = alice\npassword = {SECRET}\nca_certs = {ca_file}\n"
        f"[destination]\ntype = Mboxrd\npath = {tmp_path / 'mbox'}\n")
    result = run_client(["getmail", "--getmaildir", str(tmp_path), "--rcfile", "getmailrc"])
    assert "doesn't match" in result.stdout + result.stderr, result.stdout + result.stderr
    record = server.journal.wait_for(1)[0]
    assert "RSET" in [line.text for line in record.transcript if line.sender == "client"]
    assert verdict_codes(record) == {"rejected-certificate"}, record.verdicts
    assert "said RSET" in detail(record, "rejected-certificate")


def finished_record(journal: Any, listener: Any, **facts: Any) -> Any:
    record = journal.open(listener, ("127.0.0.1", 1))
    for name, value in facts.items():
        setattr(record, name, value)
    journal.finish(record)
    return record


def test_a_client_hello_then_a_close_without_an_alert_is_a_rejection_once_the_facts_say_so() -> None:
    """nodemailer, imapflow and aiosmtplib close without an alert once they have the certificate.
    The rule reads tls_handshake, which the transcript reads from the handshake's messages."""
    from mailmodes.config import parse_config
    from mailmodes.record.journal import Journal

    listener = parse_config({"hostname": "h.test", "listeners": [
        {"name": "l", "protocol": "smtp", "port": 0, "tls": "implicit", "scenario": "cert-expired"}]}).listeners[0]
    closed = "no TLS handshake: the client closed the connection first"
    journal = Journal()
    seen = finished_record(journal, listener, tls_failure=closed, tls_handshake="server-flight")
    assert verdict_codes(seen) == {"rejected-certificate"}
    unknown = finished_record(journal, listener, tls_failure=closed)
    assert "rejected-certificate" not in verdict_codes(unknown)


# --- defect 6: a client that stalls at a step, or vanishes at one ------------------------------

STALL_IDLE_TIMEOUT = 16  # just over verdicts.STALL_SECONDS: the server waits it out, the client does not end it


@pytest.mark.parametrize("client", ["swaks", "msmtp"])
def test_a_client_without_a_timeout_stalls_at_starttls_silence(serve: Callable[..., ThreadedMailServer],
                                                               ca_file: Path, client: str) -> None:
    server = serve({"name": "silence", "protocol": "smtp", "tls": "starttls-required", "scenario": "starttls-silence"},
                   limits={"idle_timeout": STALL_IDLE_TIMEOUT})
    port = server.port("silence")
    if client == "swaks":
        result = run_client(swaks(port, "--tls", "--timeout", "60"), timeout=60)
        assert "<-  220 2.0.0 Ready to start TLS" in result.stdout and "TLS" in result.stdout + result.stderr
    else:
        result = run_client(msmtp(port, "--tls=on", "--tls-starttls=on", f"--tls-trust-file={ca_file}",
                                  "--timeout=60"), stdin=MESSAGE, timeout=60)
        assert "<-- 220 2.0.0 Ready to start TLS" in result.stdout and "TLS handshake failed" in result.stderr
    assert result.returncode != 0
    record = server.journal.wait_for(1)[0]
    assert verdict_codes(record) == {"stalled-at-step"}, record.verdicts
    said = detail(record, "stalled-at-step")
    assert "'STARTTLS'" in said and "220 2.0.0 Ready to start TLS" in said, said


def test_a_client_with_a_timeout_of_its_own_does_not_stall(serve: Callable[..., ThreadedMailServer],
                                                           ca_file: Path) -> None:
    server = serve({"name": "silence", "protocol": "smtp", "tls": "starttls-required", "scenario": "starttls-silence"},
                   limits={"idle_timeout": STALL_IDLE_TIMEOUT})
    result = run_client(["curl", "-v", "--max-time", "3", "--cacert", str(ca_file), "--ssl-reqd",
                         f"smtp://{HOST}:{server.port('silence')}"])
    assert result.returncode == 28 and "< 220 2.0.0 Ready to start TLS" in result.stderr
    assert verdict_codes(server.journal.wait_for(1)[0]) == set()


def test_mbsync_vanishing_at_an_untagged_list_before_the_starttls_reply(
        serve: Callable[..., ThreadedMailServer], ca_file: Path, tmp_path: Path) -> None:
    """mbsync (isync 1.4) crashes on the untagged LIST that pretls-state-injection sends before the
    STARTTLS reply; curl --ssl-reqd ignores it and goes on, which is what a correct client does."""
    server = serve({"name": "imap", "protocol": "imap", "tls": "starttls-required",
                    "scenario": "pretls-state-injection"})
    port = server.port("imap")
    (tmp_path / "mail").mkdir()
    (tmp_path / "mbsyncrc").write_text(
        f"IMAPAccount a\nHost localhost\nPort {port}\nUser alice\nPass {SECRET}\nSSLType STARTTLS\n"
        f"CertificateFile {ca_file}\n\nIMAPStore far\nAccount a\n\n"
        f"MaildirStore near\nPath {tmp_path / 'mail'}/\nInbox {tmp_path / 'mail' / 'INBOX'}\n\n"
        "Channel c\nMaster :far:\nSlave :near:\nPatterns INBOX\nCreate Slave\n")
    crashed = run_client(["mbsync", "-Dn", "-c", str(tmp_path / "mbsyncrc"), "c"])
    assert crashed.returncode < 0, (crashed.returncode, crashed.stdout)  # killed by a signal
    assert crashed.stdout.rstrip().splitlines()[-1].startswith(("* LIST", "Notice")), crashed.stdout
    vanished = server.journal.wait_for(1)[0]
    assert verdict_codes(vanished) == {"vanished-at-step"}, vanished.verdicts
    assert "X-MAILMODES-STATE" in detail(vanished, "vanished-at-step")
    correct = run_client(curl("--cacert", str(ca_file), "--ssl-reqd", "-u", f"alice:{SECRET}",
                              f"imap://localhost:{port}/"))
    assert correct.returncode == 0 and "> A002 STARTTLS" in correct.stderr or "STARTTLS" in correct.stderr
    assert verdict_codes(server.journal.wait_for(2)[-1]) == set()


# --- defect 4: acted-on-injection proved by a desync ---------------------------------------------


def test_swaks_answering_the_injected_ehlo_reply_is_caught_by_the_held_back_real_one(
        serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext) -> None:
    """swaks 20201014 takes the injected "250 AUTH X-MAILMODES-INJECTED" for its EHLO reply inside
    TLS and gives up on AUTH: its QUIT arrives while the server still holds back the real reply."""
    server = serve({"name": "l", "protocol": "smtp", "tls": "starttls-required", "scenario": "response-injection"})
    result = run_client(swaks(server.port("l"), "--tls", "--auth", "PLAIN", "--auth-user", "alice",
                              "--auth-password", SECRET))
    out = result.stdout
    assert "<~  250 AUTH X-MAILMODES-INJECTED" in out and "Auth not attempted" in out + result.stderr, out
    assert out.index(" ~> QUIT") < out.index("<~* 250-AUTH LOGIN PLAIN")  # it spoke before the real reply
    fooled = server.journal.wait_for(1)[0]
    assert "acted-on-injection" in verdict_codes(fooled), fooled.verdicts
    assert "sent QUIT before the server had answered" in detail(fooled, "acted-on-injection")
    with smtplib.SMTP(HOST, server.port("l"), timeout=10) as correct:  # discards what came before TLS
        correct.starttls(context=client_context)
        correct.login("alice", SECRET)
    assert verdict_codes(server.journal.wait_for(2)[-1]) == set()


def test_a_plaintext_client_on_a_tls_first_port_made_no_tls_attempt_to_fall_back_from() -> None:
    """Trying 465 and then 587 without TLS, both times, is no fallback: TLS was never tried."""
    from mailmodes.config import parse_config
    from mailmodes.record.journal import Journal

    implicit, plain = parse_config({"hostname": "h.test", "listeners": [
        {"name": "465", "protocol": "smtp", "port": 0, "tls": "implicit"},
        {"name": "587", "protocol": "smtp", "port": 0, "tls": "starttls-optional"}]}).listeners
    journal = Journal(one_client=True)
    first = finished_record(journal, implicit, tls_failure="the client sent something that is not TLS",
                            first_client_bytes=b"EHLO x\r\n")
    assert verdict_codes(first) == {"plaintext-on-tls-port"}
    second = finished_record(journal, plain, verbs_before_tls=["EHLO", "AUTH"])
    assert "fallback" not in verdict_codes(second)
    aborted = finished_record(journal, implicit, tls_alert="unknown_ca")
    assert "tls-failed" in verdict_codes(aborted)
    third = finished_record(journal, plain, verbs_before_tls=["EHLO", "AUTH"])
    assert "fallback" in verdict_codes(third)


def test_a_client_that_only_asks_for_capabilities_after_a_failed_tls_attempt_did_not_fall_back() -> None:
    """curl --ssl-reqd after a refused certificate, then on a port without STARTTLS: EHLO, no
    STARTTLS offered, QUIT. It refused to go on in the clear, which is the opposite of a fallback."""
    from mailmodes.config import parse_config
    from mailmodes.record.journal import Journal

    implicit, plain = parse_config({"hostname": "h.test", "listeners": [
        {"name": "465", "protocol": "smtp", "port": 0, "tls": "implicit", "scenario": "cert-expired"},
        {"name": "25", "protocol": "smtp", "port": 0, "tls": "plaintext"}]}).listeners
    journal = Journal(one_client=True)
    finished_record(journal, implicit, tls_alert="certificate_expired")
    asked_only = finished_record(journal, plain, verbs_before_tls=["EHLO", "QUIT"])
    assert "fallback" not in verdict_codes(asked_only)
    logged_in = finished_record(journal, plain, verbs_before_tls=["EHLO", "AUTH", "QUIT"])
    assert "fallback" in verdict_codes(logged_in)
