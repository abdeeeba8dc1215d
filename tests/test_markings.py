"""Markings detector on synthetic images: overlays are flagged and located, clean images and corner letters are not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import synthetic_xray
from cxr_core.markings.classical import DEFAULT_THRESHOLD, detect_markings, outline_regions

SIZE = 256


def gradient(seed: int = 0) -> np.ndarray:
    """A smooth horizontal gradient with mild noise (no structure at all)."""
    base = np.tile(np.linspace(60, 200, SIZE), (SIZE, 1))
    noise = np.random.default_rng(seed).normal(0, 4, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def overlaps(region: tuple[int, int, int, int], box: tuple[int, int, int, int]) -> bool:
    """Whether two (x, y, w, h) boxes intersect."""
    x, y, w, h = region
    bx, by, bw, bh = box
    return x < bx + bw and bx < x + w and y < by + bh and by < y + h


def test_clean_gradient_is_not_flagged() -> None:
    result = detect_markings(gradient())
    assert result.score < DEFAULT_THRESHOLD
    assert result.regions == []


def test_gradient_with_arrow_and_text_is_flagged_and_located() -> None:
    image = gradient()
    cv2.arrowedLine(image, (80, 150), (140, 110), 255, 2, tipLength=0.3)
    cv2.putText(image, "DAY 6", (60, 220), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)
    result = detect_markings(image)
    assert result.score >= DEFAULT_THRESHOLD
    assert any(overlaps(r, (80, 110, 60, 40)) for r in result.regions)
    assert any(overlaps(r, (60, 200, 100, 22)) for r in result.regions)
    assert "arrow" in {m.kind for m in result.marks}


def test_black_arrow_on_a_chest_like_image_is_flagged() -> None:
    clean = synthetic_xray(np.random.default_rng(1), SIZE)
    marked = clean.copy()
    cv2.arrowedLine(marked, (150, 170), (100, 120), 0, 2, tipLength=0.3)
    assert detect_markings(clean).score < DEFAULT_THRESHOLD
    assert detect_markings(marked).score >= DEFAULT_THRESHOLD


def test_drawn_rectangle_outline_is_flagged() -> None:
    image = synthetic_xray(np.random.default_rng(2), SIZE)
    cv2.rectangle(image, (40, 60), (110, 190), 255, 1)
    result = detect_markings(image)
    assert result.score >= DEFAULT_THRESHOLD
    assert "rectangle" in {m.kind for m in result.marks}


def test_solid_caption_box_with_text_is_flagged() -> None:
    image = synthetic_xray(np.random.default_rng(3), SIZE)
    cv2.rectangle(image, (30, 200), (226, 240), 255, -1)
    cv2.putText(image, "H-12, I-14", (45, 230), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 0, 2)
    result = detect_markings(image)
    assert result.score >= DEFAULT_THRESHOLD
    assert "text box" in {m.kind for m in result.marks}


def test_small_corner_letter_is_ignored() -> None:
    image = synthetic_xray(np.random.default_rng(4), SIZE)
    cv2.putText(image, "L", (226, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    cv2.putText(image, "R", (8, 120), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    assert detect_markings(image).score == 0.0


def test_regions_scale_back_to_large_images() -> None:
    image = cv2.resize(gradient(), (1024, 1024), interpolation=cv2.INTER_LINEAR)
    cv2.rectangle(image, (200, 300), (600, 800), 255, 4)
    result = detect_markings(image)
    assert result.score >= DEFAULT_THRESHOLD
    x, y, w, h = result.regions[0]
    assert abs(x - 200) < 20 and abs(y - 300) < 20 and abs(w - 400) < 30 and abs(h - 500) < 30


def test_outline_regions_draws_on_an_rgb_copy() -> None:
    gray = gradient()
    rgb = outline_regions(gray, [(10, 10, 50, 50)])
    assert rgb.shape == (SIZE, SIZE, 3) and gray.ndim == 2
    assert tuple(rgb[10, 30]) == (255, 64, 0)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.uint8), np.zeros((0, 5), np.uint8)])
def test_bad_input_raises_a_clear_error(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="2-D grayscale"):
        detect_markings(bad)
