"""Explainer (tf-keras-vis on Keras 3 functional models): shapes, range, target classes, layer search, cost."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tiny_models import TINY_SIZE, build_tiny_model, train_briefly

keras = pytest.importorskip("keras")

from cxr_core.data.imaging import read_image
from cxr_core.explain.cam import CAM_METHODS, Explainer, ExplainError, find_target_layer, rescale01, to_original_shape
from cxr_core.preprocess.recipe import PreprocessConfig


@pytest.fixture(scope="module")
def tiny_model():
    """A briefly trained tiny CNN (built once for the module)."""
    return train_briefly(build_tiny_model())


@pytest.fixture(scope="module")
def explainer(tiny_model) -> Explainer:
    """One explainer for the module (building it per call would be the bug we guard against)."""
    return Explainer(tiny_model)


@pytest.fixture(scope="module")
def real_input(sample_dir) -> tuple[np.ndarray, np.ndarray]:
    """A real sample X-ray and its 64 px CLAHE model input."""
    gray = read_image(sample_dir / "COVID" / "images" / "COVID-1.png")
    return gray, PreprocessConfig(size=TINY_SIZE).apply(gray).astype(np.float32)


def test_target_layer_is_last_spatial_layer_before_pooling(tiny_model) -> None:
    assert find_target_layer(tiny_model) == ("last_conv",)


def test_target_layer_inside_nested_backbone() -> None:
    model = build_tiny_model(nested=True)
    assert find_target_layer(model) == ("backbone", "b_conv2")
    heat = Explainer(model).explain(np.full((TINY_SIZE, TINY_SIZE), 128, np.float32), 0)
    assert heat.shape == (TINY_SIZE, TINY_SIZE)


def test_frozen_vgg19_backbone_with_gray_to_rgb_input() -> None:
    from cxr_core.train.architectures import build_model

    explainer = Explainer(build_model("vgg19_frozen", size=64, weights=None))
    assert explainer.layer_path == ("vgg19",)
    heat = explainer.explain(np.random.default_rng(0).uniform(0, 255, (64, 64)).astype(np.float32), 1)
    assert heat.shape == (64, 64) and 0.0 <= heat.min() and heat.max() <= 1.0


def test_model_without_spatial_layer_is_refused() -> None:
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="predictions")(inputs))
    with pytest.raises(ExplainError):
        Explainer(model)


def test_gradcam_on_real_xray_has_image_shape_range_and_depends_on_class(explainer, real_input) -> None:
    gray, model_input = real_input
    covid = to_original_shape(explainer.explain(model_input, 0, "gradcam"), gray.shape)
    normal = to_original_shape(explainer.explain(model_input, 1, "gradcam"), gray.shape)
    for heat in (covid, normal):
        assert heat.shape == gray.shape
        assert heat.dtype == np.float32
        assert 0.0 <= heat.min() and heat.max() <= 1.0
    assert covid.std() > 0.01, "Grad-CAM is constant on a real X-ray"
    assert np.abs(covid - normal).mean() > 0.01, "Grad-CAM does not depend on the target class"


@pytest.mark.parametrize("method", sorted(CAM_METHODS))
def test_every_method_returns_a_unit_range_map_quickly(explainer, real_input, method: str) -> None:
    _, model_input = real_input
    start = time.perf_counter()
    heat = explainer.explain(model_input, 0, method)
    assert time.perf_counter() - start < 5.0
    assert heat.shape == (TINY_SIZE, TINY_SIZE)
    assert 0.0 <= heat.min() and heat.max() <= 1.0
    assert heat.max() > heat.min()


def test_explainer_leaves_the_original_softmax_model_untouched(tiny_model, explainer, real_input) -> None:
    _, model_input = real_input
    probs = np.asarray(tiny_model(model_input[None, ..., None], training=False))[0]
    assert probs.min() >= 0 and abs(probs.sum() - 1.0) < 1e-5


def test_unknown_method_is_refused(explainer) -> None:
    with pytest.raises(ExplainError, match="unknown explanation method"):
        explainer.explain(np.zeros((TINY_SIZE, TINY_SIZE), np.float32), 0, "lime")


def test_pad_policy_heatmap_maps_back_onto_the_image() -> None:
    heat = np.zeros((64, 64), np.float32)
    heat[16:48, :] = 1.0  # a 2:1 landscape image padded top and bottom occupies rows 16..47
    back = to_original_shape(heat, (100, 200), "pad")
    assert back.shape == (100, 200)
    assert back.min() > 0.9


def test_rescale01_handles_constant_maps() -> None:
    assert rescale01(np.full((4, 4), 3.0)).max() == 0.0
    scaled = rescale01(np.array([[1.0, 3.0]]))
    assert scaled.min() == 0.0 and scaled.max() == 1.0


@pytest.mark.parametrize("nested", [False, True])
def test_compiled_gradcam_equals_tf_keras_vis_gradcam(real_input, nested: bool) -> None:
    from cxr_core.explain.cam import ExplainOptions

    model = build_tiny_model(nested=nested) if nested else train_briefly(build_tiny_model())
    fast = Explainer(model)
    reference = Explainer(model, ExplainOptions(compiled_gradcam=False))
    _, model_input = real_input
    for target in (0, 1):
        ours, theirs = fast.explain(model_input, target), reference.explain(model_input, target)
        assert ours.max() > ours.min()
        np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_compiled_gradcam_equals_tf_keras_vis_on_the_default_model(sample_dir) -> None:
    from conftest import REPO
    from cxr_core.explain.cam import ExplainOptions
    from cxr_core.serve.registry import load_model

    loaded = load_model(REPO / "models" / "default")
    batch = loaded.prepare([read_image(sample_dir / "Normal" / "images" / "Normal-1.png")])
    fast = Explainer(loaded.model).explain(batch[0], 1)
    reference = Explainer(loaded.model, ExplainOptions(compiled_gradcam=False)).explain(batch[0], 1)
    np.testing.assert_allclose(fast, reference, atol=1e-4)
