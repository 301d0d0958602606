"""The three mail protocols: sans-I/O session cores (imap/, pop3.py), the events they emit
(events.py), the one asyncio connection loop that drives IMAP and POP3 (connection.py), and SMTP
on aiosmtpd (smtp.py, with every aiosmtpd internal in smtp_adapter.py).

The names of the protocols are defined here, once; this module imports nothing, so that the
config check, the scenario catalogue, the pytest plugin and the HTTP API (and through it the
dashboard) can take the list without depending on anything else. The TLS modes are
`mailmodes.tls.policy.TlsMode`.
"""

from __future__ import annotations

PROTOCOLS: tuple[str, ...] = ("smtp", "imap", "pop3")
# The line our own probes open a POP3 session with (probe/marks.py): no command, so it is answered
# -ERR like any unknown one, but the POP3 session shows it in the transcript, where the journal
# finds it (an unknown line is otherwise never shown: it may be a password sent out of turn).
POP3_PROBE_MARK = "X-MAILMODES-PROBE"
