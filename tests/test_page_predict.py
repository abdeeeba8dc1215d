"""Predict page: AppTest for uploads (good, DICOM, each kind of bad file) and a Playwright run in Chromium."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import dicom_bytes
from cxr_core.data.imaging import read_image
from tiny_models import make_model_dir

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "3_Predict.py")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry folder holding a tiny trained ``default`` model."""
    root = tmp_path_factory.mktemp("registry")
    make_model_dir(root / "default")
    return root


def open_page(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str):
    """The Predict page under AppTest with a registry, no dataset, caches cleared and extra environment ``env``."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    for key, value in {
        "CXR_MODELS_DIR": str(models_dir),
        "CXR_HOME": str(tmp_path / "home"),
        "CXR_DATA_DIR": str(tmp_path / "no-data"),
        **env,
    }.items():
        monkeypatch.setenv(key, value)
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def app(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The Predict page under AppTest with the tiny registry and no dataset; caches cleared first."""
    return open_page(models_dir, tmp_path, monkeypatch)


def png(gray: np.ndarray) -> bytes:
    """PNG bytes of a grayscale image."""
    return cv2.imencode(".png", gray)[1].tobytes()


def upload(at, name: str, data: bytes, mime: str = "image/png"):
    """Upload one file and rerun the page."""
    at.file_uploader[0].set_value((name, data, mime))
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at) -> str:
    """Every markdown, caption, metric and alert text on the page."""
    parts = [
        e.value for kind in ("markdown", "caption", "error", "warning", "success", "info") for e in getattr(at, kind)
    ]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(str(p) for p in parts)


def test_upload_shows_probability_decision_overlay_and_downloads(app, sample_dir) -> None:
    gray = read_image(sample_dir / "COVID" / "images" / "COVID-1.png")
    at = upload(app, "chest.png", png(gray))
    labels = {m.label: m.value for m in at.metric}
    assert any(label.startswith("P(COVID)") and value.endswith("%") for label, value in labels.items())
    assert any(
        label.startswith("Decision at threshold") and value in {"COVID", "Normal"} for label, value in labels.items()
    )
    assert len(at.get("imgs")) >= 1 or len(at.image) >= 1
    assert [b.proto.label for b in at.get("download_button")] == ["Download overlay PNG", "Download JSON report"]
    assert at.slider[0].label == "Heatmap opacity"
    at.slider[0].set_value(0.8).run()
    assert not at.exception


def test_dicom_upload_masks_identifiers(app, sample_dir) -> None:
    gray = read_image(sample_dir / "Normal" / "images" / "Normal-1.png")
    for photometric in ("MONOCHROME1", "MONOCHROME2"):
        at = upload(app, f"{photometric}.dcm", dicom_bytes(gray, photometric), "application/dicom")
        assert not at.error
        assert any(m.label.startswith("P(COVID)") for m in at.metric)
        page = texts(at) + json.dumps(
            [t.value.to_dict() if hasattr(t.value, "to_dict") else str(t.value) for t in at.table]
        )
        assert "Doe" not in page and "PID-0042" not in page
        assert "***" in page


