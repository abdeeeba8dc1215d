"""Training: configure a run, see its size and speed, launch it in the background and watch it learn live."""

from __future__ import annotations

from typing import Any

import streamlit as st

from cxr_core.evaluate import figures
from cxr_core.preprocess.normalise import METHODS
from cxr_core.train import jobs
from cxr_core.train.architectures import ARCHITECTURES
from cxr_core.train.config import train_options
from cxr_core.train.rundir import log_tail, read_batches, read_metrics
from pages.common import config, dataset_index, no_dataset_message
from pages.option_form import option_widget, options_form

REFRESH_SECONDS = 3

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
    """Number inputs for the normalisation method's parameters (its defaults pre-filled); the changed ones."""
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
    """The run settings (every option of the page's TrainConfig specs) as a request for :func:`jobs.launch`."""
    specs = {spec.name: spec for spec in train_options() if spec.option.on_page}
    arch = option_widget(
        st,
        specs.pop("arch"),
        "cxr_net",
        help_text="\n\n".join(f"**{a}**: {ARCHITECTURES[a].summary}" for a in sorted(ARCHITECTURES)),
    )
    arch_spec = ARCHITECTURES[arch]
    values = {"size": int(arch_spec.default_size), "lr": float(arch_spec.default_lr), "seed": int(cfg.seed)}
    keys = {name: f"{name}-{arch}" for name in ("size", "lr", "weights")}
    helps = {"method": "\n\n".join(f"**{m}**: {METHODS[m].summary}" for m in sorted(METHODS))}
    disabled = frozenset() if arch_spec.pretrained else frozenset({"weights"})
    request = {
        "arch": arch,
        **options_form(
            list(specs.values()),
            values,
            keys,
            helps,
            disabled,
            custom={"method_params": lambda chosen: method_params(chosen["method"])},
        ),
    }
    limit = request.get("limit")
    return request, min(n_train, int(limit)) if limit else n_train


def size_and_speed(request: dict[str, Any], images: int) -> None:
    """Parameter count and (on demand) the measured time per epoch of the chosen settings on ``images`` images."""
    size = request.get("size") or ARCHITECTURES[request["arch"]].default_size
    count = parameter_count(request["arch"], size) if size > 0 else "size must be positive"
    c1, c2, c3 = st.columns(3)
    c1.metric(
        "Parameters", f"{count:,}" if isinstance(count, int) else "n/a", help=None if isinstance(count, int) else count
    )
    batch = max(int(request.get("batch") or 1), 1)
    key = (request["arch"], size, batch, images)
    estimate = st.session_state.get("estimate", {}).get(key)
    if c3.button("Measure time per epoch", help="times a few training steps of this model on random images"):
        try:
            with st.spinner("Timing a few training steps…"):
                estimate = jobs.estimate_epoch_seconds(request["arch"], size, batch, images)
            st.session_state.setdefault("estimate", {})[key] = estimate
        except ValueError as exc:
            st.error(str(exc))
    if estimate:
        c2.metric(
            "Estimated time per epoch",
            f"{estimate['seconds_per_epoch'] / 60:.1f} min",
            help=f"{estimate['images_per_second']:.0f} images/s measured on {images} training images "
            "(data loading and validation add to it)",
        )
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
            if st.button(
                "Cancel run", key=f"cancel-{summary.id}", help="stops after the current batch; keeps the checkpoint"
            ):
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
    status = jobs.effective_status(run_dir)
    metrics, batches = read_metrics(run_dir).dropna(how="all"), read_batches(run_dir).dropna(how="all")
    fraction, eta = jobs.progress(status, metrics)
    label = {
        "running": "🟢 running",
        "queued": "⏳ queued",
        "done": "✅ done",
        "failed": "❌ failed",
        "cancelled": "⏹ cancelled",
        "interrupted": "⚠️ interrupted",
    }.get(summary.status, summary.status)
    st.markdown(
        f"**{run_id}** — {label}"
        + (" (cancel requested)" if summary.cancel_requested and summary.status == "running" else "")
        + (f" — {summary.note}" if summary.note else "")
    )
    batch_text = (
        f", batch {status.get('batch', 0)}/{status.get('batches_per_epoch', '?')}"
        if summary.status == "running"
        else ""
    )
    st.progress(
        fraction,
        text=f"epoch {summary.epoch}/{summary.epochs}{batch_text} — "
        f"{'ETA ' + duration(eta) if summary.status == 'running' else summary.status}",
    )
    run_actions(summary)
    if summary.status == "failed" and summary.error:
        st.error("The run failed. End of its traceback:")
        st.code(summary.error[-3000:], language="text")
    if summary.best_epoch:
        best = run_dir / "checkpoints" / "best.keras"
        st.markdown(
            f"Best checkpoint: epoch **{summary.best_epoch}**, validation AUC **{summary.best_val_auc:.4f}**"
            + (f" (`{best}`)" if best.exists() else "")
        )
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
        st.markdown(
            f"Dataset: `{index.data_dir}` — {n_train} training, {len(index.images('val'))} validation, "
            f"{len(index.images('test'))} test images; **{int(frame['excluded'].sum())} excluded** "
            "(discarded in curation or duplicates of training images)."
        )
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
