"""Training: configure a run, see its size and speed, launch it in the background and watch it learn live."""

from __future__ import annotations

from typing import Any

import streamlit as st

from cxr_core import figures, jobs
from cxr_core.architectures import ARCHITECTURES
from cxr_core.normalise import METHODS
from cxr_core.preprocess import ROI_MODES
from cxr_core.training import STRATEGIES
from cxr_core.pipeline import Augmentation
from cxr_core.rundir import log_tail, read_batches, read_metrics
from pages.common import config, dataset_index, no_dataset_message

REFRESH_SECONDS = 3
SAMPLINGS = {"class weights (inverse frequency)": "class_weight", "balanced sampling": "balanced",
             "source-balanced sampling (classes, then sources within a class)": "source_balanced", "none": "none"}
ROI_LABELS = {"none": "none (whole film)", "lung_crop": "lung_crop (crop to the lungs)",
              "lung_mask": "lung_mask (blank everything outside the lungs)"}

cfg = config()
jobs.ensure_worker(cfg)
st.title("Training")
st.caption("Runs train in the background (`cxr train`): closing the tab or restarting the server does not stop them.")


@st.cache_data(show_spinner="Counting parameters…", max_entries=64)
def parameter_count(arch: str, size: int) -> int | str:
    """Parameters of the architecture at this size (a message string when it cannot be built)."""
    try:
        return jobs.count_params(arch, size)
    except ValueError as exc:
        return str(exc)


def method_params(method: str) -> dict[str, Any]:
    """Number inputs for the normalisation method's parameters (its defaults pre-filled)."""
    values: dict[str, Any] = {}
    defaults = METHODS[method].defaults
    cols = st.columns(max(len(defaults), 1))
    for col, (name, default) in zip(cols, defaults.items()):
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            continue
        step = 1 if isinstance(default, int) else 0.1
        values[name] = col.number_input(f"{method}: {name}", value=default, step=step, key=f"param-{method}-{name}")
    return {k: v for k, v in values.items() if v != defaults[k]}


def training_form(n_train: int) -> tuple[dict[str, Any], int]:
    """The run settings as a request for :func:`cxr_core.jobs.launch` (not yet validated) and the training images."""
    arch_names = sorted(ARCHITECTURES)
    c1, c2, c3 = st.columns(3)
    arch = c1.selectbox("Architecture", arch_names, index=arch_names.index("cxr_net") if "cxr_net" in arch_names else 0,
                        help="\n\n".join(f"**{a}**: {ARCHITECTURES[a].summary}" for a in arch_names))
    spec = ARCHITECTURES[arch]
    size = c2.number_input("Image size (px)", value=int(spec.default_size), step=16, key=f"size-{arch}")
    method = c3.selectbox("Normalisation", sorted(METHODS), index=sorted(METHODS).index("clahe"),
                          help="\n\n".join(f"**{m}**: {METHODS[m].summary}" for m in sorted(METHODS)))
    params = method_params(method)
    c1, c2, c3 = st.columns(3)
    roi = c1.selectbox("Region of interest", ROI_MODES, format_func=ROI_LABELS.get,
                       help="lung_crop and lung_mask use the lung segmenter of models/lungs")
    strategy = c2.selectbox("Distribution strategy", STRATEGIES, help="auto: mirrored over several GPUs, else default")
    weights = c3.text_input("Pre-trained weights", value="", disabled=spec.pretrained is None, key=f"weights-{arch}",
                            help="vgg19_frozen and densenet121 only: empty = imagenet, or a weights file path")
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", value=30, step=1, help="maximum epochs; early stopping may end sooner")
    batch = c2.number_input("Batch size", value=32, step=1)
    lr = c3.number_input("Learning rate", value=float(spec.default_lr), step=1e-4, format="%.5f", key=f"lr-{arch}")
    patience = c4.number_input("Early-stopping patience (epochs)", value=8, step=1)
    c1, c2, c3, c4 = st.columns(4)
    sampling = SAMPLINGS[c1.selectbox("Class imbalance", list(SAMPLINGS))]
    mixed = c2.toggle("Mixed precision (bf16)", value=False)
    ema = c2.toggle("EMA of weights", value=True, help="validate and keep a moving average of the weights")
    seed = c3.number_input("Seed", value=int(cfg.seed), step=1)
    limit = c4.number_input("Limit training images (0 = all)", value=0, step=16,
                            help="smoke runs: train on this many images only")
    aug_defaults = Augmentation()
    augment = st.toggle("Augmentation", value=True)
    strengths: dict[str, Any] = {}
    if augment:
        c1, c2, c3, c4, c5 = st.columns(5)
        strengths = {
            "rotation": c1.number_input("rotation (deg)", value=aug_defaults.rotation, step=1.0),
            "zoom": c2.number_input("zoom", value=aug_defaults.zoom, step=0.05),
            "shift": c3.number_input("shift", value=aug_defaults.shift, step=0.05),
            "shear": c4.number_input("shear", value=aug_defaults.shear, step=0.05),
            "hflip": c5.toggle("horizontal flip", value=aug_defaults.flip,
                               help="off by default: chest X-rays are not left-right symmetric"),
        }
    request: dict[str, Any] = {
        "arch": arch, "size": int(size), "method": method, "epochs": int(epochs), "batch": int(batch), "lr": float(lr),
        "patience": int(patience), "seed": int(seed), "augment": augment, **strengths,
        "mixed_precision": mixed, "limit": int(limit) or None, "method_params": params or None,
        "roi": roi, "strategy": strategy, "ema": ema, "sampling": sampling, "weights": weights.strip() or None,
    }
    return request, min(n_train, int(limit)) if limit > 0 else n_train


