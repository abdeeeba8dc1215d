"""Evaluation: the figures a clinician trusts for any registered model, on the test split or any dataset folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from cxr_core.evaluate import figures
from cxr_core.evaluate import view as ev
from cxr_core.evaluate.evaluate import HEADLINE, SPLIT_CHOICES
from cxr_core.evaluate.report import figures as report_figures
from cxr_core.serve.registry import LoadedModel, list_models, load_model
from pages.common import CAUTION, config, load_gray

cfg = config()
st.title("Evaluation")
st.caption(CAUTION)


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def model_for(path: str, version: str) -> LoadedModel:
    """A registry model, loaded once per version."""
    return load_model(path)


@st.cache_resource(max_entries=2, show_spinner="Preparing Grad-CAM…")
def explainer_for(path: str, version: str) -> Any:
    """The Grad-CAM explainer of a model, built once per version."""
    from cxr_core.explain.cam import Explainer

    return Explainer(model_for(path, version).model)


def evaluation(model: LoadedModel, data_dir: str, split: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """The cached evaluation and per-image predictions (computed with a progress bar the first time)."""
    index = ev.open_index(cfg, data_dir)
    bar = st.progress(0.0, text="Predicting…")
    result = ev.cached_evaluation(
        cfg,
        model,
        index,
        split,
        progress=lambda done, total: bar.progress(done / max(total, 1), text=f"Predicting {done}/{total}"),
    )
    cases = ev.case_predictions(cfg, model, index, split)
    bar.empty()
    return result, cases


def metrics_table(result: dict[str, Any]) -> pd.DataFrame:
    """Headline metrics with their 95% CIs and the values at threshold 0.5."""
    ci, half = result.get("ci95") or {}, result.get("at_0_5") or {}
    return pd.DataFrame(
        [
            {
                "metric": key,
                "value": result.get(key),
                "95% CI low": (ci.get(key) or [None, None])[0],
                "95% CI high": (ci.get(key) or [None, None])[1],
                "at threshold 0.5": half.get(key),
            }
            for key in HEADLINE
        ]
    )


def with_point(fig: go.Figure, x: float | None, y: float | None) -> go.Figure:
    """Mark the operating point of the current threshold on a curve figure."""
    if x is not None and y is not None:
        fig.add_trace(
            go.Scatter(
                x=[x],
                y=[y],
                mode="markers",
                name="current threshold",
                marker={"size": 13, "symbol": "x", "color": "black"},
            )
        )
    return fig


def audit_panel(model: LoadedModel) -> None:
    """The shortcut audit verdict (``audit.json``) shown prominently, or how to run it."""
    st.subheader("Shortcut audit")
    audit = ev.audit_of(model.path)
    if not audit:
        st.info(f"This model has not been audited for shortcuts yet: `cxr audit --model {model.path}`.")
        return
    show = {"shortcut": st.error, "mixed": st.warning, "undetermined": st.info}.get(
        str(audit.get("verdict_level")), st.success
    )
    show(f"**Verdict: {audit.get('verdict_level')}.** {audit.get('verdict', '')}")
    numbers = {
        "AUC": audit.get("auc"),
        "AUC, lungs blanked": audit.get("auc_lungs_blanked"),
        "AUC, lungs only": audit.get("auc_lungs_only"),
        "Grad-CAM in lungs": audit.get("lung_attention_mean"),
        "image-statistics baseline AUC": audit.get("stats_baseline_auc"),
    }
    cols = st.columns(len(numbers))
    for col, (label, value) in zip(cols, numbers.items()):
        col.metric(label, "n/a" if value is None else f"{value:.2f}")


def confounding_panel(model: LoadedModel, result: dict[str, Any]) -> None:
    """Per-source table, label x source table, leave-one-source-out figure and a plain-language explanation."""
    st.subheader("Sources and confounding")
    conf = result.get("confounding") or {}
    source_acc = conf.get("source_only_accuracy")
    st.markdown(
        "In this kind of dataset COVID and Normal images often come from **different hospitals and archives**. "
        "A model can then score well by recognising *where an image came from* (its processing, borders, markings) "
        "instead of the lungs. "
        + (
            f"Here, knowing only the source predicts the label with accuracy **{source_acc:.0%}**"
            f" (Cramér's V {conf.get('cramers_v', 0):.2f}). "
            if source_acc is not None
            else ""
        )
        + "The honest figure is the accuracy on a source the model never saw in training (leave-one-source-out), "
        "shown next to the in-distribution result."
    )
    by_source = result.get("by_source") or {}
    c1, c2 = st.columns(2)
    c1.dataframe(pd.DataFrame(by_source).T, width="stretch")
    c1.caption("Per source at the model's threshold (test images of each source).")
    c2.dataframe(pd.DataFrame(result.get("label_by_source") or {}).T.fillna(0).astype(int), width="stretch")
    c2.caption("Images per source and label.")
    st.plotly_chart(figures.source_figure(by_source), key="by-source")


def loso_panel(model: LoadedModel, result: dict[str, Any]) -> None:
    """The headline: how the model's recipe does on a source it never saw (leave-one-source-out)."""
    st.subheader("A new hospital: leave-one-source-out")
    loso = ev.loso_of(model, result)
    if not loso.get("sources"):
        st.info(
            "Leave-one-source-out has not been run for this model (it retrains once per source): "
            f"`cxr evaluate --model {model.path} --leave-one-source-out`. Until then the in-distribution figures "
            "below are all there is, and they overstate what to expect at a new hospital."
        )
        return
    worst = min(loso["sources"].items(), key=lambda item: item[1].get("accuracy", 1.0))
    pooled = loso.get("pooled") or {}
    cols = st.columns(3)
    cols[0].metric("Worst held-out source", f"{worst[1].get('accuracy', 0):.2f}", worst[0], delta_color="off")
    cols[1].metric("Pooled held-out ROC AUC", "n/a" if pooled.get("roc_auc") is None else f"{pooled['roc_auc']:.2f}")
    cols[2].metric("In-distribution accuracy", "n/a" if result.get("accuracy") is None else f"{result['accuracy']:.2f}")
    st.markdown(
        "Each bar is a source the model's recipe was retrained *without* and then tested on: the closest estimate "
        "of a hospital it has never seen. For a Normal-only source it is the share called Normal, for a COVID-only "
        "source the share called COVID."
    )
    st.plotly_chart(figures.loso_figure(loso["sources"], result.get("accuracy")), key="loso")
    if loso.get("method"):
        st.caption(str(loso["method"]))


