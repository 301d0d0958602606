"""The early start of `mailmodes serve`: every port bound and the SMTP greeting sent while the rest
of the server is still being imported (issue 22: start to first banner).

Importing aiosmtpd, the SMTP adapter, the journal and the store is most of the time from `serve`
to a working server (~45 of ~90 ms). The configuration is known long before that, so every
listening socket is bound then and `ready` printed: from that moment every port accepts
connections. Those of IMAP, POP3, implicit TLS and HTTP wait in the kernel's backlog until the
server takes them. A plain-first SMTP client (plaintext and both STARTTLS modes) is greeted at once
by a small thread here, with the same greeting line the server would send, and then handed over:
the server records the session from its accept, the greeting included, and answers what the
client sent meanwhile (still unread in the socket) as if it had greeted it itself.

Only the known-good greeting is sent early: a listener with a scenario (whose greeting may be the
misbehaviour), an audit walk, a host name that resolves to more than one address, or a durable
store (read back at start, which can fail) leave the whole start as it was. At most as many
connections per listener are greeted as its limits let the server keep, so none greeted here is
refused later.

Nothing here imports asyncio or the protocol code: this module runs before them.
"""

from __future__ import annotations

import selectors
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

from mailmodes import __version__
from mailmodes.config import Config, Listener
from mailmodes.tls.policy import TlsMode

# The greeting's text after "220 <hostname> " (the SMTP adapter gives it to aiosmtpd as its ident).
SMTP_IDENT = f"ESMTP mailmodes {__version__}"
_PLAIN_FIRST = frozenset({TlsMode.PLAINTEXT, TlsMode.STARTTLS_OPTIONAL, TlsMode.STARTTLS_REQUIRED})
# While the greeter waits on the import: how soon the importing thread lets it answer a connect.
_SWITCH_INTERVAL = 0.0005
_BACKLOG = 100  # asyncio's create_server default, which takes these sockets over


def smtp_greeting(hostname: str) -> str:
    return f"220 {hostname} {SMTP_IDENT}"


@dataclass
class Greeted:
    """A connection greeted here, for the server to adopt."""

    listener: str
    sock: socket.socket
    accepted_at: float  # time.time() of the accept: the record's start


@dataclass
class EarlyStart:
    """The bound sockets (by listener name; `http` for [http]) and the greeter."""

    sockets: dict[str, socket.socket]
    http: socket.socket | None
    greetings: dict[str, bytes]  # listener name -> greeting, for the listeners greeted here
    caps: dict[str, int]
    greeted: list[Greeted] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _wake: tuple[socket.socket, socket.socket] | None = None
    _stopping: bool = False
    _switch_interval: float = 0.005

    def port(self, name: str) -> int:
        return int(self.sockets[name].getsockname()[1])

    def start_greeting(self) -> None:
        if not self.greetings:
            return
        self._wake = socket.socketpair()
        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(_SWITCH_INTERVAL)
        self._thread = threading.Thread(target=self._greet, name="mailmodes-early-greeter", daemon=True)
        self._thread.start()

    def stop_greeting(self) -> None:
        """No more greeting here: the server adopts `greeted` (oldest first) and takes the sockets."""
        if self._thread is not None and self._wake is not None:
            self._stopping = True
            self._wake[1].send(b"x")
            self._thread.join()
            for end in self._wake:
                end.close()
            sys.setswitchinterval(self._switch_interval)
            self._thread = None

    def take_http(self) -> socket.socket | None:
        http, self.http = self.http, None
        return http

    def close(self) -> None:
        """The server did not start (or not all of it): close what it has not taken."""
        self.stop_greeting()
        for connection in self.greeted:
            connection.sock.close()
        for sock in [*self.sockets.values(), *([self.http] if self.http else [])]:
            sock.close()
        self.greeted, self.sockets, self.http = [], {}, None

    def _greet(self) -> None:
        assert self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake[0], selectors.EVENT_READ)
            for name in self.greetings:
                self.sockets[name].setblocking(False)
                selector.register(self.sockets[name], selectors.EVENT_READ, name)
            counts = dict.fromkeys(self.greetings, 0)
            while not self._stopping:
                for key, _ in selector.select():
                    name = key.data
                    if name is None:
                        continue
                    while counts[name] < self.caps[name]:
                        try:
                            sock, _ = key.fileobj.accept()  # type: ignore[union-attr]
                        except (BlockingIOError, InterruptedError):
                            break
                        except OSError:  # e.g. out of descriptors: left to the server's own accept
                            counts[name] = self.caps[name]
                            break
                        accepted_at = time.time()
                        sock.setblocking(True)
                        try:
                            sock.sendall(self.greetings[name])  # a few bytes into an empty buffer
                        except OSError:
                            pass  # gone already: the server finds it closed and records that
                        self.greeted.append(Greeted(name, sock, accepted_at))
                        counts[name] += 1
                    if counts[name] >= self.caps[name]:
                        selector.unregister(key.fileobj)  # the rest wait in the backlog for the server


def greets_early(listener: Listener) -> bool:
    return (listener.protocol == "smtp" and listener.tls in _PLAIN_FIRST and listener.scenario is None
            and not listener.audit)


def begin(config: Config, *, greet: bool = True) -> EarlyStart | None:
    """Bind every port and start greeting (`greet`: now, else at start_greeting()), or None where
    the start stays as it was (see above); a port that cannot be bound also gives None: the
    server's own start then says why."""
    if config.store.path is not None or any(listener.audit for listener in config.listeners):
        return None
    bound: dict[str, socket.socket] = {}
    http: socket.socket | None = None
    try:
        for listener in config.listeners:
            sock = _bind(listener.host or config.host, listener.port)
            if sock is None:
                raise OSError("not one address")
            bound[listener.name] = sock
        if config.http is not None:
            http = _bind(config.http.host, config.http.port)
            if http is None:
                raise OSError("not one address")
    except (OSError, OverflowError):
        for sock in [*bound.values(), *([http] if http else [])]:
            sock.close()
        return None
    early = EarlyStart(
        sockets=bound,
        http=http,
        greetings={listener.name: (smtp_greeting(config.hostname) + "\r\n").encode()
                   for listener in config.listeners if greets_early(listener)},
        caps={listener.name: min(listener.limits.max_connections, listener.limits.max_connections_per_client)
              for listener in config.listeners},
    )
    if greet:
        early.start_greeting()
    return early


def _bind(host: str, port: int) -> socket.socket | None:
    """As asyncio's create_server binds one address (SO_REUSEADDR, IPv6 only on an IPv6 socket);
    None if the host name gives more than one (create_server would make a socket for each)."""
    found = {info[4][:2]: info for info in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                                flags=socket.AI_PASSIVE)}
    if len(found) != 1:
        return None
    family, kind, proto, _, address = next(iter(found.values()))
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock
