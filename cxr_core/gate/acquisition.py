"""Acquisition features: how a film was made (grey levels, noise, sharpness, frame), from its pixels as read.

They are computed on the grey image *before* the model's normalisation, which equalises away most of what tells one
hospital's films from another's. ``cxr_core.gate.familiarity``'s ``acquisition_knn`` method measures the distance
from these features to the model's training images; ``bench/gate.py`` compares it with the model-feature methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

SIZE = 256
QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
FRAME = 15
NAMES = (
    *(f"q{q:02d}" for q in QUANTILES),
    "mean",
    "std",
    "dark_share",
    "bright_share",
    "noise",
    "laplacian_256",
    "laplacian_128",
    "laplacian_ratio",
    "frame_minus_centre",
    "frame_std",
)


def acquisition_features(gray: np.ndarray) -> np.ndarray:
    """The :data:`NAMES` features of one 2-D uint8 image, as a float64 vector."""
    image = cv2.resize(np.asarray(gray, np.uint8), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    im = image.astype(np.float32)
    lo, hi = SIZE // 4, 3 * SIZE // 4
    centre = im[lo:hi, lo:hi]
    median = cv2.medianBlur(image, 3).astype(np.float32)[lo:hi, lo:hi]
    sharp = float(np.abs(cv2.Laplacian(im, cv2.CV_32F)).mean())
    small = cv2.resize(im, (SIZE // 2, SIZE // 2), interpolation=cv2.INTER_AREA)
    sharp_small = float(np.abs(cv2.Laplacian(small, cv2.CV_32F)).mean())
    frame = np.concatenate([im[:FRAME].ravel(), im[-FRAME:].ravel(), im[:, :FRAME].ravel(), im[:, -FRAME:].ravel()])
    return np.array(
        [
            *(np.percentile(im, QUANTILES) / 255),
            im.mean() / 255,
            im.std() / 255,
            (image <= 2).mean(),
            (image >= 253).mean(),
            np.median(np.abs(centre - median)),
            sharp,
            sharp_small,
            sharp / (sharp_small + 1e-6),
            (frame.mean() - centre.mean()) / 255,
            frame.std() / 255,
        ],
        np.float64,
    )


def acquisition_batch(images: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`acquisition_features` of every image, stacked ``(n, len(NAMES))``."""
    return np.stack([acquisition_features(im) for im in images]) if len(images) else np.zeros((0, len(NAMES)))
