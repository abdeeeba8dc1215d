"""Label-CSV datasets: a nested DICOM folder indexed by a label CSV, pseudonyms, laterals, unlabelled files, the
remembered label file, label-CSV errors and the de-identified copy of ``cxr import``."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import dicom_bytes, synthetic_xray, write_dataset
from cxr_core.cli.parser import main
from cxr_core.config import Config
from cxr_core.data.index import DatasetError, labels_file, load_index
from cxr_core.data.labels import SALT_FILE, is_lateral

# (file, label, PatientName, PatientID, InstitutionName, StationName, ViewPosition); "" = tag absent
DICOM_ROWS = [
    ("caseA/study1/img1.dcm", "COVID", "Doe^Jane", "MRN-100001", "St Elsewhere General Hospital", "", "PA"),
    ("caseA/study2/img1.dcm", "COVID", "Doe^Jane", "MRN-100001", "St Elsewhere General Hospital", "", "AP"),
    ("caseA/study2/img2.dcm", "COVID", "Doe^Jane", "MRN-100001", "St Elsewhere General Hospital", "", "LL"),
    ("caseB/study1/IM0001", "COVID", "Roe^Richard", "MRN-100002", "St Elsewhere General Hospital", "", "AP"),
    ("caseC/s1/a.dcm", "Normal", "Poe^Edgar", "MRN-100003", "", "XR-ROOM-7", "PA"),
    ("caseD/s1/a.dcm", "Normal", "Moe^Anna", "MRN-100004", "Mercy Clinic North", "", "PA"),
    ("caseE/s1/a.dcm", "Normal", "Loe^Benedict", "MRN-100005", "", "", ""),
    ("caseF/s1/a.dcm", "COVID", "Hoe^Carla", "MRN-100006", "Mercy Clinic North", "", "latero-medial"),
    ("caseG/s1/a.dcm", "Normal", "Zoe^Dora", "MRN-100007", "Mercy Clinic North", "", "PA"),
]
UNLABELLED = ("extra/unlabelled.dcm", "Noe^Frank", "MRN-100008", "Mercy Clinic North")
PNG_ROW = ("photos/p9.png", "Normal")
IDENTIFIERS = sorted(
    {v for row in DICOM_ROWS for v in row[2:6] if v} | set(UNLABELLED[1:]) | {"Elsewhere", "Mercy", "ROOM-7"}
)


def dicom_file(
    gray: np.ndarray, name: str, pid: str, institution: str = "", station: str = "", view: str = ""
) -> bytes:
    """A DICOM file with identifiers, a site and a view (``ViewPosition``, or a ``ViewCodeSequence`` meaning)."""
    import pydicom
    from pydicom.dataset import Dataset

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(gray, patient_name=name, patient_id=pid)))
    if institution:
        ds.InstitutionName = institution
    if station:
        ds.StationName = station
    if view in ("PA", "AP", "LL"):
        ds.ViewPosition = view
    elif view:
        code = Dataset()
        code.CodeMeaning = view
        ds.ViewCodeSequence = [code]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_dicom_folder(root: Path, seed: int = 0) -> Path:
    """A nested per-patient/study DICOM folder (no class folders), a labelled PNG, an unlabelled DICOM and a note;
    returns the label CSV, written outside the folder."""
    rng = np.random.default_rng(seed)
    for rel, label, name, pid, institution, station, view in DICOM_ROWS:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(
            dicom_file(synthetic_xray(rng, 96, covid=label == "COVID"), name, pid, institution, station, view)
        )
    rel, name, pid, institution = UNLABELLED
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(dicom_file(synthetic_xray(rng, 96), name, pid, institution))
    (root / "extra" / "notes.txt").write_text("not an image\n")
    (root / PNG_ROW[0]).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / PNG_ROW[0]), synthetic_xray(rng, 96))
    labels = root.parent / f"{root.name}-labels.csv"
    rows = [(r[0], r[1]) for r in DICOM_ROWS] + [PNG_ROW]
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(labels, index=False)
    return labels


def leaked(texts: list[str]) -> list[str]:
    """The identifiers found in any of ``texts``."""
    return [ident for ident in IDENTIFIERS for text in texts if ident.lower() in text.lower()]


def files_text(folder: Path) -> list[str]:
    """Every file under ``folder`` as text (raw bytes decoded leniently, parquet files also as their table)."""
    texts = []
    for path in folder.rglob("*"):
        if path.is_file():
            texts.append(path.read_bytes().decode("latin-1"))
            if path.suffix == ".parquet":
                texts.append(pd.read_parquet(path).to_csv())
    return texts


@pytest.fixture
def dicom_dir(tmp_path: Path) -> tuple[Path, Path]:
    """The DICOM folder and its label CSV."""
    root = tmp_path / "hospital"
    return root, write_dicom_folder(root)


def test_dicom_folder_with_a_label_csv(dicom_dir: tuple[Path, Path], make_cfg, caplog) -> None:
    root, labels = dicom_dir
    cfg = make_cfg()
    with caplog.at_level(logging.DEBUG):
        index = load_index(cfg, root, labels=labels)
    summary = index.summary()
    assert summary["n_files"] == 8 and summary["n_images"] == 8
    assert summary["by_class"] == {"COVID": 3, "Normal": 5}
    assert summary["lateral"] == ["caseA/study2/img2.dcm", "caseF/s1/a.dcm"] and summary["n_lateral"] == 2
    assert summary["unlabelled"] == ["extra/unlabelled.dcm"] and summary["labels_file"] == str(labels)
    frame = index.frame.set_index("path")
    assert frame.loc["caseB/study1/IM0001", "error"] == "", "a DICOM without a suffix is read by its preamble"
    same = frame.loc[["caseA/study1/img1.dcm", "caseA/study2/img1.dcm"]]
    assert same["patient_id"].nunique() == 1 and same["patient_id"].iloc[0].startswith("patient-")
    assert same["split"].nunique() == 1 and summary["patients_in_multiple_splits"] == 0
    assert summary["n_patients"] == 7 and frame.loc[PNG_ROW[0], "patient_id"] == f"file:{PNG_ROW[0]}"
    sources = frame["source"]
    assert sources["caseA/study1/img1.dcm"] == sources["caseB/study1/IM0001"] != sources["caseD/s1/a.dcm"]
    assert sources["caseD/s1/a.dcm"] == sources["caseG/s1/a.dcm"] and sources["caseC/s1/a.dcm"].startswith("site-")
    assert sources["caseE/s1/a.dcm"] == sources[PNG_ROW[0]] == "unknown"
    assert frame.loc["caseD/s1/a.dcm", "view_position"] == "PA"
    salt = (cfg.home / SALT_FILE).read_text().strip()
    assert oct((cfg.home / SALT_FILE).stat().st_mode & 0o777) == "0o600"
    texts = [json.dumps(summary), index.frame.to_csv(), caplog.text, *files_text(cfg.home)]
    assert not leaked(texts) and not any(salt in t for t in texts[:3])
    again = load_index(cfg, root)
    assert again.summary()["refresh"] == {"read": 0, "reused": 10} and again.labels_file == labels
    pd.testing.assert_frame_equal(again.frame, index.frame)


def test_cli_index_remembers_the_labels_and_prints_no_identifier(
    dicom_dir: tuple[Path, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    root, labels = dicom_dir
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXR_DATA_DIR", str(root))
    assert main(["index", str(root), "--labels", str(labels), "--json"]) == 0
    out = capsys.readouterr()
    summary = json.loads(out.out)
    assert summary["n_images"] == 8 and summary["n_unlabelled"] == 1 and not leaked([out.out, out.err])
    assert main(["index"]) == 0, "the configured data dir finds its remembered label CSV"
    out = capsys.readouterr()
    assert "8 images, 7 patients" in out.out and "extra/unlabelled.dcm" in out.out and "lateral views" in out.out
    assert not leaked([out.out, out.err])
    assert main(["index", "--forget-labels"]) == 2
    assert "none of the class folders" in capsys.readouterr().err
    (root / "labels.csv").write_bytes(labels.read_bytes())
    assert main(["index", "--json"]) == 0, "a labels.csv at the dataset root is used by itself"
    assert json.loads(capsys.readouterr().out)["labels_file"] == str(root / "labels.csv")


def test_patient_and_source_columns_of_the_label_csv(dicom_dir: tuple[Path, Path], make_cfg) -> None:
    root, labels = dicom_dir
    table = pd.read_csv(labels)
    table["patient_id"] = [f"H-{i // 2}" for i in range(len(table))]
    table["source"] = ["ward-1"] * 5 + [""] * (len(table) - 5)
    table["PatientName"] = "Doe^Jane"
    table.to_csv(labels, index=False)
    frame = load_index(make_cfg(), root, labels=labels).frame.set_index("path")
    assert not frame["patient_id"].str.startswith("H-").any() and "PatientName" not in frame.columns
    assert frame.loc["caseA/study1/img1.dcm", "patient_id"] == frame.loc["caseA/study2/img1.dcm", "patient_id"]
    assert frame.loc["caseA/study1/img1.dcm", "source"] == "ward-1"
    assert frame.loc["caseG/s1/a.dcm", "source"].startswith("site-"), "an empty source falls back to the header"
    other = load_index(make_cfg(home=root.parent / "other-home"), root, labels=labels).frame.set_index("path")
    assert (other["patient_id"] != frame["patient_id"]).all(), "pseudonyms depend on the work dir's salt"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("file,label\ncaseA/study1/img1.dcm,COVID\nnot/here.dcm,Normal\n", "1 of 2 listed files are not in"),
        ("file,label\n../outside.dcm,COVID\n", "not paths inside"),
        ("file,label\n/etc/passwd,COVID\n", "not paths inside"),
        ("file,label\ncaseA/study1/img1.dcm,COVID\n./caseA/study1/img1.dcm,Normal\n", "listed more than once"),
        ("file,label\ncaseA/study1/img1.dcm,Pneumonia\n", "unknown labels 'Pneumonia' on row 2"),
        ("path,diagnosis\ncaseA/study1/img1.dcm,COVID\n", "needs the columns file and label"),
        ("file,label\n", "has no rows"),
    ],
)
def test_bad_label_csvs_are_refused_and_change_nothing(
    dicom_dir: tuple[Path, Path], make_cfg, rows: str, message: str
) -> None:
    root, labels = dicom_dir
    labels.write_text(rows)
    cfg = make_cfg()
    with pytest.raises(DatasetError, match=message) as caught:
        load_index(cfg, root, labels=labels)
    assert "\n" not in str(caught.value)
    assert labels_file(cfg, root) is None and not cfg.index_dir.exists()


def test_lateral_views() -> None:
    assert all(map(is_lateral, ["LL", "RL", "LAT", "LATERAL", "LATERO MEDIAL", "RIGHT LATERAL"]))
    assert not any(map(is_lateral, ["PA", "AP", "", "LEFT LATERAL DECUBITUS", "AP SUPINE"]))


def test_class_folders_of_dicoms_take_the_patient_from_the_header(tmp_path: Path, make_cfg) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=3)
    (root / "manifest.csv").unlink()
    rng = np.random.default_rng(3)
    for i in range(2):
        (root / "COVID" / "images" / f"scan{i}.dcm").write_bytes(dicom_bytes(synthetic_xray(rng), patient_id="MRN-1"))
    frame = load_index(make_cfg(), root).frame.set_index("path")
    dicoms = frame.loc[["COVID/images/scan0.dcm", "COVID/images/scan1.dcm"], "patient_id"]
    assert dicoms.nunique() == 1 and dicoms.iloc[0].startswith("patient-") and frame["patient_id"].nunique() == 7


def test_cli_import_writes_a_deidentified_kaggle_copy(
    dicom_dir: tuple[Path, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    root, labels = dicom_dir
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    out = tmp_path / "shared" / "dataset"
    assert main(["import", str(root), "--labels", str(labels), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == 8 and result["by_class"] == {"COVID": 3, "Normal": 5}
    assert result["skipped"] == {"unreadable": 0, "discarded": 0, "lateral": 2, "unlabelled": 1}
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert list(manifest.columns) == ["file", "label", "source", "patient_id"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == sorted(manifest["file"])
    assert all(f.startswith(f"{lbl}/images/{lbl}-") for f, lbl in zip(manifest["file"], manifest["label"]))
    assert manifest["patient_id"].str.startswith("patient-").all() and manifest["patient_id"].nunique() == 7
    image = cv2.imread(str(out / manifest["file"][0]), cv2.IMREAD_UNCHANGED)
    assert image.dtype == np.uint8 and image.ndim == 2
    assert not leaked(files_text(out))
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file()} == before
    copy = load_index(Config(home=tmp_path / "h2", workers=1), out).summary()
    assert copy["n_images"] == 8 and copy["n_patients"] == 7
    listing = sorted(p for p in out.rglob("*"))
    assert main(["import", str(root), "--out", str(out)]) == 2, "an existing non-empty --out is refused"
    assert main(["import", str(root), "--out", str(root / "copy")]) == 2, "--out inside the data folder is refused"
    assert "outside the data folder" in capsys.readouterr().err
    assert sorted(p for p in out.rglob("*")) == listing and not (root / "copy").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no partial folder is left behind"
