"""Metrics agree with scikit-learn, undefined metrics are None, bootstrap CIs resample patients."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from cxr_core.evaluate.metrics import (
    _resample_metrics,
    all_metrics,
    bootstrap_ci,
    curves,
    expected_calibration_error,
    reliability,
    subgroup_table,
    threshold_metrics,
)

Y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0])
P = np.array([0.95, 0.8, 0.7, 0.45, 0.3, 0.6, 0.2, 0.1, 0.05, 0.4, 0.52, 0.99, 0.15, 0.65, 0.33, 0.08])


def test_metrics_match_scikit_learn_on_fixed_arrays() -> None:
    m = all_metrics(Y, P, threshold=0.5)
    pred = (P >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(Y, pred).ravel()
    assert m["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn} == {"tp": 5, "fp": 2, "tn": 7, "fn": 2}
    assert m["roc_auc"] == pytest.approx(roc_auc_score(Y, P))
    assert m["pr_auc"] == pytest.approx(average_precision_score(Y, P))
    assert m["accuracy"] == pytest.approx(accuracy_score(Y, pred)) == pytest.approx(12 / 16)
    assert m["sensitivity"] == pytest.approx(recall_score(Y, pred)) == pytest.approx(5 / 7)
    assert m["specificity"] == pytest.approx(7 / 9)
    assert m["ppv"] == pytest.approx(precision_score(Y, pred)) == pytest.approx(5 / 7)
    assert m["npv"] == pytest.approx(7 / 9)
    assert m["f1"] == pytest.approx(f1_score(Y, pred))
    strict = threshold_metrics(Y, P, 0.9)
    assert strict["confusion"]["tp"] == 2 and strict["specificity"] == 1.0


def test_ece_matches_sklearn_calibration_curve_bins() -> None:
    rng = np.random.default_rng(0)
    p = rng.random(500)
    y = (rng.random(500) < p**2).astype(int)
    curve = reliability(y, p, n_bins=10)
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(curve["fraction_positive"], frac)
    np.testing.assert_allclose(curve["mean_predicted"], mean)
    expected = sum(n / 500 * abs(f - m) for n, f, m in zip(curve["count"], frac, mean))
    assert expected_calibration_error(y, p) == pytest.approx(expected)
    assert expected_calibration_error(np.array([1, 0]), np.array([1.0, 0.0])) == 0.0


def test_undefined_metrics_are_none() -> None:
    only_negatives = all_metrics(np.zeros(4), np.array([0.1, 0.2, 0.7, 0.3]), 0.5)
    assert only_negatives["roc_auc"] is None and only_negatives["sensitivity"] is None
    assert only_negatives["specificity"] == 0.75 and only_negatives["npv"] == 1.0
    assert threshold_metrics(Y, P, 1.01)["ppv"] is None


def test_bootstrap_ci_contains_point_estimate_and_resamples_patients() -> None:
    rng = np.random.default_rng(2)
    patients = np.repeat(np.arange(60), 3)
    y = np.repeat(rng.integers(0, 2, 60), 3)
    p = np.clip(0.3 + 0.4 * y + np.repeat(rng.normal(0, 0.2, 60), 3) + rng.normal(0, 0.03, len(y)), 0, 1)
    point = all_metrics(y, p, 0.5)
    ci = bootstrap_ci(y, p, patients, 0.5, n_boot=200, seed=1)
    for name in ("roc_auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "ece"):
        low, high = ci[name]
        assert low <= point[name] <= high and low < high, name
    assert ci == bootstrap_ci(y, p, patients, 0.5, n_boot=200, seed=1)
    image_level = bootstrap_ci(y, p, np.arange(len(y)), 0.5, n_boot=200, seed=1)

    def width(c: dict) -> float:
        """Width of an interval's accuracy bounds."""
        return c["accuracy"][1] - c["accuracy"][0]

    assert width(ci) > width(image_level)  # clustered images: patient resampling gives honest, wider intervals


def test_subgroup_table_reports_what_exists() -> None:
    sources = np.array(["a"] * 5 + ["b"] * 6 + ["c"] * 5)
    table = subgroup_table(Y, P, sources, 0.5)
    assert table["a"] == {"n": 5, "n_positive": 5, "n_negative": 0, "accuracy": 0.6, "sensitivity": 0.6}
    assert set(table["b"]) == {"n", "n_positive", "n_negative", "accuracy", "specificity"}
    assert table["c"]["roc_auc"] == pytest.approx(roc_auc_score(Y[11:], P[11:]))


def test_curves_are_monotone_and_bounded() -> None:
    c = curves(Y, P)
    assert c["roc"]["fpr"][0] == 0 and c["roc"]["tpr"][-1] == 1
    assert np.all(np.diff(c["roc"]["fpr"]) >= 0) and max(c["roc"]["threshold"]) <= 1
    assert curves(np.ones(3), np.array([0.2, 0.5, 0.9])) == {"roc": {}, "pr": {}}


def test_bootstrap_fast_path_equals_scikit_learn_path() -> None:
    rng = np.random.default_rng(5)
    for n in (7, 40):
        y, p = rng.integers(0, 2, n), rng.random(n)
        slow = all_metrics(y, p, 0.4)
        fast = _resample_metrics(y, p, 0.4, 10)
        for name, value in fast.items():
            assert value == pytest.approx(slow[name]), name
