"""`mailmodes explain`: what each client setting meets on each port, found out by trying.

A probe client connects to every listener once per client setting (implicit TLS, STARTTLS
required, STARTTLS if available, no TLS), logs in with a configured user where it can and logs
out, and says what happened in plain words with the reason. It talks to ports only, with
sockets and the stdlib (no server internals), so it works as well against the Docker container.

The cells run concurrently on threads; a cell that waits for a greeting that never comes (a
plaintext client on an implicit-TLS port) gives up after `greeting_timeout` seconds, so the
whole table takes about that long.
"""

from __future__ import annotations

import abc
import base64
import enum
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailmodes.config import Config
from mailmodes.probe.known_clients import real_clients_here
from mailmodes.probe.marks import IMAP_TAG_PREFIX, POP3_MARK, PROBE_NAME, mark_line

MAX_LINE = 8192
WILDCARDS = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


class ClientSetting(enum.StrEnum):
    IMPLICIT = "implicit"
    STARTTLS_REQUIRED = "starttls-required"
    STARTTLS_IF_AVAILABLE = "starttls-if-available"
    NONE = "none"


@dataclass(frozen=True)
class SettingInfo:
    setting: ClientSetting
    title: str
    thunderbird: str
    outlook: str
    apple_mail: str
    k9: str
    curl: str

    def as_dict(self) -> dict[str, str]:
        return {"setting": str(self.setting), "title": self.title, "thunderbird": self.thunderbird,
                "outlook": self.outlook, "apple_mail": self.apple_mail, "k9": self.k9, "curl": self.curl}


# Apple Mail has one "Use TLS/SSL" box and decides by the port: implicit TLS on 465/993/995,
# STARTTLS on 587/143/110. K-9 Mail (Thunderbird for Android) has no "if available" setting.
SETTINGS: tuple[SettingInfo, ...] = (
    SettingInfo(ClientSetting.IMPLICIT, "implicit TLS", "SSL/TLS", "SSL/TLS", "Use TLS/SSL (port 465/993/995)",
                "SSL/TLS", "smtps:// imaps:// pop3s://"),
    SettingInfo(ClientSetting.STARTTLS_REQUIRED, "STARTTLS required", "STARTTLS", "STARTTLS",
                "Use TLS/SSL (port 587/143/110)", "STARTTLS", "--ssl-reqd"),
    SettingInfo(ClientSetting.STARTTLS_IF_AVAILABLE, "STARTTLS if available",
                "STARTTLS, if available (older versions)", "Auto", "Automatically manage connection settings",
                "(none)", "--ssl"),
    SettingInfo(ClientSetting.NONE, "no TLS", "None", "None", "Use TLS/SSL off", "None",
                "smtp:// imap:// pop3:// without --ssl"),
)


class Outcome(enum.StrEnum):
    WORKS = "works"                      # logged in over TLS
    CLEARTEXT = "works-cleartext"        # logged in, password sent without TLS
    REFUSED = "refused"                  # the server refused before any password was sent
    # Only real clients (probe/real_clients.py) end these two ways; the model client never does.
    REFUSED_AFTER_PASSWORD = "refused-after-password"  # refused, but the client had sent the password
    CLIENT_REFUSED = "client-refused"    # the client itself would not send the password unencrypted
    HANGS = "hangs"                      # nothing came back before the timeout
    TLS_ERROR = "tls-error"              # the handshake failed
    NO_STARTTLS = "no-starttls"          # the client wanted STARTTLS and the server has none
    LOGIN_FAILED = "login-failed"        # credentials rejected, or an unexpected reply
    UNREACHABLE = "unreachable"          # could not connect, or the connection dropped


@dataclass(frozen=True)
class Target:
    """One listener to probe. `mode` is what the config says, shown as a label only: the probe
    finds out what the port really does."""

    name: str
    protocol: str
    host: str
    port: int
    mode: str = ""
    scenario: str | None = None  # what real clients are known to do there depends on it


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str


