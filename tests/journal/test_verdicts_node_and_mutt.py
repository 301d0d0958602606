"""Verdicts against the clients issue 14 measured that the other verdict tests do not drive:
nodemailer and imapflow (Node; they close without an alert once they have judged the certificate)
and mutt (GnuTLS; it checks the certificate after the handshake and, in batch mode, cannot ask the
user). Each test reads the client's own protocol log first, then what the journal concluded."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from support import node_client, run_client, verdict_codes

HOST = "127.0.0.1"
SECRET = "alice-password"
def sent(log: str, client: str) -> list[str]:
    """The commands the client's own log says it sent, in order."""
    if client == "nodemailer":  # "[time] DEBUG [id] C: EHLO [127.0.0.1]"
        return re.findall(r"\] C: (.*)", log)
    # imapflow logs what it sends as JSON: {"src":"c","msg":"2 LOGIN ..."} (the secret replaced)
    return [entry["msg"].strip() for line in log.splitlines() if line.startswith("DEBUG {")
            for entry in [json.loads(line[6:])] if entry.get("src") == "c" and "msg" in entry]


def detail(record: Any, code: str) -> str:
    return next(v.detail for v in record.verdicts if v.code == code)


# --- certificates: the strict settings refuse (the journal says rejected), the careless ones go on ---


@pytest.mark.parametrize("scenario, error", [("cert-expired", "certificate has expired"),
                                             ("cert-self-signed", "self-signed certificate"),
                                             ("cert-wrong-host", "does not match certificate's altnames")])
def test_node_clients_refusing_a_bad_certificate_are_recorded_as_rejecting_it(
        serve: Callable[..., ThreadedMailServer], ca_file: Path, scenario: str, error: str) -> None:
    server = serve({"name": "smtps", "protocol": "smtp", "tls": "implicit", "scenario": scenario},
                   {"name": "imaps", "protocol": "imap", "tls": "implicit", "scenario": scenario})
    for client, listener in (("nodemailer", "smtps"), ("imapflow", "imaps")):
        log, result = node_client(client, server.port(listener), secure=True, ca=str(ca_file))
        assert result.startswith("RESULT error") and error in log, log
        assert sent(log, client) == [], log
        record = server.journal.wait_for(1, listener=listener)[0]
        assert verdict_codes(record) == {"rejected-certificate"}, (client, record.verdicts, record.tls_failure)


