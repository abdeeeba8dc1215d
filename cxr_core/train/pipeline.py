"""Training input pipelines: images of a split -> preprocessed arrays (cached) -> tf.data (ours) or ImageDataGenerator (paper).

``select_images`` takes the train/val/test rows of a :class:`~cxr_core.data.index.DatasetIndex` (readable,
not discarded by the curation ledger, no test duplicates of training images). ``load_arrays`` reads each file with
the shared reader, applies the model's :class:`~cxr_core.preprocess.recipe.PreprocessConfig` and goes through the
preprocessing cache of :mod:`cxr_core.preprocess.cache` (the one ``cxr preprocess`` fills). ``make_dataset`` builds the tf.data pipeline with
Keras augmentation layers; ``paper_iterator`` rebuilds the paper's ``ImageDataGenerator`` pipeline (with the
steps-per-epoch bug fixed: every epoch sees every training image once).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_core.config import Config
from cxr_core.data.imaging import read_image
from cxr_core.data.index import pixel_sources
from cxr_core.lungs.segmenter import lung_mask
from cxr_core.preprocess.cache import PreprocessCache
from cxr_core.preprocess.recipe import PreprocessConfig
from cxr_core.train.appearance import Appearance, appearance_batch
from cxr_core.train.architectures import CLASSES
from cxr_core.train.normal_markings import paint_normals
from cxr_core.util.progress import Progress

SPLIT_COLUMNS = ("path", "label", "source", "patient_id", "sha256", "split", "repaired", "pixels_path", "pixels_sha256")
"""The columns of a run's ``split.csv``: which images, and for a repaired one the file its pixels were read from."""


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
            raise PipelineError(
                f"the {split} split needs images of both classes {CLASSES}, found {sorted(labels) or 'none'}"
            )
    return frame.sort_values(["split", "path"]).reset_index(drop=True)


