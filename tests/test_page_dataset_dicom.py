"""The Dataset page (AppTest) on a nested DICOM folder labelled by a CSV that ``cxr index --labels`` remembered."""

from __future__ import annotations

from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest
from test_labels_index import leaked, write_dicom_folder

from conftest import REPO
from cxr_core.cli.parser import main


def page_text(at: AppTest) -> list[str]:
    """Every text the page shows: markdown, captions, alerts, metrics, expanders and table cells."""
    texts = [
        e.value
        for kind in ("markdown", "caption", "info", "warning", "error", "subheader", "title")
        for e in getattr(at, kind)
    ]
    texts += [str(m.value) for m in at.metric] + [e.label for e in at.expander]
    texts += [df.value.to_csv() for df in at.dataframe]
    return texts


def test_dataset_page_on_a_dicom_folder_with_remembered_labels(app_env, tmp_path: Path, capsys) -> None:
    root = tmp_path / "hospital"
    labels = write_dicom_folder(root)
    app_env(root)
    assert main(["index", str(root), "--labels", str(labels)]) == 0
    capsys.readouterr()
    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "pages/1_Dataset.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.metric[0].value == "8" and at.metric[1].value == "7"
    texts = page_text(at)
    assert any(str(labels) in t and "1** image files are not in the label file" in t for t in texts)
    assert any("Lateral views (2)" == t for t in texts) and any("extra/unlabelled.dcm" in t for t in texts)
    assert any("site-" in t for t in texts) and not leaked(texts)
