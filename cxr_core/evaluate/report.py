"""Evaluation reports: Markdown, plotly figures (ROC, PR, confusion matrix, reliability before/after) and files.

A model's own test evaluation is written into its directory (``evaluation.json``, ``evaluation.md``,
``figures/*.json``) and refreshes ``card.json``/``card.md``. An evaluation on another dataset or
split goes to ``evaluations/<dataset>-<split>/`` inside the model directory and is summarised in the card under
``external_evaluations``, so it never overwrites the model's own test figures. The ``.json`` files are plotly
figure specs (``plotly.io.from_json``): the dashboard draws them, and they work offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxr_core.evaluate.card import (
    card_metrics,
    card_with_evaluation,
    card_with_external,
    card_with_loso,
    is_own_result,
    metrics_markdown,
    read_card,
    result_key,
    write_card,
)
from cxr_core.serve.registry import EVALUATION_FILE
from cxr_core.train.rundir import write_json_safe
from cxr_core.util.atomic import write_text_atomic

FIGURES_DIR = "figures"
EVALUATIONS_DIR = "evaluations"


def _fmt(value: Any) -> str:
    """A metric for Markdown ('–' when undefined)."""
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def render_markdown(result: Mapping[str, Any]) -> str:
    """``evaluation.md``: headline metrics with CIs, per-source table, calibration, label x source table."""
    model = result.get("model", {})
    lines = [f"# Evaluation of {model.get('name')} ({model.get('version')})", ""]
    lines += metrics_markdown(card_metrics(result))
    lines += [
        "",
        "## Calibration",
        "",
        f"Temperature {_fmt(result.get('temperature'))}; ECE ({result.get('ece_bins')} equal-width bins) "
        f"{_fmt(result.get('ece_uncalibrated'))} uncalibrated, {_fmt(result.get('ece'))} calibrated.",
        "",
        "## Label x source",
        "",
        "Source alone predicts the label with accuracy "
        f"{_fmt(result.get('confounding', {}).get('source_only_accuracy'))} (Cramér's V "
        f"{_fmt(result.get('confounding', {}).get('cramers_v'))}): a high AUC here may reflect where an image came "
        "from. See leave-one-source-out in the model card.",
        "",
    ]
    table = result.get("label_by_source") or {}
    labels = sorted({label for row in table.values() for label in row})
    lines += ["| source | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {src} | " + " | ".join(str(row.get(lbl, 0)) for lbl in labels) + " |" for src, row in table.items()]
    bootstrap = result.get("bootstrap", {})
    lines += [
        "",
        f"95% CIs: percentile bootstrap over {bootstrap.get('n_clusters')} {bootstrap.get('cluster')} "
        f"clusters, {bootstrap.get('n_boot')} resamples, seed {bootstrap.get('seed')}. Left out: "
        + (", ".join(f"{k} {v}" for k, v in (result.get("excluded") or {}).items() if v) or "none")
        + ".",
    ]
    overlap = result.get("training_overlap")
    lines.append("" if overlap is None else f"\nImages also in the model's train/val split: {overlap}.")
    lines += coverage_markdown(result.get("coverage"))
    return "\n".join(lines) + "\n"


def coverage_markdown(cov: Mapping[str, Any] | None) -> list[str]:
    """The coverage lines of a report: images passing the gate and familiar, and the metrics on those."""
    if not cov:
        return []
    covered = cov.get("on_covered") or {}
    familiar = "no familiarity fit" if cov.get("familiar") is None else f"{cov['familiar']} also familiar to the model"
    lines = [
        "",
        "## Coverage",
        "",
        f"{cov['gate_passed']} of {cov['n']} images pass the chest X-ray gate, {familiar}: {cov['covered']} "
        f"answered ({_fmt(cov.get('coverage'))}). On those: sensitivity {_fmt(covered.get('sensitivity'))}, "
        f"specificity {_fmt(covered.get('specificity'))}, accuracy {_fmt(covered.get('accuracy'))}.",
    ]
    if cov.get("gate_reasons"):
        lines.append("Refused: " + "; ".join(f"{reason} ({n})" for reason, n in cov["gate_reasons"].items()) + ".")
    return lines


def figures(result: Mapping[str, Any]) -> dict[str, Any]:
    """Plotly figures by name: ``roc``, ``pr``, ``confusion``, ``reliability``."""
    import plotly.graph_objects as go

    out: dict[str, Any] = {}
    roc, pr = result.get("curves", {}).get("roc"), result.get("curves", {}).get("pr")
    if roc:
        fig = go.Figure(go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name="ROC"))
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot"}, name="chance"))
        fig.update_layout(
            title=f"ROC (AUC {_fmt(result.get('roc_auc'))})", xaxis_title="1 - specificity", yaxis_title="sensitivity"
        )
        out["roc"] = fig
    if pr:
        fig = go.Figure(go.Scatter(x=pr["recall"], y=pr["precision"], mode="lines", name="PR"))
        fig.update_layout(
            title=f"Precision-recall (AP {_fmt(result.get('pr_auc'))})",
            xaxis_title="recall (sensitivity)",
            yaxis_title="precision (PPV)",
        )
        out["pr"] = fig
    c = result["confusion"]
    fig = go.Figure(
        go.Heatmap(
            z=[[c["tp"], c["fn"]], [c["fp"], c["tn"]]],
            x=["called COVID", "called Normal"],
            y=["COVID", "Normal"],
            text=[[c["tp"], c["fn"]], [c["fp"], c["tn"]]],
            texttemplate="%{text}",
            colorscale="Blues",
            showscale=False,
        )
    )
    fig.update_layout(title=f"Confusion at threshold {_fmt(result.get('threshold'))}", yaxis_autorange="reversed")
    out["confusion"] = fig
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot"}, name="perfect"))
    for key, name in (
        ("uncalibrated", f"before (ECE {_fmt(result.get('ece_uncalibrated'))})"),
        ("calibrated", f"after (ECE {_fmt(result.get('ece'))})"),
    ):
        curve = result["reliability"][key]
        fig.add_trace(
            go.Scatter(
                x=curve["mean_predicted"],
                y=curve["fraction_positive"],
                mode="lines+markers",
                name=name,
                text=[f"n={n}" for n in curve["count"]],
            )
        )
    fig.update_layout(
        title="Reliability: temperature scaling",
        xaxis_title="mean predicted P(COVID)",
        yaxis_title="fraction COVID",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1],
    )
    out["reliability"] = fig
    return out


def write_report(model_dir: str | Path, result: Mapping[str, Any]) -> Path:
    """Write JSON, Markdown and figures for an evaluation and refresh the model card; returns the report folder."""
    model_dir = Path(model_dir)
    card = read_card(model_dir)
    own = is_own_result(card, result["data"]["dir"], result["split"])
    key = result_key(result["data"]["dir"], result["split"])
    target = model_dir if own else model_dir / EVALUATIONS_DIR / key
    write_json_safe(target / EVALUATION_FILE, dict(result))
    write_text_atomic(target / "evaluation.md", render_markdown(result))
    for name, fig in figures(result).items():
        write_text_atomic(target / FIGURES_DIR / f"{name}.json", fig.to_json())
    if own:
        card = card_with_evaluation(card, result)
        if not (card.get("training") or {}).get("by_source") and result.get("dataset"):
            card["training_data"] = result["dataset"]
    else:
        card = card_with_external(card, key, result)
    if result.get("leave_one_source_out"):
        card = card_with_loso(card, result["leave_one_source_out"])
    card.setdefault("name", result.get("model", {}).get("name"))
    write_card(model_dir, card)
    return target
