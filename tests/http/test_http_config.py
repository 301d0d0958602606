"""The [http] table: defaults, validation, --port-offset; and the OpenAPI document's validity."""

from __future__ import annotations

import openapi_spec_validator
import pytest

from mailmodes.cli import default_config
from mailmodes.config import ConfigError, HttpConfig, parse_config
from mailmodes.probe.explain import ClientSetting, Outcome
from mailmodes.protocols import PROTOCOLS
from mailmodes.tls.policy import TlsMode
from mailmodes.web.openapi import openapi_document


def test_default_config_serves_http_on_8025_and_offset_moves_it() -> None:
    config = default_config()
    assert config.http == HttpConfig(port=8025, host="127.0.0.1")
    assert config.with_port_offset(10000).http == HttpConfig(port=18025, host="127.0.0.1")


def test_no_table_no_http_and_port_0_stays_0() -> None:
    assert parse_config({}).http is None
    assert parse_config({"http": {}}).http == HttpConfig()
    assert parse_config({"http": {"port": 0}}).with_port_offset(100).http == HttpConfig(port=0)


@pytest.mark.parametrize(("table", "message"), [
    ({"port": 70000}, "t.toml: http.port: 70000 is not a port number (0-65535; 0 picks a free one)"),
    ({"port": "8025"}, "t.toml: http.port: must be a int, not str '8025'"),
    ({"host": 1}, "t.toml: http.host: must be a str, not int 1"),
    ({"prot": 1}, "t.toml: http.prot: unknown key (allowed here: allowed_hosts, host, max_event_clients, port)"),
    ({"allowed_hosts": ["mailmodes", 5]},
     't.toml: http.allowed_hosts: must be a list of host names like "mailmodes" or "10.0.0.5"'),
    ({"max_event_clients": 0}, "t.toml: http.max_event_clients: must be greater than 0"),
])
def test_bad_http_table(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"http": table}, source="t.toml")
    assert str(caught.value) == message


def test_openapi_document_is_valid() -> None:
    openapi_spec_validator.validate(openapi_document("0.1.0"))


def test_openapi_enums_are_the_servers_own_names() -> None:
    document = openapi_document("0.1.0")
    schemas = document["components"]["schemas"]
    filters = {query["name"]: query["schema"] for query in document["paths"]["/api/sessions"]["get"]["parameters"]}
    assert filters["protocol"]["enum"] == list(PROTOCOLS)
    assert filters["mode"]["enum"] == [mode.value for mode in TlsMode]
    listener = schemas["Listener"]["properties"]
    assert listener["protocol"]["enum"] == filters["protocol"]["enum"]
    assert listener["mode"]["enum"] == filters["mode"]["enum"]
    cell = schemas["ExplainTable"]["properties"]["rows"]["items"]["properties"]["cells"]["items"]
    assert cell["properties"]["setting"]["enum"] == [setting.value for setting in ClientSetting]
    assert cell["properties"]["outcome"]["enum"] == [outcome.value for outcome in Outcome]
