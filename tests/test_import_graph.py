"""The library's imports form no circle (the domain registry, which imports its domains to register them,
aside): every import a module can run, lazy ones inside functions included, points one way, so a module
can be read after the ones it names."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mdrl_lib"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports() -> dict[str, set[str]]:
    """module -> the mdrl_lib modules it imports anywhere (inside functions too), ``TYPE_CHECKING`` blocks aside."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for item in ast.walk(tree):
            if id(item) in typing_only or not isinstance(item, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(item, ast.ImportFrom):
                candidates = [f"{item.module}.{a.name}" for a in item.names] + [item.module or ""]
            else:
                candidates = [a.name for a in item.names]
            targets |= {c for c in candidates if c in modules and c != name}
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return out


def test_cycles_finds_a_circle_and_only_it():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_library_has_no_import_circle_outside_the_domain_registry():
    found = [c for c in cycles(runtime_imports()) if not all(m.startswith("mdrl_lib.domains") for m in c)]
    assert found == []


def test_nothing_in_the_library_imports_the_exercises():
    """mdrl_lib.exercises sits on top of the analysis modules (its checks compare with them); no library module
    may depend on it."""
    graph = runtime_imports()
    assert "mdrl_lib.exercises" in graph and "mdrl_lib.exercises.nb01" in graph
    importers = {m for m, targets in graph.items() if not m.startswith("mdrl_lib.exercises")
                 and any(t.startswith("mdrl_lib.exercises") for t in targets)}
    assert importers == set()
