"""Home: what CXR Review is, the dataset at a glance, the models available and what each page is for."""

from __future__ import annotations

import streamlit as st

from cxr_core.serve.registry import list_models
from pages.common import CAUTION, config, dataset_index, demo_notice, no_dataset_message

st.title("CXR Review")
st.caption("Curate chest X-ray datasets, train COVID-19 vs Normal classifiers, and review predictions with Grad-CAM.")
st.info(CAUTION, icon=":material/info:")
demo_notice(lesson=True)

cfg = config()
index = dataset_index()
left, right = st.columns(2)
with left:
    st.subheader("Dataset")
    if index is None:
        no_dataset_message()
    else:
        summary = index.summary()
        cols = st.columns(3)
        cols[0].metric("Images", summary["n_images"])
        cols[1].metric("Patients", summary["n_patients"])
        cols[2].metric("Excluded", sum(summary["excluded"].values()))
        st.write(", ".join(f"**{k}** {v}" for k, v in summary["by_class"].items()) + f" — from `{index.data_dir}`")
        if summary["confounding"]["cramers_v"] > 0.5:
            st.warning(
                f"Source predicts the label (Cramér's V {summary['confounding']['cramers_v']:.2f}): "
                "high accuracy here may reflect where an image came from, not disease. See the Dataset page."
            )
with right:
    st.subheader("Models")
    models = list_models(cfg)
    if not models:
        st.write(f"No trained models in `{cfg.models_dir}` yet: train one on the Training page or with `cxr train`.")
    for entry in models:
        auc = f", test ROC AUC {entry.test_auc:.3f}" if entry.test_auc is not None else ""
        st.write(f"- **{entry.name}** ({entry.arch}{auc})" + (" — default" if entry.default else ""))

st.subheader("Pages")
st.markdown(
    """
- **Dataset**: class balance per split and source, the label x source confounding table, duplicates and leaks, unreadable files, thumbnails.
- **Normalisation**: compare contrast normalisation methods before and after, with histograms and quality measures.
- **Predict**: upload an X-ray (PNG, JPEG, DICOM) and see the calibrated prediction with its Grad-CAM heatmap.
- **Training**: launch a training run in the background and watch its curves live.
- **Run history**: compare runs, promote a model into the registry.
- **Evaluation**: ROC, calibration, per-source results, worst errors and the shortcut audit of a model.
- **Curation**: review automatically flagged images (markings, poor quality, duplicates) and discard them reversibly.
"""
)
