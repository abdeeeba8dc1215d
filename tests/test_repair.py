"""Repair of marked films: inpainting restores a synthetic overlay, the marking mask covers drawn strokes and spares a
clean film, bad requests are refused with one line."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import synthetic_xray
from cxr_core.curation.repair import DEFAULT_MARGIN, METHODS, RepairError, marking_mask, repair
from cxr_core.markings.net import STRIDE, load_markings_net
from cxr_core.markings.synth import OverlayOptions, draw_overlays
from cxr_core.preprocess.roi import dilate

CLEAN_ONLY = OverlayOptions(corner_letter_rate=0.0, distractor_rate=0.0, marker_rate=0.0)


def smooth_film(seed: int, size: int = 160) -> np.ndarray:
    """A smooth synthetic chest film (blurred, so inpainting has something to continue)."""
    import cv2

    return cv2.GaussianBlur(synthetic_xray(np.random.default_rng(seed), size), (0, 0), 2.0)


def psnr_inside(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """PSNR in dB of ``a`` against ``b`` on ``where``."""
    mse = float(np.mean((a[where].astype(float) - b[where].astype(float)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.parametrize("method", METHODS)
def test_repair_restores_a_synthetic_overlay_close_to_the_original(method: str) -> None:
    clean = smooth_film(1)
    marked, overlay = draw_overlays(clean, np.random.default_rng(2), positive=True, options=CLEAN_ONLY)
    holes = dilate(overlay > 0, DEFAULT_MARGIN)
    repaired = repair(marked, holes, method)
    assert repaired.dtype == np.uint8 and repaired.shape == clean.shape
    assert np.array_equal(repaired[~holes], marked[~holes]), "pixels outside the mask must not change"
    before, after = psnr_inside(marked, clean, overlay > 0), psnr_inside(repaired, clean, overlay > 0)
    assert after >= before + 10 and after >= 25, (before, after)
    assert not np.shares_memory(repaired, marked)


def test_mask_covers_drawn_strokes_and_spares_a_clean_film() -> None:
    import cv2

    clean = smooth_film(3, 256)
    assert not marking_mask(clean).any()
    drawn = np.zeros_like(clean)
    for canvas, value in ((drawn, 255), (marked := clean.copy(), 255)):
        cv2.arrowedLine(canvas, (60, 200), (120, 130), value, 3, tipLength=0.3)
        cv2.putText(canvas, "DAY 6", (140, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.0, value, 2)
    mask = marking_mask(marked)
    drawn = drawn > 0
    assert (mask & drawn).sum() / drawn.sum() >= 0.9
    reach = 1.5 * STRIDE / load_markings_net().size + DEFAULT_MARGIN
    assert (mask & ~dilate(drawn, reach)).mean() < 0.001, "the mask strays beyond 1.5 learned cells from the strokes"
    assert mask.mean() < 0.2, "two small markings must not mask a fifth of the film (16-px cells plus the margin)"


def test_bad_requests_are_refused_with_one_line() -> None:
    film = smooth_film(5, 64)
    with pytest.raises(RepairError, match="unknown repair method 'magic'"):
        repair(film, np.zeros_like(film, bool), "magic")
    with pytest.raises(RepairError, match="mask shape"):
        repair(film, np.zeros((3, 3), bool))
    with pytest.raises(RepairError, match="2-D uint8"):
        repair(film.astype(np.float32), np.zeros_like(film, bool))
    with pytest.raises(RepairError, match="2-D uint8"):
        marking_mask(np.zeros((4, 4, 3), np.uint8))
    assert np.array_equal(repair(film, np.zeros_like(film, bool)), film)


def test_the_repair_mask_uses_the_callers_markings_model(tmp_path) -> None:
    """``repair_pixels`` finds the learned detector through the caller's configuration, not a fresh one."""
    from conftest import REPO
    from cxr_core.config import load_config
    from cxr_core.curation.repaired import RepairOptions, repair_pixels
    from cxr_core.markings.net import MarkingsModelError

    gray = synthetic_xray(np.random.default_rng(3), 128)
    missing = load_config(env={}, home=str(tmp_path), markings_model=str(tmp_path / "nowhere"))
    with pytest.raises(MarkingsModelError):
        repair_pixels(gray, RepairOptions(), missing)
    shipped = load_config(env={"CXR_MARKINGS_MODEL": str(REPO / "models" / "markings")}, home=str(tmp_path))
    assert shipped.markings_model_dir == REPO / "models" / "markings"
    mask, fixed = repair_pixels(gray, RepairOptions(), shipped)
    assert mask.shape == fixed.shape == gray.shape
