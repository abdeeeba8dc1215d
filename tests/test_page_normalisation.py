"""The Normalisation page: AppTest on a synthetic dataset, and Chromium on the real sample."""

from __future__ import annotations

import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from conftest import REPO, synthetic_xray
from cxr_core.data.imaging import read_image
from cxr_core.explain.attention import AttentionError, outline_gray
from cxr_core.lungs.segmenter import lung_mask
from cxr_core.preprocess.quality import mean_brightness
from cxr_core.preprocess.recipe import PreprocessConfig

PAGE = str(REPO / "pages" / "2_Normalisation.py")


def titles(at: AppTest) -> list[str]:
    """The bold panel titles (original and one per method)."""
    return [m.value.strip("*") for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]


def image_captions(at: AppTest) -> list[str]:
    """Captions of every ``st.image`` in display order."""
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


@pytest.fixture
def app(app_env, tiny_dataset: Path) -> AppTest:
    """The page, run once on the synthetic dataset."""
    app_env(tiny_dataset)
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    return at


def test_without_a_dataset_the_page_explains_and_offers_upload(app_env, tmp_path: Path) -> None:
    app_env(tmp_path / "nowhere")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("cxr fetch" in w.value and "CXR_DATA_DIR" in w.value for w in at.warning)
    assert at.radio(key="source").options == ["Upload"]
    at.segmented_control(key="mode").set_value("Grid").run()
    assert not at.exception and any("Grid mode needs a dataset" in w.value for w in at.warning)


def test_an_uploaded_image_is_read_with_the_shared_reader(app_env, tmp_path: Path) -> None:
    app_env(tmp_path / "nowhere")
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


class MediaRecorder:
    """Keeps every PNG the page hands to Streamlit's media storage, decoded, in display order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Wrap ``MemoryMediaFileStorage.load_and_get_id`` to record its data."""
        self.images: list[np.ndarray] = []
        original = MemoryMediaFileStorage.load_and_get_id

        def record(storage, path_or_data, mimetype, kind, filename=None):
            if isinstance(path_or_data, bytes) and mimetype == "image/png":
                self.images.append(cv2.imdecode(np.frombuffer(path_or_data, np.uint8), cv2.IMREAD_UNCHANGED))
            return original(storage, path_or_data, mimetype, kind, filename)

        monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)

    def run(self, action) -> list[np.ndarray]:
        """Run ``action`` and return the images that run displayed."""
        self.images.clear()
        action.run()
        return list(self.images)


def test_outline_gray_draws_the_mask_contour_in_green() -> None:
    gray = np.full((40, 50), 100, np.uint8)
    mask = np.zeros_like(gray, bool)
    mask[10:30, 10:40] = True
    rgb = outline_gray(gray, mask)
    assert rgb.shape == (40, 50, 3)
    assert tuple(rgb[10, 20]) == (0, 255, 0) and tuple(rgb[20, 25]) == (100, 100, 100) == tuple(rgb[0, 0])
    with pytest.raises(AttentionError):
        outline_gray(gray, mask[:, :10])


@pytest.mark.data
def test_lung_mask_roi_blanks_outside_the_lungs_and_outlines_them(
    app_env, tmp_path: Path, sample_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_env(tmp_path / "nowhere")
    recorder = MediaRecorder(monkeypatch)
    sample = sorted((sample_dir / "COVID" / "images").glob("*.png"))[0]
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.selectbox(key="size").set_value(224)
    at.file_uploader(key="upload").set_value((sample.name, sample.read_bytes(), "image/png")).run()
    before = recorder.run(at.multiselect(key="methods").set_value(["clahe", "gamma"]))
    assert not at.exception and len(before) == 3 and all(img.ndim == 2 for img in before)
    assert all(img[0].any() for img in before), "without a region of interest the top row has content"

    shown = recorder.run(at.selectbox(key="roi").set_value("lung_mask"))
    assert not at.exception and len(shown) == 3
    gray = read_image(sample)
    mask = lung_mask(gray)
    recipes = [("none", {}), ("clahe", {"clip_limit": 2.0, "tile_grid": 8}), ("gamma", {"gamma": 0.8})]
    for (method, params), img in zip(recipes, shown):
        expected, lungs = PreprocessConfig(method, params, size=224, roi="lung_mask").apply_with_lungs(gray, mask)
        assert np.array_equal(img, expected), f"{method} differs from what training computes"
        assert not img[0].any() and not img[-1].any(), "border rows are blanked"
        assert img[lungs].mean() > 20, "the lungs keep their content"
    assert any("region of interest: lung mask" in c.value for c in at.caption)
    assert "detected lungs outlined in green" not in image_captions(at)

    outlined = recorder.run(at.toggle(key="show-lungs").set_value(True))
    assert not at.exception and outlined[0].ndim == 3, "the original is shown in colour with the outline"
    green = (outlined[0][..., 1] == 255) & (outlined[0][..., 0] == 0) & (outlined[0][..., 2] == 0)  # BGR as decoded
    assert 0 < green.mean() < 0.2 and np.array_equal(outlined[1], shown[1])
    assert image_captions(at)[0] == "detected lungs outlined in green"
    whole = recorder.run(at.selectbox(key="roi").set_value("none"))
    assert not at.exception and whole[0].shape == (224, 224, 3) and np.array_equal(whole[1], before[1])


def test_without_a_lung_segmenter_the_roi_control_explains_why_it_is_disabled(
    app_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_env(tmp_path / "nowhere")
    empty = tmp_path / "no-lungs"
    empty.mkdir()
    monkeypatch.setenv("CXR_LUNGS_MODEL", str(empty))
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    ok, png = cv2.imencode(".png", synthetic_xray(np.random.default_rng(7), size=80))
    at.file_uploader(key="upload").set_value(("mine.png", png.tobytes(), "image/png")).run()
    assert not at.exception
    assert at.selectbox(key="roi").disabled and at.toggle(key="show-lungs").disabled
    message = [i.value for i in at.info if "no lung segmenter" in i.value]
    assert len(message) == 1 and str(empty / "model.keras") in message[0] and "CXR_LUNGS_MODEL" in message[0]
    assert titles(at)[0] == "original" and len(at.get("image")) == 3


def test_lung_crop_and_outline_on_a_dataset_image(
    app: AppTest, monkeypatch: pytest.MonkeyPatch, tiny_dataset: Path
) -> None:
    recorder = MediaRecorder(monkeypatch)
    outlined = recorder.run(app.toggle(key="show-lungs").set_value(True))
    assert not app.exception and outlined[0].ndim == 3 and all(img.ndim == 2 for img in outlined[1:])
    gray = read_image(tiny_dataset / app.selectbox(key="image_path").value)
    assert outlined[0].shape[:2] == gray.shape, "at the original size the outline is drawn on the full image"
    cropped = recorder.run(app.selectbox(key="roi").set_value("lung_crop"))
    assert not app.exception and any("at a training size" in c.value for c in app.caption)
    expected, _ = PreprocessConfig("clahe", size=224, roi="lung_crop").apply_with_lungs(gray, lung_mask(gray))
    assert np.array_equal(cropped[1], expected)
