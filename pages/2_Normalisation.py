"""Normalisation: compare contrast normalisation methods on one X-ray, or one method on a grid of images."""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from cxr_core.data.imaging import IMAGE_SUFFIXES, ImageReadError, read_image, sha256_bytes
from cxr_core.data.index import DatasetIndex
from cxr_core.explain.attention import outline_gray
from cxr_core.lungs.segmenter import LUNGS_MODEL_ENV, LungModelError, lung_mask
from cxr_core.lungs.segmenter import MODEL_FILE as LUNGS_MODEL_FILE
from cxr_core.lungs.segmenter import model_dir as lungs_model_dir
from cxr_core.preprocess.normalise import METHODS, Param, describe, normalise
from cxr_core.preprocess.quality import (
    MEASURES,
    histogram,
    measure_files,
    quality_measures,
    rms_contrast,
    signed_difference,
)
from cxr_core.preprocess.recipe import RESIZE_POLICIES, ROI_MODES, PreprocessConfig
from pages.common import config, dataset_index, load_gray, no_dataset_message

# Images are sent as PNG: JPEG artefacts would blur exactly the differences this page is about.
SLOW_METHODS = {"local_rank_eq": "about 35 ms per 299x299 image here, roughly 100x CLAHE"}
SIZES = ["original", 224, 256, 299, 512]
ALL = "All"
PANELS_PER_ROW = 3
PLOT_CONFIG = {"displayModeBar": False}
ROI_LABELS = {"none": "none", "lung_crop": "lung crop", "lung_mask": "lung mask"}


@dataclass(frozen=True)
class Region:
    """The compared image with its lung mask and the region-of-interest recipe settings the panels share."""

    key: str
    gray: np.ndarray
    mask: np.ndarray | None
    size: int
    policy: str
    roi: str

    def recipe(self, method: str, params: tuple[tuple[str, float], ...] = ()) -> PreprocessConfig:
        """The training recipe of one panel: this method at the working size, resize policy and region of interest."""
        return PreprocessConfig(method, dict(params), size=self.size, resize=self.policy, roi=self.roi)


@st.cache_resource(show_spinner=False)
def warm_up(method: str) -> None:
    """Run a method once on a tiny ramp so that its timings exclude the one-off library import."""
    normalise(np.arange(256, dtype=np.uint8).reshape(16, 16), method)


@st.cache_data(max_entries=256, show_spinner=False)
def run_method(image: np.ndarray, method: str, params: tuple[tuple[str, float], ...]) -> tuple[np.ndarray, float]:
    """Normalised image and the milliseconds it took (cached, so the cost shown is the measured one)."""
    warm_up(method)
    started = time.perf_counter()
    out = normalise(image, method, **dict(params))
    return out, (time.perf_counter() - started) * 1000


@st.cache_data(max_entries=64, show_spinner=False)
def run_recipe(
    key: str, recipe: PreprocessConfig, _gray: np.ndarray, _mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float]:
    """Preprocessed image, lung mask in its geometry and milliseconds, as training applies ``recipe`` (keyed by image)."""
    warm_up(recipe.method)
    started = time.perf_counter()
    image, lungs = recipe.apply_with_lungs(_gray, _mask)
    return image, lungs, (time.perf_counter() - started) * 1000


@st.cache_data(max_entries=64, show_spinner="Segmenting the lungs…")
def cached_lung_mask(key: str, _gray: np.ndarray) -> np.ndarray | str:
    """The lung mask of one image, keyed by its path and sha256; the one-line error when the segmenter cannot load."""
    try:
        return lung_mask(_gray)
    except LungModelError as exc:
        return str(exc)


@st.cache_data(max_entries=32, show_spinner=False)
def decode_upload(data: bytes, name: str, max_pixels: int, min_side: int) -> np.ndarray | str:
    """An uploaded file through the shared reader; the one-line error message when it is unreadable."""
    try:
        return read_image(data, name=name, max_pixels=max_pixels, min_side=min_side)
    except ImageReadError as exc:
        return str(exc)


@st.cache_data(show_spinner="Measuring contrast and brightness of every image (once)…")
def dataset_quality(data_dir: str, paths: tuple[str, ...], hashes: tuple[str, ...]) -> pd.DataFrame:
    """Quality measures of every indexed image, keyed by the index's paths and content hashes."""
    table = measure_files([Path(data_dir) / p for p in paths])
    table["path"] = list(paths)
    return table


