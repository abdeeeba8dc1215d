"""Predict one X-ray (or a batch of files) with a registry model: gate, familiarity, calibrated probability, decision.

Every image first passes the chest X-ray gate (:mod:`cxr_core.gate`); one that fails gets the decision
"not assessed", no probability and no heatmap. Preprocessing is the model's own ``preprocess.json``; the probability
is temperature-scaled with the model's stored temperature and the decision is taken at its stored threshold. The
model's familiarity score (:mod:`cxr_core.gate.familiarity`) comes from the same forward pass, or for acquisition
features from the image as read; an unfamiliar image keeps its probability but its certainty is never "clear".
Reports never carry DICOM tags or file names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr_core.data.imaging import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MIN_SIDE,
    IMAGE_SUFFIXES,
    ImageReadError,
    read_xray,
    sha256_file,
)
from cxr_core.evaluate.calibration import apply_temperature
from cxr_core.explain.attention import AttentionShares, Box, attention_shares, attention_warning
from cxr_core.explain.cam import CAM_METHODS, Explainer, to_original_shape
from cxr_core.gate import Gate, GateNet, assess, load_gate_net
from cxr_core.gate.acquisition import acquisition_batch
from cxr_core.gate.familiarity import ACQUISITION
from cxr_core.serve.registry import LoadedModel
from cxr_core.util.clock import utc_now

CAUTION = "Research tool, not a diagnosis: a clinician must review every image."
NO_CAM = "none"
NOT_ASSESSED = "not assessed"
DEFAULT_GATE = "default"
Regions = Callable[[np.ndarray], tuple["np.ndarray | None", Sequence[Box]]]


class InferenceError(ValueError):
    """A prediction request is invalid (unknown method or class, missing explainer); one clear line."""


@dataclass
class Prediction:
    """Everything shown or reported about one prediction (``p_covid`` is None when the gate refused the image)."""

    p_covid: float | None
    label: str
    threshold: float
    positive: str
    uncertainty: str
    near_threshold: bool
    model_input: np.ndarray | None
    gate: Gate
    familiarity: dict[str, Any] | None = None
    method: str = NO_CAM
    target: str | None = None
    heatmap: np.ndarray | None = None
    shares: AttentionShares | None = None
    warning: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def assessed(self) -> bool:
        """True when the gate let the image through and it has a probability."""
        return self.p_covid is not None

    @property
    def familiar(self) -> bool | None:
        """The familiarity verdict (None when the model has no familiarity fit or the image was not assessed)."""
        return None if self.familiarity is None else bool(self.familiarity["familiar"])

    @property
    def certainty(self) -> str:
        """One word: "not assessed", "unfamiliar", "uncertain" (near the threshold or no familiarity fit) or "clear"."""
        if not self.assessed:
            return NOT_ASSESSED
        if self.familiar is False:
            return "unfamiliar"
        return "uncertain" if self.near_threshold or self.familiar is None else "clear"


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


def resolve_gate(gate_net: GateNet | None | str) -> GateNet | None:
    """The gate net to use: the shipped/configured one for :data:`DEFAULT_GATE`, else the one given (None = off)."""
    return load_gate_net() if isinstance(gate_net, str) else gate_net


def predict_image(
    loaded: LoadedModel,
    gray: np.ndarray,
    explainer: Explainer | None = None,
    cam: str = "gradcam",
    *,
    target: str | None = None,
    lung_mask: np.ndarray | None = None,
    boxes: Sequence[Box] = (),
    gate_net: GateNet | None | str = DEFAULT_GATE,
    dicom_tags: dict[str, str] | None = None,
) -> Prediction:
    """Gate, then predict a 2-D uint8 image; explain class ``target`` (default: the decided class) unless ``cam`` is "none".

    ``lung_mask`` (when the caller segmented the lungs already) is shared by the gate, a lung ROI and the
    attention shares; ``dicom_tags`` are the safe header fields of a DICOM input.
    """
    if cam != NO_CAM and cam not in CAM_METHODS:
        raise InferenceError(f"unknown explanation method {cam!r}; choose from {[NO_CAM, *CAM_METHODS]}")
    if cam != NO_CAM and explainer is None:
        raise InferenceError("an Explainer (built once per model) is needed for an explanation")
    start = time.perf_counter()
    gate = assess(
        gray, resolve_gate(gate_net), dicom_tags=dicom_tags, lungs_empty=lung_mask is not None and not lung_mask.any()
    )
    gated = time.perf_counter()
    if not gate.chest_xray:
        return Prediction(
            p_covid=None,
            label=NOT_ASSESSED,
            threshold=float(loaded.threshold),
            positive=loaded.positive,
            uncertainty=gate.message,
            near_threshold=False,
            model_input=None,
            gate=gate,
            method=NO_CAM,
            timings_ms={"gate": round((gated - start) * 1000, 2)},
        )
    box = None
    if loaded.preprocess.roi != "none":
        from cxr_core.lungs.segmenter import lung_mask as segment_lungs

        lung_mask = segment_lungs(gray) if lung_mask is None else lung_mask
        box = loaded.preprocess.roi_box(lung_mask)
    batch = loaded.prepare([gray], None if box is None else [lung_mask])
    prepared = time.perf_counter()
    kind = loaded.familiarity.features if loaded.familiarity else "penultimate"
    features, raw = loaded.features_and_probs(batch, "penultimate" if kind == ACQUISITION else kind)
    probs = apply_temperature(raw, loaded.temperature)[0]
    p = float(probs[loaded.positive_index])
    label = loaded.predict_label(p)
    familiarity = None
    if loaded.familiarity is not None:
        features = acquisition_batch([gray]) if kind == ACQUISITION else features
        familiarity = loaded.familiarity.assess(features)[0]
    predicted = time.perf_counter()
    hint, near = uncertainty_hint(p, loaded.threshold)
    result = Prediction(
        p_covid=p,
        label=label,
        threshold=float(loaded.threshold),
        positive=loaded.positive,
        uncertainty=hint,
        near_threshold=near,
        model_input=np.clip(batch[0, ..., 0], 0, 255).astype(np.uint8),
        gate=gate,
        familiarity=familiarity,
        method=cam,
    )
    timings = {"gate": gated - start, "preprocess": prepared - gated, "predict": predicted - prepared}
    if explainer is not None and cam != NO_CAM:
        result.target = target or label
        heat = explainer.explain(batch[0], _class_index(loaded, result.target), cam)
        result.heatmap = to_original_shape(heat, gray.shape, loaded.preprocess.resize, box)
        result.shares = attention_shares(result.heatmap, lung_mask=lung_mask, boxes=boxes)
        result.warning = attention_warning(result.shares)
        timings["explain"] = time.perf_counter() - predicted
    result.timings_ms = {k: round(v * 1000, 2) for k, v in timings.items()}
    return result


def unseen_source_rates(card: dict[str, Any]) -> dict[str, float] | None:
    """From a card's leave-one-source-out results: the share of Normal images called COVID and of COVID images called
    Normal on sources the model never saw (None when the recipe was not tested that way)."""
    sources = (card.get("leave_one_source_out") or {}).get("sources") or {}
    counts = {"normal": [0.0, 0], "covid": [0.0, 0]}
    for row in sources.values():
        for key, rate in (("normal", "specificity"), ("covid", "sensitivity")):
            n = int(row.get(f"n_{key}") or 0)
            if n and row.get(rate) is not None:
                counts[key][0] += n * (1.0 - float(row[rate]))
                counts[key][1] += n
    if not counts["normal"][1] and not counts["covid"][1]:
        return None
    return {f"{key}_wrong": wrong / n if n else float("nan") for key, (wrong, n) in counts.items()}


def unfamiliar_warning(card: dict[str, Any]) -> str:
    """The plain-words warning shown with an unfamiliar image, with the model's measured figures when it has them."""
    text = (
        "This image is unlike the images this model was trained on (another hospital, device or processing?). "
        "Its probability is shown, but do not trust it."
    )
    rates = unseen_source_rates(card)
    if rates is None:
        return text
    return (
        f"{text} For hospitals this model never saw (leave-one-source-out), {rates['normal_wrong']:.0%} of Normal "
        f"images were called COVID and {rates['covid_wrong']:.0%} of COVID images were called Normal."
    )


