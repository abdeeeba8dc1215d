"""The DICOM part of the gate: modality, body part and view read from the header, no model needed."""

from __future__ import annotations

from collections.abc import Mapping

RADIOGRAPHY = frozenset({"CR", "DX", "DR", "RG"})
MODALITY_NAMES = {
    "MR": "an MR image",
    "CT": "a CT slice",
    "US": "an ultrasound image",
    "NM": "a nuclear-medicine image",
    "PT": "a PET image",
    "MG": "a mammogram",
    "XA": "an angiogram",
    "RF": "a fluoroscopy image",
    "OT": "an 'other' object",
    "SC": "a secondary capture (a screenshot or scan)",
    "IO": "an intra-oral X-ray",
    "PX": "a panoramic dental X-ray",
    "ES": "an endoscopy image",
    "OP": "an ophthalmic photograph",
    "XC": "a photograph",
    "SM": "a microscopy slide",
}
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
CHEST_WORDS = ("CHEST", "THORAX", "LUNG", "TORSO")
FRONTAL_VIEWS = ("PA", "AP")
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT", "LLD", "RLD", "LEFT LATERAL", "RIGHT LATERAL")


def header_reasons(tags: Mapping[str, str]) -> list[str]:
    """Plain-words reasons to refuse a DICOM from its header alone (empty when the header allows assessment)."""
    reasons = []
    modality = str(tags.get("Modality", "")).strip().upper()
    if modality and modality not in RADIOGRAPHY:
        what = MODALITY_NAMES.get(modality, f"modality {modality}")
        reasons.append(f"The DICOM header says this is {what} (Modality {modality}), not a chest radiograph")
    if str(tags.get("SOPClassUID", "")).startswith(SECONDARY_CAPTURE_PREFIX) and modality not in RADIOGRAPHY:
        reasons.append("The DICOM is a secondary capture (a screenshot or scanned picture), not an original radiograph")
    body = str(tags.get("BodyPartExamined", "")).strip().upper()
    if body and not any(word in body for word in CHEST_WORDS):
        reasons.append(f"The DICOM header names the body part {body}, not the chest")
    view = str(tags.get("ViewPosition", "")).strip().upper()
    if view in LATERAL_VIEWS or "LAT" in view:
        reasons.append(f"Lateral view (ViewPosition {view}): only frontal (PA or AP) films can be assessed")
    elif view and not view.startswith(FRONTAL_VIEWS):
        reasons.append(f"View {view} is not a frontal (PA or AP) film")
    return reasons
