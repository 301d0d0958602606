"""Configuration: TOML in, frozen dataclasses out, every key validated. No globals."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mailmodes.protocols import PROTOCOLS
from mailmodes.protocols.sasl import DEFAULT_SASL_MECHANISMS, SASL_MECHANISMS, TLS_ONLY
from mailmodes.protocols.smtp_extensions import SMTP_EXTENSIONS
from mailmodes.scenarios.catalogue import SCENARIOS
from mailmodes.scenarios.misbehaviour import Chaos
from mailmodes.tls.policy import DEFAULT_TLS_PROFILE, TLS_PROFILES, TlsMode

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
    max_connections_per_client: int | None = None
    # A client in the middle of a command or a message must keep sending at least this many bytes
    # a second, over each window: otherwise one byte every few seconds (slowloris) resets the
    # idle timer forever.
    min_data_rate: int | None = None
    data_rate_window: float | None = None
    max_auth_failures: int | None = None  # per connection: then the connection is closed
    max_auth_failures_per_client: int | None = None  # per client host, in AUTH_FAILURE_WINDOW
    auth_failure_delay: float | None = None  # seconds, before each answer to a login over that
    # After a failed STARTTLS handshake some clients go on in the clear, password and all
    # (swaks --tls-optional): read that for this long, up to this much, answering nothing.
    read_after_failed_tls: float | None = None
    read_after_failed_tls_bytes: int | None = None


MIB = 1024 * 1024
# The hostile-client bounds, the same for every protocol, far from what a client or a test suite
# meets: 20 connections from one address, 100 bytes/s over 30 s while a request is under way,
# 5 failed logins a connection, and past 50 failed logins from one address in 10 minutes a
# 2-second pause before every login answer to it.
COMMON_LIMITS = (20, 100, 30.0, 5, 50, 2.0)
PROTOCOL_LIMITS = {
    # RFC 5321 4.5.3.1.6: 1000-octet text lines (+1 for the transparency dot); 4.5.3.2.7: 5 min.
    "smtp": Limits(25 * MIB, 1001, 25 * MIB, 300.0, 100, 10, *COMMON_LIMITS, 2.0, 16384),
    # RFC 7162 section 4 asks for at least 8192-octet command lines, but an RFC 2971 ID may be
    # 30 fields of 30 + 1024 octets (about 32 KiB): 64 KiB, as Dovecot. RFC 3501 5.4: 30 min.
    "imap": Limits(25 * MIB, 64 * 1024, 25 * MIB, 1800.0, 100, 10, *COMMON_LIMITS, 2.0, 16384),
    # RFC 2449 section 4: 255-octet command lines; RFC 1939 section 3: at least 10 minutes.
    "pop3": Limits(25 * MIB, 255, 25 * MIB, 600.0, 100, 10, *COMMON_LIMITS, 2.0, 16384),
}
FLOAT_LIMITS = frozenset({"idle_timeout", "data_rate_window", "auth_failure_delay", "read_after_failed_tls"})


@dataclass(frozen=True)
class ResolvedLimits:
    max_message_size: int
    max_line_length: int
    max_literal_size: int
    idle_timeout: float
    max_connections: int
    max_bad_commands: int
    max_connections_per_client: int
    min_data_rate: int
    data_rate_window: float
    max_auth_failures: int
    max_auth_failures_per_client: int
    auth_failure_delay: float
    read_after_failed_tls: float
    read_after_failed_tls_bytes: int


CLIENT_CERTIFICATE_MODES = ("require", "request")


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
    # response-injection: how long the reply to the first command inside TLS is held back, so that
    # a client that acted on the injected replies shows it by speaking first (acted-on-injection).
    desync_hold: float = 0.5
    # Audit mode (scenarios/audit.py): each new connection from a client address gets the next scenario.
    audit: bool = False
    limits: ResolvedLimits = field(default_factory=lambda: resolve_limits("smtp", Limits(), Limits()))
    tls_profile: str = DEFAULT_TLS_PROFILE  # after Mozilla's guidelines: old | intermediate | modern
    smtp_extensions: tuple[str, ...] = SMTP_EXTENSIONS  # smtp only: the EHLO extensions offered (any subset)
    # The SASL mechanisms offered (AUTH / AUTHENTICATE): None, the protocol's default (sasl.py).
    sasl_mechanisms: tuple[str, ...] | None = None
    # Those of them offered before TLS (None: all): e.g. only SCRAM in the clear, PLAIN inside TLS.
    sasl_mechanisms_before_tls: tuple[str, ...] | None = None
    # Ask for a client certificate from the project CA: "require" (none: no handshake), "request".
    client_certificate: str | None = None

    @property
    def mechanisms(self) -> tuple[str, ...]:
        return DEFAULT_SASL_MECHANISMS[self.protocol] if self.sasl_mechanisms is None else self.sasl_mechanisms

    def mechanisms_offered(self, *, encrypted: bool) -> tuple[str, ...]:
        """The mechanisms a connection may use now (policy.Security says whether it may log in at all)."""
        before = self.sasl_mechanisms_before_tls
        if encrypted:
            return self.mechanisms
        # -PLUS and EXTERNAL need the TLS layer itself: never offered in the clear.
        return tuple(mechanism for mechanism in self.mechanisms
                     if mechanism not in TLS_ONLY and (before is None or mechanism in before))


@dataclass(frozen=True)
class CertsConfig:
    dir: Path = Path("certs")


@dataclass(frozen=True)
class JournalConfig:
    path: Path | None = None  # every finished session appended here as one JSON line
    max_sessions: int = 1000
    max_transcript_lines: int = 500
    enabled: bool = True  # off: no transcripts, no verdicts, no sessions kept (for raw load tests)
    one_client: bool = False  # every session comes from one client: what lets `fallback` link sessions


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP API and dashboard ([http]); loopback only unless `host` says otherwise."""

    port: int = 8025  # 0 picks a free port
    host: str = "127.0.0.1"
    # Host names the API answers besides loopback and the configured hostname (DNS rebinding).
    allowed_hosts: tuple[str, ...] = ()
    max_event_clients: int = 100  # /api/events streams at once; each one polls


