"""Evaluate a registry model on a dataset folder: calibrated metrics with patient-bootstrap CIs, per source, honestly.

Every metric is computed on the model's *calibrated* P(COVID) (its stored temperature) and at its stored threshold;
``at_0_5`` repeats the threshold metrics at 0.5 and ``ece_uncalibrated`` / ``reliability.uncalibrated`` show the
raw softmax. ROC and PR AUC do not depend on the temperature (it preserves the ranking). Predictions are cached per
model version and image sha256 under ``cfg.cache_dir/predictions``, so re-evaluating is fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_core.config import Config
from cxr_core.curation.curated import curated_index
from cxr_core.data.index import DatasetIndex, confounding
from cxr_core.evaluate.calibration import apply_temperature
from cxr_core.evaluate.coverage import coverage_report, gate_dataset
from cxr_core.evaluate.metrics import (
    DEFAULT_BINS,
    DEFAULT_BOOTSTRAP,
    all_metrics,
    bootstrap_ci,
    curves,
    expected_calibration_error,
    reliability,
    subgroup_table,
    threshold_metrics,
)
from cxr_core.gate import load_gate_net
from cxr_core.gate.familiarity import dataset_scores
from cxr_core.serve.registry import LoadedModel
from cxr_core.train.pipeline import load_arrays
from cxr_core.util.atomic import read_json, write_json_atomic
from cxr_core.util.clock import utc_now
from cxr_core.util.progress import Progress

SPLIT_CHOICES = ("test", "val", "train", "all")
HEADLINE = ("roc_auc", "pr_auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "ece")


class EvaluationError(ValueError):
    """Nothing to evaluate (empty split, one class only where two are needed); one clear line."""


def _prediction_cache(cfg: Config, model: LoadedModel) -> Path:
    """The JSON file caching this model version's raw softmax outputs by image sha256 (or path when unknown)."""
    return cfg.cache_dir / "predictions" / f"{model.version}-{model.preprocess.digest()}.json"


def raw_predictions(
    model: LoadedModel, index: DatasetIndex, rows: pd.DataFrame, cfg: Config, progress: Progress | None = None
) -> np.ndarray:
    """Uncalibrated softmax outputs ``(n, k)`` for the rows, from the cache where possible."""
    cache_file = _prediction_cache(cfg, model)
    cache: dict[str, list[float]] = read_json(cache_file, {}) or {}
    keys = [sha or f"path:{path}" for sha, path in zip(rows["sha256"].astype(str), rows["path"].astype(str))]
    missing = {k for k in keys if k not in cache}
    if missing:
        keyed = rows.assign(_key=keys)
        todo = keyed[keyed["_key"].isin(missing)].drop_duplicates("_key")
        arrays = load_arrays(todo, index.data_dir, model.preprocess, cfg=cfg, workers=cfg.workers)
        batch_size = 32
        for start in range(0, len(todo), batch_size):
            batch = arrays[start : start + batch_size].astype(np.float32)[..., None]
            out = model.predict_batch(batch)
            for key, probs in zip(todo["_key"].iloc[start : start + batch_size], out):
                cache[key] = [float(v) for v in probs]
            if progress:
                progress(min(start + batch_size, len(todo)), len(todo))
        write_json_atomic(cache_file, cache)
    return np.array([cache[k] for k in keys], dtype=np.float64)


