"""The cache of compiled dataclass functions that `python -m mailmodes` starts with (startup.py).

It must give dataclasses that behave exactly as without it, be written where bytecode goes (and
not when bytecode is not written), survive a damaged file, and leave the dataclasses module as it
found it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mailmodes import startup

ROOT = Path(__file__).resolve().parents[2]


def define() -> type:
    @dataclasses.dataclass(frozen=True)
    class Point:
        x: int
        y: int = 0
        tags: tuple[str, ...] = ()

    return Point


def test_classes_made_with_the_cache_behave_as_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(startup, "cache_file", lambda step: tmp_path / "cache.bin")
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    plain = define()
    for _ in range(2):  # the first run fills the file, the second takes the code from it
        with startup.cached_dataclass_code("test"):
            cached = define()
        assert not hasattr(dataclasses, "exec")  # the stdlib's own exec again
        assert (tmp_path / "cache.bin").read_bytes().startswith(importlib.util.MAGIC_NUMBER)
        a, b = cached(1, 2, ("t",)), plain(1, 2, ("t",))
        assert repr(a).replace("cached", "plain") == repr(b).replace("cached", "plain")
        assert a == cached(1, 2, ("t",)) and a != cached(1) and hash(a) == hash(cached(1, 2, ("t",)))
        assert [f.name for f in dataclasses.fields(cached)] == ["x", "y", "tags"]
        with pytest.raises(dataclasses.FrozenInstanceError):
            a.x = 3


def test_a_damaged_file_is_ignored_and_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cache.bin"
    path.write_bytes(importlib.util.MAGIC_NUMBER + b"\x00not marshal")
    monkeypatch.setattr(startup, "cache_file", lambda step: path)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    with startup.cached_dataclass_code("test"):
        point = define()
    assert point(1).y == 0
    assert startup._load(path)  # rewritten, readable


def run_version(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "mailmodes", "--version"], env=env, check=True, capture_output=True)


def test_python_m_mailmodes_writes_it_beside_its_bytecode(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "server"), "PYTHONPYCACHEPREFIX": str(tmp_path / "pyc")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    run_version({**env, "PYTHONDONTWRITEBYTECODE": "1"})
    written = list((tmp_path / "pyc").rglob("dataclass-functions.*.bin")) if (tmp_path / "pyc").exists() else []
    assert written == []  # no bytecode written, no cache either
    run_version(env)
    (cache,) = (tmp_path / "pyc").rglob("dataclass-functions.*.bin")  # under the bytecode prefix
    assert cache.name.startswith("dataclass-functions.cli.")  # --version imports the command line only
    assert cache.with_name("__init__." + sys.implementation.cache_tag + ".pyc").exists()  # beside mailmodes' own
    assert len(startup._load(cache)) > 30  # the configuration's dataclasses' functions
    before = cache.stat().st_mtime_ns
    run_version(env)
    assert cache.stat().st_mtime_ns == before  # nothing new to add: not rewritten
