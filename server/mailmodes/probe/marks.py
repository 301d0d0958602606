"""How our own probes (`mailmodes check`, `mailmodes explain`, the dashboard's Run) mark their
connections, in-band, so that the journal keeps their sessions apart from clients' sessions.

The marks change nothing the server does in reply, so a probe still meets what a client meets:

- every TLS handshake a probe makes sends SNI `probe.mailmodes.invalid` (RFC 6761 reserves
  `.invalid`: no real server has that name; the probe checks the certificate against the address
  it dialled itself);
- SMTP: the first command is `EHLO probe.mailmodes.invalid`;
- IMAP: every tag starts with `mmprobe`;
- POP3: the first command is `X-MAILMODES-PROBE` (the server answers -ERR, as to any unknown command);
- where a probe's setting does not match the port (a ClientHello on a plaintext-first port, or
  waiting for a greeting on an implicit-TLS one), it sends its mark once the cell is decided.

Trade-off: a client can send the same marks and so keep its sessions out of verdict queries. Only
a client written to hide would: the names are reserved and documented, real clients send their own
host name and tags. The sessions stay listed (`"probe": true`, `GET /api/sessions?probe=true`).
"""

from __future__ import annotations

from collections.abc import Iterable

from mailmodes.protocols import POP3_PROBE_MARK

PROBE_NAME = "probe.mailmodes.invalid"
IMAP_TAG_PREFIX = "mmprobe"
POP3_MARK = POP3_PROBE_MARK
# A ClientHello read as plaintext can come out as a few garbage lines before the mark.
LINES_LOOKED_AT = 8


def mark_line(protocol: str) -> str:
    """A line that marks a connection as a probe's: what `check` opens with, and what a probe sends
    once a mismatched cell is decided."""
    return {"smtp": f"EHLO {PROBE_NAME}", "imap": f"{IMAP_TAG_PREFIX}0 LOGOUT", "pop3": POP3_MARK}[protocol]


def is_probe_line(protocol: str, text: str) -> bool:
    if protocol == "smtp":
        verb, _, argument = text.partition(" ")
        return verb.upper() in ("EHLO", "HELO") and argument.strip().lower() == PROBE_NAME
    if protocol == "imap":
        return text.startswith(IMAP_TAG_PREFIX)
    return text.strip().upper() == POP3_MARK


def is_probe_session(protocol: str, sni: str | None, lines: Iterable[tuple[float, str, bool, str]]) -> bool:
    """Does a session carry a probe's mark: the SNI name, or a marked line among the client's first?"""
    if sni is not None and sni.lower() == PROBE_NAME:
        return True
    seen = 0
    for _, sender, _, text in lines:
        if sender != "client":
            continue
        if is_probe_line(protocol, text):
            return True
        seen += 1
        if seen >= LINES_LOOKED_AT:
            break
    return False
