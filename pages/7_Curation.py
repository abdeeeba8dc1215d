"""Curation: a review queue of flagged images, discard/keep/repair, details with marking regions, history with undo."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from cxr_core.curation.flags import (
    DECISION_STATES,
    FLAGS,
    analyse_all,
    compute_flags,
    lung_reasons,
    missing_analyses,
    review_queue,
)
from cxr_core.curation.ledger import REASONS, LedgerError, open_ledger
from cxr_core.curation.repair import DEFAULT_MARGIN, DEFAULT_METHOD, METHODS, STROKE_CONTRAST, RepairError
from cxr_core.curation.repaired import RepairOptions, repair_images, repair_pixels
from cxr_core.data.index import DatasetIndex
from cxr_core.data.thumbnails import thumbnail
from cxr_core.lungs.cache import describe_lung_flags, lung_flags_version
from cxr_core.markings.classical import outline_regions
from cxr_core.markings.net import MarkingsModelError
from cxr_core.util.progress import Progress
from pages.common import config, load_gray, require_dataset

PAGE_SIZE = 48
COLUMNS = 6
TILE_ACTIONS = ("Discard", "Keep", "View")

st.title("Curation")
cfg = config()
index = require_dataset()
ledger = open_ledger(cfg)

if not st.session_state.get("reviewer") and st.query_params.get("reviewer", "").strip():
    st.session_state["reviewer"] = st.query_params["reviewer"].strip()
if not st.session_state.get("reviewer"):
    with st.form("reviewer-form"):
        st.write("Every decision is stored with the reviewer's name. You are asked once per browser session.")
        name = st.text_input("Your name", key="reviewer-input")
        if st.form_submit_button("Start reviewing") and name.strip():
            st.session_state["reviewer"] = name.strip()
            st.rerun()
    st.stop()
reviewer: str = st.session_state["reviewer"]
st.query_params["reviewer"] = reviewer


@st.cache_data(show_spinner="Scoring flags…", max_entries=4)
def flag_frame(_index: DatasetIndex, home: str, signature: str, lungs: str) -> pd.DataFrame:
    """Flags of the index (analyses come from the disk cache; cached by work dir, index content and lung flags file)."""
    return compute_flags(config(), _index)


def widget_key(path: str) -> str:
    """A short widget key for an image path (paths are unique, hashes are not)."""
    return hashlib.blake2s(path.encode(), digest_size=6).hexdigest()


def decide(items: list[tuple[str, str]], decision: str, reason: str = "", note: str = "") -> None:
    """Record a decision for (sha256, path) items and say so."""
    try:
        done = ledger.record_many(items, decision, reason, note, reviewer)
    except LedgerError as exc:
        st.session_state["message"] = ("error", str(exc))
        return
    names = ", ".join(d.path.rsplit("/", 1)[-1] for d in done[:3]) + (" …" if len(done) > 3 else "")
    st.session_state["message"] = ("ok", f"{decision} {len(done)} image(s): {names}")
    for _, path in items:
        st.session_state[f"sel-{widget_key(path)}"] = False


def undo(decision_id: int) -> None:
    """Undo one decision and say so."""
    try:
        row = ledger.undo(decision_id, reviewer)
        st.session_state["message"] = ("ok", f"undid #{decision_id}: {row.path} is now {row.decision}")
    except LedgerError as exc:
        st.session_state["message"] = ("error", str(exc))


def repair_now(items: list[tuple[str, str]], options: RepairOptions, progress: Progress | None = None) -> None:
    """Repair (sha256, path) items into the work dir, record the decisions and say so."""
    try:
        result = repair_images(cfg, index.data_dir, items, options, reviewer, progress)
    except (LedgerError, RepairError, MarkingsModelError) as exc:
        st.session_state["message"] = ("error", str(exc))
        return
    skipped = "; ".join(f"{s['path'].rsplit('/', 1)[-1]}: {s['reason']}" for s in result["skipped"][:3])
    st.session_state["message"] = (
        "ok",
        f"repair {len(result['repaired'])} image(s) with {options.method}"
        + (f"; skipped {len(result['skipped'])} ({skipped})" if result["skipped"] else ""),
    )


@st.cache_data(show_spinner="Finding the markings…", max_entries=32)
def repair_preview(sha256: str, options: RepairOptions, _gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The marking mask and repaired image of one film for these options (cached per image and options)."""
    return repair_pixels(_gray, options.validate(), cfg)


def tile_action(key: str, sha256: str, path: str, reason: str, note: str) -> None:
    """Carry out the action picked on a thumbnail tile and clear the control."""
    action = st.session_state.get(f"act-{key}")
    st.session_state[f"act-{key}"] = None
    if action == "View":
        st.session_state["detail"] = path
    elif action == "Discard":
        decide([(sha256, path)], "discard", reason, note)
    elif action == "Keep":
        decide([(sha256, path)], "keep")


