"""The learned markings detector: a tiny fully convolutional net that scores each cell of a coarse grid.

The net sees the image squashed to ``size`` px (no contrast stretch: pure white and black matter) and outputs
P(overlay in this cell) on a grid of ``size / 16`` cells per side. The image score is the highest cell; the cells
above a threshold, joined into connected groups, are the regions. It is trained only on synthetic overlays
(:mod:`cxr_core.markings.synth`, :mod:`cxr_core.markings.train`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxr_core.data.imaging import sha256_file
from cxr_core.util.keras_files import load_keras_safely

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
STRIDE = 16

Region = tuple[int, int, int, int]


class MarkingsModelError(RuntimeError):
    """The learned markings model is missing or unreadable."""


def build_net(size: int = 256, width: int = 32) -> Any:
    """The cell classifier: two strided convs, separable conv blocks, dilated context, 1x1 sigmoid head (functional)."""
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1 / 255.0)(inputs)
    for i, filters in enumerate((width // 2, width)):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"stem{i}")(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))

    def block(x: Any, filters: int, name: str, dilation: int = 1) -> Any:
        """Separable 3x3 conv, batch norm, ReLU."""
        x = layers.SeparableConv2D(filters, 3, padding="same", dilation_rate=dilation, use_bias=False, name=name)(x)
        return layers.ReLU()(layers.BatchNormalization()(x))

    x = layers.MaxPooling2D(2)(block(x, width, "sep0"))
    x = layers.MaxPooling2D(2)(block(block(x, 2 * width, "sep1a"), 2 * width, "sep1b"))
    x = block(x, 3 * width, "context1", dilation=2)
    x = block(x, 3 * width, "context2", dilation=2)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="cells")(x)
    return keras.Model(inputs, outputs, name="markings_net")


def gray_uint8(gray: np.ndarray) -> np.ndarray:
    """A non-empty 2-D image as uint8 (other dtypes clipped to 0-255); ValueError for anything else."""
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"expected a non-empty 2-D grayscale image, got shape {gray.shape}")
    return gray if gray.dtype == np.uint8 else np.clip(gray, 0, 255).astype(np.uint8)


def prepare(gray: np.ndarray, size: int) -> np.ndarray:
    """The net's input: a 2-D image squashed to ``size`` (uint8 values as float32, shape (size, size, 1))."""
    gray = gray_uint8(gray)
    small = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA if max(gray.shape) > size else cv2.INTER_LINEAR)
    return small.astype(np.float32)[..., None]


def cell_regions(cells: np.ndarray, threshold: float, shape: tuple[int, int]) -> list[Region]:
    """Bounding boxes (x, y, w, h), in an image of ``shape``, of the 8-connected groups of cells >= threshold."""
    hot = (cells >= threshold).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
    sy, sx = shape[0] / cells.shape[0], shape[1] / cells.shape[1]
    return [
        (int(x * sx), int(y * sy), int(round(w * sx)), int(round(h * sy)))
        for x, y, w, h, _ in (stats[i] for i in range(1, n))
    ]


class MarkingsNet:
    """A loaded markings net; :meth:`cells` gives the probability grid of an image, :meth:`score` its maximum."""

    def __init__(self, model: Any, digest: str = "in-memory") -> None:
        """Wrap a Keras model with input (size, size, 1) and a sigmoid cell grid as output."""
        self.model = model
        self.size = int(model.input_shape[1])
        self.digest = digest

    def cells_batch(self, images: list[np.ndarray]) -> np.ndarray:
        """Cell probability grids of several 2-D images, shape (n, size / 16, size / 16)."""
        batch = np.stack([prepare(img, self.size) for img in images])
        return np.asarray(self.model(batch, training=False), dtype=np.float32)[..., 0]

    def cells(self, gray: np.ndarray) -> np.ndarray:
        """Cell probability grid of one 2-D image."""
        return self.cells_batch([gray])[0]

    def score(self, gray: np.ndarray) -> float:
        """P(the image carries an overlay): the highest cell probability, in [0, 1]."""
        return float(self.cells(gray).max())


def model_dir(path: str | Path | None = None) -> Path:
    """The model directory: ``path``, else the configuration's (``$CXR_MARKINGS_MODEL``, else
    ``<models_dir>/markings``)."""
    from cxr_core.config import load_config

    return Path(path or load_config().markings_model_dir).expanduser().resolve()


def model_digest(path: str | Path | None = None) -> str:
    """Short SHA-256 of the model file (keys caches of scores to the exact model), or "none" when it is missing."""
    file = model_dir(path) / MODEL_FILE
    return sha256_file(file)[:12] if file.is_file() else "none"


@functools.lru_cache(maxsize=2)
def _load(directory: Path) -> MarkingsNet:
    """Load (once per process) the net saved in ``directory`` in Keras safe mode."""
    model = load_keras_safely(
        directory / MODEL_FILE, MarkingsModelError, "markings model", "train one with `cxr train-markings`"
    )
    return MarkingsNet(model, model_digest(directory))


def load_markings_net(path: str | Path | None = None) -> MarkingsNet:
    """The markings net from ``path`` / $CXR_MARKINGS_MODEL / the shipped model, cached per process."""
    return _load(model_dir(path))