def coverage_panel(result: dict[str, Any]) -> None:
    """How many images the model may answer (gate, familiarity), its metrics on those, the risk-coverage curves."""
    st.subheader("Coverage: which images get an answer")
    cov = result.get("coverage")
    if not cov:
        st.info("This evaluation predates the gate and familiarity score: re-run `cxr evaluate` to see coverage.")
        return
    familiar = "n/a (no familiarity fit)" if cov["familiar"] is None else f"{cov['familiar']} / {cov['n']}"
    cols = st.columns(4)
    cols[0].metric("Pass the chest X-ray gate", f"{cov['gate_passed']} / {cov['n']}")
    cols[1].metric("Also familiar to the model", familiar)
    covered = cov["on_covered"]
    for col, key in zip(cols[2:], ("sensitivity", "specificity")):
        value, everyone = covered.get(key), cov["on_all"].get(key)
        col.metric(
            f"{key.capitalize()} on those",
            "n/a" if value is None else f"{value:.3f}",
            None if value is None or everyone is None else f"{value - everyone:+.3f} vs all images",
        )
    if cov["gate_reasons"]:
        st.caption("Refused by the gate: " + "; ".join(f"{reason} ({n})" for reason, n in cov["gate_reasons"].items()))
    if not cov["familiarity_fitted"]:
        st.caption("This model has no familiarity fit: `cxr familiarity --model DIR` adds one.")
    st.plotly_chart(figures.risk_coverage_figure(cov["risk_coverage"]), key="risk-coverage")
    st.caption(
        "Read from the right: at coverage 1 every image is answered. Abstaining on images that fail the gate "
        "and then on the least familiar (or least confident) ones should lower the error rate of the answers "
        "that remain."
    )


def error_gallery(model: LoadedModel, cases: pd.DataFrame, threshold: float) -> None:
    """The most confident false positives and false negatives with their Grad-CAM overlays."""
    st.subheader("Worst errors")
    st.caption(
        "The false positives with the highest P(COVID) and the false negatives with the lowest, at the "
        "current threshold; the overlay shows where the model looked (Grad-CAM of the predicted class)."
    )
    if not st.toggle("Show the worst errors with Grad-CAM", value=True):
        return
    explainer = explainer_for(str(model.path), model.version)
    for kind, rows in ev.worst_errors(cases, threshold).items():
        st.markdown(f"**{kind.capitalize()}** ({len(rows)})")
        if rows.empty:
            st.caption("none at this threshold")
            continue
        cols = st.columns(4)
        for col, row in zip(cols, rows.itertuples()):
            image, p = ev.gradcam_overlay(model, explainer, load_gray(row.abspath))
            col.image(image, caption=f"{row.label} from {row.source}: P(COVID) {p:.2f}", width="stretch")


