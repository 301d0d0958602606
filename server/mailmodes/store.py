"""Users, mailboxes and messages, shared by SMTP delivery, IMAP and POP3. No protocol syntax here.

The protocols, the HTTP API and seeding know the store only through the interfaces below
(StoreInterface, AccountInterface, MailboxInterface); Store, Account and Mailbox here are the
in-memory implementation, and disk_store.py the durable one built on it. Every change to mail goes
through Mailbox.append/set_flags/expunge and Account.create/delete/rename, and a caller that tells
a client a change is done awaits StoreInterface.flush() first (a no-op in memory).

Everything runs on one event loop, so no locking is needed between sessions; the only
cross-thread reader is the synchronous test API, which reads snapshots.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

INBOX = "INBOX"
# RFC 6154 special-use mailboxes that every account has, so clients that look for them find them.
SPECIAL_USE_MAILBOXES = {"Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}
HIERARCHY_DELIMITER = "/"

_uidvalidity_counter = itertools.count(int(time.time()))


class MailboxError(Exception):
    """A mailbox operation the store refuses (the message is fit to show to a client)."""


@dataclass(eq=False)
class Message:
    uid: int
    data: bytes
    internal_date: datetime
    # Immutable, replaced on change (Mailbox.set_flags): most messages share the one empty
    # frozenset instead of each holding a set the cyclic GC must scan.
    flags: frozenset[str] = frozenset()  # see NO_FLAGS
    modseq: int = 0  # RFC 7162: the mailbox's modification sequence at this message's last change

    @property
    def size(self) -> int:
        return len(self.data)

    def derived(self, key: str, compute: Callable[[bytes], object]) -> object:
        """A value computed from `data` once and kept with the message (e.g. POP3's CRLF and
        dot-stuffed wire form), so every session after the first reuses it. Safe because the
        store never changes a message's bytes; the value goes when the message goes."""
        cache: dict[str, object] = self.__dict__.setdefault("_derived", {})
        if key not in cache:
            cache[key] = compute(self.data)
        return cache[key]


NO_FLAGS: frozenset[str] = frozenset()


def _stored_flags(flags: Iterable[str]) -> frozenset[str]:
    """\\Recent is per session, never stored; no flags at all is the one shared empty set."""
    return frozenset(flags).difference(("\\Recent",)) or NO_FLAGS


Watcher = Callable[[], None]


# --- the interface every caller uses -------------------------------------------------------------
# Read-only properties where callers only read, so that an implementation may keep a plain
# attribute of a narrower type (a dict where a Mapping is promised).


class MailboxInterface(Protocol):
    """An ordered list of messages with UIDs (RFC 3501 2.3.1.1), and who to tell of changes."""

    @property
    def name(self) -> str: ...
    @property
    def special_use(self) -> str | None: ...
    @property
    def uidvalidity(self) -> int: ...
    @property
    def uidnext(self) -> int: ...
    @property
    def messages(self) -> list[Message]: ...  # UID order; read it, change it only through the methods
    @property
    def recent_uids(self) -> set[int]: ...
    @property
    def flag_changes(self) -> int: ...
    @property
    def highest_modseq(self) -> int: ...
    @property
    def expunged(self) -> dict[int, int]: ...  # expunged UID -> the mod-sequence of its expunge (QRESYNC)
    def append(self, data: bytes, flags: Iterable[str] = (), internal_date: datetime | None = None) -> Message: ...
    def by_uid(self, uid: int) -> Message | None: ...
    def expunge(self, uids: Iterable[int]) -> list[int]: ...
    def set_flags(self, message: Message, flags: Iterable[str]) -> None: ...
    def claim_recent(self) -> set[int]: ...
    def watch(self, watcher: Watcher) -> Callable[[], None]: ...
    def changed(self) -> None: ...


