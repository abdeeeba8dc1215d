"""Temperature scaling and threshold choice on synthetic validation scores."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_core.evaluate.calibration import (
    CalibrationError,
    apply_temperature,
    calibrate,
    choose_threshold,
    fit_temperature,
)
from cxr_core.evaluate.metrics import expected_calibration_error


def _overconfident(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two-column softmax outputs whose true logit is 1 but which report logit 4 (badly overconfident)."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    p_pos = 1 / (1 + np.exp(-4 * logit))
    return np.stack([p_pos, 1 - p_pos], axis=1), y


def test_temperature_lowers_ece_on_overconfident_scores() -> None:
    probs, y = _overconfident()
    labels = 1 - y  # column 0 is the positive class
    temperature = fit_temperature(probs, labels)
    assert 3.0 < temperature < 5.5  # the true over-sharpening factor is 4
    before = expected_calibration_error(y, probs[:, 0])
    after = expected_calibration_error(y, apply_temperature(probs, temperature)[:, 0])
    assert before > 0.1 and after < before / 2


def test_apply_temperature_keeps_shape_and_ranking() -> None:
    p = np.array([0.01, 0.3, 0.5, 0.8, 0.999])
    scaled = apply_temperature(p, 2.0)
    assert scaled.shape == p.shape and np.all(np.diff(scaled) > 0)
    assert scaled[2] == pytest.approx(0.5) and scaled[0] > p[0] and scaled[-1] < p[-1]
    matrix = apply_temperature(np.stack([p, 1 - p], 1), 1.0)
    np.testing.assert_allclose(matrix[:, 0], p, atol=1e-6)
    with pytest.raises(CalibrationError):
        apply_temperature(p, 0.0)


def test_threshold_meets_target_sensitivity_on_validation() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    for target in (0.8, 0.95, 1.0):
        t = choose_threshold(p, y, target)
        sensitivity = np.mean(p[y == 1] >= t)
        assert sensitivity >= target
        stricter = np.mean(p[y == 1] >= np.min(p[(y == 1) & (p >= t)]) + 1e-9)
        assert stricter < target  # the highest threshold meeting the target: one step higher misses it


def test_threshold_refuses_one_class() -> None:
    with pytest.raises(CalibrationError, match="positive"):
        choose_threshold(np.array([0.2, 0.4]), np.array([0, 0]))


def test_calibrate_returns_threshold_on_calibrated_scale() -> None:
    probs, y = _overconfident(500, seed=3)
    cal = calibrate(probs, 1 - y, positive_index=0, target_sensitivity=0.9)
    p_cal = apply_temperature(probs, cal.temperature)[:, 0]
    assert np.mean(p_cal[y == 1] >= cal.threshold) >= 0.9
    assert set(cal.to_dict()) == {"temperature", "threshold", "target_sensitivity"}