@dataclass(frozen=True)
class Cell:
    target: Target
    setting: ClientSetting
    outcome: Outcome
    text: str          # "works (TLS 1.3)", in the words a student reads
    reason: str        # what the client saw: the reply line, the TLS error ...
    seconds: float
    client_port: int = 0  # the probe's own port: the journal's session of this cell is the one from it

    def as_dict(self) -> dict[str, Any]:
        return {"setting": str(self.setting), "outcome": str(self.outcome), "text": self.text,
                "reason": self.reason, "seconds": round(self.seconds, 3), "client_port": self.client_port}


@dataclass(frozen=True)
class Table:
    targets: tuple[Target, ...]
    cells: tuple[Cell, ...]
    settings: tuple[SettingInfo, ...] = SETTINGS

    def cell(self, name: str, setting: ClientSetting) -> Cell:
        return next(c for c in self.cells if c.target.name == name and c.setting is setting)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per listener, its cells in the order of `settings`: what the dashboard renders."""
        return [
            {"listener": t.name, "protocol": t.protocol, "address": f"{t.host}:{t.port}", "port": t.port,
             "mode": t.mode, "cells": [{**self.cell(t.name, s.setting).as_dict(),
                                        "real_clients": real_clients_here(t, s.setting)} for s in self.settings]}
            for t in self.targets
        ]

    def as_dict(self) -> dict[str, Any]:
        return {"settings": [s.as_dict() for s in self.settings], "rows": self.rows()}


@dataclass(frozen=True)
class ProbeOptions:
    ca_file: Path | None
    credentials: Credentials | None
    greeting_timeout: float = 1.5   # the hang case: short, so the table takes seconds
    timeout: float = 5.0            # every other read, handshake and connect
    # RFC 1939 section 8: a POP3 server locks the maildrop while a session holds it, so POP3
    # logins for the same user are taken one at a time (by this probe, not by the server).
    pop3_login: threading.Lock = field(default_factory=threading.Lock, compare=False)


class Wire:
    """A socket read line by line, that can be upgraded to TLS once its read buffer is empty."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.tls_version: str | None = None

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def read_line(self, timeout: float) -> str:
        self.sock.settimeout(timeout)
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise ProtocolError(f"a line longer than {MAX_LINE} octets")
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionClosed(self.buffer.decode("utf-8", "replace").strip())
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def start_tls(self, context: ssl.SSLContext, server_hostname: str, timeout: float) -> None:
        """TLS with SNI PROBE_NAME (probe/marks.py: the journal knows our probes by it). So the
        context checks no host name (probe_context); where it verifies certificates, the name is
        checked against `server_hostname` here. On a failed handshake the plaintext connection
        stays usable, for the probe's mark."""
        # Bytes that arrived before the handshake are not part of the TLS session (RFC 3207
        # section 4.2 and RFC 2595 section 3.1 discard them on the server side; so do we).
        self.buffer = b""
        self.sock.settimeout(timeout)
        spare = self.sock.dup()  # wrap_socket closes the socket it was given when the handshake fails
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=PROBE_NAME)
        except BaseException:
            self.sock = spare
            raise
        spare.close()
        self.tls_version = self.sock.version()
        if context.verify_mode == ssl.CERT_REQUIRED:
            check_name(self.sock.getpeercert() or {}, server_hostname)

    def mark(self, protocol: str) -> None:
        """Say the probe's mark line without waiting for an answer (the cell is decided already)."""
        try:
            self.sock.sendall(b"\r\n" + mark_line(protocol).encode() + b"\r\n")
        except OSError:
            pass

    def wait_for_close(self, timeout: float) -> None:
        """Read until the server closes (after QUIT/LOGOUT), so its session has really ended."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(4096):
                pass
        except (OSError, ssl.SSLError):
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def probe_context(cafile: str | None) -> ssl.SSLContext:
    """A verifying client context whose host-name check Wire.start_tls does itself (the SNI it
    sends is the probe's name, not the host's)."""
    context = ssl.create_default_context(cafile=cafile)
    context.check_hostname = False
    return context


def check_name(certificate: dict[str, Any], host: str) -> None:
    """RFC 6125 / RFC 7817: `host` is one of the certificate's subjectAltName entries (an IP
    address entry for an address; a DNS name, or a wildcard for one label); else the error
    OpenSSL's own check raises, in its words."""
    names = certificate.get("subjectAltName", ())
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        wanted = host.lower().rstrip(".")
        found = any(kind == "DNS" and _dns_matches(str(value).lower(), wanted) for kind, value in names)
    else:
        found = any(kind == "IP Address" and _same_address(str(value), address) for kind, value in names)
    if not found:
        message = f"Hostname mismatch, certificate is not valid for '{host}'."
        error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
        error.verify_message, error.verify_code = message, 62
        raise error