@dataclass(frozen=True)
class AuthConfig:
    # true: every user name and password logs in on every protocol (an unknown name gets an empty
    # account), for testing an application rather than a client's security; never the default.
    accept_any: bool = False


@dataclass(frozen=True)
class StoreConfig:
    # A directory: mail is kept there (a Maildir per mailbox) and survives a restart; every change
    # is on disk before the client is told. None: in memory only, gone when the server stops.
    path: Path | None = None


@dataclass(frozen=True)
class Seed:
    """[[seed]]: mail put into a mailbox at start (and again by POST /api/reset)."""

    user: str
    mailbox: str
    path: Path  # one .eml file, a directory of .eml files, an mbox file or a Maildir
    key: str  # "seed[0]", to name it in an error found while loading


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
    seeds: tuple[Seed, ...] = ()
    auth: AuthConfig = AuthConfig()
    store: StoreConfig = StoreConfig()

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
        kind: type = float if limit.name in FLOAT_LIMITS else int
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
    allowed_hosts = reader.get("allowed_hosts", list, [])
    if not all(isinstance(name, str) and name and "/" not in name for name in allowed_hosts):
        raise reader.fail("allowed_hosts", 'must be a list of host names like "mailmodes" or "10.0.0.5"')
    max_event_clients = reader.get("max_event_clients", int, HttpConfig.max_event_clients)
    if max_event_clients <= 0:
        raise reader.fail("max_event_clients", "must be greater than 0")
    http = HttpConfig(port=port, host=reader.get("host", str, HttpConfig.host),
                      allowed_hosts=tuple(name.lower() for name in allowed_hosts), max_event_clients=max_event_clients)
    reader.finish()
    return http


def _check_scenario(reader: _Reader, scenario: str, protocol: str) -> None:
    known = SCENARIOS.get(scenario)
    if known is None:
        raise reader.fail("scenario", f"unknown scenario {scenario!r} (`mailmodes scenarios` lists them)")
    if protocol not in known.protocols:
        raise reader.fail("scenario", f"{scenario!r} is not for {protocol} (only {', '.join(known.protocols)})")
    if not known.buildable:
        raise reader.fail("scenario", f"{scenario!r} cannot be served here: {known.why_not}")


def _smtp_extensions(reader: _Reader, protocol: str) -> tuple[str, ...]:
    extensions = reader.get("smtp_extensions", list)
    if extensions is None:
        return SMTP_EXTENSIONS
    if protocol != "smtp":
        raise reader.fail("smtp_extensions", "is an SMTP option")
    if not all(isinstance(name, str) and name.upper() in SMTP_EXTENSIONS for name in extensions):
        raise reader.fail("smtp_extensions", f"must be a list of some of: {', '.join(SMTP_EXTENSIONS)}")
    return tuple(name for name in SMTP_EXTENSIONS if name in {str(e).upper() for e in extensions})


def _sasl_mechanisms(reader: _Reader, protocol: str, key: str = "sasl_mechanisms") -> tuple[str, ...] | None:
    mechanisms = reader.get(key, list)
    if mechanisms is None:
        return None
    known = SASL_MECHANISMS[protocol]
    if not all(isinstance(name, str) and name.upper() in known for name in mechanisms):
        raise reader.fail(key, f"must be a list of some of: {', '.join(known)} ({protocol})")
    return tuple(name for name in known if name in {str(m).upper() for m in mechanisms})


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


