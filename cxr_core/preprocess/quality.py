"""Image quality measures of 2-D uint8 X-rays: contrast, entropy, brightness, clipping and sharpness.

Plain functions on arrays (no I/O) plus :func:`quality_measures` for all of them at once and
:func:`measure_files` for a table over image files. Used by the Normalisation page and by curation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cxr_core.data.imaging import ImageReadError, read_image
from cxr_core.preprocess.normalise import NormaliseError, check_gray

MEASURES: dict[str, str] = {
    "rms_contrast": "RMS contrast: standard deviation of intensities scaled to [0, 1] (0 to 0.5)",
    "entropy": "Shannon entropy of the 256-bin histogram in bits (0 to 8)",
    "mean_brightness": "mean intensity scaled to [0, 1]",
    "clipped_fraction": "fraction of pixels at 0 or 255 (0 to 1)",
    "sharpness": "variance of the 3x3 Laplacian (higher = sharper; depends on image size)",
}
"""Name and one-line meaning of every measure, in the order :func:`quality_measures` returns them."""


def histogram(image: np.ndarray) -> np.ndarray:
    """Counts of each gray level 0..255 (int64, length 256)."""
    return np.bincount(check_gray(image).ravel(), minlength=256)


def rms_contrast(image: np.ndarray) -> float:
    """Standard deviation of the intensities scaled to [0, 1]: 0 for a constant image, at most 0.5."""
    return float(check_gray(image).std() / 255.0)


def entropy(image: np.ndarray) -> float:
    """Shannon entropy of the gray-level histogram in bits: 0 for a constant image, at most 8."""
    counts = histogram(image)
    p = counts[counts > 0] / counts.sum()
    return float(max(0.0, -(p * np.log2(p)).sum()))


def mean_brightness(image: np.ndarray) -> float:
    """Mean intensity scaled to [0, 1]."""
    return float(check_gray(image).mean() / 255.0)


def clipped_fraction(image: np.ndarray) -> float:
    """Fraction of pixels that are exactly 0 or 255 (saturated or clipped)."""
    counts = histogram(image)
    return float((counts[0] + counts[255]) / counts.sum())


def sharpness(image: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian (``cv2.Laplacian``, reflected borders): 0 for a constant image."""
    return float(cv2.Laplacian(check_gray(image), cv2.CV_64F).var())


_FUNCTIONS: dict[str, Callable[[np.ndarray], float]] = {
    "rms_contrast": rms_contrast,
    "entropy": entropy,
    "mean_brightness": mean_brightness,
    "clipped_fraction": clipped_fraction,
    "sharpness": sharpness,
}


def quality_measures(image: np.ndarray) -> dict[str, float]:
    """Every measure of :data:`MEASURES` for one image, keyed by name."""
    check_gray(image)
    return {name: func(image) for name, func in _FUNCTIONS.items()}


def signed_difference(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``after - before`` as int16 (-255..255): where a method brightened (> 0) or darkened (< 0) the image."""
    if check_gray(before).shape != check_gray(after).shape:
        raise NormaliseError(f"cannot compare images of shapes {before.shape} and {after.shape}")
    return after.astype(np.int16) - before.astype(np.int16)


def measure_files(
    paths: Sequence[str | Path],
    progress: Callable[[int, int], None] | None = None,
    **read_kwargs: object,
) -> pd.DataFrame:
    """One row per file: ``path`` (as given), every measure, and ``error`` ("" when readable, measures NaN otherwise)."""
    rows: list[dict[str, object]] = []
    for done, path in enumerate(paths, start=1):
        try:
            row: dict[str, object] = {**quality_measures(read_image(path, **read_kwargs)), "error": ""}
        except ImageReadError as exc:
            row = {**{name: float("nan") for name in MEASURES}, "error": str(exc)}
        rows.append({"path": str(path), **row})
        if progress is not None:
            progress(done, len(paths))
    return pd.DataFrame(rows, columns=["path", *MEASURES, "error"])
