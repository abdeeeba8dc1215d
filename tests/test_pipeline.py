"""Input pipeline: split and ledger honoured, cached preprocessing, deterministic augmentation, class balance, paper pipeline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import write_dataset
from cxr_core.config import Config
from cxr_core.curation.curated import curated_index
from cxr_core.curation.ledger import open_ledger
from cxr_core.preprocess.cache import PreprocessCache
from cxr_core.preprocess.recipe import PreprocessConfig
from cxr_core.train.pipeline import (
    Augmentation,
    PipelineError,
    class_weights,
    labels_of,
    load_arrays,
    make_dataset,
    paper_iterator,
    select_images,
)


@pytest.fixture
def dataset(tmp_path: Path, make_cfg: Callable[..., Config]) -> tuple[Config, Path]:
    """A synthetic 60-image dataset (15 patients per class) and a config pointing at it."""
    root = write_dataset(tmp_path / "data", n_per_class=30, size=96, seed=3)
    return make_cfg(data_dir=root), root


def test_select_images_honours_the_split_and_the_curation_ledger(dataset: tuple[Config, Path]) -> None:
    cfg, root = dataset
    frame = select_images(curated_index(cfg, root), seed=0)
    assert set(frame["split"]) == {"train", "val", "test"}
    assert frame.groupby("patient_id")["split"].nunique().max() == 1
    victim = frame[frame["split"] == "train"].iloc[0]
    open_ledger(cfg).record(victim["sha256"], victim["path"], "discard", reason="markings", reviewer="test")
    again = select_images(curated_index(cfg, root), seed=0)
    assert victim["path"] not in set(again["path"])
    assert len(again) == len(frame) - 1


def test_limit_keeps_both_classes_and_is_reproducible(dataset: tuple[Config, Path]) -> None:
    cfg, root = dataset
    index = curated_index(cfg, root)
    first, second = select_images(index, limit=10, seed=1), select_images(index, limit=10, seed=1)
    train = first[first["split"] == "train"]
    assert len(train) == 10 and set(train["label"]) == {"COVID", "Normal"}
    assert list(first["path"]) == list(second["path"])
    with pytest.raises(PipelineError):
        select_images(index, limit=2)


def test_load_arrays_preprocesses_and_reuses_the_cache(dataset: tuple[Config, Path]) -> None:
    cfg, root = dataset
    frame = select_images(curated_index(cfg, root), seed=0)
    rows = frame[frame["split"] == "val"]
    pp = PreprocessConfig(method="clahe", size=48)
    first = load_arrays(rows, root, pp, cfg=cfg)
    assert first.shape == (len(rows), 48, 48) and first.dtype == np.uint8
    cache = PreprocessCache(cfg, pp, root)
    assert all(cache.is_fresh(row.path, row.sha256) for row in rows.itertuples())
    for row in rows.itertuples():
        cache.store(row.path, row.sha256, np.full((48, 48), 7, np.uint8))
    assert (load_arrays(rows, root, pp, cfg=cfg) == 7).all()
    np.testing.assert_array_equal(load_arrays(rows, root, pp), first)


def test_class_weights_balance_the_classes() -> None:
    weights = class_weights(np.array([0] * 30 + [1] * 10))
    assert weights[0] * 30 == pytest.approx(weights[1] * 10)
    assert class_weights(np.array([0, 1])) == {0: 1.0, 1: 1.0}
    with pytest.raises(PipelineError):
        class_weights(np.zeros(5, int))


def _images(n: int = 24, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images with a 2:1 class imbalance."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size), dtype=np.uint8), np.array([0] * (2 * n // 3) + [1] * (n - 2 * n // 3))


def test_dataset_shapes_and_one_hot_labels_without_augmentation_keep_pixels() -> None:
    x, y = _images()
    batches = list(make_dataset(x, y, batch=10, training=False, seed=0))
    assert [int(b[0].shape[0]) for b in batches] == [10, 10, 4]
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images.shape == (24, 32, 32, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(images[..., 0], x)
    np.testing.assert_array_equal(labels.argmax(1), y)


def test_training_dataset_is_deterministic_for_a_seed_and_augments() -> None:
    x, y = _images()

    def first_batch(seed: int) -> np.ndarray:
        return next(iter(make_dataset(x, y, batch=8, training=True, seed=seed, augment=Augmentation())))[0].numpy()

    a, b, c = first_batch(5), first_batch(5), first_batch(6)
    np.testing.assert_allclose(a, b)
    assert not np.allclose(a, c)
    plain = next(iter(make_dataset(x, y, batch=8, training=True, seed=5)))[0].numpy()
    assert plain.shape == a.shape and not np.allclose(plain, a)


def test_augmentation_has_no_horizontal_flip_by_default() -> None:
    from cxr_core.train.pipeline import augmentation_layers

    names = [layer.__class__.__name__ for layer in augmentation_layers(Augmentation(), 0).layers]
    assert names == ["RandomRotation", "RandomZoom", "RandomTranslation", "RandomShear"]
    assert "RandomFlip" in [
        layer.__class__.__name__ for layer in augmentation_layers(Augmentation(flip=True), 0).layers
    ]


def test_balanced_sampling_draws_both_classes_about_equally() -> None:
    x, y = _images(n=300, size=8)
    labels = np.concatenate(
        [b[1].numpy().argmax(1) for b in make_dataset(x, y, batch=50, training=True, seed=0, balanced=True)]
    )
    assert len(labels) == 300
    assert 0.4 < labels.mean() < 0.6


def test_source_balanced_sampling_gives_every_source_of_a_class_the_same_share() -> None:
    from cxr_core.train.pipeline import _epoch_order

    sources = np.array(["a"] * 10 + ["b"] * 190 + ["c"] * 5 + ["d"] * 250 + ["e"] * 45)
    labels = np.array([0] * 200 + [1] * 300, np.int32)
    picks = np.concatenate([_epoch_order(labels, np.array([7, k]), True, sources).numpy() for k in range(40)])
    share = {s: float(np.mean(sources[picks] == s)) for s in "abcde"}
    assert share["a"] == pytest.approx(0.25, abs=0.02) and share["b"] == pytest.approx(0.25, abs=0.02)
    for s in "cde":
        assert share[s] == pytest.approx(1 / 6, abs=0.02)
    again = _epoch_order(labels, np.array([7, 3]), True, sources).numpy()
    np.testing.assert_array_equal(again, _epoch_order(labels, np.array([7, 3]), True, sources).numpy())


def test_paper_pipeline_sees_every_image_each_epoch() -> None:
    x, y = _images(n=70)
    iterator = paper_iterator(x, y, batch=32, training=True, seed=0, augment=Augmentation())
    assert len(iterator) == 3
    sizes = [iterator[i][0].shape[0] for i in range(len(iterator))]
    assert sum(sizes) == 70
    assert iterator[0][0].shape[1:] == (32, 32, 1) and iterator[0][1].shape[1:] == (2,)
    plain = paper_iterator(x, y, batch=70, training=False, seed=0)
    np.testing.assert_array_equal(plain[0][0][..., 0], x)
    np.testing.assert_array_equal(plain[0][1].argmax(1), y)


def test_labels_follow_the_class_order() -> None:
    import pandas as pd

    assert list(labels_of(pd.DataFrame({"label": ["COVID", "Normal", "COVID"]}))) == [0, 1, 0]
