"""A sans-I/O harness for ImapSession: a store, a Connection without sockets, bytes in and out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mailmodes.protocols.events import Close, Output, StartTls
from mailmodes.protocols.imap.session import ImapSession
from mailmodes.store import Store
from mailmodes.tls.policy import Security
from support import make_store, sans_io_connection

HOST = "mail.example.test"
SIMPLE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: Bob <bob@example.test>\r\n"
    b"Subject: Hello\r\n"
    b"Date: Tue, 01 Feb 2022 10:00:00 +0000\r\n"
    b"\r\n"
    b"Hi Bob,\r\nsee you.\r\n"
)
WHEN = datetime(2022, 2, 1, 10, 0, 5, tzinfo=UTC)


@dataclass
class Client:
    """One session plus what it produced; `actions` collects StartTls/Close in order."""

    session: ImapSession
    security: Security
    wakes: int = 0
    actions: list[Output] = field(default_factory=list)

    def _collect(self, outputs: list[Output]) -> bytes:
        data = b""
        for output in outputs:
            if isinstance(output, bytes):
                assert not self.actions or not isinstance(self.actions[-1], Close), "output after Close"
                data += output
            else:
                self.actions.append(output)
        return data

    def greeting(self) -> bytes:
        return self._collect(self.session.greeting())

    def send(self, data: bytes) -> bytes:
        return self._collect(self.session.feed(data))

    def wake(self) -> bytes:
        return self._collect(self.session.wake())

    def tls_started(self) -> bytes:
        self.security.tls_started()
        return self._collect(self.session.tls_started())

    @property
    def closed(self) -> bool:
        return any(isinstance(action, Close) for action in self.actions)

    @property
    def started_tls(self) -> bool:
        return any(isinstance(action, StartTls) for action in self.actions)

    def login(self, user: str = "alice") -> None:
        reply = self.send(f"L0 LOGIN {user} {user}-password\r\n".encode())
        assert reply.startswith(b"L0 OK"), reply

    def enable(self, extensions: str) -> None:
        """ENABLE `extensions` (space-separated), all of them newly enabled: RFC 5161's two lines."""
        names = extensions.encode()
        assert self.send(b"E0 ENABLE " + names + b"\r\n") == b"* ENABLED " + names + b"\r\nE0 OK ENABLE completed\r\n"

    def select(self, mailbox: str = "INBOX") -> bytes:
        reply = self.send(f"S0 SELECT {mailbox}\r\n".encode())
        assert b"S0 OK" in reply, reply
        return reply


def client(
    store: Store | None = None,
    mode: str = "plaintext",
    *,
    encrypted: bool | None = None,
    tls_available: bool = True,
    **limits: Any,
) -> Client:
    holder: list[Client] = []

    def wake() -> None:
        holder[0].wakes += 1

    connection = sans_io_connection(
        "imap", mode, encrypted=encrypted, tls_available=tls_available, wake=wake, limits=limits
    )
    result = Client(ImapSession(connection, store if store is not None else make_store(), HOST), connection.security)
    holder.append(result)
    return result


def lines(data: bytes) -> list[bytes]:
    return data.split(b"\r\n")[:-1] if data.endswith(b"\r\n") else data.split(b"\r\n")
