#!/usr/bin/env python3
"""The `--check` of `../shared/tools/docker-smoke` (run by .ci/run): the container, seen from the host.

docker-smoke has built the image, started it with the seven ports published on 127.0.0.1 and seen
each one greet. This goes further, as an application under test would:

1. copy the CA out of the container's /certs volume (`podman cp`),
2. send a message through 587 with STARTTLS, verified with that CA, as alice,
3. read the same bytes back through 993 (implicit TLS) as bob,
4. run the image's HEALTHCHECK command (`mailmodes check`) inside the container,
5. run `mailmodes explain` from the host against the mapped ports and compare it to the table
   the default config must give,
6. run compose.yaml's example app (its script, in the python:3.11-slim image, in the server
   container's network namespace) and find its message in bob's INBOX.

Environment (from docker-smoke): MAILMODES_PORTS="25=20025 465=20465 ...", MAILMODES_CONTAINER.
Exit 0 when all of it holds; otherwise one line per failure on stderr and exit 1.
"""

from __future__ import annotations

import imaplib
import json
import os
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HOST = "127.0.0.1"
TIMEOUT = 20
EXPECTED_EXPLAIN = {
    # Columns: implicit TLS, STARTTLS required, STARTTLS if available, no TLS (config/default.toml).
    "smtp": ("wrong", "works", "works", "clear"),
    "submissions": ("works", "hangs", "hangs", "hangs"),
    "submission": ("wrong", "works", "works", "refused"),
    "imap": ("wrong", "works", "works", "refused"),
    "imaps": ("works", "hangs", "hangs", "hangs"),
    "pop3": ("wrong", "works", "works", "refused"),
    "pop3s": ("works", "hangs", "hangs", "hangs"),
}
WORDS = {
    "works": "works (TLS 1.3)",
    "clear": "works, but the password went in the clear",
    "refused": "refused before login: server requires STARTTLS",
    "hangs": "hangs waiting for a greeting (the port speaks TLS first) — timed out after 2s",
    "wrong": "TLS error: wrong version number (the port speaks plaintext first)",
}


def published_ports() -> dict[int, int]:
    """Container port -> host port, from docker-smoke's MAILMODES_PORTS."""
    pairs = (item.split("=") for item in os.environ["MAILMODES_PORTS"].split())
    return {int(inner): int(outer) for inner, outer in pairs}


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], check=False, capture_output=True, text=True, timeout=60)


def copy_ca(container: str, workdir: Path) -> Path:
    target = workdir / "ca.pem"
    result = podman("cp", f"{container}:/certs/ca.pem", str(target))
    if result.returncode != 0:
        raise SystemExit(f"smoke: podman cp {container}:/certs/ca.pem failed: {result.stderr.strip()}")
    return target


def send_via_submission(port: int, context: ssl.SSLContext, subject: str) -> bytes:
    """587: STARTTLS (RFC 3207), AUTH as alice (RFC 4954), one message for bob."""
    message = (f"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: {subject}\r\n"
               f"Message-ID: <{subject}@smoke.test>\r\n\r\nSent through the container's port 587.\r\n").encode()
    with smtplib.SMTP(HOST, port, timeout=TIMEOUT) as smtp:
        smtp.starttls(context=context)
        smtp.login("alice", "alice-password")
        refused = smtp.sendmail("alice@example.test", ["bob@example.test"], message)
        if refused:
            raise SystemExit(f"smoke: recipients refused: {refused}")
    return message


def read_via_imaps(port: int, context: ssl.SSLContext, subject: str) -> bytes:
    """993: implicit TLS (RFC 8314), bob's INBOX, the message found by its subject."""
    with imaplib.IMAP4_SSL(HOST, port, ssl_context=context, timeout=TIMEOUT) as imap:
        imap.login("bob", "bob-password")
        imap.select("INBOX", readonly=True)
        status, found = imap.search(None, "SUBJECT", f'"{subject}"')
        numbers = found[0].split() if status == "OK" else []
        if len(numbers) != 1:
            raise SystemExit(f"smoke: IMAP SEARCH SUBJECT {subject} found {numbers!r} ({status})")
        status, data = imap.fetch(numbers[0].decode(), "(BODY.PEEK[])")
        item = data[0]
        if status != "OK" or not isinstance(item, tuple):
            raise SystemExit(f"smoke: IMAP FETCH failed: {status} {data!r}")
        imap.logout()
        return item[1]


