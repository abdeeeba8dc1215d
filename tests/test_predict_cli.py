"""``cxr predict`` and the inference library: batch with a corrupt file, JSON output, DICOM without identifiers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import dicom_bytes
from cxr_core.cli.parser import main
from cxr_core.data.imaging import read_image, read_xray
from cxr_core.explain.cam import Explainer
from cxr_core.serve.inference import InferenceError, predict_image, report_dict, uncertainty_hint
from cxr_core.serve.registry import load_model
from tiny_models import make_model_dir


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained tiny model directory shared by the module."""
    return make_model_dir(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def loaded(model_dir: Path):
    """The tiny model loaded through the registry."""
    return load_model(model_dir)


@pytest.fixture
def folder(tmp_path: Path, sample_dir: Path) -> Path:
    """Two real X-rays (copied as PNG into tmp) and one corrupt file in a nested folder."""
    root = tmp_path / "batch"
    (root / "sub").mkdir(parents=True)
    for name in ("COVID/images/COVID-1.png", "Normal/images/Normal-1.png"):
        cv2.imwrite(str(root / Path(name).name), read_image(sample_dir / name))
    (root / "sub" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (root / "notes.txt").write_text("not an image, ignored by suffix")
    return root


def test_folder_with_a_corrupt_file_writes_the_others_and_reports_it(folder, model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["predict", str(folder), "--model", str(model_dir), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    with open(out / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    predicted = [r for r in rows if not r["error"]]
    assert len(predicted) == 2 and len(rows) == 3
    for row in predicted:
        assert 0.0 <= float(row["p_covid"]) <= 1.0
        assert row["decision"] in {"COVID", "Normal"}
        assert len(row["sha256"]) == 64 and 0.0 <= float(row["attention_thorax"]) <= 1.0
        assert (out / row["overlay"]).is_file()
        assert cv2.imread(str(out / row["overlay"])).shape[:2] == (299, 299)
    bad_lines = [line for line in captured.err.splitlines() if "corrupt.png" in line]
    assert len(bad_lines) == 1 and "Traceback" not in captured.err
    assert "corrupt or truncated" in bad_lines[0] or "not a readable image" in bad_lines[0]


def test_single_file_json_prints_one_object(folder, model_dir, capsys) -> None:
    code = main(["predict", str(folder / "COVID-1.png"), "--model", str(model_dir), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"p_covid", "label", "threshold", "model", "input_sha256", "attention_shares"} <= set(payload)
    assert payload["model"]["name"] == "tiny" and payload["threshold"] == pytest.approx(0.5)
    assert payload["explanation"]["method"] == "gradcam"


def test_only_bad_files_exit_non_zero_without_traceback(folder, model_dir, capsys) -> None:
    code = main(
        ["predict", str(folder / "sub" / "corrupt.png"), str(folder / "missing.png"), "--model", str(model_dir)]
    )
    err = capsys.readouterr().err
    assert code != 0
    assert "missing.png: file not found" in err and "Traceback" not in err


def test_bad_model_dir_is_one_line_error(folder, tmp_path, capsys) -> None:
    code = main(["predict", str(folder), "--model", str(tmp_path / "nope")])
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_dicom_prediction_carries_no_identifiers(sample_dir, model_dir, loaded, tmp_path, capsys) -> None:
    gray = read_image(sample_dir / "COVID" / "images" / "COVID-1.png")
    files = {}
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        path = tmp_path / f"{photometric}.dcm"
        path.write_bytes(dicom_bytes(gray, photometric, patient_name="Doe^Jane", patient_id="PID-0042"))
        files[photometric] = path
    mono1, mono2 = (read_xray(files[p]).pixels for p in ("MONOCHROME1", "MONOCHROME2"))
    assert np.abs(mono1.astype(int) - mono2.astype(int)).max() <= 1
    p1, p2 = (loaded.predict_proba([img])[0] for img in (mono1, mono2))
    assert p1 == pytest.approx(p2, abs=0.02)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path), "--model", str(model_dir), "--out", str(out), "--json"]) == 0
    everything = capsys.readouterr().out + (out / "predictions.csv").read_text()
    for identifier in ("Doe", "Jane", "PID-0042"):
        assert identifier not in everything


def test_predict_image_and_report(sample_dir, loaded) -> None:
    gray = read_image(sample_dir / "Normal" / "images" / "Normal-1.png")
    explainer = Explainer(loaded.model)
    pred = predict_image(loaded, gray, explainer, "gradcampp", target="Normal")
    assert pred.p_covid == pytest.approx(loaded.predict_proba([gray])[0], abs=1e-6)
    assert pred.label == loaded.predict_label(pred.p_covid)
    assert pred.heatmap.shape == gray.shape and pred.target == "Normal"
    assert pred.model_input.shape == (64, 64) and pred.model_input.dtype == np.uint8
    report = report_dict(pred, loaded, "ab" * 32, explainer)
    json.dumps(report, allow_nan=False)
    assert report["explanation"]["name"] == "Grad-CAM++" and report["model"]["version"] == loaded.version
    assert report["preprocessing"]["size"] == 64
    plain = predict_image(loaded, gray, None, "none")
    assert plain.heatmap is None and plain.p_covid == pytest.approx(pred.p_covid)
    with pytest.raises(InferenceError):
        predict_image(loaded, gray, None, "gradcam")
    with pytest.raises(InferenceError):
        predict_image(loaded, gray, explainer, "gradcam", target="Pneumonia")


def test_uncertainty_hint_band() -> None:
    assert uncertainty_hint(0.45, 0.5)[1] is True
    text, near = uncertainty_hint(0.95, 0.5)
    assert near is False and "above" in text


def test_lungs_and_markings_shares_in_csv(folder, model_dir, tmp_path, capsys) -> None:
    from cxr_core.lungs.segmenter import MODEL_FILE
    from cxr_core.lungs.segmenter import model_dir as lungs_dir

    if not (lungs_dir() / MODEL_FILE).is_file():
        pytest.skip("no lung segmenter installed (models/lungs)")
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", str(model_dir), "--out", str(out), "--lungs", "--markings"]) == 0
    with open(out / "predictions.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if not r["error"]]
    assert len(rows) == 2
    assert all(0.0 <= float(r["attention_lungs"]) <= 1.0 for r in rows)
