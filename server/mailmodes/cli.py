"""The command line: the only place that reads argv and the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path

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
