"""The model registry: model directories (``models/<name>/``, ``runs/<id>/model/``), loading in Keras safe mode, listing.

A model directory holds ``model.keras`` (functional model, input ``(size, size, 1)`` raw 0-255 float32, output
``Dense(2, softmax)`` named ``predictions``), ``preprocess.json``, ``classes.json``, ``calibration.json``,
``card.md`` + ``card.json`` and, once evaluated, ``evaluation.json``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr_core.config import Config
from cxr_core.data.imaging import sha256_file
from cxr_core.evaluate.calibration import DEFAULT_TARGET_SENSITIVITY, Calibration, apply_temperature
from cxr_core.gate.familiarity import Familiarity, FamiliarityError
from cxr_core.gate.familiarity import load as load_familiarity
from cxr_core.preprocess.recipe import PreprocessConfig, PreprocessError
from cxr_core.util.atomic import read_json, write_json_atomic, write_text_atomic

MODEL_FILE = "model.keras"
CLASSES_FILE = "classes.json"
CALIBRATION_FILE = "calibration.json"
CARD_JSON = "card.json"
CARD_MD = "card.md"
EVALUATION_FILE = "evaluation.json"
DEFAULT_MARKER = "DEFAULT"
DEFAULT_NAME = "default"
DEFAULT_CLASSES = ("COVID", "Normal")
VERSION_LENGTH = 12
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class RegistryError(ValueError):
    """A model directory is missing, incomplete or unreadable; ``str(exc)`` is one clear line."""


def model_version(directory: str | Path) -> str:
    """The model's version: the first 12 hex digits of the sha256 of its ``model.keras``."""
    return sha256_file(Path(directory) / MODEL_FILE)[:VERSION_LENGTH]


def _read_json_file(path: Path, default: Any) -> Any:
    """Read a model-directory JSON file, turning a corrupt one into a RegistryError."""
    try:
        return read_json(path, default)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RegistryError(f"{path} is not valid JSON ({exc})") from exc


def _display_name(directory: Path, card: dict[str, Any]) -> str:
    """A model's name: the card's, else the directory's (a run's ``model/`` folder is named after its run)."""
    if card.get("name"):
        return str(card["name"])
    return directory.parent.name if directory.name == "model" else directory.name


FEATURE_KINDS = ("penultimate", "style")


def _feature_function(model: Any, kind: str) -> Any:
    """A compiled function from an input batch to ``(features, softmax)`` of a Keras model (see ``features_and_probs``)."""
    import keras
    import tensorflow as tf

    if kind not in FEATURE_KINDS:
        raise RegistryError(f"unknown feature kind {kind!r}; choose from {list(FEATURE_KINDS)}")
    if kind == "penultimate":
        head = next((layer for layer in model.layers if layer.name == "predictions"), model.layers[-1])
        both = keras.Model(model.inputs, [head.input, model.outputs[0]])
        return tf.function(lambda x: both(x, training=False), reduce_retracing=True)
    pools = [
        layer.output
        for layer in model.layers
        if isinstance(layer, (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D))
    ][:2]
    if not pools:
        pools = [next(layer for layer in reversed(model.layers) if len(layer.input.shape) == 4).input]
    taps = keras.Model(model.inputs, [*pools, model.outputs[0]])

    def style(x: Any) -> Any:
        """Channel means and standard deviations of the tapped maps, and the softmax."""
        *maps, probs = taps(x, training=False)
        stats = [f(m, axis=(1, 2)) for m in maps for f in (tf.reduce_mean, tf.math.reduce_std)]
        return tf.concat(stats, axis=1), probs

    return tf.function(style, reduce_retracing=True)


