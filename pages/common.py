"""Shared Streamlit helpers for the pages: cached config and index, the no-dataset message, the research caution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import streamlit as st

from cxr_core.config import Config, load_config
from cxr_core.dataset_index import DatasetError, DatasetIndex, load_index
from cxr_core.imaging import read_image

CAUTION = "Research tool for decision support. It does not make a diagnosis; a clinician must review every image."


def config() -> Config:
    """The configuration from cxr.toml and CXR_* variables (cheap: read on every rerun)."""
    return load_config()


@st.cache_data(show_spinner="Indexing the dataset…", ttl=30)
def _index(data_dir: str, home: str, ledger_mtime: float) -> DatasetIndex | str:
    """Index the data dir (re-read when the ledger changes); a message string instead when there is no dataset."""
    cfg = config()
    try:
        return load_index(cfg, data_dir)
    except DatasetError as exc:
        return str(exc)


def dataset_index() -> DatasetIndex | None:
    """The cached index of the configured dataset, or None when there is none."""
    cfg = config()
    ledger = cfg.ledger_path
    stamp = max((p.stat().st_mtime for p in (ledger, Path(f"{ledger}-wal")) if p.exists()), default=0.0)
    result = _index(str(cfg.data_dir), str(cfg.home), stamp)
    return result if isinstance(result, DatasetIndex) else None


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
