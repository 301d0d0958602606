"""Where the test CA and the server certificate live, and whether they must be (re)made.

On first start a CA and a leaf for the hostname (plus localhost, 127.0.0.1, ::1) are made in the
certs dir (pki.py) and reused afterwards. A small fingerprint record next to them says what was
made and until when pki.py found it fit to reuse; while the files still match it, starting a
server needs no certificate parsing at all. pki.py knows nothing of this module: it is imported
only when that record does not answer, because it loads cryptography.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one server per certs folder there
    fcntl = None  # type: ignore[assignment]

RECORD = "certs.json"


@dataclass(frozen=True)
class CertPaths:
    ca_file: Path
    cert_file: Path
    key_file: Path


def server_names(hostname: str) -> list[str]:
    """Every name the default leaf answers to: the configured host, localhost, and loopback IPs."""
    return list(dict.fromkeys([hostname, "localhost", "127.0.0.1", "::1"]))


def ensure_certificates(certs_dir: Path, hostname: str) -> CertPaths:
    """Create the CA and the leaf if missing, stale or made for another host name; reuse otherwise."""
    certs_dir.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(certs_dir / "ca.pem", certs_dir / "server.pem", certs_dir / "server.key")
    names = server_names(hostname)
    if _record(paths, names) == _read_record(certs_dir):
        return paths
    with _exclusive(certs_dir):
        # Another process sharing the folder (a second server, a pytest worker, a container on the
        # same volume) may have made them while this one waited: a CA from one and a leaf from the
        # other would never verify.
        if _record(paths, names) == _read_record(certs_dir):
            return paths
        from mailmodes.tls import pki  # only now: see pki.py

        reuse_until = pki.make_server_certificates(paths.ca_file, paths.cert_file, paths.key_file, hostname, names)
        (certs_dir / RECORD).write_text(json.dumps({**_record(paths, names), "reuse_until": reuse_until.isoformat()}))
    return paths


@contextmanager
def _exclusive(certs_dir: Path) -> Iterator[None]:
    """Hold the certs folder's lock file (an advisory lock, where the system has fcntl)."""
    with open(certs_dir / ".lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _record(paths: CertPaths, names: list[str]) -> dict[str, object]:
    digests: dict[str, str | None] = {}
    for path in (paths.ca_file, paths.cert_file, paths.key_file, paths.ca_file.with_name("ca.key")):
        try:
            digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digests[path.name] = None
    return {"names": names, "sha256": digests}


def _read_record(certs_dir: Path) -> dict[str, object] | None:
    """The fingerprint record, or None when it is missing, unreadable or past its reuse time."""
    try:
        record = json.loads((certs_dir / RECORD).read_text())
        reuse_until = dt.datetime.fromisoformat(record.pop("reuse_until"))
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None
    if reuse_until < dt.datetime.now(dt.timezone.utc):
        return None
    return record  # type: ignore[no-any-return]
