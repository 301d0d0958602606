"""Runs the real clients the tests drive through every server mode (and a bad certificate), and
prints, per verdict, how often the server was right, raised a false alarm, or missed one.

    .venv/bin/python bench/verdict_crosstab.py [--json-out FILE]

Ground truth comes from each client's own debug output (curl -v, swaks' transcript, msmtp --debug,
openssl s_client's verify result) or, for Python's stdlib, from what the script itself made the
client do: whether it sent credentials or mail before TLS began, opened with a ClientHello, waited
for a greeting on a TLS-first port, refused the certificate, went on past a bad one. The server's
answer is the journal's verdicts for the sessions of that run (one run at a time per listener, so
the sessions of a run are the listener's new ones). A run of "curl --ssl-reqd || curl" against a
one-client server shows fallback claimed where the two connections are known to be one client's;
the shared server, where every run is a different client, must never claim it.
"""

from __future__ import annotations

import argparse
import imaplib
import json
import poplib
import re
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailmodes.app import ThreadedMailServer
from mailmodes.config import parse_config
from mailmodes.record.verdicts import CODES
from mailmodes.tls.certs import ensure_certificates

HOST = "127.0.0.1"
HOSTNAME = "mail.example.test"
USER, SECRET = "alice", "alice-password"
MODES = ("implicit", "starttls-required", "starttls-optional", "plaintext")
BAD = ("cert-expired", "cert-wrong-host")
CLIENT_TIMEOUT = 3
CREDENTIAL = re.compile(r"^(AUTH|USER|PASS|APOP)\b|^\S+ (LOGIN|AUTHENTICATE)\b", re.I)
MAIL = re.compile(r"^(MAIL|RCPT|DATA|RETR|TOP)\b|^\S+ (SELECT|EXAMINE|FETCH|APPEND|UID FETCH)\b", re.I)
STARTTLS = re.compile(r"^(STARTTLS|STLS)$|^\S+ STARTTLS$", re.I)
GOODBYE = re.compile(r"^(QUIT|LOGOUT|RSET)$|^\S+ LOGOUT$", re.I)
MESSAGE = b"Subject: crosstab\r\n\r\nbody\r\n"


@dataclass
class Seen:
    """What a client's own output shows it did."""

    commands: list[tuple[bool, str]] = field(default_factory=list)  # (inside TLS, command)
    opened_with_tls: bool = False  # a ClientHello was its first word
    waited: bool = False  # it sent nothing and waited for a greeting
    tls_up: bool = False
    refused_certificate: bool = False


@dataclass(frozen=True)
class Listener:
    name: str
    protocol: str
    mode: str
    scenario: str | None = None


@dataclass(frozen=True)
class Client:
    name: str
    protocols: tuple[str, ...]
    run: Callable[[Listener, int, Path, Path], Seen]


# --- the clients, and what their output says ------------------------------------------------------


def _run(args: list[str], stdin: bytes = b"", env: dict[str, str] | None = None) -> tuple[int, str]:
    result = subprocess.run(args, input=stdin, capture_output=True, timeout=30, env=env)
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def _curl(setting: str) -> Callable[[Listener, int, Path, Path], Seen]:
    def run(listener: Listener, port: int, ca: Path, tmp: Path) -> Seen:
        scheme = listener.protocol + ("s" if setting == "implicit" else "")
        options = {"required": ["--ssl-reqd"], "opportunistic": ["--ssl"]}.get(setting, [])
        extra = (["--mail-from", "alice@example.test", "--mail-rcpt", "bob@example.test", "-T", str(tmp / "m.eml")]
                 if listener.protocol == "smtp" else [])
        status, out = _run(["curl", "-v", "--max-time", str(CLIENT_TIMEOUT), "--cacert", str(ca), "-u",
                            f"{USER}:{SECRET}", *options, *extra, f"{scheme}://{HOST}:{port}/"])
        seen = Seen(refused_certificate=status == 60)
        for line in out.splitlines():
            if "SSL connection using" in line:
                seen.tls_up = True
            elif "TLS handshake, Client hello" in line and not seen.commands and not seen.tls_up:
                seen.opened_with_tls = seen.opened_with_tls or setting == "implicit"
            elif line.startswith("> "):
                seen.commands.append((seen.tls_up, line[2:].strip()))
        seen.waited = setting != "implicit" and status == 28 and not seen.commands
        return seen
    return run


