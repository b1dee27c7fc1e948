"""The shape of the code: no import circles in nas/ and plots/ (module-level and function-level imports alike), the
library never imports its CLI, no private API of Ray, no hand-built Optuna trial, and no module over 700 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("nas", "plots")
MAX_LINES = 700


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))
            if "share" not in path.relative_to(REPO).parts}


def _imported(name: str, path: Path, modules: set[str]) -> set[str]:
    """Every project module `name` imports anywhere in its file (inside functions too). `from a import b` names
    the module a.b when there is one, else a; a relative import is resolved against the module's package."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import nas.search.driver as d` names the module itself
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    sources = _sources()
    modules = set(sources)
    return {name: _imported(name, path, modules) for name, path in sources.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_sees_a_circle_through_a_function_level_import(tmp_path):
    graph = {"nas.a": {"nas.b"}, "nas.b": {"nas.c"}, "nas.c": {"nas.a"}, "nas.d": {"nas.a"}}
    assert cycles(graph) == [["nas.a", "nas.b", "nas.c"]]
    source = tmp_path / "mod.py"
    source.write_text("import os\n\ndef f():\n    from nas.b import thing\n    from . import c\n")
    assert _imported("nas.a", source, {"nas", "nas.a", "nas.b", "nas.c"}) == {"nas.b", "nas.c"}


def test_no_import_circles():
    assert cycles(import_graph()) == []


def test_the_library_never_imports_its_cli():
    offenders = {name: sorted(t for t in targets if t == "nas.cli" or t.startswith("nas.cli."))
                 for name, targets in import_graph().items() if not name.startswith("nas.cli")}
    assert {name: targets for name, targets in offenders.items() if targets} == {}


@pytest.mark.parametrize("banned", ["ray._private", "optuna.trial.Trial("])
def test_no_private_or_hand_built_apis(banned):
    assert [str(path.relative_to(REPO)) for path in _sources().values() if banned in path.read_text()] == []


def test_no_module_over_700_lines():
    long = {str(path.relative_to(REPO)): n for path in _sources().values()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
