"""Dependencies one way: every module imports on its own, and no two package modules import each other.

The import graph is read from the source with ``ast`` (module-level and function-level imports
alike, since a function-level import is a dependency that only waits to be called), so the check
needs no import machinery and sees imports that a plain ``import`` would not run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pneumonia"
MODULES = sorted(f"{PACKAGE}.{p.stem}" if p.stem != "__init__" else PACKAGE
                 for p in (ROOT / PACKAGE).glob("*.py"))


def module_path(module: str) -> Path:
    parts = module.split(".")
    return ROOT / PACKAGE / ("__init__.py" if len(parts) == 1 else f"{parts[1]}.py")


def imported_modules(source: str, module: str, modules: set[str]) -> set[str]:
    """The package modules ``source`` (the text of ``module``) imports, anywhere in the file.

    ``import pneumonia.x``, ``from pneumonia import x`` (x a module), ``from pneumonia.x import y``
    and their relative forms count as importing ``pneumonia.x``; ``from pneumonia import name``
    where ``name`` is not a module counts as importing the package itself.
    """
    package = PACKAGE if module == PACKAGE else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE or alias.name.startswith(PACKAGE + "."):
                    found.add(".".join(alias.name.split(".")[:2]))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .x import y
                base = ".".join([package] + ([base] if base else []))
            if base == PACKAGE:
                for alias in node.names:
                    name = f"{PACKAGE}.{alias.name}"
                    found.add(name if name in modules else PACKAGE)
            elif base.startswith(PACKAGE + "."):
                found.add(".".join(base.split(".")[:2]))
    return {m for m in found if m in modules and m != module}


def import_graph(modules: list[str]) -> dict[str, set[str]]:
    """``{module: the package modules it imports}`` for every module of the package."""
    known = set(modules)
    return {m: imported_modules(module_path(m).read_text(), m, known) for m in modules}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group of modules (Tarjan), each as ``[a, b, ..., a]``.

    Returns:
        The cycles, sorted; empty when the graph is acyclic.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycle_within(group, graph) for group in groups)


def cycle_within(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the group's first module, by breadth-first search inside the group."""
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return paths[node] + [start]
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_on_its_own(module):
    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"python -c 'import {module}' failed:\n{result.stderr[-2000:]}"


def test_no_two_package_modules_import_each_other():
    cycles = find_cycles(import_graph(MODULES))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


# The checker itself, on small hand-made sources.

@pytest.mark.parametrize("source, expected", [
    ("import pneumonia.data", {"pneumonia.data"}),
    ("import pneumonia.data as d", {"pneumonia.data"}),
    ("from pneumonia import data, Predictor", {"pneumonia.data", "pneumonia"}),
    ("from pneumonia.data import CLASS_NAMES", {"pneumonia.data"}),
    ("from . import data", {"pneumonia.data"}),
    ("from .data import x", {"pneumonia.data"}),
    ("def f():\n    from pneumonia.ood import g\n    return g", {"pneumonia.ood"}),
    ("class C:\n    def m(self):\n        import pneumonia.ood", {"pneumonia.ood"}),
    ("import numpy\nfrom os import path", set()),
    ('"""from pneumonia import data"""', set()),
])
def test_imported_modules_reads_every_form(source, expected):
    modules = {"pneumonia", "pneumonia.data", "pneumonia.ood", "pneumonia.x"}
    assert imported_modules(source, "pneumonia.x", modules) == expected


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"a"}}, [["a", "b", "a"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c", "a"]]),
    ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}, "e": {"a", "c"}}, [["a", "b", "a"], ["c", "d", "c"]]),
    ({"a": {"a"}}, [["a", "a"]]),
])
def test_find_cycles_names_each_cycle(graph, expected):
    assert find_cycles(graph) == expected
