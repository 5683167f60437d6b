"""No import cycles among custody's own modules.

The graph is read from the source with `ast`, so it is the same on every run whatever was imported
before: every `import` / `from ... import` of a custody module, at module level and inside
functions (a lazy import still closes a cycle the first time that function runs), except under
`if TYPE_CHECKING:`. A cycle makes a module's behaviour depend on which of its members happened
to be imported first; it is reported with its members so it can be broken where it was made.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("activities", "api", "chains", "chaos", "cli", "core", "db", "devnet", "models", "signers", "workflows")


def _modules() -> dict[str, Path]:
    found = {"worker": ROOT / "worker.py"}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:  # alembic revisions are loaded by alembic, not imported
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def imports_of(source: str, modules: set[str]) -> set[str]:
    """The custody modules `source` imports (the longest known module prefix of each name)."""
    wanted: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _is_type_checking(child):
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                # `from models import pools` imports the module models.pools, not a name of models
                names = [child.module, *(f"{child.module}.{alias.name}" for alias in child.names)]
            for name in names:
                while name and name not in modules:
                    name = name.rpartition(".")[0]
                if name:
                    wanted.add(name)
            visit(child)

    visit(ast.parse(source))
    return wanted


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def custody_import_graph() -> dict[str, set[str]]:
    modules = _modules()
    names = set(modules)
    return {name: imports_of(path.read_text(), names) - {name} for name, path in modules.items()}


def test_the_checker_sees_lazy_imports_and_reports_a_cycle() -> None:
    known = {"a", "b", "c", "c.d"}
    assert imports_of("import a\ndef f():\n    from c.d import x\n", known) == {"a", "c.d"}
    assert imports_of("from c import d\n", known) == {"c", "c.d"}
    assert imports_of("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\n", known) == set()
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_covers_the_packages() -> None:
    graph = custody_import_graph()
    for module in ("worker", "signers.local", "signers.kek", "models.db", "models.pools", "chains.evm", "workflows.withdrawal"):
        assert module in graph, module
    assert "models.db" in graph["models.pools"] or "models.columns" in graph["models.pools"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycles(package: str) -> None:
    cycles = [c for c in import_cycles(custody_import_graph()) if any(m.split(".")[0] == package for m in c)]
    assert not cycles, f"import cycles through {package}/: {cycles}"


def test_no_test_module_imports_another() -> None:
    """Shared test code lives in tests/conftest.py (fixtures) or tests/support/ (helpers): a test
    module imported by another would run its tests' module-level setup, and its fixtures would
    shadow conftest's."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(name.startswith("tests.") and name.rsplit(".", 1)[-1].startswith("test_") for name in names):
                offenders.append(f"{path.relative_to(ROOT)} imports {names}")
    assert not offenders, offenders
