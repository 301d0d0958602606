"""Property: whatever form a login takes, its secret is never recorded (issue 13).

Sessions are generated at random: every AUTH mechanism and LOGIN / USER+PASS / APOP form the
server supports, with and without initial response, IMAP literals synchronizing and not, each
step waited for or pipelined with the next, accepted or refused, over plaintext, implicit TLS
and STARTTLS, and every write split at random byte boundaries. The secret is random too. Then
neither the secret, nor its base64, nor its quoted form may be anywhere: the records' JSON, the
HTTP API (what the dashboard reads), the journal file, the server's log (DEBUG, aiosmtpd's
included). And each session's `user` and `logins` must be what its login deserved.

The seed is random per run and printed on failure; MAILMODES_SEED=<n> replays a run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import random
import re
import socket
import ssl
import string
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mailmodes.app import ThreadedMailServer
from support import HOSTNAME

SEED = int(os.environ.get("MAILMODES_SEED") or random.SystemRandom().randrange(2**32))
SESSIONS = 120  # about 5 s; every form comes up many times over a few runs
USER, STRANGER = "carol", "mallory"  # the secret is carol's password; mallory has no account
MODES = {"plain": "plaintext", "tls": "implicit", "opt": "starttls-optional", "req": "starttls-required"}
ASTRING = re.compile(r"[^(){ %*\"\\\x00-\x1f\x7f-\U0010ffff]+")  # an IMAP atom (RFC 3501 ASTRING-CHAR)
SYNC = b"\0SYNC\0"  # in a step: send what comes before, and wait for "+" (a synchronizing literal)
DIGEST = b"\0DIGEST\0"  # in a step: the APOP digest, made from this connection's greeting


@dataclass
class Script:
    """One generated session: what the client sends, step by step, and what it deserves."""

    protocol: str
    listener: str
    command: str  # how the journal names the login ("AUTH PLAIN", "LOGIN", "PASS" ...)
    user: str
    steps: list[tuple[bytes, str]] = field(default_factory=list)  # (bytes, wait: "reply" | "more" | "")
    refused_before_tls: bool = False

    @property
    def accepted(self) -> bool:
        return self.user == USER and not self.refused_before_tls

    def send(self, data: bytes, wait: str = "reply") -> None:
        self.steps.append((data, wait))


def plain(user: str, secret: str) -> bytes:
    return base64.b64encode(f"\0{user}\0{secret}".encode())


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


def imap_string(rng: random.Random, script: Script, value: str) -> bytes:
    """`value` as an atom, a quoted string or a literal ({n} or {n+})."""
    forms = ["quoted", "sync", "nonsync"] + (["atom"] if ASTRING.fullmatch(value) else [])
    form = rng.choice(forms)
    if script.refused_before_tls and form == "sync":
        form = "nonsync"  # a client must wait for "+": refused, it never sends the octets
    raw = value.encode()
    if form == "atom":
        return raw
    if form == "quoted":
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    if form == "nonsync":
        return b"{%d+}\r\n" % len(raw) + raw
    return b"{%d}\r\n" % len(raw) + SYNC + raw


def smtp_script(rng: random.Random, script: Script, secret: str) -> None:
    mechanism = rng.choice(["PLAIN", "LOGIN"])
    initial = rng.random() < 0.5
    pipelined = rng.random() < 0.5  # refused before TLS, the response is a command line to the server
    script.command = f"AUTH {mechanism}"
    script.send(b"EHLO client.test\r\n")
    if mechanism == "PLAIN":
        responses = [plain(script.user, secret)]
    else:
        responses = [b64(script.user), b64(secret)]
    if initial:
        first, rest = b"AUTH %s %s\r\n" % (mechanism.encode(), responses[0]), responses[1:]
    else:
        first, rest = b"AUTH %s\r\n" % mechanism.encode(), responses
    if script.refused_before_tls and not pipelined:
        script.send(first)  # 538: no challenge, so a client that waits for one sends nothing more
    elif pipelined:
        script.send(first + b"".join(response + b"\r\n" for response in rest))
    else:
        script.send(first, "more" if rest else "reply")
        for index, response in enumerate(rest):
            script.send(response + b"\r\n", "more" if index < len(rest) - 1 else "reply")


def imap_script(rng: random.Random, script: Script, secret: str) -> None:
    if rng.random() < 0.5:
        script.command = "LOGIN"
        user = imap_string(rng, script, script.user)
        password = imap_string(rng, script, secret)
        script.send(b"a LOGIN " + user + b" " + password + b"\r\n")
        return
    script.command = "AUTHENTICATE PLAIN"
    response = plain(script.user, secret)
    if rng.random() < 0.5:
        script.send(b"a AUTHENTICATE PLAIN " + response + b"\r\n")
    elif rng.random() < 0.5 or script.refused_before_tls:
        script.send(b"a AUTHENTICATE PLAIN\r\n" + response + b"\r\n")  # the response pipelined
    else:
        script.send(b"a AUTHENTICATE PLAIN\r\n", "more")
        script.send(response + b"\r\n")


def pop3_script(rng: random.Random, script: Script, secret: str) -> None:
    form = rng.choice(["USER", "AUTH", "AUTH", "APOP"])
    pipelined = rng.random() < 0.5
    if form == "APOP":
        script.command = "APOP"
        script.send(b"APOP %s %s\r\n" % (script.user.encode(), DIGEST))
    elif form == "USER":
        script.command = "PASS"
        lines = [b"USER %s\r\n" % script.user.encode(), b"PASS %s\r\n" % secret.encode()]
        for line in [b"".join(lines)] if pipelined else lines:
            script.send(line)
    else:
        script.command = "AUTH PLAIN"
        response = plain(script.user, secret)
        if rng.random() < 0.5:
            script.send(b"AUTH PLAIN " + response + b"\r\n")
        elif pipelined:
            script.send(b"AUTH PLAIN\r\n" + response + b"\r\n")
        else:
            script.send(b"AUTH PLAIN\r\n", "more" if not script.refused_before_tls else "reply")
            if not script.refused_before_tls:
                script.send(response + b"\r\n")


class Wire:
    """A client connection that writes each step in random pieces and reads whole replies."""

    def __init__(self, rng: random.Random, port: int, context: ssl.SSLContext | None) -> None:
        self.rng = rng
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each piece its own segment
        self.sock: socket.socket = context.wrap_socket(sock, server_hostname=HOSTNAME) if context else sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        cuts = sorted(self.rng.sample(range(1, len(data)), min(len(data) - 1, self.rng.randint(0, 3))))
        for start, end in zip([0, *cuts], [*cuts, len(data)]):
            self.sock.sendall(data[start:end])

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; had {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def reply(self, protocol: str, *, more: bool = False) -> bytes:
        """The next reply: SMTP up to a line "NNN ", IMAP up to a continuation or the tagged
        line, POP3 one line. `more`: a continuation is what ends it."""
        while True:
            line = self.line()
            if protocol == "smtp" and line[3:4] == b" " and (more or line[:3] != b"334"):
                return line
            if protocol == "imap" and (line.startswith(b"+") and more or line[:1] not in (b"*", b"+")):
                return line
            if protocol == "pop3" and (more or not line.startswith(b"+ ")):
                return line

    def starttls(self, protocol: str, context: ssl.SSLContext) -> None:
        if protocol == "smtp":
            self.sock.sendall(b"EHLO client.test\r\n")
            self.reply("smtp")
        self.sock.sendall({"smtp": b"STARTTLS\r\n", "imap": b"s STARTTLS\r\n", "pop3": b"STLS\r\n"}[protocol])
        self.reply(protocol)
        assert not self.buffer
        self.sock = context.wrap_socket(self.sock, server_hostname=HOSTNAME)

    def goodbye(self, protocol: str) -> None:
        self.sock.sendall({"smtp": b"QUIT\r\n", "imap": b"z LOGOUT\r\n", "pop3": b"QUIT\r\n"}[protocol])
        while self.sock.recv(65536):
            pass
        self.sock.close()


def scripts(rng: random.Random, secret: str) -> Iterator[Script]:
    for _ in range(SESSIONS):
        protocol = rng.choice(["smtp", "imap", "pop3"])
        mode = rng.choice(["plain", "tls", "opt", "opt", "req"])
        script = Script(protocol, f"{protocol}-{mode}", "", rng.choice([USER, USER, STRANGER]))
        script.refused_before_tls = mode == "req" and rng.random() < 0.5  # else: STARTTLS first
        if protocol == "smtp":
            smtp_script(rng, script, secret)
        elif protocol == "imap":
            imap_script(rng, script, secret)
        else:
            pop3_script(rng, script, secret)
        yield script


def run(rng: random.Random, server: ThreadedMailServer, script: Script, secret: str,
        context: ssl.SSLContext) -> None:
    mode = script.listener.rsplit("-", 1)[1]
    wire = Wire(rng, server.port(script.listener), context if mode == "tls" else None)
    timestamp = re.search(rb"<[^>]+>", wire.line())  # POP3's APOP timestamp, unique per connection
    if mode == "opt" or (mode == "req" and not script.refused_before_tls):
        wire.starttls(script.protocol, context)
    for data, wait in script.steps:
        if DIGEST in data and timestamp is not None:
            digest = hashlib.md5(timestamp[0] + secret.encode(), usedforsecurity=False).hexdigest()
            data = data.replace(DIGEST, digest.encode())
        *heads, last = data.split(SYNC)
        refused = False
        for head in heads:
            wire.send(head)
            if not wire.reply(script.protocol, more=True).startswith(b"+"):
                refused = True  # the literal refused: a client does not send it
                break
        if not refused:
            wire.send(last)
            if wait:
                wire.reply(script.protocol, more=wait == "more")
    wire.goodbye(script.protocol)


def forms_of(secret: str) -> list[str]:
    """Every way the secret could show up in a text: as itself, as its IMAP quoted form, in a
    bytes repr (a log line), JSON-escaped, and base64 (AUTH LOGIN, and PLAIN for either user)."""
    quoted = secret.replace("\\", "\\\\").replace('"', '\\"')
    encodings = [secret, quoted, repr(secret.encode())[2:-1], json.dumps(secret)[1:-1], b64(secret).decode()]
    return encodings + [plain(user, secret).decode() for user in (USER, STRANGER)]


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def test_no_secret_is_ever_recorded(serve: Callable[..., ThreadedMailServer], client_context: ssl.SSLContext,
                                    tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(SEED)
    secret = "".join(rng.choice(string.ascii_letters + string.digits + " !#$%&'()*+,-./:;<=>?@[]^_`{|}~\"\\")
                     for _ in range(rng.randint(12, 24)))
    secret = secret.strip() or "x"  # POP3 PASS and atoms keep spaces inside, not at the ends
    caplog.set_level(logging.DEBUG)
    journal_file = tmp_path / "sessions.jsonl"
    listeners = [{"name": f"{protocol}-{short}", "protocol": protocol, "tls": mode, **({"apop": True} if protocol == "pop3" else {})}
                 for protocol in ("smtp", "imap", "pop3") for short, mode in MODES.items()]
    server = serve(*listeners, users=[{"name": USER, "password": secret}], http={"port": 0},
                   journal={"path": str(journal_file), "max_sessions": SESSIONS + 10})
    generated = list(scripts(rng, secret))
    failure = f"seed {SEED} (MAILMODES_SEED={SEED} replays it), secret {secret!r}"
    for script in generated:
        run(rng, server, script, secret, client_context)
    records = server.journal.wait_for(len(generated))
    assert len(records) == len(generated), failure

    assert "AUTH PLAIN ********" in caplog.text or "AUTH LOGIN" in caplog.text, "the log was not captured"
    texts = {"record JSON": json.dumps([record.to_json() for record in records]),
             "journal file": journal_file.read_text(),
             "server log": caplog.text}
    port = server.http_port
    assert port is not None
    texts["/api/sessions"] = http_get(port, "/api/sessions")
    texts["dashboard list"] = http_get(port, "/api/sessions?transcript=false&limit=300")
    texts["dashboard sessions"] = "[" + ",".join(http_get(port, f"/api/sessions/{record.id}") for record in records) + "]"
    for where, text in texts.items():
        decoded = list(strings_in(json.loads(text))) if where not in ("journal file", "server log") else [text]
        if where == "journal file":
            decoded += [s for line in text.splitlines() for s in strings_in(json.loads(line))]
        for form in forms_of(secret):
            assert not any(form in value for value in decoded), f"{form!r} in the {where}; {failure}"

    for script, record in zip(generated, records):
        logins = [(login["command"], login["user"], login["accepted"]) for login in record.to_json()["logins"]]
        about = f"{script}; {record.transcript}; {failure}"
        if script.accepted:
            assert record.user == USER and logins[-1] == (script.command, USER, True), about
        else:
            assert record.user is None and logins and not any(accepted for _, _, accepted in logins), about
            if not script.refused_before_tls:
                assert logins[-1] == (script.command, STRANGER, False), about
