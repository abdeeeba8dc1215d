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
