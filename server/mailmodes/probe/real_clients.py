"""`mailmodes explain --client NAME`: the teaching table from what a real client did.

The model client of probe/explain.py is one well-behaved client. Real ones differ (issue 21: 29
of 66 cells had a real client doing otherwise), so this runs the client installed on the machine
in each of its settings against every listener and reads, from the client's own output, what it
sent and how it ended. The cells use the model's outcomes and words, so the two tables sit side
by side; the reason quotes the client.

A client's run is read into a `Run` (what it sent, inside TLS or not; whether it logged in; its
last words), and one function, `judge`, turns any Run into a cell. Each client is a `RealClient`:
the command for a setting, and the reader of its output.

These sessions are the client's own: they carry no probe mark, so the journal judges them as it
judges any client, and the dashboard shows the verdicts a student would earn with that client.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import json
import poplib
import re
import smtplib
import ssl
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mailmodes.probe.explain import Cell, ClientSetting, Outcome, ProbeOptions, Table, Target

ALL = ("smtp", "imap", "pop3")
# A command that carries (or leads straight to) the secret: the password crossed the wire.
SECRET_COMMAND = re.compile(r"^(AUTH\s+\S+|PASS\b|\S+\s+LOGIN\b|\S+\s+AUTHENTICATE\b)", re.I)


@dataclass
class Run:
    """What a client's own output says it did in one session."""

    exit_status: int
    sent: list[tuple[bool, str]] = field(default_factory=list)  # (inside TLS, line)
    tls_version: str | None = None
    logged_in: bool = False
    words: str = ""               # the client's own last words (its error, or its success line)
    timed_out: bool = False
    certificate_error: bool = False
    wrong_version: bool = False   # a ClientHello answered by a plaintext greeting
    no_starttls: bool = False     # it wanted STARTTLS and the server offered none
    refused_itself: bool = False  # the client would not send the password unencrypted
    closed: bool = False          # the server closed the connection under it

    @property
    def secret_in_clear(self) -> bool:
        return any(not tls and SECRET_COMMAND.match(line) for tls, line in self.sent)


@dataclass(frozen=True)
class RealClient:
    name: str
    protocols: tuple[str, ...]
    settings: tuple[ClientSetting, ...]
    run: Callable[[Target, ClientSetting, ProbeOptions, float], Run]
    describe: Callable[[str, ClientSetting], str]  # the command line (or call) for a setting


def judge(run: Run, timeout: float) -> tuple[Outcome, str]:
    """A Run as one of the model's outcomes, in the model's words where they apply."""
    tls = (run.tls_version or "TLS").replace("TLSv", "TLS ")
    if run.logged_in:
        if run.tls_version and not run.secret_in_clear:
            return Outcome.WORKS, f"works ({tls})"
        return Outcome.CLEARTEXT, "works, but the password went in the clear"
    if run.certificate_error:
        return Outcome.TLS_ERROR, "TLS error: certificate verify failed"
    if run.wrong_version:
        return Outcome.TLS_ERROR, "TLS error: wrong version number (the port speaks plaintext first)"
    if run.timed_out:
        return Outcome.HANGS, ("hangs waiting for a greeting (the port speaks TLS first)" if not run.sent
                               else "no answer") + f" — timed out after {timeout:g}s"
    if run.no_starttls:
        return Outcome.NO_STARTTLS, "STARTTLS not offered: client refuses to continue"
    if run.refused_itself:
        return Outcome.CLIENT_REFUSED, "the client refuses to send the password unencrypted"
    if run.closed and not run.tls_version:
        return Outcome.UNREACHABLE, "the server closed the connection"
    if run.secret_in_clear:
        return Outcome.REFUSED_AFTER_PASSWORD, "refused, but the password had already gone in the clear"
    if run.tls_version is None and run.sent:
        return Outcome.REFUSED, "refused before login: server requires STARTTLS"
    return Outcome.LOGIN_FAILED, f"failed: {run.words[:80]}" if run.words else "failed"


# --- command-line clients ---------------------------------------------------------------------------


