"""Training input pipelines: images of a split -> preprocessed arrays (cached) -> tf.data (ours) or ImageDataGenerator (paper).

``select_images`` takes the train/val/test rows of a :class:`~cxr_core.dataset_index.DatasetIndex` (readable,
not discarded by the curation ledger, no test duplicates of training images). ``load_arrays`` reads each file with
the shared reader, applies the model's :class:`~cxr_core.preprocess.PreprocessConfig` and goes through the
preprocessing cache of :mod:`cxr_core.batch_preprocess` (the one ``cxr preprocess`` fills). ``make_dataset`` builds the tf.data pipeline with
Keras augmentation layers; ``paper_iterator`` rebuilds the paper's ``ImageDataGenerator`` pipeline (with the
steps-per-epoch bug fixed: every epoch sees every training image once).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from cxr_core.architectures import CLASSES
from cxr_core.batch_preprocess import PreprocessCache
from cxr_core.config import Config
from cxr_core.imaging import read_image
from cxr_core.preprocess import PreprocessConfig

SPLIT_COLUMNS = ("path", "label", "source", "patient_id", "sha256", "split")
Progress = Callable[[int, int], None]


class PipelineError(ValueError):
    """The images for training are unusable (e.g. a class or a split is empty)."""


@dataclass(frozen=True)
class Augmentation:
    """On-the-fly augmentation strengths (the paper's values; rotation in degrees, the rest as image fractions)."""

    rotation: float = 15.0
    zoom: float = 0.2
    shift: float = 0.2
    shear: float = 0.2
    flip: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def select_images(index: Any, limit: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Train/val/test rows (``SPLIT_COLUMNS``) of usable images; ``limit`` keeps N training images (class-stratified)
    and at most ``max(16, N // 4)`` validation and test images."""
    frame = index.images()
    frame = frame[frame["split"].isin(("train", "val", "test")) & frame["label"].isin(CLASSES)]
    for column in SPLIT_COLUMNS:
        if column not in frame:
            frame = frame.assign(**{column: ""})
    frame = frame.loc[:, list(SPLIT_COLUMNS)].reset_index(drop=True)
    if limit is not None:
        if limit < 4:
            raise PipelineError(f"--limit must be at least 4 images, got {limit}")
        caps = {"train": limit, "val": max(16, limit // 4), "test": max(16, limit // 4)}
        frame = pd.concat([_stratified(rows, caps[split], seed) for split, rows in frame.groupby("split")])
    for split in ("train", "val"):
        labels = set(frame.loc[frame["split"] == split, "label"])
        if labels != set(CLASSES):
            raise PipelineError(f"the {split} split needs images of both classes {CLASSES}, found {sorted(labels) or 'none'}")
    return frame.sort_values(["split", "path"]).reset_index(drop=True)


def _stratified(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows keeping the label proportions (at least one per label), reproducibly."""
    if len(rows) <= n:
        return rows
    shares = rows["label"].value_counts(normalize=True)
    parts = [group.sample(n=min(len(group), max(1, round(n * shares[label]))), random_state=seed)
             for label, group in rows.groupby("label")]
    return pd.concat(parts)


def labels_of(frame: pd.DataFrame) -> np.ndarray:
    """Integer class indices (position in :data:`CLASSES`) of the rows."""
    return frame["label"].map({name: i for i, name in enumerate(CLASSES)}).to_numpy(np.int32)


def load_arrays(frame: pd.DataFrame, data_dir: Path, preprocess: PreprocessConfig, *, cfg: Config | None = None,
                workers: int = 1, progress: Progress | None = None) -> np.ndarray:
    """Preprocessed uint8 images ``(n, size, size)`` of the frame's rows, in order, read in parallel threads.

    With ``cfg`` the images go through the preprocessing cache that ``cxr preprocess`` fills (and fill it);
    without it every image is read and preprocessed on the fly under the default size limits.
    """
    if cfg is not None:
        cache = PreprocessCache(cfg, preprocess, data_dir)
        cache.prepare()

        def one(row: Any) -> np.ndarray:
            return cache.load(row.path, row.sha256 or None)
    else:
        def one(row: Any) -> np.ndarray:
            return preprocess.apply(read_image(Path(data_dir) / row.path, name=str(row.path)))

    rows = list(frame.itertuples())
    out = np.empty((len(rows), preprocess.size, preprocess.size), np.uint8)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, array in enumerate(pool.map(one, rows)):
            out[i] = array
            if progress:
                progress(i + 1, len(rows))
    return out


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency class weights ``n / (k * n_c)`` (balanced classes get 1.0)."""
    counts = np.bincount(labels, minlength=len(CLASSES)).astype(float)
    if (counts == 0).any():
        raise PipelineError(f"every class needs training images; counts {dict(zip(CLASSES, counts.astype(int)))}")
    return {i: float(len(labels) / (len(CLASSES) * c)) for i, c in enumerate(counts)}


def augmentation_layers(aug: Augmentation, seed: int) -> Any:
    """A Keras Sequential of random rotation, zoom, translation, shear (and optional flip) layers."""
    import keras

    fill = {"fill_mode": "nearest"}
    steps = [
        keras.layers.RandomRotation(aug.rotation / 360.0, seed=seed, **fill) if aug.rotation else None,
        keras.layers.RandomZoom(aug.zoom, seed=seed + 1, **fill) if aug.zoom else None,
        keras.layers.RandomTranslation(aug.shift, aug.shift, seed=seed + 2, **fill) if aug.shift else None,
        keras.layers.RandomShear(aug.shear, aug.shear, seed=seed + 3, **fill) if aug.shear else None,
        keras.layers.RandomFlip("horizontal", seed=seed + 4) if aug.flip else None,
    ]
    return keras.Sequential([s for s in steps if s is not None], name="augmentation")


def make_dataset(images: np.ndarray, labels: np.ndarray, *, batch: int, training: bool, seed: int,
                 augment: Augmentation | None = None, balanced: bool = False) -> Any:
    """A batched, prefetched ``tf.data.Dataset`` of ``(float32 (b,s,s,1) raw 0-255, one-hot (b,2))``.

    Training datasets are shuffled with ``seed`` (reshuffled each epoch) and augmented; ``balanced`` draws both
    classes with equal probability (same number of images per epoch as the data holds).
    """
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    base = tf.data.Dataset.from_tensor_slices((images, labels))
    if training and balanced:
        per_class = [base.filter(lambda _, y, c=c: tf.equal(y, c)).shuffle(int((labels == c).sum()), seed=seed + c).repeat()
                     for c in range(len(CLASSES))]
        ds = tf.data.Dataset.sample_from_datasets(per_class, [1.0 / len(CLASSES)] * len(CLASSES), seed=seed).take(len(labels))
    elif training:
        ds = base.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    else:
        ds = base

    def to_model(x: Any, y: Any) -> tuple[Any, Any]:
        """uint8 image and class index -> float32 channel-last image and one-hot label."""
        return tf.cast(x, tf.float32)[..., None], tf.one_hot(y, len(CLASSES))

    ds = ds.map(to_model, num_parallel_calls=autotune).batch(batch)
    if training and augment is not None:
        layers = augmentation_layers(augment, seed)
        ds = ds.map(lambda x, y: (layers(x, training=True), y), num_parallel_calls=autotune)
    return ds.prefetch(autotune)


def paper_iterator(images: np.ndarray, labels: np.ndarray, *, batch: int, training: bool, seed: int,
                   augment: Augmentation | None = None) -> Any:
    """The paper's Keras ``ImageDataGenerator`` pipeline over the same arrays (``len()`` = ceil(n / batch): bug fixed).

    ImageDataGenerator's ``shear_range`` is in degrees, so the paper's 0.2 is a 0.2-degree shear; kept as is.
    """
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    aug = augment if (training and augment is not None) else Augmentation(0.0, 0.0, 0.0, 0.0, False)
    generator = ImageDataGenerator(rotation_range=aug.rotation, zoom_range=aug.zoom, width_shift_range=aug.shift,
                                   height_shift_range=aug.shift, shear_range=aug.shear, horizontal_flip=aug.flip)
    onehot = np.eye(len(CLASSES), dtype=np.float32)[labels]
    return generator.flow(images[..., None].astype(np.float32), onehot, batch_size=batch, shuffle=training, seed=seed)
