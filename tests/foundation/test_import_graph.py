"""How the modules of mailmodes depend on each other, read from the source.

`import_graph()` parses every module under server/mailmodes with `ast` and collects the imports it
writes, at the top and inside functions alike: a lazy import still ties two modules together, it
only hides the tie until that function runs. Imports under `if TYPE_CHECKING:` never run, so they
are left out. A cycle means neither module can be understood, tested or changed without the
other, so there is none.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "server"
PACKAGE = "mailmodes"


def module_files(source: Path = SOURCE, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> its file, for the package and every module and package inside it."""
    modules: dict[str, Path] = {}
    for path in sorted((source / package).rglob("*.py")):
        parts = path.relative_to(source).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST, type_checking: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under `node` that can run, and with `type_checking` also those in
    the body of `if TYPE_CHECKING:`."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
        children: list[ast.AST] = list(node.orelse)
    else:
        children = list(ast.iter_child_nodes(node))
    for child in children:
        yield from _import_nodes(child, type_checking)


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The module `name` loads, or its closest package in `modules` (a name inside a module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _targets(node: ast.Import | ast.ImportFrom, module: str, modules: dict[str, Path]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            target = _known(alias.name, modules)
            if target is not None:
                yield target
        return
    if node.level:
        # A package's __init__ is its own anchor for "."; a module's anchor is its package.
        anchor = module if modules[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            anchor = anchor.rpartition(".")[0]
        base = f"{anchor}.{node.module}" if node.module else anchor
    else:
        base = node.module or ""
    for alias in node.names:
        # `from mailmodes.scenarios import badcerts` loads the module badcerts; `from mailmodes.x import y` loads x.
        target = _known(f"{base}.{alias.name}", modules)
        if target is not None:
            yield target


def import_graph(source: Path = SOURCE, package: str = PACKAGE, *, type_checking: bool = False) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (itself excluded), for every module;
    `type_checking=True` adds the imports made only for annotations."""
    modules = module_files(source, package)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        graph[module] = {target for node in _import_nodes(tree, type_checking)
                         for target in _targets(node, module, modules)}
        graph[module].discard(module)
    return graph


def _path(graph: dict[str, set[str]], start: str, goal: str, within: set[str]) -> list[str]:
    """A shortest import path from start to goal through `within` (breadth first)."""
    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        if current == goal:
            path: list[str] = []
            step: str | None = current
            while step is not None:
                path.append(step)
                step = came_from[step]
            return path[::-1]
        for following in sorted(graph[current] & within):
            if following not in came_from:
                came_from[following] = current
                queue.append(following)
    raise AssertionError(f"no path from {start} to {goal}")


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm: the groups of modules that all reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph[module]):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == module:
                    break
            groups.append(group)

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through every import edge that lies on a cycle, each as
    [a, b, ..., a] starting at its alphabetically first module, without repeats."""
    cycles: set[tuple[str, ...]] = set()
    for group in _strongly_connected(graph):
        if len(group) < 2:
            continue
        for module in group:
            for imported in graph[module] & group:
                loop = [module, *_path(graph, imported, module, group)[:-1]]
                first = loop.index(min(loop))
                cycles.add(tuple(loop[first:] + loop[:first]))
    return [[*cycle, cycle[0]] for cycle in sorted(cycles)]


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from pkg import top\n")
    (package / "top.py").write_text(
        "from typing import TYPE_CHECKING\nimport json\nfrom . import helper\n"
        "if TYPE_CHECKING:\n    from pkg.sub import typed\nelse:\n    import pkg.sub.runtime\n"
        "def later():\n    from .sub.deep import name\n")
    for name in ("helper", "sub/__init__", "sub/typed", "sub/runtime", "sub/deep"):
        (package / f"{name}.py").write_text("")
    (package / "sub" / "deep.py").write_text("from .. import helper\nfrom ..top import later\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg"] == {"pkg.top"}
    assert graph["pkg.top"] == {"pkg.helper", "pkg.sub.runtime", "pkg.sub.deep"}
    assert graph["pkg.sub.deep"] == {"pkg.helper", "pkg.top"}
    assert import_cycles(graph) == [["pkg.sub.deep", "pkg.top", "pkg.sub.deep"]]
    assert "pkg.sub.typed" in import_graph(tmp_path, "pkg", type_checking=True)["pkg.top"]


def test_no_module_imports_itself_back_through_others() -> None:
    cycles = import_cycles(import_graph())
    if cycles:
        pytest.fail("import cycles, one per line (break each by moving what both sides need to where "
                    "the dependency points one way):\n" + "\n".join(" -> ".join(cycle) for cycle in cycles),
                    pytrace=False)


def test_the_http_api_knows_the_mail_server_only_by_its_shape() -> None:
    # app.py starts the API; the API reads the server through http.MailState, even in annotations.
    assert "mailmodes.app" not in import_graph(type_checking=True)["mailmodes.web.server"]


def test_the_leaf_names_import_nothing_of_mailmodes() -> None:
    assert import_graph(type_checking=True)["mailmodes.protocols"] == set()


# --- layers ------------------------------------------------------------------------------------
# The sans-I/O cores: bytes in, bytes and events out. They must be testable (and importable) with
# no event loop, no socket and no TLS library behind them.
CORES = ("mailmodes.protocols.imap.session", "mailmodes.protocols.imap.parser", "mailmodes.protocols.pop3",
         "mailmodes.protocols.events", "mailmodes.protocols.smtp_hotpaths", "mailmodes.tls.policy",
         "mailmodes.scenarios.misbehaviour", "mailmodes.store")
IO_MODULES = ("mailmodes.protocols.connection", "mailmodes.protocols.smtp", "mailmodes.protocols.smtp_adapter",
              "mailmodes.tls.handshake", "mailmodes.tls.contexts", "mailmodes.record", "mailmodes.web",
              "mailmodes.probe", "mailmodes.app", "mailmodes.cli")
IO_LIBRARIES = {"asyncio", "ssl", "socket", "selectors", "aiosmtpd", "aiohttp", "cryptography", "trustme"}
# Which protocol implementations each outer layer may know: none. The recorder learns what a
# session knows through the events (protocols.events), the API through the store and journal.
PROTOCOL_IMPLEMENTATIONS = ("mailmodes.protocols.imap", "mailmodes.protocols.pop3", "mailmodes.protocols.smtp",
                            "mailmodes.protocols.smtp_adapter", "mailmodes.protocols.connection")


def external_imports(source: Path = SOURCE, package: str = PACKAGE) -> dict[str, set[str]]:
    """Module -> the top-level names of what it imports from outside the package (at run time)."""
    modules = module_files(source, package)
    found: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names: set[str] = set()
        for node in _import_nodes(tree, type_checking=False):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif not node.level and node.module:
                names.add(node.module.split(".")[0])
        found[module] = names - {package, "__future__"}
    return found


def with_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph plus an edge from each module to its package: Python runs a package's __init__
    before any module in it, so importing a module loads its package too."""
    return {module: imported | ({module.rpartition(".")[0]} if "." in module else set())
            for module, imported in graph.items()}


def loaded_by(graph: dict[str, set[str]], module: str) -> set[str]:
    """Every module of the package that importing `module` loads (`graph` from with_packages)."""
    seen: set[str] = set()
    pending = [module]
    while pending:
        current = pending.pop()
        if current not in seen:
            seen.add(current)
            pending.extend(graph.get(current, ()))
    return seen


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def layer_violations(graph: dict[str, set[str]], external: dict[str, set[str]]) -> list[str]:
    """Each broken layering rule, as one line naming the module and what it must not load."""
    problems: list[str] = []
    graph_loading = with_packages(graph)
    for core in CORES:
        loaded = loaded_by(graph_loading, core)
        for module in sorted(m for m in loaded if _within(m, IO_MODULES)):
            problems.append(f"{core} (a sans-I/O core) loads {module}: "
                            + " -> ".join(_path(graph_loading, core, module, loaded)))
        libraries = set().union(*(external.get(m, set()) for m in loaded)) & IO_LIBRARIES
        if libraries:
            problems.append(f"{core} (a sans-I/O core) loads {', '.join(sorted(libraries))}")
    for module in sorted(loaded_by(graph_loading, "mailmodes.store")):
        if module.startswith("mailmodes.") and module != "mailmodes.store":
            problems.append(f"mailmodes.store loads {module}: the store knows no protocol, record or face")
    for outer in ("mailmodes.record", "mailmodes.web", "mailmodes.probe", "mailmodes.scenarios",
                  "mailmodes.tls"):
        for module in sorted(m for m in graph if _within(m, (outer,))):
            for imported in sorted(graph[module]):
                if _within(imported, PROTOCOL_IMPLEMENTATIONS):
                    problems.append(f"{module} imports {imported}: {outer} knows no protocol implementation")
    for module in sorted(graph):
        if "mailmodes.app" in graph[module] and module not in ("mailmodes.cli", "mailmodes.pytest_plugin"):
            problems.append(f"{module} imports mailmodes.app: only the command line and the pytest plugin start it")
    return problems


def test_the_layers_hold() -> None:
    problems = layer_violations(import_graph(), external_imports())
    if problems:
        pytest.fail("layering broken:\n" + "\n".join(problems), pytrace=False)


@pytest.mark.parametrize("core", ["mailmodes.protocols.imap.session", "mailmodes.protocols.pop3"])
def test_the_layering_check_fails_when_a_core_imports_the_connection(core: str) -> None:
    graph = import_graph()
    graph[core] = graph[core] | {"mailmodes.protocols.connection"}
    problems = layer_violations(graph, external_imports())
    assert any(problem.startswith(f"{core} (a sans-I/O core) loads mailmodes.protocols.connection")
               for problem in problems), problems
    assert any(problem.startswith(f"{core} (a sans-I/O core) loads") and "asyncio" in problem
               for problem in problems), problems


@pytest.mark.parametrize("core", ["mailmodes.protocols.imap.session", "mailmodes.protocols.pop3"])
def test_importing_a_core_loads_neither_asyncio_nor_ssl(core: str) -> None:
    # What `python -X importtime -c "import mailmodes.protocols.imap.session"` shows, asked of a
    # fresh interpreter (the test process has long loaded both).
    code = f"import sys, {core}; print(sorted({{'asyncio', 'ssl'}} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]"
