"""The dashboard in a real headless Chromium: listeners, a live session from a real client with
its TLS boundary, verdict lines, and hostile mail shown as text that runs nothing."""

from __future__ import annotations

import json
import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mailmodes.app import ThreadedMailServer
from mailmodes.protocols import PROTOCOLS
from mailmodes.tls.policy import TlsMode
from support import run_client

if TYPE_CHECKING:  # tests/http/conftest.py; not importable by name under --import-mode=importlib
    from conftest import Page

HOST = "127.0.0.1"
HOSTILE_SUBJECT = "<script>alert(1)</script>"
HOSTILE_HTML = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"
MESSAGE = (f"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: {HOSTILE_SUBJECT}\r\n"
           f"Content-Type: text/html; charset=utf-8\r\n\r\n{HOSTILE_HTML}\r\n").encode()


def listeners() -> tuple[dict[str, str], ...]:
    return (
        {"name": "submission", "protocol": "smtp", "tls": "starttls-required"},
        {"name": "plain", "protocol": "smtp", "tls": "plaintext"},
        {"name": "imaps", "protocol": "imap", "tls": "implicit"},
        {"name": "pop3", "protocol": "pop3", "tls": "starttls-optional"},
    )


def js(value: object) -> str:
    return json.dumps(value)


def test_dashboard_shows_listeners_live_sessions_tls_boundary_and_hostile_mail_as_text(
        api_server: Callable[..., ThreadedMailServer], browser: Page, ca_file: Path, tmp_path: Path) -> None:
    server = api_server(*listeners())
    url = f"http://{HOST}:{server.http_port}/"

    # A real client (curl) upgrades with STARTTLS, logs in and sends the hostile message to bob.
    (tmp_path / "hostile.eml").write_bytes(MESSAGE)
    result = run_client(["curl", "-sS", "--max-time", "10", "--ssl-reqd", "--cacert", str(ca_file),
                         "-u", "alice:alice-password", "--mail-from", "alice@example.test",
                         "--mail-rcpt", "bob@example.test", "-T", str(tmp_path / "hostile.eml"),
                         f"smtp://{HOST}:{server.port('submission')}"])
    assert result.returncode == 0, result.stderr
    [curl_session] = server.journal.wait_for(1)

    browser.open(url)
    browser.wait_for("document.body.dataset.loaded === 'yes'")

    # The listener matrix: a row per protocol, a column per mode, both as the server names them;
    # each listener under its protocol and mode, with its bound port.
    modes = [mode.value for mode in TlsMode]
    assert browser.evaluate("[...document.querySelectorAll('#matrix thead th')].map(th => th.textContent)") == [
        "protocol", *modes]
    assert browser.evaluate("[...document.querySelectorAll('#matrix tbody th')].map(th => th.textContent)") == [
        protocol.upper() for protocol in PROTOCOLS]
    for listener in listeners():
        cell = browser.evaluate(
            f"[...document.querySelectorAll('#matrix tbody tr')]"
            f".find(r => r.cells[0].textContent === {js(listener['protocol'].upper())})"
            f".cells[{modes.index(listener['tls']) + 1}]"
            ".textContent")
        assert f":{server.port(listener['name'])} {listener['name']}" in cell

    # The curl session is listed; its transcript marks where TLS began, right before the
    # server's "[TLS established ...]" line, with plaintext above and encrypted below.
    assert browser.wait_for("document.querySelector('#sessions tbody').textContent.includes('submission')")
    browser.open(f"{url}#session={curl_session.id}")
    browser.wait_for("document.querySelector('#transcript .tls-boundary') !== null")
    rows = browser.evaluate(
        "[...document.querySelector('#transcript').children].map(e => [e.className, e.textContent])")
    boundary = next(i for i, (kind, _) in enumerate(rows) if kind == "tls-boundary")
    assert rows[boundary][1] == "TLS began here"
    assert "tls-established" in rows[boundary + 1][0] and "[TLS established: TLSv1.3" in rows[boundary + 1][1]
    assert rows[boundary - 1][1].endswith("220 2.0.0 Ready to start TLS")
    assert all("plain" in kind.split() for kind, _ in rows[:boundary])
    wire = [kind.split() for kind, _ in rows if {"client", "server"} & set(kind.split())]
    assert all("tls" in kind for kind in wire[boundary:]) and len(wire) > boundary + 3
    assert sum(kind == "tls-boundary" for kind, _ in rows) == 1
    browser.screenshot(tmp_path / "dashboard-starttls.png")

    # The hostile subject is text in the messages list, and nothing it carries ran.
    subjects = browser.wait_for(
        "[...document.querySelectorAll('#messages td.subject')].map(td => td.textContent).join('|') || null")
    assert subjects == HOSTILE_SUBJECT
    assert browser.evaluate("document.querySelectorAll('#messages script, #messages img').length") == 0
    browser.open(f"{url}#message=bob/INBOX/1")
    body = browser.wait_for("document.querySelector('#message-parts pre')?.textContent")
    assert body.strip() == HOSTILE_HTML  # the HTML part shown as its source
    assert browser.evaluate("document.querySelectorAll('main script, main img').length") == 0
    headers = browser.evaluate("[...document.querySelectorAll('#message-headers tr')].map(r => r.textContent)")
    assert f"Subject{HOSTILE_SUBJECT}" in headers
    assert browser.evaluate("document.title") == "mailmodes"
    assert browser.dialogs == []
    assert browser.evaluate("document.querySelector('#message-raw').getAttribute('href')") == \
        "/api/messages/bob/INBOX/1/raw"
    assert browser.evaluate("document.querySelector('#ca-link').getAttribute('href')") == "/ca.pem"

    # Live: a new plaintext login shows up without reloading, with its verdict lines highlighted
    # (after two failed attempts, which the session facts name).
    with smtplib.SMTP(HOST, server.port("plain"), timeout=10) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("alice", "wrong")  # AUTH PLAIN, then AUTH LOGIN
        client.login("alice", "alice-password")
    [_, plain_session] = server.journal.wait_for(2)
    browser.wait_for(f"[...document.querySelectorAll('#sessions tbody tr')]"
                     f".some(r => r.cells[0].textContent === '{plain_session.id}' && "
                     "r.textContent.includes('credentials-in-clear'))")
    browser.open(f"{url}#session={plain_session.id}")
    verdict = browser.wait_for("document.querySelector('#transcript .verdict-line')?.textContent")
    assert verdict.startswith("!credentials-in-clear: AUTH PLAIN")
    flagged = browser.evaluate("[...document.querySelectorAll('#transcript .flagged .text')].map(e => e.textContent)")
    assert flagged and all(text.startswith("AUTH") or text == "****" for text in flagged)
    facts = browser.evaluate("[...document.querySelectorAll('#session-facts dt, #session-facts dd')].map(e => e.textContent)")
    assert facts[facts.index("user") + 1] == "alice"
    assert facts[facts.index("failed logins") + 1] == "AUTH PLAIN as alice, AUTH LOGIN as alice"
    assert browser.evaluate("document.querySelector('#transcript .tls-boundary')") is None
    assert browser.evaluate("document.querySelector('#live').dataset.state") == "live"

    assert browser.exceptions == []
    assert not [line for line in browser.console if "Content Security Policy" in line], browser.console
    assert browser.screenshot(tmp_path / "dashboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_teaching_panel_runs_explain_on_a_click_and_colours_each_outcome(
        api_server: Callable[..., ThreadedMailServer], browser: Page, tmp_path: Path) -> None:
    server = api_server({"name": "submissions", "protocol": "smtp", "tls": "implicit"},
                        {"name": "submission", "protocol": "smtp", "tls": "starttls-required"})
    browser.open(f"http://{HOST}:{server.http_port}/")
    browser.wait_for("document.body.dataset.loaded === 'yes'")
    # Not run on load: the table is hidden and nothing connected to the mail ports.
    assert browser.evaluate("document.querySelector('#explain').hidden") is True
    assert server.journal.sessions(include_open=True) == []

    browser.evaluate("document.querySelector('#explain-run').click()")
    browser.wait_for("document.querySelectorAll('#explain tbody tr').length === 2")
    headers = browser.evaluate("[...document.querySelectorAll('#explain thead th')].map(th => th.textContent)")
    assert headers[0] == "listener"
    assert headers[1].startswith("implicit TLS") and "Thunderbird “SSL/TLS”" in headers[1]
    assert "Outlook “Auto”" in headers[3] and "curl --ssl" in headers[3]
    rows = browser.evaluate(
        "[...document.querySelectorAll('#explain tbody tr')].map(r => ({name: r.dataset.listener, "
        "cells: [...r.querySelectorAll('td')].map(td => [td.className, td.querySelector('.text').textContent, "
        "td.title, td.querySelector('.reason').textContent])}))")
    kinds = {row["name"]: [cell[0] for cell in row["cells"]] for row in rows}
    assert kinds == {
        "submissions": ["outcome works", "outcome hangs", "outcome hangs", "outcome hangs"],
        "submission": ["outcome tls-error", "outcome works", "outcome works", "outcome refused"],
    }
    submission = next(row["cells"] for row in rows if row["name"] == "submission")
    assert [cell[1] for cell in submission] == [
        "TLS error: wrong version number (the port speaks plaintext first)", "works (TLS 1.3)", "works (TLS 1.3)",
        "refused before login: server requires STARTTLS"]
    assert all(cell[2] and cell[2] == cell[3] for row in rows for cell in row["cells"])  # reason: tooltip and text
    notes = browser.evaluate("[...document.querySelectorAll('#explain tr[data-listener=submission] td')]"
                             ".map(td => td.querySelector('.real-clients')?.textContent || '')")
    assert notes[:3] == ["", "", ""] and notes[3].startswith("real clients: curl tries MAIL anyway and gets 530")
    assert "Apple Mail “Use TLS/SSL (port 465/993/995)”, K-9 “SSL/TLS”" in headers[1]
    # each cell links to the probe session it produced, whose transcript opens on a click
    links = browser.evaluate("[...document.querySelectorAll('#explain td a.session-link')].map(a => a.hash)")
    assert len(links) == 8 and len(set(links)) == 8, links
    probe_ids = {record.id for record in server.journal.sessions(probes=True)}
    assert {int(link.removeprefix("#session=")) for link in links} <= probe_ids
    browser.evaluate("document.querySelector('#explain tr[data-listener=submission] td a.session-link').click()")
    browser.wait_for("document.querySelector('#transcript-title').textContent.includes('on submission')")
    colours = browser.evaluate("['works', 'hangs', 'tls-error', 'refused'].map(kind => "
                               "getComputedStyle(document.querySelector('#explain td.' + kind)).backgroundColor)")
    assert len(set(colours)) == 4, colours
    assert browser.evaluate("document.querySelector('#explain-run').textContent") == "Run again"
    assert "probed at" in browser.evaluate("document.querySelector('#explain-status').textContent")
    browser.screenshot(tmp_path / "dashboard-explain.png")

    assert browser.exceptions == []
    assert not [line for line in browser.console if "Content Security Policy" in line], browser.console


