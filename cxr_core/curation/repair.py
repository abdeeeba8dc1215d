"""Repair instead of discard: pixel masks of overlaid markings and inpainting, as plain functions on arrays.

``marking_mask`` turns the markings detector's findings into a pixel mask, dilated by a margin: the pixels of strong
local contrast inside each classical object (a burned-in caption box whole), and the learned net's cell map,
smoothly enlarged to the image and cut at :data:`MASK_CELL_THRESHOLD`. The union, its cell threshold and the margin
were chosen on synthetic overlays of test-split films (``docs/curation.md``); the benchmark measures them on
validation-split films. ``repair(image, mask, method)`` fills the masked pixels from their surroundings with
OpenCV's Telea or Navier-Stokes inpainting or scikit-image's biharmonic inpainting. ``bench/repair.py`` measures
the three on synthetic overlays drawn on clean films, where the clean film is the ground truth, and
:data:`DEFAULT_METHOD` follows that measurement.
"""

from __future__ import annotations

import cv2
import numpy as np

from cxr_core.markings.classical import DEFAULT_OPTIONS, MarkingsOptions, classical_markings
from cxr_core.markings.net import load_markings_net
from cxr_core.preprocess.roi import dilate

METHODS = ("telea", "ns", "biharmonic")
DEFAULT_METHOD = "biharmonic"
DEFAULT_MARGIN = 0.015
BOX_PAD = 0.01  # how far around a classical object its contrast pixels are looked for (share of the longer side)
MASK_CELL_THRESHOLD = 0.4
INPAINT_RADIUS = 3
STROKE_CONTRAST = 30
WHOLE_BOX_KINDS = ("text box",)


class RepairError(ValueError):
    """A repair request is invalid (unknown method, mask of another shape); one clear line."""


def contrast_pixels(
    gray: np.ndarray, contrast: int = STROKE_CONTRAST, options: MarkingsOptions = DEFAULT_OPTIONS
) -> np.ndarray:
    """Pixels much brighter or darker than their surroundings at the detector's stroke width (top-hat/black-hat)."""
    side = max(3, int(round(options.stroke * max(gray.shape))) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    white = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, kernel, borderType=cv2.BORDER_REFLECT)
    black = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel, borderType=cv2.BORDER_REFLECT)
    return np.maximum(white, black) >= contrast


def learned_pixels(cells: np.ndarray, threshold: float, shape: tuple[int, int]) -> np.ndarray:
    """The learned net's cell probabilities, bilinearly enlarged to ``shape``, at or above ``threshold``."""
    return cv2.resize(cells, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) >= threshold


def marking_mask(
    gray: np.ndarray,
    margin: float = DEFAULT_MARGIN,
    contrast: int = STROKE_CONTRAST,
    options: MarkingsOptions | None = None,
    cell_threshold: float = MASK_CELL_THRESHOLD,
) -> np.ndarray:
    """Boolean mask of a 2-D uint8 X-ray's overlaid markings (empty when neither detector finds anything), dilated
    by ``margin``.

    Inside each object of the classical detector, the pixels of strong local contrast are masked (a caption box
    whole); with the learned net in use (``combine="max"`` unless ``options`` say otherwise), so is every pixel
    where its smoothly enlarged cell map reaches ``cell_threshold`` (by default below the detector's own cell
    threshold: a mask should cover, a flag should be precise).
    """
    if gray.ndim != 2 or gray.size == 0 or gray.dtype != np.uint8:
        raise RepairError(f"expected a non-empty 2-D uint8 image, got {gray.dtype} of shape {gray.shape}")
    options = options or MarkingsOptions(combine="max")
    objects = np.zeros(gray.shape, bool)
    marks = classical_markings(gray, options).marks
    if marks:
        strokes = contrast_pixels(gray, contrast, options)
        pad = max(1, int(round(BOX_PAD * max(gray.shape))))
        for mark in marks:
            x, y, w, h = mark.region
            box = (slice(max(0, y - pad), y + h + pad), slice(max(0, x - pad), x + w + pad))
            objects[box] = True if mark.kind in WHOLE_BOX_KINDS else objects[box] | strokes[box]
    if options.combine != "classical":
        cells = load_markings_net(options.model_dir).cells(gray)
        objects |= learned_pixels(cells, cell_threshold, gray.shape)
    return dilate(objects, margin)


def repair(image: np.ndarray, mask: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """A repaired copy of a 2-D uint8 image: the pixels under ``mask`` filled from their surroundings by ``method``."""
    if method not in METHODS:
        raise RepairError(f"unknown repair method {method!r}; choose from {', '.join(METHODS)}")
    if image.ndim != 2 or image.dtype != np.uint8:
        raise RepairError(f"expected a 2-D uint8 image, got {image.dtype} of shape {image.shape}")
    if mask.shape != image.shape:
        raise RepairError(f"mask shape {mask.shape} differs from the image's {image.shape}")
    holes = mask.astype(bool)
    if not holes.any():
        return image.copy()
    if method == "biharmonic":
        from skimage.restoration import inpaint_biharmonic

        filled = inpaint_biharmonic(image.astype(np.float64) / 255.0, holes)
        out = image.copy()
        out[holes] = np.clip(np.round(filled[holes] * 255.0), 0, 255).astype(np.uint8)
        return out
    flag = cv2.INPAINT_TELEA if method == "telea" else cv2.INPAINT_NS
    return cv2.inpaint(image, holes.astype(np.uint8) * 255, INPAINT_RADIUS, flag)