@st.cache_data(max_entries=64, show_spinner=False)
def working_image(image: np.ndarray, size: int | str, policy: str) -> np.ndarray:
    """The image at the chosen working size (``original`` leaves it alone)."""
    return image if size == "original" else PreprocessConfig("none", size=int(size), resize=policy).apply(image)


def step_for(spec: Param) -> float | int:
    """A round widget step for a parameter's range."""
    if spec.kind is int:
        return 1
    return 10.0 ** math.floor(math.log10((spec.high - spec.low) / 200))


def reset_params(method: str) -> None:
    """Put a method's parameter widgets back to their defaults."""
    for name, spec in METHODS[method].params.items():
        st.session_state[f"param-{method}-{name}"] = spec.default


def param_widgets(method: str) -> tuple[tuple[str, float], ...]:
    """Number inputs for every parameter of ``method`` (live: any change reruns); returns sorted (name, value) pairs."""
    values: dict[str, float] = {}
    specs = METHODS[method].params
    if not specs:
        return ()
    with st.expander(f"{method} parameters", expanded=len(specs) <= 1):
        for name, spec in specs.items():
            key = f"param-{method}-{name}"
            st.session_state.setdefault(key, spec.default)
            values[name] = st.number_input(
                name,
                min_value=spec.low,
                max_value=spec.high,
                step=step_for(spec),
                help=spec.help,
                key=key,
                format="%d" if spec.kind is int else "%g",
            )
        st.button("Defaults", key=f"reset-{method}", on_click=reset_params, args=(method,))
    return tuple(sorted(values.items()))


def histogram_figure(image: np.ndarray, height: int = 170) -> go.Figure:
    """A compact 256-bin gray-level histogram; the y axis stops above the 98th-percentile bin so a spike (padding) cannot flatten it."""
    counts = histogram(image)
    fig = go.Figure(go.Bar(x=np.arange(256), y=counts, marker_color="#9aa4b2", marker_line_width=0))
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=4, b=0), bargap=0, showlegend=False)
    fig.update_xaxes(range=[-1, 256], title=None)
    fig.update_yaxes(showticklabels=False, range=[0, 1.15 * max(float(np.percentile(counts, 98)), 1.0)])
    return fig


def difference_figure(before: np.ndarray, after: np.ndarray) -> go.Figure:
    """Signed difference after - before: red where the method brightened, blue where it darkened."""
    fig = px.imshow(signed_difference(before, after), color_continuous_scale="RdBu_r", zmin=-255, zmax=255)
    fig.update_layout(height=260, margin=dict(l=0, r=0, t=4, b=0), coloraxis_colorbar=dict(thickness=10))
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    return fig


def filtered_rows(index: DatasetIndex, key: str, split_filter: bool = True) -> pd.DataFrame:
    """Readable, non-excluded images narrowed by class, source and (optionally) split selectboxes."""
    rows = index.images()
    filters = [("label", "Class"), ("source", "Source")] + ([("split", "Split")] if split_filter else [])
    columns = st.columns(len(filters))
    for column, (field, label) in zip(columns, filters):
        choice = column.selectbox(label, [ALL, *sorted(rows[field].astype(str).unique())], key=f"{key}-{field}")
        if choice != ALL:
            rows = rows[rows[field].astype(str) == choice]
    return rows


def pick_from_dataset(index: DatasetIndex) -> tuple[np.ndarray, str, str] | None:
    """Filters, shortcut buttons and an image selectbox; the chosen image, its label and cache key, or None."""
    rows = filtered_rows(index, "filter")
    if rows.empty:
        st.info("No image matches these filters.")
        return None
    options = rows["path"].tolist()
    shortcut = st.columns(4)
    note = ""
    if shortcut[0].button("Lowest contrast", key="pick-lowest", help="lowest RMS contrast among the filtered images"):
        quality = quality_of(index, options)
        best = quality.loc[quality["rms_contrast"].idxmin()]
        st.session_state["image_path"], note = best["path"], f"lowest RMS contrast: {best['rms_contrast']:.3f}"
    if shortcut[1].button("Darkest", key="pick-darkest", help="lowest mean brightness among the filtered images"):
        quality = quality_of(index, options)
        best = quality.loc[quality["mean_brightness"].idxmin()]
        st.session_state["image_path"], note = best["path"], f"darkest: mean brightness {best['mean_brightness']:.3f}"
    if shortcut[2].button("Random", key="pick-random"):
        st.session_state["image_path"] = options[int(np.random.default_rng().integers(len(options)))]
    if st.session_state.get("image_path") not in options:
        st.session_state["image_path"] = options[0]
    path = st.selectbox(f"Image ({len(options)} match)", options, key="image_path")
    if note:
        shortcut[3].caption(note)
    row = rows[rows["path"] == path].iloc[0]
    label = f"{path} · {row['label']} · {row['source']} · {row['split']}"
    return load_gray(str(index.abspath(path))), label, f"{path}:{row['sha256']}"


