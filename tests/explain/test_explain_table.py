"""The teaching table for config/matrix.toml, computed from real connections, cell by cell."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.config import Config, parse_config
from mailmodes.probe.explain import (
    SETTINGS,
    ClientSetting,
    Credentials,
    Outcome,
    ProbeOptions,
    Table,
    Target,
    explain,
    format_markdown,
    format_text,
    options_from_config,
    probe,
    targets_from_config,
)

MATRIX = Path(__file__).resolve().parents[2] / "config" / "matrix.toml"
GREETING_TIMEOUT = 1.5

WORKS = "works (TLS 1.3)"
CLEAR = "works, but the password went in the clear"
REFUSED = "refused before login: server requires STARTTLS"
HANGS = "hangs waiting for a greeting (the port speaks TLS first) — timed out after 1.5s"
WRONG_VERSION = "TLS error: wrong version number (the port speaks plaintext first)"
NO_STARTTLS = "STARTTLS not offered: client refuses to continue"

# Columns: implicit TLS, STARTTLS required, STARTTLS if available, no TLS.
EXPECTED: dict[str, tuple[str, str, str, str]] = {
    "smtp-implicit":          (WORKS,         HANGS,       HANGS, HANGS),
    "smtp-starttls-required": (WRONG_VERSION, WORKS,       WORKS, REFUSED),
    "smtp-starttls-optional": (WRONG_VERSION, WORKS,       WORKS, CLEAR),
    "smtp-plaintext":         (WRONG_VERSION, NO_STARTTLS, CLEAR, CLEAR),
    "imap-implicit":          (WORKS,         HANGS,       HANGS, HANGS),
    "imap-starttls-required": (WRONG_VERSION, WORKS,       WORKS, REFUSED),
    "imap-starttls-optional": (WRONG_VERSION, WORKS,       WORKS, CLEAR),
    "imap-plaintext":         (WRONG_VERSION, NO_STARTTLS, CLEAR, CLEAR),
    "pop3-implicit":          (WORKS,         HANGS,       HANGS, HANGS),
    "pop3-starttls-required": (WRONG_VERSION, WORKS,       WORKS, REFUSED),
    "pop3-starttls-optional": (WRONG_VERSION, WORKS,       WORKS, CLEAR),
    "pop3-plaintext":         (WRONG_VERSION, NO_STARTTLS, CLEAR, CLEAR),
    "smtp-mta":               (WRONG_VERSION, WORKS,       WORKS, CLEAR),
}
COLUMNS = tuple(info.setting for info in SETTINGS)


def matrix_config(certs_dir: Path) -> Config:
    """config/matrix.toml with every port 0 (the OS picks) and no HTTP server."""
    data: dict[str, Any] = tomllib.loads(MATRIX.read_text())
    data.pop("http", None)
    data["certs"] = {"dir": str(certs_dir)}
    for listener in data["listeners"]:
        listener["port"] = 0
    return parse_config(data, source=str(MATRIX))


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedMailServer]:
    with ThreadedMailServer(matrix_config(tmp_path_factory.mktemp("certs"))) as server:
        yield server


@pytest.fixture(scope="module")
def table_and_time(matrix: ThreadedMailServer) -> tuple[Table, float]:
    started = time.monotonic()
    table = explain(targets_from_config(matrix.config, matrix.ports),
                    options_from_config(matrix.config, matrix.ca_file, greeting_timeout=GREETING_TIMEOUT))
    return table, time.monotonic() - started


def test_every_listener_of_matrix_toml_is_a_row(table_and_time: tuple[Table, float]) -> None:
    table, _ = table_and_time
    assert [target.name for target in table.targets] == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_cells_match_the_expected_table(table_and_time: tuple[Table, float], name: str) -> None:
    table, _ = table_and_time
    assert tuple(table.cell(name, setting).text for setting in COLUMNS) == EXPECTED[name]


def test_cells_run_concurrently(table_and_time: tuple[Table, float]) -> None:
    # Nine cells hang for 1.5 s each (13.5 s one after another); run together they take ~1.5 s.
    table, seconds = table_and_time
    hangs = [cell for cell in table.cells if cell.outcome is Outcome.HANGS]
    assert len(hangs) == 9
    assert all(cell.seconds >= GREETING_TIMEOUT for cell in hangs)
    assert seconds < 6 * GREETING_TIMEOUT


def test_reasons_quote_what_the_server_said(table_and_time: tuple[Table, float]) -> None:
    table, _ = table_and_time
    reason = {(c.target.name, c.setting): c.reason for c in table.cells}
    assert reason["smtp-starttls-required", ClientSetting.NONE].endswith(
        "login: 538 5.7.11 Encryption required for requested authentication mechanism")
    assert reason["pop3-starttls-required", ClientSetting.NONE].endswith(
        "login: -ERR [AUTH] Plaintext authentication disallowed on non-secure connections")
    assert reason["imap-starttls-required", ClientSetting.NONE].endswith(
        "login: the server advertises LOGINDISABLED, so no password is sent")
    assert reason["smtp-starttls-required", ClientSetting.STARTTLS_REQUIRED] == (
        "greeting 220 mail.example.test ESMTP mailmodes 0.1.0; STARTTLS: 220 2.0.0 Ready to start TLS; "
        "login: 235 2.7.0 Authentication successful")
    assert reason["pop3-plaintext", ClientSetting.STARTTLS_IF_AVAILABLE] == (
        "greeting +OK mail.example.test POP3 ready; no STARTTLS offered, carried on without TLS; "
        "login: +OK Logged in, 0 messages")
    assert "[SSL: WRONG_VERSION_NUMBER]" in reason["imap-plaintext", ClientSetting.IMPLICIT]


def test_the_table_as_data_for_the_dashboard(table_and_time: tuple[Table, float]) -> None:
    table, _ = table_and_time
    data = json.loads(json.dumps(table.as_dict()))
    assert [s["setting"] for s in data["settings"]] == [
        "implicit", "starttls-required", "starttls-if-available", "none"]
    assert data["settings"][2] == {"setting": "starttls-if-available", "title": "STARTTLS if available",
                                   "thunderbird": "STARTTLS, if available (older versions)", "outlook": "Auto",
                                   "apple_mail": "Automatically manage connection settings", "k9": "(none)",
                                   "curl": "--ssl"}
    row = data["rows"][2]
    assert (row["listener"], row["protocol"], row["mode"]) == ("smtp-starttls-optional", "smtp", "starttls-optional")
    assert [c["outcome"] for c in row["cells"]] == ["tls-error", "works", "works", "works-cleartext"]
    assert [c["text"] for c in row["cells"]] == list(EXPECTED["smtp-starttls-optional"])


def test_text_and_markdown_views(table_and_time: tuple[Table, float]) -> None:
    table, _ = table_and_time
    text = format_text(table).splitlines()
    assert text[1] == ('  implicit TLS           Thunderbird "SSL/TLS", Outlook "SSL/TLS", Apple Mail "Use TLS/SSL '
                       '(port 465/993/995)", K-9 "SSL/TLS", curl smtps:// imaps:// pop3s://')
    imap_required = text.index(next(line for line in text if line.startswith("imap-starttls-required:")))
    assert text[imap_required + 9].startswith("                           real clients: imaplib (checked in CI)")
    markdown = format_markdown(table).splitlines()
    assert markdown[:7] == [
        "| client setting | Thunderbird | Outlook | Apple Mail | K-9 Mail | curl |",
        "|---|---|---|---|---|---|",
        "| implicit TLS | SSL/TLS | SSL/TLS | Use TLS/SSL (port 465/993/995) | SSL/TLS | smtps:// imaps:// pop3s:// |",
        "| STARTTLS required | STARTTLS | STARTTLS | Use TLS/SSL (port 587/143/110) | STARTTLS | --ssl-reqd |",
        "| STARTTLS if available | STARTTLS, if available (older versions) | Auto | Automatically manage connection "
        "settings | (none) | --ssl |",
        "| no TLS | None | None | Use TLS/SSL off | None | smtp:// imap:// pop3:// without --ssl |",
        "",
    ]
    assert markdown[7] == ("| port | listener (configured mode) | implicit TLS | STARTTLS required | "
                           "STARTTLS if available | no TLS |")
    assert len(markdown) == 9 + len(EXPECTED)
    assert markdown[10].endswith(f"| smtp-starttls-required (smtp, starttls-required) | {WRONG_VERSION} | {WORKS} "
                                f"| {WORKS} | {REFUSED} |")


def test_the_probe_leaves_no_mail_and_no_pop3_lock(matrix: ThreadedMailServer) -> None:
    # Every POP3 login of the table ended with QUIT: the maildrop is free again.
    target = next(t for t in targets_from_config(matrix.config, matrix.ports) if t.name == "pop3-implicit")
    options = options_from_config(matrix.config, matrix.ca_file)
    assert probe(target, ClientSetting.IMPLICIT, options).text == WORKS
    assert matrix.call(lambda: [len(a.inbox.messages) for a in matrix.store.accounts.values()]) == [0, 0]


def test_a_wrong_password_is_a_failed_login(matrix: ThreadedMailServer) -> None:
    target = next(t for t in targets_from_config(matrix.config, matrix.ports) if t.name == "smtp-starttls-optional")
    options = ProbeOptions(matrix.ca_file, Credentials("alice", "wrong"))
    cell = probe(target, ClientSetting.STARTTLS_REQUIRED, options)
    assert (cell.outcome, cell.text) == (Outcome.LOGIN_FAILED,
                                         "login failed: 535 5.7.8 Authentication credentials invalid")


def test_a_port_with_nothing_behind_it(tmp_path: Path) -> None:
    import socket

    with socket.socket() as reserved:  # bound, never listening: connections are refused
        reserved.bind(("127.0.0.1", 0))
        target = Target("nothing", "smtp", "127.0.0.1", reserved.getsockname()[1])
        cell = probe(target, ClientSetting.NONE, ProbeOptions(None, None))
    assert (cell.outcome, cell.text) == (Outcome.UNREACHABLE, "cannot connect")
    assert cell.reason == f"127.0.0.1:{target.port}: Connection refused"


def test_an_untrusted_certificate_is_a_tls_error(matrix: ThreadedMailServer, tmp_path: Path) -> None:
    from mailmodes.tls.certs import ensure_certificates

    other_ca = ensure_certificates(tmp_path, "mail.example.test").ca_file
    target = next(t for t in targets_from_config(matrix.config, matrix.ports) if t.name == "imap-implicit")
    cell = probe(target, ClientSetting.IMPLICIT, ProbeOptions(other_ca, Credentials("alice", "alice-password")))
    assert (cell.outcome, cell.text) == (
        Outcome.TLS_ERROR, "TLS error: certificate verify failed: unable to get local issuer certificate")


def test_the_command_line_against_a_running_server(matrix: ThreadedMailServer, tmp_path: Path) -> None:
    config = tmp_path / "running.toml"
    config.write_text(running_config_toml(matrix))
    result = subprocess.run(
        [sys.executable, "-m", "mailmodes", "explain", "--config", str(config), "--format", "json"],
        check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert {row["listener"]: tuple(c["text"] for c in row["cells"]) for row in rows} == EXPECTED


def test_the_command_line_says_when_nothing_answers(tmp_path: Path) -> None:
    config = tmp_path / "nothing.toml"
    config.write_text('[[listeners]]\nname = "gone"\nprotocol = "smtp"\nport = 1\ntls = "plaintext"\n')
    result = subprocess.run(
        [sys.executable, "-m", "mailmodes", "explain", "--config", str(config), "--ca", str(config)],
        check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr == ("mailmodes: no listener answered: is the server running "
                             "(same --config and --port-offset)?\n")


def running_config_toml(server: ThreadedMailServer) -> str:
    """A TOML config naming the server's real (ephemeral) ports, for the command line."""
    config = server.config
    lines = [f'hostname = "{config.hostname}"', f'host = "{config.host}"',
             f'[certs]\ndir = "{config.certs.dir}"']
    for user in config.users:
        lines.append(f'[[users]]\nname = "{user.name}"\npassword = "{user.password}"')
    for listener in config.listeners:
        lines.append(f'[[listeners]]\nname = "{listener.name}"\nprotocol = "{listener.protocol}"\n'
                     f'port = {server.port(listener.name)}\ntls = "{listener.tls}"\nrole = "{listener.role}"')
    return "\n".join(lines) + "\n"


