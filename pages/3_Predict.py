"""Predict: upload or pick one X-ray, see the calibrated prediction and where the model looked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import streamlit as st

from cxr_core.data.imaging import IMAGE_SUFFIXES, ImageReadError, read_xray, sha256_bytes
from cxr_core.explain.attention import COLORMAPS, draw_boxes, outline, overlay, png_bytes
from cxr_core.explain.cam import CAM_METHODS, Explainer
from cxr_core.gate import GateModelError, GateNet, load_gate_net
from cxr_core.lungs.segmenter import (
    MODEL_FILE as LUNGS_MODEL_FILE,
)
from cxr_core.lungs.segmenter import (
    LungModelError,
    LungSegmenter,
    load_segmenter,
    lung_mask,
)
from cxr_core.lungs.segmenter import model_dir as lungs_model_dir
from cxr_core.markings.classical import detect_markings
from cxr_core.serve.inference import NO_CAM, Prediction, predict_image, report_dict, unfamiliar_warning
from cxr_core.serve.registry import LoadedModel, ModelInfo, RegistryError, list_models, load_model, read_classes
from pages.common import CAUTION, config, dataset_index, load_gray, no_dataset_message

SOURCES = ("Upload a file", "Pick from the dataset", "Random test image")


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def cached_model(path: str, version: str) -> LoadedModel:
    """The model of a directory, loaded once per server and version."""
    return load_model(path)


@st.cache_resource(show_spinner="Preparing the explainer…", max_entries=4)
def cached_explainer(path: str, version: str) -> Explainer:
    """The tf-keras-vis explainer of a model, built once per server and version (never per click)."""
    return Explainer(cached_model(path, version).model)


@st.cache_resource(show_spinner="Loading the chest X-ray gate…")
def cached_gate() -> GateNet | None:
    """The chest X-ray gate net, loaded once per server (None when switched off with CXR_GATE_MODEL=off)."""
    return load_gate_net()


@st.cache_resource(show_spinner="Loading the lung segmenter…")
def cached_segmenter() -> LungSegmenter | None:
    """The shipped lung segmenter, loaded and warmed up once per server (None when it cannot be loaded)."""
    try:
        segmenter = load_segmenter()
    except LungModelError:
        return None
    lung_mask(np.full((segmenter.size, segmenter.size), 128, np.uint8), segmenter)
    return segmenter


@st.cache_data(show_spinner=False, max_entries=64)
def cached_regions(
    sha256: str, lungs: bool, _gray: np.ndarray
) -> tuple[np.ndarray | None, list[tuple[int, int, int, int]]]:
    """The lung mask (when asked and a segmenter is installed) and detected marking boxes of one image."""
    segmenter = cached_segmenter() if lungs else None
    mask = lung_mask(_gray, segmenter) if segmenter is not None else None
    return mask, list(detect_markings(_gray).regions)


@st.cache_data(show_spinner="Predicting…", max_entries=64)
def cached_prediction(
    path: str,
    version: str,
    sha256: str,
    cam: str,
    target: str | None,
    lungs: bool,
    _gray: np.ndarray,
    _tags: dict[str, str] | None = None,
) -> Prediction:
    """The gated prediction for one image (keyed by its sha256), so moving a display slider does not recompute it."""
    explainer = cached_explainer(path, version) if cam != NO_CAM else None
    mask, boxes = cached_regions(sha256, lungs, _gray) if cam != NO_CAM else (None, [])
    return predict_image(
        cached_model(path, version),
        _gray,
        explainer,
        cam,
        target=target,
        lung_mask=mask,
        boxes=boxes,
        gate_net=cached_gate(),
        dicom_tags=_tags,
    )


@st.cache_data(ttl=15, show_spinner=False)
def registered_models(models_dir: str) -> list[ModelInfo]:
    """The registry listing (hashes every model file), refreshed at most every 15 s."""
    return list_models(config())


def choose_model() -> tuple[str, str]:
    """Model select (the default first) with its card one click away; returns (path, version)."""
    models = list(registered_models(str(config().models_dir)))
    if not models:
        st.warning(f"No trained model in `{config().models_dir}`: train one (`cxr train`) and register it first.")
        st.stop()
    models.sort(key=lambda m: not m.default)
    names = [m.name + (" (default)" if m.default and m.name != "default" else "") for m in models]
    chosen = models[names.index(st.selectbox("Model", names))]
    with st.expander("Model card"):
        card = Path(chosen.path) / "card.md"
        st.markdown(card.read_text(encoding="utf-8") if card.is_file() else "This model has no card.")
    return chosen.path, chosen.version


def image_from_upload() -> tuple[np.ndarray, str, dict[str, str]] | None:
    """The uploaded X-ray, its sha256 and safe DICOM tags; shows a clear message and returns None for an unusable file."""
    suffixes = sorted({s.lstrip(".") for s in IMAGE_SUFFIXES})
    upload = st.file_uploader("X-ray image (PNG, JPEG or DICOM)", type=suffixes)
    if upload is None:
        st.info("Upload a chest X-ray to see the model's prediction and explanation.")
        return None
    data = upload.getvalue()
    try:
        xray = read_xray(data, name=upload.name, max_pixels=config().max_pixels, min_side=config().min_side)
    except ImageReadError as exc:
        st.error(f"Cannot use this file: {exc.reason}.")
        return None
    if xray.dicom_tags:
        with st.expander("DICOM header (patient identifiers masked)"):
            st.table({"tag": list(xray.dicom_tags), "value": list(xray.dicom_tags.values())})
    return xray.pixels, sha256_bytes(data), xray.dicom_tags


def image_from_dataset(random_test: bool) -> tuple[np.ndarray, str, dict[str, str]] | None:
    """An image of the dataset picked by class/source/split filters, or a random test image."""
    index = dataset_index()
    if index is None:
        no_dataset_message()
        return None
    rows = index.images()
    if random_test:
        rows = rows[rows["split"] == "test"]
        if rows.empty:
            st.warning("The dataset has no test images.")
            return None
        if st.button("Another random test image") or "predict_random" not in st.session_state:
            st.session_state["predict_random"] = int(np.random.default_rng().integers(len(rows)))
        row = rows.iloc[st.session_state["predict_random"] % len(rows)]
    else:
        cols = st.columns(3)
        for col, key in zip(cols, ("label", "source", "split")):
            values = ["all", *sorted(v for v in rows[key].unique() if v)]
            choice = col.selectbox(key.capitalize(), values, key=f"predict_filter_{key}")
            rows = rows if choice == "all" else rows[rows[key] == choice]
        if rows.empty:
            st.warning("No image matches these filters.")
            return None
        row = rows[rows["path"] == st.selectbox("Image", rows["path"].tolist())].iloc[0]
    repaired = bool(row.get("pixels_path"))
    st.caption(
        f"`{row['path']}`: labelled {row['label']}, source {row['source']}, split {row['split']}"
        + (" (repaired: its markings are inpainted; `cxr restore` uses the original again)" if repaired else "")
    )
    try:
        if repaired:
            return load_gray(str(row["pixels_path"])), str(row["pixels_sha256"]), {}
        return load_gray(str(index.abspath(row["path"]))), str(row["sha256"]), {}
    except ImageReadError as exc:
        st.error(f"Cannot read this image: {exc.reason}.")
        return None


def show_refusal(pred: Prediction, loaded: LoadedModel, gray: np.ndarray, sha256: str) -> None:
    """The gate's refusal in plain words, the image, and the JSON report (no probability, no heatmap)."""
    st.error(f"**Not assessed.** {pred.gate.message}.", icon=":material/block:")
    st.caption(f"Gate score {pred.gate.score:.2f}: the model gives no probability for images the gate refuses.")
    st.image(gray, caption=f"Original ({gray.shape[1]}x{gray.shape[0]})", width=360)
    st.download_button(
        "Download JSON report",
        json.dumps(report_dict(pred, loaded, sha256), indent=2),
        f"report_{sha256[:8]}.json",
        "application/json",
        on_click="ignore",
    )


