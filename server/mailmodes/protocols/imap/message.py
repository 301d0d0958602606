"""IMAP views of a stored message: ENVELOPE, BODYSTRUCTURE, BODY[section], SEARCH helpers.

Pure functions over the exact bytes a message was stored with (RFC 3501 6.4.5, 7.4.2). Nothing
here re-serialises a message: every section is a slice of the original bytes, and every size is
counted in those bytes, so FETCH BODY[...], RFC822.SIZE and BODYSTRUCTURE always agree. Stored
mail may use CRLF or bare LF line endings; both are handled and kept as they are.

The MIME walk is our own small splitter (offsets are needed, and email.parser would rebuild the
text); header *decoding* for SEARCH uses binascii and email.utils from the standard library.
`ParsedMessage` holds one message's parsed structure and the ENVELOPE and BODYSTRUCTURE made
from it; `parsed(message)` keeps it with the stored message (the store never changes a message's
bytes), so each message is parsed once however often it is fetched or searched. Parsing is
linear in the message size per nesting level, and BODY[] of the whole message needs no parse.

Odd input never raises: a public function that meets something it cannot make sense of falls
back to a plain text/plain view (and logs the traceback at debug level).
"""

from __future__ import annotations

import binascii
import datetime
import email.utils
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from mailmodes.store import Message

