"""Post-hoc calibration fitted on the validation split: temperature scaling and an operating threshold.

Conventions used throughout:

* ``probs`` is either an ``(n, k)`` array of softmax outputs (``labels`` are then integer column indices of the
  true class) or a 1-D array of P(positive) (``labels`` are then 1 for positive, 0 for negative; internally the
  array becomes the two columns ``[1 - p, p]``).
* The threshold is chosen on the *calibrated* P(positive), and a case is called positive when ``p >= threshold``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

EPS = 1e-7
T_BOUNDS = (0.05, 20.0)
DEFAULT_TARGET_SENSITIVITY = 0.95


class CalibrationError(ValueError):
    """Calibration inputs are unusable (wrong shapes, a single class, no positives)."""


@dataclass(frozen=True)
class Calibration:
    """What gets stored in ``calibration.json`` next to a model."""

    temperature: float = 1.0
    threshold: float = 0.5
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the contract's keys."""
        return asdict(self)


def _as_matrix(probs: np.ndarray) -> tuple[np.ndarray, bool]:
    """Two-or-more-column probabilities and whether the input was a 1-D P(positive) vector."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim == 1:
        return np.stack([1.0 - arr, arr], axis=1), True
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise CalibrationError(f"expected (n,) or (n, k>=2) probabilities, got shape {arr.shape}")
    return arr, False


def _scaled(matrix: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of ``log(probs) / T`` for a probability matrix (rows sum to one)."""
    logits = np.log(np.clip(matrix, EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def apply_temperature(p_pos_or_probs: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scale probabilities; returns the same shape as given (1-D P(positive) or an (n, k) matrix)."""
    if not temperature > 0:
        raise CalibrationError(f"temperature must be positive, got {temperature}")
    matrix, was_vector = _as_matrix(p_pos_or_probs)
    scaled = _scaled(matrix, float(temperature))
    return scaled[:, 1] if was_vector else scaled


def _nll(matrix: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of the true classes after temperature scaling."""
    scaled = _scaled(matrix, temperature)
    return float(-np.mean(np.log(np.clip(scaled[np.arange(len(labels)), labels], EPS, 1.0))))


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation NLL, using ``log(probs)`` as logits (bounded scalar search on log T)."""
    from scipy.optimize import minimize_scalar

    matrix, _ = _as_matrix(probs)
    y = np.asarray(labels).astype(int).ravel()
    if len(y) != len(matrix) or len(y) == 0:
        raise CalibrationError(f"{len(matrix)} probability rows but {len(y)} labels")
    if y.min() < 0 or y.max() >= matrix.shape[1]:
        raise CalibrationError(f"labels must be class indices in [0, {matrix.shape[1] - 1}]")
    lo, hi = np.log(T_BOUNDS[0]), np.log(T_BOUNDS[1])
    result = minimize_scalar(lambda log_t: _nll(matrix, y, float(np.exp(log_t))), bounds=(lo, hi), method="bounded")
    return float(np.exp(result.x))


def choose_threshold(
    p_pos: np.ndarray, labels: np.ndarray, target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
) -> float:
    """The highest threshold whose sensitivity on these (validation) cases is at least the target.

    The returned value lies halfway between the lowest positive score that must be caught and the next lower
    score, so that tiny numeric differences at inference do not flip that case.
    """
    from sklearn.metrics import roc_curve

    p = np.asarray(p_pos, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(int).ravel()
    if len(p) != len(y):
        raise CalibrationError(f"{len(p)} scores but {len(y)} labels")
    if not 0 < target_sensitivity <= 1:
        raise CalibrationError(f"target sensitivity must be in (0, 1], got {target_sensitivity}")
    if y.sum() == 0:
        raise CalibrationError("cannot choose a threshold for a sensitivity target without positive cases")
    if y.sum() == len(y):
        raise CalibrationError("cannot choose a threshold without negative cases")
    _, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    ok = np.flatnonzero(tpr >= target_sensitivity - 1e-12)
    chosen = float(thresholds[ok[0]])
    lower = p[p < chosen]
    return float((chosen + lower.max()) / 2) if lower.size else chosen


def calibrate(
    probs: np.ndarray,
    labels: np.ndarray,
    positive_index: int = 0,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
) -> Calibration:
    """Fit the temperature on validation softmax outputs, then the threshold on the calibrated P(positive)."""
    matrix, _ = _as_matrix(probs)
    y = np.asarray(labels).astype(int).ravel()
    temperature = fit_temperature(matrix, y)
    p_pos = apply_temperature(matrix, temperature)[:, positive_index]
    threshold = choose_threshold(p_pos, (y == positive_index).astype(int), target_sensitivity)
    return Calibration(temperature=temperature, threshold=threshold, target_sensitivity=float(target_sensitivity))
