"""Configuration: TOML in, frozen dataclasses out, every key validated. No globals."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mailmodes.misbehaviour import Chaos
from mailmodes.tls.policy import TlsMode

PROTOCOLS = ("smtp", "imap", "pop3")
SMTP_ROLES = ("submission", "mta")


class ConfigError(Exception):
    """A bad configuration; str() is the one line shown to the user."""


@dataclass(frozen=True)
class Limits:
    """Every limit a client can run into. None means "the protocol's default" (see PROTOCOL_LIMITS)."""

    max_message_size: int | None = None
    max_line_length: int | None = None
    max_literal_size: int | None = None
    idle_timeout: float | None = None
    max_connections: int | None = None
    max_bad_commands: int | None = None
    # After a failed STARTTLS handshake some clients go on in the clear, password and all
    # (swaks --tls-optional): read that for this long, up to this much, answering nothing.
    read_after_failed_tls: float | None = None
    read_after_failed_tls_bytes: int | None = None


MIB = 1024 * 1024
PROTOCOL_LIMITS = {
    # RFC 5321 4.5.3.1.6: 1000-octet text lines (+1 for the transparency dot); 4.5.3.2.7: 5 min.
    "smtp": Limits(25 * MIB, 1001, 25 * MIB, 300.0, 100, 10, 2.0, 16384),
    # RFC 7162 section 4 recommends accepting 8192-octet command lines; RFC 3501 5.4: 30 min.
    "imap": Limits(25 * MIB, 8192, 25 * MIB, 1800.0, 100, 10, 2.0, 16384),
    # RFC 2449 section 4: 255-octet command lines; RFC 1939 section 3: at least 10 minutes.
    "pop3": Limits(25 * MIB, 255, 25 * MIB, 600.0, 100, 10, 2.0, 16384),
}
SECONDS = frozenset({"idle_timeout", "read_after_failed_tls"})


@dataclass(frozen=True)
class ResolvedLimits:
    max_message_size: int
    max_line_length: int
    max_literal_size: int
    idle_timeout: float
    max_connections: int
    max_bad_commands: int
    read_after_failed_tls: float
    read_after_failed_tls_bytes: int


@dataclass(frozen=True)
class User:
    name: str
    password: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class Listener:
    name: str
    protocol: str
    port: int
    tls: TlsMode
    role: str = "submission"
    host: str | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    scenario: str | None = None
    chaos: Chaos | None = None
    apop: bool = False  # pop3 only: offer APOP (RFC 1939 section 7); the greeting carries a timestamp
    limits: ResolvedLimits = field(default_factory=lambda: resolve_limits("smtp", Limits(), Limits()))


@dataclass(frozen=True)
class CertsConfig:
    dir: Path = Path("certs")


@dataclass(frozen=True)
class JournalConfig:
    path: Path | None = None  # every finished session appended here as one JSON line
    max_sessions: int = 1000
    max_transcript_lines: int = 500
    enabled: bool = True  # off: no transcripts, no verdicts, no sessions kept (for raw load tests)


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP API and dashboard ([http]); loopback only unless `host` says otherwise."""

    port: int = 8025  # 0 picks a free port
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class Config:
    hostname: str = "mail.example.test"
    host: str = "127.0.0.1"
    certs: CertsConfig = CertsConfig()
    users: tuple[User, ...] = ()
    listeners: tuple[Listener, ...] = ()
    catch_all: str | None = None
    journal: JournalConfig = JournalConfig()
    source: str = "<built-in>"
    http: HttpConfig | None = None  # no [http] table: no HTTP server

    def with_port_offset(self, offset: int) -> Config:
        return replace(
            self,
            listeners=tuple(
                replace(listener, port=listener.port + offset if listener.port else 0)
                for listener in self.listeners
            ),
            # The HTTP port moves with the mail ports, so two offset instances do not collide.
            http=replace(self.http, port=self.http.port + offset) if self.http and self.http.port else self.http,
        )


def resolve_limits(protocol: str, *layers: Limits) -> ResolvedLimits:
    values: dict[str, Any] = {}
    for limit in fields(Limits):
        value = getattr(PROTOCOL_LIMITS[protocol], limit.name)
        for layer in layers:
            if getattr(layer, limit.name) is not None:
                value = getattr(layer, limit.name)
        values[limit.name] = value
    return ResolvedLimits(**values)