@dataclass
class LoadedModel:
    """A loaded registry model with everything needed to reproduce its training-time inference."""

    model: Any
    preprocess: PreprocessConfig
    classes: tuple[str, ...]
    positive_index: int
    temperature: float
    threshold: float
    name: str
    version: str
    path: Path
    card: dict[str, Any] = field(default_factory=dict)
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
    familiarity: Familiarity | None = None
    _embed: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def positive(self) -> str:
        """The positive class name (e.g. ``COVID``)."""
        return self.classes[self.positive_index]

    def prepare(self, gray_images: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Preprocess 2-D uint8 images into the model's ``(n, size, size, 1)`` float32 input (raw 0-255 values).

        ``masks`` are the images' lung masks for a model with a lung ROI (segmented here when not given).
        """
        from cxr_core.lungs.segmenter import lung_mask

        size = self.preprocess.size
        if len(gray_images) == 0:
            return np.zeros((0, size, size, 1), np.float32)
        if masks is None:
            prepared = [self.preprocess.apply(img, lung_mask) for img in gray_images]
        else:
            prepared = [
                self.preprocess.apply_with_lungs(img, mask)[0] for img, mask in zip(gray_images, masks, strict=True)
            ]
        return np.stack(prepared).astype(np.float32)[..., None]

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Uncalibrated softmax outputs ``(n, k)`` for an already prepared input batch."""
        if len(batch) == 0:
            return np.zeros((0, len(self.classes)), np.float64)
        return np.asarray(self.model(batch, training=False), dtype=np.float64)

    def features_and_probs(self, batch: np.ndarray, kind: str = "penultimate") -> tuple[np.ndarray, np.ndarray]:
        """Features ``(n, d)`` of one ``kind`` and uncalibrated softmax ``(n, k)`` from one compiled forward pass.

        ``penultimate``: the input of the classification head. ``style``: the mean and standard deviation of every
        channel of the first two pooled feature maps (image appearance more than content; the last feature map for
        models with no pooling layer of their own).
        """
        if len(batch) == 0:
            return np.zeros((0, 0)), np.zeros((0, len(self.classes)))
        if kind not in self._embed:
            self._embed[kind] = _feature_function(self.model, kind)
        features, probs = self._embed[kind](np.asarray(batch, dtype=np.float32))
        return np.asarray(features, np.float64).reshape(len(batch), -1), np.asarray(probs, np.float64)

    def predict_probs(
        self, gray_images: Sequence[np.ndarray], *, calibrated: bool = True, batch_size: int = 32
    ) -> np.ndarray:
        """Class probabilities ``(n, k)`` for 2-D uint8 images, temperature-scaled unless ``calibrated=False``."""
        parts = [
            self.predict_batch(self.prepare(gray_images[i : i + batch_size]))
            for i in range(0, len(gray_images), batch_size)
        ]
        raw = np.concatenate(parts) if parts else np.zeros((0, len(self.classes)))
        return apply_temperature(raw, self.temperature) if calibrated and len(raw) else raw

    def predict_proba(self, gray_images: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Calibrated P(positive class) for a list of 2-D uint8 images (preprocessing applied)."""
        return self.predict_probs(gray_images, batch_size=batch_size)[:, self.positive_index]

    def predict_label(self, p_pos: float) -> str:
        """The class called at the stored threshold for a calibrated P(positive)."""
        if p_pos >= self.threshold:
            return self.positive
        return next(c for i, c in enumerate(self.classes) if i != self.positive_index)


def _check_shapes(model: Any, preprocess: PreprocessConfig, classes: Sequence[str], where: str) -> None:
    """Refuse a model whose input or output shape does not match its preprocessing and classes."""
    in_shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    expected = (preprocess.size, preprocess.size, 1)
    if in_shape is not None and in_shape != expected:
        raise RegistryError(f"{where}: model input {in_shape} does not match preprocess.json size {expected}")
    out_units = model.outputs[0].shape[-1] if getattr(model, "outputs", None) else None
    if out_units is not None and out_units != len(classes):
        raise RegistryError(f"{where}: model has {out_units} outputs but classes.json names {len(classes)} classes")


def read_classes(directory: Path) -> tuple[tuple[str, ...], int]:
    """Class names in output order and the positive index from ``classes.json`` (default COVID, Normal)."""
    data = _read_json_file(directory / CLASSES_FILE, {"classes": list(DEFAULT_CLASSES), "positive": "COVID"})
    classes = tuple(str(c) for c in data.get("classes", ()))
    positive = str(data.get("positive", ""))
    if len(classes) < 2 or positive not in classes:
        raise RegistryError(f"{directory / CLASSES_FILE}: needs 'classes' (>=2 names) and a 'positive' among them")
    return classes, classes.index(positive)


def read_calibration(directory: Path) -> Calibration:
    """The stored temperature and threshold (identity calibration and 0.5 when ``calibration.json`` is absent)."""
    data = _read_json_file(directory / CALIBRATION_FILE, {})
    try:
        cal = Calibration(
            temperature=float(data.get("temperature", 1.0)),
            threshold=float(data.get("threshold", 0.5)),
            target_sensitivity=float(data.get("target_sensitivity", DEFAULT_TARGET_SENSITIVITY)),
        )
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{directory / CALIBRATION_FILE}: invalid values ({exc})") from exc
    if not cal.temperature > 0 or not 0 <= cal.threshold <= 1:
        raise RegistryError(f"{directory / CALIBRATION_FILE}: temperature must be > 0 and threshold in [0, 1]")
    return cal


def load_model(path: str | Path) -> LoadedModel:
    """Load a model directory in Keras safe mode; refuses one without ``preprocess.json`` or a readable ``model.keras``."""
    directory = Path(path).expanduser().resolve()
    if not directory.is_dir():
        raise RegistryError(f"{directory} is not a model directory")
    try:
        preprocess = PreprocessConfig.load(directory)
    except PreprocessError as exc:
        raise RegistryError(f"refusing to load {directory}: {exc}") from exc
    model_file = directory / MODEL_FILE
    if not model_file.is_file():
        raise RegistryError(f"refusing to load {directory}: {MODEL_FILE} is missing")
    classes, positive_index = read_classes(directory)
    calibration = read_calibration(directory)
    card = _read_json_file(directory / CARD_JSON, {})
    import keras

    try:
        model = keras.saving.load_model(model_file, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for corrupt or unsafe files
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RegistryError(f"{model_file} could not be loaded in safe mode: {reason}") from exc
    _check_shapes(model, preprocess, classes, str(directory))
    version = model_version(directory)
    try:
        familiarity = load_familiarity(directory, version)
    except FamiliarityError as exc:
        raise RegistryError(str(exc)) from exc
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        classes=classes,
        positive_index=positive_index,
        temperature=calibration.temperature,
        threshold=calibration.threshold,
        name=_display_name(directory, card),
        version=version,
        path=directory,
        card=card,
        target_sensitivity=calibration.target_sensitivity,
        familiarity=familiarity,
    )


def _without_optimizer(model: Any) -> Any:
    """The model itself when uncompiled, else an uncompiled copy with the same weights (Keras 3 ``.keras`` files
    store optimizer state for compiled models and ignore ``include_optimizer``)."""
    if getattr(model, "optimizer", None) is None and not getattr(model, "compiled", False):
        return model
    import keras

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _swap_in(tmp: Path, directory: Path) -> None:
    """Replace ``directory`` by the fully written ``tmp`` folder with renames (the old one is removed last)."""
    old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
    if directory.exists():
        os.replace(directory, old)
    try:
        os.replace(tmp, directory)
    except OSError:
        if old.exists():
            os.replace(old, directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _staged(directory: Path, fill: Callable[[Path], None]) -> Path:
    """Write a directory into a temporary sibling with ``fill`` and swap it into place; nothing changes on error."""
    directory = Path(directory).expanduser().resolve()
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        fill(tmp)
        _swap_in(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def write_calibration(directory: str | Path, calibration: Calibration) -> Path:
    """Atomically (re)write ``calibration.json`` of a model directory."""
    return write_json_atomic(Path(directory) / CALIBRATION_FILE, calibration.to_dict())


def save_model_dir(
    directory: str | Path,
    model: Any,
    preprocess: PreprocessConfig,
    *,
    classes: Sequence[str] = DEFAULT_CLASSES,
    positive: str = "COVID",
    temperature: float = 1.0,
    threshold: float = 0.5,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    card: dict[str, Any] | None = None,
) -> Path:
    """Write a complete model directory atomically (model without optimizer state, preprocessing, classes,
    calibration and, when given, the card); returns the directory."""
    classes = tuple(classes)
    if positive not in classes:
        raise RegistryError(f"positive class {positive!r} is not one of {classes}")
    _check_shapes(model, preprocess, classes, "save_model_dir")
    calibration = Calibration(float(temperature), float(threshold), float(target_sensitivity))

    def fill(tmp: Path) -> None:
        """Write every file of the model directory into ``tmp``."""
        _without_optimizer(model).save(tmp / MODEL_FILE)
        preprocess.save(tmp)
        write_json_atomic(tmp / CLASSES_FILE, {"classes": list(classes), "positive": positive})
        write_calibration(tmp, calibration)
        if card is not None:
            from cxr_core.evaluate.card import write_card

            write_card(tmp, card)

    return _staged(Path(directory), fill)


def _count_weights(model_file: Path) -> int | None:
    """Total number of stored weights in a ``.keras`` archive, read with h5py (no Keras import)."""
    import h5py

    try:
        with zipfile.ZipFile(model_file) as archive, archive.open("model.weights.h5") as handle:
            total = 0

            def visit(_: str, obj: Any) -> None:
                """Add the size of every dataset."""
                nonlocal total
                if isinstance(obj, h5py.Dataset):
                    total += int(obj.size)

            with h5py.File(io.BytesIO(handle.read()), "r") as weights:
                weights.visititems(visit)
            return total
    except (OSError, KeyError, zipfile.BadZipFile):
        return None


def _archive_model_name(model_file: Path) -> str:
    """The model name stored in a ``.keras`` archive's ``config.json`` ("" when unreadable)."""
    try:
        with zipfile.ZipFile(model_file) as archive:
            config = json.loads(archive.read("config.json"))
        return str(config.get("config", {}).get("name", ""))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
        return ""


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``cxr models``: what can be known about a model directory without loading Keras."""

    name: str
    path: str
    version: str
    arch: str
    params: int | None
    size_bytes: int
    test_auc: float | None
    default: bool
    has_preprocess: bool

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def model_info(directory: str | Path, default: bool = False) -> ModelInfo:
    """Summarise a model directory from its files (card, evaluation, archive) without loading the model."""
    directory = Path(directory).resolve()
    model_file = directory / MODEL_FILE
    card = _safe_json(directory / CARD_JSON)
    evaluation = _safe_json(directory / EVALUATION_FILE)
    test_auc = evaluation.get("roc_auc") if evaluation.get("split") == "test" else None
    if test_auc is None:
        test_auc = card.get("metrics", {}).get("roc_auc") if isinstance(card.get("metrics"), dict) else None
    params = card.get("parameters")
    return ModelInfo(
        name=directory.name,
        path=str(directory),
        version=model_version(directory),
        arch=str(card.get("architecture") or _archive_model_name(model_file)),
        params=int(params) if isinstance(params, (int, float)) else _count_weights(model_file),
        size_bytes=sum(p.stat().st_size for p in directory.iterdir() if p.is_file()),
        test_auc=float(test_auc) if isinstance(test_auc, (int, float)) else None,
        default=default,
        has_preprocess=(directory / "preprocess.json").is_file(),
    )


def _safe_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file, or {} when it is missing or unreadable (for listings)."""
    try:
        data = read_json(path, {})
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _model_dirs(models_dir: Path) -> Iterable[Path]:
    """Classifier directories of the models folder, by name: a ``model.keras`` with ``preprocess.json`` or
    ``classes.json`` (other models kept there, such as the lung segmenter ``models/lungs``, have neither)."""
    if not models_dir.is_dir():
        return []
    return sorted(
        p
        for p in models_dir.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and (p / MODEL_FILE).is_file()
        and ((p / "preprocess.json").is_file() or (p / CLASSES_FILE).is_file())
    )


def default_model_dir(cfg: Config) -> Path | None:
    """The default model's directory: the one named in ``models/DEFAULT``, else ``models/default``, else None."""
    marker = cfg.models_dir / DEFAULT_MARKER
    if marker.is_file():
        named = cfg.models_dir / marker.read_text(encoding="utf-8").strip()
        if named.is_dir() and (named / MODEL_FILE).is_file():
            return named.resolve()
    fallback = cfg.models_dir / DEFAULT_NAME
    return fallback.resolve() if (fallback / MODEL_FILE).is_file() else None


def default_model(cfg: Config) -> LoadedModel | None:
    """Load the default model (see :func:`default_model_dir`), or None when there is none."""
    directory = default_model_dir(cfg)
    return load_model(directory) if directory is not None else None


def list_models(cfg: Config) -> list[ModelInfo]:
    """Every model directory in ``cfg.models_dir`` with its summary, the default one flagged."""
    default = default_model_dir(cfg)
    return [model_info(d, default=d.resolve() == default) for d in _model_dirs(cfg.models_dir)]


def set_default(cfg: Config, name: str) -> Path:
    """Mark a registered model as the default by writing its name into ``models/DEFAULT``."""
    if not (cfg.models_dir / name / MODEL_FILE).is_file():
        raise RegistryError(f"no registered model named {name!r} in {cfg.models_dir}")
    return write_text_atomic(cfg.models_dir / DEFAULT_MARKER, name + "\n")


def register_model(
    src_model_dir: str | Path, cfg: Config, name: str, make_default: bool = False, overwrite: bool = False
) -> Path:
    """Copy a model directory (e.g. a finished run's ``model/``) into the registry as ``models/<name>/``."""
    if not _NAME_RE.match(name):
        raise RegistryError(f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (max 64)")
    target = cfg.models_dir / name
    if target.exists() and not overwrite:
        raise RegistryError(f"a model named {name!r} already exists in {cfg.models_dir}")
    source = Path(src_model_dir).expanduser().resolve()
    load_model(source)
    _staged(target, lambda tmp: shutil.copytree(source, tmp, dirs_exist_ok=True))
    if make_default:
        set_default(cfg, name)
    return target.resolve()