def _dicom_without_pixels() -> bytes:
    """A DICOM file with a header but no PixelData."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.Modality = meta, "DX"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _truncated_png() -> bytes:
    """The first 600 bytes of a real PNG X-ray."""
    from conftest import SAMPLE_DIR

    return png(read_image(SAMPLE_DIR / "COVID" / "images" / "COVID-1.png"))[:600]


BAD_UPLOADS = {
    "text renamed to png": ("notes.png", lambda: b"this is not an image\n" * 20, "not a readable image"),
    "truncated png": ("cut.png", _truncated_png, "corrupt or truncated"),
    "empty file": ("empty.png", lambda: b"", "file is empty"),
    "too small": ("tiny.png", lambda: png(np.zeros((32, 32), np.uint8)), "smaller than the minimum"),
    "too large": ("huge.png", lambda: png(np.zeros((7200, 7200), np.uint8)), "over the limit"),
    "dicom without pixels": ("nopix.dcm", _dicom_without_pixels, "no pixel data"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_each_bad_upload_gives_its_message_and_the_page_keeps_working(app, sample_dir, case: str) -> None:
    name, make, message = BAD_UPLOADS[case]
    at = upload(app, name, make())
    assert at.error and message in at.error[0].value, [e.value for e in at.error]
    assert not at.metric
    good = png(read_image(sample_dir / "Normal" / "images" / "Normal-1.png"))
    at = upload(at, "good.png", good)
    assert not at.error and any(m.label.startswith("P(COVID)") for m in at.metric)


def test_pick_from_dataset_and_random_test_image(models_dir, tiny_dataset, tmp_path, monkeypatch) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CXR_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CXR_DATA_DIR", str(tiny_dataset))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    at.radio[0].set_value("Pick from the dataset").run()
    at.selectbox(key="predict_filter_label").set_value("Normal").run()
    assert not at.exception, at.exception
    assert any("labelled Normal" in c.value for c in at.caption)
    assert any(m.label.startswith("P(COVID)") for m in at.metric)
    at.radio[0].set_value("Random test image").run()
    assert not at.exception, at.exception
    assert any("split test" in c.value for c in at.caption)
    assert any(m.label.startswith("P(COVID)") for m in at.metric)
    at.button[0].click().run()
    assert not at.exception and any(m.label.startswith("P(COVID)") for m in at.metric)


def test_a_repaired_dataset_image_is_predicted_from_its_repair(models_dir, tiny_dataset, tmp_path, monkeypatch) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from cxr_core.config import load_config
    from cxr_core.curation.curated import curated_index
    from cxr_core.curation.ledger import open_ledger
    from cxr_core.data.imaging import sha256_bytes

    for key, value in {
        "CXR_MODELS_DIR": models_dir,
        "CXR_HOME": tmp_path / "home",
        "CXR_DATA_DIR": tiny_dataset,
    }.items():
        monkeypatch.setenv(key, str(value))
    cfg = load_config()
    row = curated_index(cfg).images().sort_values("path").iloc[0]
    repaired = 255 - read_image(tiny_dataset / row["path"])
    data = png(repaired)
    target = tmp_path / "home" / "cache" / "repaired" / f"{row['sha256']}-test.png"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)
    details = json.dumps({"repaired_path": str(target), "repaired_sha256": sha256_bytes(data), "method": "telea"})
    open_ledger(cfg).record(row["sha256"], row["path"], "repair", "markings", reviewer="t", details=details)
    st.cache_resource.clear()
    st.cache_data.clear()
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    at.radio[0].set_value("Pick from the dataset").run()
    at.selectbox(key="predict_filter_label").set_value(row["label"]).run()
    next(s for s in at.selectbox if s.label == "Image").set_value(row["path"]).run()
    assert not at.exception, at.exception
    assert any(row["path"] in c.value and "(repaired" in c.value for c in at.caption)
    assert next(m for m in at.metric if m.label.startswith("P(COVID)")).value.endswith("%")


def test_no_model_says_how_to_get_one(tmp_path, monkeypatch) -> None:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CXR_MODELS_DIR", str(tmp_path / "empty-models"))
    monkeypatch.setenv("CXR_HOME", str(tmp_path / "home"))
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    assert "No trained model" in at.warning[0].value


def test_the_uploader_is_drawn_before_the_model_loads(models_dir, tmp_path, monkeypatch) -> None:
    import cxr_core.serve.registry as registry

    order: list[str] = []
    real_load = registry.load_model

    def recorded_load(path):
        order.append("model")
        return real_load(path)

    import streamlit as st

    real_uploader = st.file_uploader

    def recorded_uploader(*args, **kwargs):
        order.append("uploader")
        return real_uploader(*args, **kwargs)

    monkeypatch.setattr(registry, "load_model", recorded_load)
    monkeypatch.setattr(st, "file_uploader", recorded_uploader)
    at = open_page(models_dir, tmp_path, monkeypatch)
    assert order == ["uploader", "model"] and len(at.get("file_uploader")) == 1


def test_a_model_that_cannot_load_still_shows_the_uploader_and_says_why(models_dir, tmp_path, monkeypatch) -> None:
    import cxr_core.serve.registry as registry

    def broken(path):
        raise registry.RegistryError("model.keras is damaged")

    monkeypatch.setattr(registry, "load_model", broken)
    at = open_page(models_dir, tmp_path, monkeypatch)
    assert len(at.get("file_uploader")) == 1
    assert "This model cannot be loaded: model.keras is damaged" in at.error[0].value


IMAGES_LOADED = "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length >= 4"  # original, model input, plain image and the overlay


@pytest.mark.browser
def test_browser_upload_shows_prediction_overlay_and_downloads_report(
    streamlit_app, browser_page, models_dir, sample_dir, tmp_path
) -> None:
    url = streamlit_app({"CXR_MODELS_DIR": str(models_dir), "CXR_DATA_DIR": str(tmp_path / "no-data")})
    from playwright.sync_api import expect

    page = browser_page
    page.goto(f"{url}/Predict")
    page.get_by_text("Upload a chest X-ray").wait_for(timeout=90_000)
    image = tmp_path / "chest.png"
    cv2.imwrite(str(image), read_image(sample_dir / "COVID" / "images" / "COVID-1.png"))
    start = time.perf_counter()
    page.locator("input[type=file]").set_input_files(str(image))
    page.get_by_text("Grad-CAM for class").wait_for(timeout=60_000)
    page.wait_for_function(IMAGES_LOADED, timeout=60_000)
    elapsed = time.perf_counter() - start
    print(f"\nupload -> heatmap shown in the browser: {elapsed:.2f} s")
    expect(page.get_by_text("P(COVID), calibrated")).to_be_visible()
    expect(page.get_by_text("Decision at threshold")).to_be_visible()
    expect(page.get_by_text("%").first).to_be_visible()
    slider = page.get_by_role("slider").first
    before = slider.get_attribute("aria-valuenow")
    slider.focus()
    for _ in range(4):
        page.keyboard.press("ArrowRight")
    expect(slider).not_to_have_attribute("aria-valuenow", before or "")
    for _attempt in range(5):  # a click during the slider's rerun can hit the replaced (stale) file
        page.wait_for_timeout(1000)
        with page.expect_download() as info:
            page.get_by_text("Download JSON report").click()
        if info.value.failure() is None:
            break
    report = json.loads(Path(info.value.path()).read_text())
    assert {"p_covid", "decision", "threshold", "input_sha256", "attention_shares"} <= set(report)
    assert report["explanation"]["method"] == "gradcam"


@pytest.fixture
def gated_app(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The Predict page with the shipped chest X-ray gate switched on."""
    from conftest import SHIPPED_GATE_DIR

    return open_page(models_dir, tmp_path, monkeypatch, CXR_GATE_MODEL=str(SHIPPED_GATE_DIR))


