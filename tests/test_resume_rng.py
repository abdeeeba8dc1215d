"""Shuffling and augmentation depend on (seed, epoch) only: a resumed run sees the batches an uninterrupted one would."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_core.preprocess.recipe import PreprocessConfig
from cxr_core.train.pipeline import Augmentation, make_dataset
from cxr_core.train.trainer import TrainConfig, TrainingData, input_data


def _images(n: int = 20, size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images with a 3:2 class imbalance."""
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8), np.array([0] * (3 * n // 5) + [1] * (n - 3 * n // 5))


def _arrays(dataset: object) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every (images, labels) batch of a dataset as numpy arrays."""
    return [(x.numpy(), y.numpy()) for x, y in dataset]


@pytest.mark.parametrize("balanced", [False, True])
def test_epoch_two_is_the_same_after_epoch_one_or_straight_after_a_resume(balanced: bool) -> None:
    x, y = _images()
    steps = 3  # ceil(20 / 8)
    kwargs = {"batch": 8, "training": True, "seed": 7, "augment": Augmentation(), "balanced": balanced}
    uninterrupted = _arrays(make_dataset(x, y, epochs=range(0, 3), **kwargs))
    resumed = _arrays(make_dataset(x, y, epochs=range(1, 3), **kwargs))
    assert len(uninterrupted) == 3 * steps and len(resumed) == 2 * steps
    for (xa, ya), (xb, yb) in zip(uninterrupted[steps:], resumed):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    epoch1, epoch2 = (np.concatenate([b[0] for b in uninterrupted[i * steps : (i + 1) * steps]]) for i in (0, 1))
    assert epoch1.shape == epoch2.shape == (20, 24, 24, 1)
    assert not np.allclose(epoch1, epoch2)
    if not balanced:
        labels = [np.concatenate([b[1] for b in uninterrupted[i * steps : (i + 1) * steps]]).argmax(1) for i in (0, 1)]
        assert sorted(labels[0]) == sorted(y) == sorted(labels[1])


def test_augmentation_differs_between_epochs_even_with_the_same_order() -> None:
    x, y = _images(n=8)
    batches = _arrays(make_dataset(x, y, batch=8, training=True, seed=2, augment=Augmentation(), epochs=range(0, 2)))
    plain = _arrays(make_dataset(x, y, batch=8, training=True, seed=2, epochs=range(0, 2)))
    order = [np.array([np.flatnonzero((x == img[..., 0]).all(axis=(1, 2)))[0] for img in b[0]]) for b in plain]
    assert sorted(order[0]) == sorted(order[1]) == list(range(8))
    aligned = [batches[i][0][np.argsort(order[i])] for i in (0, 1)]
    assert not np.allclose(aligned[0], aligned[1])
    assert not np.allclose(aligned[0][..., 0], x.astype(np.float32))


def test_the_training_input_of_a_resumed_run_matches_the_uninterrupted_run() -> None:
    x, y = _images(n=18)
    frame = pd.DataFrame({"split": ["train"] * len(y)})
    data = TrainingData(frame, PreprocessConfig(size=24), x, y, x[:6], y[:6])
    tc = TrainConfig(epochs=3, size=24, batch=8, seed=11, hparams={"width": 8, "depth": 2})
    full, val, steps = input_data(data, tc, start_epoch=0)
    after_kill, _, steps_again = input_data(data, tc, start_epoch=1)
    assert steps == steps_again == 3
    full_batches, resumed_batches = _arrays(full), _arrays(after_kill)
    assert len(full_batches) == 3 * steps and len(resumed_batches) == 2 * steps
    for (xa, _), (xb, _) in zip(full_batches[steps:], resumed_batches):
        np.testing.assert_array_equal(xa, xb)
    assert not np.allclose(
        np.concatenate([b[0] for b in full_batches[:steps]]),
        np.concatenate([b[0] for b in full_batches[steps : 2 * steps]]),
    )
    assert sum(len(b[1]) for b in _arrays(val)) == 6