def _execute(args: Sequence[str], stdin: bytes = b"", timeout: float = 10.0,
             env: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        result = subprocess.run(list(args), input=stdin, capture_output=True, timeout=timeout + 5, env=env)
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"") + (expired.stderr or b"")
        return -9, output.decode(errors="replace")
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def _last_words(output: str, pattern: str) -> str:
    found = [line.strip() for line in output.splitlines() if re.search(pattern, line)]
    return found[-1] if found else ""


CURL_OPTIONS = {ClientSetting.IMPLICIT: [], ClientSetting.STARTTLS_REQUIRED: ["--ssl-reqd"],
                ClientSetting.STARTTLS_IF_AVAILABLE: ["--ssl"], ClientSetting.NONE: []}


def _curl_command(target: Target, setting: ClientSetting, options: ProbeOptions, timeout: float) -> list[str]:
    scheme = target.protocol + ("s" if setting is ClientSetting.IMPLICIT else "")
    credentials = options.credentials
    login = ["-u", f"{credentials.user}:{credentials.password}"] if credentials else []
    ca = ["--cacert", str(options.ca_file)] if options.ca_file else []
    return ["curl", "-v", "--max-time", f"{timeout:g}", *ca, *login, *CURL_OPTIONS[setting],
            f"{scheme}://{target.host}:{target.port}/"]


def _curl(target: Target, setting: ClientSetting, options: ProbeOptions, timeout: float) -> Run:
    status, output = _execute(_curl_command(target, setting, options, timeout), timeout=timeout)
    run = Run(status, words=_last_words(output, r"^curl: \(\d+\)") or "curl exited 0")
    for line in output.splitlines():
        if line.startswith("* SSL connection using "):
            run.tls_version = line.split()[4]
        elif line.startswith("> "):
            run.sent.append((run.tls_version is not None, line[2:].strip()))
    # curl's exit codes (curl(1) "EXIT CODES"): 28 timeout, 35 handshake, 60 certificate, 64 SSL level.
    run.logged_in = status == 0 and bool(options.credentials)
    run.timed_out = status == 28
    run.certificate_error = status == 60
    run.wrong_version = status == 35 and "wrong version number" in output
    run.no_starttls = status == 64
    if status == 35 and not run.wrong_version:
        run.words = run.words or "TLS handshake failed"
    return run


def _describe_curl(protocol: str, setting: ClientSetting) -> str:
    scheme = protocol + ("s" if setting is ClientSetting.IMPLICIT else "")
    return " ".join(["curl", *CURL_OPTIONS[setting], f"{scheme}://HOST:PORT/"])


SWAKS_OPTIONS = {ClientSetting.IMPLICIT: ["--tls-on-connect"], ClientSetting.STARTTLS_REQUIRED: ["--tls"],
                 ClientSetting.STARTTLS_IF_AVAILABLE: ["--tls-optional-strict"], ClientSetting.NONE: []}


def _swaks(target: Target, setting: ClientSetting, options: ProbeOptions, timeout: float) -> Run:
    credentials = options.credentials
    login = (["--auth", "PLAIN", "--auth-user", credentials.user, "--auth-password", credentials.password]
             if credentials else [])
    verify = ["--tls-verify", "--tls-ca-path", str(options.ca_file)] if options.ca_file else []
    status, output = _execute(["swaks", "--server", target.host, "--port", str(target.port), "--timeout",
                               f"{timeout:g}", "--quit-after", "AUTH", *login,
                               *(verify if setting is not ClientSetting.NONE else []), *SWAKS_OPTIONS[setting]],
                              timeout=timeout)
    run = Run(status, words=_last_words(output, r"^\*\*\*"))
    for line in output.splitlines():
        if line.startswith("<** Timeout"):  # what swaks says after it (QUIT, into the silence) is no answer
            run.timed_out, run.words = True, line[4:].strip()
            break
        if line.startswith("=== TLS started with cipher "):
            run.tls_version = line.split()[5].split(":")[0] if len(line.split()) > 5 else "TLS"
        elif line.startswith((" -> ", " ~> ")):
            run.sent.append((line.startswith(" ~> "), line[4:].strip()))
        elif line.startswith(("<-  235", "<~  235")):
            run.logged_in = True
    run.certificate_error = "certificate verify failed" in output
    run.wrong_version = "wrong version number" in output
    run.no_starttls = "did not advertise STARTTLS" in output
    run.closed = "Remote host closed connection" in run.words
    if run.logged_in:
        run.words = _last_words(output, r"^<.  235")
    return run


