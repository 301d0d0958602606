"""Shared fixtures: a test CA made once per run, and real servers on ephemeral loopback ports."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import support
from mailmodes.app import ThreadedMailServer
from mailmodes.disk_store import DiskAccount, DiskStore
from mailmodes.store import SPECIAL_USE_MAILBOXES, Store
from mailmodes.tls.certs import ensure_certificates
from support import HOSTNAME, MODES, make_config

# Sans-I/O session tests (they make their stores with support.make_store) that run against both
# store implementations; timing-sensitive modules stay on the memory store.
BOTH_STORES_IN = ("imap", "pop3")
MEMORY_STORE_ONLY = ("test_idle_scaling",)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module
    path = Path(module.__file__ or "")
    if (path.parent.name in BOTH_STORES_IN and path.stem not in MEMORY_STORE_ONLY
            and _makes_stores(module) and "store_kind" in metafunc.fixturenames):
        metafunc.parametrize("store_kind", ["memory", "disk"], indirect=True)


def _makes_stores(module: Any) -> bool:
    names = vars(module)
    return "make_store" in names or getattr(names.get("client"), "__module__", "") == "imap.imap_harness"


def _kept(store: Store) -> dict[str, Any]:
    """What a restart must find: every durable account's mailboxes, messages and subscriptions
    (a standard mailbox deleted comes back at start, as in memory, so only those there count)."""
    return {
        name: (sorted(account.subscriptions), {
            box_name: (box.uidvalidity, box.uidnext, box.highest_modseq,
                       [(m.uid, m.data, sorted(m.flags), m.modseq, m.internal_date) for m in box.messages])
            for box_name, box in account.mailboxes.items()})
        for name, account in store.accounts.items() if isinstance(account, DiskAccount)
    }


@pytest.fixture(autouse=True)
def store_kind(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    kind = getattr(request, "param", "memory")
    if kind == "memory":
        yield kind
        return
    made: list[DiskStore] = []

    def durable() -> Store:
        store = DiskStore(tmp_path_factory.mktemp("store"))
        made.append(store)
        return store

    original, support.STORE_FACTORY = support.STORE_FACTORY, durable
    try:
        yield kind
    finally:
        support.STORE_FACTORY = original
    for store in made:
        asyncio.run(store.flush())
        again = DiskStore(store.disk.root)
        for name, account in store.accounts.items():
            if isinstance(account, DiskAccount):
                again.add_account(name, account.password, account.addresses)
        before, after = _kept(store), _kept(again)
        for name, (_, boxes) in after.items():
            for standard in SPECIAL_USE_MAILBOXES:
                if standard not in before[name][1]:
                    boxes.pop(standard, None)
        assert after == before, "the durable store read back differs from the one the test left"


@pytest.fixture(scope="session")
def certs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("certs")
    ensure_certificates(path, HOSTNAME)
    return path


@pytest.fixture(scope="session")
def ca_file(certs_dir: Path) -> Path:
    return certs_dir / "ca.pem"


@pytest.fixture(scope="session")
def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


@pytest.fixture
def serve(certs_dir: Path) -> Iterator[Callable[..., ThreadedMailServer]]:
    """serve({"name": "imaps", "protocol": "imap", "tls": "implicit"}, ...) -> a started server.

    Ports default to 0 (read them back with server.port(name)); keyword arguments are top-level
    config keys (e.g. limits={...}). Every server started here is stopped after the test.
    Touch the store only through server.call(lambda: ...): it runs on the server's loop.
    """
    started: list[ThreadedMailServer] = []

    def start(*listeners: dict[str, Any], **top: Any) -> ThreadedMailServer:
        server = ThreadedMailServer(make_config(certs_dir, listeners, **top)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def matrix_server(certs_dir: Path) -> Iterator[ThreadedMailServer]:
    """One listener per protocol per TLS mode, named "<protocol>-<mode>" (SMTP: submission role)."""
    listeners = tuple(
        {"name": f"{protocol}-{mode}", "protocol": protocol, "tls": mode}
        for protocol in ("smtp", "imap", "pop3")
        for mode in MODES
    )
    with ThreadedMailServer(make_config(certs_dir, listeners)) as server:
        yield server
