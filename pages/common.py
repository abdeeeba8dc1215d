"""Shared Streamlit helpers for the pages: cached config and index, the no-dataset message, the research caution."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import streamlit as st

from cxr_core.config import Config, load_config
from cxr_core.data.imaging import read_image
from cxr_core.errors import DatasetError

if TYPE_CHECKING:
    from cxr_core.data.index import DatasetIndex


def route_through_app() -> None:
    """Rerun through app.py's navigation when Streamlit ran a page directly (a fresh server's first visit to a deep link)."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


route_through_app()

CAUTION = "Research tool for decision support. It does not make a diagnosis; a clinician must review every image."
DEMO_NOTICE = (
    "**You are looking at the demo dataset** shipped in `{path}`: {n} real chest X-rays with open licences, so CXR "
    "Review works without any setup (credits in `demo/SOURCES.md`). To use your own images, start the app with "
    "`CXR_DATA_DIR=/path/to/folder make run`: a folder of `COVID/` and `Normal/` image folders, or any folder of "
    "images or DICOM files with a label CSV (`cxr index DIR --labels labels.csv`)."
)
DEMO_LESSON = (
    "**The demo is confounded on purpose.** Every COVID image comes from one hospital (Hannover Medical School) and "
    "every Normal image from two other collections (NIH adults and Kermany children). Here the hospital *is* the "
    "label, so a model can score almost perfectly by learning where an image was taken (its scanner, processing, "
    "borders, the size of a child) without learning anything about COVID-19. That is the lesson, not a flaw: a high "
    "score on a random split of data like this is no evidence that a model sees disease. The honest test is "
    "leave-one-source-out: train without one source and test on it (Evaluation page, or "
    "`cxr evaluate --leave-one-source-out`)."
)


def config() -> Config:
    """The configuration from cxr.toml and CXR_* variables (cheap: read on every rerun)."""
    return load_config()


@st.cache_resource(show_spinner="Indexing the dataset…", max_entries=4)
def _index(data_dir: str, home: str, signature: tuple[float, ...]) -> DatasetIndex | str:
    """Index the data dir (again whenever ``signature`` changes); a message string instead when there is no dataset."""
    from cxr_core.curation.curated import curated_index

    cfg = config()
    try:
        return curated_index(cfg, data_dir)
    except DatasetError as exc:
        return str(exc)


def _signature(cfg: Config) -> tuple[float, ...]:
    """Modification times of the data folders, the manifest and the curation ledger: they change when the index must."""
    from cxr_core.data.index import labels_file

    paths = [cfg.data_dir, cfg.data_dir / "manifest.csv", cfg.ledger_path, Path(f"{cfg.ledger_path}-wal")]
    if cfg.data_dir.is_dir():
        paths += [p for p in cfg.data_dir.iterdir() if p.is_dir()]
        paths += [p / "images" for p in paths[4:] if (p / "images").is_dir()]
        paths += [labels_file(cfg, cfg.data_dir) or cfg.data_dir / "labels.csv"]
    return tuple(p.stat().st_mtime if p.exists() else 0.0 for p in paths)


def _indexed() -> DatasetIndex | str:
    """The cached index of the configured dataset, or why there is none."""
    cfg = config()
    return _index(str(cfg.data_dir), str(cfg.home), _signature(cfg))


def dataset_index() -> DatasetIndex | None:
    """The cached index of the configured dataset, or None when there is none."""
    result = _indexed()
    return None if isinstance(result, str) else result


def dataset_problem() -> str:
    """Why the configured dataset cannot be indexed ("" when it can)."""
    result = _indexed()
    return result if isinstance(result, str) else ""


def refresh_index() -> None:
    """Forget the cached index so the next call re-reads changed files."""
    _index.clear()


def no_dataset_message(reason: str = "") -> None:
    """Tell the user there is no dataset (and why, when the folder exists but cannot be indexed) and how to get one."""
    cfg = config()
    reason = reason or dataset_problem()
    st.warning(
        f"No dataset found at `{cfg.data_dir}`." + (f" {reason.rstrip('.')}." if reason else "") + "\n\n"
        "Get one with `cxr fetch` (downloads the Kaggle COVID-19 Radiography Database; needs Kaggle credentials) "
        "or point CXR Review at a folder holding `COVID/` and `Normal/` image folders, or at any folder of images "
        "or DICOM files with a label CSV (columns `file`, `label`; put it at the folder's root as `labels.csv` or run "
        "`cxr index DIR --labels LABELS.csv` once): `CXR_DATA_DIR=/path/to/data make run`. "
        "Without `CXR_DATA_DIR` and a `data/` folder the app uses the demo dataset in `demo/`."
    )


def demo_notice(lesson: bool = False) -> None:
    """On the demo dataset, say so (and, with ``lesson``, why it is confounded on purpose); nothing otherwise."""
    cfg = config()
    if cfg.uses_demo:
        index = dataset_index()
        n = index.summary()["n_images"] if index is not None else "about 100"
        st.info(DEMO_NOTICE.format(path=cfg.data_dir, n=n), icon=":material/school:")
        if lesson:
            with st.container(border=True):
                st.markdown(DEMO_LESSON)


def require_dataset() -> DatasetIndex:
    """The index, or the no-dataset message and a stop of the page."""
    index = dataset_index()
    if index is None:
        no_dataset_message()
        st.stop()
    return index


@st.cache_data(max_entries=512, show_spinner=False)
def load_gray(path: str) -> np.ndarray:
    """Decode an image file once per server (cached)."""
    return read_image(path)
