"""Curation page: AppTest for the widgets and decisions, and a Chromium run of discard, reload, Dataset count, restore."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import settle, write_dataset
from cxr_core.config import load_config
from cxr_core.curation.ledger import open_ledger

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "7_Curation.py")


@pytest.fixture
def page_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 60-image synthetic dataset (two pages of thumbnails) configured through CXR_* variables."""
    data = write_dataset(tmp_path / "data", n_per_class=30, size=96)
    monkeypatch.setenv("CXR_DATA_DIR", str(data))
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXR_MODELS_DIR", str(tmp_path / "models"))
    return data


def buttons(at: AppTest, prefix: str) -> list:
    """Buttons whose key starts with ``prefix``."""
    return [b for b in at.button if b.key and b.key.startswith(prefix)]


def tiles(at: AppTest) -> list:
    """The action control of every thumbnail tile."""
    return [g for g in at.button_group if g.key and g.key.startswith("act-")]


def test_page_asks_the_reviewer_then_records_decisions(page_env: Path) -> None:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception
    assert at.text_input(key="reviewer-input") is not None
    assert not tiles(at)
    at.text_input(key="reviewer-input").input("Ann")
    at.button[0].click()
    at.run()
    assert at.session_state["reviewer"] == "Ann"
    at.checkbox(key="only-flagged").uncheck()
    at.run()
    assert len(tiles(at)) == 48
    assert "**60** images in the queue" in at.markdown[0].value

    tiles(at)[0].set_value("Discard")
    at.run()
    assert not at.exception
    assert at.success[0].value.startswith("discard 1 image(s)")
    assert "**59** images in the queue" in at.markdown[0].value
    ledger = open_ledger(load_config())
    (row,) = ledger.history()
    assert (row.decision, row.reason, row.reviewer) == ("discard", "markings", "Ann")

    tiles(at)[0].set_value("View")
    at.run()
    assert any(s.value.startswith("Details:") for s in at.subheader)
    buttons(at, "undo-")[0].click()
    at.run()
    assert ledger.latest()[row.sha256].decision == "restore"

    at.number_input(key="page-no").set_value(2)
    at.run()
    assert len(tiles(at)) == 12
    at.button(key="select-page").click()
    at.run()
    at.button(key="bulk-keep").click()
    at.run()
    assert at.success[0].value.startswith("keep 12 image(s)")
    assert ledger.count() == 14
    assert at.number_input(key="page-no").value == 1
    assert len(tiles(at)) == 48 and "**48** images in the queue" in at.markdown[0].value


@pytest.mark.browser
def test_discard_in_the_browser_persists_and_is_counted_then_restored(
    tmp_path: Path, streamlit_app: Callable[..., str], browser_page: object
) -> None:
    from playwright.sync_api import Page, expect

    page: Page = browser_page  # type: ignore[assignment]
    data = write_dataset(tmp_path / "data", n_per_class=6, size=96)
    url = streamlit_app(
        {"CXR_DATA_DIR": str(data), "CXR_HOME": str(tmp_path / "home"), "CXR_MODELS_DIR": str(tmp_path / "models")}
    )

    page.goto(f"{url}/Dataset")
    expect(page.get_by_text("12 images (0 excluded by curation)")).to_be_visible(timeout=60_000)

    page.goto(f"{url}/Curation")
    page.get_by_label("Your name").fill("Tess")
    page.get_by_role("button", name="Start reviewing").click()
    expect(page.get_by_text("Only flagged")).to_be_visible(timeout=180_000)
    page.get_by_text("Only flagged").click()
    settle(page)
    expect(page.get_by_text(re.compile(r"12\s+images in the queue")).first).to_be_visible(timeout=60_000)
    page.get_by_role("radio", name="Discard", exact=True).first.click()
    expect(page.get_by_text("discard 1 image(s)")).to_be_visible(timeout=60_000)

    page.reload()
    expect(page.get_by_text("1 discarded in total")).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile(r"Tess · discard"))).to_be_visible(timeout=60_000)

    page.goto(f"{url}/Dataset")
    expect(page.get_by_text("11 images (1 excluded by curation)")).to_be_visible(timeout=60_000)

    page.goto(f"{url}/Curation?reviewer=Tess")
    page.get_by_role("button", name="Undo").first.click(timeout=60_000)
    expect(page.get_by_text(re.compile(r"undid #1: .* is now restore"))).to_be_visible(timeout=60_000)
    page.goto(f"{url}/Dataset")
    expect(page.get_by_text("12 images (0 excluded by curation)")).to_be_visible(timeout=60_000)


@pytest.mark.browser
def test_paging_shows_the_next_48_thumbnails(
    tmp_path: Path, streamlit_app: Callable[..., str], browser_page: object
) -> None:
    from playwright.sync_api import Page, expect

    page: Page = browser_page  # type: ignore[assignment]
    data = write_dataset(tmp_path / "data", n_per_class=50, size=96)
    url = streamlit_app({"CXR_DATA_DIR": str(data), "CXR_HOME": str(tmp_path / "home")})
    page.goto(f"{url}/Curation?reviewer=Tess")
    expect(page.get_by_text("Only flagged")).to_be_visible(timeout=180_000)
    page.get_by_text("Only flagged").click()
    tiles = page.get_by_role("radio", name="Discard", exact=True)
    expect(tiles).to_have_count(48, timeout=120_000)
    first = page.get_by_text(re.compile(r"· undecided$")).first.inner_text()
    settle(page)  # a rerun still on its way can leave a stale second pager beside the new one
    pager = page.get_by_label("Page", exact=True)
    expect(pager).to_have_count(1, timeout=60_000)
    start = time.perf_counter()
    pager.fill("2")
    page.keyboard.press("Enter")
    expect(page.get_by_text(first, exact=True)).to_have_count(0, timeout=60_000)
    expect(tiles).to_have_count(48, timeout=60_000)
    page.wait_for_function(
        "() => [...document.images].filter(i => i.complete && i.naturalWidth > 0).length >= 48", timeout=60_000
    )
    elapsed = time.perf_counter() - start
    print(f"page 2 (48 cached thumbnails) rendered in {elapsed:.2f} s (measured, not asserted)")


def test_page_without_a_dataset_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    assert "No dataset found" in at.warning[0].value
    assert not (tmp_path / "home" / "ledger.sqlite").exists()
