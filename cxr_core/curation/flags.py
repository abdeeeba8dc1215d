"""Automatic curation flags: every image gets a score in [0, 1] per flag, computed in parallel and cached by sha256."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_core.config import Config
from cxr_core.data.imaging import ImageReadError, read_image
from cxr_core.data.index import DatasetIndex
from cxr_core.data.thumbnails import save_thumbnail, thumbnail_path
from cxr_core.lungs.cache import load_lung_flags, lung_flag_score
from cxr_core.markings.classical import DEFAULT_OPTIONS, DEFAULT_THRESHOLD, detect_markings
from cxr_core.preprocess.quality import quality_measures
from cxr_core.util.atomic import read_json, write_json_atomic
from cxr_core.util.progress import Progress

CACHE_VERSION = (
    "flags-1-" + hashlib.sha256(json.dumps(asdict(DEFAULT_OPTIONS), sort_keys=True).encode()).hexdigest()[:12]
)
QUALITY_FLAGS = ("low_contrast", "over_exposed", "under_exposed")


@dataclass(frozen=True)
class Flag:
    """A flag's name, default threshold (flagged when score >= threshold) and meaning."""

    name: str
    threshold: float
    summary: str


FLAGS: dict[str, Flag] = {
    f.name: f
    for f in (
        Flag("markings", DEFAULT_THRESHOLD, "overlaid arrows, boxes or burned-in text (classical detector)"),
        Flag("low_contrast", 0.5, "RMS contrast below about 0.11"),
        Flag("over_exposed", 0.5, "mean brightness above about 0.75"),
        Flag("under_exposed", 0.5, "mean brightness below about 0.25"),
        Flag("small", 0.5, "original shorter side below the minimum resolution"),
        Flag("duplicate", 0.5, "exact or near duplicate (pHash) of another image"),
        Flag("unreadable", 0.5, "the file cannot be decoded"),
        Flag("lungs", 0.5, "lung segmentation empty or implausible (recorded by `cxr lungs`; 0 until it has run)"),
    )
}


@dataclass(frozen=True)
class FlagOptions:
    """Settings of the flag computation."""

    min_resolution: int = 256
    workers: int | None = None


def _ramp(value: float, start: float, width: float) -> float:
    """0 at ``start``, rising linearly to 1 at ``start + width`` (width may be negative), clipped to [0, 1]."""
    return float(np.clip((value - start) / width, 0.0, 1.0))


def quality_scores(measures: dict[str, float]) -> dict[str, float]:
    """The low_contrast / over_exposed / under_exposed scores from :func:`quality_measures` output."""
    return {
        "low_contrast": _ramp(measures["rms_contrast"], 0.16, -0.10),
        "over_exposed": _ramp(measures["mean_brightness"], 0.65, 0.20),
        "under_exposed": _ramp(measures["mean_brightness"], 0.35, -0.20),
    }


def small_score(width: int, height: int, min_resolution: int) -> float:
    """0 when the shorter side reaches ``min_resolution``, else 0.5 rising to 1 as the image shrinks to nothing."""
    short = min(width, height)
    return 0.0 if short >= min_resolution else 0.5 + 0.5 * (min_resolution - short) / min_resolution


def analyse_image(path: str | Path, max_pixels: int, min_side: int, thumb: Path | None = None) -> dict[str, Any]:
    """Markings score, marking regions and quality measures of one image file (the expensive, cacheable part).

    With ``thumb``, also writes the image's review thumbnail there (if missing) while the pixels are decoded.
    """
    gray = read_image(path, max_pixels=max_pixels, min_side=min_side)
    if thumb is not None and not thumb.is_file():
        save_thumbnail(gray, thumb)
    result = detect_markings(gray)
    return {
        "version": CACHE_VERSION,
        "markings": result.score,
        "regions": [list(r) for r in result.regions],
        "kinds": [m.kind for m in result.marks],
        "measures": quality_measures(gray),
    }


def _cache_file(cfg: Config, sha256: str) -> Path:
    """Where the analysis of the image with this sha256 is cached."""
    return cfg.cache_dir / "flags" / sha256[:2] / f"{sha256}.json"


def cached_analysis(cfg: Config, sha256: str) -> dict[str, Any] | None:
    """The cached analysis of an image, or None when missing or made by another detector version."""
    data = read_json(_cache_file(cfg, sha256)) if sha256 else None
    return data if data and data.get("version") == CACHE_VERSION else None


