"""`mailmodes serve` imports what its listeners need and no more (issue 22: start to first banner).

IMAP, POP3, the durable store, seeds and audit mode were most of serve's import time; a real
`mailmodes serve` with only SMTP listeners must answer its first command without importing them,
and a config that uses them still gets them.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAZY = ("mailmodes.protocols.imap.session", "mailmodes.protocols.pop3", "mailmodes.disk_store", "mailmodes.seed",
        "mailmodes.scenarios.audit", "mailmodes.protocols.connection", "mailbox")

# Run `serve` in this interpreter, then print the modules it had loaded once it answered a command.
PROBE = """
import os, runpy, signal, sys, threading
def report():
    sys.stdin.readline()  # the test had the server's first reply
    print("modules", " ".join(sorted(sys.modules)), flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
threading.Thread(target=report, daemon=True).start()
sys.argv = ["mailmodes", "serve", "--config", sys.argv[1]]
runpy.run_module("mailmodes", run_name="__main__")
"""


def loaded_once_serving(tmp_path: Path, certs_dir: Path, listeners: str) -> set[str]:
    config = tmp_path / "serve.toml"
    config.write_text(f'hostname = "mail.example.test"\nhost = "127.0.0.1"\n[certs]\ndir = "{certs_dir}"\n'
                      '[[users]]\nname = "alice"\npassword = "pw"\naddresses = ["alice@example.test"]\n' + listeners)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
    process = subprocess.Popen([sys.executable, "-c", PROBE, str(config)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert process.stdout is not None and process.stdin is not None
        port = None
        for line in process.stdout:
            if port is None and (match := re.search(r"127\.0\.0\.1:(\d+)", line)):
                port = int(match.group(1))
            if line.strip() == "ready":
                break
        assert port is not None
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock, sock.makefile("rb") as replies:
            assert replies.readline()[:4] in (b"220 ", b"* OK")  # the greeting (SMTP's may be early.py's)
            sock.sendall(b"a NOOP\r\n")  # answered by the server itself, whatever the protocol
            assert replies.readline()[:1] in (b"5", b"a", b"-")
        process.stdin.write("\n")
        process.stdin.flush()
        modules = next(line for line in process.stdout if line.startswith("modules "))
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()  # and closes both pipes
    return set(modules.split()[1:])


def test_smtp_only_serve_leaves_imap_pop3_store_seeds_and_audit_unimported(tmp_path: Path, certs_dir: Path) -> None:
    loaded = loaded_once_serving(tmp_path, certs_dir, '[[listeners]]\nname = "smtp"\nprotocol = "smtp"\nport = 0\n'
                                                      'tls = "plaintext"\nrole = "mta"\n')
    assert "mailmodes.protocols.smtp" in loaded
    assert not loaded & set(LAZY), sorted(loaded & set(LAZY))


def test_imap_listener_still_gets_its_modules(tmp_path: Path, certs_dir: Path) -> None:
    loaded = loaded_once_serving(tmp_path, certs_dir, '[[listeners]]\nname = "imap"\nprotocol = "imap"\nport = 0\n'
                                                      'tls = "plaintext"\n')
    assert {"mailmodes.protocols.imap.session", "mailmodes.protocols.connection"} <= loaded



# `python -m mailmodes --version` with the cyclic collector watched from before the package is
# imported: the collections that ran while mailmodes.cli was being imported (it is in sys.modules
# from the start of its import, and has `main` only at its end), then the collector's state.
GC_PROBE = """
import gc, runpy, sys
during_import = []
def watch(phase, info):
    cli = sys.modules.get("mailmodes.cli")
    if phase == "start" and cli is not None and not hasattr(cli, "main"):
        during_import.append(info["generation"])
gc.callbacks.append(watch)
sys.argv = ["mailmodes", "--version"]
try:
    runpy.run_module("mailmodes", run_name="__main__")
except SystemExit:
    pass
print(len(during_import), gc.isenabled(), gc.get_freeze_count() > 0)
"""


def test_python_m_mailmodes_imports_without_collecting_then_collects_again() -> None:
    # Importing the server makes tens of thousands of permanent objects: the collector running over
    # them is start-up time for nothing (issue 22: start to first banner). After the import it is
    # on again, with those objects frozen out of its way.
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server")}
    done = subprocess.run([sys.executable, "-c", GC_PROBE], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-3:] == ["0", "True", "True"], done.stdout
