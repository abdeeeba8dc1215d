"""CXR Review dashboard: ``streamlit run app.py`` (listens on 127.0.0.1 by default, see .streamlit/config.toml)."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st

PAGES_DIR = Path(__file__).parent / "pages"
ICONS = {
    "Dataset": ":material/database:",
    "Normalisation": ":material/contrast:",
    "Predict": ":material/radiology:",
    "Training": ":material/model_training:",
    "Run history": ":material/history:",
    "Evaluation": ":material/analytics:",
    "Curation": ":material/rule:",
}


def page_title(path: Path) -> str:
    """Title from a page file name: ``4_Run_history.py`` -> ``Run history``."""
    return re.sub(r"^\d+_", "", path.stem).replace("_", " ")


def build_pages() -> list[st.Page]:
    """The home page followed by every numbered page in ``pages/`` in name order."""
    pages = [st.Page(str(PAGES_DIR / "home.py"), title="Home", icon=":material/home:", default=True)]
    for path in sorted(PAGES_DIR.glob("[0-9]*_*.py")):
        title = page_title(path)
        pages.append(st.Page(str(path), title=title, icon=ICONS.get(title, ":material/description:")))
    return pages


st.set_page_config(page_title="CXR Review", page_icon=":material/radiology:", layout="wide")
st.navigation(build_pages()).run()