def show_prediction(pred: Prediction, loaded: LoadedModel, gray: np.ndarray, sha256: str, lungs: bool) -> None:
    """Warnings first, then original vs model input, probability and decision, overlay with its controls, downloads."""
    if not pred.assessed:
        show_refusal(pred, loaded, gray, sha256)
        return
    if pred.familiar is False:
        st.warning(
            f"**Unfamiliar image** (familiarity score {pred.familiarity['score']:.2f}, above 1 is unfamiliar; "
            f"nearest training source {pred.familiarity['nearest_source']}). {unfamiliar_warning(loaded.card)}",
            icon=":material/warning:",
        )
    elif pred.familiarity is None:
        st.caption(
            "This model has no familiarity fit (`cxr familiarity`), so nobody checked that it has seen images "
            "like this one."
        )
    left, right = st.columns(2)
    left.image(gray, caption=f"Original ({gray.shape[1]}x{gray.shape[0]})", width="stretch")
    right.image(
        pred.model_input,
        caption=f"Model input ({loaded.preprocess.method}, {loaded.preprocess.size} px)",
        width="stretch",
    )
    cols = st.columns(3)
    cols[0].metric(f"P({pred.positive}), calibrated", f"{pred.p_covid:.1%}")
    cols[1].metric(f"Decision at threshold {pred.threshold:.2f}", pred.label)
    cols[2].metric("Certainty", pred.certainty)
    st.caption(f"{pred.uncertainty}. {CAUTION}")
    report = report_dict(
        pred, loaded, sha256, cached_explainer(str(loaded.path), loaded.version) if pred.heatmap is not None else None
    )
    overlay_png = None
    if pred.heatmap is not None:
        controls = st.columns(2)
        alpha = controls[0].slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05)
        colormap = controls[1].selectbox("Colormap", list(COLORMAPS))
        blended = overlay(gray, pred.heatmap, alpha, colormap)
        mask, boxes = cached_regions(sha256, lungs, gray)
        if mask is not None:
            blended = outline(blended, mask)
        blended = draw_boxes(blended, boxes)
        plain, heat = st.columns(2)
        plain.image(gray, caption="Plain image", width="stretch")
        heat.image(blended, caption=f"{CAM_METHODS[pred.method]} for class {pred.target}", width="stretch")
        overlay_png = png_bytes(blended)
        shares = pred.shares
        if pred.warning:
            st.warning(pred.warning)
        elif shares is not None and shares.thorax is not None:
            lungs_text = f" {shares.lungs:.0%} lies inside the lungs." if shares.lungs is not None else ""
            st.success(
                f"{shares.thorax:.0%} of the heatmap lies in the central thorax region "
                f"({shares.border:.0%} on the border, {shares.corners:.0%} in the corners).{lungs_text}"
            )
        if boxes:
            st.caption(
                f"{len(boxes)} detected marking region(s) (text, arrows) outlined in orange; "
                f"{(shares.markings or 0):.0%} of the heatmap lies on them."
            )
    downloads = st.columns(2)
    if overlay_png is not None:
        downloads[0].download_button(
            "Download overlay PNG", overlay_png, f"overlay_{sha256[:8]}.png", "image/png", on_click="ignore"
        )
    downloads[1].download_button(
        "Download JSON report",
        json.dumps(report, indent=2),
        f"report_{sha256[:8]}.json",
        "application/json",
        on_click="ignore",
    )


