"""The gate's verdict on one image: the DICOM header, the learned content score and the lung fields, combined.

``assess`` answers "is this an upright frontal chest radiograph we can assess?" with a :class:`Gate`: a bool, a
score in [0, 1] (P(frontal) of the gate net; 0 for a header refusal) and reasons in plain words. Header refusals
(modality, body part, lateral view) need no model. Rotated and inverted films are refused and the problem named;
nothing is corrected automatically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxr_core.gate.header import header_reasons
from cxr_core.gate.net import KINDS, GateNet

NOT_XRAY = "This does not look like a frontal chest X-ray"
KIND_REASONS = {
    "rot90": "The film appears rotated by 90 degrees counter-clockwise: turn it 90 degrees clockwise and try again",
    "rot180": "The film appears upside down (rotated by 180 degrees): turn it upright and try again",
    "rot270": "The film appears rotated by 90 degrees clockwise: turn it 90 degrees counter-clockwise and try again",
    "inverted": (
        "The grey levels appear inverted (a negative, or a MONOCHROME1 DICOM read as MONOCHROME2): "
        "air is light and bone dark"
    ),
    "other": NOT_XRAY,
    "frontal": f"{NOT_XRAY} (low gate score)",
}
NO_LUNGS = f"{NOT_XRAY}: no lung fields found"
OFF_NOTE = "content check switched off (CXR_GATE_MODEL=off): only the DICOM header was checked"


@dataclass(frozen=True)
class Gate:
    """Whether an image may be assessed, the content score, the reasons in plain words and the kind the net saw."""

    chest_xray: bool
    score: float
    reasons: tuple[str, ...] = ()
    kind: str = "frontal"

    def to_dict(self) -> dict[str, Any]:
        """The ``gate`` object of reports: ``chest_xray``, ``score`` and ``reasons``."""
        return {"chest_xray": self.chest_xray, "score": round(float(self.score), 4), "reasons": list(self.reasons)}

    @property
    def message(self) -> str:
        """One line for people: the reasons joined."""
        return "; ".join(self.reasons) if self.reasons else "Frontal chest X-ray: can be assessed"


def from_probabilities(probs: np.ndarray, threshold: float) -> Gate:
    """The verdict of the gate net's softmax over :data:`KINDS` at ``threshold`` on P(frontal)."""
    score = float(probs[0])
    if score >= threshold:
        return Gate(True, score)
    kind = KINDS[int(np.argmax(probs))]
    return Gate(False, score, (KIND_REASONS[kind],), kind)


def assess(
    gray: np.ndarray,
    net: GateNet | None,
    *,
    dicom_tags: Mapping[str, str] | None = None,
    lungs_empty: bool = False,
    probs: np.ndarray | None = None,
) -> Gate:
    """The gate's verdict on a 2-D image: header first (no model), then the net (None = switched off), then the lungs.

    ``lungs_empty`` says the lung segmenter found no lung field; ``probs`` reuses an already computed net output.
    """
    refused = header_reasons(dicom_tags or {})
    if refused:
        return Gate(False, 0.0, tuple(refused), "header")
    if net is None:
        return Gate(True, 1.0, (OFF_NOTE,), "off")
    verdict = from_probabilities(net.probabilities([gray])[0] if probs is None else probs, net.threshold)
    if verdict.chest_xray and lungs_empty:
        return Gate(False, verdict.score, (NO_LUNGS,), "other")
    return verdict
