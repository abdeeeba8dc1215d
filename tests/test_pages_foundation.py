"""Home and Dataset pages with and without a dataset (AppTest), and the Dataset page in a real browser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO


@pytest.mark.parametrize("page", ["pages/home.py", "pages/1_Dataset.py"])
def test_pages_without_a_dataset_explain_how_to_get_one(app_env, tmp_path: Path, page: str) -> None:
    app_env(tmp_path / "nowhere")
    at = AppTest.from_file(str(REPO / page), default_timeout=60).run()
    assert not at.exception
    assert any("cxr fetch" in w.value and "CXR_DATA_DIR" in w.value for w in at.warning)


def test_dataset_page_on_a_synthetic_dataset(app_env, tiny_dataset: Path) -> None:
    app_env(tiny_dataset)
    at = AppTest.from_file(str(REPO / "pages/1_Dataset.py"), default_timeout=60).run()
    assert not at.exception
    assert at.metric[0].value == "24"
    assert len(at.get("plotly_chart")) >= 4
    assert any("Cramér's V" in e.value for e in at.error)


def test_home_page_with_a_dataset(app_env, tiny_dataset: Path) -> None:
    app_env(tiny_dataset)
    at = AppTest.from_file(str(REPO / "pages/home.py"), default_timeout=60).run()
    assert not at.exception
    assert at.metric[0].value == "24"
    assert any("No trained models" in m.value for m in at.markdown)


@pytest.mark.browser
@pytest.mark.data
def test_dataset_page_in_chromium_shows_the_class_balance(streamlit_app, browser_page, sample_dir: Path) -> None:
    url = streamlit_app({"CXR_DATA_DIR": str(sample_dir)})
    page = browser_page
    started = time.monotonic()
    page.goto(f"{url}/Dataset")
    page.get_by_text("Class balance").wait_for(timeout=90_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    assert page.locator(".js-plotly-plot").count() >= 3
    assert page.get_by_text("1502", exact=True).first.is_visible()
    print(f"Dataset page with charts in {time.monotonic() - started:.1f} s")
