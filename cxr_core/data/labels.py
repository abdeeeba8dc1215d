"""Label CSVs for any folder of images (DICOM or not), DICOM header pseudonyms, and the de-identified Kaggle-layout copy.

A label CSV has the columns ``file`` (path relative to the data folder) and ``label`` (one of the configured
classes, case-insensitive), optionally ``patient_id`` and ``source``; other columns are ignored, so a stray name or
birth-date column never reaches the index. Identifiers are never kept in clear: ``patient_id`` values and the DICOM
``PatientID``, ``InstitutionName`` and ``StationName`` become salted HMAC-SHA256 pseudonyms (``patient-…``,
``site-…``). The salt is 32 random bytes created once in the work dir (``<home>/salt``, mode 0600) and never
printed; the same work dir always gives the same pseudonyms, another work dir different ones.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import cv2
import pandas as pd

from cxr_core.config import Config
from cxr_core.data.imaging import IMAGE_SUFFIXES, ImageReadError, is_dicom_bytes, read_image
from cxr_core.util.progress import Progress

if TYPE_CHECKING:
    from cxr_core.data.index import DatasetIndex

LABELS_FILE = "labels.csv"
SALT_FILE = "salt"
LABEL_COLUMNS = ("file", "label", "patient_id", "source")
IDENTITY_COLUMNS = ("view_position", "dicom_patient", "dicom_source")
EXPORT_COLUMNS = ("file", "label", "source", "patient_id")
LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "L", "LLAT", "RLAT", "XTABLE LATERAL"})
_HEADER_TAGS = ["PatientID", "InstitutionName", "StationName", "ViewPosition", "ViewCodeSequence"]


class LabelsError(ValueError):
    """A label CSV, salt or export target is unusable; ``str(exc)`` is one line."""


def work_salt(home: Path) -> bytes:
    """The work dir's pseudonym salt, created once (atomically, mode 0600) on first use."""
    path = home / SALT_FILE
    if not path.is_file():
        home.mkdir(parents=True, exist_ok=True)
        tmp = home / f".{SALT_FILE}.tmp{os.getpid()}"
        descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        salt = bytes.fromhex(path.read_text(encoding="ascii").strip())
    except (UnicodeDecodeError, ValueError) as exc:
        raise LabelsError(f"{path} is not a valid salt; restore it, or delete it to start new pseudonyms") from exc
    if len(salt) < 16:
        raise LabelsError(f"{path} is too short to be a salt; restore it, or delete it to start new pseudonyms")
    return salt


def salt_id(salt: bytes) -> str:
    """A short fingerprint of the salt (it reveals nothing about it) to tell which salt made a pseudonym."""
    return hashlib.sha256(b"cxr-salt-id\0" + salt).hexdigest()[:12]


def pseudonym(salt: bytes, kind: str, value: str) -> str:
    """``<kind>-<12 hex>``: the salted HMAC-SHA256 of ``value`` (the same value and salt always give the same name)."""
    digest = hmac.new(salt, f"{kind}\0{value.strip()}".encode(), hashlib.sha256).hexdigest()
    return f"{kind}-{digest[:12]}"


def view_of(dataset: Any) -> str:
    """The view of a DICOM header: ``ViewPosition``, else the meaning of its ``ViewCodeSequence``, upper case."""
    view = str(dataset.get("ViewPosition", "") or "")
    codes = dataset.get("ViewCodeSequence")
    if not view.strip() and codes:
        view = str(codes[0].get("CodeMeaning", "") or "")
    return " ".join(view.upper().replace("-", " ").split())[:40]


def is_lateral(view: str) -> bool:
    """True for lateral views (LL, RL, LAT, LATERAL, latero-medial…); decubitus views are frontal and kept."""
    return view in LATERAL_VIEWS or (("LATERAL" in view or "LATERO" in view) and "DECUBITUS" not in view)


