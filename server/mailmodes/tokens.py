"""OAuth 2.0 bearer tokens for XOAUTH2 and OAUTHBEARER (RFC 7628), issued by the HTTP API
(POST /api/tokens) for a user, a scope and a lifetime. The server is its own authorization
server: a token is a random string it remembers, checked by lookup, never a JWT to verify.

A token's scope is a list of words; the mail protocols accept a token whose scope has `mail`
or the protocol's own name (`smtp`, `imap`, `pop3`). Tokens live in memory only: a restart, or
POST /api/reset, forgets them.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SCOPE = ("mail",)
MAX_LIFETIME = 365 * 24 * 3600.0  # a year: anything longer is a mistake in a test
MAX_TOKENS = 10000  # the oldest go first beyond this: a loop issuing tokens must not eat memory


def token_id(token: str) -> str:
    """The name a token is listed and revoked by: never the token itself (the list is public)."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Token:
    token: str
    user: str  # the account's name
    scope: tuple[str, ...]
    issued: float
    expires: float

    @property
    def id(self) -> str:
        return token_id(self.token)

    def expired(self, now: float) -> bool:
        return now >= self.expires

    def allows(self, protocol: str) -> bool:
        return "mail" in self.scope or protocol in self.scope

    def as_dict(self, now: float, *, with_token: bool = False) -> dict[str, Any]:
        shown: dict[str, Any] = {"token": self.token} if with_token else {}
        return {**shown, "id": self.id, "user": self.user, "scope": " ".join(self.scope),
                "issued": self.issued, "expires": self.expires,
                "expires_in": max(0, round(self.expires - now)), "expired": self.expired(now)}


@dataclass(frozen=True)
class TokenCheck:
    """What a presented token is worth: `account` on success, else `error` (RFC 6750 section 3.1's
    code, which RFC 7628 section 3.2.2 puts in "status") and `reason` (for the journal)."""

    account: str | None
    error: str = ""
    reason: str = ""


@dataclass
class TokenIssuer:
    tokens: dict[str, Token] = field(default_factory=dict)

    def issue(self, user: str, scope: tuple[str, ...] = DEFAULT_SCOPE, expires_in: float = 3600.0,
              now: float | None = None) -> Token:
        """A new token. `expires_in` may be zero or negative: an already expired token, to test
        that a client or the server refuses it."""
        now = time.time() if now is None else now
        if len(self.tokens) >= MAX_TOKENS:
            del self.tokens[next(iter(self.tokens))]
        token = Token(secrets.token_urlsafe(32), user, scope, now, now + min(expires_in, MAX_LIFETIME))
        self.tokens[token.token] = token
        return token

    def listed(self) -> list[Token]:
        return list(self.tokens.values())

    def revoke(self, ident: str) -> bool:
        for token in list(self.tokens.values()):
            if token.id == ident:
                del self.tokens[token.token]
                return True
        return False

    def clear(self) -> int:
        count = len(self.tokens)
        self.tokens.clear()
        return count

    def check(self, presented: str, protocol: str, *, accept_expired: bool = False,
              now: float | None = None) -> TokenCheck:
        """`accept_expired`: the oauth-expired-accepted scenario (a deliberately bad server)."""
        now = time.time() if now is None else now
        token = self.tokens.get(presented)
        if token is None:
            return TokenCheck(None, "invalid_token", "unknown or revoked token")
        if token.expired(now) and not accept_expired:
            return TokenCheck(None, "invalid_token", f"token expired {round(now - token.expires)} s ago")
        if not token.allows(protocol):
            return TokenCheck(None, "insufficient_scope",
                              f"token scope {' '.join(token.scope)!r} allows neither mail nor {protocol}")
        return TokenCheck(token.user)