# --- explain --client: the same table from what a real client did (issue 21) ----------------------

OUTCOME_OF_TEXT = {WORKS: Outcome.WORKS, CLEAR: Outcome.CLEARTEXT, REFUSED: Outcome.REFUSED, HANGS: Outcome.HANGS,
                   WRONG_VERSION: Outcome.TLS_ERROR, NO_STARTTLS: Outcome.NO_STARTTLS}
MODEL_OUTCOMES = {name: tuple(OUTCOME_OF_TEXT[text] for text in row) for name, row in EXPECTED.items()}
# What each client really does where it differs from the model (checked against its own output by
# the module, and against the journal below): imaplib sends LOGIN although the server advertises
# LOGINDISABLED (RFC 3501 section 6.2.3 says it must not); the server refuses, the password has
# crossed the wire. curl does what the model does in every cell.
REAL_OUTCOMES = {
    "curl": MODEL_OUTCOMES,
    "python": {**MODEL_OUTCOMES, "imap-starttls-required": (Outcome.TLS_ERROR, Outcome.WORKS, Outcome.WORKS,
                                                            Outcome.REFUSED_AFTER_PASSWORD)},
}
SECRET_CROSSED = (Outcome.CLEARTEXT, Outcome.REFUSED_AFTER_PASSWORD)