def _analyse_job(job: tuple[str, str, int, int, Path]) -> tuple[str, dict[str, Any] | None, str]:
    """Worker: analyse one file (and make its thumbnail); returns (sha256, analysis or None, error message)."""
    sha256, path, max_pixels, min_side, thumb = job
    try:
        return sha256, analyse_image(path, max_pixels, min_side, thumb), ""
    except ImageReadError as exc:
        return sha256, None, str(exc)


def analyse_all(
    cfg: Config, index: DatasetIndex, workers: int | None = None, progress: Progress | None = None
) -> dict[str, dict[str, Any]]:
    """Analyse every readable image not yet cached (in parallel, making thumbnails too); all analyses by sha256."""
    rows = index.frame[(index.frame["error"] == "") & (index.frame["sha256"] != "")].drop_duplicates("sha256")
    results: dict[str, dict[str, Any]] = {}
    jobs = []
    for sha, rel in zip(rows["sha256"], rows["path"]):
        cached = cached_analysis(cfg, sha)
        if cached is not None:
            results[sha] = cached
        else:
            jobs.append((sha, str(index.abspath(rel)), cfg.max_pixels, cfg.min_side, thumbnail_path(cfg, sha)))
    total, done = len(jobs), 0
    if progress:
        progress(0, total)
    n_workers = max(1, min(workers or cfg.workers, total))

    def collect(outcome: tuple[str, dict[str, Any] | None, str]) -> None:
        """Store and cache one worker result and advance the progress."""
        nonlocal done
        sha, analysis, _ = outcome
        if analysis is not None:
            write_json_atomic(_cache_file(cfg, sha), analysis)
            results[sha] = analysis
        done += 1
        if progress:
            progress(done, total)

    if n_workers == 1:
        for job in jobs:
            collect(_analyse_job(job))
    else:
        with ProcessPoolExecutor(max_workers=n_workers) as pool:
            for outcome in pool.map(_analyse_job, jobs, chunksize=8):
                collect(outcome)
    return results


def _duplicates(index: DatasetIndex) -> tuple[dict[str, float], dict[str, str]]:
    """Duplicate score and the other image's path, by path, from the index's duplicate pairs."""
    scores: dict[str, float] = {}
    other: dict[str, str] = {}
    span = index.near_duplicate_distance + 1
    for a, b, kind, dist in zip(*(index.duplicate_pairs[c] for c in ("path_a", "path_b", "kind", "distance"))):
        score = 1.0 if kind == "exact" else 1.0 - 0.5 * float(dist) / span
        for me, them in ((a, b), (b, a)):
            if score > scores.get(me, 0.0):
                scores[me], other[me] = score, them
    return scores, other


def _lung_rows(cfg: Config) -> dict[str, tuple[str, float]]:
    """The recorded lung segmentation of each image content: sha256 -> (flags, lung area fraction)."""
    lungs = load_lung_flags(cfg)
    rows = zip(lungs["sha256"], lungs["flags"], lungs["area_fraction"])
    return {sha: (flags, float(area)) for sha, flags, area in rows}


def compute_flags(
    cfg: Config, index: DatasetIndex, options: FlagOptions = FlagOptions(), progress: Progress | None = None
) -> pd.DataFrame:
    """One row per image file: path, sha256, label, source, split, excluded, a score per flag, duplicate_of, regions,
    and the lung segmentation's flags and area from ``cxr lungs`` (lung_area NaN when the image was not segmented)."""
    analyses = analyse_all(cfg, index, options.workers, progress)
    dup_score, dup_of = _duplicates(index)
    lungs = _lung_rows(cfg)
    records = []
    for row in index.frame.itertuples(index=False):
        analysis = analyses.get(row.sha256) if not row.error else None
        lung_flags, lung_area = lungs.get(row.sha256, ("", float("nan")))
        measures = quality_scores(analysis["measures"]) if analysis else dict.fromkeys(QUALITY_FLAGS, 0.0)
        records.append(
            {
                "path": row.path,
                "sha256": row.sha256,
                "label": row.label,
                "source": row.source,
                "split": row.split,
                "excluded": bool(row.excluded),
                "exclude_reason": row.exclude_reason,
                "markings": analysis["markings"] if analysis else 0.0,
                **measures,
                "small": small_score(int(row.width), int(row.height), options.min_resolution) if not row.error else 0.0,
                "duplicate": dup_score.get(row.path, 0.0),
                "unreadable": 0.0 if analysis else 1.0,
                "lungs": lung_flag_score(lung_flags),
                "duplicate_of": dup_of.get(row.path, ""),
                "lung_flags": lung_flags,
                "lung_area": lung_area,
                "regions": analysis["regions"] if analysis else [],
                "error": row.error or ("" if analysis else "analysis failed"),
            }
        )
    return pd.DataFrame.from_records(records, columns=FRAME_COLUMNS)


