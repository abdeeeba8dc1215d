"""Repaired images: inpaint an image's markings into the work dir, record a ``repair`` decision, read repairs back.

A repair never touches the original. The repaired image is an 8-bit gray PNG at the original's size in
``<cache dir>/repaired/<original sha256>-<digest>.png``, where the digest covers the repair's parameters and mask.
The ledger row (decision ``repair``, reason ``markings``) holds the parameters, the mask's digest and the file in
its ``details``. While an image's latest decision is ``repair``, :func:`repaired_versions` maps it to that file,
and :func:`cxr_core.curation.curated_index` hands the mapping to the index, so training, evaluation,
``cxr preprocess`` and prediction from the dataset read the repaired pixels. ``cxr restore`` (or undo) returns
the image to its original.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxr_core.config import Config
from cxr_core.curation.ledger import Decision, LedgerError, open_ledger
from cxr_core.curation.repair import (
    DEFAULT_MARGIN,
    DEFAULT_METHOD,
    METHODS,
    STROKE_CONTRAST,
    RepairError,
    marking_mask,
    repair,
)
from cxr_core.data.imaging import ImageReadError, read_image, sha256_bytes
from cxr_core.markings.classical import MarkingsOptions
from cxr_core.util.progress import Progress

NO_MARKINGS = "no markings detected"


@dataclass(frozen=True)
class RepairOptions:
    """How to repair: the inpainting method and the mask's dilation margin and stroke contrast."""

    method: str = DEFAULT_METHOD
    margin: float = DEFAULT_MARGIN
    contrast: int = STROKE_CONTRAST

    def validate(self) -> RepairOptions:
        """Refuse an unknown method or a margin/contrast out of range (one-line :class:`RepairError`)."""
        if self.method not in METHODS:
            raise RepairError(f"unknown repair method {self.method!r}; choose from {', '.join(METHODS)}")
        if not 0 <= self.margin <= 0.2:
            raise RepairError(f"margin must be between 0 and 0.2 of the image side, got {self.margin}")
        if not 1 <= self.contrast <= 255:
            raise RepairError(f"contrast must be between 1 and 255, got {self.contrast}")
        return self


@dataclass(frozen=True)
class Repaired:
    """One repaired image: the ``repaired`` entry of ``cxr repair --json`` plus what the ledger keeps."""

    path: str
    repaired_path: str
    mask_fraction: float
    method: str
    sha256: str
    repaired_sha256: str
    mask_sha256: str
    margin: float
    contrast: int

    def entry(self) -> dict[str, Any]:
        """The ``cxr repair --json`` entry: path, repaired_path, mask_fraction, method."""
        return {
            "path": self.path,
            "repaired_path": self.repaired_path,
            "mask_fraction": self.mask_fraction,
            "method": self.method,
        }


def repaired_dir(cfg: Config) -> Path:
    """Where repaired images are written (never beside the originals)."""
    return cfg.cache_dir / "repaired"


def repair_pixels(gray: np.ndarray, options: RepairOptions, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """The marking mask of a 2-D uint8 image (learned detector from ``cfg``) and the image with those pixels
    inpainted."""
    detector = MarkingsOptions(combine="max", model_dir=str(cfg.markings_model_dir))
    mask = marking_mask(gray, margin=options.margin, contrast=options.contrast, options=detector)
    return mask, repair(gray, mask, options.method)


def _encode(gray: np.ndarray) -> bytes:
    """8-bit gray PNG bytes."""
    ok, buffer = cv2.imencode(".png", gray)
    if not ok:
        raise RepairError("could not encode the repaired image")
    return buffer.tobytes()


def repair_file(cfg: Config, source: Path, rel: str, sha256: str, options: RepairOptions) -> Repaired | None:
    """Repair one original (read, never written) into the cache; None when it has no detected markings."""
    gray = read_image(source, max_pixels=cfg.max_pixels, min_side=cfg.min_side)
    mask, fixed = repair_pixels(gray, options.validate(), cfg)
    if not mask.any():
        return None
    mask_sha = hashlib.sha256(np.packbits(mask).tobytes() + repr(mask.shape).encode()).hexdigest()
    data = _encode(fixed)
    digest = hashlib.sha256(json.dumps([asdict(options), mask_sha]).encode()).hexdigest()[:12]
    target = repaired_dir(cfg) / f"{sha256}-{digest}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return Repaired(
        rel,
        str(target),
        round(float(mask.mean()), 6),
        options.method,
        sha256,
        sha256_bytes(data),
        mask_sha,
        options.margin,
        options.contrast,
    )


def repair_images(
    cfg: Config,
    data_dir: Path,
    images: Iterable[tuple[str, str]],
    options: RepairOptions,
    reviewer: str,
    progress: Progress | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Repair ``(sha256, relative path)`` images of ``data_dir`` and record one ``repair`` row each.

    Returns the ``cxr repair --json`` object: ``{"repaired": [...], "skipped": [{"path", "reason"}]}``; an image
    without detected markings, or one that cannot be read, is skipped with the reason and nothing is recorded for it.
    """
    options.validate()
    images = list(images)
    done: list[Repaired] = []
    skipped: list[dict[str, Any]] = []
    for count, (sha256, rel) in enumerate(images, start=1):
        try:
            result = repair_file(cfg, data_dir / rel, rel, sha256, options)
        except ImageReadError as exc:
            skipped.append({"path": rel, "reason": exc.reason})
        else:
            if result is None:
                skipped.append({"path": rel, "reason": NO_MARKINGS})
            else:
                done.append(result)
        if progress is not None:
            progress(count, len(images))
    if done:
        details = [json.dumps(asdict(r), sort_keys=True) for r in done]
        open_ledger(cfg).record_many([(r.sha256, r.path) for r in done], "repair", "markings", "", reviewer, details)
    return {"repaired": [r.entry() for r in done], "skipped": skipped}


def repair_details(decision: Decision) -> dict[str, Any]:
    """The parameters and file of a ``repair`` decision; a clear error for a row without them."""
    try:
        details = json.loads(decision.details)
    except ValueError:
        details = None
    if not isinstance(details, dict) or not {"repaired_path", "repaired_sha256"} <= set(details):
        raise LedgerError(f"repair decision #{decision.id} for {decision.path} has unreadable details")
    return details


def repaired_versions(latest: Mapping[str, Decision]) -> dict[str, tuple[str, str]]:
    """Original sha256 -> (repaired file, its sha256) for images whose latest decision (as
    :func:`~cxr_core.curation.ledger.latest_decisions` gives them) is ``repair``.

    A repair whose file is gone from the cache, or whose details cannot be read (say, imported from another
    machine's ledger), is left out: the original is read, never a guess.
    """
    versions = {}
    for sha256, decision in latest.items():
        if decision.decision != "repair":
            continue
        try:
            details = repair_details(decision)
        except LedgerError:
            continue
        if Path(details["repaired_path"]).is_file():
            versions[sha256] = (details["repaired_path"], details["repaired_sha256"])
    return versions
