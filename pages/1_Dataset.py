"""Dataset: class balance, confounding between label and source, image sizes, duplicates and leaks, thumbnails."""

from __future__ import annotations

import plotly.express as px
import streamlit as st

from pages.common import demo_notice, load_gray, refresh_index, require_dataset

st.title("Dataset")
if st.button("Refresh index", help="re-read files that changed since the last index"):
    refresh_index()
index = require_dataset()
summary = index.summary()
demo_notice()

excluded = summary["excluded"]
cols = st.columns(5)
cols[0].metric("Images", summary["n_images"])
cols[1].metric("Patients", summary["n_patients"])
cols[2].metric("Excluded by curation", excluded.get("discarded", 0))
cols[3].metric("Test leaks removed", excluded.get("duplicate-of-train", 0))
cols[4].metric("Unreadable", len(summary["unreadable"]))
st.caption(
    f"`{index.data_dir}` — {summary['n_images']} images ({excluded.get('discarded', 0)} excluded by curation). "
    f"Splits are grouped by patient (seed {summary['seed']}, fractions {summary['split_fractions']}); "
    f"patients in more than one split: **{summary['patients_in_multiple_splits']}**."
)

st.subheader("Class balance")
left, mid, right = st.columns(3)
for column, by, title in ((left, None, "Overall"), (mid, "split", "Per split"), (right, "source", "Per source")):
    data = index.class_balance(by)
    fig = px.bar(
        data,
        x=by or "label",
        y="n",
        color="label",
        barmode="group" if by else "relative",
        title=title,
        text=data.apply(lambda r: f"{r['n']}<br>{r['share']:.0%}", axis=1),
        category_orders={"split": ["train", "val", "test"]},
    )
    fig.update_traces(textposition="outside", textangle=0, cliponaxis=False)
    fig.update_layout(height=400, margin=dict(t=60, b=10), legend_title_text="", uniformtext_minsize=8)
    column.plotly_chart(fig, width="stretch", key=f"balance-{by}")

st.subheader("Label x source: can the source predict the label?")
conf = summary["confounding"]
table = index.images()
st.dataframe(table.groupby(["source", "label"]).size().unstack(fill_value=0), width="stretch")
message = (
    f"Cramér's V between source and label is **{conf['cramers_v']:.2f}**; guessing the label from the source alone "
    f"is right for **{conf['source_only_accuracy']:.1%}** of images."
)
if conf["cramers_v"] > 0.5:
    st.error(
        message + " COVID and Normal images come from largely different sources (hospitals, scanners, web collections, "
        "children vs adults). A model can score highly by recognising the source instead of disease: report results "
        "per source and audit what the model looks at."
    )
else:
    st.info(message)

st.subheader("Image sizes")
sizes = index.images(include_excluded=True)
fig = px.histogram(
    sizes, x="width", color="label", nbins=40, barmode="overlay", title="Width of the stored images (px)"
)
fig.update_layout(height=300, margin=dict(t=40, b=10))
st.plotly_chart(fig, width="stretch", key="sizes")

st.subheader("Duplicates and leaks")
pairs = index.duplicate_pairs
st.write(
    f"{len(pairs)} exact or near-duplicate pairs (pHash distance ≤ {index.near_duplicate_distance}); "
    f"{summary['duplicates_across_splits']} cross splits; {excluded.get('duplicate-of-train', 0)} test images that "
    "duplicate a training image are left out of the test split."
)
if len(pairs):
    st.dataframe(pairs, width="stretch", hide_index=True)

st.subheader("Unreadable files")
if summary["unreadable"]:
    st.dataframe(summary["unreadable"], width="stretch", hide_index=True)
else:
    st.write("None: every file was read.")
for folder in summary["empty_folders"]:
    st.warning(f"No images in `{folder}`.")

if summary["labels_file"] or summary["lateral"]:
    st.subheader("Left out")
    if summary["labels_file"]:
        st.write(
            f"Labels from `{summary['labels_file']}`; patient and site identifiers from DICOM headers appear only as "
            f"salted pseudonyms. **{summary['n_unlabelled']}** image files are not in the label file."
        )
    st.write(f"**{summary['n_lateral']}** lateral views are left out (CXR Review uses frontal views).")
    for title, paths in (("Unlabelled files", summary["unlabelled"]), ("Lateral views", summary["lateral"])):
        if paths:
            with st.expander(f"{title} ({len(paths)})"):
                st.dataframe({"path": paths}, width="stretch", hide_index=True)

st.subheader("Sample thumbnails")
f1, f2, f3, f4 = st.columns(4)
label = f1.selectbox("Class", sorted(table["label"].unique()))
sources = f2.multiselect("Source", sorted(table["source"].unique()))
split = f3.selectbox("Split", ["all", "train", "val", "test"])
count = f4.slider("How many", 4, 48, 12, step=4)
shown = index.images(split=split)
shown = shown[shown["label"] == label]
if sources:
    shown = shown[shown["source"].isin(sources)]
shown = shown.sample(min(count, len(shown)), random_state=0) if len(shown) else shown
grid = st.columns(6)
for i, row in enumerate(shown.itertuples()):
    grid[i % 6].image(
        load_gray(str(index.abspath(row.path))), caption=f"{row.path.split('/')[-1]} · {row.source}", width="stretch"
    )
if shown.empty:
    st.write("No images match the filters.")
