"""aiosmtpd's SMTP.__init__ made cheap per connection (protocols/smtp_init.py) sets what the stock
__init__ sets, and introspects nothing once a class has been seen.

Over real connections to every kind of SMTP listener (plaintext, STARTTLS optional and required,
implicit, submission with AUTH, a scenario's handler with its EHLO hook), each new connection's
protocol object is also built a second time by aiosmtpd's own __init__ (on a copy taken just
before), and the two must agree attribute by attribute.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import smtplib
import ssl
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from mailmodes.app import ThreadedMailServer
from mailmodes.protocols import smtp_adapter, smtp_init

LISTENERS = (
    {"name": "plain", "protocol": "smtp", "tls": "plaintext", "role": "mta"},
    {"name": "optional", "protocol": "smtp", "tls": "starttls-optional"},
    {"name": "required", "protocol": "smtp", "tls": "starttls-required"},
    {"name": "implicit", "protocol": "smtp", "tls": "implicit"},
    {"name": "stripped", "protocol": "smtp", "tls": "starttls-optional", "scenario": "starttls-stripped"},
)


def comparable(value: Any, owner: object) -> Any:
    """What must be equal between the two objects: methods bound to each object itself are
    compared by their function; objects made afresh for each (the stream reader, the closed
    future, which the connection goes on to finish) by what they are, not by identity."""
    if isinstance(value, weakref.ref):
        value = value()
    if isinstance(value, asyncio.StreamReader):
        return ("StreamReader", value._limit)  # type: ignore[attr-defined]
    if isinstance(value, asyncio.Future):
        return "Future"
    if inspect.ismethod(value) and value.__self__ is owner:
        return ("bound to itself", value.__func__)
    if isinstance(value, dict):
        return {key: comparable(item, owner) for key, item in value.items()}
    if isinstance(value, tuple):
        return type(value)(*(comparable(item, owner) for item in value)) if hasattr(value, "_fields") \
            else tuple(comparable(item, owner) for item in value)
    return value


@pytest.fixture
def twins(monkeypatch: pytest.MonkeyPatch) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every connection's (ours, stock) attribute dicts, right after aiosmtpd's __init__."""
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []
    fast = smtp_init.init_smtp

    def both(server: SMTP, handler: Any, *, hooks: Any, commands: Any, **options: Any) -> None:
        twin = copy.copy(server)  # what MailmodesSMTP set before calling aiosmtpd's __init__
        SMTP.__init__(twin, handler, **options)
        fast(server, handler, hooks=hooks, commands=commands, **options)
        ours = dict(vars(server))
        # aiosmtpd's tables, as the mappings MailmodesSMTP hands it (shared hooks, lazy commands)
        ours["_handle_hooks"] = dict(hooks)
        ours["_smtp_methods"] = {name: commands[name] for name in commands}
        seen.append(({key: comparable(value, server) for key, value in ours.items()},
                     {key: comparable(value, twin) for key, value in vars(twin).items()}))

    monkeypatch.setattr(smtp_adapter, "init_smtp", both)
    return seen


def talk(server: ThreadedMailServer, name: str, ca_file: Path) -> None:
    context = ssl.create_default_context(cafile=str(ca_file))
    port = server.port(name)
    if name == "implicit":
        client: smtplib.SMTP = smtplib.SMTP_SSL("127.0.0.1", port, context=context, timeout=10)
    else:
        client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    with client:
        client.ehlo("client.test")
        if name in ("optional", "required"):
            client.starttls(context=context)
            client.ehlo("client.test")


def test_fast_init_sets_what_aiosmtpds_init_sets(serve: Callable[..., ThreadedMailServer],
                                                 twins: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    server = serve(*LISTENERS)
    assert server.ca_file is not None
    for listener in LISTENERS:
        talk(server, str(listener["name"]), server.ca_file)
    assert len(twins) == len(LISTENERS)
    for ours, stock in twins:
        assert ours.keys() == stock.keys()
        differing = {key for key in stock if ours[key] != stock[key]}
        assert not differing, {key: (ours[key], stock[key]) for key in differing}
    offered = [sorted(ours["_auth_methods"]) for ours, _ in twins]
    assert ["LOGIN", "PLAIN"] in offered  # the comparison covered a listener with mechanisms


def test_no_introspection_per_connection(serve: Callable[..., ThreadedMailServer],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """aiosmtpd's own __init__ calls inspect.getmembers twice for every connection."""
    server = serve(*LISTENERS[:1])
    assert server.ca_file is not None
    talk(server, "plain", server.ca_file)  # the first connection of a class may look
    calls: list[Any] = []
    getmembers = inspect.getmembers

    def counted(*args: Any, **kwargs: Any) -> Iterator[Any]:
        calls.append(args)
        return getmembers(*args, **kwargs)  # type: ignore[return-value]

    monkeypatch.setattr(inspect, "getmembers", counted)
    for _ in range(3):
        talk(server, "plain", server.ca_file)
    assert calls == []


def test_old_ehlo_hook_is_left_to_aiosmtpd() -> None:
    """A 4-argument handle_EHLO is deprecated in aiosmtpd (it warns); the fast path refuses it
    rather than silently differ."""

    class Old:
        async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str) -> str:
            return "250 ok"

    with pytest.raises(TypeError, match="4-argument"):
        smtp_init._ehlo_hook_version(Old().handle_EHLO)