def compose_app_script(compose: Path) -> str:
    """The `app` service's `python3 -c` script: the YAML block scalar after `- |` (no YAML parser
    needed for our own file)."""
    lines = compose.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "app:")
    marker = next(i for i in range(start, len(lines)) if lines[i].strip() == "- |")
    indent = len(lines[marker]) - len(lines[marker].lstrip()) + 2
    block = []
    for line in lines[marker + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        block.append(line[indent:])
    return "\n".join(block).strip() + "\n"


def compose_app(container: str, ca: Path, context: ssl.SSLContext, imaps_port: int) -> list[str]:
    """The example app under test, as compose would run it (name: localhost, which the certificate
    also carries, because a joined network namespace takes no extra host names)."""
    script = compose_app_script(Path(__file__).resolve().parents[2] / "compose.yaml")
    result = podman("run", "--rm", "--network", f"container:{container}", "-e", "SMTP_HOST=localhost",
                    "-e", "SMTP_PORT=587", "-v", f"{ca}:/certs/ca.pem:ro", "docker.io/library/python:3.11-slim",
                    "python3", "-c", script)
    print(result.stdout, end="")
    if result.returncode != 0:
        return [f"the compose app failed ({result.returncode}): {result.stderr.strip()[-300:]}"]
    body = read_via_imaps(imaps_port, context, "hello from the app under test")
    if not body.endswith(b"\r\n\r\nIt works.\r\n"):
        return [f"the compose app's message reads {body!r}"]
    return []


def healthcheck(container: str) -> list[str]:
    result = podman("exec", container, "mailmodes", "check")
    print(result.stdout, end="")
    if result.returncode != 0:
        return [f"`mailmodes check` in the container exited {result.returncode}: {result.stderr.strip()}"]
    return []


def explain_from_host(ca: Path, ports: dict[int, int]) -> list[str]:
    """The host's `mailmodes explain`, against the container through the published ports."""
    offsets = {outer - inner for inner, outer in ports.items()}
    if len(offsets) != 1:
        return [f"explain: the published ports are not one offset from the standard ones: {ports}"]
    command = [sys.executable, "-m", "mailmodes", "explain", "--port-offset", str(offsets.pop()), "--ca", str(ca),
               "--timeout", "2", "--format", "json"]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        return [f"explain exited {result.returncode}: {result.stderr.strip()}"]
    rows = {row["listener"]: [cell["text"] for cell in row["cells"]] for row in json.loads(result.stdout)["rows"]}
    problems = []
    for name, expected in EXPECTED_EXPLAIN.items():
        want = [WORDS[word] for word in expected]
        if rows.get(name) != want:
            problems.append(f"explain {name}: got {rows.get(name)}, want {want}")
    return problems


def main() -> int:
    started = time.monotonic()
    container = os.environ["MAILMODES_CONTAINER"]
    ports = published_ports()
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mailmodes-smoke-") as workdir:
        ca = copy_ca(container, Path(workdir))
        context = ssl.create_default_context(cafile=str(ca))
        subject = f"smoke-{uuid.uuid4().hex[:12]}"
        sent = send_via_submission(ports[587], context, subject)
        received = read_via_imaps(ports[993], context, subject)
        if received != sent:
            problems.append(f"the message read on 993 differs from the one sent on 587: {received!r}")
        else:
            print(f"smoke: sent {subject} via 587 (STARTTLS) and read the same bytes via 993 (implicit TLS)")
        problems += healthcheck(container)
        problems += explain_from_host(ca, ports)
        problems += compose_app(container, ca, context, ports[993])
    for problem in problems:
        print(f"smoke: {problem}", file=sys.stderr)
    print(f"smoke: {'FAILED' if problems else 'ok'} in {time.monotonic() - started:.1f}s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