class AccountInterface(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def addresses(self) -> tuple[str, ...]: ...
    @property
    def mailboxes(self) -> Mapping[str, MailboxInterface]: ...
    @property
    def subscriptions(self) -> set[str]: ...  # names; IMAP SUBSCRIBE changes the set itself
    @property
    def inbox(self) -> MailboxInterface: ...
    def normalise(self, name: str) -> str: ...
    def mailbox(self, name: str) -> MailboxInterface | None: ...
    def create(self, name: str) -> MailboxInterface: ...
    def delete(self, name: str) -> None: ...
    def rename(self, old: str, new: str) -> None: ...


# Told of every message the store takes in through deliver() or add_message(), after it is in
# its mailbox: how the HTTP API's long poll wakes without polling. Plain callables, so the store
# stays free of asyncio; hooks run synchronously on the store's loop and must not block.
ArrivalHook = Callable[[AccountInterface, MailboxInterface, Message], None]


class StoreInterface(Protocol):
    @property
    def accounts(self) -> Mapping[str, AccountInterface]: ...
    @property
    def local_domains(self) -> set[str]: ...
    @property
    def catch_all(self) -> str | None: ...
    @property
    def captured(self) -> list[CapturedMessage]: ...
    @property
    def arrival_hooks(self) -> list[ArrivalHook]: ...
    @property
    def durable(self) -> bool: ...  # whether flush() has anything to do
    def authenticate(self, name: str, password: str) -> AccountInterface | None: ...
    def credentials(self, name: str) -> tuple[str, str] | None: ...  # (account, password), for CRAM/SCRAM
    @property
    def tokens(self) -> TokenIssuer: ...  # the OAuth bearer tokens (XOAUTH2, OAUTHBEARER)
    def is_local_domain(self, domain: str) -> bool: ...
    def recipient(self, address: str) -> AccountInterface | None: ...
    def deliver(self, accounts: Iterable[AccountInterface], data: bytes) -> None: ...
    def add_message(self, account: AccountInterface, mailbox: MailboxInterface, data: bytes,
                    flags: Iterable[str] = (), internal_date: datetime | None = None) -> Message: ...
    def capture(self, sender_account: str, mail_from: str, recipients: Iterable[str], data: bytes) -> None: ...
    def lock_maildrop(self, name: str) -> bool: ...
    def unlock_maildrop(self, name: str) -> None: ...
    async def flush(self) -> None:
        """Return once every change made so far is on stable storage. Await it before telling a
        client a change is done (SMTP's 250 after DATA, IMAP's OK, POP3's QUIT)."""
        ...


# --- the in-memory implementation --------------------------------------------------------------


class Mailbox:
    """An ordered list of messages with UIDs, and the watchers to tell when it changes.

    Watchers are called synchronously after each change; an IMAP session in IDLE uses one to
    wake its connection up, and computes what changed by comparing with its own view.
    """

    def __init__(self, name: str, special_use: str | None = None, uidvalidity: int | None = None) -> None:
        self.name = name
        self.special_use = special_use
        # A durable store passes one kept from before; in memory each mailbox object gets a new one.
        self.uidvalidity = next(_uidvalidity_counter) if uidvalidity is None else uidvalidity
        self.uidnext = 1
        self.messages: list[Message] = []
        self.recent_uids: set[int] = set()
        # Counts flag changes, so that a session can tell without looking at every message
        # that none changed (a delivery wakes every IDLE session of the mailbox).
        self.flag_changes = 0
        self._watchers: list[Watcher] = []
        # RFC 7162 (CONDSTORE): bumped by every change, whoever makes it (IMAP, POP3's DELE at
        # QUIT, the HTTP API), since every change goes through append/set_flags/expunge here.
        self.highest_modseq = 1
        # RFC 7162 3.2 (QRESYNC): each expunged UID with the mod-sequence of its expunge, so a
        # client back after a while is told what vanished since (VANISHED (EARLIER)). Only
        # expunge() below writes it.
        self.expunged: dict[int, int] = {}

    def append(
        self, data: bytes, flags: Iterable[str] = (), internal_date: datetime | None = None
    ) -> Message:
        message = Message(
            uid=self.uidnext,
            data=bytes(data),
            internal_date=internal_date or datetime.now(timezone.utc),
            flags=_stored_flags(flags),
            modseq=self._next_modseq(),
        )
        self.uidnext += 1
        self.messages.append(message)
        self.recent_uids.add(message.uid)
        self.changed()
        return message

    def by_uid(self, uid: int) -> Message | None:
        # Messages are kept in UID order, so a binary search would do; lists stay small here.
        for message in self.messages:
            if message.uid == uid:
                return message
        return None

    def expunge(self, uids: Iterable[int]) -> list[int]:
        """Remove the messages with these UIDs; return the UIDs actually removed, ascending."""
        wanted = set(uids)
        removed = [m.uid for m in self.messages if m.uid in wanted]
        if removed:
            self.messages = [m for m in self.messages if m.uid not in wanted]
            self.recent_uids -= wanted
            modseq = self._next_modseq()
            self.expunged.update(dict.fromkeys(removed, modseq))  # QRESYNC tombstones (see __init__)
            self.changed()
        return removed

    def set_flags(self, message: Message, flags: Iterable[str]) -> None:
        new = _stored_flags(flags)
        if new != message.flags:
            message.flags = new
            message.modseq = self._next_modseq()
            self.flag_changes += 1
            self.changed()

    def _next_modseq(self) -> int:
        self.highest_modseq += 1
        return self.highest_modseq

    def claim_recent(self) -> set[int]:
        """The UIDs that are \\Recent for the caller; no later session sees them as recent."""
        claimed, self.recent_uids = self.recent_uids, set()
        return claimed

    def watch(self, watcher: Watcher) -> Callable[[], None]:
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None

    def changed(self) -> None:
        for watcher in list(self._watchers):
            watcher()


class Account:
    def __init__(self, name: str, password: str, addresses: Iterable[str]) -> None:
        self.name = name
        self.password = password
        self.addresses = tuple(a.lower() for a in addresses)
        self.mailboxes: dict[str, Mailbox] = {INBOX: self._new_mailbox(INBOX)}
        for mailbox_name, use in SPECIAL_USE_MAILBOXES.items():
            if self._makes_standard(mailbox_name):
                self.mailboxes[mailbox_name] = self._new_mailbox(mailbox_name, use)
        # Names, not mailboxes: a subscription outlives its mailbox (RFC 3501 6.3.9: the server
        # must not remove it unilaterally; LIST-EXTENDED shows it as \NonExistent). The built-in
        # mailboxes start subscribed; created ones do not (RFC 3501 6.3.3 and 6.3.6 are apart).
        self.subscriptions: set[str] = set(self.mailboxes)

    def _makes_standard(self, name: str) -> bool:
        """Whether a new account starts with this special-use mailbox (a kept one: see the disk store)."""
        return True

    def _new_mailbox(self, name: str, special_use: str | None = None) -> Mailbox:
        """Every mailbox this account makes is made here (the disk store makes its own kind)."""
        return Mailbox(name, special_use)

    @property
    def inbox(self) -> Mailbox:
        return self.mailboxes[INBOX]

    @staticmethod
    def normalise(name: str) -> str:
        """INBOX is case-insensitive (RFC 3501 section 5.1); every other name is as given."""
        return INBOX if name.upper() == INBOX else name

    def mailbox(self, name: str) -> Mailbox | None:
        return self.mailboxes.get(self.normalise(name))

    def create(self, name: str) -> Mailbox:
        name = self.normalise(name.rstrip(HIERARCHY_DELIMITER))
        if not name or name in self.mailboxes:
            raise MailboxError("Mailbox already exists")
        # RFC 3501 6.3.3: create the superior hierarchy too.
        parts = name.split(HIERARCHY_DELIMITER)
        for depth in range(1, len(parts)):
            parent = HIERARCHY_DELIMITER.join(parts[:depth])
            if parent not in self.mailboxes:
                self.mailboxes[parent] = self._new_mailbox(parent)
        mailbox = self.mailboxes[name] = self._new_mailbox(name)
        return mailbox

    def delete(self, name: str) -> None:
        name = self.normalise(name)
        if name == INBOX:
            raise MailboxError("Cannot delete INBOX")
        mailbox = self.mailboxes.get(name)
        if mailbox is None:
            raise MailboxError("No such mailbox")
        prefix = name + HIERARCHY_DELIMITER
        if any(other.startswith(prefix) for other in self.mailboxes):
            # RFC 3501 6.3.4: a name with inferiors may not be removed with its hierarchy; keeping
            # it simple and strict, we refuse rather than leave a \Noselect shell.
            raise MailboxError("Mailbox has inferior hierarchical names")
        del self.mailboxes[name]
        mailbox.expunge([m.uid for m in mailbox.messages])

    def rename(self, old: str, new: str) -> None:
        old, new = self.normalise(old), self.normalise(new)
        if old not in self.mailboxes:
            raise MailboxError("No such mailbox")
        if new in self.mailboxes:
            raise MailboxError("Mailbox already exists")
        if old == INBOX:
            # RFC 3501 6.3.5: renaming INBOX moves its messages and leaves INBOX empty.
            target = self.create(new)
            inbox = self.inbox
            for message in inbox.messages:
                target.append(message.data, message.flags, message.internal_date)
            inbox.expunge([m.uid for m in inbox.messages])
            return
        moved = [n for n in self.mailboxes if n == old or n.startswith(old + HIERARCHY_DELIMITER)]
        for name in moved:
            mailbox = self.mailboxes.pop(name)
            mailbox.name = new + name[len(old) :]
            self.mailboxes[mailbox.name] = mailbox
            if name in self.subscriptions:  # the subscription follows the mailbox, as in Dovecot
                self.subscriptions.discard(name)
                self.subscriptions.add(mailbox.name)
        parts = new.split(HIERARCHY_DELIMITER)
        for depth in range(1, len(parts)):
            parent = HIERARCHY_DELIMITER.join(parts[:depth])
            if parent not in self.mailboxes:
                self.mailboxes[parent] = self._new_mailbox(parent)


@dataclass(frozen=True)
class CapturedMessage:
    """Mail an authenticated client sent to an address that is not local: kept, never relayed."""

    sender_account: str
    mail_from: str
    recipients: tuple[str, ...]
    data: bytes
    received: datetime


class Store:
    def __init__(self, catch_all: str | None = None) -> None:
        self.accounts: dict[str, Account] = {}
        self._by_address: dict[str, Account] = {}
        self.local_domains: set[str] = set()
        self.catch_all = catch_all
        self.captured: list[CapturedMessage] = []
        self._locked_maildrops: set[str] = set()
        self.arrival_hooks: list[ArrivalHook] = []
        self.accept_any = False  # [auth] accept_any: any name and password logs in (app tests only)
        self.tokens = TokenIssuer()  # issued by POST /api/tokens; in memory even in a durable store

    durable = False

    async def flush(self) -> None:
        """Nothing to wait for: memory is all there is."""

    def _new_account(self, name: str, password: str, addresses: Iterable[str]) -> Account:
        return Account(name, password, addresses)

    def add_account(self, name: str, password: str, addresses: Iterable[str]) -> Account:
        account = self._new_account(name, password, addresses)
        self.accounts[name] = account
        for address in account.addresses:
            self._by_address[address] = account
            self.local_domains.add(address.rpartition("@")[2])
        return account

    def authenticate(self, name: str, password: str) -> Account | None:
        account = self.accounts.get(name) or self._by_address.get(name.lower())
        if self.accept_any and name:
            if account is None:
                # No addresses: its name's domain must not become local, or mail to it would stop
                # being captured.
                account = self.accounts[name] = self._new_account(name, password, ())
            return account
        if account is None or account.password != password:
            return None
        return account

    def credentials(self, name: str) -> tuple[str, str] | None:
        """(account name, password) for a login name (an account's name or address), for the
        challenge-response mechanisms (protocols/sasl.py), which need the password itself."""
        account = self.accounts.get(name) or self._by_address.get(name.lower())
        return None if account is None else (account.name, account.password)

    def is_local_domain(self, domain: str) -> bool:
        return domain.lower() in self.local_domains

    def recipient(self, address: str) -> Account | None:
        """The account that receives mail for `address`, or None (unknown or foreign)."""
        address = address.lower()
        account = self._by_address.get(address)
        local, at, domain = address.rpartition("@")
        if account is None and "+" in local:
            # RFC 5233 subaddress: alice+anything@ reaches alice, so each test can have its own address.
            account = self._by_address.get(local.partition("+")[0] + at + domain)
        if account is None and self.catch_all and self.is_local_domain(address.rpartition("@")[2]):
            account = self.accounts.get(self.catch_all)
        return account

    def deliver(self, accounts: Iterable[AccountInterface], data: bytes) -> None:
        """Append the same bytes to each account's INBOX (once per account)."""
        for account in dict.fromkeys(accounts):
            self._arrived(account, account.inbox, account.inbox.append(data))

    def add_message(self, account: AccountInterface, mailbox: MailboxInterface, data: bytes, flags: Iterable[str] = (),
                    internal_date: datetime | None = None) -> Message:
        """Put a message straight into a mailbox (seeding), telling the arrival hooks like delivery does."""
        message = mailbox.append(data, flags, internal_date)
        self._arrived(account, mailbox, message)
        return message

    def _arrived(self, account: AccountInterface, mailbox: MailboxInterface, message: Message) -> None:
        for hook in list(self.arrival_hooks):
            hook(account, mailbox, message)

    def capture(self, sender_account: str, mail_from: str, recipients: Iterable[str], data: bytes) -> None:
        self.captured.append(
            CapturedMessage(sender_account, mail_from, tuple(recipients), bytes(data), datetime.now(timezone.utc))
        )

    def lock_maildrop(self, name: str) -> bool:
        """Take the POP3 maildrop lock (RFC 1939 section 8); False if another session holds it."""
        if name in self._locked_maildrops:
            return False
        self._locked_maildrops.add(name)
        return True

    def unlock_maildrop(self, name: str) -> None:
        self._locked_maildrops.discard(name)


if TYPE_CHECKING:  # the memory implementation is one (mypy checks it here)
    _memory: StoreInterface = Store()


# --- OAuth bearer tokens ---------------------------------------------------------------------
# OAuth 2.0 bearer tokens for XOAUTH2 and OAUTHBEARER (RFC 7628), issued by the HTTP API
# (POST /api/tokens) for a user, a scope and a lifetime. The server is its own authorization
# server: a token is a random string it remembers, checked by lookup, never a JWT to verify.
# 
# A token's scope is a list of words; the mail protocols accept a token whose scope has `mail`
# or the protocol's own name (`smtp`, `imap`, `pop3`). Tokens live in memory only: a restart, or
# POST /api/reset, forgets them.
# (Here rather than in a module of their own: the store loads no other mailmodes module.)

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
    expired: bool = False  # the token had expired (accepted only by oauth-expired-accepted)


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
        expired = token.expired(now)
        if expired and not accept_expired:
            return TokenCheck(None, "invalid_token", f"token expired {round(now - token.expires)} s ago", True)
        if not token.allows(protocol):
            return TokenCheck(None, "insufficient_scope",
                              f"token scope {' '.join(token.scope)!r} allows neither mail nor {protocol}", expired=expired)
        return TokenCheck(token.user, expired=expired)
