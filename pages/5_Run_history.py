"""Run history: every training run, overlaid curves, one run in detail, delete to trash, promote to the registry."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from cxr_core.evaluate import figures
from cxr_core.evaluate import view as ev
from cxr_core.serve.registry import load_model
from cxr_core.train import jobs
from cxr_core.train.rundir import MODEL_DIR, read_config, read_metrics
from cxr_core.util.atomic import read_json_object
from pages.common import config

cfg = config()
jobs.ensure_worker(cfg)
st.title("Run history")

runs = jobs.list_runs(cfg)
if not runs:
    st.info("No training runs yet: launch one on the Training page or with `cxr train`.")
    st.stop()

runs = [
    r
    if r.test_auc is not None or not r.has_model
    else replace(r, test_auc=(ev.latest_cached(cfg, r.path / "model") or {}).get("roc_auc"))
    for r in runs
]
st.dataframe(
    jobs.runs_frame(runs),
    hide_index=True,
    width="stretch",
    column_config={
        "best val AUC": st.column_config.NumberColumn(format="%.4f"),
        "test AUC": st.column_config.NumberColumn(format="%.4f"),
    },
)

ids = [r.id for r in runs]
by_id = {r.id: r for r in runs}
overlay = st.multiselect("Overlay the curves of", ids, default=ids[: min(2, len(ids))])
if overlay:
    st.plotly_chart(
        figures.epoch_curves({i: read_metrics(by_id[i].path).dropna(how="all") for i in overlay}), key="overlay"
    )

st.divider()
chosen = st.selectbox("Open a run", ids, format_func=lambda i: f"{i} ({by_id[i].status})")
run = by_id[chosen]
st.subheader(run.id)
c1, c2, c3, c4 = st.columns(4)
c1.metric("Status", run.status)
c2.metric(
    "Best val AUC",
    "n/a" if run.best_val_auc is None else f"{run.best_val_auc:.4f}",
    help=None if run.best_epoch is None else f"epoch {run.best_epoch}",
)
c3.metric("Test AUC", "n/a" if run.test_auc is None else f"{run.test_auc:.4f}")
c4.metric("Epochs", f"{run.epoch}/{run.epochs}")
if run.note:
    st.warning(run.note)
if run.status == "failed" and run.error:
    st.error("The run failed. End of its traceback:")
    st.code(run.error[-3000:], language="text")

tab_curves, tab_config, tab_eval = st.tabs(["Curves", "Configuration", "Evaluation"])
with tab_curves:
    st.plotly_chart(figures.epoch_curves({run.id: read_metrics(run.path).dropna(how="all")}), key="run-curves")
with tab_config:
    st.json(read_config(run.path) or run.config)
with tab_eval:
    evaluation = (
        read_json_object(run.path / MODEL_DIR / "evaluation.json")
        or (ev.latest_cached(cfg, run.path / "model") if run.has_model else None)
        or {}
    )
    if run.has_model and not evaluation and st.button("Evaluate on the test split", key=f"evaluate-{run.id}"):
        try:
            with st.spinner("Evaluating on the test split…"):
                evaluation = ev.cached_evaluation(cfg, load_model(run.path / "model"), ev.open_index(cfg, cfg.data_dir))
        except (ValueError, OSError) as exc:
            st.error(f"Cannot evaluate: {str(exc).splitlines()[0]}")
    if evaluation:
        ci = evaluation.get("ci95") or {}
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "metric": k,
                        "value": evaluation.get(k),
                        "95% CI": "–" if not ci.get(k) else f"{ci[k][0]:.3f} – {ci[k][1]:.3f}",
                    }
                    for k in ("roc_auc", "pr_auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "ece")
                    if k in evaluation
                ]
            ),
            hide_index=True,
        )
    card = run.path / "model" / "card.md"
    if card.is_file():
        with st.expander("Model card"):
            st.markdown(card.read_text(encoding="utf-8"))
    if not evaluation:
        st.info("Not evaluated on the test split yet. Promote the model to review it in depth on the Evaluation page.")

st.divider()
left, right = st.columns(2)
with left:
    st.markdown("**Promote to the model registry**")
    if run.has_model:
        name = st.text_input("Model name", value=run.id.split("-", 2)[-1], key=f"name-{run.id}")
        make_default = st.checkbox("Make it the default model", key=f"default-{run.id}")
        if st.button("Promote", key=f"promote-{run.id}"):
            try:
                target = jobs.promote(cfg, run.id, name.strip(), make_default)
            except jobs.JobError as exc:
                st.error(f"Not promoted: {exc}")
            else:
                st.success(
                    f"Registered as `{target.name}`"
                    + (" (default)" if make_default else "")
                    + ": it now appears on the Predict and Evaluation pages."
                )
                st.page_link(
                    "pages/6_Evaluation.py", label=f"Evaluate {target.name}", query_params={"model": target.name}
                )
    else:
        st.caption("Only a finished run with a model can be promoted.")
with right:
    st.markdown("**Delete**")
    if st.session_state.get("confirm-delete") == run.id:
        st.warning(f"Move run {run.id} to the trash folder `{cfg.trash_dir}`?")
        yes, no = st.columns(2)
        if yes.button("Yes, move to trash", type="primary", key=f"yes-{run.id}"):
            try:
                target = jobs.delete_run(cfg, run.id)
            except jobs.JobError as exc:
                st.error(str(exc))
            else:
                st.session_state.pop("confirm-delete", None)
                st.success(f"Moved to {target}")
                st.rerun()
        if no.button("Keep it", key=f"no-{run.id}"):
            st.session_state.pop("confirm-delete", None)
            st.rerun()
    elif st.button(
        "Delete run…",
        key=f"delete-{run.id}",
        disabled=run.status in ("queued", "running"),
        help="cancel a queued or running run first",
    ):
        st.session_state["confirm-delete"] = run.id
        st.rerun()
