"""How the command line starts (`mailmodes` and `python -m mailmodes`), fast (issue 22: start to
first banner).

Importing the server creates tens of thousands of objects (~50 dataclasses, regexes, tables) and
the cyclic collector would run many times over them for nothing: they live as long as the
process. So the import runs with the collector off, then what is there is moved out of its way
(gc.freeze) and it runs as usual on what comes next.

For each dataclass the dataclasses module writes the source of its __init__, __repr__, __eq__ ...
and compiles it: ~260 small functions, compiled anew at every start, the largest single part of
mailmodes' own import time (~15 of ~35 ms). Compiling the same text always gives the same code,
so while the server is imported the compiled code is taken from a file beside mailmodes' bytecode
(kept like a .pyc: by Python's magic number, only what this import compiled, not written when
bytecode is not). Only the command line does this: a program that imports mailmodes (the pytest
plugin) keeps the stdlib untouched.
"""

from __future__ import annotations

import builtins
import dataclasses
import gc
import importlib.util
import marshal
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType
from typing import Any

_NAME = "dataclass-functions"


def cache_file() -> Path | None:
    """Beside mailmodes' bytecode (which follows PYTHONPYCACHEPREFIX), or None if Python has none."""
    try:
        bytecode = importlib.util.cache_from_source(str(Path(__file__).with_name("__init__.py")))
    except NotImplementedError:  # no cache tag: bytecode is not cached at all
        return None
    tag = sys.implementation.cache_tag
    return Path(bytecode).with_name(f"{_NAME}.{tag}.bin")


def _load(path: Path) -> dict[str, CodeType]:
    try:
        data = path.read_bytes()
    except OSError:
        return {}
    magic = importlib.util.MAGIC_NUMBER
    if not data.startswith(magic):
        return {}
    try:
        table = marshal.loads(data[len(magic):])
    except (EOFError, ValueError, TypeError):
        return {}
    return table if isinstance(table, dict) else {}


def _save(path: Path, table: dict[str, CodeType]) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(importlib.util.MAGIC_NUMBER + marshal.dumps(table))
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)


@contextmanager
def cached_dataclass_code() -> Iterator[None]:
    """While importing: the dataclasses module's exec() of generated source takes the compiled
    code from the cache file (a module global named exec shadows the builtin there)."""
    path = cache_file()
    if path is None or hasattr(dataclasses, "exec"):
        yield
        return
    known = _load(path)
    used: dict[str, CodeType] = {}

    def cached_exec(source: Any, globals: Any = None, locals: Any = None) -> None:
        if isinstance(source, str):
            code = known.get(source)
            if code is None:
                code = compile(source, "<string>", "exec")
            used[source] = code
            source = code
        builtins.exec(source, globals, locals)

    dataclasses.exec = cached_exec  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del dataclasses.exec  # type: ignore[attr-defined]
    if used.keys() != known.keys() and not sys.dont_write_bytecode:
        _save(path, used)


def main() -> int:
    """The `mailmodes` command."""
    gc.disable()
    with cached_dataclass_code():
        from mailmodes.cli import main as command_line
    gc.freeze()
    gc.enable()
    return command_line()
