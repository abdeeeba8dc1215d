"""Familiarity: has this model seen images like this one? A distance in the model's own features to its training images.

Fitted once per model on the features of its *training* split and stored in the model directory
(``familiarity.json`` + ``familiarity.npz``, tied to the model's version). Three scores are available:

- ``mahalanobis``: the smallest class-conditional Mahalanobis distance on penultimate features (shared Ledoit-Wolf
  covariance; Lee et al. 2018);
- ``knn``: the distance to the k-th nearest training image on L2-normalised penultimate features (Sun et al. 2022);
- ``style_knn``: the same k-th-neighbour distance on "style" features, the mean and standard deviation of each
  channel of the model's first two pooled feature maps, which describe how an image looks more than what it shows;
- ``acquisition_knn``: the k-th-neighbour Euclidean distance on standardised acquisition features of the image as read,
  before the model's normalisation (grey-level quantiles, noise, sharpness, frame: :mod:`cxr_core.gate.acquisition`).

The threshold is the validation split's ``1 - false_alarm_rate`` quantile, so about that share of in-distribution
images is called unfamiliar. The reported ``score`` is the distance divided by that threshold: above 1 is
unfamiliar. ``bench/gate.py`` measures every method leave-one-source-out and the default follows that measurement.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr_core.gate.acquisition import acquisition_batch
from cxr_core.util.atomic import write_json_atomic
from cxr_core.util.clock import utc_now

FAMILIARITY_JSON = "familiarity.json"
FAMILIARITY_NPZ = "familiarity.npz"
ACQUISITION = "acquisition"
METHODS = ("mahalanobis", "knn", "style_knn", "acquisition_knn")
FEATURES = {"mahalanobis": "penultimate", "knn": "penultimate", "style_knn": "style", "acquisition_knn": ACQUISITION}
NEIGHBOUR_METHODS = ("knn", "style_knn", "acquisition_knn")
DEFAULT_METHOD = "acquisition_knn"
DEFAULT_FALSE_ALARM = 0.05
KNN_K = 5


class FamiliarityError(ValueError):
    """A familiarity fit cannot be made or read; one clear line."""


def _normalise(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1.0)


@dataclass
class Familiarity:
    """A fitted familiarity score: the reference statistics, the threshold and what it was fitted on."""

    method: str
    arrays: dict[str, np.ndarray]
    sources: tuple[str, ...]
    threshold: float = 1.0
    false_alarm_rate: float = DEFAULT_FALSE_ALARM
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def features(self) -> str:
        """The kind of features this score is computed on: a ``LoadedModel.features_and_probs`` kind or acquisition."""
        return FEATURES[self.method]

    def reference(self, features: np.ndarray) -> np.ndarray:
        """Feature rows in the space the neighbours live in: standardised when fitted so, else unit length."""
        if "scale" in self.arrays:
            return (features - self.arrays["centre"]) / self.arrays["scale"]
        return _normalise(features)

    def distances(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw distances of feature rows ``(n, d)`` and the index of each row's nearest source."""
        x = np.asarray(features, np.float64)
        if self.method in NEIGHBOUR_METHODS:
            ref, rows = self.arrays["train"], self.reference(x)
            squared = (rows**2).sum(axis=1)[:, None] + (ref**2).sum(axis=1)[None, :] - 2.0 * rows @ ref.T
            k = min(KNN_K, ref.shape[0])
            order = np.argsort(squared, axis=1)[:, :k]
            kth = np.take_along_axis(squared, order[:, -1:], axis=1)[:, 0]
            codes = self.arrays["train_source"][order]
            nearest = np.array([np.bincount(row, minlength=len(self.sources)).argmax() for row in codes])
            return np.sqrt(np.maximum(0.0, kth)), nearest
        precision = self.arrays["precision"]

        def mahalanobis(means: np.ndarray) -> np.ndarray:
            """Squared Mahalanobis distance of every row to every mean, shape (n, m)."""
            diff = x[:, None, :] - means[None, :, :]
            return np.einsum("nmd,de,nme->nm", diff, precision, diff)

        return np.sqrt(mahalanobis(self.arrays["class_means"]).min(axis=1)), mahalanobis(
            self.arrays["source_means"]
        ).argmin(axis=1)

    def scores(self, features: np.ndarray) -> np.ndarray:
        """Distances divided by the threshold: above 1 is unfamiliar."""
        return self.distances(features)[0] / self.threshold

    def assess(self, features: np.ndarray) -> list[dict[str, Any]]:
        """The ``familiarity`` object (``score``, ``familiar``, ``nearest_source``) of each feature row."""
        raw, nearest = self.distances(np.atleast_2d(features))
        return [
            {
                "score": round(float(d / self.threshold), 4),
                "familiar": bool(d <= self.threshold),
                "nearest_source": self.sources[int(s)],
            }
            for d, s in zip(raw, nearest)
        ]


