"""aiosmtpd's `SMTP.__init__` without its per-connection introspection (issue 22).

aiosmtpd builds a new SMTP object for every connection, and its __init__ walks the protocol object
and the handler with `inspect.getmembers` and `dir` to find the auth_*, handle_* and smtp_*
methods, inspects the EHLO hook's signature and formats an INFO log line: about 0.5 ms a
connection, most of a new connection's server-side cost. What it finds depends only on the two
classes, so here it is found once per (protocol class, handler class) and each connection only
binds the few auth methods it found. Everything else is set exactly as aiosmtpd 1.4 sets it;
tests/smtp/test_smtp_init.py compares the attributes with those of the stock __init__, so an
aiosmtpd that changes its __init__ fails there rather than here.

This is the only module besides smtp_adapter.py that names aiosmtpd's private attributes; only the
arguments mailmodes passes are taken (any other option needs the stock __init__).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import ssl
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn

from aiosmtpd.smtp import SMTP, _AuthMechAttr, make_loop

log = logging.getLogger("mail.log")  # aiosmtpd's logger

# (protocol class, handler class) -> ((mechanism, attribute name, on the protocol object), ...)
_AUTH_MEMBERS: dict[tuple[type, type], tuple[tuple[str, str, bool], ...]] = {}
_EHLO_HOOK_VERSIONS: dict[Any, str | None] = {}


def _auth_members(server_class: type, handler_class: type) -> tuple[tuple[str, str, bool], ...]:
    """What aiosmtpd's `inspect.getmembers(obj)` over the protocol and the handler finds named
    auth_*, in its order (the handler's win on a clash), from the classes: instance attributes
    named auth_* would be missed, which is why MailmodesSMTP names none so (failed_logins)."""
    key = (server_class, handler_class)
    members = _AUTH_MEMBERS.get(key)
    if members is None:
        found = []
        for cls, on_server in ((server_class, True), (handler_class, False)):
            for name, function in inspect.getmembers(cls):
                if name.startswith("auth_"):
                    mechanism = getattr(function, "__auth_mechanism_name__",
                                        name.replace("auth_", "").replace("__", "-"))
                    found.append((mechanism, name, on_server))
        members = _AUTH_MEMBERS[key] = tuple(found)
    return members


def _ehlo_hook_version(hook: Callable[..., Any] | None) -> str | None:
    """aiosmtpd's `_ehlo_hook_ver`: None (no hook), "old" (4 parameters) or "new" (5)."""
    if hook is None:
        return None
    key = getattr(hook, "__func__", hook)
    if key not in _EHLO_HOOK_VERSIONS:
        parameters = len(inspect.signature(hook).parameters)
        if parameters == 4:
            _stock_only("the 4-argument handle_EHLO() hook")
        if parameters != 5:
            raise RuntimeError("Unsupported EHLO Hook")
        _EHLO_HOOK_VERSIONS[key] = "new"
    return _EHLO_HOOK_VERSIONS[key]


def _stock_only(what: str) -> NoReturn:
    raise TypeError(f"{what} needs aiosmtpd's own SMTP.__init__ (it warns of its deprecation)")


def init_smtp(
    server: SMTP,
    handler: Any,
    *,
    hooks: Mapping[str, Callable[..., Any]],
    commands: Mapping[str, Any],
    hostname: str,
    ident: str,
    data_size_limit: int | None,
    timeout: float,
    authenticator: Any,
    enable_SMTPUTF8: bool,
    auth_exclude_mechanism: Iterable[str],
    tls_context: ssl.SSLContext | None,
    auth_require_tls: bool,
    auth_required: bool = False,
) -> None:
    """What `SMTP.__init__(server, handler, hostname=..., ...)` does with these arguments (and
    aiosmtpd's defaults for the rest), with `hooks` and `commands` as `_handle_hooks` and
    `_smtp_methods` (the caller's, made once per listener or class)."""
    if auth_required and not auth_require_tls:
        _stock_only("auth_required without auth_require_tls")
    self: Any = server
    self.__ident__ = ident
    self.loop = make_loop()
    asyncio.StreamReaderProtocol.__init__(
        self, asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit),
        client_connected_cb=self._cb_client_connected, loop=self.loop)
    self.event_handler = handler
    self.data_size_limit = data_size_limit
    self.enable_SMTPUTF8 = enable_SMTPUTF8
    self._decode_data = False
    self.command_size_limits.clear()  # as aiosmtpd does (its shared class-level dict)
    self.hostname = hostname
    self.tls_context = tls_context
    if tls_context:
        if tls_context.verify_mode not in {ssl.CERT_NONE, ssl.CERT_OPTIONAL}:
            log.warning("tls_context.verify_mode not in {CERT_NONE, CERT_OPTIONAL}; "
                        "this might cause client connection problems")
        elif tls_context.check_hostname:
            log.warning("tls_context.check_hostname == True; this might cause client connection problems")
    self.require_starttls = tls_context and False
    self._timeout_duration = timeout
    self._timeout_handle = None
    self._tls_handshake_okay = True
    self._tls_protocol = None
    self._original_transport = None
    self.session = None
    self.envelope = None
    self.transport = None
    self._handler_coroutine = None
    self._auth_require_tls = auth_require_tls
    self._proxy_timeout = None
    self._authenticator = authenticator
    self._auth_callback = None
    self._auth_required = auth_required
    auth_methods = {}
    for mechanism, name, on_server in _auth_members(type(server), type(handler)):
        auth_methods[mechanism] = _AuthMechAttr(getattr(server if on_server else handler, name), on_server)
    for mechanism in auth_exclude_mechanism:
        auth_methods.pop(mechanism, None)
    self._auth_methods = auth_methods
    if log.isEnabledFor(logging.INFO):  # the line aiosmtpd logs; built only when someone reads it
        log.info("Available AUTH mechanisms: " + " ".join(
            m + "(builtin)" if impl.is_builtin else m for m, impl in sorted(auth_methods.items())))
    self._handle_hooks = hooks
    self._ehlo_hook_ver = _ehlo_hook_version(hooks.get("EHLO"))
    self._smtp_methods = commands
    self._enforce_call_limit = False
