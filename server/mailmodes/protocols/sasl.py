"""The challenge-response SASL mechanisms shared by SMTP, IMAP and POP3, as exchanges of bytes
(no I/O, no base64, no protocol wording): CRAM-MD5 (RFC 2195) and SCRAM-SHA-256 (RFC 5802,
RFC 7677; the crypto is scramp's). Each protocol carries the challenges in its own way (334,
"+ ", "+ ") and says the outcome in its own words.

An exchange is driven by `step`: the first call gets the client's initial response (None when
it sent none), every later one the client's answer to the last Challenge, until it gives Done.
Neither mechanism can use [auth] accept_any: both need the account's password on this side.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# (account name, password) for a login name (an account's name or address), None if unknown.
Lookup = Callable[[str], "tuple[str, str] | None"]

# The mechanisms a listener may offer (`sasl_mechanisms`), per protocol, in EHLO/CAPABILITY order.
SASL_MECHANISMS = {
    "smtp": ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"),
    "imap": ("PLAIN", "CRAM-MD5", "SCRAM-SHA-256"),
    "pop3": ("PLAIN", "CRAM-MD5", "SCRAM-SHA-256"),
}
CHALLENGE_RESPONSE = ("CRAM-MD5", "SCRAM-SHA-256")
DEFAULT_SASL_MECHANISMS = {"smtp": ("PLAIN", "LOGIN"), "imap": ("PLAIN",), "pop3": ("PLAIN",)}
SCRAM_ITERATIONS = 4096  # RFC 7677 section 4: at least 4096
_NO_PASSWORD = secrets.token_hex(16)  # an unknown user's, never told to anyone


@dataclass(frozen=True)
class Challenge:
    data: bytes


@dataclass(frozen=True)
class Done:
    """The end of an exchange: `account` logged in, or None; `user` is the name the client gave
    (None if it gave none), for the journal; `reason` says why it failed, for no client."""

    account: str | None
    user: str | None
    reason: str = ""


Step = Challenge | Done


class CramMd5:
    """RFC 2195: the server sends `<random.time@hostname>`, the client answers
    `user SP hex(HMAC-MD5(password, challenge))`. It takes no initial response."""

    def __init__(self, lookup: Lookup, hostname: str) -> None:
        self.lookup = lookup
        self.challenge = f"<{secrets.randbelow(10**12)}.{int(time.time())}@{hostname}>".encode()
        self.sent = False

    def step(self, response: bytes | None) -> Step:
        if not self.sent:
            if response:
                return Done(None, None, "CRAM-MD5 takes no initial response")
            self.sent = True
            return Challenge(self.challenge)
        user_bytes, _, digest = (response or b"").rpartition(b" ")
        try:
            user = user_bytes.decode("utf-8")
            given = digest.decode("ascii").lower()
        except UnicodeDecodeError:
            return Done(None, None, "not UTF-8")
        if not user:
            return Done(None, None, "no user name")
        found = self.lookup(user)
        if found is None:
            return Done(None, user, "unknown user")
        account, password = found
        expected = hmac.new(password.encode(), self.challenge, hashlib.md5).hexdigest()
        if not hmac.compare_digest(expected, given):
            return Done(None, user, "wrong digest")
        return Done(account, user)


class ScramSha256:
    """RFC 5802 / 7677 without channel binding (no -PLUS is offered): client-first, then the
    server-first challenge, client-final, then the server-final (its signature) as a last
    challenge, which the client answers with nothing. An unknown user meets a made-up salt, so
    that it fails only at the proof, like a wrong password."""

    _mechanism: Any = None
    _auth_info: dict[tuple[str, str], tuple[bytes, bytes, bytes, int]] = {}  # PBKDF2 once per password

    def __init__(self, lookup: Lookup) -> None:
        # scramp only when SCRAM is used: it loads ssl and asn1crypto (about 0.1 s), and the
        # session cores must not load ssl at all (tests/foundation/test_layering.py).
        import scramp

        if ScramSha256._mechanism is None:
            ScramSha256._mechanism = scramp.ScramMechanism("SCRAM-SHA-256")
        self._error = scramp.ScramException
        self.mechanism = ScramSha256._mechanism
        self.lookup = lookup
        self.user: str | None = None
        self.account: str | None = None
        self.server = self.mechanism.make_server(self._auth_fn)
        self.stage = "first"

    def _auth_fn(self, user: str) -> tuple[bytes, bytes, bytes, int]:
        self.user = user
        found = self.lookup(user)
        if found is None:
            return self._info(user, _NO_PASSWORD)
        self.account = found[0]
        return self._info(found[0], found[1])

    def _info(self, account: str, password: str) -> tuple[bytes, bytes, bytes, int]:
        key = (account, password)
        info = self._auth_info.get(key)
        if info is None:
            if len(self._auth_info) > 1000:
                self._auth_info.clear()
            info = self._auth_info[key] = self.mechanism.make_auth_info(password, iteration_count=SCRAM_ITERATIONS)
        return info

    def step(self, response: bytes | None) -> Step:
        try:
            if self.stage == "first":
                if response is None:
                    self.stage = "first-asked"
                    return Challenge(b"")
                return self._first(response)
            if self.stage == "first-asked":
                return self._first(response or b"")
            if self.stage == "final":
                self.server.set_client_final((response or b"").decode("utf-8"))
                self.stage = "verified"
                return Challenge(self.server.get_server_final().encode())
            if self.stage == "verified":
                if response:
                    return Done(None, self.user, "an answer to the server-final message must be empty")
                return Done(self.account, self.user)
        except (self._error, UnicodeDecodeError, ValueError, KeyError, IndexError) as error:
            return Done(None, self.user, f"SCRAM: {error}")
        return Done(None, self.user, "SCRAM: out of turn")

    def _first(self, response: bytes) -> Step:
        self.server.set_client_first(response.decode("utf-8"))
        self.stage = "final"
        return Challenge(self.server.get_server_first().encode())


def exchange(mechanism: str, lookup: Lookup, hostname: str) -> CramMd5 | ScramSha256:
    """A new exchange of one of CHALLENGE_RESPONSE."""
    if mechanism == "CRAM-MD5":
        return CramMd5(lookup, hostname)
    if mechanism == "SCRAM-SHA-256":
        return ScramSha256(lookup)
    raise KeyError(mechanism)