def test_a_non_xray_upload_is_refused_instead_of_given_a_probability(gated_app) -> None:
    noise = np.random.default_rng(5).integers(0, 256, (256, 256)).astype(np.uint8)
    at = upload(gated_app, "noise.png", png(noise))
    assert any("Not assessed" in e.value and "does not look like a frontal chest X-ray" in e.value for e in at.error)
    assert not any(m.label.startswith("P(COVID)") for m in at.metric)
    assert [b.proto.label for b in at.get("download_button")] == ["Download JSON report"]


def test_an_mr_dicom_and_an_inverted_film_are_refused_with_their_reasons(gated_app, sample_dir) -> None:
    gray = read_image(sample_dir / "Normal" / "images" / "Normal-1.png")
    at = upload(gated_app, "head.dcm", dicom_bytes(gray, Modality="MR"), "application/dicom")
    assert any("MR image" in e.value for e in at.error) and not at.metric
    at = upload(gated_app, "negative.png", png(255 - gray))
    assert any("inverted" in e.value for e in at.error) and not at.metric
    at = upload(gated_app, "chest.png", png(gray))
    assert not at.error and any(m.label.startswith("P(COVID)") for m in at.metric)
    certainty = next(m.value for m in at.metric if m.label == "Certainty")
    assert certainty in {"uncertain", "unfamiliar", "clear"}


@pytest.mark.browser
def test_browser_refuses_a_photo_that_is_no_xray(streamlit_app, browser_page, models_dir, tmp_path) -> None:
    from playwright.sync_api import expect
    from skimage.data import chelsea

    from conftest import SHIPPED_GATE_DIR

    url = streamlit_app(
        {
            "CXR_MODELS_DIR": str(models_dir),
            "CXR_DATA_DIR": str(tmp_path / "no-data"),
            "CXR_GATE_MODEL": str(SHIPPED_GATE_DIR),
        }
    )
    page = browser_page
    page.goto(f"{url}/Predict")
    page.get_by_text("Upload a chest X-ray").wait_for(timeout=90_000)
    photo = tmp_path / "cat.png"
    cv2.imwrite(str(photo), cv2.cvtColor(chelsea(), cv2.COLOR_RGB2BGR))
    page.locator("input[type=file]").set_input_files(str(photo))
    page.get_by_text("Not assessed.").wait_for(timeout=60_000)
    expect(page.get_by_text("does not look like a frontal chest X-ray")).to_be_visible()
    expect(page.get_by_text("P(COVID), calibrated")).to_have_count(0)


def test_an_unfamiliar_image_keeps_its_probability_but_is_never_clear(tmp_path, monkeypatch) -> None:
    import pandas as pd

    from conftest import synthetic_xray
    from cxr_core.gate.familiarity import DEFAULT_METHOD, FEATURES, fit_model, image_features
    from cxr_core.serve.registry import load_model

    root = tmp_path / "registry"
    model = load_model(make_model_dir(root / "default"))
    rng = np.random.default_rng(4)
    kind = FEATURES[DEFAULT_METHOD]
    features = image_features(model, kind, [synthetic_xray(rng, 96, covid=i % 2 == 0) for i in range(40)])
    rows = pd.DataFrame({"label": ["COVID", "Normal"] * 16, "source": ["covid-a", "normal-b"] * 16})
    fit_model(model, features[:32], rows, features[32:])
    at = open_page(root, tmp_path, monkeypatch)
    stripes = np.tile((np.arange(96) // 4 % 2 * 255).astype(np.uint8), (96, 1))
    at = upload(at, "stripes.png", png(stripes))
    assert any(w.value.startswith("**Unfamiliar image**") for w in at.warning), texts(at)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Certainty"] == "unfamiliar" and any(k.startswith("P(COVID)") for k in shown)
