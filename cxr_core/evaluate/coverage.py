"""Coverage: how many images a model may answer (gate passed, familiar) and how good the answers it gives are.

Plain functions on arrays plus one cached pass of the gate over a dataset's images. The risk-coverage curves
abstain on images in order (least familiar first, or least confident first) and report the error rate of the
answers left (Geifman & El-Yaniv 2017).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_core.config import Config
from cxr_core.data.imaging import ImageReadError, read_xray
from cxr_core.evaluate.metrics import threshold_metrics
from cxr_core.gate import Gate, GateNet, assess
from cxr_core.util.atomic import read_json, write_json_atomic
from cxr_core.util.progress import Progress


def gate_dataset(
    cfg: Config, data_dir: Path, rows: pd.DataFrame, net: GateNet | None, progress: Progress | None = None
) -> list[Gate]:
    """The gate's verdict on every row's original image, cached per gate model and image sha256."""
    digest = net.digest if net is not None else "off"
    cache_file = cfg.cache_dir / "gate" / f"{digest}.json"
    cache: dict[str, Any] = read_json(cache_file, {}) or {}
    verdicts = []
    changed = False
    for i, (rel, sha) in enumerate(zip(rows["path"].astype(str), rows["sha256"].astype(str))):
        key = sha or f"path:{rel}"
        if key not in cache:
            try:
                xray = read_xray(Path(data_dir) / rel, max_pixels=cfg.max_pixels, min_side=cfg.min_side)
                cache[key] = {**assess(xray.pixels, net, dicom_tags=xray.dicom_tags).to_dict()}
            except ImageReadError as exc:
                cache[key] = {"chest_xray": False, "score": 0.0, "reasons": [f"unreadable: {exc.reason}"]}
            changed = True
        hit = cache[key]
        verdicts.append(Gate(bool(hit["chest_xray"]), float(hit["score"]), tuple(hit["reasons"])))
        if progress:
            progress(i + 1, len(rows))
    if changed:
        write_json_atomic(cache_file, cache)
    return verdicts


def risk_coverage(
    y: np.ndarray, p: np.ndarray, threshold: float, abstain_first: np.ndarray, max_points: int = 50
) -> dict[str, list[float]]:
    """Coverage and error rate of the answers kept when abstaining in decreasing order of ``abstain_first``."""
    wrong = ((p >= threshold).astype(int) != y).astype(float)
    order = np.argsort(-np.asarray(abstain_first, float), kind="stable")
    kept_wrong = np.cumsum(wrong[order[::-1]])[::-1]
    n = len(y)
    kept = n - np.arange(n)
    steps = np.unique(np.linspace(0, n - 1, min(max_points, n)).round().astype(int))
    return {
        "coverage": [round(float(kept[s] / n), 4) for s in steps],
        "risk": [round(float(kept_wrong[s] / kept[s]), 4) for s in steps],
    }


def coverage_report(
    y: np.ndarray, p: np.ndarray, threshold: float, gates: list[Gate], familiarity: np.ndarray | None
) -> dict[str, Any]:
    """Images passing the gate and familiar, metrics on those, refusal reasons and the risk-coverage curves.

    ``familiarity`` holds each image's familiarity score (above 1 is unfamiliar), or None without a fit.
    """
    passed = np.array([g.chest_xray for g in gates], bool)
    scores = np.zeros(len(y)) if familiarity is None else np.asarray(familiarity, float)
    familiar = scores <= 1.0
    covered = passed & familiar
    reasons: dict[str, int] = {}
    for gate in gates:
        for reason in gate.reasons if not gate.chest_xray else ():
            reasons[reason] = reasons.get(reason, 0) + 1
    on_covered = threshold_metrics(y[covered], p[covered], threshold) if covered.any() else {}
    confidence = -np.abs(p - threshold)
    refused = np.where(passed, 0.0, np.inf)
    return {
        "n": int(len(y)),
        "gate_passed": int(passed.sum()),
        "familiar": None if familiarity is None else int((passed & familiar).sum()),
        "covered": int(covered.sum()),
        "coverage": round(float(covered.mean()), 4) if len(y) else None,
        "familiarity_fitted": familiarity is not None,
        "gate_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
        "on_covered": {k: on_covered.get(k) for k in ("accuracy", "sensitivity", "specificity", "confusion")},
        "on_all": {
            k: v
            for k, v in threshold_metrics(y, p, threshold).items()
            if k in ("accuracy", "sensitivity", "specificity")
        },
        "risk_coverage": {
            "least_familiar_first": risk_coverage(y, p, threshold, refused + scores)
            if familiarity is not None
            else None,
            "least_confident_first": risk_coverage(y, p, threshold, refused + confidence),
        },
    }
