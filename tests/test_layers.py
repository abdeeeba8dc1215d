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
