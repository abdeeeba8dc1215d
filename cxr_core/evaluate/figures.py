"""Plotly figure builders for the Training, Run history and Evaluation pages (no Streamlit here).

ROC, PR, confusion and reliability figures come from :func:`cxr_core.evaluate.report.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

CURVE_PANELS = (("loss", "Loss"), ("accuracy", "Accuracy"), ("auc", "ROC AUC"))
PALETTE = qualitative.Plotly


def _layout(fig: go.Figure, height: int = 360, **kwargs: Any) -> go.Figure:
    """Common compact layout."""
    fig.update_layout(
        height=height, margin={"l": 40, "r": 20, "t": 40, "b": 40}, legend={"orientation": "h", "y": -0.18}, **kwargs
    )
    return fig


def epoch_curves(runs: Mapping[str, pd.DataFrame]) -> go.Figure:
    """Per-epoch train (solid) and validation (dashed) loss, accuracy and AUC; one colour per run."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=[title for _, title in CURVE_PANELS])
    several = len(runs) > 1
    for i, (name, frame) in enumerate(runs.items()):
        colour = PALETTE[i % len(PALETTE)]
        for col, (metric, _) in enumerate(CURVE_PANELS, start=1):
            for prefix, dash, label in (("", "solid", "train"), ("val_", "dash", "val")):
                key = prefix + metric
                if frame.empty or key not in frame or frame[key].isna().all():
                    continue
                trace_name = f"{name} {label}" if several else label
                fig.add_trace(
                    go.Scatter(
                        x=frame["epoch"],
                        y=frame[key],
                        mode="lines+markers",
                        name=trace_name,
                        legendgroup=trace_name,
                        showlegend=col == 1,
                        line={"color": colour if several else PALETTE[0 if label == "train" else 1], "dash": dash},
                    ),
                    row=1,
                    col=col,
                )
    fig.update_xaxes(title_text="epoch", dtick=1 if max((len(f) for f in runs.values()), default=0) <= 15 else None)
    return _layout(fig)


def batch_loss_curve(batches: pd.DataFrame, window: int = 10) -> go.Figure:
    """Per-batch training loss with a moving average, against the global step."""
    fig = go.Figure()
    if not batches.empty and "loss" in batches:
        x = (
            batches["step"]
            if "step" in batches and not batches["step"].isna().all()
            else np.arange(1, len(batches) + 1)
        )
        fig.add_trace(
            go.Scatter(x=x, y=batches["loss"], mode="lines", name="batch loss", line={"color": "rgba(99,110,250,0.35)"})
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=batches["loss"].rolling(window, min_periods=1).mean(),
                mode="lines",
                name=f"moving average ({window})",
                line={"color": PALETTE[0]},
            )
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="loss")
    return _layout(fig, height=280, title="Per-batch training loss")


def source_figure(by_source: Mapping[str, Mapping[str, Any]], title: str = "Accuracy by source") -> go.Figure:
    """Bar chart of accuracy per image source, annotated with the number of images."""
    names = list(by_source)
    accuracy = [by_source[n].get("accuracy") for n in names]
    counts = [by_source[n].get("n") for n in names]
    fig = go.Figure(
        go.Bar(x=names, y=accuracy, text=[f"n={c}" for c in counts], textposition="outside", marker_color=PALETTE[0])
    )
    fig.update_yaxes(title_text="accuracy", range=[0, 1.1])
    return _layout(fig, height=340, title=title)


def loso_figure(loso: Mapping[str, Mapping[str, Any]], in_distribution: float | None = None) -> go.Figure:
    """Leave-one-source-out accuracy per held-out source, with the in-distribution accuracy as a reference line."""
    fig = source_figure(loso, title="Accuracy on each source when it was left out of training")
    if in_distribution is not None:
        fig.add_hline(
            y=in_distribution,
            line_dash="dash",
            line_color=PALETTE[1],
            annotation_text=f"in-distribution {in_distribution:.3f}",
        )
    return fig


def risk_coverage_figure(curves: Mapping[str, Mapping[str, Any] | None]) -> go.Figure:
    """Error rate of the answers kept against the share of images answered, one line per abstention order."""
    fig = go.Figure()
    for i, (name, curve) in enumerate(item for item in curves.items() if item[1]):
        fig.add_trace(
            go.Scatter(
                x=curve["coverage"],
                y=curve["risk"],
                mode="lines+markers",
                name=name.replace("_", " "),
                line={"color": PALETTE[i % len(PALETTE)]},
            )
        )
    fig.update_xaxes(title_text="coverage (share of images answered)", range=[0, 1.02], autorange="reversed")
    fig.update_yaxes(title_text="error rate of the answers given", rangemode="tozero")
    return _layout(fig, height=340, title="Risk-coverage: abstaining on the least familiar or least confident first")
