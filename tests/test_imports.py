"""The import graph inside dffx runs one way (issue 31): no cycle, counting the imports inside
functions too (they only defer a cycle to the first call) and the package ``__init__`` that
importing a submodule runs. Read from the source with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import dffx

PACKAGE = Path(dffx.__file__).parent


def _modules() -> dict[str, Path]:
    """``{"dffx.align.cascade": path, "dffx.align": path of its __init__, ...}``."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imported(module: str, path: Path, node, modules) -> set[str]:
    """The dffx modules one import statement loads: the module named and the packages above it
    that the importing module is not already inside."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names = []
    if isinstance(node, ast.ImportFrom):
        base = package[:len(package) - node.level + 1] if node.level else []
        stem = ".".join(base + (node.module.split(".") if node.module else []))
        for alias in node.names:
            full = f"{stem}.{alias.name}"
            if full in modules:
                names.append(full)
            elif alias.name.startswith("_C"):  # the compiled extension, not a Python module
                continue
            else:
                names.append(stem)  # a name defined in module (or package) ``stem``
    else:
        names = [alias.name for alias in node.names]
    loaded = set()
    for name in names:
        if name not in modules:
            continue
        parts = name.split(".")
        for k in range(2, len(parts) + 1):
            ancestor = ".".join(parts[:k])
            if not (module == ancestor or module.startswith(ancestor + ".")):
                loaded.add(ancestor)
    loaded.discard(module)
    return loaded


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges |= _imported(module, path, node, modules)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_inside_dffx():
    graph = import_graph()
    assert len(graph) > 60 and "dffx.align.cascade" in graph["dffx.align.aligner"]
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(
        " <-> ".join(c) + " (" + ", ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) + ")" for c in found)


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
