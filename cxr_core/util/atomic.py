"""Atomic file writes: write a temporary sibling, flush it, then ``os.replace`` it over the target."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` so that readers see either the old or the new file, never a partial one."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON atomically (NaN is refused: use None for missing values)."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json(path: str | Path, default: Any = None) -> Any:
    """Parse a JSON file, or return ``default`` when it does not exist."""
    target = Path(path)
    if not target.is_file():
        return default
    return json.loads(target.read_text(encoding="utf-8"))


def read_json_object(path: str | Path) -> dict[str, Any]:
    """A JSON object from a file another process may be writing: ``{}`` when missing, half-written or not an object."""
    try:
        data = read_json(path, {})
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
