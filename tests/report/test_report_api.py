"""GET /api/report and `mailmodes report --api URL`: the card of real sessions, scoped by the
query, without our own probes; its OpenAPI entry validates."""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import junitparser
import openapi_spec_validator
import pytest

from mailmodes.cli import main
from mailmodes.probe.marks import PROBE_NAME
from mailmodes.web.openapi import openapi_document

HOST = "127.0.0.1"
LISTENERS = [
    {"name": "stripped", "protocol": "smtp", "tls": "starttls-required", "scenario": "starttls-stripped"},
    {"name": "expired", "protocol": "smtp", "tls": "implicit", "scenario": "cert-expired"},
    {"name": "good", "protocol": "smtp", "tls": "starttls-required"},
]


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


@pytest.fixture
def played(mailmodes_factory: Callable[..., Any]) -> Any:
    """smtplib three ways: logs in although STARTTLS was stripped (fails), refuses the expired
    certificate (passes), uses STARTTLS on the known-good port (passes); and a probe, marked."""
    server = mailmodes_factory(LISTENERS)
    with smtplib.SMTP(HOST, server.port("stripped"), timeout=10) as careless:
        careless.login("alice", "alice-password")
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL(HOST, server.port("expired"), timeout=10, context=server.ssl_context)
    with smtplib.SMTP(HOST, server.port("good"), timeout=10) as correct:
        correct.starttls(context=server.ssl_context)
        correct.login("alice", "alice-password")
    with smtplib.SMTP(HOST, server.port("stripped"), timeout=10, local_hostname=PROBE_NAME) as probe:
        probe.login("alice", "alice-password")  # a probe's session is never on the card
    assert len(server.sessions()) == 4
    return server


def test_the_api_report_card_of_real_sessions(played: Any) -> None:
    status, kind, body = get(f"{played.http_url}/api/report")
    assert status == 200 and kind.startswith("application/json")
    card = json.loads(body)
    rows = {row["scenario"]: row for row in card["rows"]}
    assert set(rows) == {"starttls-stripped", "cert-expired", "starttls-required"}
    assert card["counts"] == {"passed": 2, "failed": 1, "inconclusive": 0} and card["sessions"] == 3
    assert rows["starttls-stripped"]["outcome"] == "failed"
    assert rows["starttls-stripped"]["reason"].startswith(
        "sent the password in the clear after STARTTLS was stripped (AUTH PLAIN: the secret itself was sent")
    assert rows["cert-expired"]["outcome"] == "passed" and "certificate_expired" in rows["cert-expired"]["reason"]
    assert rows["starttls-required"]["outcome"] == "passed"
    first = played.sessions()[0]
    assert rows["starttls-stripped"]["session"] == first.id


def test_the_scope_narrows_the_card_and_bad_queries_are_400(played: Any) -> None:
    base = f"{played.http_url}/api/report"
    assert json.loads(get(f"{base}?protocol=imap")[2])["rows"] == []
    assert json.loads(get(f"{base}?client=192.0.2.1")[2])["rows"] == []
    assert len(json.loads(get(f"{base}?client={HOST}&protocol=smtp")[2])["rows"]) == 3
    assert json.loads(get(f"{base}?since=2999-01-01T00:00:00")[2])["rows"] == []
    status, _, body = get(f"{base}?verdict=fallback")
    assert status == 400 and "unknown query parameter 'verdict'" in json.loads(body)["error"]
    assert get(f"{base}?format=pdf")[0] == 400
    status, kind, body = get(f"{base}?format=junit")
    assert status == 200 and kind.startswith("application/xml") and b"<testsuites" in body


def test_the_openapi_entry_validates_and_describes_the_card() -> None:
    document = openapi_document("0.1.0")
    openapi_spec_validator.validate(document)
    operation = document["paths"]["/api/report"]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"client", "since", "until", "protocol", "listener",
                                                           "format"}
    assert "ReportCard" in document["components"]["schemas"]


def test_the_cli_prints_the_card_as_text_json_and_junit(played: Any, capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    assert main(["report", "--api", played.http_url]) == 0
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if "starttls-stripped" in line)
    assert " FAILED " in line and "sent the password in the clear after STARTTLS was stripped" in line
    assert text.rstrip().endswith("2 passed, 1 failed, 0 inconclusive")
    assert main(["report", "--api", played.http_url, "--check"]) == 1  # a scenario failed
    capsys.readouterr()
    assert main(["report", "--api", played.http_url, "--format", "json", "--client", HOST]) == 0
    assert json.loads(capsys.readouterr().out)["scope"] == {"client": HOST}
    junit = tmp_path / "mailmodes.xml"
    assert main(["report", "--api", played.http_url, "--format", "junit", "--output", str(junit)]) == 0
    cases = {case.name: case for suite in junitparser.JUnitXml.fromfile(str(junit)) for case in suite}
    assert set(cases) == {"starttls-stripped", "cert-expired", "starttls-required"}
    assert cases["starttls-stripped"].result[0].message.startswith("sent the password in the clear")
    assert main(["report", "--api", "http://127.0.0.1:9", "--format", "json"]) == 1
    assert "cannot reach the API" in capsys.readouterr().err