def fit(
    features: np.ndarray, labels: Sequence[str], sources: Sequence[str], method: str = DEFAULT_METHOD
) -> Familiarity:
    """Fit the reference statistics on training features ``(n, d)`` with their class labels and sources."""
    if method not in METHODS:
        raise FamiliarityError(f"unknown familiarity method {method!r}; choose from {list(METHODS)}")
    x = np.asarray(features, np.float64)
    if x.ndim != 2 or len(x) < 2 or len(x) != len(labels) or len(x) != len(sources):
        raise FamiliarityError("familiarity needs at least 2 feature rows with one label and one source each")
    names = tuple(sorted(set(map(str, sources))))
    codes = np.array([names.index(str(s)) for s in sources])
    if FEATURES[method] == ACQUISITION:
        centre, spread = x.mean(axis=0), x.std(axis=0)
        scale = np.where(spread > 0, spread, 1.0)
        arrays = {"train": (x - centre) / scale, "train_source": codes, "centre": centre, "scale": scale}
        return Familiarity(method, arrays, names)
    if method in NEIGHBOUR_METHODS:
        return Familiarity(method, {"train": _normalise(x), "train_source": codes}, names)
    from sklearn.covariance import LedoitWolf

    labels_arr = np.asarray(labels).astype(str)
    classes = sorted(set(labels_arr))
    means = np.stack([x[labels_arr == c].mean(axis=0) for c in classes])
    centred = x - means[[classes.index(c) for c in labels_arr]]
    precision = LedoitWolf().fit(centred).precision_
    source_means = np.stack([x[codes == i].mean(axis=0) for i in range(len(names))])
    return Familiarity(
        method,
        {"class_means": means, "precision": precision, "source_means": source_means},
        names,
        info={"classes": classes},
    )


def calibrate(fam: Familiarity, val_features: np.ndarray, false_alarm_rate: float = DEFAULT_FALSE_ALARM) -> Familiarity:
    """Set the threshold so that ``false_alarm_rate`` of the validation images are called unfamiliar."""
    if not 0 < false_alarm_rate < 1 or len(val_features) == 0:
        raise FamiliarityError("calibration needs validation features and a false-alarm rate in (0, 1)")
    raw, _ = fam.distances(val_features)
    fam.threshold = float(max(np.quantile(raw, 1 - false_alarm_rate), 1e-12))
    fam.false_alarm_rate = float(false_alarm_rate)
    return fam


def save(fam: Familiarity, directory: Path, model_version: str, **info: Any) -> None:
    """Write ``familiarity.json`` and ``familiarity.npz`` into a model directory, tied to ``model_version``."""
    np.savez_compressed(
        directory / FAMILIARITY_NPZ,
        **{k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in fam.arrays.items()},
    )
    write_json_atomic(
        directory / FAMILIARITY_JSON,
        {
            "method": fam.method,
            "threshold": fam.threshold,
            "false_alarm_rate": fam.false_alarm_rate,
            "sources": list(fam.sources),
            "model_version": model_version,
            "features": fam.features,
            "knn_k": KNN_K if fam.method in NEIGHBOUR_METHODS else None,
            "created": utc_now(),
            **fam.info,
            **info,
        },
    )


def load(directory: Path, model_version: str) -> Familiarity | None:
    """The familiarity fit stored with a model, or None when there is none or it belongs to another version."""
    meta_file, arrays_file = directory / FAMILIARITY_JSON, directory / FAMILIARITY_NPZ
    if not meta_file.is_file() or not arrays_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        with np.load(arrays_file, allow_pickle=False) as data:
            arrays = {k: data[k].astype(np.float64) if data[k].dtype.kind == "f" else data[k] for k in data.files}
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise FamiliarityError(f"{directory}: unreadable familiarity files ({exc})") from exc
    if meta.get("model_version") != model_version:
        return None
    info = {k: v for k, v in meta.items() if k not in {"method", "threshold", "false_alarm_rate", "sources"}}
    return Familiarity(
        str(meta["method"]),
        arrays,
        tuple(meta["sources"]),
        float(meta["threshold"]),
        float(meta["false_alarm_rate"]),
        info,
    )


