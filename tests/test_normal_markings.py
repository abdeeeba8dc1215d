"""Markings on both classes: Normal training images get synthetic markings, COVID ones are left alone, and the draw
depends only on the seed."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import synthetic_xray
from cxr_core.train.config import TrainingError, config_from_options
from cxr_core.train.normal_markings import paint_normals


def films(n: int = 8, size: int = 64) -> np.ndarray:
    """A float32 batch (n, size, size, 1) of synthetic films."""
    rng = np.random.default_rng(1)
    return np.stack([synthetic_xray(rng, size) for _ in range(n)]).astype(np.float32)[..., None]


def test_only_normal_images_are_marked_and_the_seed_decides() -> None:
    x, normal = films(), np.array([True, False] * 4)
    marked = paint_normals(x, normal, np.array([3, 4]), 1.0)
    changed = np.abs(marked - x).reshape(len(x), -1).max(axis=1) > 0
    assert changed.tolist() == normal.tolist()
    np.testing.assert_array_equal(marked, paint_normals(x, normal, np.array([3, 4]), 1.0))
    assert not np.array_equal(marked, paint_normals(x, normal, np.array([3, 5]), 1.0))
    np.testing.assert_array_equal(paint_normals(x, normal, np.array([3, 4]), 0.0), x)
    assert marked.dtype == np.float32 and marked.min() >= 0 and marked.max() <= 255


def test_a_training_dataset_marks_normals_only_and_repeats_itself() -> None:
    from cxr_core.train.pipeline import make_dataset

    images = films(8, 64)[..., 0].astype(np.uint8)
    labels = np.array([0, 1] * 4)

    def batch(p: float) -> tuple[np.ndarray, np.ndarray]:
        data = make_dataset(images, labels, batch=8, training=True, seed=2, normal_markings=p, epochs=range(0, 1))
        x, y = next(iter(data))
        return x.numpy(), y.numpy()

    plain, onehot = batch(0.0)
    marked, _ = batch(1.0)
    normal = onehot[:, 1] == 1
    differs = np.abs(marked - plain).reshape(8, -1).max(axis=1) > 0
    assert differs[normal].all() and not differs[~normal].any()
    np.testing.assert_array_equal(marked, batch(1.0)[0])


def test_the_option_is_checked() -> None:
    assert config_from_options({"normal_markings": 0.5}).validate().normal_markings == 0.5
    with pytest.raises(TrainingError, match="normal_markings must be a probability"):
        config_from_options({"normal_markings": 2.0}).validate()
    with pytest.raises(TrainingError, match="normal_markings needs --pipeline ours"):
        config_from_options({"normal_markings": 0.5, "pipeline": "paper"}).validate()
