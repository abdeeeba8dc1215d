"""Keras model files: atomic saving, and safe loading of the small helper models (lung segmenter, markings net)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def load_keras_safely(path: Path, error: type[Exception], what: str, hint: str) -> Any:
    """Load ``path`` in Keras safe mode (no arbitrary code); a missing or unloadable file raises ``error`` in one line."""
    if not path.is_file():
        raise error(f"no {what} at {path}: {hint}")
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # any load failure becomes one clear line
        raise error(f"cannot load {what} {path}: {exc}") from exc


def save_keras_atomically(model: Any, path: Path) -> None:
    """Save a Keras model to ``path`` atomically (Keras needs the ``.keras`` suffix on the temp name)."""
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.keras")
    model.save(tmp)
    os.replace(tmp, path)
