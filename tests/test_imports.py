"""Dependencies one way, and the lint: every module imports on its own, the import contracts in
``pyproject.toml`` hold (import-linter: the product path is layered, never imports training or
evaluation, and no two package modules import each other), ``app.py`` imports only the product
path, and ruff finds nothing.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "pneumonia"
MODULES = sorted(f"{PACKAGE}.{p.stem}" if p.stem != "__init__" else PACKAGE
                 for p in (ROOT / PACKAGE).glob("*.py"))
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def find_tool(name: str) -> str:
    """The path of a lint tool the development requirements install, or skip saying so."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"{name} is not installed (pip install -r requirements-dev.txt)")
    return path


def imported_modules(source: str) -> set[str]:
    """The ``pneumonia`` modules (or the package itself) a file's source imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE:
            if node.module == PACKAGE:
                found |= {f"{PACKAGE}.{a.name}" if f"{PACKAGE}.{a.name}" in MODULES else PACKAGE for a in node.names}
            else:
                found.add(node.module)
    return found


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_on_its_own(module):
    result = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"python -c 'import {module}' failed:\n{result.stderr[-2000:]}"


def test_import_contracts_hold():
    result = subprocess.run([find_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert f"{len(CONTRACTS)} kept, 0 broken" in result.stdout


def test_every_package_module_is_either_product_or_training():
    """A new module must be placed: on the product path (layers) or among what it never imports."""
    layered = {m.strip() for c in CONTRACTS if c["type"] == "layers" for layer in c["layers"] for m in layer.split("|")}
    forbidden = {m for c in CONTRACTS if c["type"] == "forbidden" for m in c["forbidden_modules"]}
    assert set(MODULES) - {PACKAGE} - layered - forbidden == set()


def test_app_imports_only_the_product_path():
    forbidden = {m for c in CONTRACTS if c["type"] == "forbidden" for m in c["forbidden_modules"]}
    imported = imported_modules((ROOT / "app.py").read_text())
    assert imported and not imported & forbidden, sorted(imported & forbidden)


@pytest.mark.parametrize("source, expected", [
    ("import pneumonia.data", {"pneumonia.data"}),
    ("from pneumonia import ui, Predictor", {"pneumonia.ui", "pneumonia"}),
    ("from pneumonia.train import run", {"pneumonia.train"}),
    ("def f():\n    from pneumonia.ood import g\n    return g", {"pneumonia.ood"}),
    ("import numpy\nfrom os import path", set()),
    ('"""from pneumonia import data"""', set()),
])
def test_imported_modules_reads_every_form(source, expected):
    assert imported_modules(source) == expected


def test_ruff_finds_nothing():
    result = subprocess.run([find_tool("ruff"), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