def _dns_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("*."):
        label, _, rest = name.partition(".")
        return bool(label) and rest == pattern[2:]
    return pattern == name


def _same_address(text: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text.strip()) == address
    except ValueError:
        return False


class ProtocolError(Exception):
    """The server said something the probe cannot read."""


class ConnectionClosed(ProtocolError):
    """The server closed the connection; args[0] is whatever partial line came before."""


@dataclass(frozen=True)
class Login:
    ok: bool
    refused_for_tls: bool   # refused because the connection is not encrypted; no password sent
    reply: str


class Driver(abc.ABC):
    """The few commands of one protocol the probe needs. Subclasses: SMTP, IMAP, POP3."""

    name = ""

    @abc.abstractmethod
    def greeting(self, wire: Wire, timeout: float) -> str:
        ...

    @abc.abstractmethod
    def capabilities(self, wire: Wire, timeout: float) -> set[str]:
        ...

    @abc.abstractmethod
    def offers_starttls(self, capabilities: set[str]) -> bool:
        ...

    @abc.abstractmethod
    def starttls(self, wire: Wire, timeout: float) -> tuple[bool, str]:
        ...

    @abc.abstractmethod
    def login(self, wire: Wire, credentials: Credentials, capabilities: set[str], timeout: float) -> Login:
        ...

    @abc.abstractmethod
    def logout(self, wire: Wire, timeout: float) -> None:
        ...


class SmtpDriver(Driver):
    name = "smtp"

    def _reply(self, wire: Wire, timeout: float) -> list[str]:
        # RFC 5321 section 4.2.1: "250-" continues a reply, "250 " ends it.
        lines = [wire.read_line(timeout)]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(wire.read_line(timeout))
        if not lines[-1][:3].isdigit():
            raise ProtocolError(f"not an SMTP reply: {lines[-1][:80]!r}")
        return lines

    def greeting(self, wire: Wire, timeout: float) -> str:
        return self._reply(wire, timeout)[0]

    def capabilities(self, wire: Wire, timeout: float) -> set[str]:
        wire.send(f"EHLO {PROBE_NAME}")
        lines = self._reply(wire, timeout)
        return {line[4:].strip().upper() for line in lines[1:]} if lines[0].startswith("250") else set()

    def offers_starttls(self, capabilities: set[str]) -> bool:
        return "STARTTLS" in capabilities

    def starttls(self, wire: Wire, timeout: float) -> tuple[bool, str]:
        wire.send("STARTTLS")
        reply = self._reply(wire, timeout)[-1]
        return reply.startswith("220"), reply

    def login(self, wire: Wire, credentials: Credentials, capabilities: set[str], timeout: float) -> Login:
        mechanisms = next((c.split()[1:] for c in capabilities if c.startswith("AUTH ")), [])
        if "PLAIN" not in mechanisms:
            # AUTH not offered (RFC 4954 section 4: not before TLS where TLS is required). Ask
            # anyway, without the credentials, to show the server's own words.
            wire.send("AUTH PLAIN")
            reply = self._reply(wire, timeout)[-1]
            if reply.startswith("334"):
                wire.send("*")  # RFC 4954 section 4: cancel the exchange
                self._reply(wire, timeout)
                return Login(False, False, "AUTH PLAIN not advertised")
            return Login(False, reply[:3] in ("530", "538"), reply)
        token = base64.b64encode(f"\0{credentials.user}\0{credentials.password}".encode()).decode()
        wire.send(f"AUTH PLAIN {token}")
        reply = self._reply(wire, timeout)[-1]
        return Login(reply.startswith("235"), False, reply)

    def logout(self, wire: Wire, timeout: float) -> None:
        wire.send("QUIT")
        self._reply(wire, timeout)


