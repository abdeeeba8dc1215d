"""The chest X-ray gate: DICOM header refusals, the shipped gate net on negatives and transformed films, and
``cxr predict`` carrying ``gate`` and ``familiarity`` with "not assessed" for refused images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import SHIPPED_GATE_DIR, dicom_bytes
from cxr_core.cli.parser import main
from cxr_core.data.imaging import read_image, read_xray
from cxr_core.gate import assess, header_reasons, load_gate_net, negatives
from cxr_core.gate.assess import KIND_REASONS, NO_LUNGS
from tiny_models import make_model_dir


@pytest.fixture(scope="module")
def net():
    """The shipped gate net."""
    return load_gate_net(SHIPPED_GATE_DIR)


@pytest.fixture
def gate_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Turn the shipped gate on for code that finds it through the environment (the suite switches it off)."""
    monkeypatch.setenv("CXR_GATE_MODEL", str(SHIPPED_GATE_DIR))


def rendered_text() -> np.ndarray:
    """A page of black text on white."""
    page = np.full((300, 240), 245, np.uint8)
    for y in range(30, 300, 28):
        cv2.putText(page, "Lorem ipsum dolor sit 42", (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 20, 1, cv2.LINE_AA)
    return page


SYNTHETIC_NEGATIVES = {
    "uniform noise": lambda: np.random.default_rng(3).integers(0, 256, (256, 256)).astype(np.uint8),
    "blank grey": lambda: np.full((256, 256), 128, np.uint8),
    "gradient": lambda: np.tile(np.linspace(0, 255, 256), (256, 1)).astype(np.uint8),
    "rendered text": rendered_text,
}


@pytest.mark.parametrize("name", list(SYNTHETIC_NEGATIVES))
def test_synthetic_negatives_are_refused(net, name) -> None:
    verdict = assess(SYNTHETIC_NEGATIVES[name](), net)
    assert not verdict.chest_xray and verdict.reasons and 0.0 <= verdict.score < net.threshold


def test_a_sample_xray_passes_and_its_inverted_and_rotated_copies_are_named(net, sample_dir) -> None:
    xray = read_image(sample_dir / "Normal" / "images" / "Normal-1.png")
    good = assess(xray, net)
    assert good.chest_xray and good.score >= net.threshold and good.reasons == ()
    assert good.to_dict() == {"chest_xray": True, "score": round(good.score, 4), "reasons": []}
    for changed, kind in (
        (255 - xray, "inverted"),
        (np.rot90(xray, 1), "rot90"),
        (np.rot90(xray, 2), "rot180"),
        (np.rot90(xray, 3), "rot270"),
    ):
        verdict = assess(np.ascontiguousarray(changed), net)
        assert not verdict.chest_xray and verdict.reasons == (KIND_REASONS[kind],), kind
    assert "inverted" in KIND_REASONS["inverted"] and "rotated" in KIND_REASONS["rot90"]


def test_no_lung_fields_refuses_an_image_the_net_accepts(net, sample_dir) -> None:
    xray = read_image(sample_dir / "Normal" / "images" / "Normal-1.png")
    verdict = assess(xray, net, lungs_empty=True)
    assert not verdict.chest_xray and verdict.reasons == (NO_LUNGS,)


@pytest.mark.parametrize(
    "tags, words",
    [
        ({"Modality": "MR"}, "MR image"),
        ({"Modality": "CT"}, "CT slice"),
        ({"Modality": "US"}, "ultrasound"),
        ({"Modality": "DX", "ViewPosition": "LL"}, "Lateral view"),
        ({"Modality": "CR", "ViewPosition": "LATERAL"}, "Lateral"),
        ({"Modality": "DX", "BodyPartExamined": "HAND"}, "body part HAND"),
    ],
)
def test_dicom_header_refusals_need_no_model(tags, words) -> None:
    xray = read_xray(dicom_bytes(np.full((96, 96), 100, np.uint8), **tags))
    verdict = assess(xray.pixels, None, dicom_tags=xray.dicom_tags)
    assert not verdict.chest_xray and verdict.score == 0.0 and words in verdict.message


def test_frontal_radiograph_headers_pass_the_header_check() -> None:
    for tags in (
        {"Modality": "DX", "ViewPosition": "PA"},
        {"Modality": "CR", "ViewPosition": "AP", "BodyPartExamined": "CHEST"},
        {"Modality": "DX"},
        {},
    ):
        assert header_reasons(tags) == [], tags


def test_procedural_negatives_are_uint8_images_of_every_family() -> None:
    rng = np.random.default_rng(0)
    xray = rng.integers(0, 256, (128, 128)).astype(np.uint8)
    for name, make in negatives.GENERATORS.items():
        image = make(rng)
        assert image.dtype == np.uint8 and image.ndim == 2 and min(image.shape) >= 64, name
    for name, make in negatives.XRAY_GENERATORS.items():
        assert make(rng, xray).dtype == np.uint8, name


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny trained model directory."""
    return make_model_dir(tmp_path_factory.mktemp("models") / "tiny")


def test_predict_json_gates_every_prediction(gate_on, model_dir, sample_dir, tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_xray.png"), read_image(sample_dir / "COVID" / "images" / "COVID-1.png"))
    cv2.imwrite(str(folder / "b_noise.png"), SYNTHETIC_NEGATIVES["uniform noise"]())
    (folder / "c_mr.dcm").write_bytes(
        dicom_bytes(read_image(sample_dir / "COVID" / "images" / "COVID-1.png"), Modality="MR")
    )
    out = tmp_path / "out"
    assert main(["predict", str(folder), "--model", str(model_dir), "--json", "--out", str(out)]) == 0
    payload = json.loads(capsys.readouterr().out)
    by_name = {Path(p["path"]).name: p for p in payload["predictions"]}
    for report in by_name.values():
        assert set(report["gate"]) == {"chest_xray", "score", "reasons"} and "familiarity" in report
        assert report["decision"] in {"COVID", "Normal", "not assessed"}
    xray = by_name["a_xray.png"]
    assert xray["gate"]["chest_xray"] and xray["decision"] in {"COVID", "Normal"} and 0 <= xray["p_covid"] <= 1
    for name in ("b_noise.png", "c_mr.dcm"):
        refused = by_name[name]
        assert (
            refused["decision"] == "not assessed"
            and refused["p_covid"] is None
            and refused["certainty"] == "not assessed"
        )
        assert refused["gate"]["reasons"] and refused["attention_shares"] is None
    assert "MR image" in by_name["c_mr.dcm"]["gate"]["reasons"][0]
    with open(out / "predictions.csv", newline="") as handle:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    assert {"gate", "gate_reasons", "familiarity"} <= set(next(iter(rows.values())))
    assert (
        rows["b_noise.png"]["gate"] == "fail"
        and rows["b_noise.png"]["p_covid"] == ""
        and rows["b_noise.png"]["gate_reasons"]
    )
    assert rows["a_xray.png"]["gate"] == "pass" and not list(out.glob("b_noise*_overlay.png"))


def test_predict_text_output_names_the_refusal(gate_on, model_dir, tmp_path, capsys) -> None:
    image = tmp_path / "blank.png"
    cv2.imwrite(str(image), SYNTHETIC_NEGATIVES["blank grey"]())
    assert main(["predict", str(image), "--model", str(model_dir)]) == 0
    captured = capsys.readouterr()
    assert "not assessed: This does not look like a frontal chest X-ray" in captured.out
    assert "0 predicted, 1 not assessed" in captured.err