models = list_models(cfg)
if not models:
    st.info(
        "No registered models yet: finish a training run and promote it on the Run history page, "
        "or register one with `cxr models`."
    )
    st.stop()
names = [m.name for m in models]
default_name = next((m.name for m in models if m.default), names[0])
wanted = st.query_params.get("model")
name = st.selectbox(
    "Model",
    names,
    index=names.index(wanted if wanted in names else default_name),
    format_func=lambda n: f"{n} (default)" if n == default_name else n,
)
info = next(m for m in models if m.name == name)
model = model_for(info.path, info.version)
st.caption(
    f"{info.arch}, {info.params or 0:,} parameters, version {info.version}, threshold {model.threshold:.3f}, "
    f"temperature {model.temperature:.2f}"
)

source = st.radio("Evaluate on", ["the configured dataset", "another dataset folder"], horizontal=True)
if source == "the configured dataset":
    data_dir, split = str(cfg.data_dir), st.selectbox("Split", SPLIT_CHOICES, index=0)
else:
    data_dir = st.text_input("Dataset folder (COVID/ and Normal/ image folders)", value="")
    split = st.selectbox(
        "Split",
        SPLIT_CHOICES,
        index=SPLIT_CHOICES.index("all"),
        help="'all' for an external dataset that was never split",
    )
    if not data_dir:
        st.stop()
try:
    result, cases = evaluation(model, data_dir, split)
except (ValueError, OSError) as exc:
    st.error(f"Cannot evaluate: {str(exc).splitlines()[0]}")
    st.stop()

loso_panel(model, result)
audit_panel(model)
st.subheader(f"Metrics on {Path(result['data']['dir']).name} [{split}]")
st.markdown(
    f"n = {result['n']} images ({result.get('n_covid', 0)} COVID, {result.get('n_normal', 0)} Normal); "
    f"95% CIs by bootstrap over {result['bootstrap']['n_clusters']} {result['bootstrap']['cluster']} clusters. "
    + ("(cached)" if result.get("cached") else "")
)
if result.get("training_overlap"):
    st.warning(
        f"{result['training_overlap']} of these images were in this model's training or validation split: "
        "these numbers are optimistic."
    )
st.dataframe(metrics_table(result), hide_index=True, width="stretch")

threshold = st.slider(
    "Decision threshold",
    0.0,
    1.0,
    float(model.threshold),
    0.01,
    help=f"stored threshold {model.threshold:.3f}, chosen on validation for sensitivity "
    f"≥ {model.target_sensitivity:.2f}",
)
live = ev.at_threshold(cases, threshold)
cols = st.columns(4)
for col, key in zip(cols, ("sensitivity", "specificity", "ppv", "npv")):
    value = live.get(key)
    col.metric(key.upper() if len(key) == 3 else key.capitalize(), "n/a" if value is None else f"{value:.3f}")
figs = report_figures({**result, "confusion": live["confusion"], "threshold": threshold})
c1, c2, c3 = st.columns(3)
counts = live["confusion"]
sens, spec, ppv = live.get("sensitivity"), live.get("specificity"), live.get("ppv")
if "roc" in figs:
    c1.plotly_chart(with_point(figs["roc"], None if spec is None else 1 - spec, sens), key="roc")
if "pr" in figs:
    c2.plotly_chart(with_point(figs["pr"], sens, ppv), key="pr")
c3.plotly_chart(figs["confusion"], key="confusion")
st.plotly_chart(figs["reliability"], key="reliability")
st.caption(
    f"ECE before calibration {result.get('ece_uncalibrated') or 0:.3f}, after temperature scaling "
    f"(T = {result.get('temperature', 1):.2f}) {result.get('ece') or 0:.3f}."
)

coverage_panel(result)
confounding_panel(model, result)
error_gallery(model, cases, threshold)
st.subheader("Model card")
card_md = Path(model.path) / "card.md"
st.markdown(card_md.read_text(encoding="utf-8") if card_md.is_file() else "This model has no card.md.")