class ImapDriver(Driver):
    name = "imap"

    def __init__(self) -> None:
        self.tags = iter(f"{IMAP_TAG_PREFIX}{n}" for n in range(1, 1000))
        self.greeting_capabilities: set[str] | None = None

    def _command(self, wire: Wire, command: str, timeout: float) -> tuple[list[str], str]:
        """Send a tagged command; return the untagged lines and the tagged completion."""
        tag = next(self.tags)
        wire.send(f"{tag} {command}")
        untagged: list[str] = []
        while True:
            line = wire.read_line(timeout)
            if line.startswith(f"{tag} "):
                return untagged, line[len(tag) + 1:]
            untagged.append(line)

    def greeting(self, wire: Wire, timeout: float) -> str:
        line = wire.read_line(timeout)
        if not line.startswith("* "):
            raise ProtocolError(f"not an IMAP greeting: {line[:80]!r}")
        return line

    def capabilities(self, wire: Wire, timeout: float) -> set[str]:
        untagged, _ = self._command(wire, "CAPABILITY", timeout)
        words = next((u.split()[2:] for u in untagged if u.upper().startswith("* CAPABILITY")), [])
        return {w.upper() for w in words}

    def offers_starttls(self, capabilities: set[str]) -> bool:
        return "STARTTLS" in capabilities

    def starttls(self, wire: Wire, timeout: float) -> tuple[bool, str]:
        _, completion = self._command(wire, "STARTTLS", timeout)
        return completion.upper().startswith("OK"), completion

    def login(self, wire: Wire, credentials: Credentials, capabilities: set[str], timeout: float) -> Login:
        if "LOGINDISABLED" in capabilities:
            # RFC 3501 section 6.2.3: with LOGINDISABLED advertised the client must not send LOGIN.
            return Login(False, True, "the server advertises LOGINDISABLED, so no password is sent")
        _, completion = self._command(wire, f"LOGIN {_quoted(credentials.user)} {_quoted(credentials.password)}",
                                      timeout)
        return Login(completion.upper().startswith("OK"), "PRIVACYREQUIRED" in completion.upper(), completion)

    def logout(self, wire: Wire, timeout: float) -> None:
        self._command(wire, "LOGOUT", timeout)


class Pop3Driver(Driver):
    name = "pop3"

    def greeting(self, wire: Wire, timeout: float) -> str:
        line = wire.read_line(timeout)
        if not line.startswith(("+OK", "-ERR")):
            raise ProtocolError(f"not a POP3 greeting: {line[:80]!r}")
        if line.startswith("+OK"):
            # POP3 has no argument to carry a mark: the probe's first command is its mark, which
            # the server refuses as it refuses any unknown command.
            wire.send(POP3_MARK)
            wire.read_line(timeout)
        return line

    def capabilities(self, wire: Wire, timeout: float) -> set[str]:
        # RFC 2449 section 5: CAPA answers +OK and a list ending in ".", or -ERR.
        wire.send("CAPA")
        if not wire.read_line(timeout).startswith("+OK"):
            return set()
        capabilities: set[str] = set()
        while (line := wire.read_line(timeout)) != ".":
            capabilities.add(line.upper())
        return capabilities

    def offers_starttls(self, capabilities: set[str]) -> bool:
        return "STLS" in capabilities

    def starttls(self, wire: Wire, timeout: float) -> tuple[bool, str]:
        wire.send("STLS")
        reply = wire.read_line(timeout)
        return reply.startswith("+OK"), reply

    def login(self, wire: Wire, credentials: Credentials, capabilities: set[str], timeout: float) -> Login:
        # USER first: a server that wants TLS refuses here, before the password is sent (RFC 2595).
        wire.send(f"USER {credentials.user}")
        reply = wire.read_line(timeout)
        if not reply.startswith("+OK"):
            return Login(False, "[AUTH]" in reply.upper() or "STLS" in capabilities, reply)
        wire.send(f"PASS {credentials.password}")
        reply = wire.read_line(timeout)
        return Login(reply.startswith("+OK"), False, reply)

    def logout(self, wire: Wire, timeout: float) -> None:
        wire.send("QUIT")
        wire.read_line(timeout)
        # The maildrop lock goes with the session: wait until the server has closed it.
        wire.wait_for_close(timeout)