missing = missing_analyses(cfg, index)
if missing:
    bar = st.progress(0.0, text=f"Scoring {missing} new images (cached afterwards)…")
    analyse_all(cfg, index, progress=lambda d, t: bar.progress(d / max(t, 1), text=f"Scoring images {d}/{t}"))
    bar.empty()
signature = hashlib.sha256("".join(index.frame["sha256"] + index.frame["path"]).encode()).hexdigest()
frame = flag_frame(index, str(cfg.home), signature, lung_flags_version(cfg))
latest = ledger.latest()
states = {sha: d.decision for sha, d in latest.items()}

kind, text = st.session_state.pop("message", (None, ""))
if kind == "ok":
    st.success(text)
elif kind == "error":
    st.error(text)

with st.sidebar:
    st.caption(f"Reviewer: **{reviewer}**")
    sort_by = st.selectbox("Sort by flag", ["any", *FLAGS], key="sort-by")
    only_flagged = st.checkbox("Only flagged (score ≥ threshold)", value=True, key="only-flagged")
    labels = st.multiselect("Class", sorted(frame["label"].unique()), key="f-label")
    sources = st.multiselect("Source", sorted(frame["source"].unique()), key="f-source")
    splits = st.multiselect("Split", ["train", "val", "test"], key="f-split")
    wanted = st.multiselect("Decision state", DECISION_STATES, default=["undecided"], key="f-state")
    lung_wanted = st.multiselect(
        "Lung segmentation flag",
        sorted(lung_reasons(frame["lung_flags"]).unique()),
        key="f-lungs",
        format_func=describe_lung_flags,
    )
    st.caption(
        f"Lung segmentation recorded for {int(frame['lung_area'].notna().sum())} of {len(frame)} images; "
        "`cxr lungs DATA_DIR` records the rest."
    )
    reason = st.selectbox("Reason for discards", REASONS, key="reason")
    note = st.text_input("Note (optional)", key="note")