@pytest.mark.parametrize("client", ["curl", "python"])
def test_explain_with_a_real_client_matches_what_it_did_cell_by_cell(matrix: ThreadedMailServer, tmp_path: Path,
                                                                      client: str) -> None:
    if client == "curl":
        from support import require_tool
        require_tool("curl")
    config = tmp_path / "running.toml"
    config.write_text(running_config_toml(matrix))
    before = {target.name: len(matrix.journal.sessions(listener=target.name)) for target in
              targets_from_config(matrix.config, matrix.ports)}
    result = subprocess.run(
        [sys.executable, "-m", "mailmodes", "explain", "--config", str(config), "--client", client,
         "--client-timeout", "2", "--format", "json"],
        check=False, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    comparison = json.loads(result.stdout)
    found = {row["listener"]: tuple(Outcome(cell["client"]["outcome"]) for cell in row["cells"])
             for row in comparison["rows"]}
    assert found == REAL_OUTCOMES[client]
    for row in comparison["rows"]:
        name = row["listener"]
        assert [cell["differs"] for cell in row["cells"]] == [
            real is not model for real, model in zip(REAL_OUTCOMES[client][name], MODEL_OUTCOMES[name])]
        # The server's own record agrees: as many of the row's sessions sent a secret in the clear as
        # the row has cells where the client's output says it did (the model's probes are not in it).
        matrix.journal.settle(10)
        sessions = [s for s in matrix.journal.sessions(listener=name)[before[name]:] if not s.probe]
        in_clear = [s for s in sessions if any(not encrypted and secret for encrypted, secret, _ in s.credentials)]
        assert len(in_clear) == sum(o in SECRET_CROSSED for o in found[name]), (name, found[name])
        reasons = [cell["client"]["reason"] for cell in row["cells"]]
        assert all("alice-password" not in reason for reason in reasons)


def test_explain_with_a_real_client_side_by_side_text(matrix: ThreadedMailServer) -> None:
    from mailmodes.probe.real_clients import explain_with, format_side_by_side

    options = options_from_config(matrix.config, matrix.ca_file, greeting_timeout=GREETING_TIMEOUT)
    targets = [t for t in targets_from_config(matrix.config, matrix.ports)
               if t.name in ("imap-starttls-required", "smtp-plaintext")]
    model = explain(targets, options)
    text = format_side_by_side(model, explain_with("python", targets, options, timeout=2), "python").splitlines()
    at = text.index(f"imap-starttls-required: imap on 127.0.0.1:{matrix.port('imap-starttls-required')} "
                    "(configured starttls-required)")
    assert text[at + 10:at + 13] == [
        f"  no TLS                 model:  {REFUSED}",
        "                         python: refused, but the password had already gone in the clear  ≠ differs "
        "from the model",
        "                                 imaplib.IMAP4(host, port): imaplib.IMAP4.error: b'[PRIVACYREQUIRED] Plaintext "
        "authentication disallowed on non-secure connections' (last sent: a LOGIN)",
    ]


def test_explain_with_a_client_that_is_not_there(tmp_path: Path) -> None:
    config = tmp_path / "nothing.toml"
    config.write_text('[[listeners]]\nname = "gone"\nprotocol = "smtp"\nport = 1\ntls = "plaintext"\n')
    result = subprocess.run(
        [sys.executable, "-m", "mailmodes", "explain", "--config", str(config), "--ca", str(config),
         "--client", "thunderbird"], check=False, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "mailmodes: unknown client 'thunderbird': choose one of curl, python, swaks, msmtp, openssl\n"


def test_reasons_have_no_source_locations_and_no_words_cut_in_half(table_and_time: tuple[Table, float]) -> None:
    from mailmodes.probe.explain import clip

    table, _ = table_and_time
    assert not [cell.reason for cell in table.cells if "_ssl.c" in cell.reason]
    assert clip("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] mail.example.test ready", 40) == \
        "* OK [CAPABILITY IMAP4rev1 STARTTLS …"
    assert clip("short", 40) == "short"


def test_what_the_cells_say_of_msmtp_and_openssl_is_what_they_do(matrix: ThreadedMailServer) -> None:
    """The "(checked in CI)" facts of probe/known_clients.py for msmtp and openssl s_client."""
    from mailmodes.probe.known_clients import KNOWN
    from mailmodes.probe.real_clients import explain_with
    from support import require_tool

    require_tool("msmtp")
    require_tool("openssl")
    options = options_from_config(matrix.config, matrix.ca_file, greeting_timeout=GREETING_TIMEOUT)
    targets = {t.name: t for t in targets_from_config(matrix.config, matrix.ports)}
    msmtp = explain_with("msmtp", [targets["smtp-starttls-optional"], targets["smtp-plaintext"]], options, timeout=2)
    for name in ("smtp-starttls-optional", "smtp-plaintext"):
        cell = msmtp.cell(name, ClientSetting.NONE)
        assert cell.outcome is Outcome.CLIENT_REFUSED and "cannot use a secure authentication method" in cell.reason
    assert "msmtp refuses" in KNOWN[("smtp", "plaintext", "none")] and "msmtp refuses" in KNOWN[
        ("*", "starttls-optional", "none")]
    plaintext = [targets[f"{protocol}-plaintext"] for protocol in ("smtp", "imap", "pop3")]
    openssl = explain_with("openssl", plaintext, options, timeout=2)
    for target in plaintext:  # it sent STARTTLS (STLS) although not offered, then tried TLS on the refusal
        assert openssl.cell(target.name, ClientSetting.STARTTLS_REQUIRED).outcome is Outcome.TLS_ERROR
        assert "openssl s_client -starttls" in KNOWN[(target.protocol, "plaintext", "starttls-required")]