class _Reader:
    """Pulls typed values out of one TOML table, naming file and key in every error."""

    def __init__(self, source: str, table: Mapping[str, Any], where: str) -> None:
        self.source, self.table, self.where = source, dict(table), where
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.key(name)}: {message}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        self.used.add(name)
        if name not in self.table:
            if required:
                raise self.fail(name, "is required")
            return default
        value = self.table[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(name, f"must be a {expected}, not {type(value).__name__} {value!r}")
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str | None = None) -> str:
        value: str = self.get(name, str, default, required=default is None)
        if value not in allowed:
            raise self.fail(name, f"{value!r} is not one of: {', '.join(allowed)}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (allowed here: {', '.join(sorted(self.used))})")


def _limits(source: str, table: Mapping[str, Any], where: str) -> Limits:
    reader = _Reader(source, table, where)
    values: dict[str, Any] = {}
    for limit in fields(Limits):
        kind: type = float if limit.name in SECONDS else int
        value = reader.get(limit.name, kind)
        if value is not None and value <= 0:
            raise reader.fail(limit.name, "must be greater than 0")
        values[limit.name] = value
    reader.finish()
    return Limits(**values)


def _http(source: str, table: Mapping[str, Any] | None) -> HttpConfig | None:
    if table is None:
        return None
    reader = _Reader(source, table, "http")
    port = reader.get("port", int, HttpConfig.port)
    if not 0 <= port <= 65535:
        raise reader.fail("port", f"{port} is not a port number (0-65535; 0 picks a free one)")
    http = HttpConfig(port=port, host=reader.get("host", str, HttpConfig.host))
    reader.finish()
    return http


def _check_scenario(reader: _Reader, scenario: str, protocol: str) -> None:
    # Imported here: the catalogue imports this module for Listener.
    from mailmodes.scenarios import SCENARIOS

    known = SCENARIOS.get(scenario)
    if known is None:
        raise reader.fail("scenario", f"unknown scenario {scenario!r} (`mailmodes scenarios` lists them)")
    if protocol not in known.protocols:
        raise reader.fail("scenario", f"{scenario!r} is not for {protocol} (only {', '.join(known.protocols)})")
    if not known.buildable:
        raise reader.fail("scenario", f"{scenario!r} cannot be served here: {known.why_not}")


def _chaos(source: str, table: Mapping[str, Any] | None, where: str) -> Chaos:
    reader = _Reader(source, table or {}, where)
    chaos = Chaos(
        stage=reader.get("stage", str),
        reply=reader.get("reply", str),
        disconnect=reader.get("disconnect", bool, False),
        delay=reader.get("delay", float, 0.0),
    )
    reader.finish()
    if chaos.delay < 0:
        raise reader.fail("delay", "must be 0 or more seconds")
    if (chaos.reply or chaos.disconnect) and not chaos.stage:
        raise reader.fail("stage", "is required with reply or disconnect (e.g. \"RCPT\", \"LOGIN\", \"GREETING\")")
    if chaos.reply and chaos.disconnect:
        raise reader.fail("reply", "reply and disconnect = true exclude each other")
    if not (chaos.reply or chaos.disconnect or chaos.delay):
        raise reader.fail("stage", "chaos needs a reply, disconnect = true, or a delay")
    return chaos


