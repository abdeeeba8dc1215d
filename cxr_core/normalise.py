"""Contrast normalisation methods: pure functions ``(gray uint8, **params) -> gray uint8`` in a registry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np


class NormaliseError(ValueError):
    """A normalisation input or parameter is invalid."""


@dataclass(frozen=True)
class Method:
    """A registered normalisation method with its default parameters."""

    name: str
    func: Callable[..., np.ndarray]
    defaults: dict[str, Any]
    summary: str


METHODS: dict[str, Method] = {}


def register(name: str, summary: str, **defaults: Any) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Decorator adding a method to :data:`METHODS` under ``name`` with its defaults."""

    def decorate(func: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        METHODS[name] = Method(name, func, dict(defaults), summary)
        return func

    return decorate


def check_gray(image: np.ndarray) -> np.ndarray:
    """Validate a 2-D uint8 image and return it unchanged."""
    if not isinstance(image, np.ndarray):
        raise NormaliseError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim != 2:
        raise NormaliseError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise NormaliseError(f"expected dtype uint8, got {image.dtype}")
    if image.size == 0:
        raise NormaliseError("image is empty")
    return image


def normalise(image: np.ndarray, method: str = "clahe", **params: Any) -> np.ndarray:
    """Apply the registered ``method`` with ``params`` over its defaults; returns uint8 of the same shape."""
    if method not in METHODS:
        raise NormaliseError(f"unknown normalisation method {method!r}; choose from {sorted(METHODS)}")
    entry = METHODS[method]
    unknown = set(params) - set(entry.defaults)
    if unknown:
        raise NormaliseError(f"{method} takes no parameter(s) {sorted(unknown)}; it takes {sorted(entry.defaults)}")
    out = entry.func(check_gray(image), **{**entry.defaults, **params})
    return np.ascontiguousarray(out, dtype=np.uint8)


@register("none", "No change.")
def identity(image: np.ndarray) -> np.ndarray:
    """Return the image unchanged (a copy)."""
    return image.copy()


@register("clahe", "OpenCV contrast-limited adaptive histogram equalisation.", clip_limit=2.0, tile_grid=8)
def clahe(image: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """CLAHE with ``clip_limit`` and a ``tile_grid`` x ``tile_grid`` grid of tiles."""
    if clip_limit <= 0 or int(tile_grid) < 1:
        raise NormaliseError("clahe needs clip_limit > 0 and tile_grid >= 1")
    return cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(int(tile_grid), int(tile_grid))).apply(image)


@register("local_rank_eq", "The paper's scikit-image local histogram equalisation over a disk.", radius=70)
def local_rank_eq(image: np.ndarray, radius: int = 70) -> np.ndarray:
    """scikit-image ``filters.rank.equalize(image, disk(radius))`` (slow: tens of ms per image)."""
    from skimage.filters import rank
    from skimage.morphology import disk

    if int(radius) < 1:
        raise NormaliseError("local_rank_eq needs radius >= 1")
    return rank.equalize(image, footprint=disk(int(radius)))
