"""The protocol cores stay sans-I/O: the IMAP and POP3 sessions (and what they are made of) load
neither asyncio nor ssl nor the journal. They tell the journal what they read only through the
notes of protocols/events.py."""

from __future__ import annotations

import subprocess
import sys

CORES = ("mailmodes.protocols.pop3", "mailmodes.protocols.imap.session", "mailmodes.protocols.imap.parser",
         "mailmodes.protocols.events")
FORBIDDEN = ("asyncio", "ssl", "_ssl", "mailmodes.record", "mailmodes.protocols.connection",
             "mailmodes.tls.handshake", "aiosmtpd")


def test_session_cores_import_no_io_and_no_journal() -> None:
    # A fresh interpreter: pytest itself has loaded asyncio long before.
    program = (f"import sys\nfor name in {CORES!r}: __import__(name)\n"
               f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} or m.startswith({FORBIDDEN!r})))")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", result.stdout