# RFC 3501 9: quoted = DQUOTE *QUOTED-CHAR DQUOTE, QUOTED-CHAR = <any TEXT-CHAR except
# quoted-specials> / "\" quoted-specials, TEXT-CHAR = <any CHAR except CR and LF>,
# CHAR = %x01-7F. Anything outside that (8-bit, CR, LF, NUL) must go out as a literal.
_QUOTABLE = re.compile(rb"[\x01-\x09\x0b\x0c\x0e-\x7f]*")
# RFC 5322 2.2 / 3.6.8: field-name = 1*ftext (printable US-ASCII except ":"), and the obsolete
# syntax (4.5.8) allows white space before the colon.
_FIELD_NAME = re.compile(rb"[!-9;-~]+[ \t]*:")
# RFC 2045 5.1: token := 1*<any (US-ASCII) CHAR except SPACE, CTLs, or tspecials>. 8-bit bytes
# are tolerated (real mail has them) rather than ending the token.
_MIME_TOKEN = re.compile(rb'[^\x00-\x20\x7f()<>@,;:\\"/\[\]?=]+')
_QUOTED_STRING = re.compile(rb'"((?:[^"\\]|\\.)*)(?:"|\\?\Z)', re.DOTALL)
_QUOTED_PAIR = re.compile(rb"\\(.)", re.DOTALL)
# An unquoted parameter value, read loosely: up to white space, a comment or the next ";".
_UNQUOTED_VALUE = re.compile(rb"[^\s;(]*")
# RFC 5322 3.2 lexical tokens of address fields. Atoms are read loosely (everything up to the
# next special or white space); quoted strings and comments are only recognised here and then
# read by _quoted_string / _comment (escapes, nesting).
_ADDRESS_TOKEN = re.compile(
    rb"(?P<space>[ \t\r\n]+)"
    rb'|(?P<quoted>")'
    rb"|(?P<comment>\()"
    rb"|(?P<literal>\[[^\]]*\]?)"  # domain-literal, RFC 5322 3.4.1
    rb"|(?P<special>[<>@,;:.])"
    rb'|(?P<atom>[^\x00-\x20\x7f()<>@,;:".\[]+)'
    rb"|(?P<other>.)",
    re.DOTALL,
)
_DOT_ATOM_TEXT = re.compile(rb"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
# RFC 2231 3/4: name*0=..., name*1*=..., and the single-part extended form name*=...
_RFC2231_SECTION = re.compile(rb"(.+?)\*(\d+)(\*?)")
# RFC 2047 2: encoded-word = "=?" charset "?" encoding "?" encoded-text "?="
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")

# Deeper nesting than this is treated as plain text: no real mail needs it, and it bounds both
# the recursion and the per-level rescans of the same bytes.
_MAX_DEPTH = 48

# Dovecot's stand-ins for the parts of an address that the header lacks (RFC 3501 reserves a
# NIL host for group markers, so a bare "alice" cannot be written as (NIL NIL "alice" NIL)).
_MISSING_MAILBOX = b"MISSING_MAILBOX"
_MISSING_DOMAIN = b"MISSING_DOMAIN"


# --------------------------------------------------------------------------------------------
# IMAP strings


def nstring(value: bytes | str | None) -> bytes:
    """RFC 3501 9 nstring: NIL, a quoted string when every byte allows it, else a literal."""
    if value is None:
        return b"NIL"
    return _string(value.encode("utf-8") if isinstance(value, str) else value)


def _string(value: bytes) -> bytes:
    """RFC 3501 9 string = quoted / literal."""
    if _QUOTABLE.fullmatch(value):
        return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(value) + value


# --------------------------------------------------------------------------------------------
# Raw header and MIME structure, as offsets into the stored bytes


@dataclass(slots=True)
class _Field:
    name: str  # lower-case field name
    start: int  # first byte of the field name
    value_start: int  # just after the colon
    end: int  # after the line ending of the field's last (possibly folded) line


@dataclass(slots=True)
class _Header:
    fields: list[_Field]
    end: int  # where the body starts
    blank: bytes  # the empty line that ended the header, b"" if there was none
    firsts: dict[str, _Field] = field(default_factory=dict)  # first field of each name

    def first(self, name: str) -> _Field | None:
        return self.firsts.get(name)


@dataclass(frozen=True, slots=True)
class _ContentType:
    main: bytes  # as written in the header, e.g. b"TEXT"
    sub: bytes
    params: tuple[tuple[bytes, bytes], ...]

    def is_(self, main: bytes, sub: bytes | None = None) -> bool:
        return self.main.lower() == main and (sub is None or self.sub.lower() == sub)

    def param(self, name: bytes) -> bytes | None:
        for key, value in self.params:
            if key.lower() == name:
                return value
        return None


# RFC 2045 5.2: "Content-Type: text/plain; charset=us-ascii" is assumed when the header is
# absent or unparsable; RFC 2046 5.1.5: inside multipart/digest the default is message/rfc822.
_TEXT_PLAIN = _ContentType(b"text", b"plain", ())
_MESSAGE_RFC822 = _ContentType(b"message", b"rfc822", ())


@dataclass(slots=True)
class _Entity:
    """One MIME entity (a message or a body part): its header, body and what its body holds."""

    data: bytes
    start: int
    end: int
    header: _Header
    ctype: _ContentType
    kind: str  # "multipart", "message" (encapsulated message/rfc822), "text" or "basic"
    depth: int
    ranges: list[tuple[int, int]] = field(default_factory=list)  # multipart children
    _children: list[_Entity] | None = None
    _inner: _Entity | None = None

    @property
    def body_start(self) -> int:
        return self.header.end

    def value(self, name: str) -> bytes | None:
        """The unfolded value of the first field called name, or None."""
        f = self.header.first(name)
        return None if f is None else _field_value(self.data, f)

    def children(self) -> list[_Entity]:
        if self._children is None:
            default = _MESSAGE_RFC822 if self.ctype.is_(b"multipart", b"digest") else _TEXT_PLAIN
            self._children = [
                _entity(self.data, start, end, self.depth + 1, default) for start, end in self.ranges
            ]
        return self._children

    def inner(self) -> _Entity:
        """The message encapsulated in a message/rfc822 body (RFC 2046 5.2.1)."""
        if self._inner is None:
            self._inner = _entity(self.data, self.body_start, self.end, self.depth + 1, _TEXT_PLAIN)
        return self._inner


def _parse_header(data: bytes, start: int, end: int) -> _Header:
    """Split [start, end) into header fields and the offset where the body begins.

    RFC 5322 2.1: the header is a sequence of fields ended by an empty line. Continuation lines
    begin with white space (2.2.3 folding). A line that is neither a field nor a continuation
    ends a malformed header there; it and what follows are body (as Python's email parser does).
    """
    fields: list[_Field] = []
    firsts: dict[str, _Field] = {}
    pos = start
    while pos < end:
        nl = data.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        length = line_end - pos
        if (length == 1 and data[pos] == 0x0A) or (length == 2 and data[pos] == 0x0D and nl >= 0):
            return _Header(fields, line_end, data[pos:line_end], firsts)
        if data[pos] in (0x20, 0x09):
            if not fields:
                break
            fields[-1].end = line_end
        else:
            match = _FIELD_NAME.match(data, pos, line_end)
            if match is None:
                break
            name = data[pos : match.end() - 1].rstrip(b" \t").decode("ascii").lower()
            fields.append(_Field(name, pos, match.end(), line_end))
            firsts.setdefault(name, fields[-1])
        pos = line_end
    return _Header(fields, pos, b"", firsts)


def _unfold(raw: bytes) -> bytes:
    """RFC 5322 2.2.3: unfolding removes each CRLF that precedes white space (LF for bare-LF mail)."""
    return raw.replace(b"\r\n", b"").replace(b"\n", b"")


def _field_value(data: bytes, f: _Field) -> bytes:
    return _unfold(data[f.value_start : f.end]).strip(b" \t\r\n")


def _entity(data: bytes, start: int, end: int, depth: int, default: _ContentType) -> _Entity:
    header = _parse_header(data, start, end)
    entity = _Entity(data, start, end, header, default, "text", depth)
    raw_type = entity.value("content-type")
    if raw_type is not None:
        entity.ctype = _parse_content_type(raw_type) or _TEXT_PLAIN
    entity.kind = _classify(entity)
    if entity.kind == "text" and not entity.ctype.is_(b"text"):
        # A multipart we could not split is shown as what it then is: plain text.
        entity.ctype = _TEXT_PLAIN
    return entity


def _classify(entity: _Entity) -> str:
    ctype = entity.ctype
    if ctype.is_(b"multipart"):
        boundary = ctype.param(b"boundary")
        if boundary and entity.depth < _MAX_DEPTH:
            entity.ranges = _split_multipart(entity.data, entity.body_start, entity.end, boundary)
            if entity.ranges:
                return "multipart"
        return "text"
    if ctype.is_(b"message", b"rfc822") and entity.depth < _MAX_DEPTH:
        # RFC 2046 5.2.1: no encoding other than 7bit, 8bit or binary is permitted for
        # message/rfc822; a base64 "message" is opaque data, not something to look into.
        if _encoding(entity).lower() in (b"7bit", b"8bit", b"binary"):
            return "message"
        return "basic"
    return "text" if ctype.is_(b"text") else "basic"


def _split_multipart(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """The (start, end) of each body part between boundary delimiter lines.

    RFC 2046 5.1.1: a delimiter line is "--" boundary, optional transport padding (white space),
    then the line ending; the close delimiter adds "--". The line ending *before* a delimiter
    belongs to the delimiter, not to the preceding part. Preamble and epilogue are dropped. A
    missing close delimiter lets the last part run to the end of the multipart body.
    """
    delimiter = re.compile(rb"^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$", re.MULTILINE)
    ranges: list[tuple[int, int]] = []
    part_start: int | None = None
    for match in delimiter.finditer(data, start, end):
        if part_start is not None:
            ranges.append((part_start, _before_line_ending(data, match.start(), part_start)))
            part_start = None
        if match.group(1):
            return ranges
        after = match.end()
        part_start = after + 1 if after < end and data[after] == 0x0A else after
    if part_start is not None:
        ranges.append((part_start, end))
    return ranges


def _before_line_ending(data: bytes, delimiter_start: int, floor: int) -> int:
    pos = delimiter_start
    if pos > floor and data[pos - 1] == 0x0A:
        pos -= 1
        if pos > floor and data[pos - 1] == 0x0D:
            pos -= 1
    return pos


# --------------------------------------------------------------------------------------------
# MIME header field syntax (RFC 2045, RFC 2183, RFC 2231)


def _skip_cfws(v: bytes, pos: int) -> int:
    """Skip white space and (nested) comments, RFC 5322 3.2.2 CFWS."""
    n = len(v)
    while pos < n:
        c = v[pos]
        if c in b" \t\r\n":
            pos += 1
        elif c == 0x28:  # "("
            pos = _comment(v, pos)[1]
        else:
            break
    return pos


def _comment(v: bytes, pos: int) -> tuple[bytes, int]:
    """RFC 5322 3.2.2 comment starting at v[pos] == "(": its text and the offset after it."""
    depth = 0
    i = pos
    n = len(v)
    while i < n:
        c = v[i]
        if c == 0x5C:  # quoted-pair
            i += 2
            continue
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth == 0:
                return v[pos + 1 : i], i + 1
        i += 1
    return v[pos + 1 :], n


def _quoted_string(v: bytes, pos: int) -> tuple[bytes, int]:
    """RFC 5322 3.2.4 quoted-string starting at v[pos] == '"': unescaped content, offset after.
    An unterminated string runs to the end of the value."""
    match = _QUOTED_STRING.match(v, pos)
    assert match is not None  # the opening quote is always there
    content = match.group(1)
    if b"\\" in content:
        content = _QUOTED_PAIR.sub(rb"\1", content)  # quoted-pair = "\" (VCHAR / WSP)
    return content, match.end()


def _mime_token(v: bytes, pos: int) -> tuple[bytes, int]:
    match = _MIME_TOKEN.match(v, pos)
    return (b"", pos) if match is None else (match.group(), match.end())


def _parse_content_type(v: bytes) -> _ContentType | None:
    """RFC 2045 5.1: type "/" subtype *(";" parameter); None when it does not parse."""
    main, pos = _mime_token(v, _skip_cfws(v, 0))
    pos = _skip_cfws(v, pos)
    if not main or pos >= len(v) or v[pos] != 0x2F:  # "/"
        return None
    sub, pos = _mime_token(v, _skip_cfws(v, pos + 1))
    if not sub:
        return None
    return _ContentType(main, sub, _parse_params(v, pos))


def _parse_disposition(v: bytes) -> tuple[bytes, tuple[tuple[bytes, bytes], ...]] | None:
    """RFC 2183 2: disposition-type *(";" disposition-parm)."""
    kind, pos = _mime_token(v, _skip_cfws(v, 0))
    if not kind:
        return None
    return kind, _parse_params(v, pos)


def _parse_params(v: bytes, pos: int) -> tuple[tuple[bytes, bytes], ...]:
    """RFC 2045 5.1 parameters (attribute "=" value, value a token or quoted-string).

    Tolerant of real-world damage: a parameter without "=" is skipped, an unquoted value runs
    to white space, a comment or ";".
    """
    params: list[tuple[bytes, bytes]] = []
    n = len(v)
    while True:
        pos = _skip_cfws(v, pos)
        if pos >= n:
            break
        if v[pos] == 0x3B:  # ";"
            pos += 1
            continue
        name, pos = _mime_token(v, pos)
        pos = _skip_cfws(v, pos)
        if not name or pos >= n or v[pos] != 0x3D:  # "="
            pos = _next_semicolon(v, pos)
            continue
        pos = _skip_cfws(v, pos + 1)
        if pos < n and v[pos] == 0x22:
            value, pos = _quoted_string(v, pos)
        else:
            match = _UNQUOTED_VALUE.match(v, pos)
            value, pos = (b"", pos) if match is None else (match.group(), match.end())
        params.append((name, value))
        pos = _next_semicolon(v, pos)
    return _merge_rfc2231(params)


def _next_semicolon(v: bytes, pos: int) -> int:
    found = v.find(b";", pos)
    return len(v) if found < 0 else found


def _merge_rfc2231(params: list[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    """RFC 2231 3: join name*0, name*1, ... into one parameter, where the first section stood.

    As Dovecot does, a value that has an encoded (name*n*) section keeps its charset'language'
    percent-encoded form and is named "name*"; the client decodes it.
    """
    sections: dict[bytes, list[tuple[int, bool, bytes]]] = {}
    order: list[tuple[bytes, bytes] | bytes] = []
    for name, value in params:
        match = _RFC2231_SECTION.fullmatch(name)
        if match is None:
            order.append((name, value))
            continue
        base = match.group(1)
        if base.lower() not in sections:
            sections[base.lower()] = []
            order.append(base)
        sections[base.lower()].append((int(match.group(2)), bool(match.group(3)), value))
    merged: list[tuple[bytes, bytes]] = []
    for item in order:
        if isinstance(item, tuple):
            merged.append(item)
            continue
        parts = sorted(sections[item.lower()], key=lambda s: s[0])
        extended = any(s[1] for s in parts)
        merged.append((item + b"*" if extended else item, b"".join(s[2] for s in parts)))
    return tuple(merged)


def _encoding(entity: _Entity) -> bytes:
    """RFC 2045 6.1: Content-Transfer-Encoding is a token; "7bit" when absent or malformed."""
    raw = entity.value("content-transfer-encoding")
    if raw is None:
        return b"7bit"
    token, _ = _mime_token(raw, _skip_cfws(raw, 0))
    return token or b"7bit"


def _languages(raw: bytes) -> list[bytes]:
    """RFC 3282 2: Content-Language = 1#Language-tag."""
    tags: list[bytes] = []
    for item in raw.split(b","):
        token, _ = _mime_token(item, _skip_cfws(item, 0))
        if token:
            tags.append(token)
    return tags


# --------------------------------------------------------------------------------------------
# ENVELOPE (RFC 3501 7.4.2)


def envelope(data: bytes) -> bytes:
    """The ENVELOPE of a message: ( date subject from sender reply-to to cc bcc in-reply-to
    message-id ), header text raw (encoded words stay encoded, as IMAP requires)."""
    return ParsedMessage(data).envelope()


def _envelope(data: bytes, header: _Header) -> bytes:
    def text(name: str) -> bytes:
        f = header.first(name)
        return nstring(None if f is None else _field_value(data, f))

    def addresses(name: str) -> list[_Address]:
        f = header.first(name)
        return [] if f is None else _addresses(_field_value(data, f))

    from_ = addresses("from")
    # RFC 3501 7.4.2: "If the Sender or Reply-To lines are absent in the [RFC-2822] header, or
    # are present but empty, the server sets the corresponding member of the envelope to be
    # the same value as the from member."
    sender = addresses("sender") or from_
    reply_to = addresses("reply-to") or from_
    items = [
        text("date"),
        text("subject"),
        _address_list(from_),
        _address_list(sender),
        _address_list(reply_to),
        _address_list(addresses("to")),
        _address_list(addresses("cc")),
        _address_list(addresses("bcc")),
        text("in-reply-to"),
        text("message-id"),
    ]
    return b"(" + b" ".join(items) + b")"


_Address = tuple[bytes | None, bytes | None, bytes | None, bytes | None]
_GROUP_END: _Address = (None, None, None, None)


def _address_list(addresses: list[_Address]) -> bytes:
    """RFC 3501 9: env-from = "(" 1*address ")" / nil; address = "(" addr-name SP addr-adl SP
    addr-mailbox SP addr-host ")" (no space between addresses)."""
    if not addresses:
        return b"NIL"
    return b"(" + b"".join(b"(" + b" ".join(nstring(x) for x in a) + b")" for a in addresses) + b")"


class _Token(NamedTuple):
    kind: str  # "atom", "quoted", "literal" (domain literal), "special", "comment"
    text: bytes
    space: bool  # white space or a comment came before it


def _tokens(v: bytes) -> list[_Token]:
    """RFC 5322 3.2 lexical tokens of an address header (after unfolding)."""
    tokens: list[_Token] = []
    pos = 0
    n = len(v)
    space = False
    while pos < n:
        match = _ADDRESS_TOKEN.match(v, pos)
        assert match is not None  # the last alternative matches any byte
        kind = match.lastgroup
        if kind == "space":
            space = True
            pos = match.end()
            continue
        if kind == "comment":
            text, pos = _comment(v, pos)
            tokens.append(_Token("comment", text, space))
            space = True
            continue
        if kind == "quoted":
            text, pos = _quoted_string(v, pos)
        else:
            text, pos = match.group(), match.end()
        tokens.append(_Token("atom" if kind == "other" else kind or "atom", text, space))
        space = False
    return tokens


def _is(token: _Token | None, specials: bytes) -> bool:
    return token is not None and token.kind == "special" and token.text in specials


def _addresses(value: bytes) -> list[_Address]:
    """RFC 5322 3.4 address-list, as IMAP address structures (RFC 3501 7.4.2).

    Groups become a start marker (NIL NIL "name" NIL), their members, and an end marker
    (NIL NIL NIL NIL). Damaged input yields what can be recognised; nothing raises.
    """
    tokens = _tokens(value)
    out: list[_Address] = []
    in_group = False
    i = 0
    n = len(tokens)
    while i < n:
        token = tokens[i]
        if _is(token, b","):
            i += 1
            continue
        if _is(token, b";"):
            if in_group:
                out.append(_GROUP_END)
                in_group = False
            i += 1
            continue
        words_end = _phrase_end(tokens, i)
        nxt = tokens[words_end] if words_end < n else None
        if _is(nxt, b":"):
            if not in_group:
                # group = display-name ":" [group-list] ";" [CFWS]
                out.append((None, None, _phrase(tokens[i:words_end]), None))
                in_group = True
            i = words_end + 1
            continue
        address: _Address | None
        if _is(nxt, b"<"):
            address, j = _name_addr(tokens, i, words_end)
        else:
            address, j = _addr_spec(tokens, i, words_end)
        if address is not None:
            out.append(address)
        i = max(_separator(tokens, j), i + 1)
    if in_group:
        out.append(_GROUP_END)
    return out


def _phrase_end(tokens: list[_Token], i: int) -> int:
    """Index of the first token after the words (atoms, quoted strings, dots) starting at i."""
    n = len(tokens)
    while i < n and (tokens[i].kind != "special" or tokens[i].text == b"."):
        i += 1
    return i


def _separator(tokens: list[_Token], j: int) -> int:
    """Skip what is left of a damaged address, up to the next "," or ";"."""
    while j < len(tokens) and not _is(tokens[j], b",;"):
        j += 1
    return j


def _phrase(tokens: list[_Token]) -> bytes:
    """RFC 5322 3.2.5 phrase as display text: quoted strings unquoted, comments dropped,
    words joined with one space where the header had white space between them."""
    out = bytearray()
    for token in tokens:
        if token.kind == "comment":
            continue
        if out and token.space:
            out += b" "
        out += token.text
    return bytes(out)


def _joined(tokens: list[_Token]) -> bytes:
    """Tokens of a local-part, domain or route written without the white space around them."""
    out = bytearray()
    for token in tokens:
        if token.kind == "comment":
            continue
        if token.kind == "quoted" and not _DOT_ATOM_TEXT.fullmatch(token.text):
            out += b'"' + token.text.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
        else:
            out += token.text
    return bytes(out)


def _name_addr(tokens: list[_Token], i: int, angle: int) -> tuple[_Address, int]:
    """RFC 5322 3.4 name-addr = [display-name] angle-addr, angle-addr = "<" addr-spec ">",
    with the obsolete route (4.4 obs-route "@a,@b:") going to addr-adl."""
    name = _phrase(tokens[i:angle]) or None
    j = angle + 1
    n = len(tokens)
    route: bytes | None = None
    if _is(tokens[j] if j < n else None, b"@"):
        start = j
        while j < n and not _is(tokens[j], b":>"):
            j += 1
        if j < n and _is(tokens[j], b":"):
            route = _joined(tokens[start:j])
            j += 1
        else:
            j = start
    start = j
    while j < n and not _is(tokens[j], b"@><,;"):
        j += 1
    mailbox = _joined(tokens[start:j]) or _MISSING_MAILBOX
    domain = _MISSING_DOMAIN
    if j < n and _is(tokens[j], b"@"):
        start = j + 1
        j = start
        while j < n and not _is(tokens[j], b"><,;"):
            j += 1
        domain = _joined(tokens[start:j]) or _MISSING_DOMAIN
    if j < n and _is(tokens[j], b">"):
        j += 1
    return (name, route, mailbox, domain), j


def _addr_spec(tokens: list[_Token], i: int, words_end: int) -> tuple[_Address | None, int]:
    """RFC 5322 3.4.1 addr-spec = local-part "@" domain; a comment after it names the mailbox
    when there is no display name (as Dovecot and UW-IMAP do)."""
    n = len(tokens)
    local = tokens[i:words_end]
    j = words_end
    domain = _MISSING_DOMAIN
    domain_tokens: list[_Token] = []
    if j < n and _is(tokens[j], b"@"):
        j += 1
        start = j
        while j < n and not _is(tokens[j], b"<>,;:@"):
            j += 1
        domain_tokens = tokens[start:j]
        domain = _joined(domain_tokens) or _MISSING_DOMAIN
    elif not any(t.kind != "comment" for t in local):
        return None, j
    words = [t for t in local if t.kind != "comment"]
    first_word = local.index(words[0]) if words else 0
    comments = [t.text for t in local[first_word:] + domain_tokens if t.kind == "comment"]
    name = comments[-1] if comments else None
    return (name, None, _joined(local) or _MISSING_MAILBOX, domain), j


# --------------------------------------------------------------------------------------------
# BODYSTRUCTURE / BODY (RFC 3501 7.4.2)


def bodystructure(data: bytes, extended: bool = True) -> bytes:
    """FETCH BODYSTRUCTURE (extended=True) or BODY (extended=False) of a message."""
    return ParsedMessage(data).bodystructure(extended)


def _plain_structure(data: bytes, extended: bool) -> bytes:
    size = b"%d %d" % (len(data), data.count(b"\n"))
    tail = b" NIL NIL NIL NIL" if extended else b""
    return b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" ' + size + tail + b")"


def _body(entity: _Entity, extended: bool, out: list[bytes]) -> None:
    """RFC 3501 9: body = "(" (body-type-1part / body-type-mpart) ")"."""
    out.append(b"(")
    if entity.kind == "multipart":
        _multipart(entity, extended, out)
    else:
        _single_part(entity, extended, out)
    out.append(b")")


def _multipart(entity: _Entity, extended: bool, out: list[bytes]) -> None:
    """body-type-mpart = 1*body SP media-subtype [SP body-ext-mpart];
    body-ext-mpart = body-fld-param [SP body-fld-dsp [SP body-fld-lang [SP body-fld-loc]]]."""
    for child in entity.children():
        _body(child, extended, out)
    out += [b" ", _string(entity.ctype.sub)]
    if extended:
        out += [b" ", _params(entity.ctype.params, default_charset=False)]
        _extension_common(entity, out)


def _single_part(entity: _Entity, extended: bool, out: list[bytes]) -> None:
    """body-type-1part = (body-type-basic / body-type-msg / body-type-text) [SP body-ext-1part];
    body-fields = body-fld-param SP body-fld-id SP body-fld-desc SP body-fld-enc SP
    body-fld-octets. Octets and lines are counted in the body as stored."""
    data, ctype = entity.data, entity.ctype
    text = entity.kind == "text"
    out += [
        _string(ctype.main),
        b" ",
        _string(ctype.sub),
        b" ",
        _params(ctype.params, default_charset=text),
        b" ",
        nstring(entity.value("content-id")),
        b" ",
        nstring(entity.value("content-description")),
        b" ",
        _string(_encoding(entity)),
        b" %d" % (entity.end - entity.body_start),
    ]
    lines = b" %d" % data.count(b"\n", entity.body_start, entity.end)
    if entity.kind == "message":
        # body-type-msg = media-message SP body-fields SP envelope SP body SP body-fld-lines
        inner = entity.inner()
        out += [b" ", _envelope(data, inner.header), b" "]
        _body(inner, extended, out)
        out.append(lines)
    elif text:
        # body-type-text = media-text SP body-fields SP body-fld-lines
        out.append(lines)
    if extended:
        # body-ext-1part = body-fld-md5 [SP body-fld-dsp [SP body-fld-lang [SP body-fld-loc]]]
        out += [b" ", nstring(entity.value("content-md5"))]
        _extension_common(entity, out)


def _params(params: tuple[tuple[bytes, bytes], ...], *, default_charset: bool) -> bytes:
    """body-fld-param = "(" string SP string *(SP string SP string) ")" / nil.

    For text/* without a charset the RFC 2045 5.2 default ("charset" "us-ascii") is added, as
    the RFC 3501 7.4.2 example and Dovecot show it.
    """
    items = [_string(k) + b" " + _string(v) for k, v in params]
    if default_charset and not any(k.lower() == b"charset" for k, _ in params):
        items.append(b'"charset" "us-ascii"')
    return b"(" + b" ".join(items) + b")" if items else b"NIL"


def _extension_common(entity: _Entity, out: list[bytes]) -> None:
    """body-fld-dsp SP body-fld-lang SP body-fld-loc."""
    raw = entity.value("content-disposition")
    disposition = None if raw is None else _parse_disposition(raw)
    if disposition is None:
        out.append(b" NIL")
    else:
        kind, params = disposition
        out += [b" (", _string(kind), b" ", _params(params, default_charset=False), b")"]
    raw = entity.value("content-language")
    tags = [] if raw is None else _languages(raw)
    out += [b" (" + b" ".join(_string(t) for t in tags) + b")" if tags else b" NIL"]
    out += [b" ", nstring(entity.value("content-location"))]


# --------------------------------------------------------------------------------------------
# BODY[section] (RFC 3501 6.4.5)


def section(
    data: bytes,
    part: tuple[int, ...] = (),
    kind: str | None = None,
    fields: tuple[str, ...] = (),
) -> bytes:
    """The bytes of BODY[<part>.<kind>], sliced from the stored message; b"" if there is no
    such part (RFC 3501 6.4.5: a nonexistent section is returned as an empty string)."""
    return ParsedMessage(data).section(part, kind, fields)


def _section(root: _Entity, part: tuple[int, ...], kind: str | None, fields: tuple[str, ...]) -> bytes:
    data = root.data
    if not part:
        # "The MIME part specifier MUST be prefixed by one or more numeric part specifiers."
        return b"" if kind == "MIME" else _message_section(root, kind, fields)
    target = _resolve(root, part)
    if target is None:
        return b""
    if kind is None:
        return data[target.body_start : target.end]
    if kind == "MIME":
        return data[target.start : target.body_start] + _missing_blank_line(target)
    # "The HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, and TEXT part specifiers can be the sole
    # part specifier or can be prefixed by one or more numeric part specifiers, provided that
    # the numeric part specifier refers to a part of type MESSAGE/RFC822."
    if target.kind != "message":
        return b""
    return _message_section(target.inner(), kind, fields)


def _resolve(root: _Entity, part: tuple[int, ...]) -> _Entity | None:
    """Follow RFC 3501 6.4.5 part numbers: a multipart's parts are numbered from 1; a
    message/rfc822 part's numbers refer to the parts of the message it holds; a message that
    is not multipart has just part 1, its body."""
    current: _Entity | None = _nth_part_of_message(root, part[0])
    for number in part[1:]:
        if current is None:
            return None
        if current.kind == "multipart":
            current = _nth(current.children(), number)
        elif current.kind == "message":
            current = _nth_part_of_message(current.inner(), number)
        else:
            return None
    return current


def _nth_part_of_message(message: _Entity, number: int) -> _Entity | None:
    if message.kind == "multipart":
        return _nth(message.children(), number)
    return message if number == 1 else None


def _nth(children: list[_Entity], number: int) -> _Entity | None:
    return children[number - 1] if 1 <= number <= len(children) else None


def _message_section(message: _Entity, kind: str | None, fields: tuple[str, ...]) -> bytes:
    data = message.data
    if kind is None:
        return data[message.start : message.end]
    if kind == "HEADER":
        return data[message.start : message.body_start] + _missing_blank_line(message)
    if kind == "TEXT":
        return data[message.body_start : message.end]
    if kind in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        wanted = {name.lower() for name in fields}
        keep = kind == "HEADER.FIELDS"
        eol = _eol(data)
        out = bytearray()
        for f in message.header.fields:
            if (f.name in wanted) == keep:
                out += data[f.start : f.end]
                if data[f.end - 1] != 0x0A:
                    out += eol
        # "Subsetting does not exclude the [RFC-2822] delimiting blank line between the header
        # and the body; the blank line is included in all header fetches, except in the case
        # of a message which has no body and no blank line."
        return bytes(out) + (message.header.blank or _missing_blank_line(message))
    return b""


def _missing_blank_line(entity: _Entity) -> bytes:
    """The blank line a header fetch must end with when the header itself lacks one: only a
    body with no empty line before it (malformed) needs it; no body and no blank line, none."""
    if entity.header.blank or entity.body_start >= entity.end:
        return b""
    return _eol(entity.data)


def _eol(data: bytes) -> bytes:
    """The line ending the stored message uses (CRLF unless its first line ends in bare LF)."""
    nl = data.find(b"\n")
    return b"\n" if nl == 0 or (nl > 0 and data[nl - 1] != 0x0D) else b"\r\n"


# --------------------------------------------------------------------------------------------
# SEARCH helpers (RFC 3501 6.4.4)


def header_values(data: bytes, name: str) -> list[str]:
    """Every value of the top-level header field name (case-insensitive), unfolded and with
    RFC 2047 encoded words decoded, for SEARCH HEADER / FROM / SUBJECT / ..."""
    return ParsedMessage(data).header_values(name)


def text_contains(data: bytes, needle: str, *, body_only: bool) -> bool:
    """SEARCH BODY (body_only) / TEXT: does the decoded text contain needle, ignoring case?

    Text parts are searched after undoing their transfer encoding and charset; header text
    (of the message for TEXT, of encapsulated messages for both) after RFC 2047 decoding.
    """
    return ParsedMessage(data).text_contains(needle, body_only=body_only)


def sent_date(data: bytes) -> datetime.date | None:
    """The day of the Date: header in its own time zone (RFC 3501 6.4.4 SENTBEFORE / SENTON /
    SENTSINCE: "disregarding time and timezone"); None when absent or unparsable."""
    return ParsedMessage(data).sent_date()


def _text(raw: bytes) -> str:
    """Raw header bytes as text: UTF-8 (RFC 6532) when valid, else Latin-1 (never fails)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _decode_words(value: str) -> str:
    """RFC 2047 decoding; white space between two adjacent encoded words is dropped (6.2)."""
    out: list[str] = []
    pos = 0
    after_word = False
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        decoded = _decode_word(match)
        if not (after_word and decoded is not None and between.strip(" \t") == ""):
            out.append(between)
        out.append(match.group() if decoded is None else decoded)
        pos = match.end()
        after_word = decoded is not None
    out.append(value[pos:])
    return "".join(out)


def _decode_word(match: re.Match[str]) -> str | None:
    """One encoded word's text, or None when it does not decode (it then stays as written)."""
    charset, encoding, payload = match.groups()
    try:
        raw = payload.encode("ascii")
        if encoding in "Bb":
            octets = binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True)
        else:
            octets = binascii.a2b_qp(raw, header=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None
    return _decode_charset(octets, charset.split("*", 1)[0])


def _decode_charset(octets: bytes, charset: str) -> str:
    """Text in the named charset. US-ASCII is read as its superset UTF-8 (8-bit text labelled
    us-ascii is common), and an unknown or non-text codec falls back to UTF-8."""
    if charset.strip().lower() in ("us-ascii", "ascii"):
        charset = "utf-8"
    try:
        return octets.decode(charset, "replace")
    except (LookupError, UnicodeError, ValueError):
        return octets.decode("utf-8", "replace")


def _header_text(entity: _Entity) -> str:
    data = entity.data
    return "\n".join(
        f.name + ": " + _decode_words(_text(_field_value(data, f))) for f in entity.header.fields
    )


def _body_texts(entity: _Entity) -> Iterator[str]:
    """Decoded text of every text part (and the headers of encapsulated messages)."""
    if entity.kind == "multipart":
        for child in entity.children():
            yield from _body_texts(child)
    elif entity.kind == "message":
        inner = entity.inner()
        yield _header_text(inner)
        yield from _body_texts(inner)
    elif entity.kind == "text":
        yield _decoded_body(entity)


def _decoded_body(entity: _Entity) -> str:
    """A text part's body with its transfer encoding (RFC 2045 6) and charset undone."""
    raw = entity.data[entity.body_start : entity.end]
    encoding = _encoding(entity).lower()
    try:
        if encoding == b"base64":
            raw = binascii.a2b_base64(raw)
        elif encoding == b"quoted-printable":
            raw = binascii.a2b_qp(raw)
    except (binascii.Error, ValueError):
        pass  # damaged encoding: search the bytes as they are
    charset = entity.ctype.param(b"charset")
    return _decode_charset(raw, _text(charset) if charset else "utf-8")


# --------------------------------------------------------------------------------------------
# One parse per stored message


class ParsedMessage:
    """A message's MIME tree, parsed on first use, and what FETCH and SEARCH derive from it.

    The tree's entities keep their children once split, so every view below shares one walk of
    the bytes; ENVELOPE and BODYSTRUCTURE are kept as the bytes they produced. Every method
    falls back as the module docstring says instead of raising.
    """

    __slots__ = ("data", "_root", "_envelope", "_structures")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._root: _Entity | None = None
        self._envelope: bytes | None = None
        self._structures: dict[bool, bytes] = {}

    def _tree(self) -> _Entity:
        if self._root is None:
            self._root = _entity(self.data, 0, len(self.data), 0, _TEXT_PLAIN)
        return self._root

    def envelope(self) -> bytes:
        if self._envelope is None:
            try:
                self._envelope = _envelope(self.data, self._tree().header)
            except Exception:
                logging.getLogger(__name__).debug("ENVELOPE fell back to NIL", exc_info=True)
                self._envelope = b"(" + b" ".join([b"NIL"] * 10) + b")"
        return self._envelope

    def bodystructure(self, extended: bool = True) -> bytes:
        structure = self._structures.get(extended)
        if structure is None:
            try:
                out: list[bytes] = []
                _body(self._tree(), extended, out)
                structure = b"".join(out)
            except Exception:
                logging.getLogger(__name__).debug("BODYSTRUCTURE fell back to text/plain", exc_info=True)
                structure = _plain_structure(self.data, extended)
            self._structures[extended] = structure
        return structure

    def section(self, part: tuple[int, ...] = (), kind: str | None = None, fields: tuple[str, ...] = ()) -> bytes:
        if not part and kind is None:
            return self.data  # BODY[]: the whole message, nothing to parse
        try:
            return _section(self._tree(), part, kind.upper() if kind else None, fields)
        except Exception:
            logging.getLogger(__name__).debug("BODY[%r %r] fell back to empty", part, kind, exc_info=True)
            return b""

    def header_values(self, name: str) -> list[str]:
        try:
            data, wanted = self.data, name.lower()
            return [_decode_words(_text(_field_value(data, f))) for f in self._tree().header.fields if f.name == wanted]
        except Exception:
            logging.getLogger(__name__).debug("header_values fell back to none", exc_info=True)
            return []

    def text_contains(self, needle: str, *, body_only: bool) -> bool:
        target = needle.casefold()
        if not target:
            return True
        try:
            root = self._tree()
            if not body_only and target in _header_text(root).casefold():
                return True
            return any(target in chunk.casefold() for chunk in _body_texts(root))
        except Exception:
            logging.getLogger(__name__).debug("text_contains fell back to raw bytes", exc_info=True)
            return target in self.data.decode("utf-8", "replace").casefold()

    def sent_date(self) -> datetime.date | None:
        try:
            f = self._tree().header.first("date")
            if f is None:
                return None
            parsed = email.utils.parsedate_tz(_text(_field_value(self.data, f)))
            if parsed is None:
                return None
            return datetime.date(parsed[0], parsed[1], parsed[2])
        except Exception:
            logging.getLogger(__name__).debug("sent_date fell back to None", exc_info=True)
            return None


    def binary(self, part: tuple[int, ...]) -> bytes | None:
        """BINARY[part] (RFC 3516 4.1): the part's body with its Content-Transfer-Encoding
        undone; b"" for no such part; None for an encoding we cannot undo (UNKNOWN-CTE).
        BINARY[] and parts that hold other parts (multipart, message/rfc822) are as stored."""
        if not part:
            return self.data
        try:
            target = _resolve(self._tree(), part)
        except Exception:
            logging.getLogger(__name__).debug("BINARY[%r] fell back to empty", part, exc_info=True)
            return b""
        if target is None:
            return b""
        body = self.data[target.body_start : target.end]
        if target.kind in ("multipart", "message"):
            return body
        encoding = _encoding(target).lower()
        if encoding in (b"7bit", b"8bit", b"binary"):
            return body
        if encoding == b"base64":
            try:
                return binascii.a2b_base64(body)
            except (binascii.Error, ValueError):
                return None
        if encoding == b"quoted-printable":
            return decode_quoted_printable(body)
        return None

    # --- SORT and THREAD keys (RFC 5256, RFC 5957) ----------------------------------------

    def first_address(self, name: str) -> _Address | None:
        try:
            f = self._tree().header.first(name)
            found = [] if f is None else _addresses(_field_value(self.data, f))
            return found[0] if found else None
        except Exception:
            logging.getLogger(__name__).debug("first_address fell back to none", exc_info=True)
            return None

    def sort_address(self, name: str) -> bytes:
        """RFC 5256 3 (FROM, TO, CC): the addr-mailbox of the first address, b"" if none; a
        group's first address is its start marker, whose mailbox is the group name (as Dovecot)."""
        address = self.first_address(name)
        return (address[2] or b"") if address is not None else b""

    def display_address(self, name: str) -> str:
        """RFC 5957 (DISPLAYFROM, DISPLAYTO): the first address's display name, decoded; when it
        has none, its addr-spec."""
        address = self.first_address(name)
        if address is None:
            return ""
        display, _, mailbox, host = address
        if display:
            decoded = _decode_words(_text(display)).strip()
            if decoded:
                return decoded
        spec = _text(mailbox or b"")
        return spec if not host or host == _MISSING_DOMAIN else f"{spec}@{_text(host)}"

    def subject(self) -> str:
        """The Subject field, RFC 2047 words decoded; "" without one."""
        values = self.header_values("subject")
        return values[0] if values else ""

    def sent_timestamp(self) -> float | None:
        """RFC 5256 3 (DATE): the Date field as a UTC timestamp; None when absent or unparsable."""
        try:
            f = self._tree().header.first("date")
            parsed = None if f is None else email.utils.parsedate_tz(_text(_field_value(self.data, f)))
            return None if parsed is None else float(email.utils.mktime_tz(parsed))
        except Exception:
            logging.getLogger(__name__).debug("sent_timestamp fell back to None", exc_info=True)
            return None


    def message_ids(self, name: str) -> list[str]:
        """The msg-ids ("<left@right>", RFC 5322 3.6.4) in the first field called `name`, without
        their angle brackets, for THREAD=REFERENCES."""
        try:
            f = self._tree().header.first(name)
            if f is None:
                return []
            return [m[1] for m in _MSG_ID.finditer(_text(_field_value(self.data, f))) if "@" in m[1]]
        except Exception:
            logging.getLogger(__name__).debug("message_ids fell back to none", exc_info=True)
            return []


_MSG_ID = re.compile(r"<\s*([^<>\s]+)\s*>")


def parsed(message: Message) -> ParsedMessage:
    """The message's ParsedMessage, made on first use and kept with it (Message.derived)."""
    value = message.derived(_PARSED_KEY, ParsedMessage)
    assert isinstance(value, ParsedMessage)
    return value


_PARSED_KEY = "imap-mime"


# --------------------------------------------------------------------------------------------
# Base subject (RFC 5256 2.1), for SORT SUBJECT and THREAD

_SUBJ_BLOB = re.compile(r"\[[^\[\]]*\] *")
_SUBJ_REFWD = re.compile(r"(?:re|fwd?) *(?:\[[^\[\]]*\] *)?:", re.IGNORECASE)


def base_subject(subject: str) -> str:
    """RFC 5256 2.1 steps 1-7 on an already decoded subject. Written as loops over anchored,
    unambiguous patterns, so a long hostile subject costs linear time per step."""
    return base_subject_and_reply(subject)[0]


def base_subject_and_reply(subject: str) -> tuple[str, bool]:
    """The base subject, and whether a "Re:"/"Fwd:" leader or "(fwd)" trailer or "[fwd: ...]"
    wrapper was removed on the way (RFC 5256 THREAD=REFERENCES step 5 asks: is it a reply?)."""
    text = " ".join(subject.split()) if subject.strip() else ""  # (1) white space runs: one SP
    reply = False
    while True:
        trimmed = _strip_trailers(text)  # (2)
        reply = reply or "(" in text[len(trimmed) :]
        text = trimmed
        while True:  # (5): repeat (3) and (4) until nothing changes
            before = text
            while (stripped := _strip_leader(text)) is not None:  # (3)
                reply = reply or not text.startswith(" ")
                text = stripped
            blob = _SUBJ_BLOB.match(text)  # (4), only when something is left after it
            if blob is not None and text[blob.end() :].strip():
                text = text[blob.end() :]
            if text == before:
                break
        # (6) "[fwd:" ... "]" around the whole subject: unwrap, and start again at (2).
        if len(text) >= 6 and text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            reply = True
            continue
        return text, reply


def _strip_trailers(text: str) -> str:
    """(2) subj-trailer = "(fwd)" / WSP, removed from the end until none is left."""
    while True:
        trimmed = text.rstrip(" ")
        if trimmed[-5:].lower() == "(fwd)":
            trimmed = trimmed[:-5]
        if trimmed == text:
            return text
        text = trimmed


def _strip_leader(text: str) -> str | None:
    """(3) subj-leader = (*subj-blob subj-refwd) / WSP; None when the text starts with neither.
    Blobs are taken greedily: after fewer, "[" would follow, which no subj-refwd starts with."""
    if text.startswith(" "):
        return text[1:]
    pos = 0
    while (blob := _SUBJ_BLOB.match(text, pos)) is not None:
        pos = blob.end()
    refwd = _SUBJ_REFWD.match(text, pos)
    return None if refwd is None else text[refwd.end() :]


# --------------------------------------------------------------------------------------------
# Quoted-printable (RFC 2045 6.7), for BINARY

_QP_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


def decode_quoted_printable(body: bytes) -> bytes:
    """RFC 2045 6.7 as Dovecot reads it: white space at the end of a line is dropped (rule 3),
    "=" at the end of a line (white space after it allowed) is a soft line break (rule 5), and
    "=XX" is an octet; a "=" that is neither stays as it is."""
    out: list[bytes] = []
    for line in body.splitlines(keepends=True):
        content = line.rstrip(b"\r\n")
        ending = line[len(content) :]
        content = content.rstrip(b" \t")
        if content.endswith(b"="):
            content, ending = content[:-1], b""
        out.append(_QP_ESCAPE.sub(lambda match: bytes((int(match[1], 16),)), content) + ending)
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# APPEND of binary content (RFC 3516 4.4)


def binary_parts_as_base64(data: bytes) -> bytes:
    """The message with every leaf part whose Content-Transfer-Encoding is "binary" re-encoded
    as base64 (that field rewritten, everything else byte for byte): BODY[...] then never
    carries raw binary, and BINARY[...] decodes it back to the octets appended."""
    try:
        leaves = [entity for entity in _leaves(_entity(data, 0, len(data), 0, _TEXT_PLAIN))
                  if _encoding(entity).lower() == b"binary"]
    except Exception:
        logging.getLogger(__name__).debug("binary APPEND kept as sent", exc_info=True)
        return data
    eol = _eol(data)
    out: list[bytes] = []
    pos = 0
    for leaf in leaves:
        field = leaf.header.first("content-transfer-encoding")
        assert field is not None
        body = data[leaf.body_start : leaf.end]
        encoded = binascii.b2a_base64(body, newline=False)
        lines = eol.join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
        out += [data[pos : field.start], b"Content-Transfer-Encoding: base64", eol,
                data[field.end : leaf.body_start], lines]
        pos = leaf.end
    out.append(data[pos:])
    return b"".join(out)


def _leaves(root: _Entity) -> Iterator[_Entity]:
    """The parts that hold no other parts, in the order of their bytes."""
    stack = [root]
    while stack:
        entity = stack.pop()
        if entity.kind == "multipart":
            stack.extend(reversed(entity.children()))
        elif entity.kind == "message":
            stack.append(entity.inner())
        else:
            yield entity