def report_dict(
    prediction: Prediction, loaded: LoadedModel, sha256: str, explainer: Explainer | None = None
) -> dict[str, Any]:
    """The JSON report of one prediction (input hash, model, preprocessing, decision, explanation); no identifiers."""
    shares = prediction.shares.to_dict() if prediction.shares is not None else None
    return {
        "input_sha256": sha256,
        "model": {"name": loaded.name, "version": loaded.version},
        "preprocessing": loaded.preprocess.to_dict(),
        "gate": prediction.gate.to_dict(),
        "familiarity": prediction.familiarity,
        "p_covid": None if prediction.p_covid is None else round(prediction.p_covid, 6),
        "positive_class": prediction.positive,
        "label": prediction.label,
        "decision": prediction.label,
        "certainty": prediction.certainty,
        "threshold": round(prediction.threshold, 6),
        "temperature": round(float(loaded.temperature), 6),
        "uncertainty": prediction.uncertainty,
        "explanation": {
            "method": prediction.method,
            "name": CAM_METHODS.get(prediction.method, "none"),
            "target_class": prediction.target,
            "layer": explainer.layer_name if explainer is not None and prediction.method != NO_CAM else None,
            "library": explainer.implementation(prediction.method) if explainer is not None else None,
        },
        "attention_shares": shares,
        "attention_warning": prediction.warning,
        "caution": CAUTION,
        "created": utc_now(),
    }


def collect_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly plus every image file (by suffix) under named folders, in a stable order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and p.suffix.lower() in IMAGE_SUFFIXES
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
    gate_net: GateNet | None | str = DEFAULT_GATE,
) -> Iterator[BatchItem]:
    """Gate and predict every file (folders expanded); unreadable files yield an item with ``error`` and the batch goes on.

    ``regions(gray) -> (lung_mask or None, marking boxes)`` adds lung and marking attention shares.
    """
    gate_net = resolve_gate(gate_net)
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
        prediction = predict_image(
            loaded,
            xray.pixels,
            explainer,
            cam,
            lung_mask=mask,
            boxes=boxes,
            gate_net=gate_net,
            dicom_tags=xray.dicom_tags,
        )
        yield BatchItem(path=path, sha256=digest, prediction=prediction, gray=xray.pixels)
