"""The command line: the only place that reads argv and the environment."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from mailmodes import __version__
from mailmodes.app import ListenerError, MailServer
from mailmodes.certs import ensure_certificates
from mailmodes.config import Config, ConfigError, load_config, parse_config

EXIT_CONFIG = 2
EXIT_START = 1


def default_config() -> Config:
    """The packaged default: the seven standard listeners (same file as config/default.toml)."""
    import tomllib

    text = resources.files("mailmodes").joinpath("default.toml").read_text()
    return parse_config(tomllib.loads(text), source="default config (config/default.toml)")


def _load(args: argparse.Namespace) -> Config:
    config = load_config(Path(args.config)) if args.config else default_config()
    if getattr(args, "host", None):
        config = replace(config, host=args.host)
    if getattr(args, "port_offset", 0):
        config = config.with_port_offset(args.port_offset)
    bad = [listener for listener in config.listeners if listener.port > 65535]
    if bad:
        raise ConfigError(f"{config.source}: --port-offset makes port {bad[0].port} of {bad[0].name!r} too large")
    return config


def serve(args: argparse.Namespace) -> int:
    config = _load(args)
    return asyncio.run(_serve(config))


async def _serve(config: Config) -> int:
    server = MailServer(config)
    try:
        await server.start()
    except ListenerError as error:
        print(f"mailmodes: {error}", file=sys.stderr)
        return EXIT_START
    for name, reason in server.skipped.items():
        print(f"skipped   {name}: {reason}", flush=True)
    for name, listener in server.listeners.items():
        host = listener.host or config.host
        scenario = f"  scenario={listener.scenario}" if listener.scenario else ""
        print(f"listening {name:<14} {listener.protocol:<5} {host}:{server.port(name):<6} {listener.tls}{scenario}")
    print(f"CA certificate {server.ca_file}")
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop()
    print("stopped", flush=True)
    return 0


def certs(args: argparse.Namespace) -> int:
    config = _load(args)
    paths = ensure_certificates(config.certs.dir, config.hostname)
    print(f"CA certificate {paths.ca_file}")
    print(f"server certificate {paths.cert_file} (key {paths.key_file}) for {config.hostname}")
    return 0


def sessions(args: argparse.Namespace) -> int:
    path = Path(args.journal)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        print(f"mailmodes: {path}: cannot read: {error.strerror}", file=sys.stderr)
        return EXIT_CONFIG
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            print(f"mailmodes: {path}:{number}: not a JSON line, skipped", file=sys.stderr)
            continue
        if args.verdict and args.verdict not in entry.get("verdicts", []):
            continue
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
    if transcript:
        for line in entry.get("transcript", []):
            arrow = "C:" if line["sender"] == "client" else "S:"
            lines.append(f"      {line['at']:8.3f} {'TLS' if line['tls'] else '   '} {arrow} {line['text']}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailmodes", description=__doc__)
    parser.add_argument("--version", action="version", version=f"mailmodes {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every connection (debug)")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="start every configured listener")
    serve_parser.add_argument("--config", help="TOML config file (default: the seven standard listeners)")
    serve_parser.add_argument("--port-offset", type=int, default=0, metavar="N",
                              help="add N to every port, e.g. 10000 turns 25 into 10025")
    serve_parser.add_argument("--host", help="address to bind (default from the config: 127.0.0.1)")
    serve_parser.set_defaults(run=serve)

    certs_parser = commands.add_parser("certs", help="make the test CA and server certificate")
    certs_parser.add_argument("--config", help="TOML config file (its hostname and certs dir)")
    certs_parser.set_defaults(run=certs)

    sessions_parser = commands.add_parser("sessions", help="print recorded sessions and their verdicts")
    sessions_parser.add_argument("--journal", required=True, metavar="FILE",
                                 help="the JSON-lines file named by [journal] path")
    sessions_parser.add_argument("--verdict", help="only sessions with this verdict")
    sessions_parser.add_argument("--transcript", action="store_true", help="show each transcript")
    sessions_parser.set_defaults(run=sessions)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return args.run(args)
    except ConfigError as error:
        print(f"mailmodes: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0
