"""Segment every image of a folder with a disk cache of masks and a ``lung_flags.csv`` for curation."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cxr_core.config import Config
from cxr_core.data.imaging import IMAGE_SUFFIXES, ImageReadError, read_image, sha256_file
from cxr_core.lungs.segmenter import LungSegmentation, LungSegmenter, load_segmenter

FLAGS_FILE = "lung_flags.csv"
FLAG_COLUMNS = ["sha256", "path", "data_dir", "flags", "area_fraction", "components", "model"]
# Curation score of each lung flag (an image scores its most severe reason; unknown reasons score 1) and its meaning.
LUNG_FLAG_REASONS: dict[str, tuple[float, str]] = {
    "empty": (1.0, "no lung field found"),
    "area_low": (0.9, "lung area implausibly small"),
    "area_high": (0.9, "lung area implausibly large"),
    "one_lung": (0.8, "only one lung found"),
    "uncertain": (0.6, "segmenter uncertain along much of the outline"),
}


@dataclass(frozen=True)
class FolderResult:
    """Outcome of segmenting a folder: one row per image (flags "" when plausible) and the flags CSV path."""

    rows: pd.DataFrame
    flags_path: Path

    @property
    def flagged(self) -> pd.DataFrame:
        """Rows with at least one flag (unreadable, empty, implausible)."""
        return self.rows[self.rows["flags"] != ""]


def lungs_cache_dir(cfg: Config) -> Path:
    """Folder of cached masks and the flags CSV."""
    return cfg.cache_dir / "lungs"


def image_files(root: Path) -> list[Path]:
    """Every image file under ``root`` (recursive, hidden folders skipped), sorted."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _write_png(path: Path, mask: np.ndarray) -> None:
    """Atomically write a bool mask as a 0/255 PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    if not cv2.imwrite(str(tmp), mask.astype(np.uint8) * 255):
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)


def cached_mask(cfg: Config, sha256: str, segmenter: LungSegmenter) -> np.ndarray | None:
    """The cached mask of an image (by content hash) for this segmenter, or None."""
    path = lungs_cache_dir(cfg) / segmenter.digest / f"{sha256}.png"
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
    return None if mask is None else mask > 127


def _chunks(items: list[Path], size: int) -> Iterator[list[Path]]:
    """Consecutive slices of ``items`` of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def segment_folder(
    cfg: Config,
    root: str | Path,
    out_dir: str | Path | None = None,
    segmenter: LungSegmenter | None = None,
    progress: bool = True,
    batch_size: int = 16,
) -> FolderResult:
    """Segment every image under ``root``; cache masks, flag failures, optionally write 0/255 PNGs under ``out_dir``."""
    from tqdm import tqdm

    root = Path(root).resolve()
    files = image_files(root)
    segmenter = segmenter or load_segmenter()
    cache = lungs_cache_dir(cfg) / segmenter.digest
    rows = []
    bar = tqdm(total=len(files), desc="lungs", unit="img", file=sys.stderr, disable=not progress)
    for chunk in _chunks(files, batch_size):
        readable: list[tuple[Path, str, np.ndarray]] = []
        for path in chunk:
            rel = path.relative_to(root).as_posix()
            try:
                readable.append(
                    (
                        path,
                        sha256_file(path),
                        read_image(path, name=rel, max_pixels=cfg.max_pixels, min_side=cfg.min_side),
                    )
                )
            except (ImageReadError, OSError) as exc:
                rows.append(
                    {
                        "sha256": "",
                        "path": rel,
                        "flags": "unreadable",
                        "area_fraction": 0.0,
                        "components": 0,
                        "error": str(exc),
                    }
                )
        results: list[LungSegmentation] = segmenter.segment([img for _, _, img in readable]) if readable else []
        for (path, digest, _), result in zip(readable, results):
            rel = path.relative_to(root).as_posix()
            _write_png(cache / f"{digest}.png", result.mask)
            if out_dir is not None:
                _write_png((Path(out_dir) / rel).with_suffix(".png"), result.mask)
            rows.append(
                {
                    "sha256": digest,
                    "path": rel,
                    "flags": ";".join(result.flags),
                    "area_fraction": round(result.area_fraction, 4),
                    "components": result.components,
                    "error": "",
                }
            )
        bar.update(len(chunk))
    bar.close()
    frame = pd.DataFrame(rows, columns=["sha256", "path", "flags", "area_fraction", "components", "error"])
    return FolderResult(frame, record_flags(cfg, root, frame, segmenter.digest))


def record_flags(cfg: Config, root: Path, rows: pd.DataFrame, model: str) -> Path:
    """Merge this run's readable rows into ``cache/lungs/lung_flags.csv`` (one row per image content); returns its path."""
    path = lungs_cache_dir(cfg) / FLAGS_FILE
    new = rows[rows["sha256"] != ""].assign(data_dir=str(root), model=model)[FLAG_COLUMNS]
    old = load_lung_flags(cfg)
    merged = pd.concat([old[~old["sha256"].isin(new["sha256"])], new], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{FLAGS_FILE}.tmp")
    merged.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def load_lung_flags(cfg: Config) -> pd.DataFrame:
    """The recorded lung flags (columns ``FLAG_COLUMNS``; ``flags`` "" when plausible); empty when none recorded."""
    path = lungs_cache_dir(cfg) / FLAGS_FILE
    if not path.is_file():
        return pd.DataFrame(columns=FLAG_COLUMNS)
    return pd.read_csv(path, dtype={"sha256": str, "path": str, "data_dir": str, "flags": str, "model": str}).fillna(
        {"flags": ""}
    )


def lung_flags_version(cfg: Config) -> str:
    """A cheap fingerprint of the recorded lung flags (size and modification time; "" when none recorded)."""
    path = lungs_cache_dir(cfg) / FLAGS_FILE
    if not path.is_file():
        return ""
    stat = path.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def lung_flag_score(flags: str) -> float:
    """Curation score of a ``;``-joined lung flag string: its most severe reason, 0 when there is none."""
    return max((LUNG_FLAG_REASONS.get(name, (1.0, ""))[0] for name in flags.split(";") if name), default=0.0)


def describe_lung_flags(flags: str, area_fraction: float | None = None) -> str:
    """Plain words for a ``;``-joined lung flag string, e.g. "only one lung found (one_lung); lung area 6% of the image"."""
    words = [
        f"{LUNG_FLAG_REASONS[name][1]} ({name})" if name in LUNG_FLAG_REASONS else name
        for name in flags.split(";")
        if name
    ]
    if words and area_fraction is not None and np.isfinite(area_fraction):
        words.append(f"lung area {area_fraction:.0%} of the image")
    return "; ".join(words)