def chaos_table(chaos: Chaos | None) -> dict[str, Any] | None:
    """A listener's chaos settings as the [listeners.chaos] table (and the API's JSON) says them."""
    return None if chaos is None else {key: value for key, value in asdict(chaos).items() if value is not None}


def with_scenario(listener: Listener, scenario: Any, chaos: Any, source: str = "request") -> Listener:
    """The listener with another scenario (and chaos settings), checked as the config file's are:
    how the HTTP API changes a running listener."""
    where = f"listeners.{listener.name}"
    reader = _Reader(source, {"scenario": scenario, "chaos": chaos}, where)
    if scenario is not None:
        if not isinstance(scenario, str):
            raise reader.fail("scenario", f"must be a scenario id or null, not {scenario!r}")
        _check_scenario(reader, scenario, listener.protocol)
    if scenario != "chaos" and chaos is not None:
        raise reader.fail("chaos", 'goes with scenario = "chaos"')
    if chaos is not None and not isinstance(chaos, dict):
        raise reader.fail("chaos", f"must be a table, not {chaos!r}")
    new_chaos = _chaos(source, chaos, f"{where}.chaos") if scenario == "chaos" else None
    return replace(listener, scenario=scenario, chaos=new_chaos)


def _seeds(source: str, tables: list[Any], users: list[User], base_dir: Path) -> tuple[Seed, ...]:
    seeds = []
    for index, table in enumerate(tables):
        reader = _Reader(source, table if isinstance(table, dict) else {}, f"seed[{index}]")
        user = reader.get("user", str, required=True)
        mailbox = reader.get("mailbox", str, "INBOX")
        path = base_dir / reader.get("path", str, required=True)
        reader.finish()
        if not any(u.name == user for u in users):
            raise reader.fail("user", f"names no configured user ({user!r})")
        if not mailbox.strip("/"):
            raise reader.fail("mailbox", "must name a mailbox, e.g. \"INBOX\" or \"Archive/2024\"")
        if not path.exists():
            raise reader.fail("path", f"{path}: no such file or directory (an .eml file, a directory of .eml "
                                      "files, an mbox file or a Maildir)")
        seeds.append(Seed(user, mailbox, path, reader.where))
    return tuple(seeds)


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
        one_client=journal_table.get("one_client", bool, False),
    )
    for key in ("max_sessions", "max_transcript_lines"):
        if getattr(journal, key) <= 0:
            raise journal_table.fail(key, "must be greater than 0")
    journal_table.finish()

    global_limits = _limits(source, top.get("limits", dict, {}), "limits")
    auth_table = _Reader(source, top.get("auth", dict, {}), "auth")
    auth = AuthConfig(accept_any=auth_table.get("accept_any", bool, False))
    auth_table.finish()
    store_table = _Reader(source, top.get("store", dict, {}), "store")
    store_path = store_table.get("path", str)
    if store_path is not None and not store_path.strip():
        raise store_table.fail("path", "must name a directory (leave [store] out to keep mail in memory)")
    store = StoreConfig(path=base_dir / store_path if store_path else None)
    store_table.finish()
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
        desync_hold = float(reader.get("desync_hold", (int, float), 0.5))
        if not 0 <= desync_hold <= 10:
            raise reader.fail("desync_hold", "must be between 0 and 10 seconds")
        audit = reader.get("audit", bool, False)
        if audit and scenario is not None:
            raise reader.fail("audit", "walks every scenario itself: give it no scenario")
        if audit and tls is TlsMode.PLAINTEXT:
            raise reader.fail("audit", "needs a TLS mode (implicit, starttls-required or starttls-optional)")
        limits = _limits(source, reader.get("limits", dict, {}), f"{reader.where}.limits")
        tls_profile = reader.choice("tls_profile", TLS_PROFILES, DEFAULT_TLS_PROFILE)
        smtp_extensions = _smtp_extensions(reader, protocol)
        sasl_mechanisms = _sasl_mechanisms(reader, protocol)
        sasl_before_tls = _sasl_mechanisms(reader, protocol, "sasl_mechanisms_before_tls")
        client_certificate = reader.get("client_certificate", str)
        if client_certificate is not None:
            client_certificate = reader.choice("client_certificate", CLIENT_CERTIFICATE_MODES)
            if tls is TlsMode.PLAINTEXT:
                raise reader.fail("client_certificate", "needs a TLS mode")
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
                desync_hold=desync_hold,
                audit=audit,
                limits=resolve_limits(protocol, global_limits, limits),
                tls_profile=tls_profile,
                smtp_extensions=smtp_extensions,
                sasl_mechanisms=sasl_mechanisms,
                sasl_mechanisms_before_tls=sasl_before_tls,
                client_certificate=client_certificate,
            )
        )
    seeds = _seeds(source, top.get("seed", list, []), users, base_dir)
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
        seeds=seeds,
        auth=auth,
        store=store,
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