def test_node_clients_told_not_to_verify_are_recorded_as_accepting_the_bad_certificate(
        serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    server = serve({"name": "smtps", "protocol": "smtp", "tls": "implicit", "scenario": "cert-expired"},
                   {"name": "imaps", "protocol": "imap", "tls": "implicit", "scenario": "cert-expired"})
    for client, listener, proof in (("nodemailer", "smtps", "AUTH PLAIN"), ("imapflow", "imaps", "AUTHENTICATE PLAIN")):
        log, result = node_client(client, server.port(listener), secure=True, rejectUnauthorized=False)
        assert result == "RESULT ok", log
        assert any(proof in command for command in sent(log, client)), log
        record = server.journal.wait_for(1, listener=listener)[0]
        assert verdict_codes(record) == {"accepted-bad-certificate"}, (client, record.verdicts)


# --- STARTTLS stripped: the default (opportunistic) setting logs in in clear, "require TLS" does not ---


def test_node_clients_on_a_stripped_starttls_port(serve: Callable[..., ThreadedMailServer], ca_file: Path) -> None:
    server = serve({"name": "smtp", "protocol": "smtp", "tls": "starttls-optional", "scenario": "starttls-stripped"},
                   {"name": "imap", "protocol": "imap", "tls": "starttls-optional", "scenario": "starttls-stripped"})
    careless = {"nodemailer": node_client("nodemailer", server.port("smtp"), ca=str(ca_file)),
                "imapflow": node_client("imapflow", server.port("imap"), ca=str(ca_file))}
    strict = {"nodemailer": node_client("nodemailer", server.port("smtp"), ca=str(ca_file), requireTLS=True),
              "imapflow": node_client("imapflow", server.port("imap"), ca=str(ca_file), doSTARTTLS=True)}
    for client, listener, login in (("nodemailer", "smtp", "AUTH PLAIN"), ("imapflow", "imap", "AUTHENTICATE PLAIN")):
        log, result = careless[client]
        commands = sent(log, client)
        assert result == "RESULT ok" and not any("STARTTLS" in c for c in commands), log
        assert any(login in command for command in commands), log
        log, result = strict[client]
        assert result.startswith("RESULT error") and not any(login in c for c in sent(log, client)), log
        if client == "nodemailer":  # sends STARTTLS although it is not advertised (probe/known_clients.py)
            assert "STARTTLS" in sent(log, client), log
        fooled, refused = server.journal.wait_for(2, listener=listener)
        assert "credentials-in-clear" in verdict_codes(fooled), (client, fooled.verdicts)
        assert "credentials-in-clear" not in verdict_codes(refused), (client, refused.verdicts)
    # STARTTLS was not on offer there: the verdict says the scenario hid it
    assert "whose STARTTLS this scenario (starttls-stripped) hid" in detail(fooled, "mail-in-clear")


# --- mutt: checks the certificate after the handshake, cannot prompt in batch mode ----------------


def mutt_send(tmp_path: Path, smtp_url: str, ca_file: Path, *settings: str) -> tuple[str, str]:
    """mutt in batch mode sends one message: (its stderr, its debug log at level 5)."""
    (tmp_path / "muttrc").write_text("\n".join([
        f'set smtp_url="{smtp_url}"', f'set smtp_pass="{SECRET}"', 'set from="alice@example.test"',
        f'set ssl_ca_certificates_file="{ca_file}"', f'set certificate_file="{tmp_path / "certificates"}"',
        *settings, ""]))
    home = dict(os.environ, HOME=str(tmp_path))  # mutt writes ~/.muttdebug0
    result = run_client(["mutt", "-n", "-F", str(tmp_path / "muttrc"), "-d", "5", "-s", "mutt", "bob@example.test"],
                        stdin=b"body\n", env=home)
    debug = tmp_path / ".muttdebug0"
    return result.stderr, debug.read_text(errors="replace") if debug.exists() else ""


def test_mutt_in_batch_mode_rejects_a_bad_certificate_after_the_handshake(
        serve: Callable[..., ThreadedMailServer], ca_file: Path, tmp_path: Path) -> None:
    server = serve({"name": "smtps", "protocol": "smtp", "tls": "implicit", "scenario": "cert-expired"})
    stderr, debug = mutt_send(tmp_path, f"smtps://alice@{HOST}:{server.port('smtps')}/", ca_file)
    assert "Untrusted server certificate" in stderr and "unable to prompt for certificate in batch mode" in debug
    record = server.journal.wait_for(1)[0]
    assert record.encrypted and verdict_codes(record) == {"rejected-certificate"}, record.verdicts
    assert detail(record, "rejected-certificate").startswith("rejected after the handshake")


def test_mutt_on_a_stripped_starttls_port_logs_in_only_without_ssl_force_tls(
        serve: Callable[..., ThreadedMailServer], ca_file: Path, tmp_path: Path) -> None:
    server = serve({"name": "smtp", "protocol": "smtp", "tls": "starttls-optional", "scenario": "starttls-stripped"})
    url = f"smtp://alice@{HOST}:{server.port('smtp')}/"
    (tmp_path / "strict").mkdir()
    (tmp_path / "careless").mkdir()
    strict_err, strict_debug = mutt_send(tmp_path / "strict", url, ca_file, "set ssl_force_tls=yes")
    careless_err, careless_debug = mutt_send(tmp_path / "careless", url, ca_file, "unset ssl_force_tls",
                                             "set ssl_starttls=yes")
    # its debug log: "4> STARTTLS" sent, "4< 502 ..." received
    assert re.search(r"\d> STARTTLS", strict_debug) and "502 5.5.1" in strict_err, strict_debug  # tried it anyway
    assert not re.search(r"\d> AUTH", strict_debug), strict_debug
    assert re.search(r"\d> AUTH (PLAIN|LOGIN)", careless_debug), careless_debug
    refused, fooled = server.journal.wait_for(2)
    assert "credentials-in-clear" not in verdict_codes(refused), refused.verdicts
    assert "credentials-in-clear" in verdict_codes(fooled), fooled.verdicts
