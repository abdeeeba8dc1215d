"""Mask geometry for a lung region of interest: growing a mask and its bounding box, plain functions on arrays.

The lung masks themselves come from :mod:`cxr_core.lungs`, a layer above preprocessing: code that preprocesses for a
model with a lung ROI passes a mask, or a :data:`Segment` function such as ``cxr_core.lungs.lung_mask``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

Segment = Callable[[np.ndarray], np.ndarray]
"""A function from a 2-D gray image to its bool lung mask of the same shape."""


def dilate(mask: np.ndarray, fraction: float = 0.03) -> np.ndarray:
    """``mask`` (bool) grown by ``fraction`` of its longer side, at least one pixel when positive (elliptical kernel)."""
    if fraction <= 0:
        return mask.astype(bool)
    radius = max(1, round(fraction * max(mask.shape)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


def bounding_box(mask: np.ndarray, margin: float = 0.05) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the mask's bounding box grown by ``margin`` of the image size; whole image if empty."""
    height, width = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, height, 0, width
    dy, dx = round(margin * height), round(margin * width)
    return max(0, rows[0] - dy), min(height, rows[-1] + 1 + dy), max(0, cols[0] - dx), min(width, cols[-1] + 1 + dx)


LUNG_STANDARDISATION = ("none", "zscore", "histogram")
"""Per-image intensity standardisation inside the lungs: none, a z-score, or matching a fixed reference histogram."""
REFERENCE_MEAN, REFERENCE_SD = 128.0, 42.5
"""The lungs' gray levels after standardisation: mean 128 and standard deviation 42.5 (so +-3 sd spans 0-255)."""


def standardise_lungs(gray: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    """``gray`` (uint8) with its gray levels mapped so that the pixels under ``mask`` match the reference.

    ``zscore`` shifts and scales them to mean 128 and sd 42.5; ``histogram`` maps their distribution onto a normal
    one with that mean and sd (histogram matching to a fixed reference). The same map applies to the whole image,
    so the rest keeps its place relative to the lungs. An empty mask leaves the image as it is.
    """
    if how not in LUNG_STANDARDISATION:
        raise ValueError(f"lung standardisation must be one of {LUNG_STANDARDISATION}, got {how!r}")
    lungs = gray[mask.astype(bool)]
    if how == "none" or lungs.size == 0:
        return gray.copy()
    levels = np.arange(256, dtype=np.float64)
    if how == "zscore":
        spread = max(float(lungs.std()), 1e-3)
        table = REFERENCE_MEAN + REFERENCE_SD * (levels - float(lungs.mean())) / spread
    else:
        from scipy.special import ndtri

        counts = np.bincount(lungs.ravel(), minlength=256).astype(np.float64)
        below = (np.cumsum(counts) - counts / 2) / counts.sum()
        table = REFERENCE_MEAN + REFERENCE_SD * ndtri(np.clip(below, 1e-4, 1 - 1e-4))
    return np.clip(np.rint(table), 0, 255).astype(np.uint8)[gray]