def _describe_swaks(protocol: str, setting: ClientSetting) -> str:
    return " ".join(["swaks", *SWAKS_OPTIONS[setting], "--auth PLAIN ..."])


MSMTP_OPTIONS = {ClientSetting.IMPLICIT: ["--tls=on", "--tls-starttls=off"],
                 ClientSetting.STARTTLS_REQUIRED: ["--tls=on", "--tls-starttls=on"], ClientSetting.NONE: ["--tls=off"]}


def _msmtp(target: Target, setting: ClientSetting, options: ProbeOptions, timeout: float) -> Run:
    # msmtp has no log-in-only mode: it sends one message, to the user it logs in as.
    credentials = options.credentials
    user = credentials.user if credentials else "nobody"
    login = ([f"--user={credentials.user}", f"--passwordeval=echo {credentials.password}", "--auth=on"]
             if credentials else ["--auth=off"])
    trust = [f"--tls-trust-file={options.ca_file}"] if options.ca_file and setting is not ClientSetting.NONE else []
    status, output = _execute(["msmtp", "-C", "/dev/null", f"--host={target.host}", f"--port={target.port}",
                               f"--from={user}@localhost", f"--timeout={timeout:g}", "--debug", *login, *trust,
                               *MSMTP_OPTIONS[setting], f"{user}@localhost"],
                              stdin=b"Subject: mailmodes explain\r\n\r\nexplain --client msmtp\r\n", timeout=timeout)
    said = [line for line in output.splitlines() if line.startswith("msmtp: ") and "could not send" not in line]
    run = Run(status, words=said[0] if said else "")
    for line in output.splitlines():
        if line.startswith("TLS session parameters:"):
            run.tls_version = "TLS"
        elif match := re.match(r"^\s+\((TLS\d\.\d)\)", line):
            run.tls_version = match.group(1).replace("TLS", "TLSv")
        elif line.startswith("--> "):
            run.sent.append((run.tls_version is not None, line[4:].strip()))
        elif line.startswith("<-- 235"):
            run.logged_in, run.words = True, line[4:]
    run.timed_out = "timed out" in run.words
    run.refused_itself = "cannot use a secure authentication method" in run.words
    run.closed = "the server sent an empty reply" in run.words or "connection closed" in run.words
    run.certificate_error = "certificate verification failed" in output
    run.wrong_version = "TLS handshake failed" in output and not run.certificate_error and not run.sent
    run.no_starttls = "does not support TLS via the STARTTLS command" in output
    return run


def _describe_msmtp(protocol: str, setting: ClientSetting) -> str:
    return " ".join(["msmtp", *MSMTP_OPTIONS.get(setting, []), "--auth=on"])


def _openssl(target: Target, setting: ClientSetting, options: ProbeOptions, timeout: float) -> Run:
    """openssl s_client does the TLS (implicit, or -starttls), then the login lines come from its
    standard input: AUTH PLAIN / LOGIN / USER+PASS, then QUIT or LOGOUT."""
    credentials = options.credentials
    script = _login_script(target.protocol, credentials.user, credentials.password) if credentials else []
    starttls = ["-starttls", target.protocol] if setting is ClientSetting.STARTTLS_REQUIRED else []
    ca = ["-CAfile", str(options.ca_file), "-verify_return_error", "-verify_ip", target.host] if options.ca_file \
        else []
    status, output = _execute(["timeout", f"{timeout:g}", "openssl", "s_client", "-connect",
                               f"{target.host}:{target.port}", "-crlf", "-ign_eof", *ca, *starttls],
                              stdin="".join(line + "\n" for line in script).encode(), timeout=timeout)
    run = Run(status, words=_last_words(output, r"error|verify return|Verification"))
    version = re.search(r"^\s*Protocol\s*: (TLSv[\d.]+)", output, re.M) or re.search(r"New, (TLSv[\d.]+)", output)
    if version and "Cipher is (NONE)" not in output:
        run.tls_version = version.group(1)
        run.sent = [(True, line) for line in script]
        run.logged_in = bool(re.search(r"^(235|\S+ OK|\+OK)[ -].*([Ss]uccess|[Ll]ogged in|[Ll]ocked|maildrop)",
                                       output, re.M))
    run.timed_out = status == 124 and run.tls_version is None
    run.certificate_error = "verify error" in output or "certificate verify failed" in output
    run.wrong_version = "wrong version number" in output
    run.no_starttls = bool(starttls) and "Didn't find STARTTLS" in output
    return run