def embed(model: Any, arrays: np.ndarray, kind: str = "penultimate", batch_size: int = 64) -> np.ndarray:
    """A :class:`LoadedModel`'s features of one ``kind`` for preprocessed uint8 inputs ``(n, size, size)``."""
    parts = [
        model.features_and_probs(arrays[i : i + batch_size].astype(np.float32)[..., None], kind)[0]
        for i in range(0, len(arrays), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def image_features(model: Any, kind: str, images: Sequence[np.ndarray], batch: np.ndarray | None = None) -> np.ndarray:
    """Familiarity features of 2-D uint8 images as read: acquisition features, or the model's features of ``batch``
    (the model's prepared inputs of the images, made here when not given)."""
    if kind == ACQUISITION:
        return acquisition_batch(images)
    return model.features_and_probs(model.prepare(list(images)) if batch is None else batch, kind)[0]


def dataset_features(
    cfg: Any, model: Any, data_dir: Path, frame: Any, kind: str, *, workers: int = 1, prepared: np.ndarray | None = None
) -> np.ndarray:
    """Familiarity features of dataset rows: acquisition features of the pixels as read (repairs included), or the
    model's features of its preprocessed inputs (``prepared`` when the caller holds them, else from the cache)."""
    from cxr_core.train.pipeline import load_acquisition, load_arrays

    if kind == ACQUISITION:
        return load_acquisition(frame, data_dir, workers=workers)
    if prepared is None:
        prepared = load_arrays(frame, data_dir, model.preprocess, cfg=cfg, workers=workers)
    return embed(model, prepared, kind)


def fit_model(
    model: Any,
    train_features: np.ndarray,
    train_rows: Any,
    val_features: np.ndarray,
    method: str = DEFAULT_METHOD,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM,
    write: bool = True,
) -> Familiarity:
    """Fit and calibrate a loaded model's familiarity on its train/val features (of ``FEATURES[method]``); stored
    with the model unless told not."""
    fam = fit(
        train_features,
        train_rows["label"].astype(str).tolist(),
        train_rows["source"].astype(str).tolist(),
        method,
    )
    calibrate(fam, val_features, false_alarm_rate)
    fam.info.update({"n_train": int(len(train_features)), "n_val": int(len(val_features))})
    if write:
        save(fam, model.path, model.version)
        model.familiarity = fam
    return fam


def model_split(model: Any, index: Any) -> Any:
    """The rows the model was trained and validated on: its ``split.csv`` (model or run dir), else the index splits."""
    import pandas as pd

    for candidate in (model.path / "split.csv", model.path.parent / "split.csv"):
        if candidate.is_file():
            return pd.read_csv(candidate, dtype=str, keep_default_na=False)
    return index.images()


def fit_on_dataset(
    cfg: Any,
    model: Any,
    index: Any,
    method: str = DEFAULT_METHOD,
    false_alarm_rate: float = DEFAULT_FALSE_ALARM,
    write: bool = True,
) -> Familiarity:
    """Fit a registry model's familiarity on the train split of the dataset it was trained on (val for the threshold)."""
    if method not in METHODS:
        raise FamiliarityError(f"unknown familiarity method {method!r}; choose from {list(METHODS)}")
    rows = model_split(model, index)
    train, val = rows[rows["split"] == "train"], rows[rows["split"] == "val"]
    if train.empty or val.empty:
        raise FamiliarityError(f"{index.data_dir} has no train or val images for this model")
    kind = FEATURES[method]
    fam = fit_model(
        model,
        dataset_features(cfg, model, index.data_dir, train, kind, workers=cfg.workers),
        train,
        dataset_features(cfg, model, index.data_dir, val, kind, workers=cfg.workers),
        method,
        false_alarm_rate,
        write=False,
    )
    fam.info["data_dir"] = str(index.data_dir)
    if write:
        save(fam, model.path, model.version)
        model.familiarity = fam
    return fam


def dataset_scores(cfg: Any, model: Any, index: Any, rows: Any) -> np.ndarray | None:
    """Familiarity scores of a model on dataset rows (None when the model has no familiarity fit)."""
    if model.familiarity is None:
        return None
    features = dataset_features(cfg, model, index.data_dir, rows, model.familiarity.features, workers=cfg.workers)
    return model.familiarity.scores(features)