def _swaks(setting: str) -> Callable[[Listener, int, Path, Path], Seen]:
    def run(listener: Listener, port: int, ca: Path, tmp: Path) -> Seen:
        options = {"implicit": ["--tls-on-connect", "--tls-verify", "--tls-ca-path", str(ca)],
                   "careless": ["--tls-on-connect"],
                   "required": ["--tls", "--tls-verify", "--tls-ca-path", str(ca)],
                   "opportunistic": ["--tls-optional-strict", "--tls-verify", "--tls-ca-path", str(ca)]}.get(setting, [])
        status, out = _run(["swaks", "--server", HOST, "--port", str(port), "--from", "alice@example.test", "--to",
                            "bob@example.test", "--auth", "PLAIN", "--auth-user", USER, "--auth-password", SECRET,
                            "--timeout", str(CLIENT_TIMEOUT), *options])
        seen = Seen(opened_with_tls=setting in ("implicit", "careless"))
        for line in out.splitlines():
            if line.startswith("=== TLS started"):
                seen.tls_up = True
            elif line.startswith((" -> ", " ~> ")):
                seen.commands.append((line.startswith(" ~> "), line[4:].strip()))
        seen.refused_certificate = "certificate verify failed" in out
        seen.waited = not seen.opened_with_tls and not seen.commands and listener.mode == "implicit"
        return seen
    return run


def _msmtp(setting: str) -> Callable[[Listener, int, Path, Path], Seen]:
    def run(listener: Listener, port: int, ca: Path, tmp: Path) -> Seen:
        options = {"implicit": ["--tls=on", "--tls-starttls=off", f"--tls-trust-file={ca}", "--auth=on"],
                   "required": ["--tls=on", "--tls-starttls=on", f"--tls-trust-file={ca}", "--auth=on"]}.get(
            setting, ["--tls=off", "--auth=plain"])
        status, out = _run(["msmtp", "-C", "/dev/null", f"--host={HOST}", f"--port={port}", f"--user={USER}",
                            f"--passwordeval=echo {SECRET}", "--from=alice@example.test",
                            f"--timeout={CLIENT_TIMEOUT}", "--debug", *options, "bob@example.test"], MESSAGE)
        seen = Seen(opened_with_tls=setting == "implicit")
        for line in out.splitlines():
            if "TLS session parameters" in line:
                seen.tls_up = True
            elif line.startswith("--> "):
                seen.commands.append((seen.tls_up, line[4:].strip()))
        seen.refused_certificate = "certificate verification failed" in out
        seen.waited = setting != "implicit" and not seen.commands and listener.mode == "implicit"
        return seen
    return run


def _openssl(setting: str) -> Callable[[Listener, int, Path, Path], Seen]:
    def run(listener: Listener, port: int, ca: Path, tmp: Path) -> Seen:
        starttls = ["-starttls", listener.protocol] if setting == "required" else []
        status, out = _run(["timeout", str(CLIENT_TIMEOUT), "openssl", "s_client", "-connect", f"{HOST}:{port}",
                            "-servername", "localhost", "-verify_hostname", "localhost", "-CAfile", str(ca),
                            "-verify_return_error", "-brief", *starttls])
        seen = Seen(opened_with_tls=setting == "implicit", tls_up="CONNECTION ESTABLISHED" in out)
        seen.refused_certificate = "verify error" in out or "certificate verify failed" in out
        if starttls:  # what s_client says for -starttls, which it does not print
            first = {"smtp": "EHLO", "imap": ". CAPABILITY", "pop3": "CAPA"}[listener.protocol]
            seen.commands = [(False, first), (False, "STARTTLS")]
        return seen
    return run