def _login_script(protocol: str, user: str, password: str) -> list[str]:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return {"smtp": ["EHLO openssl", f"AUTH PLAIN {token}", "QUIT"],
            "imap": [f"a LOGIN {user} {password}", "b LOGOUT"],
            "pop3": [f"USER {user}", f"PASS {password}", "QUIT"]}[protocol]


def _describe_openssl(protocol: str, setting: ClientSetting) -> str:
    starttls = f" -starttls {protocol}" if setting is ClientSetting.STARTTLS_REQUIRED else ""
    return f"openssl s_client -connect HOST:PORT{starttls}"


# --- Python's standard library --------------------------------------------------------------------


def _python(target: Target, setting: ClientSetting, options: ProbeOptions, timeout: float) -> Run:
    """smtplib, imaplib or poplib with ssl.create_default_context(): what the script makes the
    library send is what it sent; the library's exception is its last words."""
    context = ssl.create_default_context(cafile=str(options.ca_file) if options.ca_file else None)
    run = Run(0)
    try:
        PYTHON[target.protocol](target, setting, options, context, timeout, run)
        run.words = "logged in" if run.logged_in else run.words
    except ssl.SSLCertVerificationError as error:
        run.certificate_error, run.words = True, f"ssl.SSLCertVerificationError: {error.verify_message}"
    except ssl.SSLError as error:
        run.wrong_version = "WRONG_VERSION_NUMBER" in str(error)
        run.words = f"ssl.SSLError: {error.reason or error}"
    except TimeoutError as error:
        run.timed_out, run.words = True, f"TimeoutError: {error}"
    except (OSError, EOFError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto) as error:
        run.exit_status, run.words = 1, f"{type(error).__module__}.{type(error).__qualname__}: {error}"
        run.timed_out = "timed out" in str(error)
        run.closed = not run.timed_out and isinstance(error, (EOFError, smtplib.SMTPServerDisconnected))
        run.no_starttls = run.no_starttls or "STARTTLS" in str(error).upper() or "STLS" in str(error).upper()
    return run


def _smtplib(target: Target, setting: ClientSetting, options: ProbeOptions, context: ssl.SSLContext,
             timeout: float, run: Run) -> None:
    implicit = setting is ClientSetting.IMPLICIT
    client = (smtplib.SMTP_SSL(target.host, target.port, context=context, timeout=timeout) if implicit
              else smtplib.SMTP(target.host, target.port, timeout=timeout))
    run.tls_version = client.sock.version() if implicit and isinstance(client.sock, ssl.SSLSocket) else None
    with client:
        run.sent.append((implicit, "EHLO"))
        client.ehlo()
        if _wants_starttls(setting, client.has_extn("starttls"), run):
            run.sent.append((False, "STARTTLS"))
            client.starttls(context=context)
            run.tls_version = client.sock.version() if isinstance(client.sock, ssl.SSLSocket) else "TLS"
            client.ehlo()
        if options.credentials:
            if client.has_extn("auth"):  # login() sends nothing where AUTH is not offered
                run.sent.append((run.tls_version is not None, "AUTH PLAIN"))
            client.login(options.credentials.user, options.credentials.password)
            run.logged_in = True


def _imaplib(target: Target, setting: ClientSetting, options: ProbeOptions, context: ssl.SSLContext,
             timeout: float, run: Run) -> None:
    implicit = setting is ClientSetting.IMPLICIT
    client = (imaplib.IMAP4_SSL(target.host, target.port, ssl_context=context, timeout=timeout) if implicit
              else imaplib.IMAP4(target.host, target.port, timeout=timeout))
    run.tls_version = client.sock.version() if implicit and isinstance(client.sock, ssl.SSLSocket) else None
    try:
        if _wants_starttls(setting, "STARTTLS" in client.capabilities, run):
            run.sent.append((False, "a STARTTLS"))
            client.starttls(ssl_context=context)
            run.tls_version = client.sock.version() if isinstance(client.sock, ssl.SSLSocket) else "TLS"
        if options.credentials:
            # imaplib sends LOGIN even where the server advertises LOGINDISABLED
            run.sent.append((run.tls_version is not None, "a LOGIN"))
            client.login(options.credentials.user, options.credentials.password)
            run.logged_in = True
    finally:
        client.shutdown()


