"""The mail protocols mailmodes speaks, named once.

A leaf: it imports nothing from mailmodes, so that every module (the config check, the scenario
catalogue, the pytest plugin, the HTTP API and through it the dashboard) can take the list from
here without depending on anything else. The TLS modes are `mailmodes.tls.TlsMode`.
"""

from __future__ import annotations

PROTOCOLS: tuple[str, ...] = ("smtp", "imap", "pop3")
