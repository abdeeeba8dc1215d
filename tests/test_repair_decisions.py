"""Repair as a curation decision: ``cxr repair`` writes into the work dir, the ledger records it, training and the
preprocessing cache read the repaired pixels, and ``cxr restore`` or undo brings the original back."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, run_cli, synthetic_xray, write_dataset
from cxr_core.config import load_config
from cxr_core.curation.curated import curated_index
from cxr_core.curation.ledger import open_ledger
from cxr_core.data.imaging import read_image
from cxr_core.preprocess.cache import SOURCE_KEY, cache_root, cached_name, preprocess_dataset
from cxr_core.preprocess.recipe import PreprocessConfig
from cxr_core.train.pipeline import load_arrays

MARKED = "COVID/images/COVID-1.png"
CLEAN = "Normal/images/Normal-1.png"
RECIPE = PreprocessConfig("none", size=64)


def smooth_film(seed: int) -> np.ndarray:
    """A smooth synthetic 256 px chest film: no markings for the detector to find."""
    return cv2.GaussianBlur(synthetic_xray(np.random.default_rng(seed), 256), (0, 0), 2.0)


def marked_dataset(root: Path, size: int = 128) -> Path:
    """A synthetic dataset whose first COVID film carries an arrow and a caption and first Normal film is smooth."""
    write_dataset(root, n_per_class=6, size=size)
    marked = smooth_film(1)
    cv2.arrowedLine(marked, (60, 200), (120, 130), 255, 3, tipLength=0.3)
    cv2.putText(marked, "DAY 6", (140, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)
    cv2.imwrite(str(root / MARKED), marked)
    cv2.imwrite(str(root / CLEAN), smooth_film(2))
    return root


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """:func:`marked_dataset` configured through CXR_* variables."""
    root = marked_dataset(tmp_path / "data")
    monkeypatch.setenv("CXR_DATA_DIR", str(root))
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXR_REVIEWER", "tester")
    monkeypatch.setenv("CXR_MODELS_DIR", str(REPO / "models"))
    monkeypatch.chdir(tmp_path)
    return root


def rows_of(index, path: str):
    """The index rows of one image, as a one-row frame."""
    return index.frame[index.frame["path"] == path]


def test_repair_is_used_by_training_and_the_cache_and_restore_brings_the_original_back(
    data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    originals = {p: p.read_bytes() for p in data.rglob("*.png")}
    code, out, _ = run_cli(capsys, "repair", MARKED, CLEAN, "--method", "telea", "--json")
    assert code == 0
    result = json.loads(out)
    (entry,) = result["repaired"]
    assert result["skipped"] == [{"path": CLEAN, "reason": "no markings detected"}]
    cfg = load_config()
    repaired_file = Path(entry["repaired_path"])
    assert entry["path"] == MARKED and entry["method"] == "telea" and 0 < entry["mask_fraction"] < 0.2
    assert repaired_file.is_relative_to(cfg.home) and not repaired_file.is_relative_to(data)
    assert {p: p.read_bytes() for p in data.rglob("*.png")} == originals, "originals are never written"
    original, fixed = read_image(data / MARKED), read_image(repaired_file)
    assert fixed.shape == original.shape and fixed.dtype == np.uint8 and not np.array_equal(fixed, original)

    decision = open_ledger(cfg).latest_for(rows_of(curated_index(cfg), MARKED)["sha256"].iloc[0])
    details = json.loads(decision.details)
    assert (decision.decision, decision.reason, details["method"], details["repaired_path"]) == (
        "repair",
        "markings",
        "telea",
        str(repaired_file),
    )
    index = curated_index(cfg)
    assert index.summary()["repaired"] == 1 and bool(rows_of(index, MARKED)["repaired"].iloc[0])
    assert not rows_of(index, CLEAN)["repaired"].iloc[0]
    assert index.pixel_files(rows_of(index, MARKED)) == [str(repaired_file)], "audits and galleries show the repair"
    assert index.pixel_files(rows_of(index, CLEAN)) == [str(data / CLEAN)]
    served = load_arrays(rows_of(index, MARKED), data, RECIPE, cfg=cfg)[0]
    np.testing.assert_array_equal(served, RECIPE.apply(fixed))
    report = preprocess_dataset(cfg, RECIPE, index)
    assert report.failed == []
    from PIL import Image

    with Image.open(cache_root(cfg, RECIPE) / cached_name(MARKED)) as cached:
        assert cached.info[SOURCE_KEY] == rows_of(index, MARKED)["pixels_sha256"].iloc[0]

    code, _, _ = run_cli(capsys, "restore", MARKED)
    assert code == 0
    index = curated_index(cfg)
    assert index.summary()["repaired"] == 0
    np.testing.assert_array_equal(load_arrays(rows_of(index, MARKED), data, RECIPE, cfg=cfg)[0], RECIPE.apply(original))
    ledger = open_ledger(cfg)
    ledger.undo(ledger.history(limit=1)[0].id, reviewer="tester")
    again = curated_index(cfg)
    np.testing.assert_array_equal(load_arrays(rows_of(again, MARKED), data, RECIPE, cfg=cfg)[0], RECIPE.apply(fixed))


def test_a_repair_row_without_usable_details_or_file_falls_back_to_the_original(data: Path) -> None:
    cfg = load_config()
    rows = curated_index(cfg).frame.set_index("path")
    ledger = open_ledger(cfg)
    ledger.record(rows.at[MARKED, "sha256"], MARKED, "repair", "markings", reviewer="t", details="not json")
    gone = json.dumps({"repaired_path": str(cfg.home / "missing.png"), "repaired_sha256": "0" * 64})
    ledger.record(rows.at[CLEAN, "sha256"], CLEAN, "repair", "markings", reviewer="t", details=gone)
    index = curated_index(cfg)
    assert index.summary()["repaired"] == 0 and not index.frame["repaired"].any()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["repair", "COVID/images/nothing.png"], "no such image file"),
        (["repair", MARKED, "--margin", "0.5"], "margin must be between 0 and 0.2"),
        (["repair", MARKED, "--all-flagged"], "--all-flagged takes one dataset folder"),
        (["restore", CLEAN], "neither discarded nor repaired"),
    ],
)
def test_bad_repair_requests_change_nothing(data: Path, capsys, argv: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code != 0 and message in err and out == ""
    assert not load_config().ledger_path.exists() or open_ledger(load_config()).count() == 0


def test_all_flagged_repairs_the_flagged_film_and_skips_it_the_second_time(data: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "repair", str(data), "--all-flagged", "--json")
    assert code == 0
    first = json.loads(out)
    assert MARKED in [r["path"] for r in first["repaired"]]
    assert CLEAN not in [r["path"] for r in first["repaired"]]
    code, out, _ = run_cli(capsys, "repair", str(data), "--all-flagged", "--json")
    second = json.loads(out)
    assert second["repaired"] == [] and {"path": MARKED, "reason": "already repaired"} in second["skipped"]


def image_captions(at) -> list[str]:
    """Captions of every image the page shows."""
    return [c for image in at.get("image") for c in image.captions]


def test_the_curation_panel_shows_original_mask_and_repair_and_repairs_one_film(data: Path) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "pages" / "7_Curation.py"), default_timeout=180)
    at.session_state["reviewer"] = "Ann"
    at.session_state["detail"] = MARKED
    at.run()
    assert not at.exception, at.exception
    captions = image_captions(at)
    assert (
        "Original" in captions and any(c.startswith("Mask (") for c in captions) and "Repaired (biharmonic)" in captions
    )
    at.selectbox(key="repair-method").set_value("telea").run()
    assert "Repaired (telea)" in image_captions(at)
    at.button(key="detail-repair").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value.startswith("repair 1 image(s) with telea")
    cfg = load_config()
    sha = rows_of(curated_index(cfg), MARKED)["sha256"].iloc[0]
    assert open_ledger(cfg).latest_for(sha).decision == "repair"
    assert not at.button(key="detail-restore").disabled
    at.session_state["detail"] = CLEAN
    at.run()
    assert at.button(key="detail-repair").disabled, "a film without markings has nothing to repair"


@pytest.mark.browser
def test_the_browser_repairs_a_flagged_film_and_shows_the_repair(tmp_path: Path, streamlit_app, browser_page) -> None:
    import re

    from playwright.sync_api import Page, expect

    from conftest import settle

    page: Page = browser_page
    root = marked_dataset(tmp_path / "data", size=256)
    home = tmp_path / "home"
    url = streamlit_app({"CXR_DATA_DIR": str(root), "CXR_HOME": str(home), "CXR_MODELS_DIR": str(REPO / "models")})
    page.goto(f"{url}/Curation?reviewer=Tess")
    expect(page.get_by_text(re.compile(r"1\s+images in the queue")).first).to_be_visible(timeout=180_000)
    page.get_by_role("radio", name="View", exact=True).first.click()
    settle(page)
    expect(page.get_by_text("Repair instead of discard")).to_be_visible(timeout=120_000)
    expect(page.get_by_text("Repaired (biharmonic)")).to_be_visible(timeout=120_000)
    page.get_by_role("button", name="Repair", exact=True).click()
    expect(page.get_by_text(re.compile(r"repair 1 image\(s\) with biharmonic"))).to_be_visible(timeout=120_000)
    expect(page.get_by_text(re.compile(r"Tess: repair markings")).first).to_be_visible(timeout=60_000)
    decision = open_ledger(load_config(home=home)).history(limit=1)[0]
    assert (decision.path, decision.decision, decision.reviewer) == (MARKED, "repair", "Tess")
    assert Path(json.loads(decision.details)["repaired_path"]).is_file()