DRIVERS: dict[str, Callable[[], Driver]] = {"smtp": SmtpDriver, "imap": ImapDriver, "pop3": Pop3Driver}


def _quoted(text: str) -> str:
    # RFC 3501 section 4.3: a quoted string escapes only \ and ".
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def clip(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary with an ellipsis (never mid-word)."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return (cut if cut else text[:limit]) + " …"


def _ssl_text(error: ssl.SSLError) -> str:
    """The error as OpenSSL words it, without the location in CPython's source ("(_ssl.c:1006)")."""
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(error))


def _tls_words(version: str | None) -> str:
    return (version or "TLS").replace("TLSv", "TLS ")


def _ssl_reason(error: ssl.SSLError) -> str:
    """OpenSSL's reason in words: WRONG_VERSION_NUMBER -> "wrong version number"."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    reason = error.reason or str(error)
    return reason.lower().replace("_", " ")


class _Cell:
    """One probe: one connection to one target in one client setting."""

    def __init__(self, target: Target, setting: ClientSetting, options: ProbeOptions) -> None:
        self.target, self.setting, self.options = target, setting, options
        self.driver = DRIVERS[target.protocol]()
        self.started = time.monotonic()
        self.client_port = 0

    def result(self, outcome: Outcome, text: str, reason: str) -> Cell:
        return Cell(self.target, self.setting, outcome, text, reason, time.monotonic() - self.started,
                    self.client_port)

    def run(self) -> Cell:
        options = self.options
        try:
            sock = socket.create_connection((self.target.host, self.target.port), timeout=options.timeout)
        except OSError as error:
            return self.result(Outcome.UNREACHABLE, "cannot connect", f"{self.target.host}:{self.target.port}: "
                               f"{error.strerror or error}")
        self.client_port = sock.getsockname()[1]
        wire = Wire(sock)
        try:
            return self._session(wire)
        except ConnectionClosed as closed:
            said = f" after {closed.args[0]!r}" if closed.args and closed.args[0] else ""
            return self.result(Outcome.UNREACHABLE, "the server closed the connection", f"closed{said}")
        except ssl.SSLError as error:
            return self.result(Outcome.TLS_ERROR, f"TLS error: {_ssl_reason(error)}", _ssl_text(error))
        except TimeoutError:
            return self.result(Outcome.HANGS, f"no answer: timed out after {options.timeout:g}s",
                               "the server stopped answering in the middle of the session")
        except (OSError, ProtocolError) as error:
            return self.result(Outcome.UNREACHABLE, "connection failed", str(error))
        finally:
            wire.close()

    def _context(self) -> ssl.SSLContext:
        ca = self.options.ca_file
        return probe_context(str(ca) if ca else None)

    def _handshake(self, wire: Wire) -> Cell | None:
        """TLS on a connection; a Cell when it failed, in the words for a failed handshake."""
        try:
            wire.start_tls(self._context(), self.target.host, self.options.timeout)
        except ssl.SSLError as error:
            reason = _ssl_reason(error)
            if "wrong version number" in reason:
                wire.mark(self.target.protocol)
                # The port answered with its plaintext greeting, which TLS reads as a bad record.
                return self.result(Outcome.TLS_ERROR,
                                   "TLS error: wrong version number (the port speaks plaintext first)",
                                   f"the client sent a TLS ClientHello and got the server's plaintext greeting, "
                                   f"which is no TLS record ({_ssl_text(error)})")
            return self.result(Outcome.TLS_ERROR, f"TLS error: {reason}", _ssl_text(error))
        except TimeoutError:
            return self.result(Outcome.HANGS, f"hangs in the TLS handshake — timed out after "
                               f"{self.options.timeout:g}s", "no ServerHello came back")
        return None

    def _mark_tls_first(self, wire: Wire) -> None:
        """The cell is decided (a plaintext client hangs here): now say who we were, with the one
        thing a TLS-first port reads, a handshake carrying the probe's SNI name."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        try:
            wire.start_tls(context, self.target.host, min(self.options.timeout, 1.0))
        except (OSError, ssl.SSLError):
            pass

    def _session(self, wire: Wire) -> Cell:
        options, driver = self.options, self.driver
        if self.setting is ClientSetting.IMPLICIT and (failed := self._handshake(wire)):
            return failed
        try:
            greeting = driver.greeting(wire, options.greeting_timeout)
        except TimeoutError:
            if wire.tls_version:
                return self.result(Outcome.HANGS, f"hangs waiting for a greeting — timed out after "
                                   f"{options.greeting_timeout:g}s", "TLS is up but the server says nothing")
            self._mark_tls_first(wire)
            return self.result(Outcome.HANGS, f"hangs waiting for a greeting (the port speaks TLS first) — "
                               f"timed out after {options.greeting_timeout:g}s",
                               "the server waits for a TLS ClientHello, the client for a greeting")
        steps = [f"greeting {clip(greeting, 60)}"]
        capabilities = driver.capabilities(wire, options.timeout)
        if self.setting in (ClientSetting.STARTTLS_REQUIRED, ClientSetting.STARTTLS_IF_AVAILABLE):
            if driver.offers_starttls(capabilities):
                ok, reply = driver.starttls(wire, options.timeout)
                if not ok:
                    return self.result(Outcome.REFUSED, "STARTTLS refused by the server", reply)
                if failed := self._handshake(wire):
                    return failed
                steps.append(f"STARTTLS: {reply}")
                # RFC 3207 section 4.2, RFC 2595 section 3.1: forget what was said before TLS.
                capabilities = driver.capabilities(wire, options.timeout)
            elif self.setting is ClientSetting.STARTTLS_REQUIRED:
                driver.logout(wire, options.timeout)
                return self.result(Outcome.NO_STARTTLS, "STARTTLS not offered: client refuses to continue",
                                   f"greeting {clip(greeting, 60)}; the capabilities list no "
                                   f"{'STLS' if driver.name == 'pop3' else 'STARTTLS'}, so the client quits "
                                   "before sending a password")
            else:
                steps.append("no STARTTLS offered, carried on without TLS")
        if options.credentials is None:
            driver.logout(wire, options.timeout)
            return self.result(Outcome.LOGIN_FAILED, "connected; no user configured to log in with", "; ".join(steps))
        return self._login(wire, capabilities, steps)

    def _login(self, wire: Wire, capabilities: set[str], steps: list[str]) -> Cell:
        options, driver = self.options, self.driver
        assert options.credentials is not None
        lock = options.pop3_login if driver.name == "pop3" else threading.Lock()
        with lock:
            login = driver.login(wire, options.credentials, capabilities, options.timeout)
            driver.logout(wire, options.timeout)
        steps.append(f"login: {login.reply}")
        reason = "; ".join(steps)
        if login.ok and wire.tls_version:
            return self.result(Outcome.WORKS, f"works ({_tls_words(wire.tls_version)})", reason)
        if login.ok:
            return self.result(Outcome.CLEARTEXT, "works, but the password went in the clear", reason)
        if login.refused_for_tls and not wire.tls_version:
            return self.result(Outcome.REFUSED, "refused before login: server requires STARTTLS", reason)
        return self.result(Outcome.LOGIN_FAILED, f"login failed: {clip(login.reply, 80)}", reason)


