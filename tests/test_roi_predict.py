"""Heatmaps of models with a lung ROI land on the part of the original image the model saw."""

from __future__ import annotations

import numpy as np
import pytest

from tiny_models import TINY_SIZE, build_tiny_model, train_briefly

pytest.importorskip("keras")

from cxr_core.explain.cam import Explainer, to_original_shape
from cxr_core.preprocess.recipe import PreprocessConfig
from cxr_core.serve.inference import predict_image
from cxr_core.serve.registry import load_model, save_model_dir


def test_heatmap_with_a_crop_box_fills_only_the_box() -> None:
    heat = np.ones((64, 64), np.float32)
    back = to_original_shape(heat, (300, 200), "squash", box=(50, 250, 20, 120))
    assert back.shape == (300, 200)
    assert back[50:250, 20:120].min() > 0.99
    assert back.sum() == pytest.approx(200 * 100, rel=1e-4)


def test_lung_crop_model_heatmap_is_mapped_back_into_the_lung_box(tmp_path) -> None:
    cfg = PreprocessConfig(size=TINY_SIZE, roi="lung_crop")
    model_dir = save_model_dir(
        tmp_path / "crop",
        train_briefly(build_tiny_model()),
        cfg,
        temperature=1.0,
        threshold=0.5,
        card={"name": "crop", "architecture": "tiny_test_cnn"},
    )
    loaded = load_model(model_dir)
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (240, 320), dtype=np.uint8)
    mask = np.zeros(gray.shape, bool)
    mask[60:180, 100:220] = True
    prediction = predict_image(loaded, gray, Explainer(loaded.model), "gradcam", lung_mask=mask)
    top, bottom, left, right = cfg.roi_box(mask)
    assert (top, bottom, left, right) != (0, 240, 0, 320)
    heat = prediction.heatmap
    assert heat.shape == gray.shape
    outside = np.ones(gray.shape, bool)
    outside[top:bottom, left:right] = False
    assert heat[outside].max() == 0.0
    assert heat[top:bottom, left:right].max() > 0.5
    expected = cfg.apply_with_lungs(gray, mask)[0]
    np.testing.assert_array_equal(prediction.model_input, expected)
