"""Cached JPEG thumbnails of dataset images, keyed by image sha256, in the work dir's cache."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from cxr_core.config import Config
from cxr_core.data.imaging import read_image

DEFAULT_SIZE = 192


def thumbnail_path(cfg: Config, sha256: str, size: int = DEFAULT_SIZE) -> Path:
    """Where the thumbnail of the image with this sha256 is cached."""
    return cfg.cache_dir / "thumbs" / str(size) / sha256[:2] / f"{sha256}.jpg"


def make_thumbnail(gray: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Shrink a 2-D image so its longer side is at most ``size``, keeping the aspect ratio."""
    scale = min(1.0, size / max(gray.shape))
    if scale >= 1.0:
        return gray
    shape = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    return cv2.resize(gray, shape, interpolation=cv2.INTER_AREA)


def save_thumbnail(gray: np.ndarray, target: Path, size: int = DEFAULT_SIZE) -> Path:
    """Write the JPEG thumbnail of a decoded image to ``target`` atomically (readers never see a partial file)."""
    ok, data = cv2.imencode(".jpg", make_thumbnail(gray, size), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError(f"{target.name}: could not encode a thumbnail")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.tobytes())
    os.replace(tmp, target)
    return target


def thumbnail(cfg: Config, image_path: str | Path, sha256: str, size: int = DEFAULT_SIZE) -> Path:
    """Path of the cached JPEG thumbnail of an image, made on first use."""
    target = thumbnail_path(cfg, sha256, size)
    if target.is_file():
        return target
    return save_thumbnail(read_image(image_path, max_pixels=cfg.max_pixels, min_side=1), target, size)
