"""The subpackage layers: lower layers of cxr_core never import higher ones, and shipped models load after the move."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "cxr_core"
ALLOWED = {
    "util": {"util", "config", "errors"},
    "data": {"data", "util", "config", "errors"},
    "preprocess": {"preprocess", "data", "util", "config", "errors"},
    "lungs": {"lungs", "preprocess", "data", "util", "config", "errors"},
    "markings": {"markings", "preprocess", "data", "util", "config", "errors"},
}
"""Subpackage -> the cxr_core subpackages it may import: each lower layer imports only what lies below it."""


def imported_subpackages(path: Path) -> set[str]:
    """The cxr_core subpackages (or top-level modules) that a source file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found.update(n.split(".")[1] for n in names if n.startswith("cxr_core.") and n.count(".") >= 1)
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_lower_layer_imports_only_what_is_below_it(package: str) -> None:
    wrong = {
        str(f.relative_to(CORE)): sorted(imported_subpackages(f) - ALLOWED[package])
        for f in (CORE / package).rglob("*.py")
    }
    assert {f: w for f, w in wrong.items() if w} == {}


def test_nothing_in_the_library_imports_the_command_line() -> None:
    users = [
        str(f.relative_to(CORE))
        for f in CORE.rglob("*.py")
        if f.parts[len(CORE.parts)] not in ("cli", "__main__.py") and "cli" in imported_subpackages(f)
    ]
    assert users == []


def test_shipped_models_load_in_safe_mode_after_the_move() -> None:
    import keras

    shipped = sorted((CORE.parent / "models").glob("*/model.keras"))
    assert shipped, "no shipped models found"
    for path in shipped:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
        assert model.count_params() > 0, path


def top_level_names(path: Path) -> set[str]:
    """Names a module defines at its top level (functions, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


@pytest.mark.parametrize("package", sorted(p.name for p in CORE.iterdir() if p.is_dir() and p.name != "__pycache__"))
def test_every_subpackage_exports_names_its_modules_define(package: str) -> None:
    init = CORE / package / "__init__.py"
    assert init.is_file(), f"cxr_core/{package} has no __init__.py"
    calls = [n for n in ast.walk(ast.parse(init.read_text(encoding="utf-8"))) if isinstance(n, ast.Call)]
    attach = next((c for c in calls if getattr(c.func, "attr", "") == "attach"), None)
    if attach is None:
        return
    exports = ast.literal_eval(next(k.value for k in attach.keywords if k.arg == "submod_attrs"))
    missing = {
        module: sorted(set(names) - top_level_names(CORE / package / f"{module}.py"))
        for module, names in exports.items()
    }
    assert {m: n for m, n in missing.items() if n} == {}