def size_and_speed(request: dict[str, Any], images: int) -> None:
    """Parameter count and (on demand) the measured time per epoch of the chosen settings on ``images`` images."""
    count = parameter_count(request["arch"], request["size"]) if request["size"] > 0 else "size must be positive"
    c1, c2, c3 = st.columns(3)
    c1.metric("Parameters", f"{count:,}" if isinstance(count, int) else "n/a", help=None if isinstance(count, int) else count)
    key = (request["arch"], request["size"], request["batch"], images)
    estimate = st.session_state.get("estimate", {}).get(key)
    if c3.button("Measure time per epoch", help="times a few training steps of this model on random images"):
        try:
            with st.spinner("Timing a few training steps…"):
                estimate = jobs.estimate_epoch_seconds(request["arch"], request["size"], max(request["batch"], 1), images)
            st.session_state.setdefault("estimate", {})[key] = estimate
        except ValueError as exc:
            st.error(str(exc))
    if estimate:
        c2.metric("Estimated time per epoch", f"{estimate['seconds_per_epoch'] / 60:.1f} min",
                  help=f"{estimate['images_per_second']:.0f} images/s measured on {images} training images "
                       "(data loading and validation add to it)")
    else:
        c2.metric("Estimated time per epoch", "not measured")


def duration(seconds: float | None) -> str:
    """Seconds as ``1 h 02 min`` / ``3 min 05 s`` / ``12 s``."""
    if seconds is None:
        return "unknown"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def run_actions(summary: jobs.RunSummary) -> None:
    """Cancel / Resume buttons for a run, each calling the job runner."""
    try:
        if summary.status in ("queued", "running") and not summary.cancel_requested:
            if st.button("Cancel run", key=f"cancel-{summary.id}", help="stops after the current batch; keeps the checkpoint"):
                st.info(jobs.cancel(cfg, summary.id))
        elif summary.status in jobs.RESUMABLE and (summary.path / "status.json").exists():
            if st.button("Resume run", key=f"resume-{summary.id}", help="continues from the latest checkpoint"):
                jobs.resume(cfg, summary.id)
                st.success("Resume queued.")
    except jobs.JobError as exc:
        st.error(str(exc))


