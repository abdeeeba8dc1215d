"""What the Evaluation page shows, without Streamlit: cached ``cxr evaluate`` results, per-image predictions, the
worst errors with Grad-CAM, and the threshold trade-off.

Evaluations are cached as JSON under ``cfg.cache_dir/evaluations`` keyed by the model version, the dataset folder,
the split and a fingerprint of the evaluated images (sha256 and label), so a curation change re-evaluates.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_core.config import Config
from cxr_core.curation.curated import curated_index
from cxr_core.data.index import DatasetIndex
from cxr_core.evaluate.calibration import apply_temperature
from cxr_core.evaluate.evaluate import evaluate, raw_predictions, select_rows
from cxr_core.evaluate.metrics import DEFAULT_BOOTSTRAP, threshold_metrics
from cxr_core.serve.registry import LoadedModel, model_version
from cxr_core.train.rundir import write_json_safe
from cxr_core.util.atomic import read_json
from cxr_core.util.progress import Progress


def _fingerprint(rows: pd.DataFrame) -> str:
    """A short digest of the evaluated images and their labels."""
    text = "\n".join(sorted(rows["sha256"].astype(str) + ":" + rows["label"].astype(str)))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _folder_key(data_dir: str | Path) -> str:
    """A short digest of a dataset folder's absolute path."""
    return hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:8]


def cache_path(cfg: Config, model: LoadedModel, index: DatasetIndex, split: str, n_boot: int) -> Path:
    """The cache file of one evaluation (model version x dataset x split x image set x resamples)."""
    rows, _ = select_rows(index, split, model.classes)
    name = f"{model.version}-{_folder_key(index.data_dir)}-{split}-{_fingerprint(rows)}-{n_boot}.json"
    return cfg.cache_dir / "evaluations" / name


def latest_cached(cfg: Config, model_dir: str | Path, split: str = "test") -> dict[str, Any] | None:
    """The newest cached evaluation of a model directory on the configured dataset's split, None when never run."""
    version = model_version(model_dir)
    files = sorted(
        (cfg.cache_dir / "evaluations").glob(f"{version}-{_folder_key(cfg.data_dir)}-{split}-*.json"),
        key=lambda p: p.stat().st_mtime,
    )
    cached = read_json(files[-1], None) if files else None
    return cached if isinstance(cached, dict) else None


def cached_evaluation(
    cfg: Config,
    model: LoadedModel,
    index: DatasetIndex,
    split: str = "test",
    n_boot: int = DEFAULT_BOOTSTRAP,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The ``cxr evaluate`` result for a model on a dataset split, computed once and then read from the cache."""
    path = cache_path(cfg, model, index, split, n_boot)
    cached = read_json(path, None) if path.is_file() else None
    if isinstance(cached, dict):
        return {**cached, "cached": True}
    result = evaluate(model, index, split, cfg=cfg, n_boot=n_boot, progress=progress)
    write_json_safe(path, result)
    return {**result, "cached": False}


def open_index(cfg: Config, data_dir: str | Path) -> DatasetIndex:
    """The dataset index of a folder (the configured one or any other the user names)."""
    folder = Path(data_dir).expanduser().resolve()
    if not folder.is_dir():
        raise ValueError(f"no folder at {folder}")
    return curated_index(cfg, data_dir=folder)


def case_predictions(cfg: Config, model: LoadedModel, index: DatasetIndex, split: str = "test") -> pd.DataFrame:
    """One row per evaluated image: path, abspath (the file scored: a repair when there is one), label, source,
    ``y`` (1 = positive) and calibrated ``p``."""
    rows, _ = select_rows(index, split, model.classes)
    raw = raw_predictions(model, index, rows, cfg)
    out = rows[["path", "label", "source"]].copy()
    out["abspath"] = index.pixel_files(rows)
    out["y"] = (rows["label"] == model.positive).to_numpy(int)
    out["p"] = apply_temperature(raw, model.temperature)[:, model.positive_index] if len(raw) else []
    return out.reset_index(drop=True)


def at_threshold(cases: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV, accuracy, F1 and confusion counts at ``threshold``."""
    return threshold_metrics(cases["y"].to_numpy(), cases["p"].to_numpy(), threshold)


def worst_errors(cases: pd.DataFrame, threshold: float, k: int = 4) -> dict[str, pd.DataFrame]:
    """The ``k`` most confident false positives (highest P) and false negatives (lowest P) at ``threshold``."""
    called = cases["p"] >= threshold
    fp = cases[called & (cases["y"] == 0)].sort_values("p", ascending=False).head(k)
    fn = cases[~called & (cases["y"] == 1)].sort_values("p", ascending=True).head(k)
    return {"false positives": fp, "false negatives": fn}


def gradcam_overlay(model: LoadedModel, explainer: Any, gray: np.ndarray) -> tuple[np.ndarray, float]:
    """The image with the Grad-CAM heatmap of its predicted class blended on top, and its calibrated P(positive)."""
    from cxr_core.explain.attention import overlay
    from cxr_core.serve.inference import predict_image

    prediction = predict_image(model, gray, explainer, "gradcam", gate_net=None)
    return overlay(gray, prediction.heatmap), prediction.p_covid


def loso_of(model: LoadedModel, result: dict[str, Any]) -> dict[str, Any]:
    """Leave-one-source-out results from the evaluation or the model card ({} when never computed)."""
    return dict(result.get("leave_one_source_out") or model.card.get("leave_one_source_out") or {})


def audit_of(model_dir: str | Path) -> dict[str, Any]:
    """The shortcut audit (``audit.json``) of a model directory, {} when it has not been audited."""
    data = read_json(Path(model_dir) / "audit.json", {})
    return data if isinstance(data, dict) else {}