queue = review_queue(
    frame[frame["error"] == ""], states, sort_by, only_flagged, labels, sources, splits, wanted, lung_wanted
)
n_pages = max(1, -(-len(queue) // PAGE_SIZE))
st.session_state["page-no"] = min(st.session_state.get("page-no", 1), n_pages)
top = st.columns([2, 1, 1, 1, 1])
top[0].markdown(
    f"**{len(queue)}** images in the queue · {sum(s == 'discard' for s in states.values())} discarded in total"
)
page = int(top[1].number_input("Page", 1, n_pages, key="page-no", label_visibility="collapsed")) - 1
shown = queue.iloc[page * PAGE_SIZE : (page + 1) * PAGE_SIZE]
if (frame["error"] != "").any():
    st.caption(
        f"{int((frame['error'] != '').sum())} unreadable files cannot be reviewed here; the Dataset page lists them."
    )
items = list(zip(shown["sha256"], shown["path"]))
selected = [(s, p) for s, p in items if st.session_state.get(f"sel-{widget_key(p)}")]
top[2].button(
    f"Discard selected ({len(selected)})",
    key="bulk-discard",
    disabled=not selected,
    on_click=decide,
    args=(selected, "discard", reason, note),
)
top[3].button(
    f"Keep selected ({len(selected)})", key="bulk-keep", disabled=not selected, on_click=decide, args=(selected, "keep")
)
top[4].button(
    "Select page",
    key="select-page",
    on_click=lambda: st.session_state.update({f"sel-{widget_key(p)}": True for _, p in items}),
)
marked = frame[(frame["error"] == "") & (frame["markings"] >= FLAGS["markings"].threshold)]
to_repair = [(s, p) for s, p in zip(marked["sha256"], marked["path"]) if states.get(s) not in ("repair", "discard")]
if st.button(
    f"Repair every image flagged for markings ({len(to_repair)})",
    key="bulk-repair",
    disabled=not to_repair,
    help="Inpaint the markings of each flagged image that is not repaired or discarded yet (reversible)",
):
    bar = st.progress(0.0, text="Repairing…")
    repair_now(to_repair, RepairOptions(), lambda d, t: bar.progress(d / max(t, 1), text=f"Repairing {d}/{t}"))
    st.rerun()

for start in range(0, len(shown), COLUMNS):
    for col, row in zip(st.columns(COLUMNS), shown.iloc[start : start + COLUMNS].itertuples(index=False)):
        with col:
            st.image(
                str(thumbnail(cfg, index.abspath(row.path), row.sha256)),
                width="stretch",
                caption=f"{row.path.rsplit('/', 1)[-1]} · {row.label} · {sort_by} {row.score:.2f} · {row.state}"
                + (f" · lungs: {row.lung_flags}" if row.lung_flags else ""),
            )
            key = widget_key(row.path)
            st.segmented_control(
                "action",
                TILE_ACTIONS,
                key=f"act-{key}",
                label_visibility="collapsed",
                on_change=tile_action,
                args=(key, row.sha256, row.path, reason, note),
            )
            st.checkbox("select", key=f"sel-{key}")

detail = st.session_state.get("detail")
rows = frame[frame["path"] == detail] if detail else frame.iloc[:0]
if len(rows):
    row = rows.iloc[0]
    st.divider()
    st.subheader(f"Details: {row['path']}")
    left, right = st.columns([3, 2])
    gray = load_gray(str(index.abspath(row["path"])))
    fig = px.imshow(outline_regions(gray, [tuple(r) for r in row["regions"]]))
    fig.update_layout(height=640, margin=dict(l=0, r=0, t=0, b=0), dragmode="zoom")
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(showticklabels=False)
    left.plotly_chart(fig, key="detail-image", config={"scrollZoom": True})
    left.caption("Drag to zoom, double-click to reset. Boxes: regions the markings detector found.")
    scores = pd.DataFrame(
        {
            "flag": list(FLAGS),
            "score": [round(float(row[n]), 3) for n in FLAGS],
            "threshold": [f.threshold for f in FLAGS.values()],
            "flagged": [bool(row[n] >= f.threshold) for n, f in FLAGS.items()],
        }
    )
    right.dataframe(scores, hide_index=True, width="stretch")
    if row["duplicate_of"]:
        right.write(f"Duplicate of `{row['duplicate_of']}`")
    if row["lung_flags"]:
        right.warning(f"Lung segmentation: {describe_lung_flags(row['lung_flags'], row['lung_area'])}")
    elif pd.notna(row["lung_area"]):
        right.caption(f"Lung segmentation plausible (lung area {row['lung_area']:.0%} of the image).")
    else:
        right.caption("Lung segmentation not recorded yet: `cxr lungs DATA_DIR` checks it.")
    current = latest.get(row["sha256"])
    right.write(
        f"Class {row['label']} · source {row['source']} · split {row['split'] or '-'} · "
        f"decision: **{current.decision if current else 'none'}**"
    )
    one = [(row["sha256"], row["path"])]
    x, y, z = right.columns(3)
    x.button("Discard", key="detail-discard", on_click=decide, args=(one, "discard", reason, note), type="primary")
    y.button("Keep", key="detail-keep", on_click=decide, args=(one, "keep"))
    z.button(
        "Restore",
        key="detail-restore",
        on_click=decide,
        args=(one, "restore"),
        disabled=not current or current.decision not in ("discard", "repair"),
    )
    for d in ledger.history(row["sha256"]):
        right.caption(f"#{d.id} {d.timestamp[:19]} {d.reviewer}: {d.decision} {d.reason} {d.note}".strip())
    st.markdown("**Repair instead of discard**: the markings are inpainted into a copy; the original is never changed.")
    knobs = st.columns(3)
    method = knobs[0].selectbox("Inpainting", METHODS, index=METHODS.index(DEFAULT_METHOD), key="repair-method")
    margin = knobs[1].slider(
        "Mask dilation (share of the image side)", 0.0, 0.05, DEFAULT_MARGIN, 0.005, key="repair-margin"
    )
    contrast = knobs[2].slider(
        "Stroke contrast that counts as a marking", 5, 120, STROKE_CONTRAST, 5, key="repair-contrast"
    )
    options = RepairOptions(method, margin, contrast)
    try:
        mask, fixed = repair_preview(row["sha256"], options, gray)
    except (RepairError, MarkingsModelError) as exc:
        st.error(f"Cannot repair this image: {exc}")
    else:
        views = st.columns(3)
        views[0].image(gray, caption="Original", width="stretch")
        views[1].image(mask.astype(np.uint8) * 255, caption=f"Mask ({mask.mean():.1%} of the image)", width="stretch")
        views[2].image(fixed, caption=f"Repaired ({method})", width="stretch")
        st.button(
            "Repair",
            key="detail-repair",
            type="primary",
            on_click=repair_now,
            args=(one, options),
            disabled=not mask.any(),
            help=None if mask.any() else "No markings detected in this image",
        )

st.divider()
st.subheader("History")
recent = ledger.history(limit=15)
if not recent:
    st.write("No decisions yet.")
for d in recent:
    line, action = st.columns([6, 1])
    extra = f" — undoes #{d.undoes}" if d.undoes else ""
    line.write(
        f"#{d.id} · {d.timestamp[:19].replace('T', ' ')} · {d.reviewer} · **{d.decision}** "
        f"`{d.path}` {d.reason} {d.note}{extra}"
    )
    if latest.get(d.sha256) and latest[d.sha256].id == d.id:
        action.button("Undo", key=f"undo-{d.id}", on_click=undo, args=(d.id,))