st.title("Predict")
st.info(CAUTION, icon=":material/info:")
model_path, version = choose_model()
try:
    classes, _ = read_classes(Path(model_path))
except RegistryError as exc:
    st.error(f"This model cannot be loaded: {exc}")
    st.stop()

source = st.radio("Image", SOURCES, horizontal=True)
options = st.columns(2)
cam = options[0].selectbox("Explanation", [*CAM_METHODS, NO_CAM], format_func=lambda m: CAM_METHODS.get(m, "none"))
target_choice = options[1].selectbox("Explain class", ["predicted class", *classes])
has_segmenter = (lungs_model_dir() / LUNGS_MODEL_FILE).is_file()
lungs = st.checkbox(
    "Measure attention inside the segmented lungs (outlined in green)",
    value=has_segmenter,
    disabled=not has_segmenter,
    help=None
    if has_segmenter
    else "No lung segmenter installed (models/lungs): only the thorax/border/corner shares are shown.",
)
picked = image_from_upload() if source == SOURCES[0] else image_from_dataset(source == SOURCES[2])
try:
    loaded = cached_model(model_path, version)
except RegistryError as exc:
    st.error(f"This model cannot be loaded: {exc}")
    st.stop()
if lungs and cam != NO_CAM:
    cached_segmenter()
if cam != NO_CAM:
    cached_explainer(model_path, version)
try:
    cached_gate()
except GateModelError as exc:
    st.error(f"The chest X-ray gate cannot be loaded: {exc}")
    st.stop()
if picked is not None:
    gray, digest, tags = picked
    target = None if target_choice == "predicted class" else target_choice
    prediction = cached_prediction(model_path, version, digest, cam, target, lungs, gray, tags)
    show_prediction(prediction, loaded, gray, digest, lungs)