def quality_of(index: DatasetIndex, paths: list[str]) -> pd.DataFrame:
    """Quality measures of the given indexed paths (computed once for the whole dataset, then cached)."""
    rows = index.images()
    table = dataset_quality(str(index.data_dir), tuple(rows["path"]), tuple(rows["sha256"]))
    return table[table["path"].isin(paths) & (table["error"] == "")].reset_index(drop=True)


def pick_upload() -> tuple[np.ndarray, str, str] | None:
    """A file uploader read with the shared reader (PNG, JPEG, BMP, TIFF, DICOM); image, name and cache key."""
    cfg = config()
    upload = st.file_uploader("X-ray image", type=[s.lstrip(".") for s in IMAGE_SUFFIXES], key="upload")
    if upload is None:
        return None
    gray = decode_upload(upload.getvalue(), upload.name, cfg.max_pixels, cfg.min_side)
    if isinstance(gray, str):
        st.error(gray)
        return None
    return gray, upload.name, f"upload:{sha256_bytes(upload.getvalue())}"


def normalised(
    image: np.ndarray, method: str, params: tuple[tuple[str, float], ...], region: Region | None = None
) -> tuple[np.ndarray, float]:
    """Run a method (on the original through ``region``'s recipe if given) via the cache; a spinner for slow ones."""
    if region is None:
        run = functools.partial(run_method, image, method, params)
    else:
        run = functools.partial(run_recipe, region.key, region.recipe(method, params), region.gray, region.mask)
    if method in SLOW_METHODS:
        with st.spinner(f"{describe(method, dict(params))}: {SLOW_METHODS[method]}…"):
            out = run()
    else:
        out = run()
    return out[0], out[-1]


def roi_controls() -> tuple[str, bool]:
    """The region-of-interest selectbox and lung-outline toggle, disabled with the reason when there is no segmenter."""
    directory = lungs_model_dir()
    available = (directory / LUNGS_MODEL_FILE).is_file()
    roi_col, outline_col = st.columns(2)
    roi = roi_col.selectbox(
        "Region of interest",
        ROI_MODES,
        format_func=ROI_LABELS.get,
        key="roi",
        disabled=not available,
        help="applied before normalisation exactly as training does (PreprocessConfig roi)",
    )
    show = outline_col.toggle("Outline the lungs on the original", key="show-lungs", disabled=not available)
    if not available:
        st.info(
            f"Region of interest and lung outline are disabled: no lung segmenter at `{directory / LUNGS_MODEL_FILE}`. "
            f"Train one with `cxr train-lungs` or point `{LUNGS_MODEL_ENV}` at a segmenter directory."
        )
        return "none", False
    return roi, show


def lung_region(gray: np.ndarray, key: str, size: int | str, policy: str, roi: str, show_lungs: bool) -> Region | None:
    """The image's region-of-interest settings and (cached) lung mask; None when neither ROI nor outline is asked."""
    if roi == "none" and not show_lungs:
        return None
    mask = cached_lung_mask(key, gray)
    if isinstance(mask, str):
        st.error(mask)
        return None
    if size == "original" and roi != "none":
        size = PreprocessConfig().size
        st.caption(f"A region of interest is applied at a training size, as training does: {size} px here.")
    working = max(gray.shape) if size == "original" else int(size)
    return Region(key, gray, mask, working, policy, roi)