NODE_CLIENT = Path(__file__).parents[1] / "tests" / "clients" / "node" / "client.js"
CERTIFICATE_ERRORS = ("certificate has expired", "self-signed certificate", "does not match certificate's altnames",
                      "unable to verify", "unable to get local issuer", "not yet valid")


def _node(client: str, setting: str) -> Callable[[Listener, int, Path, Path], Seen]:
    """nodemailer and imapflow (tests/clients/node): their settings as an application sets them."""
    starttls = {"nodemailer": {"required": {"requireTLS": True}, "none": {"ignoreTLS": True}},
                "imapflow": {"required": {"doSTARTTLS": True}, "none": {"doSTARTTLS": False}}}[client]
    options: dict[str, Any] = {"implicit": {"secure": True}, "careless": {"secure": True, "rejectUnauthorized": False},
                               **starttls}.get(setting, {})

    def run(listener: Listener, port: int, ca: Path, tmp: Path) -> Seen:
        settings = {"client": client, "host": HOST, "port": port, "user": USER, "pass": SECRET, "ca": str(ca),
                    **options}
        status, out = _run(["node", str(NODE_CLIENT), json.dumps(settings)])
        seen = Seen(opened_with_tls="secure" in options, tls_up="secure" in options)
        for line in out.splitlines():
            if "Connection upgraded with STARTTLS" in line or '"msg":"Established TLS session"' in line:
                seen.tls_up = True
            elif (command := _node_command(client, line)) is not None:
                seen.commands.append((seen.tls_up, command))
        seen.refused_certificate = any(error in out for error in CERTIFICATE_ERRORS)
        if seen.refused_certificate:  # nothing of it reached the server inside TLS
            seen.tls_up = False
        seen.waited = not seen.opened_with_tls and not seen.commands and listener.mode == "implicit"
        return seen
    return run


def _node_command(client: str, line: str) -> str | None:
    if client == "nodemailer":  # "[time] DEBUG [id] C: EHLO [127.0.0.1]"; DATA's lines have no "C: "
        match = re.search(r"\] C: (.*)", line)
        return match.group(1) if match else None
    if line.startswith("DEBUG {"):  # imapflow: {"src":"c","msg":"2 LOGIN ..."}
        entry = json.loads(line[6:])
        return entry["msg"] if entry.get("src") == "c" and "comment" not in entry else None
    return None


