"""Where a heatmap puts its mass: central thorax vs border vs corners, inside the lungs, over marking regions.

Plain functions on arrays. The three geometric regions partition the image: ``corners`` are four squares of
``corner`` x the image side, ``border`` is the rest of an outer band of ``border`` x the side, ``thorax`` is
everything else. Heatmaps that sit on the border, corners or burned-in markings point to shortcut learning
(DeGrave et al. 2021); :func:`attention_warning` says so in plain words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

Box = tuple[int, int, int, int]

COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "hot": cv2.COLORMAP_HOT,
}


class AttentionError(ValueError):
    """Heatmap, mask or region arguments do not fit together."""


@dataclass(frozen=True)
class RegionLayout:
    """Sizes of the border band and corner squares as fractions of the image height/width."""

    border: float = 0.08
    corner: float = 0.15

    def __post_init__(self) -> None:
        """Refuse bands or corners that leave no central region."""
        if not 0 < self.border < 0.5 or not 0 < self.corner < 0.5:
            raise AttentionError("border and corner fractions must lie in (0, 0.5)")


@dataclass(frozen=True)
class AttentionShares:
    """Fractions of heatmap mass per region (None when the heatmap is empty or the region was not given)."""

    thorax: float | None
    border: float | None
    corners: float | None
    lungs: float | None = None
    markings: float | None = None
    thorax_area: float = 0.0

    @property
    def outside_thorax(self) -> float | None:
        """Share on the border and in the corners together."""
        if self.border is None or self.corners is None:
            return None
        return self.border + self.corners

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (rounded to 4 decimals)."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def region_masks(shape: tuple[int, int], layout: RegionLayout = RegionLayout()) -> dict[str, np.ndarray]:
    """Boolean masks ``thorax``, ``border`` and ``corners`` partitioning an image of ``shape``."""
    height, width = int(shape[0]), int(shape[1])
    by, bx = max(1, round(layout.border * height)), max(1, round(layout.border * width))
    cy, cx = max(1, round(layout.corner * height)), max(1, round(layout.corner * width))
    corners = np.zeros((height, width), bool)
    for rows in (slice(0, cy), slice(height - cy, height)):
        for cols in (slice(0, cx), slice(width - cx, width)):
            corners[rows, cols] = True
    band = np.ones((height, width), bool)
    band[by : height - by, bx : width - bx] = False
    border = band & ~corners
    return {"thorax": ~(band | corners), "border": border, "corners": corners}


def boxes_mask(shape: tuple[int, int], boxes: Sequence[Box]) -> np.ndarray:
    """Boolean union of ``(x, y, width, height)`` pixel boxes, clipped to the image."""
    mask = np.zeros((int(shape[0]), int(shape[1])), bool)
    for x, y, w, h in boxes:
        mask[max(0, int(y)) : max(0, int(y + h)), max(0, int(x)) : max(0, int(x + w))] = True
    return mask


def _share(heat: np.ndarray, total: float, mask: np.ndarray) -> float:
    """Fraction of ``total`` heat inside ``mask``."""
    return float(heat[mask].sum() / total)


def attention_shares(
    heatmap: np.ndarray,
    *,
    lung_mask: np.ndarray | None = None,
    boxes: Sequence[Box] = (),
    layout: RegionLayout = RegionLayout(),
) -> AttentionShares:
    """Share of heatmap mass in thorax/border/corners, inside a lung mask and over marking boxes when given."""
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.ndim != 2:
        raise AttentionError(f"expected a 2-D heatmap, got shape {heat.shape}")
    if lung_mask is not None and np.shape(lung_mask) != heat.shape:
        raise AttentionError(f"lung mask shape {np.shape(lung_mask)} differs from heatmap shape {heat.shape}")
    heat = np.clip(np.nan_to_num(heat), 0.0, None)
    regions = region_masks(heat.shape, layout)
    thorax_area = float(regions["thorax"].mean())
    total = float(heat.sum())
    if total <= 0:
        return AttentionShares(None, None, None, None, None, thorax_area)
    lungs = _share(heat, total, np.asarray(lung_mask) > 0) if lung_mask is not None else None
    markings = _share(heat, total, boxes_mask(heat.shape, boxes)) if len(boxes) else None
    return AttentionShares(
        thorax=_share(heat, total, regions["thorax"]),
        border=_share(heat, total, regions["border"]),
        corners=_share(heat, total, regions["corners"]),
        lungs=lungs,
        markings=markings,
        thorax_area=thorax_area,
    )


def attention_warning(
    shares: AttentionShares, minimum_inside: float = 0.5, maximum_markings: float = 0.2
) -> str | None:
    """A plain-language warning when the heatmap sits mostly outside the thorax/lungs or on markings, else None."""
    if shares.thorax is None:
        return "The explanation is empty for this class: the heatmap cannot show where the model looked."
    notes = []
    if shares.lungs is not None and shares.lungs < minimum_inside:
        notes.append(f"only {shares.lungs:.0%} of the heatmap lies inside the lungs")
    if shares.thorax < minimum_inside:
        notes.append(
            f"only {shares.thorax:.0%} lies in the central thorax region ({shares.outside_thorax:.0%} on the border and corners)"
        )
    if shares.markings is not None and shares.markings > maximum_markings:
        notes.append(f"{shares.markings:.0%} lies on detected markings (text, arrows)")
    if not notes:
        return None
    return (
        "Most of the model's attention is outside the chest: " + "; ".join(notes) + ". "
        "It may be using shortcuts (borders, text, devices) rather than the lungs; do not trust this prediction."
    )


def colorize(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """A [0, 1] heatmap as a uint8 RGB image through an OpenCV colormap."""
    if colormap not in COLORMAPS:
        raise AttentionError(f"unknown colormap {colormap!r}; choose from {sorted(COLORMAPS)}")
    levels = np.clip(np.rint(np.asarray(heatmap, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(levels, COLORMAPS[colormap]), cv2.COLOR_BGR2RGB)


def overlay(gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, colormap: str = "jet") -> np.ndarray:
    """Blend a colorized heatmap over a grayscale image; uint8 RGB of the image's shape (heatmap resized if needed)."""
    if not 0.0 <= alpha <= 1.0:
        raise AttentionError(f"alpha must lie in [0, 1], got {alpha}")
    if gray.ndim != 2:
        raise AttentionError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.shape != gray.shape:
        heat = cv2.resize(heat, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    base = cv2.cvtColor(np.asarray(gray, dtype=np.uint8), cv2.COLOR_GRAY2RGB).astype(np.float32)
    blended = (1.0 - alpha) * base + alpha * colorize(heat, colormap).astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def outline(
    rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 0), thickness: int = 2
) -> np.ndarray:
    """A copy of an RGB image with the contour of a binary mask (e.g. the lungs) drawn on it."""
    contours, _ = cv2.findContours((np.asarray(mask) > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = np.ascontiguousarray(rgb).copy()
    cv2.drawContours(out, contours, -1, color, thickness)
    return out


def outline_gray(gray: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 0)) -> np.ndarray:
    """A 2-D uint8 image as RGB with the contour of a same-shaped binary mask drawn on it."""
    if gray.ndim != 2 or mask.shape != gray.shape:
        raise AttentionError(f"expected a 2-D image and a mask of its shape, got {gray.shape} and {mask.shape}")
    return outline(cv2.cvtColor(np.asarray(gray, dtype=np.uint8), cv2.COLOR_GRAY2RGB), mask, color)


def draw_boxes(rgb: np.ndarray, boxes: Sequence[Box], color: tuple[int, int, int] = (255, 64, 0)) -> np.ndarray:
    """A copy of an RGB image with each ``(x, y, width, height)`` box outlined."""
    out = np.ascontiguousarray(rgb).copy()
    thickness = max(1, round(max(out.shape[:2]) / 300))
    for x, y, w, h in boxes:
        cv2.rectangle(out, (int(x), int(y)), (int(x + w), int(y + h)), color, thickness)
    return out


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode a uint8 RGB (or grayscale) image as PNG bytes."""
    image = np.asarray(rgb, dtype=np.uint8)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    if not ok:
        raise AttentionError("PNG encoding failed")
    return encoded.tobytes()
