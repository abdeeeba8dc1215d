"""Lung segmentation failures recorded by ``cxr lungs`` are curation flags: table, summary, queue, CLI and page."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO, write_dataset
from cxr_core.cli.parser import main
from cxr_core.config import Config, load_config
from cxr_core.curation.curated import curated_index
from cxr_core.curation.flags import compute_flags, flagged, review_queue, summarise
from cxr_core.data.imaging import sha256_file
from cxr_core.lungs.cache import describe_lung_flags, lung_flag_score, lung_flags_version, record_flags

PAGE = str(REPO / "pages" / "7_Curation.py")
EMPTY = "COVID/images/COVID-2.png"
ONE_LUNG = "Normal/images/Normal-3.png"
PLAUSIBLE = "Normal/images/Normal-1.png"


def record(cfg: Config, data: Path, rows: dict[str, tuple[str, float]]) -> Path:
    """Write ``lung_flags.csv`` with the writer ``cxr lungs`` uses, for images path -> (flags, area fraction)."""
    frame = pd.DataFrame(
        [
            {
                "sha256": sha256_file(data / path),
                "path": path,
                "flags": flags,
                "area_fraction": area,
                "components": 0 if flags == "empty" else 2,
                "error": "",
            }
            for path, (flags, area) in rows.items()
        ]
    )
    return record_flags(cfg, data.resolve(), frame, "test-segmenter")


@pytest.fixture
def lung_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Config, Path]:
    """A synthetic dataset configured through CXR_* variables with three recorded lung segmentations."""
    data = write_dataset(tmp_path / "data", n_per_class=6, size=96)
    monkeypatch.setenv("CXR_DATA_DIR", str(data))
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXR_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("CXR_WORKERS", "1")
    cfg = load_config()
    record(cfg, data, {EMPTY: ("empty", 0.0), ONE_LUNG: ("area_low;one_lung", 0.05), PLAUSIBLE: ("", 0.31)})
    return cfg, data


def test_flag_table_includes_recorded_lung_flags(lung_env: tuple[Config, Path]) -> None:
    cfg, _ = lung_env
    frame = compute_flags(cfg, curated_index(cfg)).set_index("path")
    assert frame.loc[EMPTY, "lungs"] == 1.0 and frame.loc[EMPTY, "lung_flags"] == "empty"
    assert frame.loc[ONE_LUNG, "lungs"] == 0.9 and frame.loc[ONE_LUNG, "lung_area"] == pytest.approx(0.05)
    assert frame.loc[PLAUSIBLE, "lungs"] == 0.0 and frame.loc[PLAUSIBLE, "lung_area"] == pytest.approx(0.31)
    assert math.isnan(frame.loc["COVID/images/COVID-1.png", "lung_area"])
    assert set(frame.index[flagged(frame, "lungs")]) == {EMPTY, ONE_LUNG}

    summary = summarise(frame.reset_index())
    assert summary["flags"]["lungs"] == 2 and summary["thresholds"]["lungs"] == 0.5
    assert summary["lung_segmentation"] == {"checked": 3, "reasons": {"empty": 1, "area_low": 1, "one_lung": 1}}
    assert summary["flagged_any"] >= 2


def test_review_queue_filters_by_lung_flag(lung_env: tuple[Config, Path]) -> None:
    cfg, _ = lung_env
    frame = compute_flags(cfg, curated_index(cfg))
    queue = review_queue(frame, {}, "lungs", only_flagged=True)
    assert list(queue["path"]) == [EMPTY, ONE_LUNG]
    assert list(review_queue(frame, {}, lung_flags=["one_lung"])["path"]) == [ONE_LUNG]
    assert list(review_queue(frame, {}, lung_flags=["empty", "area_high"])["path"]) == [EMPTY]
    assert review_queue(frame, {}, lung_flags=["uncertain"]).empty


def test_lung_flag_words_and_scores() -> None:
    assert lung_flag_score("") == 0.0
    assert lung_flag_score("uncertain") == 0.6
    assert lung_flag_score("uncertain;empty") == 1.0
    assert lung_flag_score("something_new") == 1.0
    assert describe_lung_flags("one_lung", 0.06) == "only one lung found (one_lung); lung area 6% of the image"
    assert describe_lung_flags("", 0.3) == ""


def test_recording_new_flags_changes_the_version(lung_env: tuple[Config, Path]) -> None:
    cfg, data = lung_env
    before = lung_flags_version(cfg)
    assert before
    record(cfg, data, {"COVID/images/COVID-3.png": ("uncertain", 0.4)})
    assert lung_flags_version(cfg) != before


def test_flags_command_lists_lung_flags_with_reasons(
    lung_env: tuple[Config, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, data = lung_env
    assert main(["flags", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"images", "flagged_any", "flags", "thresholds", "data_dir", "flagged"} <= set(result)
    assert result["flags"]["lungs"] == 2
    assert result["flagged"]["lungs"] == [
        {"path": EMPTY, "score": 1.0, "reason": "empty"},
        {"path": ONE_LUNG, "score": 0.9, "reason": "area_low;one_lung"},
    ]
    assert result["lung_segmentation"]["checked"] == 3
    assert main(["flags", str(data)]) == 0
    text = capsys.readouterr().out
    assert "(area_low;one_lung)" in text and "lung segmentation recorded for 3 of 12 images" in text


def tiles(at: AppTest) -> list:
    """The action control of every thumbnail tile."""
    return [g for g in at.button_group if g.key and g.key.startswith("act-")]


def test_curation_page_filters_and_explains_lung_flags(lung_env: tuple[Config, Path]) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["reviewer"] = "Ann"
    at.run()
    assert not at.exception
    assert "lungs" in at.selectbox(key="sort-by").options
    assert any("Lung segmentation recorded for 3 of 12 images" in c.value for c in at.sidebar.caption)

    at.selectbox(key="sort-by").set_value("lungs")
    at.run()
    assert "**2** images in the queue" in at.markdown[0].value
    assert len(tiles(at)) == 2

    lung_filter = at.multiselect(key="f-lungs")
    assert lung_filter.options == [describe_lung_flags(r) for r in ("area_low", "empty", "one_lung")]
    lung_filter.select("one_lung")
    at.run()
    assert "**1** images in the queue" in at.markdown[0].value
    tiles(at)[0].set_value("View")
    at.run()
    assert not at.exception
    assert any(s.value == f"Details: {ONE_LUNG}" for s in at.subheader)
    warning = at.warning[0].value
    assert warning.startswith("Lung segmentation: lung area implausibly small (area_low); only one lung found")
    assert "lung area 5% of the image" in warning
    scores = at.dataframe[0].value.set_index("flag")
    assert scores.loc["lungs", "score"] == 0.9 and bool(scores.loc["lungs", "flagged"])


def test_curation_page_says_when_lungs_were_not_segmented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_dataset(tmp_path / "data", n_per_class=3, size=96)
    monkeypatch.setenv("CXR_DATA_DIR", str(data))
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["reviewer"] = "Ann"
    at.run()
    assert any("Lung segmentation recorded for 0 of 6 images" in c.value for c in at.sidebar.caption)
    at.checkbox(key="only-flagged").uncheck()
    at.run()
    tiles(at)[0].set_value("View")
    at.run()
    assert any("Lung segmentation not recorded yet" in c.value for c in at.caption)