def _stratified(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows keeping the label proportions (at least one per label), reproducibly."""
    if len(rows) <= n:
        return rows
    shares = rows["label"].value_counts(normalize=True)
    parts = [
        group.sample(n=min(len(group), max(1, round(n * shares[label]))), random_state=seed)
        for label, group in rows.groupby("label")
    ]
    return pd.concat(parts)


def labels_of(frame: pd.DataFrame) -> np.ndarray:
    """Integer class indices (position in :data:`CLASSES`) of the rows."""
    return frame["label"].map({name: i for i, name in enumerate(CLASSES)}).to_numpy(np.int32)


def load_arrays(
    frame: pd.DataFrame,
    data_dir: Path,
    preprocess: PreprocessConfig,
    *,
    cfg: Config | None = None,
    workers: int = 1,
    progress: Progress | None = None,
) -> np.ndarray:
    """Preprocessed uint8 images ``(n, size, size)`` of the frame's rows, in order, read in parallel threads.

    With ``cfg`` the images go through the preprocessing cache that ``cxr preprocess`` fills (and fill it);
    without it every image is read and preprocessed on the fly under the default size limits.
    """
    if cfg is not None:
        cache = PreprocessCache(cfg, preprocess, data_dir, segment=lung_mask)
        cache.prepare()

        def one(row: Any) -> np.ndarray:
            return cache.load(row.path, row.digest or None, row.source or None)
    else:

        def one(row: Any) -> np.ndarray:
            return preprocess.apply(_read_row(row, data_dir), lung_mask)

    return _per_row(frame, one, (preprocess.size, preprocess.size), np.uint8, workers, progress)


def load_allowed(
    frame: pd.DataFrame,
    data_dir: Path,
    preprocess: PreprocessConfig,
    *,
    workers: int = 1,
    progress: Progress | None = None,
) -> np.ndarray:
    """Per row the dilated lung mask in the model's input geometry ``(n, size, size)`` bool (input-gradient penalty)."""

    def one(row: Any) -> np.ndarray:
        return preprocess.allowed_region(lung_mask(_read_row(row, data_dir)))

    return _per_row(frame, one, (preprocess.size, preprocess.size), bool, workers, progress)


def load_acquisition(
    frame: pd.DataFrame, data_dir: Path, *, workers: int = 1, progress: Progress | None = None
) -> np.ndarray:
    """Acquisition features ``(n, d)`` of the frame's rows as read (their repaired version when they have one)."""
    from cxr_core.gate.acquisition import NAMES, acquisition_features

    def one(row: Any) -> np.ndarray:
        return acquisition_features(_read_row(row, data_dir))

    return _per_row(frame, one, (len(NAMES),), np.float64, workers, progress)


def _read_row(row: Any, data_dir: Path) -> np.ndarray:
    """The gray pixels of a :func:`_per_row` row: its repaired version when it has one, else the original."""
    return read_image(row.source or Path(data_dir) / row.path, name=str(row.path))


def _per_row(
    frame: pd.DataFrame,
    one: Callable[[Any], np.ndarray],
    shape: tuple[int, ...],
    dtype: Any,
    workers: int,
    progress: Progress | None = None,
) -> np.ndarray:
    """``one(row)`` (rows with ``path``, pixel ``digest`` and ``source``) of every row, each of ``shape``, stacked in
    order, in threads."""
    digests, sources = pixel_sources(frame)
    rows = list(frame[["path"]].assign(digest=digests, source=sources).itertuples())
    out = np.empty((len(rows), *shape), dtype)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, array in enumerate(pool.map(one, rows)):
            out[i] = array
            if progress:
                progress(i + 1, len(rows))
    return out


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Inverse-frequency class weights ``n / (k * n_c)`` (scikit-learn's "balanced"; balanced classes get 1.0)."""
    from sklearn.utils.class_weight import compute_class_weight

    counts = np.bincount(labels, minlength=len(CLASSES))
    if (counts == 0).any():
        raise PipelineError(f"every class needs training images; counts {dict(zip(CLASSES, counts.tolist()))}")
    weights = compute_class_weight("balanced", classes=np.arange(len(CLASSES)), y=labels)
    return {i: float(w) for i, w in enumerate(weights)}


def augmentation_layers(aug: Augmentation, seed: int) -> Any:
    """A Keras Sequential of random rotation, zoom, translation, shear (and optional flip) layers.

    Called directly the layers draw from their own seeded generators; :func:`make_dataset` instead hands each batch
    stateless seeds of its own (see :func:`augment_batch`).
    """
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


def _seed_stream(seed: Any) -> Any:
    """A Keras ``SeedGenerator`` stand-in that hands out distinct seeds folded from one stateless seed tensor.

    Keras' own generators keep a state variable that parallel tf.data maps advance in no fixed order and that a new
    process starts again from scratch; these seeds depend only on ``seed`` and the order of the draws.
    """
    import keras
    import tensorflow as tf

    class SeedStream(keras.random.SeedGenerator):
        """Stateless: ``next()`` folds a running count into the batch seed (no variable, so no __init__ of the base)."""

        def __init__(self, base: Any) -> None:
            self.base, self.count = base, 0

        def next(self, ordered: bool = True) -> Any:
            """The next seed of the stream."""
            self.count += 1
            return tf.random.experimental.stateless_fold_in(self.base, self.count)

    return SeedStream(seed)


def augment_batch(layers: Any, images: Any, seed: Any) -> Any:
    """Apply each augmentation layer to a batch with transformations drawn from the stateless ``seed`` ([2] ints)."""
    seeds = _seed_stream(seed)
    for layer in layers.layers:
        images = layer.transform_images(
            images, layer.get_random_transformation(images, training=True, seed=seeds), training=True
        )
    return images


def source_codes(labels: np.ndarray, sources: np.ndarray) -> tuple[np.ndarray, tuple[tuple[str, ...], ...]]:
    """Per image the index of its source among the sources of its class, and per class (CLASSES order) those sources."""
    names = np.asarray(sources).astype(str)
    by_class = tuple(tuple(sorted(set(names[labels == c]))) for c in range(len(CLASSES)))
    codes = np.array([by_class[c].index(s) for c, s in zip(labels.tolist(), names)], np.int32)
    return codes, by_class


def class_sources(frame: pd.DataFrame) -> tuple[tuple[str, ...], ...]:
    """Per class (CLASSES order) the sources of the frame's training images."""
    train = frame[frame["split"] == "train"]
    return source_codes(labels_of(train), train["source"].astype(str).to_numpy())[1]


def sampling_groups(labels: np.ndarray, sources: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per image its group index and per group its class: one group per class, or (``sources``) per (class, source)."""
    keys = list(zip(labels.tolist(), [""] * len(labels) if sources is None else [str(s) for s in sources]))
    groups = sorted(set(keys))
    index = {key: i for i, key in enumerate(groups)}
    return np.array([index[k] for k in keys], np.int32), np.array([g[0] for g in groups], np.int32)


def _epoch_order(labels: np.ndarray, seed: Any, balanced: bool, sources: np.ndarray | None = None) -> Any:
    """The image indices of one epoch, drawn from the stateless ``seed``: a permutation, or (``balanced``) as many
    draws with replacement with both classes equally likely and, with ``sources``, within a class every source
    equally likely."""
    import tensorflow as tf

    n = len(labels)
    if not balanced:
        return tf.argsort(tf.random.stateless_uniform([n], seed=seed))
    group_of, group_class = sampling_groups(labels, sources)
    counts = np.bincount(group_of, minlength=len(group_class))
    per_class = np.bincount(group_class, minlength=len(CLASSES))
    weights = 1.0 / (len(CLASSES) * per_class[group_class])
    by_group = tf.constant(np.argsort(group_of, kind="stable").astype(np.int32))
    offsets = tf.constant((np.cumsum(counts) - counts).astype(np.int32))
    logits = tf.math.log(tf.constant(weights[None, :], tf.float32))
    groups = tf.reshape(
        tf.random.stateless_categorical(
            logits, n, seed=tf.random.experimental.stateless_fold_in(seed, 1), dtype=tf.int32
        ),
        [n],
    )
    within = tf.random.stateless_uniform([n], seed=tf.random.experimental.stateless_fold_in(seed, 2))
    picks = tf.cast(within * tf.gather(tf.constant(counts, tf.float32), groups), tf.int32)
    return tf.gather(by_group, tf.gather(offsets, groups) + picks)


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch: int,
    training: bool,
    seed: int,
    augment: Augmentation | None = None,
    balanced: bool = False,
    sources: np.ndarray | None = None,
    epochs: range | None = None,
    appearance: Appearance | None = None,
    normal_markings: float = 0.0,
    source_codes: np.ndarray | None = None,
    allowed: np.ndarray | None = None,
) -> Any:
    """A batched, prefetched ``tf.data.Dataset`` of ``(float32 (b,s,s,1) raw 0-255, one-hot (b,2))``.

    Training datasets are shuffled and augmented with stateless seeds derived from ``(seed, epoch)`` only, so epoch
    k holds the same batches whether or not the process trained epochs before it (a resumed run sees exactly what an
    uninterrupted one would). With ``epochs`` the dataset holds the batches of those epochs back to back (train
    with ``steps_per_epoch``); without, every pass over it is a new epoch keyed by a seeded per-pass random number.
    ``balanced`` draws both classes with equal probability (same number of images per epoch as the data holds);
    with ``sources`` (one name per image) every source of a class is, within that class, equally likely too.
    ``appearance`` adds the appearance augmentation of :mod:`cxr_core.train.appearance` after the geometric one.
    ``normal_markings`` is the probability that a Normal image gets synthetic markings first
    (:mod:`cxr_core.train.normal_markings`), so they move with it under the geometric augmentation.
    With ``source_codes`` (per image its source's index within its class) or ``allowed`` (per image its dilated lung
    mask, moved with the image by the geometric augmentation) training batches carry
    ``{"image", "source", "allowed"}`` as inputs for :class:`~cxr_core.train.robust.RobustModel`.
    """
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    pixels, classes = tf.constant(images), tf.constant(labels.astype(np.int32))
    codes = tf.constant(np.zeros(len(labels), np.int32) if source_codes is None else source_codes.astype(np.int32))
    allowed_masks = None if allowed is None else tf.constant(allowed.astype(np.uint8))

    def to_model(index: Any) -> tuple[Any, Any]:
        """Image indices -> float32 channel-last images and one-hot labels."""
        return tf.cast(tf.gather(pixels, index), tf.float32)[..., None], tf.one_hot(
            tf.gather(classes, index), len(CLASSES)
        )

    if not training:
        return (
            tf.data.Dataset.range(len(labels))
            .batch(batch)
            .map(to_model, num_parallel_calls=autotune)
            .prefetch(autotune)
        )
    if epochs is None:
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    else:
        keys = tf.data.Dataset.range(epochs.start, epochs.stop)
    layers = augmentation_layers(augment, seed) if augment is not None else None

    def epoch_batches(key: Any) -> Any:
        """The batches of the epoch keyed ``key``: (epoch seed, batch number, image indices)."""
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(key, tf.int64)])
        order = tf.data.Dataset.from_tensor_slices(_epoch_order(labels, epoch_seed, balanced, sources)).batch(batch)
        return order.enumerate().map(lambda i, index: (epoch_seed, i, index))

    def load(epoch_seed: Any, i: Any, index: Any) -> tuple[Any, Any]:
        """One batch, augmented with the stateless seed of (epoch seed, batch number)."""
        x, y = to_model(index)
        batch_seed = tf.random.experimental.stateless_fold_in(epoch_seed, i)
        if normal_markings > 0:
            is_normal = tf.equal(tf.gather(classes, index), CLASSES.index("Normal"))
            marks_seed = tf.random.experimental.stateless_fold_in(batch_seed, 104729)
            marked = tf.numpy_function(
                lambda *args: paint_normals(*args, normal_markings), [x, is_normal, marks_seed], tf.float32
            )
            x = tf.ensure_shape(marked, x.shape)
        inside = None if allowed is None else tf.cast(tf.gather(allowed_masks, index), tf.float32)[..., None] * 255
        if layers is not None and inside is not None:
            moved = augment_batch(layers, tf.concat([x, inside], axis=-1), batch_seed)
            x, inside = moved[..., :1], moved[..., 1:]
        elif layers is not None:
            x = augment_batch(layers, x, batch_seed)
        if appearance is not None:
            x = appearance_batch(x, tf.random.experimental.stateless_fold_in(batch_seed, 7919), appearance)
        if source_codes is None and inside is None:
            return x, y
        inputs = {"image": x, "source": tf.gather(codes, index), "allowed": tf.zeros_like(x[..., 0])}
        if inside is not None:
            inputs["allowed"] = tf.cast(inside[..., 0] >= 128, tf.float32)
        return inputs, y

    plain_load = tf.autograph.experimental.do_not_convert(load)
    n_batches = (1 if epochs is None else len(epochs)) * -(-len(labels) // batch)
    batches = keys.flat_map(epoch_batches).apply(tf.data.experimental.assert_cardinality(n_batches))
    return batches.map(plain_load, num_parallel_calls=autotune).prefetch(autotune)


def paper_iterator(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch: int,
    training: bool,
    seed: int,
    augment: Augmentation | None = None,
) -> Any:
    """The paper's Keras ``ImageDataGenerator`` pipeline over the same arrays (``len()`` = ceil(n / batch): bug fixed).

    ImageDataGenerator's ``shear_range`` is in degrees, so the paper's 0.2 is a 0.2-degree shear; kept as is.
    """
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    aug = augment if (training and augment is not None) else Augmentation(0.0, 0.0, 0.0, 0.0, False)
    generator = ImageDataGenerator(
        rotation_range=aug.rotation,
        zoom_range=aug.zoom,
        width_shift_range=aug.shift,
        height_shift_range=aug.shift,
        shear_range=aug.shear,
        horizontal_flip=aug.flip,
    )
    onehot = np.eye(len(CLASSES), dtype=np.float32)[labels]
    return generator.flow(images[..., None].astype(np.float32), onehot, batch_size=batch, shuffle=training, seed=seed)