FRAME_COLUMNS = [
    "path",
    "sha256",
    "label",
    "source",
    "split",
    "excluded",
    "exclude_reason",
    *FLAGS,
    "duplicate_of",
    "lung_flags",
    "lung_area",
    "regions",
    "error",
]


def flagged(frame: pd.DataFrame, name: str, threshold: float | None = None) -> pd.Series:
    """Boolean mask of rows whose score for flag ``name`` reaches the (default) threshold."""
    return frame[name] >= (FLAGS[name].threshold if threshold is None else threshold)


def summarise(frame: pd.DataFrame) -> dict[str, Any]:
    """Counts of flagged images per flag, totals, and the lung segmentation's coverage and reasons (JSON-ready)."""
    any_flag = np.zeros(len(frame), bool)
    counts = {}
    for name in FLAGS:
        mask = flagged(frame, name).to_numpy()
        counts[name] = int(mask.sum())
        any_flag |= mask
    return {
        "images": int(len(frame)),
        "flagged_any": int(any_flag.sum()),
        "flags": counts,
        "thresholds": {name: flag.threshold for name, flag in FLAGS.items()},
        "lung_segmentation": {
            "checked": int(frame["lung_area"].notna().sum()),
            "reasons": {str(k): int(v) for k, v in lung_reasons(frame["lung_flags"]).value_counts().items()},
        },
    }


def lung_reasons(flags: pd.Series) -> pd.Series:
    """Every individual reason in a column of ``;``-joined lung flag strings (one entry per image and reason)."""
    reasons = flags.fillna("").astype(str).str.split(";").explode()
    return reasons[reasons != ""]


DECISION_STATES = ("undecided", "discarded", "kept")


def decision_state(decision: str | None) -> str:
    """Review state of an image from its latest ledger decision (a restore returns it to undecided)."""
    return {"discard": "discarded", "keep": "kept"}.get(decision or "", "undecided")


def review_queue(
    frame: pd.DataFrame,
    latest_decisions: dict[str, str],
    sort_by: str = "any",
    only_flagged: bool = False,
    labels: list[str] | None = None,
    sources: list[str] | None = None,
    splits: list[str] | None = None,
    states: list[str] | None = None,
    lung_flags: list[str] | None = None,
) -> pd.DataFrame:
    """Images filtered by class/source/split/decision state/lung flag reason (and optionally flag), highest
    ``sort_by`` score first.

    ``latest_decisions`` maps sha256 to the latest decision word; ``sort_by`` is a flag name or ``any`` (the
    highest score of all flags); ``lung_flags`` keeps images whose lung segmentation has any of these reasons
    (e.g. ``empty``, ``one_lung``). Adds the columns ``state`` and ``score``.
    """
    if sort_by != "any" and sort_by not in FLAGS:
        raise ValueError(f"unknown flag {sort_by!r}; choose from any, {', '.join(FLAGS)}")
    queue = frame.copy()
    queue["state"] = [decision_state(latest_decisions.get(s)) for s in queue["sha256"]]
    queue["score"] = queue[list(FLAGS)].max(axis=1) if sort_by == "any" else queue[sort_by]
    keep = np.ones(len(queue), bool)
    for column, wanted in (("label", labels), ("source", sources), ("split", splits), ("state", states)):
        if wanted:
            keep &= queue[column].isin(wanted).to_numpy()
    if lung_flags:
        keep &= queue["lung_flags"].map(lambda flags: not set(flags.split(";")).isdisjoint(lung_flags)).to_numpy(bool)
    if only_flagged:
        names = list(FLAGS) if sort_by == "any" else [sort_by]
        keep &= np.logical_or.reduce([flagged(queue, n).to_numpy() for n in names])
    return queue[keep].sort_values(["score", "path"], ascending=[False, True], kind="stable")


def missing_analyses(cfg: Config, index: DatasetIndex) -> int:
    """How many readable images have no cached analysis file yet (a cheap check, no decoding)."""
    rows = index.frame[(index.frame["error"] == "") & (index.frame["sha256"] != "")]
    return sum(not _cache_file(cfg, sha).is_file() for sha in rows["sha256"].unique())