def _poplib(target: Target, setting: ClientSetting, options: ProbeOptions, context: ssl.SSLContext,
            timeout: float, run: Run) -> None:
    implicit = setting is ClientSetting.IMPLICIT
    client = (poplib.POP3_SSL(target.host, target.port, context=context, timeout=timeout) if implicit
              else poplib.POP3(target.host, target.port, timeout=timeout))
    run.tls_version = client.sock.version() if implicit and isinstance(client.sock, ssl.SSLSocket) else None
    try:
        offered = setting in (ClientSetting.STARTTLS_REQUIRED, ClientSetting.STARTTLS_IF_AVAILABLE) \
            and "STLS" in _capa(client)
        if _wants_starttls(setting, offered, run):
            run.sent.append((False, "STLS"))
            client.stls(context=context)
            run.tls_version = client.sock.version() if isinstance(client.sock, ssl.SSLSocket) else "TLS"
        if options.credentials:
            run.sent.append((run.tls_version is not None, "USER"))
            client.user(options.credentials.user)
            run.sent.append((run.tls_version is not None, f"PASS {options.credentials.password}"))
            client.pass_(options.credentials.password)
            run.logged_in = True
            client.quit()
    finally:
        client.close()


def _capa(client: poplib.POP3) -> dict[str, list[str]]:
    try:
        return client.capa()
    except poplib.error_proto:
        return {}


def _wants_starttls(setting: ClientSetting, offered: bool, run: Run) -> bool:
    """Whether the script upgrades: required always (refusing where it is not offered, as the
    library itself does when asked), if-available only where offered."""
    if setting is ClientSetting.STARTTLS_REQUIRED and not offered:
        run.no_starttls = True
        raise OSError("STARTTLS is not offered: the client refuses to go on without TLS")
    return offered and setting in (ClientSetting.STARTTLS_REQUIRED, ClientSetting.STARTTLS_IF_AVAILABLE)


PYTHON: dict[str, Callable[[Target, ClientSetting, ProbeOptions, ssl.SSLContext, float, Run], None]] = {
    "smtp": _smtplib, "imap": _imaplib, "pop3": _poplib}


def _describe_python(protocol: str, setting: ClientSetting) -> str:
    library = {"smtp": "smtplib.SMTP", "imap": "imaplib.IMAP4", "pop3": "poplib.POP3"}[protocol]
    if setting is ClientSetting.IMPLICIT:
        return f"{library}_SSL(host, port, context=ssl.create_default_context())"
    upgrade = {"smtp": ".starttls()", "imap": ".starttls()", "pop3": ".stls()"}[protocol]
    return {ClientSetting.STARTTLS_REQUIRED: f"{library}(host, port){upgrade}",
            ClientSetting.STARTTLS_IF_AVAILABLE: f"{library}(host, port){upgrade} if offered",
            ClientSetting.NONE: f"{library}(host, port)"}[setting]


EVERY_SETTING = tuple(ClientSetting)
CLIENTS: dict[str, RealClient] = {client.name: client for client in (
    RealClient("curl", ALL, EVERY_SETTING, _curl, _describe_curl),
    RealClient("python", ALL, EVERY_SETTING, _python, _describe_python),
    RealClient("swaks", ("smtp",), EVERY_SETTING, _swaks, _describe_swaks),
    RealClient("msmtp", ("smtp",), (ClientSetting.IMPLICIT, ClientSetting.STARTTLS_REQUIRED, ClientSetting.NONE),
               _msmtp, _describe_msmtp),
    RealClient("openssl", ALL, (ClientSetting.IMPLICIT, ClientSetting.STARTTLS_REQUIRED), _openssl,
               _describe_openssl),
)}


def missing_client(name: str) -> str | None:
    """Why `name` cannot be driven here (unknown, or its program not installed), else None."""
    if name not in CLIENTS:
        return f"unknown client {name!r}: choose one of {', '.join(CLIENTS)}"
    program = {"python": None}.get(name, name)
    if program and shutil.which(program) is None:
        return f"{program} is not installed on this machine"
    return None


