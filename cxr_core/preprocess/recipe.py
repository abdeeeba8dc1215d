"""The preprocessing recipe saved with every model, so that inference reproduces training exactly."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxr_core.preprocess.normalise import METHODS, NormaliseError, normalise, resolve_params
from cxr_core.preprocess.roi import LUNG_STANDARDISATION, Segment, bounding_box, dilate, standardise_lungs

RESIZE_POLICIES = ("squash", "pad")
INTERPOLATIONS = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
    "lanczos": cv2.INTER_LANCZOS4,
}
ROI_MODES = ("none", "lung_crop", "lung_mask")
ROI_MARGIN = 0.05
ROI_DILATION = 0.03
PREPROCESS_FILE = "preprocess.json"


class PreprocessError(ValueError):
    """A preprocessing configuration or input is invalid."""


def _freeze(params: Mapping[str, Any] | tuple | None) -> tuple[tuple[str, Any], ...]:
    """Sorted, hashable (name, value) pairs from a mapping or pairs."""
    items = dict(params or {})
    return tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in items.items()))


@dataclass(frozen=True)
class PreprocessConfig:
    """Normalisation method and parameters, target size, resize policy, interpolation and region of interest."""

    method: str = "clahe"
    params: tuple[tuple[str, Any], ...] = field(default=())
    size: int = 224
    resize: str = "squash"
    interpolation: str = "area"
    roi: str = "none"
    lung_standardise: str = "none"

    def __post_init__(self) -> None:
        """Fill in and freeze every normalisation parameter (a saved recipe never depends on later defaults); validate."""
        if self.method not in METHODS:
            raise PreprocessError(f"unknown normalisation method {self.method!r}; choose from {sorted(METHODS)}")
        try:
            object.__setattr__(self, "params", _freeze(resolve_params(self.method, dict(self.params or {}))))
        except NormaliseError as exc:
            raise PreprocessError(str(exc)) from exc
        if not isinstance(self.size, int) or not 16 <= self.size <= 2048:
            raise PreprocessError(f"size must be an integer between 16 and 2048, got {self.size!r}")
        if self.resize not in RESIZE_POLICIES:
            raise PreprocessError(f"resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise PreprocessError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.roi not in ROI_MODES:
            raise PreprocessError(f"roi must be one of {ROI_MODES}, got {self.roi!r}")
        if self.lung_standardise not in LUNG_STANDARDISATION:
            raise PreprocessError(
                f"lung_standardise must be one of {LUNG_STANDARDISATION}, got {self.lung_standardise!r}"
            )
        if self.lung_standardise != "none" and self.roi == "none":
            raise PreprocessError("lung standardisation needs a lung region of interest (roi lung_crop or lung_mask)")

    @property
    def param_dict(self) -> dict[str, Any]:
        """The normalisation parameters as a plain dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.params}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``lung_standardise`` only when used, so older recipes keep their digests)."""
        data = asdict(self)
        data["params"] = self.param_dict
        if self.lung_standardise == "none":
            del data["lung_standardise"]
        return data

    def to_json(self) -> str:
        """Canonical JSON (sorted keys), the basis of :meth:`digest`."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def digest(self) -> str:
        """A short stable hash of the configuration, used to key caches."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessConfig:
        """Build from a dict such as :meth:`to_dict` returns; unknown keys are refused."""
        known = {"method", "params", "size", "resize", "interpolation", "roi", "lung_standardise"}
        unknown = set(data) - known
        if unknown:
            raise PreprocessError(f"unknown preprocessing keys {sorted(unknown)}")
        return cls(**dict(data))

    def save(self, directory: str | Path) -> Path:
        """Write ``preprocess.json`` into a model directory."""
        path = Path(directory) / PREPROCESS_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> PreprocessConfig:
        """Read ``preprocess.json`` from a model directory; a clear error when it is missing or invalid."""
        path = Path(directory) / PREPROCESS_FILE
        if not path.is_file():
            raise PreprocessError(f"{path} is missing: a model must ship the preprocessing it was trained with")
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as exc:
            raise PreprocessError(f"{path} is not a valid preprocessing config ({exc})") from exc

    def apply(self, gray: np.ndarray, segment: Segment | None = None) -> np.ndarray:
        """Restrict to the region of interest, resize to ``size`` x ``size`` and normalise; returns uint8.

        A lung ROI needs ``segment`` (such as ``cxr_core.lungs.lung_mask``) to find the lungs.
        """
        if self.roi == "none":
            return self._resized_normalised(gray)
        return self.apply_with_lungs(gray, segment=segment)[0]

    def apply_with_lungs(
        self,
        gray: np.ndarray,
        mask: np.ndarray | None = None,
        segment: Segment | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The preprocessed image and the lung mask (bool) in the same geometry, from ``mask`` or ``segment(gray)``.

        ``lung_crop`` crops to the lungs' bounding box plus ``ROI_MARGIN``; ``lung_mask`` also sets everything
        outside the lung mask dilated by ``ROI_DILATION`` to zero, before and after normalisation. With
        ``lung_standardise`` the crop's gray levels are first standardised on the lung pixels (``standardise_lungs``).
        """
        if gray.ndim != 2:
            raise PreprocessError(f"expected a 2-D grayscale image, got shape {gray.shape}")
        if mask is None:
            if segment is None:
                raise PreprocessError(f"roi {self.roi!r} needs the image's lung mask or a segmenter to find it")
            mask = segment(gray)
        mask = mask.astype(bool)
        if mask.shape != gray.shape:
            raise PreprocessError(f"lung mask shape {mask.shape} differs from image shape {gray.shape}")
        top, bottom, left, right = self.roi_box(mask)
        gray, mask = gray[top:bottom, left:right], mask[top:bottom, left:right]
        gray = standardise_lungs(gray, mask, self.lung_standardise)
        keep = dilate(mask, ROI_DILATION) if self.roi == "lung_mask" else None
        if keep is not None:
            gray = np.where(keep, gray, 0).astype(gray.dtype)
        image = self._resized_normalised(gray)
        if keep is not None:
            image = np.where(self._sized(keep), image, 0).astype(np.uint8)
        return image, self._sized(mask)

    def allowed_region(self, lungs: np.ndarray) -> np.ndarray:
        """The lung mask dilated by ``ROI_DILATION``, in the geometry of the model's input (bool, size x size)."""
        top, bottom, left, right = self.roi_box(lungs.astype(bool))
        return self._sized(dilate(lungs[top:bottom, left:right].astype(bool), ROI_DILATION))

    def _sized(self, mask: np.ndarray) -> np.ndarray:
        """A boolean mask resized to the model's input like the image (linear, then halfway threshold)."""
        return resize(mask.astype(np.uint8) * 255, self.size, self.resize, "linear") >= 128

    def roi_box(self, mask: np.ndarray) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) of the part of an image with lung ``mask`` that the model sees (all without roi)."""
        if self.roi == "none":
            return 0, mask.shape[0], 0, mask.shape[1]
        return bounding_box(mask, ROI_MARGIN)

    def _resized_normalised(self, gray: np.ndarray) -> np.ndarray:
        """Resize to ``size`` and apply the normalisation method."""
        return normalise(resize(gray, self.size, self.resize, self.interpolation), self.method, **self.param_dict)


def resize(gray: np.ndarray, size: int, policy: str = "squash", interpolation: str = "area") -> np.ndarray:
    """Resize to a square: ``squash`` ignores aspect ratio, ``pad`` keeps it and pads with black."""
    if gray.ndim != 2:
        raise PreprocessError(f"expected a 2-D grayscale image, got shape {gray.shape}")
    flag = INTERPOLATIONS[interpolation]
    height, width = gray.shape
    if policy == "squash":
        return cv2.resize(gray, (size, size), interpolation=flag)
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    scaled = cv2.resize(gray, (new_w, new_h), interpolation=flag)
    canvas = np.zeros((size, size), dtype=gray.dtype)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = scaled
    return canvas
