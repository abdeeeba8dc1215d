"""Lung-field segmentation: the shipped U-Net, ``lung_mask(image)`` at any size, plausibility flags and a mask cache."""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxr_core.config import LUNGS_MODEL_ENV, Config, load_config
from cxr_core.data.imaging import sha256_file
from cxr_core.util.keras_files import load_keras_safely

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"


class LungModelError(RuntimeError):
    """The lung segmenter is missing or unreadable."""


@dataclass(frozen=True)
class MaskChecks:
    """Plausibility limits for a lung mask (fractions of the image area)."""

    min_area: float = 0.08
    max_area: float = 0.75
    min_second_share: float = 0.15
    max_uncertain: float = 0.18


@dataclass(frozen=True)
class LungSegmentation:
    """One image's lung mask (bool, input size), area, components, uncertain band (relative to the area) and flags."""

    mask: np.ndarray
    area_fraction: float
    components: int
    uncertain_fraction: float
    flags: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when no plausibility check failed."""
        return not self.flags


def prepare(gray: np.ndarray, size: int) -> np.ndarray:
    """The segmenter's input: a 2-D uint8 image squashed to ``size`` and histogram-equalised (uint8)."""
    if gray.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    if gray.dtype != np.uint8:
        gray = np.clip(gray, 0, 255).astype(np.uint8)
    return cv2.equalizeHist(cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA))


def keep_two_largest(mask: np.ndarray) -> np.ndarray:
    """Keep the two largest 8-connected components of a bool mask and fill their holes."""
    from scipy import ndimage

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(mask, dtype=bool)
    order = np.argsort(stats[1:, cv2.CC_STAT_AREA])[::-1][:2] + 1
    return ndimage.binary_fill_holes(np.isin(labels, order))


def count_components(mask: np.ndarray) -> tuple[int, list[int]]:
    """Number of 8-connected components of a bool mask and their areas, largest first."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    areas = sorted((int(a) for a in stats[1:, cv2.CC_STAT_AREA]), reverse=True)
    return count - 1, areas


def plausibility_flags(mask: np.ndarray, probability: np.ndarray, checks: MaskChecks = MaskChecks()) -> tuple[str, ...]:
    """Flags for a mask that is empty, too small or large, one-sided or uncertain (model resolution)."""
    area = float(mask.mean())
    if area == 0.0:
        return ("empty",)
    flags = []
    if area < checks.min_area:
        flags.append("area_low")
    if area > checks.max_area:
        flags.append("area_high")
    _, areas = count_components(mask)
    if len(areas) < 2 or areas[1] < checks.min_second_share * areas[0]:
        flags.append("one_lung")
    if float(((probability > 0.2) & (probability < 0.8)).mean()) / area > checks.max_uncertain:
        flags.append("uncertain")
    return tuple(flags)


class LungSegmenter:
    """The loaded segmenter with its input size; call :meth:`segment` on any number of images."""

    def __init__(self, model: Any, size: int, path: Path | None = None, checks: MaskChecks = MaskChecks()) -> None:
        """Wrap a Keras model whose input is ``(size, size, 1)`` uint8-valued and output a lung probability map."""
        self.model = model
        self.size = size
        self.path = path
        self.checks = checks
        self.digest = sha256_file(path / MODEL_FILE)[:12] if path else "in-memory"

    def probabilities(self, images: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """Lung probability maps at model resolution, shape (n, size, size)."""
        batch = np.stack([prepare(img, self.size) for img in images]).astype(np.float32)[..., None]
        out = (
            self.model.predict_on_batch(batch)
            if len(batch) <= batch_size
            else self.model.predict(batch, batch_size=batch_size, verbose=0)
        )
        return np.asarray(out, dtype=np.float32)[..., 0]

    def segment(self, images: Sequence[np.ndarray], batch_size: int = 16) -> list[LungSegmentation]:
        """Segment 2-D uint8 images of any size; masks come back at each input's size."""
        results = []
        for img, prob in zip(images, self.probabilities(images, batch_size)):
            small = keep_two_largest(prob >= 0.5)
            full = keep_two_largest(cv2.resize(prob, img.shape[::-1], interpolation=cv2.INTER_LINEAR) >= 0.5)
            components, _ = count_components(full)
            uncertain = float(((prob > 0.2) & (prob < 0.8)).mean()) / max(float(small.mean()), 1e-6)
            results.append(
                LungSegmentation(
                    full, float(full.mean()), components, uncertain, plausibility_flags(small, prob, self.checks)
                )
            )
        return results


def model_dir(path: str | Path | None = None, cfg: Config | None = None) -> Path:
    """The segmenter directory: ``path``, else the config's (``$CXR_LUNGS_MODEL``, else ``<models_dir>/lungs``)."""
    if path:
        return Path(path).expanduser().resolve()
    return (cfg or load_config()).lungs_model_dir


@functools.lru_cache(maxsize=4)
def _load(directory: Path) -> LungSegmenter:
    """Load a segmenter directory once per process."""
    model = load_keras_safely(
        directory / MODEL_FILE, LungModelError, "lung segmenter", f"run `cxr train-lungs` or set {LUNGS_MODEL_ENV}"
    )
    card = directory / CARD_FILE
    size = int(model.input_shape[1])
    if card.is_file():
        size = int(json.loads(card.read_text(encoding="utf-8")).get("config", {}).get("size", size))
    return LungSegmenter(model, size, directory)


_LOAD_LOCK = threading.Lock()


def load_segmenter(path: str | Path | None = None, cfg: Config | None = None) -> LungSegmenter:
    """The cached segmenter from ``path`` (default: the config's, see :func:`model_dir`); thread-safe."""
    with _LOAD_LOCK:
        return _load(model_dir(path, cfg))


class _MaskMemo:
    """A bounded in-memory cache of masks keyed by image content (training re-segments the same images)."""

    def __init__(self, capacity: int = 2048) -> None:
        """Create an empty cache holding at most ``capacity`` masks."""
        self.capacity = capacity
        self.items: OrderedDict[str, LungSegmentation] = OrderedDict()
        self.lock = threading.Lock()

    def key(self, gray: np.ndarray, segmenter: LungSegmenter) -> str:
        """Content key of an image for one segmenter."""
        digest = hashlib.blake2b(np.ascontiguousarray(gray).tobytes(), digest_size=16)
        digest.update(f"{gray.shape}{segmenter.digest}".encode())
        return digest.hexdigest()

    def get(self, key: str) -> LungSegmentation | None:
        """A cached segmentation or None."""
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
            return None

    def put(self, key: str, value: LungSegmentation) -> None:
        """Store a segmentation, evicting the oldest beyond capacity."""
        with self.lock:
            self.items[key] = value
            if len(self.items) > self.capacity:
                self.items.popitem(last=False)


_MEMO = _MaskMemo()


def segment(gray: np.ndarray, segmenter: LungSegmenter | None = None) -> LungSegmentation:
    """Segment one image (memoised by content) with the shipped or given segmenter."""
    segmenter = segmenter or load_segmenter()
    key = _MEMO.key(gray, segmenter)
    cached = _MEMO.get(key)
    if cached is None:
        cached = segmenter.segment([gray])[0]
        _MEMO.put(key, cached)
    return cached


def lung_mask(gray: np.ndarray, segmenter: LungSegmenter | None = None) -> np.ndarray:
    """The bool lung mask of a 2-D image at the image's own size (two largest components, holes filled)."""
    return segment(gray, segmenter).mask


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient of two bool masks (1.0 when both are empty)."""
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & truth).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    union = int((pred | truth).sum())
    return 1.0 if union == 0 else int((pred & truth).sum()) / union
