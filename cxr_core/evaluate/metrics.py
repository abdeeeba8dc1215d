"""Binary classification metrics computed with scikit-learn, patient-level bootstrap CIs, reliability and ECE.

Conventions: ``y_true`` is 1 for the positive class (COVID) and 0 otherwise, ``p_pos`` is P(positive), and a case
is called positive when ``p_pos >= threshold``. Metrics that are undefined on the given cases (ROC AUC with one
class, PPV with no positive calls, ...) are ``None``, never a made-up number.

ECE: the expected calibration error of P(positive) over ``n_bins`` equal-width bins on [0, 1] (the last bin
includes 1.0, the binning of ``sklearn.calibration.calibration_curve(strategy="uniform")``):
``ECE = sum_b (n_b / n) * |mean(y in b) - mean(p in b)|``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

DEFAULT_BINS = 10
DEFAULT_BOOTSTRAP = 1000
THRESHOLD_METRICS = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")
RANK_METRICS = ("roc_auc", "pr_auc")
CI_METRICS = RANK_METRICS + THRESHOLD_METRICS + ("ece",)


def _arrays(y_true: Sequence[int] | np.ndarray, p_pos: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated 1-D int labels and float scores of equal length."""
    y = np.asarray(y_true).astype(int).ravel()
    p = np.asarray(p_pos, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"{len(y)} labels but {len(p)} scores")
    if y.size and not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("labels must be 0 (negative) or 1 (positive)")
    return y, p


def _defined(value: float, denominator: int) -> float | None:
    """``value`` as a float, or None when its denominator is zero."""
    return float(value) if denominator > 0 else None


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, int]:
    """Counts ``{tp, fp, tn, fn}`` from scikit-learn's confusion matrix."""
    tn, fp, fn, tp = confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    return {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}


