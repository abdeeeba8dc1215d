"""The one typed configuration object, built from defaults, an optional ``cxr.toml`` and the environment.

When nothing names a data dir (no ``CXR_DATA_DIR``, no ``data_dir`` in ``cxr.toml`` or as an override) and there is no
``data/`` folder in the working directory, :func:`load_config` points ``data_dir`` at the demo dataset shipped in
``demo/`` (:data:`DEMO_DIR`), so ``make run`` and ``cxr`` work out of the box; ``Config.uses_demo`` tells.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_FILE_ENV = "CXR_CONFIG"
DEFAULT_CONFIG_FILE = "cxr.toml"
LUNGS_MODEL_ENV = "CXR_LUNGS_MODEL"
MARKINGS_MODEL_ENV = "CXR_MARKINGS_MODEL"
DEFAULT_DATA_DIR = Path("data")
DEMO_DIR = Path(__file__).resolve().parents[1] / "demo"

_ENV_KEYS = {
    "data_dir": "CXR_DATA_DIR",
    "home": "CXR_HOME",
    "models_dir": "CXR_MODELS_DIR",
    "lungs_model": LUNGS_MODEL_ENV,
    "markings_model": MARKINGS_MODEL_ENV,
}


class ConfigError(ValueError):
    """A configuration value or file is invalid."""


@dataclass(frozen=True)
class Config:
    """Every setting of CXR Review in one place; paths are resolved to absolute paths."""

    data_dir: Path = DEFAULT_DATA_DIR
    home: Path = Path(".cxr")
    models_dir: Path = Path("models")
    lungs_model: Path | None = None
    markings_model: Path | None = None
    seed: int = 1337
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    max_pixels: int = 50_000_000
    min_side: int = 64
    near_duplicate_distance: int = 4
    clean_test_of_duplicates: bool = True
    include_classes: tuple[str, ...] = ("COVID", "Normal")
    positive_class: str = "COVID"
    workers: int = field(default_factory=lambda: max(1, os.cpu_count() or 1))

    def __post_init__(self) -> None:
        """Normalise paths and validate numeric settings."""
        for name in ("data_dir", "home", "models_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)).expanduser().resolve())
        for name in ("lungs_model", "markings_model"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).expanduser().resolve())
        fractions = tuple(float(f) for f in self.split_fractions)
        if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
            raise ConfigError(
                f"split_fractions must be three non-negative numbers summing to 1, got {self.split_fractions}"
            )
        object.__setattr__(self, "split_fractions", fractions)
        if self.max_pixels <= 0 or self.min_side <= 0:
            raise ConfigError("max_pixels and min_side must be positive")
        if self.positive_class not in self.include_classes:
            raise ConfigError(f"positive_class {self.positive_class!r} is not one of {self.include_classes}")

    @property
    def uses_demo(self) -> bool:
        """True when the data dir is the demo dataset shipped in ``demo/``."""
        return self.data_dir == DEMO_DIR

    @property
    def lungs_model_dir(self) -> Path:
        """The lung segmenter: ``lungs_model`` ($CXR_LUNGS_MODEL) when set, else ``<models_dir>/lungs``."""
        return self.lungs_model or self.models_dir / "lungs"

    @property
    def markings_model_dir(self) -> Path:
        """The learned markings detector: ``markings_model`` ($CXR_MARKINGS_MODEL) when set, else ``<models_dir>/markings``."""
        return self.markings_model or self.models_dir / "markings"

    @property
    def index_dir(self) -> Path:
        """Folder of cached dataset indexes."""
        return self.home / "index"

    @property
    def ledger_path(self) -> Path:
        """SQLite curation ledger."""
        return self.home / "ledger.sqlite"

    @property
    def runs_dir(self) -> Path:
        """Folder of training run directories."""
        return self.home / "runs"

    @property
    def cache_dir(self) -> Path:
        """Folder of derived caches (preprocessed images, thumbnails, flags, masks)."""
        return self.home / "cache"

    @property
    def trash_dir(self) -> Path:
        """Where deleted runs are moved instead of being removed."""
        return self.home / "trash"

    def with_overrides(self, **changes: Any) -> Config:
        """A copy of this config with some fields replaced (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _coerce(name: str, value: Any) -> Any:
    """Convert a raw TOML or environment value to the type of field ``name``."""
    default = {f.name: f for f in dataclasses.fields(Config)}[name]
    kind = default.type if isinstance(default.type, str) else getattr(default.type, "__name__", "")
    try:
        if kind == "int":
            return int(value)
        if kind == "bool":
            return value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes", "on"}
        if kind.startswith("tuple"):
            items = value if isinstance(value, (list, tuple)) else str(value).split(",")
            return tuple(float(v) for v in items) if "float" in kind else tuple(str(v).strip() for v in items)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value for {name}: {value!r}") from exc
    return value


def load_config(
    env: Mapping[str, str] | None = None, config_file: str | Path | None = None, **overrides: Any
) -> Config:
    """Build the Config: defaults, then ``cxr.toml`` (or $CXR_CONFIG), then CXR_* variables, then overrides.

    Reading the process environment (``env`` None), an unset data dir falls back to the demo dataset when there is
    no ``data/`` folder; a caller passing its own ``env`` mapping gets the plain defaults.
    """
    demo_fallback = env is None
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    path = Path(config_file or env.get(CONFIG_FILE_ENV) or DEFAULT_CONFIG_FILE)
    if path.is_file():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
        known = {f.name for f in dataclasses.fields(Config)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{path}: unknown settings {sorted(unknown)}")
        values.update({k: _coerce(k, v) for k, v in data.items()})
    for name, var in _ENV_KEYS.items():
        if env.get(var):
            values[name] = env[var]
    if env.get("CXR_SEED"):
        values["seed"] = _coerce("seed", env["CXR_SEED"])
    if env.get("CXR_WORKERS"):
        values["workers"] = _coerce("workers", env["CXR_WORKERS"])
    values.update({k: v for k, v in overrides.items() if v is not None})
    if demo_fallback and "data_dir" not in values and not DEFAULT_DATA_DIR.is_dir() and DEMO_DIR.is_dir():
        values["data_dir"] = DEMO_DIR
    return Config(**values)