def select_rows(index: DatasetIndex, split: str, classes: tuple[str, ...]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The usable rows of a split with the model's classes, and how many files were left out and why."""
    if split not in SPLIT_CHOICES:
        raise EvaluationError(f"unknown split {split!r}; choose from {SPLIT_CHOICES}")
    frame = index.frame if split == "all" else index.frame[index.frame["split"].isin([split, ""])]
    unreadable = int((frame["error"] != "").sum())
    readable = frame[frame["error"] == ""]
    excluded = readable[readable["excluded"]]
    rows = index.images(None if split == "all" else split)
    other = rows[~rows["label"].isin(classes)]
    rows = rows[rows["label"].isin(classes)].reset_index(drop=True)
    left_out = {"unreadable": unreadable, "other_label": int(len(other))}
    left_out.update({f"excluded_{k}": int(v) for k, v in excluded["exclude_reason"].value_counts().items()})
    return rows, left_out


def _cluster_ids(rows: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Patient ids for the bootstrap (the index uses ``file:<path>`` where no patient id is known) and their kind."""
    patients = rows["patient_id"].astype(str).to_numpy()
    known = not any(p.startswith("file:") or not p for p in patients)
    clusters = np.where(patients != "", patients, rows["path"].astype(str).to_numpy())
    return clusters, "patient" if known else "patient (image where unknown)"


def training_overlap(model: LoadedModel, rows: pd.DataFrame) -> int | None:
    """How many evaluated images the model was trained or calibrated on, from the ``split.csv`` in its directory or
    its run directory (None when the model's split is unknown)."""
    for candidate in (model.path / "split.csv", model.path.parent / "split.csv"):
        if candidate.is_file():
            split = pd.read_csv(candidate, dtype=str, keep_default_na=False)
            seen = set(split.loc[split["split"].isin(("train", "val")), "sha256"]) - {""}
            return int(rows["sha256"].astype(str).isin(seen).sum())
    return None


def _split_counts(index: DatasetIndex, classes: tuple[str, ...]) -> dict[str, Any]:
    """Images per split and class, and the training split's label x source table (for the model card)."""
    usable = index.images()
    usable = usable[usable["label"].isin(classes)]
    splits = {
        s: {str(k): int(v) for k, v in g["label"].value_counts().sort_index().items()}
        for s, g in usable.groupby("split")
    }
    train = usable[usable["split"] == "train"]
    return {"splits": splits, "train_by_source": confounding(train)["table"] if len(train) else {}}


def evaluate(
    model: LoadedModel,
    data: DatasetIndex | str | Path,
    split: str = "test",
    *,
    cfg: Config,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int | None = None,
    n_bins: int = DEFAULT_BINS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The evaluation object of ``cxr evaluate --json`` for ``model`` on a dataset folder (or an index) and split."""
    started = time.perf_counter()
    index = data if isinstance(data, DatasetIndex) else curated_index(cfg, data_dir=data)
    rows, left_out = select_rows(index, split, model.classes)
    if rows.empty:
        hint = " (a dataset without a split of its own: use --split all)" if split != "all" else ""
        raise EvaluationError(f"no usable images in split {split!r} of {index.data_dir}{hint}")
    raw = raw_predictions(model, index, rows, cfg, progress)
    y = (rows["label"] == model.positive).to_numpy(int)
    p_raw = raw[:, model.positive_index]
    p = apply_temperature(raw, model.temperature)[:, model.positive_index]
    point = all_metrics(y, p, model.threshold, n_bins)
    clusters, cluster_kind = _cluster_ids(rows)
    seed = cfg.seed if seed is None else seed
    at_half = threshold_metrics(y, p, 0.5)
    negative = next(c for c in model.classes if c != model.positive)
    table = confounding(rows)
    result: dict[str, Any] = {
        "n": int(len(rows)),
        f"n_{model.positive.lower()}": int(y.sum()),
        f"n_{negative.lower()}": int(len(y) - y.sum()),
        **{k: point[k] for k in HEADLINE},
        "threshold": float(model.threshold),
        "confusion": point["confusion"],
        "ci95": bootstrap_ci(y, p, clusters, model.threshold, n_boot=n_boot, seed=seed, n_bins=n_bins),
        "by_source": subgroup_table(y, p, rows["source"].astype(str).to_numpy(), model.threshold),
        "at_0_5": {k: at_half[k] for k in ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "confusion")},
        "ece_uncalibrated": expected_calibration_error(y, p_raw, n_bins),
        "temperature": float(model.temperature),
        "target_sensitivity": float(model.target_sensitivity),
        "reliability": {"uncalibrated": reliability(y, p_raw, n_bins), "calibrated": reliability(y, p, n_bins)},
        "ece_bins": n_bins,
        "curves": curves(y, p),
        "label_by_source": table["table"],
        "confounding": {"cramers_v": table["cramers_v"], "source_only_accuracy": table["source_only_accuracy"]},
        "excluded": left_out,
        "training_overlap": training_overlap(model, rows),
        "bootstrap": {
            "n_boot": n_boot,
            "seed": seed,
            "level": 0.95,
            "cluster": cluster_kind,
            "n_clusters": int(len(set(clusters.tolist()))),
        },
        "dataset": _split_counts(index, model.classes),
        "split": split,
        "data": {"dir": str(index.data_dir), "split": split},
        "model": {
            "name": model.name,
            "version": model.version,
            "path": str(model.path),
            "architecture": model.card.get("architecture") or model.model.name,
            "parameters": int(model.model.count_params()),
            "classes": list(model.classes),
            "positive": model.positive,
        },
        "created": utc_now(),
    }
    for row in result["by_source"].values():
        row[f"n_{model.positive.lower()}"] = row.pop("n_positive")
        row[f"n_{negative.lower()}"] = row.pop("n_negative")
    result["coverage"] = coverage_report(
        y,
        p,
        model.threshold,
        gate_dataset(cfg, index.data_dir, rows, load_gate_net()),
        dataset_scores(cfg, model, index, rows),
    )
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result