def threshold_metrics(y_true: np.ndarray, p_pos: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity, PPV, NPV, F1 and the confusion counts at ``threshold``."""
    y, p = _arrays(y_true, p_pos)
    pred = (p >= threshold).astype(int)
    counts = confusion(y, pred)
    pos, neg = counts["tp"] + counts["fn"], counts["tn"] + counts["fp"]
    called_pos, called_neg = counts["tp"] + counts["fp"], counts["tn"] + counts["fn"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return {
            "threshold": float(threshold),
            "accuracy": _defined(accuracy_score(y, pred), len(y)),
            "sensitivity": _defined(recall_score(y, pred, pos_label=1, zero_division=0), pos),
            "specificity": _defined(recall_score(y, pred, pos_label=0, zero_division=0), neg),
            "ppv": _defined(precision_score(y, pred, pos_label=1, zero_division=0), called_pos),
            "npv": _defined(precision_score(y, pred, pos_label=0, zero_division=0), called_neg),
            "f1": _defined(f1_score(y, pred, pos_label=1, zero_division=0), pos + called_pos),
            "confusion": counts,
        }


def rank_metrics(y_true: np.ndarray, p_pos: np.ndarray) -> dict[str, float | None]:
    """ROC AUC and PR AUC (average precision); None unless both classes are present."""
    y, p = _arrays(y_true, p_pos)
    if len(np.unique(y)) < 2:
        return {"roc_auc": None, "pr_auc": None}
    return {"roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p))}


def reliability(y_true: np.ndarray, p_pos: np.ndarray, n_bins: int = DEFAULT_BINS) -> dict[str, list[Any]]:
    """Reliability-diagram data per non-empty equal-width bin: bin edges, count, mean P(positive), positive rate."""
    y, p = _arrays(y_true, p_pos)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p, side="right")
    counts = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y, minlength=n_bins)
    keep = counts > 0
    return {
        "bin_low": edges[:-1][keep].tolist(),
        "bin_high": edges[1:][keep].tolist(),
        "count": counts[keep].astype(int).tolist(),
        "mean_predicted": (sum_p[keep] / counts[keep]).tolist(),
        "fraction_positive": (sum_y[keep] / counts[keep]).tolist(),
    }


def expected_calibration_error(y_true: np.ndarray, p_pos: np.ndarray, n_bins: int = DEFAULT_BINS) -> float | None:
    """ECE of P(positive) over equal-width bins (see the module docstring); None for no cases."""
    curve = reliability(y_true, p_pos, n_bins)
    counts = np.asarray(curve["count"], dtype=np.float64)
    if counts.sum() == 0:
        return None
    gaps = np.abs(np.asarray(curve["fraction_positive"]) - np.asarray(curve["mean_predicted"]))
    return float(np.sum(counts / counts.sum() * gaps))


def all_metrics(y_true: np.ndarray, p_pos: np.ndarray, threshold: float, n_bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """Rank metrics, threshold metrics and ECE in one flat dict (plus ``confusion``)."""
    return {
        **rank_metrics(y_true, p_pos),
        **threshold_metrics(y_true, p_pos, threshold),
        "ece": expected_calibration_error(y_true, p_pos, n_bins),
    }


def bootstrap_ci(
    y_true: np.ndarray,
    p_pos: np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    threshold: float,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    level: float = 0.95,
    metrics: Sequence[str] = CI_METRICS,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals resampling whole patients (``groups``) with replacement.

    Every resample draws as many patients as there are, keeps all their images, and recomputes the metrics;
    resamples where a metric is undefined are skipped for that metric (None when fewer than half are usable).
    """
    y, p = _arrays(y_true, p_pos)
    codes, members = _group_members(groups, len(y))
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in metrics}
    for _ in range(n_boot):
        picked = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[g] for g in picked])
        values = _resample_metrics(y[idx], p[idx], threshold, n_bins)
        for name in metrics:
            if values.get(name) is not None:
                draws[name].append(values[name])
    tail = (1 - level) / 2 * 100
    return {
        name: ([float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] if len(v) >= n_boot / 2 else None)
        for name, v in draws.items()
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator``, or None when the denominator is zero."""
    return numerator / denominator if denominator else None


def _resample_metrics(y: np.ndarray, p: np.ndarray, threshold: float, n_bins: int) -> dict[str, float | None]:
    """The metrics of :func:`all_metrics` for one bootstrap resample: ROC/PR AUC from scikit-learn, the threshold
    metrics as ratios of the confusion counts (scikit-learn's input validation would dominate 1000 resamples; a
    test checks both paths agree)."""
    pred = p >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = len(y) - tp - fp - fn
    return {
        **rank_metrics(y, p),
        "accuracy": _ratio(tp + tn, len(y)),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "ece": expected_calibration_error(y, p, n_bins),
    }


def _group_members(groups: Sequence[Any] | np.ndarray, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Integer codes of the groups and, per group, the indices of its rows."""
    values = np.asarray(groups, dtype=object).ravel()
    if len(values) != n:
        raise ValueError(f"{n} cases but {len(values)} group ids")
    _, codes = np.unique(values.astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    splits = np.flatnonzero(np.diff(codes[order])) + 1
    return codes, np.split(order, splits)


def subgroup_table(
    y_true: np.ndarray, p_pos: np.ndarray, keys: Sequence[Any] | np.ndarray, threshold: float
) -> dict[str, dict[str, Any]]:
    """Per-key (e.g. per-source) table: n, class counts, accuracy, sensitivity and/or specificity, ROC AUC when both
    classes exist."""
    y, p = _arrays(y_true, p_pos)
    values = np.asarray(keys, dtype=object).astype(str)
    table: dict[str, dict[str, Any]] = {}
    for key in sorted(set(values.tolist())):
        mask = values == key
        m = threshold_metrics(y[mask], p[mask], threshold)
        row: dict[str, Any] = {
            "n": int(mask.sum()),
            "n_positive": int(y[mask].sum()),
            "n_negative": int((1 - y[mask]).sum()),
            "accuracy": m["accuracy"],
        }
        if row["n_positive"]:
            row["sensitivity"] = m["sensitivity"]
        if row["n_negative"]:
            row["specificity"] = m["specificity"]
        if row["n_positive"] and row["n_negative"]:
            row["roc_auc"] = rank_metrics(y[mask], p[mask])["roc_auc"]
        table[key] = row
    return table


def curves(y_true: np.ndarray, p_pos: np.ndarray, max_points: int = 200) -> dict[str, dict[str, list[float]]]:
    """ROC and precision-recall curve points (thinned to at most ``max_points``); empty with one class."""
    y, p = _arrays(y_true, p_pos)
    if len(np.unique(y)) < 2:
        return {"roc": {}, "pr": {}}
    fpr, tpr, roc_t = roc_curve(y, p)
    precision, recall, pr_t = precision_recall_curve(y, p)
    n = max_points
    return {
        "roc": {"fpr": _thin(fpr, n), "tpr": _thin(tpr, n), "threshold": _thin(np.minimum(roc_t, 1.0), n)},
        "pr": {"recall": _thin(recall[:-1], n), "precision": _thin(precision[:-1], n), "threshold": _thin(pr_t, n)},
    }


def _thin(values: np.ndarray, max_points: int) -> list[float]:
    """At most ``max_points`` evenly spaced entries, always keeping the first and last."""
    if len(values) <= max_points:
        return [float(v) for v in values]
    idx = np.unique(np.linspace(0, len(values) - 1, max_points).round().astype(int))
    return [float(v) for v in values[idx]]
