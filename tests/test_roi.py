"""Region-of-interest preprocessing: lung_crop and lung_mask change only what they should; roi=none stays light."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import SHIPPED_LUNGS_DIR as SHIPPED_MODEL_DIR
from cxr_core.preprocess.normalise import normalise
from cxr_core.preprocess.recipe import ROI_DILATION, ROI_MARGIN, PreprocessConfig, PreprocessError, resize
from cxr_core.preprocess.roi import bounding_box, dilate


def image_and_mask(height: int = 120, width: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A textured image and a two-field mask well inside it."""
    rng = np.random.default_rng(3)
    image = rng.integers(30, 250, (height, width)).astype(np.uint8)
    mask = np.zeros((height, width), bool)
    mask[30:90, 30:70] = mask[30:90, 90:130] = True
    return image, mask


def test_roi_none_is_unchanged_and_needs_no_segmenter() -> None:
    image, mask = image_and_mask()
    cfg = PreprocessConfig(method="clahe", size=64)
    assert np.array_equal(cfg.apply(image), normalise(resize(image, 64), "clahe"))
    code = (
        "import sys, numpy as np; from cxr_core.preprocess.recipe import PreprocessConfig; "
        "PreprocessConfig(size=32).apply(np.zeros((40, 50), np.uint8)); "
        "assert 'cxr_core.lungs.segmenter' not in sys.modules and 'keras' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_lung_crop_crops_to_the_box_with_margin() -> None:
    image, mask = image_and_mask()
    cfg = PreprocessConfig(method="none", size=64, roi="lung_crop")
    out, lungs = cfg.apply_with_lungs(image, mask)
    top, bottom, left, right = bounding_box(mask, ROI_MARGIN)
    assert (top, bottom, left, right) == (24, 96, 22, 138)
    assert np.array_equal(out, resize(image[top:bottom, left:right], 64))
    assert out.shape == lungs.shape == (64, 64)
    assert 0.3 < lungs.mean() < 0.9


def test_lung_mask_zeroes_only_outside_the_dilated_mask() -> None:
    image, mask = image_and_mask()
    masked, lungs = PreprocessConfig(method="none", size=64, roi="lung_mask").apply_with_lungs(image, mask)
    cropped, _ = PreprocessConfig(method="none", size=64, roi="lung_crop").apply_with_lungs(image, mask)
    top, bottom, left, right = bounding_box(mask, ROI_MARGIN)
    keep = dilate(mask[top:bottom, left:right], ROI_DILATION)
    inside = resize(keep.astype(np.uint8) * 255, 64, "squash", "linear") >= 128
    assert (masked[~inside] == 0).all()
    core = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert np.array_equal(masked[core], cropped[core])
    assert masked[lungs].min() > 0


@pytest.mark.parametrize("method", ["clahe", "local_rank_eq"])
def test_lung_mask_stays_zero_after_normalisation(method: str) -> None:
    image, mask = image_and_mask()
    out, _ = PreprocessConfig(method=method, size=64, roi="lung_mask", resize="pad").apply_with_lungs(image, mask)
    assert out[0, 0] == 0 and out[32, 0] == 0 and out.max() > 0


def test_roi_refuses_bad_values() -> None:
    with pytest.raises(PreprocessError, match="roi"):
        PreprocessConfig(roi="lungs")
    image, mask = image_and_mask()
    with pytest.raises(PreprocessError, match="shape"):
        PreprocessConfig(roi="lung_mask").apply_with_lungs(image, mask[:10])


def test_roi_round_trips_and_changes_the_digest() -> None:
    cfg = PreprocessConfig(roi="lung_mask")
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.digest() != PreprocessConfig().digest()


@pytest.mark.skipif(not (SHIPPED_MODEL_DIR / "model.keras").is_file(), reason="models/lungs not trained yet")
def test_apply_segments_with_the_shipped_model() -> None:
    from conftest import synthetic_xray
    from cxr_core.lungs import lung_mask

    image = synthetic_xray(np.random.default_rng(0), 200)
    with pytest.raises(PreprocessError, match="needs the image's lung mask or a segmenter"):
        PreprocessConfig(method="none", size=64, roi="lung_mask").apply(image)
    out = PreprocessConfig(method="none", size=64, roi="lung_mask").apply(image, lung_mask)
    assert out.shape == (64, 64)
    assert 0.2 < (out > 0).mean() < 0.95
    assert out[0, 0] == 0