def explain_with(name: str, targets: Sequence[Target], options: ProbeOptions, timeout: float = 3.0) -> Table:
    """The table for one real client: every target its protocols cover, in every setting it has.
    Cells it has no setting or protocol for are left out (format_side_by_side shows them as such)."""
    client = CLIENTS[name]
    jobs = [(t, s) for t in targets if t.protocol in client.protocols for s in client.settings]

    def cell(job: tuple[Target, ClientSetting]) -> Cell:
        target, setting = job
        started = time.monotonic()
        # RFC 1939 section 8: the server locks a maildrop while a session holds it, so POP3
        # sessions for the one user go one at a time (as the model's logins do).
        with options.pop3_login if target.protocol == "pop3" else contextlib.nullcontext():
            run = client.run(target, setting, options, timeout)
        outcome, text = judge(run, timeout)
        said = "; ".join(f"{'[TLS] ' if tls else ''}{line}" for tls, line in run.sent[-3:])
        reason = f"{client.describe(target.protocol, setting)}: {run.words or 'no output'}" + \
            (f" (last sent: {_mask(said, options)})" if said else "")
        return Cell(target, setting, outcome, text, reason, time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(jobs))), thread_name_prefix=f"explain-{name}") as pool:
        cells = tuple(pool.map(cell, jobs))
    return Table(tuple(targets), cells)


def _mask(text: str, options: ProbeOptions) -> str:
    """The reason quotes what the client sent, never the password (nor its base64 form)."""
    if options.credentials is None:
        return text
    secret = options.credentials.password
    token = base64.b64encode(f"\0{options.credentials.user}\0{secret}".encode()).decode()
    return re.sub(r"(AUTH PLAIN) [^\s;]+", r"\1 ***", text.replace(token, "***").replace(secret, "***"))


def _found(real: Table, target: Target, setting: ClientSetting) -> Cell | None:
    return next((c for c in real.cells if c.target.name == target.name and c.setting is setting), None)


def _missing_why(name: str, target: Target) -> str:
    return (f"{name} speaks no {target.protocol.upper()}" if target.protocol not in CLIENTS[name].protocols
            else f"{name} has no such setting")


def comparison(model: Table, real: Table, name: str) -> dict[str, Any]:
    """The JSON view: per listener and setting, the model's cell and the client's (or why none)."""
    rows = []
    for row, target in zip(model.rows(), model.targets):
        cells = []
        for info, expected in zip(model.settings, row["cells"]):
            found = _found(real, target, info.setting)
            cells.append({"setting": str(info.setting), "model": expected,
                          "client": found.as_dict() if found else None,
                          "differs": found is not None and found.outcome is not model.cell(target.name,
                                                                                            info.setting).outcome,
                          **({} if found else {"why": _missing_why(name, target)})})
        rows.append({**row, "cells": cells})
    return {"client": name, "settings": [s.as_dict() for s in model.settings], "rows": rows}


def format_side_by_side(model: Table, real: Table, name: str) -> str:
    """Per listener and setting: the model client's outcome, the real client's, and its reason."""
    lines = [f"Each cell: the model client (mailmodes explain), then {name} as it really behaved."]
    width = max(len(s.title) for s in model.settings)
    label = max(len("model"), len(name)) + 1  # "model:" and "curl:" line up, whatever the client's name
    for target in model.targets:
        lines += ["", f"{target.name}: {target.protocol} on {target.host}:{target.port}"
                  + (f" (configured {target.mode})" if target.mode else "")]
        for info in model.settings:
            expected = model.cell(target.name, info.setting)
            found = _found(real, target, info.setting)
            lines.append(f"  {info.title:<{width}}  {'model:':<{label}} {expected.text}")
            if found is None:
                lines.append(f"  {'':<{width}}  {name + ':':<{label}} — ({_missing_why(name, target)})")
                continue
            differs = "  ≠ differs from the model" if found.outcome is not expected.outcome else ""
            lines.append(f"  {'':<{width}}  {name + ':':<{label}} {found.text}{differs}")
            lines.append(f"  {'':<{width}}  {'':<{label}} {found.reason}")
    return "\n".join(lines)
