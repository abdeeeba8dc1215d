"""The shipped demo dataset: the fallback when nothing is configured, its size, manifest, licences and notices."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from conftest import REPO
from cxr_core.cli.parser import main
from cxr_core.config import DEMO_DIR, load_config

ALLOWED = {
    ("hannover", "COVID"): "CC BY 3.0",
    ("nih-cxr14", "Normal"): "unstated in repo; upstream NIH ChestX-ray14: unrestricted use, citation requested",
    ("kermany-pediatric", "Normal"): "unstated in repo; upstream Kermany et al. 2018: CC BY 4.0",
}


@pytest.fixture
def nothing_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No CXR_DATA_DIR, no cxr.toml and no data/ folder: an empty working directory and a private work dir."""
    for var in ("CXR_DATA_DIR", "CXR_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXR_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_demo_is_used_only_when_nothing_else_is_configured(nothing_configured: Path, monkeypatch) -> None:
    cfg = load_config()
    assert cfg.data_dir == DEMO_DIR and cfg.uses_demo
    (nothing_configured / "data").mkdir()
    assert load_config().data_dir == nothing_configured / "data" and not load_config().uses_demo
    (nothing_configured / "data").rmdir()
    (nothing_configured / "cxr.toml").write_text('data_dir = "/srv/xrays"\n')
    assert load_config().data_dir == Path("/srv/xrays")
    (nothing_configured / "cxr.toml").unlink()
    monkeypatch.setenv("CXR_DATA_DIR", str(nothing_configured))
    assert load_config().data_dir == nothing_configured


def test_demo_size_manifest_and_licences() -> None:
    files = [p for p in DEMO_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert sum(p.stat().st_size for p in files) <= 6 * 1024 * 1024
    manifest = pd.read_csv(DEMO_DIR / "manifest.csv", dtype=str, keep_default_na=False)
    assert list(manifest.columns) == [
        "file",
        "label",
        "source",
        "source_repo",
        "original_path",
        "patient_id",
        "view",
        "license",
        "sha256",
    ]
    pngs = sorted(p.relative_to(DEMO_DIR).as_posix() for p in DEMO_DIR.rglob("*.png"))
    assert pngs == sorted(manifest["file"]) and len(pngs) == 100
    for row in manifest.itertuples():
        assert row.file.startswith(f"{row.label}/images/{row.label}-")
        assert ALLOWED[row.source, row.label] == row.license
        assert hashlib.sha256((DEMO_DIR / row.file).read_bytes()).hexdigest() == row.sha256
    assert manifest["patient_id"].is_unique and manifest["sha256"].is_unique
    assert set(manifest["label"].value_counts().index) == {"COVID", "Normal"}
    assert manifest.loc[manifest["label"] == "Normal", "source"].nunique() == 2
    credits = (DEMO_DIR / "SOURCES.md").read_text()
    for needed in (
        "10.6084/m9.figshare.12275009",
        "CC BY 3.0",
        "Wang X.",
        "NIH Clinical Center",
        "10.17632/rscbjbr9sj.2",
        "CC BY 4.0",
        "confounded",
    ):
        assert needed in credits


@pytest.mark.data
def test_the_build_script_rebuilds_the_demo_exactly(sample_dir: Path, tmp_path: Path) -> None:
    import runpy

    build = runpy.run_path(str(DEMO_DIR / "build.py"))["build"]
    build(sample_dir, tmp_path)
    assert (tmp_path / "manifest.csv").read_bytes() == (DEMO_DIR / "manifest.csv").read_bytes()
    assert (tmp_path / "SOURCES.md").read_text() == (DEMO_DIR / "SOURCES.md").read_text()


def test_cli_says_it_uses_the_demo(nothing_configured: Path, capsys) -> None:
    assert main(["index"]) == 0
    out = capsys.readouterr()
    assert out.err.strip() == f"cxr index: using the demo dataset at {DEMO_DIR} (set CXR_DATA_DIR for your own)"
    assert out.out.startswith(f"{DEMO_DIR}: 100 images") and "Cramér's V 1.00" in out.out
    assert main(["index", str(DEMO_DIR)]) == 0 and capsys.readouterr().err == "", "no notice for an explicit folder"


def test_home_page_explains_the_demo_and_its_confounding(nothing_configured: Path) -> None:
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "pages/home.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert any("demo dataset" in i.value and "CXR_DATA_DIR" in i.value for i in at.info)
    lesson = " ".join(m.value for m in at.markdown)
    assert "confounded on purpose" in lesson and "leave-one-source-out" in lesson and "not a flaw" in lesson
    assert at.metric[0].value == "100"