def probe(target: Target, setting: ClientSetting, options: ProbeOptions) -> Cell:
    """One cell of the table: connect, (TLS), greet, (STARTTLS), log in, log out."""
    return _Cell(target, setting, options).run()


def explain(targets: Sequence[Target], options: ProbeOptions,
            settings: Iterable[ClientSetting] = tuple(ClientSetting)) -> Table:
    """Every target in every client setting, concurrently; the table in target order."""
    jobs = [(target, setting) for target in targets for setting in settings]
    if not jobs:
        return Table(tuple(targets), ())
    with ThreadPoolExecutor(max_workers=min(64, len(jobs)), thread_name_prefix="explain") as pool:
        cells = list(pool.map(lambda job: probe(job[0], job[1], options), jobs))
    return Table(tuple(targets), tuple(cells))


def connect_host(host: str) -> str:
    """Where a client reaches a server that bound `host`: a wildcard address means loopback."""
    return WILDCARDS.get(host, host)


def targets_from_config(config: Config, ports: Mapping[str, int] | None = None, host: str | None = None) -> list[Target]:
    """The listeners of a config as probe targets; `ports` overrides (a server's bound ports),
    `host` overrides every listener's address (e.g. the host side of a Docker port mapping)."""
    ports = ports or {}
    return [
        Target(listener.name, listener.protocol, host or connect_host(listener.host or config.host),
               ports.get(listener.name, listener.port), str(listener.tls), listener.scenario)
        for listener in config.listeners
    ]


