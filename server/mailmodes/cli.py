"""The command line: the only place that reads argv and the environment."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailmodes import __version__
from mailmodes.config import Config, ConfigError, load_config, parse_config, read_toml
from mailmodes.startup import import_quickly
from mailmodes.tls.certs import ensure_certificates

if TYPE_CHECKING:
    from mailmodes.early import EarlyStart
    from mailmodes.web.remote import ReceivedMessage

# asyncio and the server (mailmodes.app) are imported by the commands that serve, and by `serve`
# only after its early start (early.py) has bound the ports and begun greeting.

EXIT_CONFIG = 2
EXIT_START = 1


def default_config() -> Config:
    """The packaged default: the seven standard listeners (same file as config/default.toml)."""
    import tomllib

    text = _package_files().joinpath("default.toml").read_text()
    return parse_config(tomllib.loads(text), source="default config (config/default.toml)")


def _load(args: argparse.Namespace) -> Config:
    environ: Mapping[str, str] = getattr(args, "environ", {})
    path = args.config or environ.get("MAILMODES_CONFIG") or None
    if any(environ.get(name) for name in ENV_KEYS):
        config = _config_with_environment(Path(path) if path else None, environ)
    else:
        config = load_config(Path(path)) if path else default_config()
    if getattr(args, "host", None):
        config = replace(config, host=args.host)
    offset = getattr(args, "port_offset", None)
    if offset is None:
        offset = _env_int(environ, "MAILMODES_PORT_OFFSET")
    if offset:
        config = config.with_port_offset(offset)
    bad = [listener for listener in config.listeners if listener.port > 65535]
    if bad:
        raise ConfigError(f"{config.source}: --port-offset makes port {bad[0].port} of {bad[0].name!r} too large")
    return config


# The common settings as environment variables (the Docker image's configuration). They set the
# TOML keys before validation, so they are checked like the file; command-line options win.
ENV_KEYS = ("MAILMODES_HOSTNAME", "MAILMODES_HOST", "MAILMODES_HTTP_HOST", "MAILMODES_CERTS_DIR", "MAILMODES_USERS",
            "MAILMODES_SCENARIOS", "MAILMODES_HTTP_ALLOWED_HOSTS", "MAILMODES_STORE_PATH")


def _env_int(environ: Mapping[str, str], name: str) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"environment: {name}: {text!r} is not a whole number") from None


def _config_with_environment(path: Path | None, environ: Mapping[str, str]) -> Config:
    if path is None:
        text = _package_files().joinpath("default.toml").read_text()
        data, source = tomllib.loads(text), "default config (config/default.toml)"
    else:
        data, source = read_toml(path), str(path)
    return parse_config(_environment_document(data, environ), source=f"{source} with MAILMODES_* variables")


def _environment_document(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """MAILMODES_HOSTNAME, _HOST, _HTTP_HOST ([http] host), _CERTS_DIR and _STORE_PATH set their keys,
    MAILMODES_HTTP_ALLOWED_HOSTS="mailmodes,10.0.0.5" sets [http] allowed_hosts;
    MAILMODES_USERS="alice:pw,bob:pw" replaces the users (one already in the file keeps its
    addresses); MAILMODES_SCENARIOS="imaps=cert-expired" gives named listeners a scenario."""
    data = dict(data)
    for name, key in (("MAILMODES_HOSTNAME", "hostname"), ("MAILMODES_HOST", "host")):
        if value := environ.get(name, "").strip():
            data[key] = value
    if value := environ.get("MAILMODES_HTTP_HOST", "").strip():
        data["http"] = {**data.get("http", {}), "host": value}
    if value := environ.get("MAILMODES_HTTP_ALLOWED_HOSTS", "").strip():
        names = [name.strip() for name in value.split(",") if name.strip()]
        data["http"] = {**data.get("http", {}), "allowed_hosts": names}
    if value := environ.get("MAILMODES_CERTS_DIR", "").strip():
        data["certs"] = {**data.get("certs", {}), "dir": value}
    if value := environ.get("MAILMODES_STORE_PATH", "").strip():  # the image's /data volume
        data["store"] = {**data.get("store", {}), "path": value}
    if value := environ.get("MAILMODES_USERS", "").strip():
        data["users"] = _env_users(value, data.get("users", []))
    if value := environ.get("MAILMODES_SCENARIOS", "").strip():
        data["listeners"] = _env_scenarios(value, data.get("listeners", []))
    return data


def _env_users(value: str, known: list[Any]) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, colon, password = item.partition(":")
        if not colon or not name or not password:
            raise ConfigError(f"environment: MAILMODES_USERS: {item!r} is not name:password")
        before = next((u for u in known if isinstance(u, dict) and u.get("name") == name), {})
        users.append({**before, "name": name, "password": password})
    return users


def _package_files() -> Any:
    from importlib import resources  # only for the default config: `serve --config` starts faster

    return resources.files("mailmodes")


def _env_scenarios(value: str, listeners: list[Any]) -> list[Any]:
    chosen = dict(item.strip().partition("=")[::2] for item in value.split(",") if item.strip())
    names = [listener.get("name") for listener in listeners if isinstance(listener, dict)]
    for name, scenario in chosen.items():
        if name not in names or not scenario:
            raise ConfigError(f"environment: MAILMODES_SCENARIOS: {name}={scenario}: want listener=scenario "
                              f"with a listener of the config ({', '.join(map(str, names))})")
    return [{**listener, "scenario": chosen[listener["name"]]} if isinstance(listener, dict)
            and listener.get("name") in chosen else listener for listener in listeners]


def serve(args: argparse.Namespace) -> int:
    from mailmodes import early as early_start

    config = _load(args)
    early = early_start.begin(config)
    stop_asked: list[int] = []
    if early is not None:
        stop_asked = _catch_stop_signals()  # `ready` comes before the event loop's own handlers
        ca_file = ensure_certificates(config.certs.dir, config.hostname).ca_file
        http_port = early.http.getsockname()[1] if early.http is not None else None
        announce_ready(config, {listener.name: early.port(listener.name) for listener in config.listeners},
                       ca_file, http_port)
    import_quickly("mailmodes.app")
    import asyncio

    return asyncio.run(_serve(config, announce=getattr(args, "announce", False), early=early,
                              stop_asked=stop_asked))


def _catch_stop_signals() -> list[int]:
    """SIGINT and SIGTERM noted (not acted on) until _serve's loop takes them over."""
    asked: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, frame: asked.append(number))
    return asked


