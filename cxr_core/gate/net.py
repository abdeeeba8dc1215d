"""The gate's learned score: a tiny CNN that tells an upright frontal chest X-ray from rotated, inverted and other pictures.

The net sees the image squashed to ``size`` px (raw grey levels, no contrast stretch: polarity matters) and gives a
softmax over :data:`KINDS`. P("frontal") is the gate's content score. It is trained on the sample's training-split
X-rays and on procedural negatives only (:mod:`cxr_core.gate.negatives`, :mod:`cxr_core.gate.train`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxr_core.data.imaging import sha256_file
from cxr_core.util.keras_files import load_keras_safely

GATE_MODEL_ENV = "CXR_GATE_MODEL"
OFF = "off"
MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "models" / "gate"
KINDS = ("frontal", "rot90", "rot180", "rot270", "inverted", "other")
ROTATIONS = {"rot90": 1, "rot180": 2, "rot270": 3}


class GateModelError(RuntimeError):
    """The gate model is missing or unreadable."""


def build_net(size: int = 64, width: int = 16) -> Any:
    """Four conv-BN-ReLU stages with pooling, global average and max pooling, a small dense head (functional)."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1 / 255.0)(inputs)
    for stage, filters in enumerate((width, 2 * width, 4 * width, 8 * width)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{stage}")(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        if stage < 3:
            x = layers.MaxPooling2D(2)(x)
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    x = layers.Dropout(0.2)(layers.Dense(64, activation="relu")(x))
    outputs = layers.Dense(len(KINDS), activation="softmax", name="kinds")(x)
    return keras.Model(inputs, outputs, name="gate_net")


def prepare(gray: np.ndarray, size: int) -> np.ndarray:
    """The net's input: a 2-D uint8 image squashed to ``size`` (float32 grey levels, shape (size, size, 1))."""
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"expected a non-empty 2-D grayscale image, got shape {gray.shape}")
    gray = gray if gray.dtype == np.uint8 else np.clip(gray, 0, 255).astype(np.uint8)
    interpolation = cv2.INTER_AREA if max(gray.shape) > size else cv2.INTER_LINEAR
    return cv2.resize(gray, (size, size), interpolation=interpolation).astype(np.float32)[..., None]


@dataclass
class GateNet:
    """A loaded gate net, the threshold on P(frontal) chosen when it was trained, and its digest."""

    model: Any
    threshold: float = 0.5
    digest: str = "in-memory"
    _forward: Any = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """Input side in px."""
        return int(self.model.input_shape[1])

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Softmax over :data:`KINDS` for several 2-D images, shape (n, len(KINDS))."""
        if len(images) == 0:
            return np.zeros((0, len(KINDS)), np.float32)
        if self._forward is None:
            import tensorflow as tf

            self._forward = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        batch = np.stack([prepare(img, self.size) for img in images])
        return np.asarray(self._forward(batch), dtype=np.float32)


def model_dir(path: str | Path | None = None) -> Path | None:
    """The gate model directory: ``path``, else $CXR_GATE_MODEL, else the shipped ``models/gate``; None when "off"."""
    chosen = str(path or os.environ.get(GATE_MODEL_ENV) or SHIPPED_DIR)
    return None if chosen == OFF else Path(chosen).expanduser().resolve()


@functools.lru_cache(maxsize=2)
def _load(directory: Path) -> GateNet:
    """Load (once per process) the net and threshold saved in ``directory``, in Keras safe mode."""
    model = load_keras_safely(
        directory / MODEL_FILE,
        GateModelError,
        "gate model",
        f"train one with `cxr train-gate`, or set {GATE_MODEL_ENV}=off to skip the content check",
    )
    card = directory / CARD_FILE
    threshold = float(json.loads(card.read_text(encoding="utf-8")).get("threshold", 0.5)) if card.is_file() else 0.5
    return GateNet(model, threshold, sha256_file(directory / MODEL_FILE)[:12])


def load_gate_net(path: str | Path | None = None) -> GateNet | None:
    """The gate net from ``path`` / $CXR_GATE_MODEL / the shipped model (cached), or None when switched off."""
    directory = model_dir(path)
    return None if directory is None else _load(directory)
