"""Markings on both classes: paste synthetic arrows, boxes, ellipses, scribbles and captions onto Normal training
images, so that markings stop meaning COVID.

In public COVID-19 collections the marked films are the COVID ones (arrows at opacities, captions from papers), so a
classifier can learn "marked means COVID". Drawing the same kinds of markings on Normal images during training (the
painters of :mod:`cxr_core.markings.synth`) takes that away. Which images get markings, and which markings, follows
from a seed alone, so a resumed run draws the same ones.
"""

from __future__ import annotations

import numpy as np

from cxr_core.markings.synth import OverlayOptions, draw_overlays

MARKINGS_ONLY = OverlayOptions(corner_letter_rate=0.0, distractor_rate=0.0, marker_rate=0.0)
"""Markings only: no corner letters or padding bands, which both classes already have."""


def paint_normals(images: np.ndarray, is_normal: np.ndarray, seed: np.ndarray, probability: float) -> np.ndarray:
    """A copy of a float32 batch ``(b, s, s, 1)`` in 0-255 where each Normal image has synthetic markings with
    ``probability``; ``seed`` (ints) decides which images and which markings."""
    rng = np.random.default_rng([int(v) % 2**32 for v in np.ravel(seed)])
    out = np.array(images, dtype=np.float32, copy=True)
    for i in np.flatnonzero(np.ravel(is_normal)):
        if rng.random() < probability:
            film = np.clip(np.rint(out[i, ..., 0]), 0, 255).astype(np.uint8)
            out[i, ..., 0] = draw_overlays(film, rng, positive=True, options=MARKINGS_ONLY)[0]
    return out