def live_view(run_id: str) -> None:
    """Status, progress with ETA, curves, best checkpoint and log of one run (re-drawn by the fragment)."""
    run_dir = cfg.runs_dir / run_id
    if not run_dir.is_dir():
        st.info("This run no longer exists (deleted?).")
        return
    summary = jobs.summarize(run_dir)
    status = jobs.read_status(run_dir)
    metrics, batches = read_metrics(run_dir).dropna(how="all"), read_batches(run_dir).dropna(how="all")
    fraction, eta = jobs.progress(status, metrics)
    label = {"running": "🟢 running", "queued": "⏳ queued", "done": "✅ done", "failed": "❌ failed",
             "cancelled": "⏹ cancelled", "interrupted": "⚠️ interrupted"}.get(summary.status, summary.status)
    st.markdown(f"**{run_id}** — {label}" + (" (cancel requested)" if summary.cancel_requested and
                                            summary.status == "running" else "") + (f" — {summary.note}" if summary.note else ""))
    batch_text = f", batch {status.get('batch', 0)}/{status.get('batches_per_epoch', '?')}" if summary.status == "running" else ""
    st.progress(fraction, text=f"epoch {summary.epoch}/{summary.epochs}{batch_text} — "
                               f"{'ETA ' + duration(eta) if summary.status == 'running' else summary.status}")
    run_actions(summary)
    if summary.status == "failed" and summary.error:
        st.error("The run failed. End of its traceback:")
        st.code(summary.error[-3000:], language="text")
    if summary.best_epoch:
        best = run_dir / "checkpoints" / "best.keras"
        st.markdown(f"Best checkpoint: epoch **{summary.best_epoch}**, validation AUC **{summary.best_val_auc:.4f}**"
                    + (f" (`{best}`)" if best.exists() else ""))
    st.plotly_chart(figures.epoch_curves({run_id: metrics}), key=f"epochs-{run_id}")
    st.plotly_chart(figures.batch_loss_curve(batches), key=f"batches-{run_id}")
    st.caption(f"{len(metrics)} epochs and {len(batches)} batch records so far")
    with st.expander("Log (last lines)", expanded=summary.status in ("failed", "running")):
        st.code(log_tail(run_dir, 25) or "(no log yet)", language="text")
    previous = st.session_state.get(f"was-active-{run_id}")
    active = summary.status in ("queued", "running")
    st.session_state[f"was-active-{run_id}"] = active
    if previous and not active:
        st.rerun()


index = dataset_index()
with st.container(border=True):
    st.subheader("New run")
    if index is None:
        no_dataset_message()
        n_train = 0
    else:
        frame = index.frame
        n_train = len(index.images("train"))
        st.markdown(f"Dataset: `{index.data_dir}` — {n_train} training, {len(index.images('val'))} validation, "
                    f"{len(index.images('test'))} test images; **{int(frame['excluded'].sum())} excluded** "
                    "(discarded in curation or duplicates of training images).")
    request, images = training_form(n_train)
    size_and_speed(request, images)
    if st.button("Launch training", type="primary", disabled=index is None):
        try:
            run_dir = jobs.launch(cfg, request)
        except jobs.JobError as exc:
            st.error(f"Not launched: {exc}")
        else:
            st.session_state["selected-run"] = run_dir.name
            active = [r for r in jobs.list_runs(cfg) if r.status == "running" and r.id != run_dir.name]
            st.success(f"Run {run_dir.name} " + ("queued behind the running one." if active else "launched."))

runs = jobs.list_runs(cfg)
st.subheader("Live view")
if not runs:
    st.info("No runs yet: launch one above.")
else:
    ids = [r.id for r in runs]
    if st.session_state.get("selected-run") not in ids:
        st.session_state["selected-run"] = next((r.id for r in runs if r.status in ("running", "queued")), ids[0])
    chosen = st.selectbox("Run", ids, key="selected-run")
    any_active = any(r.status in ("queued", "running") for r in runs)
    st.fragment(run_every=REFRESH_SECONDS if any_active else None)(live_view)(chosen)
