"""The SMTP service extensions mailmodes adds to aiosmtpd's, as text in and text out (no I/O):
which EHLO keywords a listener offers, the parameters of DSN (RFC 3461) and REQUIRETLS
(RFC 8689), BDAT's arguments (CHUNKING, RFC 3030), and replies without their enhanced status
codes (RFC 2034) for a listener that does not offer ENHANCEDSTATUSCODES.

The adapter (smtp_adapter.py) carries them out; a listener's `smtp_extensions` (config.py)
says which of them it offers, so that a client's fallback can be tested by hiding one.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

# In the order EHLO lists them (after aiosmtpd's SIZE and 8BITMIME).
SMTP_EXTENSIONS = ("SMTPUTF8", "PIPELINING", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN", "REQUIRETLS")

MAX_ENVID = 100  # RFC 3461 section 4.4: at most 100 characters
MAX_ORCPT = 500  # RFC 3461 section 4.2: at most 500 characters
MAX_CHUNK_DIGITS = 18  # BDAT's size: more digits than any message size limit needs
NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})

BDAT_SYNTAX = "501 5.5.4 Syntax: BDAT <size> [LAST]"


class ParameterError(Exception):
    """A MAIL or RCPT parameter of ours is malformed; str() is the whole reply line."""


def ehlo_keywords(offered: Collection[str], *, encrypted: bool) -> list[str]:
    """The EHLO lines (without "250-") of the extensions offered; REQUIRETLS only inside TLS
    (RFC 8689 section 4: it is offered on a TLS connection only)."""
    return [keyword for keyword in SMTP_EXTENSIONS
            if keyword in offered and (keyword != "REQUIRETLS" or encrypted)]


def parameters(text: str) -> list[tuple[str, str | None]]:
    """MAIL/RCPT parameters as the client wrote them: (keyword upper-cased, value as given or None)."""
    result = []
    for word in text.split():
        keyword, equals, value = word.partition("=")
        result.append((keyword.upper(), value if equals else None))
    return result


_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*")


def xtext(value: str, what: str, limit: int) -> str:
    """RFC 3461 section 4: xtext decoded ("+2B" is "+"); ParameterError when malformed."""
    if not _XTEXT.fullmatch(value):
        raise ParameterError(f"501 5.5.4 {what} is not valid xtext (RFC 3461 section 4)")
    decoded = re.sub(r"\+([0-9A-F]{2})", lambda match: chr(int(match.group(1), 16)), value)
    if len(decoded) > limit:
        raise ParameterError(f"501 5.5.4 {what} longer than {limit} characters (RFC 3461)")
    return decoded


@dataclass
class MailExtensions:
    """What MAIL FROM said through the extensions of this module."""

    ret: str | None = None  # DSN: FULL | HDRS
    envid: str | None = None  # DSN, xtext decoded
    requiretls: bool = False
    taken: set[str] = field(default_factory=set)  # the keywords handled here, for aiosmtpd to skip


@dataclass
class RcptExtensions:
    notify: tuple[str, ...] | None = None  # DSN: ("NEVER",) or some of SUCCESS, FAILURE, DELAY
    orcpt: str | None = None  # DSN: "<addr-type>;<address>", the address xtext decoded
    taken: set[str] = field(default_factory=set)


def _once(keyword: str, taken: set[str]) -> None:
    if keyword in taken:
        raise ParameterError(f"501 5.5.4 Duplicate {keyword} parameter")
    taken.add(keyword)


def mail_extensions(words: Iterable[tuple[str, str | None]], offered: Collection[str], *,
                    encrypted: bool) -> MailExtensions:
    """RET and ENVID (if DSN is offered) and REQUIRETLS (if offered and inside TLS) of MAIL FROM;
    anything else is left to aiosmtpd (which answers 555 to what it does not know)."""
    result = MailExtensions()
    for keyword, value in words:
        if keyword in ("RET", "ENVID") and "DSN" in offered:
            _once(keyword, result.taken)
            if keyword == "RET":
                if value is None or value.upper() not in ("FULL", "HDRS"):
                    raise ParameterError("501 5.5.4 RET must be FULL or HDRS (RFC 3461 section 4.3)")
                result.ret = value.upper()
            else:
                if not value:
                    raise ParameterError("501 5.5.4 ENVID needs a value (RFC 3461 section 4.4)")
                result.envid = xtext(value, "ENVID", MAX_ENVID)
        elif keyword == "REQUIRETLS" and "REQUIRETLS" in offered and encrypted:
            _once(keyword, result.taken)
            if value is not None:
                raise ParameterError("501 5.5.4 REQUIRETLS takes no value (RFC 8689 section 4.1)")
            result.requiretls = True
    return result


def rcpt_extensions(words: Iterable[tuple[str, str | None]], offered: Collection[str]) -> RcptExtensions:
    """NOTIFY and ORCPT of RCPT TO, if DSN is offered."""
    result = RcptExtensions()
    if "DSN" not in offered:
        return result
    for keyword, value in words:
        if keyword == "NOTIFY":
            _once(keyword, result.taken)
            items = tuple(item.upper() for item in (value or "").split(","))
            if items != ("NEVER",) and (not set(items) <= NOTIFY_VALUES or len(set(items)) != len(items)):
                raise ParameterError("501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY "
                                     "(RFC 3461 section 4.1)")
            result.notify = items
        elif keyword == "ORCPT":
            _once(keyword, result.taken)
            address_type, semicolon, address = (value or "").partition(";")
            if not semicolon or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", address_type) or not address:
                raise ParameterError("501 5.5.4 ORCPT must be <addr-type>;<address> (RFC 3461 section 4.2)")
            result.orcpt = f"{address_type.lower()};{xtext(address, 'ORCPT', MAX_ORCPT)}"
    return result


def bdat_arguments(arg: str) -> tuple[int, bool] | None:
    """BDAT's (chunk size, LAST), or None when malformed (RFC 3030 section 2: `BDAT size [LAST]`)."""
    words = arg.split()
    if not 1 <= len(words) <= 2 or not words[0].isdigit() or not words[0].isascii():
        return None
    if len(words[0]) > MAX_CHUNK_DIGITS:
        return None
    if len(words) == 2 and words[1].upper() != "LAST":
        return None
    return int(words[0]), len(words) == 2


_ENHANCED = re.compile(r"^(\d{3}[ -])[245]\.\d{1,3}\.\d{1,3}(?: |$)")


def without_enhanced_code(reply: str) -> str:
    """"250 2.1.0 OK" -> "250 OK", line by line: for a listener that does not offer
    ENHANCEDSTATUSCODES, whose replies must not carry them (RFC 2034 section 3)."""
    return "\r\n".join(_ENHANCED.sub(r"\1", line) for line in reply.split("\r\n"))