def options_from_config(config: Config, ca_file: Path | None = None, greeting_timeout: float = 1.5,
                        timeout: float = 5.0) -> ProbeOptions:
    """The first configured user logs in; the CA is the config's own unless one is given."""
    user = config.users[0] if config.users else None
    return ProbeOptions(
        ca_file=ca_file or config.certs.dir / "ca.pem",
        credentials=Credentials(user.name, user.password) if user else None,
        greeting_timeout=greeting_timeout,
        timeout=timeout,
    )


def format_text(table: Table) -> str:
    """The terminal view: the client settings with the names clients use, then each listener."""
    lines = ["Client settings (what Thunderbird, Outlook, Apple Mail, K-9 Mail and curl call them):"]
    width = max(len(s.title) for s in table.settings)
    for info in table.settings:
        lines.append(f"  {info.title:<{width}}  Thunderbird \"{info.thunderbird}\", Outlook \"{info.outlook}\", "
                     f"Apple Mail \"{info.apple_mail}\", K-9 \"{info.k9}\", curl {info.curl}")
    for target in table.targets:
        lines += ["", f"{target.name}: {target.protocol} on {target.host}:{target.port}"
                  + (f" (configured {target.mode})" if target.mode else "")]
        for info in table.settings:
            cell = table.cell(target.name, info.setting)
            lines.append(f"  {info.title:<{width}}  {cell.text}")
            lines.append(f"  {'':<{width}}    {cell.reason}")
            if known := real_clients_here(target, info.setting):
                lines.append(f"  {'':<{width}}    real clients: {known}")
    return "\n".join(lines)


def format_markdown(table: Table) -> str:
    """The README view: what clients call each setting, then listeners down and settings across."""
    lines = ["| client setting | Thunderbird | Outlook | Apple Mail | K-9 Mail | curl |", "|---|---|---|---|---|---|"]
    lines += [f"| {s.title} | {s.thunderbird} | {s.outlook} | {s.apple_mail} | {s.k9} | {s.curl} |"
              for s in table.settings]
    header = ["port", "listener (configured mode)"] + [s.title for s in table.settings]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for target in table.targets:
        cells = [table.cell(target.name, s.setting).text for s in table.settings]
        lines.append(f"| {target.port} | {target.name} ({target.protocol}, {target.mode}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)
