"""Modified UTF-7 (RFC 3501 5.1.3), the IMAP4rev1 spelling of mailbox names outside US-ASCII.

The store keeps names as text. A client that has not sent ENABLE UTF8=ACCEPT (RFC 6855/9755)
names mailboxes in modified UTF-7 and is answered in it; one that has uses UTF-8 both ways.
"""

from __future__ import annotations

import base64
import binascii
import re

_SHIFTED = re.compile(r"&([A-Za-z0-9+,]*)-")


def encode(name: str) -> str | None:
    """`name` in modified UTF-7; None if it holds what UTF-16 cannot carry (the lone surrogates
    that stand for octets that were not UTF-8: those names go out as literals, octet for octet)."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",") + "-")
            run.clear()

    for char in name:
        if "\ud800" <= char <= "\udfff":
            return None
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


def decode(text: str) -> str | None:
    """The name `text` spells in modified UTF-7; None if it is not valid modified UTF-7."""
    if "&" not in text:
        return text
    out: list[str] = []
    pos = 0
    while (start := text.find("&", pos)) >= 0:
        out.append(text[pos:start])
        match = _SHIFTED.match(text, start)
        if match is None:
            return None
        encoded = match[1]
        if not encoded:
            out.append("&")
        else:
            try:
                data = base64.b64decode(encoded.replace(",", "/") + "=" * (-len(encoded) % 4), validate=True)
                chars = data.decode("utf-16-be")
            except (binascii.Error, UnicodeDecodeError):
                return None
            # RFC 3501 5.1.3: printable US-ASCII is never shifted; so a valid name has one spelling.
            if len(data) % 2 or any(" " <= char <= "~" for char in chars):
                return None
            out.append(chars)
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)