def test_the_verdict_legend_is_the_registry_and_a_rejected_certificate_is_green(
        api_server: Callable[..., ThreadedMailServer], browser: Page, ca_file: Path) -> None:
    from mailmodes.record.verdicts import REGISTRY

    server = api_server({"name": "expired", "protocol": "smtp", "tls": "implicit", "scenario": "cert-expired"})
    result = run_client(["openssl", "s_client", "-connect", f"{HOST}:{server.port('expired')}", "-CAfile",
                         str(ca_file), "-verify_return_error", "-brief"])
    assert result.returncode != 0 and "certificate has expired" in result.stdout + result.stderr
    [record] = server.journal.wait_for(1)
    assert [v.code for v in record.verdicts] == ["rejected-certificate"]
    url = f"http://{HOST}:{server.http_port}/"
    browser.open(url)
    browser.wait_for("document.body.dataset.loaded === 'yes'")
    legend = browser.evaluate("[...document.querySelectorAll('#verdict-legend .legend-entry')].map(e => e.dataset.code)")
    assert legend == [kind.code for kind in REGISTRY]
    options = browser.evaluate("[...document.querySelectorAll('#verdict-codes option')].map(o => o.value)")
    assert options == legend
    chip = "document.querySelector('#sessions tbody .verdict')"
    browser.wait_for(f"{chip}?.textContent.includes('rejected-certificate')")
    assert browser.evaluate(f"{chip}.className") == "verdict client-correct"
    assert browser.evaluate(f"{chip}.textContent").startswith("\u2713")  # a tick, not a "!"
    green = browser.evaluate("getComputedStyle(document.querySelector('.legend-tls')).backgroundColor")
    assert browser.evaluate(f"getComputedStyle({chip}).backgroundColor") == green
    browser.open(f"{url}#session={record.id}")
    line = browser.wait_for("document.querySelector('#transcript .verdict-line')?.className")
    assert line == "line verdict-line client-correct"
    assert browser.exceptions == []
