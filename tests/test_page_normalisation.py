"""The Normalisation page: AppTest on a synthetic dataset, and Chromium on the real sample."""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO, synthetic_xray
from cxr_core.imaging import read_image
from cxr_core.quality import mean_brightness

PAGE = str(REPO / "pages" / "2_Normalisation.py")


@pytest.fixture
def page_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Point the page at a data dir of the test's choosing with a private work dir."""

    def set_env(data_dir: Path) -> None:
        monkeypatch.setenv("CXR_DATA_DIR", str(data_dir))
        monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("CXR_MODELS_DIR", str(tmp_path / "models"))

    return set_env


def titles(at: AppTest) -> list[str]:
    """The bold panel titles (original and one per method)."""
    return [m.value.strip("*") for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]


def image_captions(at: AppTest) -> list[str]:
    """Captions of every ``st.image`` in display order."""
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


@pytest.fixture
def app(page_env, tiny_dataset: Path) -> AppTest:
    """The page, run once on the synthetic dataset."""
    page_env(tiny_dataset)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    return at


def test_without_a_dataset_the_page_explains_and_offers_upload(page_env, tmp_path: Path) -> None:
    page_env(tmp_path / "nowhere")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("cxr fetch" in w.value and "CXR_DATA_DIR" in w.value for w in at.warning)
    assert at.radio(key="source").options == ["Upload"]
    at.segmented_control(key="mode").set_value("Grid").run()
    assert not at.exception and any("Grid mode needs a dataset" in w.value for w in at.warning)


def test_an_uploaded_image_is_read_with_the_shared_reader(page_env, tmp_path: Path) -> None:
    page_env(tmp_path / "nowhere")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    ok, png = cv2.imencode(".png", synthetic_xray(np.random.default_rng(5), size=80))
    at.file_uploader(key="upload").set_value(("mine.png", png.tobytes(), "image/png")).run()
    assert not at.exception
    assert titles(at)[0] == "original" and len(at.get("image")) == 3
    assert any(c.value.startswith("mine.png · 80x80 px") for c in at.caption)
    at.file_uploader(key="upload").set_value(("broken.png", b"not an image", "image/png")).run()
    assert not at.exception and len(at.get("image")) == 0
    assert [e.value for e in at.error] == ["broken.png: not a readable image (unknown or unsupported format)"]


def test_default_view_compares_the_original_with_two_methods(app: AppTest) -> None:
    assert titles(app) == ["original", "clahe(clip_limit=2.0, tile_grid=8)", "local_rank_eq(radius=70)"]
    assert len(app.get("image")) == 3
    assert len(app.get("plotly_chart")) == 3, "one histogram per panel"
    table = app.dataframe[0].value
    assert list(table.index) == titles(app) and {"rms_contrast", "entropy", "sharpness", "ms"} <= set(table.columns)
    assert table.loc["local_rank_eq(radius=70)", "rms_contrast"] > table.loc["original", "rms_contrast"]
    assert sum(c.startswith("computed in") for c in image_captions(app)) == 2


def test_switching_methods_and_parameters_updates_the_panels(app: AppTest) -> None:
    app.multiselect(key="methods").set_value(["gamma", "complement", "bcet"]).run()
    assert not app.exception
    assert titles(app) == ["original", "gamma(gamma=0.8)", "complement", "bcet(low=0, high=255, mean=110)"]
    assert len(app.get("image")) == 4
    app.number_input(key="param-gamma-gamma").set_value(0.5).run()
    assert "gamma(gamma=0.5)" in titles(app)
    table = app.dataframe[0].value
    assert table.loc["gamma(gamma=0.5)", "mean_brightness"] > table.loc["original", "mean_brightness"]
    app.button(key="reset-gamma").click().run()
    assert "gamma(gamma=0.8)" in titles(app) and not app.exception
    app.toggle(key="show-diff").set_value(True).run()
    assert len(app.get("plotly_chart")) == 4 + 3, "a difference map per method"


def test_choosing_an_image_filters_and_shortcuts(app: AppTest, tiny_dataset: Path) -> None:
    path = "Normal/images/Normal-5.png"
    app.selectbox(key="image_path").set_value(path).run()
    assert any(c.value.startswith(f"{path} · Normal") for c in app.caption)
    app.selectbox(key="filter-label").set_value("COVID").run()
    assert all(p.startswith("COVID/") for p in app.selectbox(key="image_path").options)
    app.button(key="pick-darkest").click().run()
    assert not app.exception
    covid = sorted((tiny_dataset / "COVID/images").glob("*.png"))
    darkest = min(covid, key=lambda p: mean_brightness(read_image(p)))
    assert app.selectbox(key="image_path").value == darkest.relative_to(tiny_dataset).as_posix()
    app.button(key="pick-lowest").click().run()
    assert not app.exception and any("lowest RMS contrast" in c.value for c in app.caption)
    app.selectbox(key="size").set_value(224).run()
    assert any("224x224 px" in c.value for c in app.caption)


def test_grid_mode_shows_before_and_after_rows(app: AppTest) -> None:
    app.segmented_control(key="mode").set_value("Grid").run()
    app.selectbox(key="grid-method").set_value("percentile_stretch").run()
    app.slider(key="grid-count").set_value(4).run()
    assert not app.exception
    images = app.get("image")
    assert len(images) == 8
    rms = [(c.split(" · ")[0], float(re.search(r"RMS contrast ([0-9.]+)", c)[1])) for c in image_captions(app)]
    before = [v for who, v in rms if who.endswith(".png")]
    after = [v for who, v in rms if who == "percentile_stretch"]
    assert len(before) == len(after) == 4 and np.mean(after) > np.mean(before)


@pytest.mark.browser
@pytest.mark.data
def test_page_in_chromium_compares_two_chosen_methods(streamlit_app, browser_page, sample_dir: Path) -> None:
    url = streamlit_app({"CXR_DATA_DIR": str(sample_dir)})
    page = browser_page
    started = time.monotonic()
    page.goto(f"{url}/Normalisation")
    page.get_by_text("computed in").first.wait_for(timeout=180_000)
    print(f"Normalisation page with results in {time.monotonic() - started:.1f} s")
    methods = page.locator('[data-testid="stMultiSelect"]')
    methods.get_by_role("button", name="Clear all").click()
    for method in ("gamma", "hist_eq"):
        methods.get_by_role("combobox").fill(method)
        page.get_by_role("option", name=method, exact=True).click()
    page.keyboard.press("Escape")
    panel_titles = page.locator("strong")
    panel_titles.get_by_text("gamma(gamma=0.8)", exact=True).wait_for(timeout=60_000)
    panel_titles.get_by_text("hist_eq", exact=True).wait_for(timeout=60_000)
    images = page.locator('[data-testid="stImage"] img')
    images.nth(2).wait_for(timeout=60_000)
    assert images.count() == 3, "the original and the two chosen methods"
    assert all(images.nth(i).evaluate("img => img.complete && img.naturalWidth") == 299 for i in range(3))
    assert panel_titles.get_by_text("local_rank_eq(radius=70)", exact=True).count() == 0
