"""Shared Streamlit helpers for the pages: cached config and index, the no-dataset message, the research caution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from cxr_core.config import Config, load_config
from cxr_core.dataset_index import DatasetError, DatasetIndex, load_index
from cxr_core.imaging import read_image

def route_through_app() -> None:
    """Rerun through app.py's navigation when Streamlit ran a page directly (a fresh server's first visit to a deep link)."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


route_through_app()

CAUTION = "Research tool for decision support. It does not make a diagnosis; a clinician must review every image."


def config() -> Config:
    """The configuration from cxr.toml and CXR_* variables (cheap: read on every rerun)."""
    return load_config()


@st.cache_resource(show_spinner="Indexing the dataset…", max_entries=4)
def _index(data_dir: str, home: str, signature: tuple[float, ...]) -> DatasetIndex | str:
    """Index the data dir (again whenever ``signature`` changes); a message string instead when there is no dataset."""
    cfg = config()
    try:
        return load_index(cfg, data_dir)
    except DatasetError as exc:
        return str(exc)


def _signature(cfg: Config) -> tuple[float, ...]:
    """Modification times of the data folders, the manifest and the curation ledger: they change when the index must."""
    paths = [cfg.data_dir, cfg.data_dir / "manifest.csv", cfg.ledger_path, Path(f"{cfg.ledger_path}-wal")]
    if cfg.data_dir.is_dir():
        paths += [p for p in cfg.data_dir.iterdir() if p.is_dir()]
        paths += [p / "images" for p in paths[4:] if (p / "images").is_dir()]
    return tuple(p.stat().st_mtime if p.exists() else 0.0 for p in paths)


def dataset_index() -> DatasetIndex | None:
    """The cached index of the configured dataset, or None when there is none."""
    cfg = config()
    result = _index(str(cfg.data_dir), str(cfg.home), _signature(cfg))
    return result if isinstance(result, DatasetIndex) else None


def refresh_index() -> None:
    """Forget the cached index so the next call re-reads changed files."""
    _index.clear()


def no_dataset_message(reason: str = "") -> None:
    """Tell the user there is no dataset and how to get one."""
    cfg = config()
    st.warning(
        f"No dataset found at `{cfg.data_dir}`. {reason}\n\n"
        "Get one with `cxr fetch` (downloads the Kaggle COVID-19 Radiography Database; needs Kaggle credentials) "
        "or point CXR Review at a folder holding `COVID/` and `Normal/` image folders: "
        "`CXR_DATA_DIR=/path/to/data make run`."
    )


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
