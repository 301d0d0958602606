"""One verdict registry (record/verdicts.py): the README table, the OpenAPI enum, the API the
dashboard's legend is made of, all come from it (issue 14)."""

from __future__ import annotations

from pathlib import Path

from mailmodes import __version__
from mailmodes.record.verdicts import BY_CODE, CODES, REGISTRY, SEVERITIES, markdown_table
from mailmodes.web.openapi import openapi_document

ROOT = Path(__file__).resolve().parents[2]
# Every code the journal reached before the registry (15), plus the ones issue 14 added.
EARLIER_CODES = {"credentials-in-clear", "mail-in-clear", "no-upgrade", "pipelined-after-starttls",
                 "rejected-certificate", "tls-failed", "accepted-bad-certificate", "weak-tls",
                 "plaintext-on-tls-port", "tls-on-plaintext-port", "fallback", "acted-on-injection",
                 "used-stale-capability", "used-injected-state", "used-preauth"}


def test_every_code_has_a_title_a_severity_a_rule_and_an_explanation() -> None:
    assert EARLIER_CODES <= set(CODES) and len(CODES) == len(REGISTRY)
    for kind in REGISTRY:
        assert kind.title and kind.explanation and callable(kind.rule), kind.code
        assert kind.severity in SEVERITIES, kind.code


def test_correct_behaviour_is_shown_as_correct() -> None:
    assert BY_CODE["rejected-certificate"].severity == "client-correct"
    assert BY_CODE["accepted-bad-certificate"].severity == "client-fault"


def test_the_readme_table_is_the_registry() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme
    for code in CODES:
        assert f"| `{code}` |" in readme


def test_the_openapi_description_enumerates_the_codes() -> None:
    document = openapi_document(__version__)
    schemas = document["components"]["schemas"]
    assert schemas["Session"]["properties"]["verdicts"]["items"]["enum"] == list(CODES)
    assert schemas["Verdict"]["properties"]["code"]["enum"] == list(CODES)
    parameters = document["paths"]["/api/sessions"]["get"]["parameters"]
    assert next(p for p in parameters if p["name"] == "verdict")["schema"]["enum"] == list(CODES)
    assert "get" in document["paths"]["/api/verdicts"]


def test_the_dashboard_lists_no_code_of_its_own() -> None:
    dashboard = ROOT / "server" / "mailmodes" / "web" / "dashboard"
    for name in ("index.html", "app.js"):
        text = (dashboard / name).read_text()
        assert not [code for code in CODES if f'"{code}"' in text and code not in ("credentials-in-clear",
                                                                                   "mail-in-clear")], name
