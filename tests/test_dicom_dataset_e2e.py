"""A hospital export end to end: a per-patient folder of compressed DICOMs plus a label CSV is indexed, curated,
trained on and predicted from with the ``cxr`` commands, and no patient identifier reaches any output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import dicom_bytes, synthetic_xray
from cxr_core.cli.parser import main
from cxr_core.data.imaging import read_xray

SYNTAXES = ("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90")  # RLE, JPEG-LS, JPEG 2000
N_PER_CLASS = 12


def compressed_dicom(gray: np.ndarray, syntax: str, patient_id: str, name: str) -> bytes:
    """A 12-bit DX DICOM of ``gray`` compressed losslessly in ``syntax`` (pydicom's RLE, pyjpegls, openjpeg)."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(gray, patient_name=name, patient_id=patient_id, ViewPosition="PA")))
    ds.compress(syntax, encoding_plugin="pydicom" if syntax == SYNTAXES[0] else "")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def hospital(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """``export/<patient>/<study>/IMxxxx`` files without suffix, the label CSV outside it, and the identifiers used."""
    rng = np.random.default_rng(7)
    root, rows, identifiers = tmp_path / "export", [], []
    for i in range(2 * N_PER_CLASS):
        label = "COVID" if i % 2 else "Normal"
        patient, name = f"MRN-{900100 + i}", f"Patient^Number{i}"
        rel = f"P{i:03d}/study1/IM{i:04d}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        gray = synthetic_xray(rng, 96, covid=label == "COVID")
        (root / rel).write_bytes(compressed_dicom(gray, SYNTAXES[i % len(SYNTAXES)], patient, name))
        rows.append((rel, label))
        identifiers += [patient, name]
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["file", "label"]).to_csv(labels, index=False)
    return root, labels, identifiers


def run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    """Run a ``cxr`` command with ``--json``; its exit code, JSON object and stderr."""
    code = main([*argv, "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_compressed_dicom_export_is_indexed_curated_trained_and_predicted(
    hospital: tuple[Path, Path, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root, labels, identifiers = hospital
    home = tmp_path / "home"
    monkeypatch.setenv("CXR_HOME", str(home))
    monkeypatch.setenv("CXR_DATA_DIR", str(root))
    assert {read_xray(p).pixels.shape for p in root.rglob("IM*")} == {(96, 96)}
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}

    code, index, err = run_json(["index", str(root), "--labels", str(labels)], capsys)
    assert code == 0 and index["n_images"] == 2 * N_PER_CLASS and index["unreadable"] == []
    assert index["by_class"] == {"COVID": N_PER_CLASS, "Normal": N_PER_CLASS}
    assert index["patients_in_multiple_splits"] == 0

    discarded = root / "P000" / "study1" / "IM0000"
    assert main(["discard", str(discarded), "--reason", "poor quality"]) == 0
    assert "discard" in capsys.readouterr().out.lower()
    code, flags, _ = run_json(["flags", str(root)], capsys)
    assert code == 0

    run = tmp_path / "run"
    code, trained, err = run_json(
        [
            "train",
            "--data",
            str(root),
            "--arch",
            "cxr_net",
            "--size",
            "64",
            "--epochs",
            "1",
            "--batch",
            "8",
            "--no-augment",
            "--hparams",
            '{"width": 8}',
            "--run-dir",
            str(run),
        ],
        capsys,
    )
    assert code == 0 and trained["status"] == "done" and trained["model_dir"], err
    split = pd.read_csv(run / "split.csv", dtype=str, keep_default_na=False)
    assert "P000/study1/IM0000" not in set(split["path"]) and len(split) == 2 * N_PER_CLASS - 1
    assert set(split["patient_id"]) <= {p for p in split["patient_id"] if p.startswith("patient-")}

    code, predicted, err = run_json(
        ["predict", str(root / "P001" / "study1" / "IM0001"), "--model", trained["model_dir"], "--cam", "none"], capsys
    )
    assert code == 0 and predicted["decision"] in ("COVID", "Normal") and 0 <= predicted["p_covid"] <= 1
    assert predicted["gate"]["chest_xray"] is True

    outputs = [json.dumps(x) for x in (index, flags, trained, predicted)] + [err]
    outputs += [
        p.read_bytes().decode("latin-1")
        for p in [*home.rglob("*"), *run.rglob("*")]
        if p.is_file() and p.suffix in (".json", ".csv", ".log", ".txt", ".md")
    ]
    assert not [ident for ident in identifiers for text in outputs if ident in text]
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
