"""The SASL mechanisms that the protocols run as exchanges of bytes (no I/O, no base64, no
protocol wording), shared by SMTP, IMAP and POP3: CRAM-MD5 (RFC 2195); SCRAM-SHA-1 and
SCRAM-SHA-256 (RFC 5802, RFC 7677; the crypto is scramp's) and their -PLUS variants with channel
binding tls-server-end-point or tls-exporter (RFC 5929, RFC 9266; the binding data comes from the
connection, tls/binding.py); XOAUTH2 and OAUTHBEARER (RFC 7628) with the tokens of store.py; and
LOGIN (the draft-murchison-sasl-login mechanism) for IMAP and POP3 (SMTP's is aiosmtpd's). PLAIN
stays in each protocol, as before. Each protocol carries the challenges in its own way (334,
"+ ", "+ ") and says the outcome in its own words.

An exchange is driven by `step`: the first call gets the client's initial response (None when
it sent none), every later one the client's answer to the last Challenge, until it gives Done.
CRAM-MD5 and SCRAM cannot use [auth] accept_any: both need the account's password on this side.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailmodes.protocols.events import Connection
    from mailmodes.store import StoreInterface
    from mailmodes.store import TokenIssuer

# (account name, password) for a login name (an account's name or address), None if unknown.
Lookup = Callable[[str], "tuple[str, str] | None"]
# The account a name and password log in to, None if they do not (the store's authenticate).
Authenticate = Callable[[str, str], "str | None"]

SCRAM = ("SCRAM-SHA-1", "SCRAM-SHA-256")
PLUS = ("SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS")  # channel binding: offered inside TLS only
OAUTH = ("XOAUTH2", "OAUTHBEARER")
# RFC 4422 appendix A: the identity is the client certificate's (client_certificate listeners).
EXTERNAL = "EXTERNAL"
TLS_ONLY = (*PLUS, EXTERNAL)  # never offered in the clear: they need the TLS layer itself
_COMMON = ("CRAM-MD5", *SCRAM, *PLUS, *OAUTH, EXTERNAL)
# The mechanisms a listener may offer (`sasl_mechanisms`), per protocol, in EHLO/CAPABILITY order.
SASL_MECHANISMS = {
    "smtp": ("PLAIN", "LOGIN", *_COMMON),
    "imap": ("PLAIN", "LOGIN", *_COMMON),
    "pop3": ("PLAIN", "LOGIN", *_COMMON),
}
# Those run by exchange() (SMTP runs its LOGIN itself, with aiosmtpd).
CHALLENGE_RESPONSE = ("LOGIN", *_COMMON)
DEFAULT_SASL_MECHANISMS = {"smtp": ("PLAIN", "LOGIN"), "imap": ("PLAIN",), "pop3": ("PLAIN",)}
SCRAM_ITERATIONS = 4096  # RFC 7677 section 4: at least 4096
_NO_PASSWORD = secrets.token_hex(16)  # an unknown user's, never told to anyone


def _no_binding(kind: str) -> bytes | None:
    return None


@dataclass(frozen=True)
class SaslContext:
    """What an exchange may need of its session: the store's lookups, the host name (CRAM-MD5's
    challenge), the protocol (a token's scope), the tokens, and the TLS channel binding."""

    lookup: Lookup
    hostname: str
    protocol: str = "smtp"
    authenticate: Authenticate | None = None
    tokens: TokenIssuer | None = None
    accept_expired: bool = False  # the oauth-expired-accepted scenario
    channel_binding: Callable[[str], bytes | None] = _no_binding
    plus_offered: bool = False  # a -PLUS mechanism is on offer now (a "y" client then saw a downgrade)
    encrypted: bool = False


@dataclass(frozen=True)
class Challenge:
    """The next challenge. `secret_sent`: the secret already crossed the wire (a refused token
    before its error's dummy answer), so the session notes the attempt now: a client may leave
    instead of answering (curl does, after an XOAUTH2 error)."""

    data: bytes
    secret_sent: bool = False
    expired_token: bool = False


@dataclass(frozen=True)
class Done:
    """The end of an exchange: `account` logged in, or None; `user` is the name the client gave
    (None if it gave none), for the journal; `reason` says why it failed, for no client;
    `secret_sent`: the secret itself crossed the wire (LOGIN's password, a bearer token), not a
    proof of it; `binding`: SCRAM's gs2 channel-binding flag as sent ("n", "y", "p=<type>")."""

    account: str | None
    user: str | None
    reason: str = ""
    secret_sent: bool = False
    binding: str | None = None
    expired_token: bool = False  # XOAUTH2 / OAUTHBEARER: the token sent had expired


Step = Challenge | Done


class CramMd5:
    """RFC 2195: the server sends `<random.time@hostname>`, the client answers
    `user SP hex(HMAC-MD5(password, challenge))`. It takes no initial response."""

    secret_sent = False  # a digest, never the password

    def __init__(self, context: SaslContext) -> None:
        self.user: str | None = None
        self.lookup = context.lookup
        self.challenge = f"<{secrets.randbelow(10**12)}.{int(time.time())}@{context.hostname}>".encode()
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
        self.user = user
        found = self.lookup(user)
        if found is None:
            return Done(None, user, "unknown user")
        account, password = found
        expected = hmac.new(password.encode(), self.challenge, hashlib.md5).hexdigest()
        if not hmac.compare_digest(expected, given):
            return Done(None, user, "wrong digest")
        return Done(account, user)


def _allow_tls_exporter(scramp: Any) -> None:
    """scramp 1.5 refuses the name tls-exporter only because Python's ssl cannot give its data;
    given the data as bytes (tls/binding.py), the rest of its channel binding is the same for
    every type (RFC 5802 section 6: c= is the gs2 header and the data)."""
    names = scramp.core.CbName
    if "tls-exporter" not in names.SUPPORTED_TYPES:
        names.SUPPORTED_TYPES = names.SUPPORTED_TYPES | {"tls-exporter"}
        names.UNSUPPORTED_TYPES = names.UNSUPPORTED_TYPES - {"tls-exporter"}


class Scram:
    """RFC 5802 / 7677: client-first, then the server-first challenge, client-final, then the
    server-final (its signature) as a last challenge, which the client answers with nothing. An
    unknown user meets a made-up salt, so that it fails only at the proof, like a wrong password.

    Channel binding (section 6): a -PLUS mechanism needs gs2 flag "p=<type>" and that type's data
    from the connection; the plain one takes "n", or "y" unless a -PLUS is on offer (a client
    saying "y" there saw a list without it: a downgrade, which it must not get past)."""

    _mechanisms: dict[str, Any] = {}
    _auth_info: dict[tuple[str, str, str], tuple[bytes, bytes, bytes, int]] = {}  # PBKDF2 once per password
    secret_sent = False  # a proof, never the password

    def __init__(self, context: SaslContext, mechanism: str = "SCRAM-SHA-256") -> None:
        # scramp only when SCRAM is used: it loads ssl and asn1crypto (about 0.1 s), and the
        # session cores must not load ssl at all (tests/foundation/test_layering.py).
        import scramp

        _allow_tls_exporter(scramp)
        self._scramp = scramp
        self._error = scramp.ScramException
        self.name = mechanism
        self.base = mechanism.removesuffix("-PLUS")
        if self.base not in Scram._mechanisms:
            Scram._mechanisms[self.base] = scramp.ScramMechanism(self.base)
        self.context = context
        self.lookup = context.lookup
        self.user: str | None = None
        self.account: str | None = None
        self.binding: str | None = None
        self.server: Any = None
        self.stage = "first"

    def _auth_fn(self, user: str) -> tuple[bytes, bytes, bytes, int]:
        self.user = user
        found = self.lookup(user)
        if found is None:
            return self._info(user, _NO_PASSWORD)
        self.account = found[0]
        return self._info(found[0], found[1])

    def _info(self, account: str, password: str) -> tuple[bytes, bytes, bytes, int]:
        key = (self.base, account, password)
        info = self._auth_info.get(key)
        if info is None:
            if len(self._auth_info) > 1000:
                self._auth_info.clear()
            info = self._auth_info[key] = Scram._mechanisms[self.base].make_auth_info(
                password, iteration_count=SCRAM_ITERATIONS)
        return info

    def _done(self, reason: str = "") -> Done:
        return Done(None if reason else self.account, self.user, reason, binding=self.binding)

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
                    return self._done("an answer to the server-final message must be empty")
                return self._done()
        except (self._error, UnicodeDecodeError, ValueError, KeyError, IndexError) as error:
            return self._done(f"SCRAM: {error}")
        return self._done("SCRAM: out of turn")

    def _first(self, response: bytes) -> Step:
        message = response.decode("utf-8")
        flag = message.split(",", 1)[0]
        self.binding = flag[:40]
        bare = message.split(",", 2)[2] if message.count(",") >= 2 else ""
        if bare.startswith("n="):
            self.user = bare[2:].split(",", 1)[0].replace("=2C", ",").replace("=3D", "=")
        refused = self._binding_refused(flag)
        if refused:
            return self._done(refused)
        channel = None
        if flag.startswith("p="):
            kind = flag[2:]
            data = self.context.channel_binding(kind)
            if data is None:
                return self._done(f"no {kind} channel binding on this connection")
            channel = (kind, data)
        mechanism = Scram._mechanisms[self.base] if channel is None else self._scramp.ScramMechanism(self.name)
        self.server = mechanism.make_server(self._auth_fn, channel_binding=channel)
        self.server.set_client_first(message)
        self.stage = "final"
        return Challenge(self.server.get_server_first().encode())

    def _binding_refused(self, flag: str) -> str:
        plus = self.name.endswith("-PLUS")
        if plus and not flag.startswith("p="):
            return f"{self.name} needs channel binding (gs2 flag p=), the client sent {flag!r}"
        if plus and flag[2:] not in ("tls-server-end-point", "tls-exporter"):
            return f"channel binding type {flag[2:]!r} is not offered"
        if not plus and flag.startswith("p="):
            return f"channel binding (gs2 flag {flag!r}) needs a -PLUS mechanism, not {self.name}"
        if not plus and flag == "y" and self.context.plus_offered:
            # RFC 5802 section 6: the client supports binding and saw no -PLUS: a downgrade.
            return "gs2 flag 'y', but this server offers -PLUS: the mechanism list was tampered with"
        if flag not in ("n", "y", "p=tls-server-end-point", "p=tls-exporter"):
            return f"malformed gs2 flag {flag!r}"
        return ""


def _json_error(status: str, scope: str) -> bytes:
    """RFC 7628 section 3.2.2: the failure challenge, a JSON object (status is RFC 6750's code)."""
    return json.dumps({"status": status, "scope": scope, "schemes": "bearer"}, separators=(",", ":")).encode()


def parse_oauthbearer(message: bytes) -> tuple[str | None, dict[str, str]] | None:
    """RFC 7628 section 3.1: gs2-header kvsep *kvpair kvsep, kvpair = key "=" value kvsep. The
    authzid (a=) and the pairs, or None when malformed."""
    header, sep, rest = message.partition(b"\x01")
    if not sep or not rest.endswith(b"\x01"):
        return None
    try:
        flag, authzid, tail = header.decode("utf-8").split(",")
    except (UnicodeDecodeError, ValueError):
        return None
    if flag not in ("n", "y") or tail or (authzid and not authzid.startswith("a=")):
        return None
    user = authzid[2:].replace("=2C", ",").replace("=3D", "=") if authzid else None
    pairs = _key_values(rest[:-1].split(b"\x01")[:-1] if rest != b"\x01" else [])
    return None if pairs is None else (user, pairs)


def parse_xoauth2(message: bytes) -> tuple[str | None, dict[str, str]] | None:
    """Google's XOAUTH2: "user=" user ^A "auth=Bearer " token ^A ^A."""
    if not message.endswith(b"\x01\x01"):
        return None
    pairs = _key_values(message[:-2].split(b"\x01"))
    return None if pairs is None else (pairs.pop("user", None), pairs)


def _key_values(chunks: list[bytes]) -> dict[str, str] | None:
    """Both OAuth messages' key=value pairs (^A-separated), or None if one has no "="."""
    pairs: dict[str, str] = {}
    for pair in chunks:
        key, equals, value = pair.partition(b"=")
        if not equals:
            return None
        pairs[key.decode("ascii", "replace")] = value.decode("utf-8", "replace")
    return pairs


@dataclass
class OAuth:
    """XOAUTH2 or OAUTHBEARER (RFC 7628): one message with the bearer token (an initial
    response, or the answer to an empty challenge). A token refused (unknown, expired, wrong
    scope, for another user) gets section 3.2.2's JSON error as a challenge; the client answers
    it with a dummy (OAUTHBEARER: ^A; XOAUTH2: empty) and the exchange fails."""

    context: SaslContext
    mechanism: str
    stage: str = "first"
    user: str | None = None
    secret_sent: bool = False
    reason: str = ""
    expired: bool = False

    def step(self, response: bytes | None) -> Step:
        if self.stage == "first":
            if response is None:
                self.stage = "asked"
                return Challenge(b"")
            return self._token(response)
        if self.stage == "asked":
            return self._token(response or b"")
        if self.stage == "error":
            # The client's dummy answer (RFC 7628 section 3.2.3); anything else fails the same.
            return Done(None, self.user, self.reason, self.secret_sent, expired_token=self.expired)
        return Done(None, self.user, "out of turn", self.secret_sent, expired_token=self.expired)

    def _token(self, message: bytes) -> Step:
        parsed = parse_xoauth2(message) if self.mechanism == "XOAUTH2" else parse_oauthbearer(message)
        self.secret_sent = b"auth=" in message
        if parsed is None:
            return Done(None, None, f"malformed {self.mechanism} message", self.secret_sent)
        self.user, pairs = parsed
        auth = pairs.get("auth", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return Done(None, self.user, "no bearer token", self.secret_sent)
        tokens = self.context.tokens
        checked = (tokens.check(token.strip(), self.context.protocol, accept_expired=self.context.accept_expired)
                   if tokens is not None else None)
        account, error, reason = ((checked.account, checked.error, checked.reason) if checked is not None
                                  else (None, "invalid_token", "no token issuer"))
        self.expired = checked is not None and checked.expired
        if account is not None and self.user:
            found = self.context.lookup(self.user)
            if found is None or found[0] != account:
                account, error, reason = None, "invalid_token", f"the token is not {self.user!r}'s"
        if account is None:
            self.stage, self.reason = "error", reason
            return Challenge(_json_error(error, "mail " + self.context.protocol), self.secret_sent, self.expired)
        self.stage = "done"
        return Done(account, self.user or account, secret_sent=True, expired_token=self.expired)


@dataclass
class Login:
    """The LOGIN mechanism (draft-murchison-sasl-login-00): "Username:", then "Password:"
    challenges; an initial response is the name. The password crosses the wire as it is."""

    context: SaslContext
    stage: str = "first"
    user: str | None = None
    secret_sent: bool = False

    def step(self, response: bytes | None) -> Step:
        try:
            if self.stage == "first" and response is None:
                self.stage = "name"
                return Challenge(b"Username:")
            if self.stage in ("first", "name"):
                self.user = (response or b"").decode("utf-8")
                self.stage = "password"
                return Challenge(b"Password:")
            password = (response or b"").decode("utf-8")
        except UnicodeDecodeError:
            return Done(None, self.user, "not UTF-8", self.secret_sent or self.stage == "password")
        self.secret_sent = bool(password)
        authenticate = self.context.authenticate
        account = authenticate(self.user or "", password) if authenticate is not None and self.user else None
        return Done(account, self.user or None, "" if account else "wrong name or password", self.secret_sent)


@dataclass
class External:
    """RFC 4422 appendix A: the client's certificate says who it is; its message (the initial
    response, or the answer to an empty challenge) is an authorization identity, empty to act as
    the certificate's own. The certificate's commonName names an account (or an address of one)."""

    context: SaslContext
    stage: str = "first"
    user: str | None = None
    secret_sent = False

    def step(self, response: bytes | None) -> Step:
        if self.stage == "first" and response is None:
            self.stage = "asked"
            return Challenge(b"")
        try:
            authzid = (response or b"").decode("utf-8")
        except UnicodeDecodeError:
            return Done(None, None, "not UTF-8")
        identity = self.context.channel_binding("client-identity")
        if identity is None:
            return Done(None, authzid or None, "no client certificate")
        self.user = identity.decode("utf-8", "replace")
        found = self.context.lookup(self.user)
        if found is None:
            return Done(None, self.user, f"no account for the certificate's name {self.user!r}")
        if authzid and (self.context.lookup(authzid) or ("",))[0] != found[0]:
            return Done(None, authzid, "acting as another user is not offered")
        return Done(found[0], self.user)


Exchange = CramMd5 | Scram | OAuth | Login | External


def sasl_context(store: StoreInterface, hostname: str, protocol: str, connection: Connection, *,
                 encrypted: bool) -> SaslContext:
    """An IMAP or POP3 session's context (SMTP builds its own from aiosmtpd's state)."""
    offered = connection.listener.mechanisms_offered(encrypted=encrypted)

    def authenticate(name: str, password: str) -> str | None:
        account = store.authenticate(name, password)
        return None if account is None else account.name

    return SaslContext(store.credentials, hostname, protocol, authenticate, store.tokens,
                       connection.misbehaviour.accepts_expired_tokens, connection.channel_binding,
                       any(mechanism in offered for mechanism in PLUS), encrypted)


def exchange(mechanism: str, context: SaslContext) -> Exchange:
    """A new exchange of one of CHALLENGE_RESPONSE."""
    if mechanism == "CRAM-MD5":
        return CramMd5(context)
    if mechanism in SCRAM or mechanism in PLUS:
        return Scram(context, mechanism)
    if mechanism in OAUTH:
        return OAuth(context, mechanism)
    if mechanism == "LOGIN":
        return Login(context)
    if mechanism == EXTERNAL:
        return External(context)
    raise KeyError(mechanism)