def announce_ready(config: Config, ports: Mapping[str, int], ca_file: Path | None, http_port: int | None) -> None:
    """What `serve` prints once every port accepts connections; `ready` last."""
    if config.auth.accept_any:
        print("auth accept_any: every user name and password logs in (for application tests only)")
    for listener in config.listeners:
        host = listener.host or config.host
        scenario = f"  scenario={listener.scenario}" if listener.scenario else ""
        print(f"listening {listener.name:<14} {listener.protocol:<5} {host}:{ports[listener.name]:<6} "
              f"{listener.tls}{scenario}")
    print(f"CA certificate {ca_file}")
    if http_port is not None and config.http is not None:
        http_host = f"[{config.http.host}]" if ":" in config.http.host else config.http.host
        print(f"dashboard http://{http_host}:{http_port}/")
    print("ready", flush=True)


def session_line(entry: dict[str, Any]) -> str:
    """A finished session in one line, with its verdicts (`serve -v`)."""
    first = format_session(entry, transcript=False).partition("\n")[0]
    return f"session {first}  verdicts: {', '.join(entry.get('verdicts', [])) or 'none'}"


async def _serve(config: Config, *, announce: bool = False, early: EarlyStart | None = None,
                 stop_asked: list[int] | None = None) -> int:
    import asyncio

    from mailmodes.app import ListenerError, MailServer

    server = MailServer(config)
    if announce:
        from mailmodes.web.client import printable

        server.journal.finished_hooks.append(lambda record: print(session_line(printable(record.to_json())),
                                                                  flush=True))
    try:
        await server.start(early)
    except ListenerError as error:
        print(f"mailmodes: {error}", file=sys.stderr)
        return EXIT_START
    if early is None:
        announce_ready(config, server.ports, server.ca_file, server.http_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if stop_asked:
        stop.set()
    await stop.wait()
    await server.stop()
    print("stopped", flush=True)
    return 0


def certs(args: argparse.Namespace) -> int:
    config = _load(args)
    paths = ensure_certificates(config.certs.dir, config.hostname)
    print(f"CA certificate {paths.ca_file}")
    print(f"server certificate {paths.cert_file} (key {paths.key_file}) for {config.hostname}")
    for name in args.client or ():
        from mailmodes.scenarios import badcerts  # cryptography's x509 builder: only when asked

        if not name or "/" in name or name.startswith("."):
            print(f"mailmodes certs: --client {name!r}: a plain name, e.g. alice", file=sys.stderr)
            return 2
        made = (badcerts.bad_client_certificate if args.bad else badcerts.client_certificate)(
            config.certs.dir, config.hostname, name)
        issuer = "an untrusted CA (a listener with client_certificate refuses it)" if args.bad else "the test CA"
        print(f"client certificate {made} (key and certificate) for CN={name}, from {issuer}")
    return 0


def check(args: argparse.Namespace) -> int:
    """The readiness check (Docker HEALTHCHECK): one line per listener, 0 only if all greet."""
    from mailmodes.probe import (
        check as health,  # here, not at the top: `serve` starts faster without it
    )

    config = _load(args)
    ca = Path(args.ca) if args.ca else None
    lines, status = health.report(health.check(config, host=args.connect, ca_file=ca, timeout=args.timeout))
    print("\n".join(lines), flush=True)
    return status


def _explain_with_client(args: argparse.Namespace, model: Any, targets: Any, options: Any) -> int:
    """explain --client NAME: the same table from what a real client on this machine did."""
    from mailmodes.probe import real_clients

    if (problem := real_clients.missing_client(args.client)) is not None:
        print(f"mailmodes: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    real = real_clients.explain_with(args.client, targets, options, timeout=args.client_timeout)
    if args.format == "json":
        print(json.dumps(real_clients.comparison(model, real, args.client), indent=2))
    else:
        print(real_clients.format_side_by_side(model, real, args.client))
    return 0


def explain(args: argparse.Namespace) -> int:
    """The teaching table: every client setting against every listener of a running server."""
    from mailmodes.probe import explain as teaching

    config = _load(args)
    options = teaching.options_from_config(config, Path(args.ca) if args.ca else None,
                                           greeting_timeout=args.timeout)
    if options.ca_file is not None and not options.ca_file.is_file():
        print(f"mailmodes: {options.ca_file}: no CA certificate there; give the server's ca.pem with --ca",
              file=sys.stderr)
        return EXIT_CONFIG
    targets = teaching.targets_from_config(config, host=args.connect)
    table = teaching.explain(targets, options)
    if args.client:
        return _explain_with_client(args, table, targets, options)
    if args.format == "json":
        print(json.dumps(table.as_dict(), indent=2))
    else:
        print(teaching.format_markdown(table) if args.format == "markdown" else teaching.format_text(table))
    if table.cells and all(cell.outcome is teaching.Outcome.UNREACHABLE for cell in table.cells):
        print("mailmodes: no listener answered: is the server running (same --config and --port-offset)?",
              file=sys.stderr)
        return EXIT_START
    return 0


def api_url(args: argparse.Namespace) -> str:
    """--api, or the [http] address of the config a running server was started with (--config,
    --port-offset and the MAILMODES_* variables, as `check` reads them)."""
    if args.api:
        return str(args.api)
    config = _load(args)
    if config.http is None:
        raise ConfigError(f"{config.source}: has no [http] table: give the API with --api URL")
    host = config.http.host
    if host in ("0.0.0.0", "::", ""):  # bound everywhere: loopback reaches it
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{config.http.port}"


def messages(args: argparse.Namespace) -> int:
    from mailmodes.web import client as apiclient

    if args.uid is not None:
        from mailmodes.web.remote import print_message

        if not args.user:
            raise ConfigError("messages --uid: name the user with --user")
        return print_message(api_url(args), args.user, args.mailbox, args.uid, format_received)
    return apiclient.print_messages(api_url(args), args.user)


def format_received(message: ReceivedMessage) -> str:
    """One message, as `wait` and `messages --uid` print it: its
    headers, then the text body (or what the message has instead)."""
    from mailmodes.web.client import printable

    flags = f" [{' '.join(message.flags)}]" if message.flags else ""
    lines = [f"{message.user} {message.mailbox} uid {message.uid} {message.internal_date.isoformat()}{flags}"]
    lines += [f"{name}: {printable(value)}" for name, value in message.headers]
    lines.append("")
    text = message.text
    if text is not None:
        lines += [printable(line) for line in text.splitlines()]
    elif message.html is not None:
        lines.append(f"(no text part; an HTML part of {len(message.html)} characters)")
    for attachment in message.attachments:
        lines.append(f"(attachment {printable(attachment.filename or '-')}: {attachment.content_type}, "
                     f"{len(attachment.data)} bytes)")
    return "\n".join(lines)


def _since(text: str | None) -> float | None:
    """ISO 8601 (UTC unless an offset is given) or epoch seconds, as the API takes them."""
    from mailmodes.web.views import BadQuery, parse_time

    try:
        return parse_time({"since": text or ""}, "since")
    except BadQuery as error:
        raise ConfigError(f"--{error}") from None


def wait(args: argparse.Namespace) -> int:
    """Exit 0 and print the message once one matches; 1 when --timeout runs out (or no API)."""
    from mailmodes.web.client import ApiUnreachable
    from mailmodes.web.remote import MailmodesApi, WaitTimeout

    api = MailmodesApi(api_url(args))
    try:
        message = api.wait_for_message(args.user, subject=args.subject, sender=args.sender, to=args.to,
                                       since=_since(args.since), mailbox=args.mailbox, timeout=args.timeout)
    except (WaitTimeout, ApiUnreachable, LookupError) as error:
        print(f"mailmodes: {error}", file=sys.stderr)
        return EXIT_START
    print(format_received(message), flush=True)
    return 0


def sessions(args: argparse.Namespace) -> int:
    since = _since(args.since)
    if not args.journal:
        from mailmodes.web import (
            client as apiclient,  # urllib: only for the commands that talk to a server
        )

        query = {key: str(value) for key, value in (("verdict", args.verdict), ("listener", args.listener),
                                                    ("since", since), ("limit", args.limit)) if value}
        return apiclient.print_sessions(api_url(args), query, lambda entry: format_session(
            entry, transcript=args.transcript), follow=args.follow)
    if args.follow:
        raise ConfigError("sessions --follow reads a running server: use --api (or its --config), not --journal")
    path = Path(args.journal)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        print(f"mailmodes: {path}: cannot read: {error.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    chosen = []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            print(f"mailmodes: {path}:{number}: not a JSON line, skipped", file=sys.stderr)
            continue
        if args.verdict and args.verdict not in entry.get("verdicts", []):
            continue
        if args.listener and entry.get("listener") != args.listener:
            continue
        if since is not None and (_since(entry.get("started")) or 0.0) < since:
            continue
        chosen.append(entry)
    for entry in chosen[-args.limit:] if args.limit else chosen:
        print(format_session(entry, transcript=args.transcript))
    return 0


def format_session(entry: dict[str, Any], *, transcript: bool) -> str:
    """One finished session, readably: who, which listener, what TLS, which verdicts."""
    tls = entry.get("tls_version")
    how = ("STARTTLS " if entry.get("starttls") else "") + f"{tls} {entry.get('cipher')}" if tls else "no TLS"
    if entry.get("tls_alert"):
        how += f" (client alert: {entry['tls_alert']})"
    scenario = f" scenario={entry['scenario']}" if entry.get("scenario") else ""
    sni = f" SNI={entry['sni']}" if entry.get("sni") else ""
    user = f" user={entry['user']}" if entry.get("user") else ""
    lines = [f"#{entry.get('id')} {entry.get('started')} {entry.get('client')} -> {entry.get('listener')} "
             f"({entry.get('protocol')}, {entry.get('tls_mode')}{scenario}): {how}{sni}{user}"]
    details = entry.get("verdict_details") or [{"code": code, "detail": ""} for code in entry.get("verdicts", [])]
    lines += [f"    ! {d['code']}: {d['detail']}" for d in details] or ["    no verdicts"]
    lines += [f"    x failed login: {login['command']}" + (f" as {login['user']}" if login.get("user") else "")
              for login in entry.get("logins", []) if not login.get("accepted")]
    if transcript:
        for line in entry.get("transcript", []):
            arrow = "C:" if line["sender"] == "client" else "S:"
            lines.append(f"      {line['at']:8.3f} {'TLS' if line['tls'] else '   '} {arrow} {line['text']}")
    return "\n".join(lines)


def report(args: argparse.Namespace) -> int:
    """The report card of a running server's sessions (GET /api/report), as text, JSON or JUnit XML;
    with --check, exit 1 when any scenario failed."""
    from mailmodes.record.report import render
    from mailmodes.web.client import ApiUnreachable, fetch_json, printable

    since = _since(args.since)
    query = {key: str(value) for key, value in (("client", args.client), ("since", since),
                                                ("protocol", args.protocol)) if value}
    try:
        card = fetch_json(api_url(args), "/api/report", query)
    except ApiUnreachable as error:
        print(f"mailmodes: {error}", file=sys.stderr)
        return EXIT_START
    # The reasons quote what clients sent: no control character reaches a terminal.
    text = render(printable(card) if args.format == "text" else card, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        print(text, end="", flush=True)
    return 1 if args.check and card["counts"]["failed"] else 0


# Audit ports when none is given: the standard ports plus 10000 (no root needed).
AUDIT_PORTS = {("smtp", True): 10465, ("smtp", False): 10587, ("imap", True): 10993, ("imap", False): 10143,
               ("pop3", True): 10995, ("pop3", False): 10110}


def _audit_config(args: argparse.Namespace) -> Config:
    """The audit listeners of --config (audit = true), or one per --protocol on the default
    config's users, host name and certificates."""
    config = _load(args)
    if args.config:
        if not any(listener.audit for listener in config.listeners):
            raise ConfigError(f"{config.source}: has no listener with audit = true")
        return config
    protocols = list(dict.fromkeys(args.protocol or ["smtp"]))
    if args.port is not None and len(protocols) > 1:
        raise ConfigError("audit --port: give one --protocol with it (each protocol needs a port of its own)")
    implicit = args.tls == "implicit"
    listeners = [{"name": f"audit-{protocol}", "protocol": protocol, "tls": args.tls, "audit": True,
                  "port": args.port if args.port is not None else AUDIT_PORTS[(protocol, implicit)]}
                 for protocol in protocols]
    data = {"hostname": config.hostname, "host": config.host, "certs": {"dir": str(config.certs.dir)},
            "users": [{"name": u.name, "password": u.password, "addresses": list(u.addresses)} for u in config.users],
            "listeners": listeners}
    if args.http_port is not None:
        data["http"] = {"port": args.http_port}
    if args.idle_timeout is not None:
        data["limits"] = {"idle_timeout": args.idle_timeout}
    return parse_config(data, source="mailmodes audit")


def audit(args: argparse.Namespace) -> int:
    """Serve the audit listeners until one client address has walked every one of them, saying
    after each session how many connections are left; then print that client's report card."""
    import asyncio

    config = _audit_config(args)
    return asyncio.run(_audit(config, args.format, args.output))


async def _audit(config: Config, format: str, output: str | None) -> int:
    import asyncio

    from mailmodes.app import ListenerError, MailServer
    from mailmodes.record.expectations import evaluate, scenario_key
    from mailmodes.record.report import build, render
    from mailmodes.web.client import printable

    server = MailServer(config)
    done = asyncio.Event()
    finished_client: list[str] = []
    finished: dict[str, int] = {}  # finished audit sessions per client address

    def progress(record: Any) -> None:
        walk = server.audits.get(record.listener)
        if walk is None or record.probe:
            return
        judgement = evaluate(record)
        # Counted by finished sessions, not accepted connections: the card is complete only once
        # the last one has ended (a connection can end after the next one began).
        finished[record.client_host] = finished.get(record.client_host, 0) + 1
        left = max(0, sum(len(w.plan) for w in server.audits.values()) - finished[record.client_host])
        print(printable(f"{record.client_host} #{record.id} {record.protocol} {scenario_key(record)}: "
                        f"{judgement.outcome} ({judgement.reason}); {left} connections left"), flush=True)
        if left == 0 and not finished_client:
            finished_client.append(record.client_host)
            done.set()

    server.journal.finished_hooks.append(progress)
    try:
        await server.start()
    except ListenerError as error:
        print(f"mailmodes: {error}", file=sys.stderr)
        return EXIT_START
    for name, walk in server.audits.items():
        listener = server.listeners[name]
        print(f"audit {name}: {listener.protocol} {listener.tls} on {listener.host or config.host}:{server.port(name)}"
              f": {len(walk.plan)} connections walk every scenario, one per connection", flush=True)
    print(f"CA certificate {server.ca_file}")
    if server.http_port is not None:
        print(f"dashboard http://{config.http.host if config.http else '127.0.0.1'}:{server.http_port}/")
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    await done.wait()
    await asyncio.sleep(0)  # let a session finishing with the last one be recorded too
    records = [r for r in server.journal.sessions(probes=False) if r.listener in server.audits
               and (not finished_client or r.client_host == finished_client[0])]
    scope = {"audit": ", ".join(server.audits), "client": finished_client[0] if finished_client else None}
    expected = [(server.listeners[name].protocol, scenario or str(server.listeners[name].tls))
                for name, walk in server.audits.items() for scenario in walk.plan]
    await server.stop()
    card = build(records, scope, expected).as_dict()
    text = render(printable(card) if format == "text" else card, format)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        print(f"report card written to {output}", flush=True)
    else:
        print(text, end="", flush=True)
    return 0


def scenarios(args: argparse.Namespace) -> int:
    """Every scenario id: what the server does, what a correct client does, and its ports; or,
    with --known-bad-config, the config that serves them all (config/known-bad.toml)."""
    from mailmodes.scenarios.catalogue import describe, known_bad_config, listener_ports

    if args.known_bad_config:
        print(known_bad_config(), end="")
        return 0
    config = _load(args) if args.config else None
    print(describe(listener_ports(config.listeners) if config else None), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailmodes", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mailmodes {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection (debug)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="start every configured listener")
    serve_parser.add_argument("--config", help="TOML config file (default: the seven standard listeners)")
    serve_parser.add_argument("--port-offset", type=int, default=None, metavar="N",
                              help="add N to every port, e.g. 10000 turns 25 into 10025")
    serve_parser.add_argument("--host", help="address to bind (default from the config: 127.0.0.1)")
    serve_parser.add_argument("-v", "--verbose", dest="announce", action="store_true",
                              help="print one line per finished session, with its verdicts")
    serve_parser.set_defaults(run=serve)

    certs_parser = commands.add_parser("certs", help="make the test CA and server certificate")
    certs_parser.add_argument("--config", help="TOML config file (its hostname and certs dir)")
    certs_parser.add_argument("--client", action="append", metavar="NAME",
                              help="also a client certificate for NAME (CN=NAME, SASL EXTERNAL logs in as the "
                                   "account NAME) in certs/clients/NAME.pem; repeatable")
    certs_parser.add_argument("--bad", action="store_true",
                              help="with --client: from an untrusted CA instead (certs/clients/NAME-untrusted.pem)")
    certs_parser.set_defaults(run=certs)

    check_parser = commands.add_parser("check", help="exit 0 only if every listener greets (the HEALTHCHECK)")
    explain_parser = commands.add_parser("explain", help="what each client setting meets on each port")
    for sub in (check_parser, explain_parser):
        sub.add_argument("--config", help="TOML config of the running server (default: the seven standard)")
        sub.add_argument("--port-offset", type=int, default=None, metavar="N", help="the server's --port-offset")
        sub.add_argument("--host", dest="connect", metavar="H",
                         help="connect here instead of the config's address (e.g. a Docker host)")
        sub.add_argument("--ca", metavar="FILE", help="CA certificate to trust (default: ca.pem in the certs dir)")
    check_parser.add_argument("--timeout", type=float, default=3.0, metavar="S", help="per listener (default 3)")
    check_parser.set_defaults(run=check)
    explain_parser.add_argument("--timeout", type=float, default=1.5, metavar="S",
                                help="how long to wait for a greeting before calling it a hang (default 1.5)")
    explain_parser.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                                help="markdown: the model's table only")
    explain_parser.add_argument("--client", metavar="NAME",
                                help="also drive this real client in each of its settings and show what it did "
                                     "beside the model: curl, python, swaks, msmtp or openssl")
    explain_parser.add_argument("--client-timeout", type=float, default=3.0, metavar="S",
                                help="the real client's own timeout (default 3)")
    explain_parser.set_defaults(run=explain)

    audit_parser = commands.add_parser("audit", help="one port per protocol that walks a client through every "
                                                     "scenario, one per connection; then its report card")
    audit_parser.add_argument("--protocol", action="append", choices=("smtp", "imap", "pop3"),
                              help="a protocol to audit (repeat for more; default smtp)")
    audit_parser.add_argument("--tls", choices=("starttls-required", "starttls-optional", "implicit"),
                              default="starttls-required", help="how the client connects (default starttls-required)")
    audit_parser.add_argument("--port", type=int, metavar="N",
                              help="with one --protocol: its port (default: the standard one plus 10000, e.g. 10587)")
    audit_parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    audit_parser.add_argument("--http-port", type=int, metavar="N", help="also serve the API and dashboard here")
    audit_parser.add_argument("--idle-timeout", type=float, metavar="S",
                              help="close a silent connection after S seconds ([limits] idle_timeout): a client "
                                   "that stalls 15 s or more at a step is judged stalled-at-step")
    audit_parser.add_argument("--config", help="a TOML config whose listeners with audit = true are served instead")
    audit_parser.add_argument("--format", choices=("text", "json", "junit"), default="text",
                              help="the report card's format (default text)")
    audit_parser.add_argument("--output", metavar="FILE", help="write the report card here")
    audit_parser.set_defaults(run=audit, port_offset=None)

    scenarios_parser = commands.add_parser("scenarios", help="list every known-bad scenario and its ports")
    scenarios_output = scenarios_parser.add_mutually_exclusive_group()
    scenarios_output.add_argument("--config", help="show the ports of this config (e.g. config/known-bad.toml)")
    scenarios_output.add_argument("--known-bad-config", action="store_true",
                                  help="print the TOML of config/known-bad.toml: every scenario on its planned ports")
    scenarios_parser.set_defaults(run=scenarios)

    sessions_parser = commands.add_parser("sessions", help="print recorded sessions and their verdicts")
    report_parser = commands.add_parser("report", help="the report card: each scenario a client met, passed or failed")
    messages_parser = commands.add_parser("messages", help="print the mail a running server holds")
    wait_parser = commands.add_parser("wait", help="wait for a message to arrive: exit 0 and print it, 1 on timeout")
    for sub in (sessions_parser, messages_parser, wait_parser, report_parser):
        source = sub.add_mutually_exclusive_group() if sub is sessions_parser else sub
        source.add_argument("--api", metavar="URL",
                            help="the server's HTTP API, e.g. http://127.0.0.1:8025 (default: [http] of --config)")
        if sub is sessions_parser:
            source.add_argument("--journal", metavar="FILE", help="the JSON-lines file named by [journal] path")
        sub.add_argument("--config", help="TOML config of the running server, for its [http] address")
        sub.add_argument("--port-offset", type=int, default=None, metavar="N", help="the server's --port-offset")
    sessions_parser.add_argument("--verdict", help="only sessions with this verdict")
    sessions_parser.add_argument("--listener", metavar="NAME", help="only sessions on this listener")
    sessions_parser.add_argument("--since", metavar="TIME", help="only sessions started since (ISO 8601 or epoch seconds)")
    sessions_parser.add_argument("--limit", type=int, metavar="N", help="only the last N")
    sessions_parser.add_argument("--follow", action="store_true", help="go on printing sessions as they finish")
    sessions_parser.add_argument("--transcript", action="store_true", help="show each transcript")
    sessions_parser.set_defaults(run=sessions)

    report_parser.add_argument("--format", choices=("text", "json", "junit"), default="text",
                               help="text (default), json (as GET /api/report) or junit (JUnit XML for CI)")
    report_parser.add_argument("--client", metavar="ADDRESS", help="only sessions from this address (host or host:port)")
    report_parser.add_argument("--since", metavar="TIME", help="only sessions started since (ISO 8601 or epoch seconds)")
    report_parser.add_argument("--protocol", choices=("smtp", "imap", "pop3"), help="only this protocol")
    report_parser.add_argument("--output", metavar="FILE", help="write the card here instead of printing it")
    report_parser.add_argument("--check", action="store_true", help="exit 1 when any scenario failed")
    report_parser.set_defaults(run=report)

    messages_parser.add_argument("--user", help="only this user's mailboxes (default: every user, and captured mail)")
    messages_parser.add_argument("--mailbox", default="INBOX", help="with --uid: the mailbox (default INBOX)")
    messages_parser.add_argument("--uid", type=int, metavar="N", help="print this message of --user: headers and text")
    messages_parser.set_defaults(run=messages)

    wait_parser.add_argument("--user", help="whose mail (default: the user --to reaches)")
    wait_parser.add_argument("--subject", help="a substring of the Subject, any case")
    wait_parser.add_argument("--from", dest="sender", metavar="TEXT", help="a substring of From")
    wait_parser.add_argument("--to", metavar="TEXT", help="a substring of To or Cc (an address also names the user)")
    wait_parser.add_argument("--mailbox", help="only this mailbox (default: any)")
    wait_parser.add_argument("--since", metavar="TIME", help="internal date at or after (ISO 8601 or epoch seconds)")
    wait_parser.add_argument("--timeout", type=float, default=30.0, metavar="S", help="give up after S seconds (30)")
    wait_parser.set_defaults(run=wait)
    return parser


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.environ = os.environ if environ is None else environ
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        status: int = args.run(args)
        return status
    except ConfigError as error:
        print(f"mailmodes: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # `mailmodes sessions | head`: the reader has what it wanted. Point stdout at /dev/null so
        # the interpreter's final flush does not fail again (Python docs, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_START
