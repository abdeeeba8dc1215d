"""Predict one X-ray (or a batch of files) with a registry model: calibrated probability, decision, explanation.

Preprocessing is the model's own ``preprocess.json``; the probability is temperature-scaled with the model's stored
temperature and the decision is taken at its stored threshold. Reports never carry DICOM tags or file names.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from cxr_core.attention import AttentionShares, Box, attention_shares, attention_warning
from cxr_core.calibration import apply_temperature
from cxr_core.explain import METHODS, Explainer, to_original_shape
from cxr_core.imaging import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, IMAGE_SUFFIXES, ImageReadError, read_xray, sha256_file
from cxr_core.registry import LoadedModel

CAUTION = "Research tool, not a diagnosis: a clinician must review every image."
NO_CAM = "none"
Regions = Callable[[np.ndarray], tuple["np.ndarray | None", Sequence[Box]]]


class InferenceError(ValueError):
    """A prediction request is invalid (unknown method or class, missing explainer); one clear line."""


@dataclass
class Prediction:
    """Everything shown or reported about one prediction."""

    p_covid: float
    label: str
    threshold: float
    positive: str
    uncertainty: str
    near_threshold: bool
    model_input: np.ndarray
    method: str = NO_CAM
    target: str | None = None
    heatmap: np.ndarray | None = None
    shares: AttentionShares | None = None
    warning: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchItem:
    """One file of a batch: its prediction and decoded pixels, or the one-line reason it could not be read."""

    path: Path
    sha256: str = ""
    prediction: Prediction | None = None
    gray: np.ndarray | None = None
    error: str = ""


def uncertainty_hint(p: float, threshold: float, band: float = 0.1) -> tuple[str, bool]:
    """A short hint on how settled the decision is, and whether ``p`` lies within ``band`` of the threshold."""
    if abs(p - threshold) < band:
        return f"near the threshold ({threshold:.2f}): uncertain, review with care", True
    return f"clearly {'above' if p >= threshold else 'below'} the threshold ({threshold:.2f})", False


def _class_index(loaded: LoadedModel, name: str) -> int:
    """Output index of a class name, with a clear error for unknown names."""
    if name not in loaded.classes:
        raise InferenceError(f"unknown class {name!r}; this model predicts {list(loaded.classes)}")
    return loaded.classes.index(name)


def predict_image(
    loaded: LoadedModel,
    gray: np.ndarray,
    explainer: Explainer | None = None,
    cam: str = "gradcam",
    *,
    target: str | None = None,
    lung_mask: np.ndarray | None = None,
    boxes: Sequence[Box] = (),
) -> Prediction:
    """Predict a 2-D uint8 image; explain class ``target`` (default: the decided class) unless ``cam`` is "none"."""
    if cam != NO_CAM and cam not in METHODS:
        raise InferenceError(f"unknown explanation method {cam!r}; choose from {[NO_CAM, *METHODS]}")
    if cam != NO_CAM and explainer is None:
        raise InferenceError("an Explainer (built once per model) is needed for an explanation")
    start = time.perf_counter()
    box = None
    if loaded.preprocess.roi != "none":
        from cxr_core.lungs import lung_mask as segment_lungs

        lung_mask = segment_lungs(gray) if lung_mask is None else lung_mask
        box = loaded.preprocess.roi_box(lung_mask)
    batch = loaded.prepare([gray], None if box is None else [lung_mask])
    prepared = time.perf_counter()
    raw = explainer.probabilities(batch) if explainer is not None else loaded.predict_batch(batch)
    probs = apply_temperature(raw, loaded.temperature)[0]
    p = float(probs[loaded.positive_index])
    label = loaded.predict_label(p)
    predicted = time.perf_counter()
    hint, near = uncertainty_hint(p, loaded.threshold)
    result = Prediction(
        p_covid=p, label=label, threshold=float(loaded.threshold), positive=loaded.positive, uncertainty=hint,
        near_threshold=near, model_input=np.clip(batch[0, ..., 0], 0, 255).astype(np.uint8), method=cam,
    )
    timings = {"preprocess": prepared - start, "predict": predicted - prepared}
    if explainer is not None and cam != NO_CAM:
        result.target = target or label
        heat = explainer.explain(batch[0], _class_index(loaded, result.target), cam)
        result.heatmap = to_original_shape(heat, gray.shape, loaded.preprocess.resize, box)
        result.shares = attention_shares(result.heatmap, lung_mask=lung_mask, boxes=boxes)
        result.warning = attention_warning(result.shares)
        timings["explain"] = time.perf_counter() - predicted
    result.timings_ms = {k: round(v * 1000, 2) for k, v in timings.items()}
    return result


def report_dict(
    prediction: Prediction, loaded: LoadedModel, sha256: str, explainer: Explainer | None = None
) -> dict[str, Any]:
    """The JSON report of one prediction (input hash, model, preprocessing, decision, explanation); no identifiers."""
    shares = prediction.shares.to_dict() if prediction.shares is not None else None
    return {
        "input_sha256": sha256,
        "model": {"name": loaded.name, "version": loaded.version},
        "preprocessing": loaded.preprocess.to_dict(),
        "p_covid": round(prediction.p_covid, 6),
        "positive_class": prediction.positive,
        "label": prediction.label,
        "decision": prediction.label,
        "threshold": round(prediction.threshold, 6),
        "temperature": round(float(loaded.temperature), 6),
        "uncertainty": prediction.uncertainty,
        "explanation": {
            "method": prediction.method,
            "name": METHODS.get(prediction.method, "none"),
            "target_class": prediction.target,
            "layer": explainer.layer_name if explainer is not None and prediction.method != NO_CAM else None,
            "library": explainer.implementation(prediction.method) if explainer is not None else None,
        },
        "attention_shares": shares,
        "attention_warning": prediction.warning,
        "caution": CAUTION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def collect_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly plus every image file (by suffix) under named folders, in a stable order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found.extend(
                sorted(
                    p for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        else:
            found.append(path)
    return found


def predict_paths(
    paths: Iterable[str | Path],
    loaded: LoadedModel,
    explainer: Explainer | None = None,
    cam: str = "gradcam",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
    regions: Regions | None = None,
) -> Iterator[BatchItem]:
    """Predict every file (folders expanded); unreadable files yield an item with ``error`` and the batch goes on.

    ``regions(gray) -> (lung_mask or None, marking boxes)`` adds lung and marking attention shares.
    """
    for path in collect_inputs(paths):
        try:
            xray = read_xray(path, max_pixels=max_pixels, min_side=min_side)
            digest = sha256_file(path)
        except ImageReadError as exc:
            yield BatchItem(path=path, error=exc.reason)
            continue
        except OSError as exc:
            yield BatchItem(path=path, error=f"cannot read file ({exc.strerror or type(exc).__name__})")
            continue
        mask, boxes = regions(xray.pixels) if regions is not None and cam != NO_CAM else (None, ())
        prediction = predict_image(loaded, xray.pixels, explainer, cam, lung_mask=mask, boxes=boxes)
        yield BatchItem(path=path, sha256=digest, prediction=prediction, gray=xray.pixels)