def region_original(image: np.ndarray, region: Region | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The original panel (through the region of interest) and the lung mask in its geometry, if any."""
    if region is None:
        return image, None
    if region.roi == "none" and image.shape == region.gray.shape:
        return image, region.mask
    cropped, lungs, _ = run_recipe(region.key, region.recipe("none"), region.gray, region.mask)
    return (cropped if region.roi != "none" else image), lungs


def compare(image: np.ndarray, caption: str, region: Region | None = None, show_lungs: bool = False) -> None:
    """Original and each chosen method side by side with histograms, quality measures and difference maps."""
    options = [m for m in METHODS if m != "none"]
    methods = st.multiselect("Methods", options, default=["clahe", "local_rank_eq"], key="methods")
    show_diff = st.toggle("Difference map (method - original)", key="show-diff")
    params = {m: param_widgets(m) for m in methods}
    roi_region = region if region is not None and region.roi != "none" else None
    image, lungs = region_original(image, region)
    panels = [("original", image, 0.0)]
    panels += [(describe(m, dict(params[m])), *normalised(image, m, params[m], roi_region)) for m in methods]
    if roi_region is not None:
        caption += f" · region of interest: {ROI_LABELS[roi_region.roi]}"
    st.caption(f"{caption} · {image.shape[1]}x{image.shape[0]} px")
    for start in range(0, len(panels), PANELS_PER_ROW):
        columns = st.columns(PANELS_PER_ROW)
        for column, (title, pixels, ms) in zip(columns, panels[start : start + PANELS_PER_ROW]):
            with column:
                st.markdown(f"**{title}**")
                cost = None if title == "original" else f"computed in {ms:.2f} ms"
                if title == "original" and show_lungs and lungs is not None:
                    pixels_shown, cost = outline_gray(pixels, lungs), "detected lungs outlined in green"
                else:
                    pixels_shown = pixels
                st.image(pixels_shown, width="stretch", output_format="PNG", caption=cost)
                st.plotly_chart(histogram_figure(pixels), key=f"hist-{start}-{title}", config=PLOT_CONFIG)
                if show_diff and title != "original":
                    st.plotly_chart(difference_figure(image, pixels), key=f"diff-{title}", config=PLOT_CONFIG)
    table = pd.DataFrame([{"image": t, **quality_measures(p), "ms": ms} for t, p, ms in panels]).set_index("image")
    formats = {column: st.column_config.NumberColumn(format="%.3f") for column in table.columns}
    st.dataframe(table, width="stretch", column_config=formats)
    st.caption(" · ".join(f"**{k}**: {v}" for k, v in MEASURES.items()))


def grid(index: DatasetIndex, size: int | str, policy: str) -> None:
    """One method on N random images of a class: before/after pairs with their RMS contrast."""
    left, mid, right = st.columns(3)
    method = left.selectbox("Method", [m for m in METHODS if m != "none"], key="grid-method")
    count = mid.slider("Images", 2, 12, 6, key="grid-count")
    if right.button("Reshuffle", key="grid-shuffle"):
        st.session_state["grid-seed"] = st.session_state.get("grid-seed", 0) + 1
    rows = filtered_rows(index, "grid", split_filter=False)
    if rows.empty:
        st.info("No image matches these filters.")
        return
    params = param_widgets(method)
    chosen = rows.sample(min(count, len(rows)), random_state=st.session_state.get("grid-seed", 0))
    for path in chosen["path"]:
        before = working_image(load_gray(str(index.abspath(path))), size, policy)
        after, ms = normalised(before, method, params)
        columns = st.columns([1, 1, 1])
        contrast = rms_contrast(before), rms_contrast(after)
        columns[0].image(
            before, width="stretch", output_format="PNG", caption=f"{path} · RMS contrast {contrast[0]:.3f}"
        )
        columns[1].image(
            after,
            width="stretch",
            output_format="PNG",
            caption=f"{method} · RMS contrast {contrast[1]:.3f} · {ms:.2f} ms",
        )
        columns[2].plotly_chart(histogram_figure(after, height=200), key=f"grid-hist-{path}", config=PLOT_CONFIG)


st.title("Normalisation")
st.caption(
    "Compare contrast normalisation methods before and after: images, histograms and quality measures. "
    "The default for training is CLAHE; see docs/normalisation.md for the measured speed of every method."
)
index = dataset_index()
mode = st.segmented_control("Mode", ["Compare", "Grid"], default="Compare", required=True, key="mode")
size_col, policy_col = st.columns(2)
size = size_col.selectbox(
    "Working size", SIZES, key="size", help="resize first, as training does (original: no resize)"
)
policy = policy_col.selectbox("Resize policy", RESIZE_POLICIES, key="policy", disabled=size == "original")

if mode == "Grid":
    if index is None:
        no_dataset_message("Grid mode needs a dataset.")
        st.stop()
    grid(index, size, policy)
    st.stop()

roi, show_lungs = roi_controls()
sources = ["Dataset", "Upload"] if index is not None else ["Upload"]
if index is None:
    no_dataset_message("You can still upload an image.")
source = st.radio("Image from", sources, horizontal=True, key="source")
picked = pick_from_dataset(index) if source == "Dataset" and index is not None else pick_upload()
if picked is None:
    st.stop()
gray, label, key = picked
compare(working_image(gray, size, policy), label, lung_region(gray, key, size, policy, roi, show_lungs), show_lungs)