def dicom_identity(path: str | Path, salt: bytes) -> dict[str, str]:
    """View, patient pseudonym and site pseudonym from a DICOM header (empty strings for what is absent)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, ValueError, KeyError, TypeError, EOFError):
        return dict.fromkeys(IDENTITY_COLUMNS, "")
    patient = str(header.get("PatientID", "") or "").strip()
    site = str(header.get("InstitutionName", "") or "").strip() or str(header.get("StationName", "") or "").strip()
    return {
        "view_position": view_of(header),
        "dicom_patient": pseudonym(salt, "patient", patient) if patient else "",
        "dicom_source": pseudonym(salt, "site", site) if site else "",
    }


def _examples(items: list[str], limit: int = 3) -> str:
    """The first few items joined, with how many more there are."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _inside(value: str) -> str:
    """``value`` as a clean relative POSIX path, or "" when it cannot name a file inside the data folder."""
    path = PurePosixPath(value.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or path.as_posix() in ("", "."):
        return ""
    return path.as_posix()


def read_labels(path: Path, root: Path, classes: Iterable[str]) -> pd.DataFrame:
    """The validated rows (file, label, patient_id, source) of a label CSV; :class:`LabelsError` for any bad row."""
    if not path.is_file():
        raise LabelsError(f"label file {path} not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise LabelsError(
            f"{path}: not a readable CSV file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from exc
    table.columns = [str(c).strip().lower() for c in table.columns]
    if not {"file", "label"} <= set(table.columns):
        raise LabelsError(f"{path}: needs the columns file and label (found: {', '.join(table.columns) or 'none'})")
    if table.empty:
        raise LabelsError(f"{path}: has no rows")
    table = table.loc[:, ~table.columns.duplicated()].reindex(columns=list(LABEL_COLUMNS), fill_value="")
    table = table.apply(lambda column: column.str.strip())
    rows = (table.index + 2).astype(str)
    table["file"] = [_inside(f) for f in table["file"]]
    outside = [f"row {r}" for r, f in zip(rows, table["file"]) if not f]
    if outside:
        raise LabelsError(f"{path}: {len(outside)} file values are not paths inside {root} ({_examples(outside)})")
    repeated = table.groupby("file").indices
    twice = [f"{f} (rows {', '.join(rows[i])})" for f, i in repeated.items() if len(i) > 1]
    if twice:
        raise LabelsError(f"{path}: {len(twice)} files are listed more than once: {_examples(twice)}")
    canonical = {c.lower(): c for c in classes}
    unknown = [f"{lbl!r} on row {r}" for r, lbl in zip(rows, table["label"]) if lbl.lower() not in canonical]
    if unknown:
        raise LabelsError(
            f"{path}: unknown labels {_examples(unknown)} (labels must be one of {', '.join(canonical.values())})"
        )
    table["label"] = [canonical[lbl.lower()] for lbl in table["label"]]
    missing = [f for f in table["file"] if not (root / f).is_file()]
    if missing:
        raise LabelsError(
            f"{path}: {len(missing)} of {len(table)} listed files are not in {root}: {_examples(missing)} "
            "(paths must be relative to the data folder; fix or remove those rows)"
        )
    return table


def _looks_like_image(path: Path) -> bool:
    """True for a file with an image suffix, or any file (but DICOMDIR) that starts like a DICOM file."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    if path.name.upper() == "DICOMDIR":
        return False
    try:
        with open(path, "rb") as handle:
            return is_dicom_bytes(handle.read(132))
    except OSError:
        return False


def unlabelled_files(root: Path, labelled: set[str]) -> list[str]:
    """Image files anywhere under ``root`` (hidden files and folders skipped) that the label CSV does not list."""
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if not name.startswith(".") and rel not in labelled and _looks_like_image(path):
                found.append(rel)
    return found


def check_export_target(root: Path, out: Path) -> Path:
    """``out`` resolved, when it is new or empty and outside the data folder ``root``; else :class:`LabelsError`."""
    root, out = root.expanduser().resolve(), out.expanduser().resolve()
    if out == root or out.is_relative_to(root) or root.is_relative_to(out):
        raise LabelsError(f"--out {out} must lie outside the data folder {root}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise LabelsError(f"{out} already exists and is not empty; choose a new folder")
    return out


def export_copy(cfg: Config, index: DatasetIndex, out: Path, progress: Progress | None = None) -> dict[str, Any]:
    """Write a de-identified copy of ``index`` to ``out``: ``CLASS/images/CLASS-n.png`` (8-bit grey) and manifest.csv.

    The originals are only read. ``out`` must be new or empty and outside the data folder; the copy is built in a
    hidden sibling folder and renamed into place, so a failure leaves no half-written ``out``.
    """
    root, out = index.data_dir, check_export_target(index.data_dir, out)
    salt = work_salt(cfg.home)
    frame = index.frame[(index.frame["error"] == "") & (index.frame["exclude_reason"] != "discarded")]
    frame = frame.sort_values(["label", "sha256", "path"], kind="stable")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    numbers: Counter[str] = Counter()
    records, unreadable = [], 0
    try:
        for done, row in enumerate(frame.itertuples(), start=1):
            try:
                gray = read_image(root / row.path, max_pixels=cfg.max_pixels, min_side=cfg.min_side)
            except ImageReadError:
                unreadable += 1
                continue
            numbers[row.label] += 1
            name = f"{row.label}/images/{row.label}-{numbers[row.label]}.png"
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(tmp / name), gray):
                raise LabelsError(f"cannot write {tmp / name}")
            records.append(
                {
                    "file": name,
                    "label": row.label,
                    "source": row.source,
                    "patient_id": pseudonym(salt, "patient", row.patient_id),
                }
            )
            if progress:
                progress(done, len(frame))
        tmp.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(records, columns=list(EXPORT_COLUMNS)).to_csv(tmp / "manifest.csv", index=False)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    discarded = int((index.frame["exclude_reason"] == "discarded").sum())
    return {
        "out": str(out),
        "n_images": len(records),
        "by_class": dict(sorted(numbers.items())),
        "skipped": {
            "unreadable": len(index.unreadable()) + unreadable,
            "discarded": discarded,
            "lateral": len(index.lateral),
            "unlabelled": len(index.unlabelled),
        },
    }
