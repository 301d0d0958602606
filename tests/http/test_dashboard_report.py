"""The dashboard's report card, sessions table and ladder diagram in a real headless Chromium, from
real clients' sessions (curl, smtplib); screenshots land in the test's directory."""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mailmodes.app import ThreadedMailServer
from mailmodes.probe.marks import PROBE_NAME
from support import run_client

if TYPE_CHECKING:  # tests/http/conftest.py; not importable by name under --import-mode=importlib
    from conftest import Page

HOST = "127.0.0.1"
LISTENERS = (
    {"name": "stripped", "protocol": "smtp", "tls": "starttls-required", "scenario": "starttls-stripped"},
    {"name": "expired", "protocol": "smtp", "tls": "implicit", "scenario": "cert-expired"},
    {"name": "submission", "protocol": "smtp", "tls": "starttls-required"},
)


def curl(server: ThreadedMailServer, ca_file: Path, message: Path, *args: str) -> None:
    run_client(["curl", "-sS", "--max-time", "5", "--cacert", str(ca_file), "-u", "alice:alice-password",
                "--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test", "-T", str(message), *args])


def cell(browser: Page, scenario: str, protocol: str = "smtp") -> dict[str, str]:
    found: dict[str, str] = browser.evaluate(
        f"(() => {{ const td = document.querySelector('#report-card td[data-scenario=\"{scenario}\"]"
        f"[data-protocol=\"{protocol}\"]'); const a = td.querySelector('a');"
        " return {class: td.className, href: a ? a.getAttribute('href') : '', text: td.textContent,"
        " colour: getComputedStyle(td).backgroundColor}; })()")
    return found


def test_the_report_card_grid_the_sessions_table_and_the_ladder(
        api_server: Callable[..., ThreadedMailServer], browser: Page, ca_file: Path, tmp_path: Path) -> None:
    server = api_server(*LISTENERS)
    (tmp_path / "m.eml").write_bytes(b"Subject: ladder\r\n\r\nhi\r\n")
    curl(server, ca_file, tmp_path / "m.eml", "--ssl", f"smtp://{HOST}:{server.port('stripped')}")  # fails
    curl(server, ca_file, tmp_path / "m.eml", f"smtps://{HOST}:{server.port('expired')}")  # refuses: passes
    curl(server, ca_file, tmp_path / "m.eml", "--ssl-reqd", f"smtp://{HOST}:{server.port('submission')}")
    with smtplib.SMTP(HOST, server.port("submission"), timeout=10, local_hostname=PROBE_NAME) as marked:
        marked.ehlo()  # one of our probes: no outcome, hidden by the toggle
    stripped, expired, good, probe = server.journal.wait_for(4)
    assert probe.probe

    url = f"http://{HOST}:{server.http_port}/"
    browser.open(url + "#report")
    browser.wait_for("document.body.dataset.loaded === 'yes'")
    browser.wait_for("document.querySelectorAll('#report-card tbody tr').length === 3")

    # The grid: a row per scenario, a column per protocol, coloured by outcome, linked to the session.
    assert browser.evaluate("[...document.querySelectorAll('#report-card thead th')].map(th => th.textContent)") == [
        "scenario", "SMTP"]
    assert browser.evaluate("[...document.querySelectorAll('#report-card tbody th')].map(th => th.textContent)") == [
        "cert-expired", "starttls-stripped", "starttls-required"]
    failed, passed, known_good = (cell(browser, s) for s in ("starttls-stripped", "cert-expired", "starttls-required"))
    assert failed["class"] == "cell failed" and failed["href"] == f"#session={stripped.id}"
    assert "sent the password in the clear after STARTTLS was stripped" in failed["text"]
    assert passed["class"] == "cell passed" and passed["href"] == f"#session={expired.id}"
    assert known_good["class"] == "cell passed" and known_good["href"] == f"#session={good.id}"
    assert failed["colour"] != passed["colour"]
    assert "(2 passed, 1 failed, 0 inconclusive)" in browser.evaluate("document.querySelector('#report-counts').textContent")
    browser.screenshot(tmp_path / "dashboard-report-card.png")

    # The sessions table: full width, a scenario column, each session's outcome coloured.
    widths = browser.evaluate("[document.querySelector('#sessions-section').getBoundingClientRect().width,"
                              " document.querySelector('main').getBoundingClientRect().width]")
    assert widths[0] > 0.9 * widths[1], widths
    rows = browser.evaluate("[...document.querySelectorAll('#sessions tbody tr')].map(r => "
                            "[r.cells[0].textContent, r.cells[5].textContent, r.cells[9].className])")
    assert [str(stripped.id), "starttls-stripped", "outcome-cell failed"] in rows
    assert [str(expired.id), "cert-expired", "outcome-cell passed"] in rows
    assert any(row[0] == str(probe.id) for row in rows)
    browser.evaluate("document.querySelector('#filter-probes').click()")
    browser.wait_for(f"![...document.querySelectorAll('#sessions tbody tr')].some(r => r.cells[0].textContent === '{probe.id}')")
    assert browser.evaluate("document.querySelectorAll('#sessions tbody tr').length") == 3

    # The ladder beside the transcript: arrows both ways, the password line marked, the verdict and outcome.
    browser.evaluate(f"document.querySelector('#report-card td[data-scenario=\"starttls-stripped\"] a').click()")
    browser.wait_for("document.querySelector('#ladder svg') !== null")
    ladder = browser.evaluate(
        "[...document.querySelectorAll('#ladder svg > g')].map(g => [g.getAttribute('class'), "
        "g.querySelector('text').textContent])")
    assert ["step server plain", "220 mail.example.test ESMTP mailmodes"] in ladder or \
        any(kind == "step server plain" and text.startswith("220") for kind, text in ladder), ladder
    assert ["step client bad", "AUTH PLAIN"] in ladder and ["step client bad", "****"] in ladder, ladder
    assert any(kind == "mark client-fault" and text == "! credentials-in-clear" for kind, text in ladder)
    assert any(kind == "mark client-fault" and text.startswith("failed: sent the password in the clear") for kind, text in ladder)
    boxes = browser.evaluate("[document.querySelector('#ladder-box').getBoundingClientRect().toJSON(),"
                             " document.querySelector('#transcript').getBoundingClientRect().toJSON()]")
    assert boxes[0]["right"] <= boxes[1]["left"] and abs(boxes[0]["top"] - boxes[1]["top"]) < 80  # side by side
    browser.screenshot(tmp_path / "dashboard-ladder-stripped.png")

    browser.open(f"{url}#session={good.id}")
    browser.wait_for("document.querySelector('#ladder .tls-start') !== null")
    kinds = browser.evaluate("[...document.querySelectorAll('#ladder svg > g')].map(g => g.getAttribute('class'))")
    start = kinds.index("tls-start")
    assert "step client plain" in kinds[:start] and "step client tls" in kinds[start:]
    browser.open(f"{url}#session={expired.id}")
    alert = browser.wait_for("document.querySelector('#ladder g.alert text')?.textContent")
    assert alert == "TLS alert: certificate_expired"
    browser.screenshot(tmp_path / "dashboard-ladder-alert.png")

    assert browser.exceptions == []
    assert not [line for line in browser.console if "Content Security Policy" in line], browser.console