def parse_config(data: Mapping[str, Any], source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate a parsed TOML document.

    Relative paths resolve against `base_dir`, by default the current directory: a config is
    usually run from the project (or container) it sits in, like most command-line tools.
    """
    base_dir = base_dir or Path.cwd()
    top = _Reader(source, data, "")
    hostname = top.get("hostname", str, Config.hostname)
    host = top.get("host", str, Config.host)
    catch_all = top.get("catch_all", str)

    certs_table = _Reader(source, top.get("certs", dict, {}), "certs")
    certs = CertsConfig(dir=base_dir / certs_table.get("dir", str, "certs"))
    certs_table.finish()

    journal_table = _Reader(source, top.get("journal", dict, {}), "journal")
    journal_path = journal_table.get("path", str)
    journal = JournalConfig(
        path=base_dir / journal_path if journal_path else None,
        max_sessions=journal_table.get("max_sessions", int, JournalConfig.max_sessions),
        max_transcript_lines=journal_table.get("max_transcript_lines", int, JournalConfig.max_transcript_lines),
        enabled=journal_table.get("enabled", bool, True),
    )
    for key in ("max_sessions", "max_transcript_lines"):
        if getattr(journal, key) <= 0:
            raise journal_table.fail(key, "must be greater than 0")
    journal_table.finish()

    global_limits = _limits(source, top.get("limits", dict, {}), "limits")
    http = _http(source, top.get("http", dict))

    users: list[User] = []
    for index, table in enumerate(top.get("users", list, [])):
        reader = _Reader(source, table if isinstance(table, dict) else {}, f"users[{index}]")
        name = reader.get("name", str, required=True)
        password = reader.get("password", str, required=True)
        addresses = reader.get("addresses", list, [f"{name}@{hostname}"])
        if not all(isinstance(a, str) and "@" in a for a in addresses):
            raise reader.fail("addresses", "must be a list of addresses like \"name@domain\"")
        reader.finish()
        if any(u.name == name for u in users):
            raise reader.fail("name", f"duplicate user {name!r}")
        users.append(User(name, password, tuple(addresses)))
    if catch_all is not None and not any(u.name == catch_all for u in users):
        raise top.fail("catch_all", f"names no configured user ({catch_all!r})")

    listeners: list[Listener] = []
    seen: dict[tuple[str, int], str] = {}
    for index, table in enumerate(top.get("listeners", list, [])):
        reader = _Reader(source, table if isinstance(table, dict) else {}, f"listeners[{index}]")
        protocol = reader.choice("protocol", PROTOCOLS)
        name = reader.get("name", str, f"{protocol}-{index}")
        port = reader.get("port", int, required=True)
        if not 0 <= port <= 65535:
            raise reader.fail("port", f"{port} is not a port number (0-65535; 0 picks a free one)")
        tls = TlsMode(reader.choice("tls", tuple(TlsMode)))
        role = reader.choice("role", SMTP_ROLES, "submission")
        listener_host = reader.get("host", str)
        cert_file = reader.get("cert_file", str)
        key_file = reader.get("key_file", str)
        if (cert_file is None) != (key_file is None):
            raise reader.fail("cert_file" if cert_file is None else "key_file", "cert_file and key_file go together")
        apop = reader.get("apop", bool, False)
        if apop and protocol != "pop3":
            raise reader.fail("apop", "is a POP3 option")
        scenario = reader.get("scenario", str)
        if scenario is not None:
            _check_scenario(reader, scenario, protocol)
        chaos = _chaos(source, reader.get("chaos", dict), f"{reader.where}.chaos") if scenario == "chaos" else None
        if scenario != "chaos" and "chaos" in reader.table:
            raise reader.fail("chaos", 'goes with scenario = "chaos"')
        limits = _limits(source, reader.get("limits", dict, {}), f"{reader.where}.limits")
        reader.finish()
        address = (listener_host or host, port)
        if port and address in seen:
            raise reader.fail("port", f"port {port} is already used by listener {seen[address]!r}")
        seen[address] = name
        if any(listener.name == name for listener in listeners):
            raise reader.fail("name", f"duplicate listener name {name!r}")
        listeners.append(
            Listener(
                name=name,
                protocol=protocol,
                port=port,
                tls=tls,
                role=role,
                host=listener_host,
                cert_file=base_dir / cert_file if cert_file else None,
                key_file=base_dir / key_file if key_file else None,
                scenario=scenario,
                chaos=chaos,
                apop=apop,
                limits=resolve_limits(protocol, global_limits, limits),
            )
        )
    top.finish()
    return Config(
        hostname=hostname,
        host=host,
        certs=certs,
        users=tuple(users),
        listeners=tuple(listeners),
        catch_all=catch_all,
        journal=journal,
        source=source,
        http=http,
    )


def read_toml(path: Path) -> dict[str, Any]:
    """A config file's TOML document; a missing, unreadable or malformed file is one clear line."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None


def load_config(path: Path) -> Config:
    return parse_config(read_toml(path), source=str(path))
