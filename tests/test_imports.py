"""The package's imports point one way: no module of raydistill/ imports, directly or through
others, a module that imports it back (docs/architecture.md). Imports inside functions count
(they run too); those under ``if TYPE_CHECKING:`` do not (they never run)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "raydistill"


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The raydistill modules ``name`` imports (``from pkg import mod`` names the module)."""

    def owner(dotted: str) -> str:
        while dotted and dotted not in known:
            dotted = dotted.rpartition(".")[0]
        return dotted

    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(owner(a.name) for a in node.names if a.name.startswith("raydistill"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            if base.startswith("raydistill"):
                found.update(owner(f"{base}.{a.name}") if f"{base}.{a.name}" in known else owner(base)
                             for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found - {name, ""}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_walker_finds_a_cycle(tmp_path):
    pkg = tmp_path / "raydistill"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("from raydistill.b import y\n")
    (pkg / "b.py").write_text("def f():\n    from raydistill.a.x import g\n")  # a lazy import counts
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from raydistill.d import T\n")
    (pkg / "d.py").write_text("from raydistill import c\n")  # c -> d only for annotations: no cycle
    known = modules(pkg)
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert graph["raydistill.b"] == {"raydistill.a.x"} and graph["raydistill.d"] == {"raydistill.c"}
    assert cycles(graph) == [["raydistill.a.x", "raydistill.b"]]


def test_no_import_cycle_in_the_package():
    known = modules()
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert len(graph) > 50 and "raydistill.models.hubert" in graph["raydistill.models.student"]
    assert cycles(graph) == []


# Imports of raydistill sit at the top of a module, where the graph above reads them plainly; one
# inside a function must say why on its line (``# lazy: <why>``: the command line's start-up, an
# import of ray.tune or torch a caller may not need, a module that is a Ray program).


def lazy_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each import of raydistill inside a function of ``path``, without a
    ``# lazy:`` reason on its line."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            internal = (isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("raydistill"))
                        or isinstance(node, ast.Import) and any(a.name.startswith("raydistill") for a in node.names))
            if internal and not any("# lazy:" in lines[i - 1] for i in range(node.lineno, node.end_lineno + 1)):
                found.append((node.lineno, lines[node.lineno - 1].strip()))
    return sorted(set(found))


def test_the_lazy_import_counter_wants_a_reason(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("import os\n\n\ndef f():\n    from raydistill.a import b\n"
                    "    from raydistill.c import d  # lazy: imports torch\n    import json\n")
    assert lazy_imports(path) == [(5, "from raydistill.a import b")]


def test_imports_of_raydistill_inside_functions_say_why():
    known = modules()
    unexplained = {name: found for name, path in known.items() if (found := lazy_imports(path))}
    assert unexplained == {}, "imports inside functions without a '# lazy: <why>' comment: " + "; ".join(
        f"{known[name].relative_to(PACKAGE.parent)}:{line} {text}" for name, found in unexplained.items()
        for line, text in found)
