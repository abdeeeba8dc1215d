"""The dataset index: every image with label, source, patient, size, hashes and read errors, plus splits and audits.

A dataset folder is read in one of two modes. With a label CSV (see :mod:`cxr_core.data.labels`) every file it lists is
indexed wherever it sits under the folder, DICOM or not, and the other image files are listed as unlabelled. The
label CSV is found in this order: the ``labels`` argument of :func:`load_index` (``cxr index DIR --labels FILE``),
which is then remembered for DIR in the work dir (``<home>/index/<name>-<key>.labels.json``, next to DIR's cached
index), so that every later ``load_index(cfg, DIR)`` of train, evaluate and the pages finds it again; else the
remembered file; else a ``labels.csv`` at the root of DIR. Without any, the Kaggle class folders are read
(``CLASS/images/*`` or ``CLASS/*``) with an optional ``manifest.csv``.

In both modes a DICOM file without a patient id (manifest or label CSV) gets the pseudonym of its ``PatientID``,
and without a source that of its ``InstitutionName`` or ``StationName``; lateral views are left out and listed.
Rows of ``frame``: path, label, size_bytes, mtime_ns, sha256, phash, width, height, error, view_position, source,
patient_id (plus manifest columns), split, excluded, exclude_reason.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import zipfile
from collections.abc import Collection, Iterable, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_core.config import Config
from cxr_core.data.hashing import near_pairs, phash
from cxr_core.data.imaging import IMAGE_SUFFIXES, DecodedImages, ImageReadError, read_xray, sha256_file
from cxr_core.data.labels import (
    IDENTITY_COLUMNS,
    LABELS_FILE,
    LabelsError,
    Progress,
    dicom_identity,
    is_lateral,
    pseudonym,
    read_labels,
    salt_id,
    unlabelled_files,
    work_salt,
)
from cxr_core.data.splits import assign_splits
from cxr_core.errors import DatasetError
from cxr_core.util.atomic import write_json_atomic

MANIFEST = "manifest.csv"
READ_COLUMNS = ["sha256", "phash", "width", "height", "error", *IDENTITY_COLUMNS, "salt_id"]
FILE_COLUMNS = ["path", "label", "size_bytes", "mtime_ns", *READ_COLUMNS]
SPLITS = ("train", "val", "test")


@dataclass
class DatasetIndex:
    """An indexed dataset folder: ``frame`` has one row per image file (see module docs for the columns)."""

    data_dir: Path
    frame: pd.DataFrame
    duplicate_pairs: pd.DataFrame
    empty_folders: list[str] = field(default_factory=list)
    n_read: int = 0
    n_reused: int = 0
    seed: int = 0
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    near_duplicate_distance: int = 4
    labels_file: Path | None = None
    unlabelled: list[str] = field(default_factory=list)
    lateral: list[str] = field(default_factory=list)
    known_confounding: dict[str, Any] | None = None
    confounding_memo: Path | None = None

    def abspath(self, rel: str) -> Path:
        """Absolute path of an image given its path relative to the data dir."""
        return self.data_dir / rel

    def pixel_files(self, rows: pd.DataFrame) -> list[str]:
        """Per row the file whose pixels the model reads: its repaired version when it has one, else the original."""
        return [source or str(self.abspath(rel)) for rel, source in zip(rows["path"], pixel_sources(rows)[1])]

    def images(self, split: str | None = None, include_excluded: bool = False) -> pd.DataFrame:
        """Readable images, optionally of one split, without excluded ones unless asked."""
        rows = self.frame[self.frame["error"] == ""]
        if not include_excluded:
            rows = rows[~rows["excluded"]]
        if split is not None and split != "all":
            if split not in SPLITS:
                raise DatasetError(f"unknown split {split!r}; choose from {SPLITS + ('all',)}")
            rows = rows[rows["split"] == split]
        return rows

    def excluded_counts(self) -> dict[str, int]:
        """How many readable images are excluded, by reason."""
        rows = self.frame[(self.frame["error"] == "") & self.frame["excluded"]]
        return {str(k): int(v) for k, v in rows["exclude_reason"].value_counts().items()}

    def unreadable(self) -> list[dict[str, str]]:
        """Files that could not be read, with their errors."""
        rows = self.frame[self.frame["error"] != ""]
        return [{"path": p, "error": e} for p, e in zip(rows["path"], rows["error"])]

    def patients_in_multiple_splits(self) -> int:
        """Number of patients whose images fall in more than one split (must be 0)."""
        rows = self.images(include_excluded=True)
        return int((rows.groupby("patient_id")["split"].nunique() > 1).sum())

    def duplicates_across_splits(self) -> pd.DataFrame:
        """Exact or near-duplicate pairs whose two images sit in different splits."""
        pairs = self.duplicate_pairs
        return pairs[pairs["split_a"] != pairs["split_b"]] if len(pairs) else pairs

    def confounding(self) -> dict[str, Any]:
        """Label x source table and how well source alone predicts the label (Cramér's V, majority accuracy)."""
        if self.known_confounding is None:
            self.known_confounding = confounding(self.images())
            if self.confounding_memo is not None:
                write_json_atomic(self.confounding_memo, {"confounding": self.known_confounding})
        return self.known_confounding

    def class_balance(self, by: str | None = None) -> pd.DataFrame:
        """Image counts and within-group shares per label, overall or grouped by ``split`` or ``source``."""
        rows = self.images() if by == "split" else self.images(include_excluded=True)
        if by != "split":
            rows = rows[rows["exclude_reason"] != "discarded"]
        keys = [by, "label"] if by else ["label"]
        counts = rows.groupby(keys).size().rename("n").reset_index()
        totals = counts.groupby(by)["n"].transform("sum") if by else counts["n"].sum()
        counts["share"] = counts["n"] / totals
        return counts

    def summary(self) -> dict[str, Any]:
        """The ``cxr index --json`` object: counts cover the curated dataset, splits cover what is used."""
        curated = self.frame[(self.frame["error"] == "") & (self.frame["exclude_reason"] != "discarded")]
        usable = self.images()
        splits = {
            s: {str(k): int(v) for k, v in usable[usable["split"] == s]["label"].value_counts().items()} for s in SPLITS
        }
        across = self.duplicates_across_splits()
        return {
            "data_dir": str(self.data_dir),
            "n_files": int(len(self.frame)),
            "n_images": int(len(curated)),
            "by_class": {str(k): int(v) for k, v in curated["label"].value_counts().sort_index().items()},
            "by_source": {str(k): int(v) for k, v in curated["source"].value_counts().sort_index().items()},
            "n_patients": int(curated["patient_id"].nunique()),
            "splits": splits,
            "split_fractions": list(self.split_fractions),
            "seed": self.seed,
            "patients_in_multiple_splits": self.patients_in_multiple_splits(),
            "duplicates_across_splits": int(len(across)),
            "duplicate_pairs": int(len(self.duplicate_pairs)),
            "excluded": self.excluded_counts(),
            "repaired": int(self.frame["repaired"].sum()) if "repaired" in self.frame else 0,
            "unreadable": self.unreadable(),
            "empty_folders": self.empty_folders,
            "confounding": self.confounding(),
            "refresh": {"read": self.n_read, "reused": self.n_reused},
            "labels_file": str(self.labels_file) if self.labels_file else None,
            "n_unlabelled": len(self.unlabelled),
            "unlabelled": self.unlabelled,
            "n_lateral": len(self.lateral),
            "lateral": self.lateral,
        }


def confounding(rows: pd.DataFrame) -> dict[str, Any]:
    """Label x source counts, Cramér's V between them, and the accuracy of guessing the label from source alone."""
    from scipy.stats.contingency import association

    table = pd.crosstab(rows["source"], rows["label"])
    n = int(table.to_numpy().sum())
    cramers_v = 0.0
    if n and min(table.shape) > 1:
        cramers_v = float(association(table.to_numpy(), method="cramer", correction=False))
    accuracy = float(table.max(axis=1).sum() / n) if n else 0.0
    return {
        "table": {str(src): {str(lbl): int(v) for lbl, v in row.items()} for src, row in table.iterrows()},
        "cramers_v": round(cramers_v, 4),
        "source_only_accuracy": round(accuracy, 4),
    }


def find_class_folders(data_dir: Path, classes: Iterable[str]) -> dict[str, Path]:
    """Map each wanted class to its image folder (``CLASS/images`` in the Kaggle layout, else ``CLASS``), case-insensitively."""
    wanted = {c.lower(): c for c in classes}
    found: dict[str, Path] = {}
    for entry in sorted(data_dir.iterdir()):
        if entry.is_dir() and entry.name.lower() in wanted:
            images = next((p for p in entry.iterdir() if p.is_dir() and p.name.lower() == "images"), None)
            found[wanted[entry.name.lower()]] = images or entry
    return found


def scan_files(data_dir: Path, classes: Iterable[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """List ``(relative path, label)`` of image files and the class folders that hold none."""
    folders = find_class_folders(data_dir, classes)
    if not folders:
        raise DatasetError(
            f"{data_dir} has none of the class folders {list(classes)} and no {LABELS_FILE} (expected CLASS/images/*.png "
            "or CLASS/*.png, or a label CSV: `cxr index DIR --labels LABELS.csv`)"
        )
    files: list[tuple[str, str]] = []
    empty: list[str] = []
    for label, folder in folders.items():
        prefix = folder.relative_to(data_dir).as_posix()
        with os.scandir(folder) as entries:
            found = sorted(
                e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
            )
        if not found:
            empty.append(prefix)
        files.extend((f"{prefix}/{name}", label) for name in found)
    return files, empty


def describe_file(args: tuple[str, int, int, bytes, bool]) -> dict[str, Any]:
    """Read one image file and return its index row fields (errors are recorded, never raised), with its decoded
    ``pixels`` too when the last argument asks for them."""
    path, max_pixels, min_side, salt, keep_pixels = args
    row: dict[str, Any] = {
        "sha256": "",
        "phash": "",
        "width": 0,
        "height": 0,
        "error": "",
        **dict.fromkeys(IDENTITY_COLUMNS, ""),
        "salt_id": salt_id(salt),
    }
    try:
        row["sha256"] = sha256_file(path)
        xray = read_xray(path, max_pixels=max_pixels, min_side=min_side)
        row.update(height=int(xray.shape[0]), width=int(xray.shape[1]), phash=phash(xray.pixels))
        if keep_pixels:
            row["pixels"] = xray.pixels
        if xray.format == "DICOM":
            row.update(dicom_identity(path, salt))
    except ImageReadError as exc:
        row["error"] = exc.reason
    except OSError as exc:
        row["error"] = f"cannot read file ({exc.strerror or exc})"
    return row


def _cache_path(cfg: Config, data_dir: Path) -> Path:
    """Where the file-level cache of ``data_dir`` lives in the work dir."""
    key = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return cfg.index_dir / f"{data_dir.name or 'root'}-{key}.parquet"


def _read_cache(cache: Path, salt: bytes) -> pd.DataFrame:
    """The cached file-level rows, or none when absent, of an older layout or made with another salt."""
    cached = pd.read_parquet(cache) if cache.is_file() else pd.DataFrame(columns=FILE_COLUMNS)
    if not set(FILE_COLUMNS) <= set(cached.columns) or (cached["salt_id"] != salt_id(salt)).any():
        return pd.DataFrame(columns=FILE_COLUMNS)
    return cached


def _read_files(
    data_dir: Path,
    files: list[tuple[str, str]],
    cached: pd.DataFrame,
    cfg: Config,
    salt: bytes,
    progress: Progress | None,
    decoded: DecodedImages | None = None,
) -> tuple[pd.DataFrame, int]:
    """File-level rows for ``files``, reusing cached rows whose size and mtime are unchanged.

    Files are read by a pool of processes, or with ``decoded`` (which keeps their pixels) of threads: the pixels then
    stay in this process (sending them back from processes made the reading about 15 % slower).
    """
    root = str(data_dir)
    stats = [os.stat(os.path.join(root, rel)) for rel, _ in files]
    found = pd.DataFrame(
        {
            "path": [rel for rel, _ in files],
            "label": [label for _, label in files],
            "size_bytes": np.array([s.st_size for s in stats], dtype=np.int64),
            "mtime_ns": np.array([s.st_mtime_ns for s in stats], dtype=np.int64),
        }
    )
    old = cached[["path", "size_bytes", "mtime_ns", *READ_COLUMNS]].drop_duplicates("path")
    old = old.astype({"size_bytes": np.int64, "mtime_ns": np.int64})
    merged = found.merge(old, on=["path", "size_bytes", "mtime_ns"], how="left", indicator=True)
    unchanged = (merged.pop("_merge") == "both").to_numpy()
    todo = found[~unchanged].to_dict("records")
    keep = decoded is not None
    jobs = [(os.path.join(root, r["path"]), cfg.max_pixels, cfg.min_side, salt, keep) for r in todo]
    workers = min(cfg.workers, max(1, len(jobs) // 64))
    results: Iterable[dict[str, Any]]
    pool: Executor | None
    if workers > 1:
        pool = ThreadPoolExecutor(workers) if keep else ProcessPoolExecutor(max_workers=workers)
        results = pool.map(describe_file, jobs, chunksize=32)
    else:
        pool, results = None, map(describe_file, jobs)
    try:
        for done, (row, result) in enumerate(zip(todo, results), start=1):
            pixels = result.pop("pixels", None)
            if decoded is not None and pixels is not None:
                decoded.keep(row["path"], pixels)
            row.update(result)
            if progress:
                progress(done, len(todo))
    finally:
        if pool:
            pool.shutdown()
    parts = [p for p in (merged[unchanged], pd.DataFrame(todo, columns=FILE_COLUMNS)) if len(p)]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=FILE_COLUMNS)
    frame = frame[FILE_COLUMNS].sort_values("path", kind="stable").reset_index(drop=True)
    return frame, len(todo)


def _metadata(data_dir: Path, labels: pd.DataFrame | None, salt: bytes) -> pd.DataFrame | None:
    """Per-file columns to merge by ``path``: the label CSV's patient (as a pseudonym) and source, else manifest.csv."""
    if labels is not None:
        patients = [pseudonym(salt, "patient", p) if p else "" for p in labels["patient_id"]]
        return pd.DataFrame({"path": labels["file"], "patient_id": patients, "source": labels["source"]})
    path = data_dir / MANIFEST
    if not path.is_file():
        return None
    manifest = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "file" not in manifest.columns:
        raise DatasetError(f"{path} has no 'file' column")
    return manifest.drop(columns=[c for c in ("label", "sha256") if c in manifest.columns]).rename(
        columns={"file": "path"}
    )


def _attach_metadata(frame: pd.DataFrame, extra: pd.DataFrame | None) -> pd.DataFrame:
    """Add ``source`` and ``patient_id`` (and other manifest columns), falling back to the DICOM header pseudonyms."""
    if extra is not None:
        frame = frame.merge(extra, on="path", how="left")
    for column, header in (("source", "dicom_source"), ("patient_id", "dicom_patient")):
        if column not in frame.columns:
            frame[column] = ""
        frame[column] = frame[column].fillna("").astype(str)
        missing = frame[column] == ""
        frame.loc[missing, column] = frame.loc[missing, header]
    frame.loc[frame["source"] == "", "source"] = "unknown"
    missing = frame["patient_id"] == ""
    frame.loc[missing, "patient_id"] = "file:" + frame.loc[missing, "path"]
    return frame.drop(columns=["dicom_source", "dicom_patient", "salt_id"])


def _duplicate_pairs(frame: pd.DataFrame, max_distance: int, cache: Path) -> pd.DataFrame:
    """Exact (same sha256) and near (pHash within ``max_distance``) duplicate pairs among readable images."""
    readable = frame[frame["error"] == ""].reset_index(drop=True)
    rows = np.arange(len(readable))
    first = pd.Series(rows).groupby(readable["sha256"], sort=False).transform("min").to_numpy()
    copies = rows[first != rows]
    near = _near_pairs_cached(readable, max_distance, cache)
    found = (
        pd.DataFrame(
            {
                "i": np.r_[first[copies], near[:, 0]],
                "j": np.r_[copies, near[:, 1]],
                "kind": np.repeat(np.array(["exact", "near"], dtype=object), [len(copies), len(near)]),
                "distance": np.r_[np.zeros(len(copies), dtype=np.int64), near[:, 2]],
            }
        )
        .drop_duplicates(["i", "j"])
        .sort_values(["i", "j"])
    )
    i, j = found["i"].to_numpy(), found["j"].to_numpy()
    path, split, label = (readable[c].to_numpy() for c in ("path", "split", "label"))
    return pd.DataFrame(
        {
            "path_a": path[i],
            "path_b": path[j],
            "kind": found["kind"].to_numpy(),
            "distance": found["distance"].to_numpy(),
            "split_a": split[i],
            "split_b": split[j],
            "label_a": label[i],
            "label_b": label[j],
        }
    )


def _near_pairs_cached(readable: pd.DataFrame, max_distance: int, cache: Path) -> np.ndarray:
    """``near_pairs`` rows (i, j, distance) of the pHashes, reused from ``cache`` while paths, pHashes and distance match."""
    hashes = readable["phash"].tolist()
    digest = hashlib.sha256(json.dumps([max_distance, readable["path"].tolist(), hashes]).encode()).hexdigest()
    try:
        with np.load(cache) as saved:
            if str(saved["digest"]) == digest:
                return saved["pairs"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        pass
    pairs = np.array(near_pairs(hashes, max_distance), dtype=np.int64).reshape(-1, 3)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as handle:
        np.savez(handle, digest=np.array(digest), pairs=pairs)
    os.replace(tmp, cache)
    return pairs


def _exclusions(frame: pd.DataFrame, pairs: pd.DataFrame, cfg: Config, discarded: Collection[str]) -> pd.DataFrame:
    """Mark images whose sha256 is in ``discarded`` and test images that duplicate a training image."""
    frame["excluded"] = False
    frame["exclude_reason"] = ""
    dropped = frame["sha256"].isin(set(discarded)) & (frame["error"] == "")
    frame.loc[dropped, ["excluded", "exclude_reason"]] = [True, "discarded"]
    if cfg.clean_test_of_duplicates and len(pairs):
        leaks: set[str] = set()
        for a, b, sa, sb in zip(pairs["path_a"], pairs["path_b"], pairs["split_a"], pairs["split_b"]):
            if {sa, sb} == {"train", "test"}:
                leaks.add(a if sa == "test" else b)
        leak = frame["path"].isin(leaks) & ~frame["excluded"]
        frame.loc[leak, ["excluded", "exclude_reason"]] = [True, "duplicate-of-train"]
    return frame


ASSEMBLY_CODE = ("data/index.py", "data/splits.py", "data/labels.py")
"""Source files whose logic shapes an assembled index; editing one invalidates every assembled-index memo."""


def _assembly_key(files: pd.DataFrame, extra: pd.DataFrame | None, cfg: Config, discarded: Collection[str]) -> str:
    """A digest of everything an assembled index depends on: file rows, metadata, split settings, discards and code."""
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(files, index=False).to_numpy().tobytes())
    if extra is not None:
        digest.update(pd.util.hash_pandas_object(extra, index=False).to_numpy().tobytes())
        digest.update(json.dumps(list(extra.columns)).encode())
    settings = [
        list(cfg.split_fractions),
        cfg.seed,
        cfg.near_duplicate_distance,
        cfg.clean_test_of_duplicates,
        sorted(discarded),
    ]
    digest.update(json.dumps(settings).encode())
    digest.update(_assembly_code_digest())
    return digest.hexdigest()[:20]


@functools.cache
def _assembly_code_digest() -> bytes:
    """SHA-256 of the :data:`ASSEMBLY_CODE` sources, read once per process (the code it stands for is loaded once)."""
    package = Path(__file__).resolve().parents[1]
    return hashlib.sha256(b"".join((package / name).read_bytes() for name in ASSEMBLY_CODE)).digest()


def _string_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with its object columns of text as pandas strings, as they come back from parquet."""
    text = [c for c in frame.columns if frame[c].dtype == object]
    return frame.astype(dict.fromkeys(text, "str")) if text else frame


def _assembled_paths(cache: Path, key: str) -> tuple[Path, Path, Path]:
    """The frame, pairs and confounding files of the assembled index with ``key``."""
    stem = f"{cache.stem}.assembled-{key}"
    return (
        cache.with_name(f"{stem}.frame.parquet"),
        cache.with_name(f"{stem}.pairs.parquet"),
        cache.with_name(f"{stem}.json"),
    )


def _read_assembled(cache: Path, key: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any] | None] | None:
    """The memo of an assembled index made from the same inputs (frame, pairs, confounding if known), else None."""
    frame_path, pairs_path, meta_path = _assembled_paths(cache, key)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        return pd.read_parquet(frame_path), pd.read_parquet(pairs_path), meta.get("confounding")
    except (OSError, ValueError):
        return None


def _write_assembled(cache: Path, key: str, frame: pd.DataFrame, pairs: pd.DataFrame) -> None:
    """Store an assembled index under ``key`` (its json last, so a partial write is never read); drop older ones."""
    frame_path, pairs_path, meta_path = _assembled_paths(cache, key)
    for old in cache.parent.glob(f"{cache.stem}.assembled-*"):
        old.unlink(missing_ok=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.stem}.assembling{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, frame_path)
    pairs.to_parquet(tmp, index=False)
    os.replace(tmp, pairs_path)
    write_json_atomic(meta_path, {})


def _labels_memo(cfg: Config, root: Path) -> Path:
    """Where the work dir remembers the label CSV of ``root`` (beside its cached index)."""
    return _cache_path(cfg, root).with_suffix(".labels.json")


def labels_file(cfg: Config, data_dir: str | Path) -> Path | None:
    """The label CSV that :func:`load_index` uses for ``data_dir``: the remembered one, else ``labels.csv`` at its root."""
    root = Path(data_dir).expanduser().resolve()
    memo = _labels_memo(cfg, root)
    if memo.is_file():
        return Path(json.loads(memo.read_text(encoding="utf-8"))["labels"])
    default = root / LABELS_FILE
    return default if default.is_file() else None


def remember_labels(cfg: Config, data_dir: Path, labels: Path) -> None:
    """Remember ``labels`` as the label CSV of ``data_dir`` in the work dir."""
    memo = _labels_memo(cfg, data_dir)
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"data_dir": str(data_dir), "labels": str(labels)}), encoding="utf-8")
    os.replace(tmp, memo)


def forget_labels(cfg: Config, data_dir: str | Path) -> bool:
    """Forget the remembered label CSV of ``data_dir``; True when there was one."""
    memo = _labels_memo(cfg, Path(data_dir).expanduser().resolve())
    existed = memo.is_file()
    memo.unlink(missing_ok=True)
    return existed


def _no_usable_image(root: Path, frame: pd.DataFrame, lateral: pd.Series, empty: list[str]) -> str:
    """Why ``frame`` has no readable frontal image, or "" when it has one."""
    readable = frame["error"] == ""
    if (readable & ~lateral).any():
        return ""
    if frame.empty:
        return f"{root} has no image files to index (empty: {', '.join(empty)})"
    if not readable.any():
        first = frame.iloc[0]
        return f"none of the {len(frame)} image files in {root} is readable (e.g. {first['path']}: {first['error']})"
    return f"all {int(readable.sum())} readable images in {root} are lateral views; CXR Review needs frontal views"


def load_index(
    cfg: Config,
    data_dir: str | Path | None = None,
    refresh: bool = True,
    progress: Progress | None = None,
    labels: str | Path | None = None,
    discarded: Collection[str] = (),
    replacements: Mapping[str, tuple[str, str]] | None = None,
    decoded: DecodedImages | None = None,
) -> DatasetIndex:
    """Index ``data_dir`` (default ``cfg.data_dir``), re-reading only new or changed files, and cache it in the work dir.

    ``labels`` names a label CSV, which is validated and then remembered for ``data_dir`` (see the module docs).
    Images whose sha256 is in ``discarded`` are excluded; :func:`cxr_core.curation.curated_index` passes the
    curation ledger's discards, and is what the tool's front ends call. ``replacements`` maps an image's sha256 to
    the file (and its sha256) whose pixels stand in for it, such as a repair of its markings: see
    :func:`with_replacements`. The pixels of the files read (new or changed) are kept in ``decoded`` when given, for
    a caller that reads them next (``cxr preprocess``).
    """
    root = Path(data_dir or cfg.data_dir).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist (set CXR_DATA_DIR or run `cxr fetch`)")
    labels_path = Path(labels).expanduser().resolve() if labels else labels_file(cfg, root)
    if labels_path and not labels and not labels_path.is_file():
        raise DatasetError(
            f"label file {labels_path}, remembered for {root} by `cxr index --labels`, is gone; "
            f"pass --labels again or run `cxr index {root} --forget-labels`"
        )
    try:
        table = read_labels(labels_path, root, cfg.include_classes) if labels_path else None
        salt = work_salt(cfg.home)
    except LabelsError as exc:
        raise DatasetError(str(exc)) from exc
    cache = _cache_path(cfg, root)
    cached = _read_cache(cache, salt)
    unlabelled: list[str] = []
    if refresh or not len(cached):
        if table is None:
            files, empty = scan_files(root, cfg.include_classes)
        else:
            files, empty = list(zip(table["file"], table["label"])), []
            unlabelled = unlabelled_files(root, set(table["file"]))
        frame, n_read = _read_files(root, files, cached, cfg, salt, progress, decoded)
    else:
        frame, n_read, empty = cached, 0, []
    lateral = frame["view_position"].map(is_lateral) & (frame["error"] == "")
    problem = _no_usable_image(root, frame, lateral, empty)
    if problem:
        raise DatasetError(problem)
    if n_read or len(frame) != len(cached):
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, cache)
    if labels:
        remember_labels(cfg, root, labels_path)
    left_out, n_reused = frame.loc[lateral, "path"].tolist(), len(frame) - n_read
    extra = _metadata(root, table, salt)
    key = _assembly_key(frame, extra, cfg, discarded)
    memo = _read_assembled(cache, key)
    if memo is None:
        frame = _attach_metadata(frame[~lateral].reset_index(drop=True), extra)
        frame["split"] = assign_splits(frame, cfg.split_fractions, cfg.seed)
        pairs = _duplicate_pairs(frame, cfg.near_duplicate_distance, cache.with_suffix(".pairs.npz"))
        frame = _exclusions(frame, pairs, cfg, discarded)
        frame, pairs = _string_columns(frame), _string_columns(pairs)
        _write_assembled(cache, key, frame, pairs)
        known = None
    else:
        frame, pairs, known = memo
    frame = with_replacements(frame, replacements or {})
    index = DatasetIndex(
        root,
        frame,
        pairs,
        empty,
        n_read,
        n_reused,
        cfg.seed,
        cfg.split_fractions,
        cfg.near_duplicate_distance,
        labels_file=labels_path,
        unlabelled=unlabelled,
        lateral=left_out,
        known_confounding=known,
        confounding_memo=_assembled_paths(cache, key)[2],
    )
    _save_splits(cfg, root, frame)
    return index


def with_replacements(frame: pd.DataFrame, replacements: Mapping[str, tuple[str, str]]) -> pd.DataFrame:
    """``frame`` with ``repaired`` (bool), ``pixels_path`` and ``pixels_sha256`` columns ("" where the original is read).

    Readers of pixels (the training pipeline, the preprocessing cache, the pages) read ``pixels_path`` when it is set
    and key their caches by ``pixels_sha256``; splits, duplicates and the ledger keep using the original's sha256.
    """
    readable = frame["error"] == ""
    chosen = frame["sha256"].map(lambda sha: replacements.get(sha, ("", "")))
    frame = frame.assign(pixels_path=[path for path, _ in chosen], pixels_sha256=[sha for _, sha in chosen])
    frame.loc[~readable, ["pixels_path", "pixels_sha256"]] = ""
    frame["repaired"] = frame["pixels_path"] != ""
    return frame


def pixel_sources(rows: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Per index row, the sha256 of the file to read and that file ("" for the original, else e.g. its repair)."""
    if "pixels_path" not in rows:
        return rows["sha256"].astype(str).tolist(), [""] * len(rows)
    replaced = rows["pixels_path"].astype(str) != ""
    digests = rows["pixels_sha256"].astype(str).where(replaced, rows["sha256"].astype(str))
    return digests.tolist(), rows["pixels_path"].astype(str).tolist()


def _save_splits(cfg: Config, root: Path, frame: pd.DataFrame) -> None:
    """Write the split assignment beside the cache so other tools can read it."""
    path = _cache_path(cfg, root).with_suffix(".splits.json")
    data = {
        "data_dir": str(root),
        "seed": cfg.seed,
        "fractions": list(cfg.split_fractions),
        "splits": dict(zip(frame["path"], frame["split"])),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
