"""Appearance augmentation (the source-signature recipe): each operation does what it says, draws are stateless, and
the option lives in the one training configuration."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from conftest import synthetic_xray
from cxr_core.train.appearance import Appearance
from cxr_core.train.config import TrainConfig, TrainingError, config_from_options, train_options

tf = pytest.importorskip("tensorflow")

OPERATIONS = tuple(name[:-2] for name in Appearance().to_dict() if name.endswith("_p"))
NONE = Appearance(**{f"{op}_p": 0.0 for op in OPERATIONS})


def films(n: int = 6, size: int = 64) -> np.ndarray:
    """A float32 batch (n, size, size, 1) of synthetic chest films in 0-255."""
    rng = np.random.default_rng(0)
    return np.stack([synthetic_xray(rng, size) for _ in range(n)]).astype(np.float32)[..., None]


def run(x: np.ndarray, settings: Appearance, seed: tuple[int, int] = (1, 2)) -> np.ndarray:
    """The augmented batch as numpy."""
    from cxr_core.train.appearance import appearance_batch

    return appearance_batch(tf.constant(x), tf.constant(seed, tf.int64), settings).numpy()


def roughness(a: np.ndarray) -> float:
    """Mean absolute difference between vertical neighbours."""
    return float(np.abs(np.diff(a, axis=1)).mean())


def only(op: str, **strength: float) -> Appearance:
    """Every image gets ``op`` and nothing else."""
    return replace(NONE, **{f"{op}_p": 1.0}, **strength)


def test_no_operation_leaves_the_batch_alone_and_draws_depend_only_on_the_seed() -> None:
    x = films()
    np.testing.assert_array_equal(run(x, NONE), x)
    every = Appearance(**{f"{op}_p": 1.0 for op in OPERATIONS})
    first, again, other = run(x, every), run(x, every), run(x, every, seed=(1, 3))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.shape == x.shape and first.dtype == np.float32 and first.min() >= 0 and first.max() <= 255


@pytest.mark.parametrize("op", OPERATIONS)
def test_each_operation_changes_the_images_and_keeps_the_range(op: str) -> None:
    x = films()
    y = run(x, only(op))
    changed = np.abs(y - x).reshape(len(x), -1).mean(axis=1)
    assert (changed > 0.05).sum() >= 4, (op, changed)  # strengths are drawn from [0, max]: a few can be near 0
    assert y.min() >= 0 and y.max() <= 255


def test_the_operations_do_what_they_say() -> None:
    x = films()
    framed = run(x, only("frame", frame=0.2))
    assert (framed[:, 0, :, :] == 0).mean() > 0.5 or (framed[:, :, 0, :] == 0).mean() > 0.5
    windowed = run(x, only("window", window=0.3))
    assert (windowed == 255).mean() > (x == 255).mean() and (windowed == 0).mean() > (x == 0).mean()
    gamma = run(x, only("gamma"))
    order = np.argsort(x[0].ravel(), kind="stable")
    assert (np.diff(gamma[0].ravel()[order]) >= -1e-3).all(), "gamma keeps the order of gray levels"
    blurred, sharpened = run(x, only("blur", blur=2.0)), run(x, only("sharpen", sharpen=2.0))
    assert roughness(blurred) < roughness(x) < roughness(sharpened)
    assert run(x, only("contrast", contrast=0.0)).round(3).tolist() == x.round(3).tolist()


def test_the_recipe_is_one_training_option_with_its_ranges_checked() -> None:
    names = {spec.name for spec in train_options()}
    assert {"appearance", "appearance_gamma", "appearance_gamma_p", "appearance_jpeg", "appearance_frame_p"} <= names
    tc = config_from_options({"appearance": True, "appearance_gamma_p": 0.9, "appearance_jpeg": 50})
    assert tc.appearance and tc.appearance_ops["gamma_p"] == 0.9 and tc.appearance_ops["jpeg"] == 50
    assert TrainConfig.from_dict(tc.to_dict()).appearance_ops == tc.appearance_ops
    tc.validate()
    with pytest.raises(TrainingError, match="gamma_p must be a probability"):
        config_from_options({"appearance_gamma_p": 1.5}).validate()
    with pytest.raises(TrainingError, match="appearance augmentation needs --pipeline ours"):
        config_from_options({"appearance": True, "pipeline": "paper"}).validate()


def test_a_training_dataset_with_the_recipe_repeats_its_batches_exactly() -> None:
    from cxr_core.train.pipeline import make_dataset

    images = films(12, 32)[..., 0].astype(np.uint8)
    labels = np.array([0, 1] * 6)

    def first_batch() -> np.ndarray:
        data = make_dataset(images, labels, batch=4, training=True, seed=5, appearance=Appearance(), epochs=range(2, 3))
        return next(iter(data))[0].numpy()

    plain = make_dataset(images, labels, batch=4, training=True, seed=5, epochs=range(2, 3))
    np.testing.assert_array_equal(first_batch(), first_batch())
    assert not np.array_equal(first_batch(), next(iter(plain))[0].numpy())