def _mutt(setting: str) -> Callable[[Listener, int, Path, Path], Seen]:
    """mutt in batch mode sending over SMTP; its level-5 debug log shows each line ("4> EHLO vm")."""
    settings = {"implicit": ["set ssl_force_tls=yes"], "required": ["set ssl_force_tls=yes"],
                "opportunistic": ["unset ssl_force_tls", "set ssl_starttls=yes"],
                "none": ["unset ssl_force_tls", "unset ssl_starttls"]}[setting]

    def run(listener: Listener, port: int, ca: Path, tmp: Path) -> Seen:
        home = Path(tempfile.mkdtemp(dir=tmp))
        scheme = "smtps" if setting == "implicit" else "smtp"
        (home / "muttrc").write_text("\n".join([
            f'set smtp_url="{scheme}://{USER}@{HOST}:{port}/"', f'set smtp_pass="{SECRET}"',
            'set from="alice@example.test"', f'set ssl_ca_certificates_file="{ca}"',
            f'set certificate_file="{home / "certificates"}"', f"set socket_timeout={CLIENT_TIMEOUT}", *settings, ""]))
        status, out = _run(["timeout", str(CLIENT_TIMEOUT * 3), "mutt", "-n", "-F", str(home / "muttrc"), "-d", "5",
                            "-s", "crosstab", "bob@example.test"], b"body\n", env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
        debug = (home / ".muttdebug0").read_text(errors="replace") if (home / ".muttdebug0").exists() else ""
        seen = Seen(opened_with_tls=setting == "implicit", tls_up=setting == "implicit")
        seen.refused_certificate = "unable to prompt for certificate" in debug
        last = ""
        for line in debug.splitlines():
            said = re.search(r"\] \d+([<>]) (.*)", line)
            if not said:
                continue
            if said.group(1) == ">":
                last = said.group(2).strip()
                seen.commands.append((seen.tls_up and not seen.refused_certificate, last))
                if last == "DATA":
                    break  # what follows is the message
            elif last == "STARTTLS" and said.group(2).startswith("220"):
                seen.tls_up = True
        seen.waited = setting != "implicit" and not seen.commands and listener.mode == "implicit"
        return seen
    return run


def _stdlib(setting: str) -> Callable[[Listener, int, Path, Path], Seen]:
    def run(listener: Listener, port: int, ca: Path, tmp: Path) -> Seen:
        context = ssl.create_default_context(cafile=str(ca))
        how = setting
        if how == "careless":  # verifies nothing: what the stdlib does with no context given
            context, how = ssl._create_unverified_context(), "implicit"
        seen = Seen(opened_with_tls=how == "implicit")
        try:
            _STDLIB[listener.protocol](how, port, context, seen)
        except ssl.SSLCertVerificationError:
            seen.refused_certificate = True
        except (OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto):
            # Nothing sent and no TLS: it waited for a greeting that a TLS-first port never gives.
            seen.waited = not seen.commands and not seen.opened_with_tls
        return seen
    return run


def _smtplib(setting: str, port: int, context: ssl.SSLContext, seen: Seen) -> None:
    client = (smtplib.SMTP_SSL(HOST, port, context=context, timeout=CLIENT_TIMEOUT) if setting == "implicit"
              else smtplib.SMTP(HOST, port, timeout=CLIENT_TIMEOUT))
    seen.tls_up = setting == "implicit"
    with client:
        seen.commands.append((seen.tls_up, "EHLO"))
        client.ehlo()
        if setting == "required":
            seen.commands.append((False, "STARTTLS"))
            client.starttls(context=context)
            seen.tls_up = True
            client.ehlo()
        if client.has_extn("auth"):  # smtplib's login() sends nothing where AUTH is not offered
            seen.commands.append((seen.tls_up, "AUTH PLAIN"))
        client.login(USER, SECRET)
        seen.commands.append((seen.tls_up, "QUIT"))


def _imaplib(setting: str, port: int, context: ssl.SSLContext, seen: Seen) -> None:
    client = (imaplib.IMAP4_SSL(HOST, port, ssl_context=context, timeout=CLIENT_TIMEOUT) if setting == "implicit"
              else imaplib.IMAP4(HOST, port, timeout=CLIENT_TIMEOUT))
    seen.tls_up = setting == "implicit"
    seen.commands.append((seen.tls_up, "a CAPABILITY"))
    if setting == "required":
        seen.commands.append((False, "a STARTTLS"))
        client.starttls(ssl_context=context)
        seen.tls_up = True
    seen.commands.append((seen.tls_up, "a LOGIN"))
    client.login(USER, SECRET)
    seen.commands.append((seen.tls_up, "a LOGOUT"))
    client.logout()


def _poplib(setting: str, port: int, context: ssl.SSLContext, seen: Seen) -> None:
    client = (poplib.POP3_SSL(HOST, port, context=context, timeout=CLIENT_TIMEOUT) if setting == "implicit"
              else poplib.POP3(HOST, port, timeout=CLIENT_TIMEOUT))
    seen.tls_up = setting == "implicit"
    if setting == "required":
        seen.commands.append((False, "CAPA"))
        seen.commands.append((False, "STLS"))
        client.stls(context=context)
        seen.tls_up = True
    seen.commands.append((seen.tls_up, "USER"))
    client.user(USER)
    seen.commands.append((seen.tls_up, "PASS"))
    client.pass_(SECRET)
    seen.commands.append((seen.tls_up, "QUIT"))
    client.quit()


_STDLIB: dict[str, Callable[[str, int, ssl.SSLContext, Seen], None]] = {
    "smtp": _smtplib, "imap": _imaplib, "pop3": _poplib}
ALL = ("smtp", "imap", "pop3")
CLIENTS = (
    *(Client(f"curl {s}", ALL, _curl(s)) for s in ("implicit", "required", "opportunistic", "none")),
    *(Client(f"swaks {s}", ("smtp",), _swaks(s)) for s in ("implicit", "careless", "required", "opportunistic",
                                                           "none")),
    *(Client(f"msmtp {s}", ("smtp",), _msmtp(s)) for s in ("implicit", "required", "none")),
    *(Client(f"openssl {s}", ALL, _openssl(s)) for s in ("implicit", "required")),
    *(Client(f"python {s}", ALL, _stdlib(s)) for s in ("implicit", "careless", "required", "none")),
    *(Client(f"{c} {s}", (p,), _node(c, s)) for c, p in (("nodemailer", "smtp"), ("imapflow", "imap"))
      for s in ("implicit", "careless", "required", "opportunistic", "none")),
    *(Client(f"mutt {s}", ("smtp",), _mutt(s)) for s in ("implicit", "required", "opportunistic", "none")),
)


# --- ground truth ---------------------------------------------------------------------------------


def expected(listener: Listener, seen: Seen) -> set[str]:
    """The verdicts the client's own output says it earned."""
    truth: set[str] = set()
    bad = listener.scenario in BAD
    clear = [command for tls, command in seen.commands if not tls]
    if any(CREDENTIAL.match(command) for command in clear):
        truth.add("credentials-in-clear")
    starttls_mode = listener.mode in ("starttls-required", "starttls-optional")
    if starttls_mode and any(MAIL.match(command) for command in clear):
        truth.add("mail-in-clear")
    if listener.mode != "implicit" and seen.opened_with_tls:
        truth.add("tls-on-plaintext-port")
    if listener.mode == "implicit" and not seen.opened_with_tls and (clear or seen.waited):
        truth.add("plaintext-on-tls-port")
    if (starttls_mode and not bad and not seen.opened_with_tls and not any(STARTTLS.match(c) for c in clear)
            and any(not GOODBYE.match(c) for c in clear)):
        truth.add("no-upgrade")
    if bad and seen.refused_certificate:
        truth.add("rejected-certificate")
    if bad and seen.tls_up and any(tls and not GOODBYE.match(c) for tls, c in seen.commands):
        truth.add("accepted-bad-certificate")
    return truth


# --- running them ---------------------------------------------------------------------------------


def listeners() -> list[Listener]:
    plain = [Listener(f"{p}-{m}", p, m) for p in ALL for m in MODES]
    bad = [Listener(f"{p}-{kind}-{s}", p, m, s) for p in ALL for s in BAD
           for kind, m in (("implicit", "implicit"), ("starttls", "starttls-required"))]
    return plain + bad


def start(certs: Path, chosen: list[Listener], **journal: Any) -> ThreadedMailServer:
    config = parse_config({
        "hostname": HOSTNAME, "certs": {"dir": str(certs)}, "journal": journal,
        "users": [{"name": USER, "password": SECRET, "addresses": ["alice@example.test"]},
                  {"name": "bob", "password": "bob-password", "addresses": ["bob@example.test"]}],
        "listeners": [{"name": l.name, "protocol": l.protocol, "tls": l.mode, "port": 0,
                       **({"scenario": l.scenario} if l.scenario else {})} for l in chosen],
    }, source="verdict crosstab")
    return ThreadedMailServer(config).start()


def sessions_of_run(server: ThreadedMailServer, listener: Listener, before: int) -> list[Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not [r for r in server.journal.sessions(include_open=True, listener=listener.name) if r.ended is None]:
            break
        time.sleep(0.05)
    return server.journal.sessions(listener=listener.name)[before:]


def run_listener(server: ThreadedMailServer, listener: Listener, ca: Path, tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for client in CLIENTS:
        if listener.protocol not in client.protocols:
            continue
        before = len(server.journal.sessions(listener=listener.name))
        seen = client.run(listener, server.port(listener.name), ca, tmp)
        records = sessions_of_run(server, listener, before)
        got = {v.code for record in records for v in record.verdicts}
        rows.append({"client": client.name, "listener": listener.name, "expected": sorted(expected(listener, seen)),
                     "got": sorted(got)})
    return rows


def fallback_rows(certs: Path, ca: Path, tmp: Path) -> list[dict[str, Any]]:
    """A script that retries without TLS ("curl --ssl-reqd || curl") against STARTTLS scenarios whose
    TLS never comes up, on a one-client server (the pytest plugin's kind) and on a shared one."""
    rows = []
    for one_client in (True, False):
        chosen = [Listener(f"smtp-{s}", "smtp", "starttls-optional", s) for s in ("starttls-no-handshake",
                                                                                   "starttls-dropped")]
        server = start(certs, chosen, one_client=one_client)
        try:
            for listener in chosen:
                port = server.port(listener.name)
                mail = ["-u", f"{USER}:{SECRET}", "--mail-from", "alice@example.test", "--mail-rcpt",
                        "bob@example.test", "-T", str(tmp / "m.eml"), f"smtp://{HOST}:{port}"]
                _run(["curl", "-v", "--max-time", str(CLIENT_TIMEOUT), "--cacert", str(ca), "--ssl-reqd", *mail])
                status, out = _run(["curl", "-v", "--max-time", str(CLIENT_TIMEOUT), *mail])
                records = sessions_of_run(server, listener, 0)
                retry = records[-1] if len(records) == 2 else None
                truth = {"fallback", "credentials-in-clear", "mail-in-clear"} if "> AUTH" in out else set()
                got = {v.code for v in retry.verdicts} if retry else set()
                rows.append({"client": f"curl --ssl-reqd || curl ({'one-client' if one_client else 'shared'})",
                             "listener": listener.name,
                             "expected": sorted(truth if one_client else truth - {"fallback"}), "got": sorted(got),
                             "fallback_truth": "fallback" in truth})
        finally:
            server.stop()
    return rows


def crosstab(rows: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    table: dict[str, Counter[str]] = {code: Counter() for code in CODES}
    for row in rows:
        expect, got = set(row["expected"]), set(row["got"])
        for code in expect & got:
            table[code]["right"] += 1
        for code in got - expect:
            table[code]["false alarm"] += 1
        for code in expect - got:
            table[code]["missed"] += 1
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        tmp = Path(work)
        certs = tmp / "certs"
        ensure_certificates(certs, HOSTNAME)
        ca = certs / "ca.pem"
        (tmp / "m.eml").write_bytes(MESSAGE)
        chosen = listeners()
        server = start(certs, chosen)
        try:
            with ThreadPoolExecutor(max_workers=8) as pool:
                rows = [row for rows in pool.map(lambda l: run_listener(server, l, ca, tmp), chosen) for row in rows]
        finally:
            server.stop()
        rows += fallback_rows(certs, ca, tmp)
    table = crosstab(rows)
    print(f"{len(rows)} runs ({len(CLIENTS)} client settings x {len(chosen)} listeners, plus the fallback runs)\n")
    print("| verdict | right | false alarm | missed |\n|---|---|---|---|")
    for code, counts in table.items():
        if counts:
            print(f"| {code} | {counts['right']} | {counts['false alarm']} | {counts['missed']} |")
    wrong = [row for row in rows if set(row["expected"]) != set(row["got"])]
    for row in wrong:
        print(f"  differs: {row['client']} on {row['listener']}: expected {row['expected']}, got {row['got']}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": rows, "table": {k: dict(v) for k, v in table.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
