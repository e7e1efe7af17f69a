"""The floors of the house, read from the source: the core has no import circle and imports no front end, and
the two front ends stand beside each other. Imports inside functions count as edges too."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRONT_ENDS = ("somad_cli", "somad_gui")
FORBIDDEN_IN_CORE = (*FRONT_ENDS, "PySide6", "pyqtgraph", "shiboken6", "argparse")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules it imports (absolute names, relative imports resolved), for one package.

    ``from a import b`` is an edge to ``a.b`` when that is a module of the package, else to ``a``.
    """
    statements: dict[str, list[tuple[str, list[str]]]] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        name = _module_name(path)
        is_package = path.name == "__init__.py"
        found: list[tuple[str, list[str]]] = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(alias.name, []) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                found.append((module, [alias.name for alias in node.names]))
        statements[name] = found
    graph: dict[str, set[str]] = {}
    for name, found in statements.items():
        edges: set[str] = set()
        for module, names in found:
            submodules = {f"{module}.{n}" for n in names} & statements.keys()
            edges |= submodules
            if len(submodules) < len(names) or not names:
                edges.add(module)
        graph[name] = edges
    return graph


def _internal(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between the package's own modules only."""
    return {m: {e for e in edges if e in graph and e != m} for m, edges in graph.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_graph_builder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_core_has_no_import_circle():
    graph = _internal(import_graph("somad"))
    assert len(graph) > 20
    assert circles(graph) == []


def test_core_imports_no_front_end_and_no_qt():
    offenders = {
        module: sorted(e for e in edges if e.split(".")[0] in FORBIDDEN_IN_CORE)
        for module, edges in import_graph("somad").items()
    }
    assert {m: e for m, e in offenders.items() if e} == {}


def test_front_ends_do_not_import_each_other():
    for package, other in (("somad_cli", "somad_gui"), ("somad_gui", "somad_cli")):
        bad = {
            m for m, edges in import_graph(package).items() if any(e.split(".")[0] == other for e in edges)
        }
        assert not bad, (package, bad)
