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
bytecode is not), one file per import step: the command line itself, then the server, which
`serve` imports only after its early start (early.py). Only the command line does this: a program
that imports mailmodes (the pytest plugin) keeps the stdlib and its collector untouched.
"""

from __future__ import annotations

import builtins
import dataclasses
import gc
import importlib
import importlib.util
import marshal
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any

_NAME = "dataclass-functions"
_COMMAND_LINE: list[bool] = []  # set by main(): this process is the `mailmodes` command


def cache_file(step: str) -> Path | None:
    """Beside mailmodes' bytecode (which follows PYTHONPYCACHEPREFIX), or None if Python has none."""
    try:
        bytecode = importlib.util.cache_from_source(str(Path(__file__).with_name("__init__.py")))
    except NotImplementedError:  # no cache tag: bytecode is not cached at all
        return None
    tag = sys.implementation.cache_tag
    return Path(bytecode).with_name(f"{_NAME}.{step}.{tag}.bin")


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
def cached_dataclass_code(step: str) -> Iterator[None]:
    """While importing: the dataclasses module's exec() of generated source takes the compiled
    code from the step's cache file (a module global named exec shadows the builtin there)."""
    path = cache_file(step)
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


def import_quickly(name: str) -> ModuleType:
    """Import `name` with the collector off and the dataclass code cached (in the command line
    only; elsewhere a plain import), then move what it made out of the collector's way."""
    if not _COMMAND_LINE or name in sys.modules:
        return importlib.import_module(name)
    gc.disable()
    try:
        with cached_dataclass_code(name.rpartition(".")[2]):
            return importlib.import_module(name)
    finally:
        gc.freeze()
        gc.enable()


def warm() -> None:
    """Fill both caches, as `serve` would (the Docker image's build: its user cannot write them)."""
    _COMMAND_LINE.append(True)
    import_quickly("mailmodes.cli")
    import_quickly("mailmodes.app")


def main() -> int:
    """The `mailmodes` command."""
    _COMMAND_LINE.append(True)
    command_line = import_quickly("mailmodes.cli").main
    return int(command_line())
