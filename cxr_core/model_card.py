"""Model cards (``card.json`` + ``card.md``): what a model is, what it was trained on, how well it does, where it fails.

``card.json`` keys: ``name``, ``architecture``, ``parameters``, ``preprocess``, ``classes``, ``positive``,
``training`` (``data_dir``, ``run_id``, ``epochs``, ``split`` counts, ``by_class``, ``by_source`` — free-form from
the trainer), ``split`` (how the split was made), ``metrics`` (test metrics with ``ci95``), ``calibration``
(temperature, threshold, target sensitivity, ECE before/after), ``leave_one_source_out`` (None until run),
``intended_use``, ``limitations``, and ``shortcut_audit`` (None until the shortcut audit of issue 8 fills it from
``audit.json``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from cxr_core.atomic import read_json, write_json_atomic, write_text_atomic

INTENDED_USE = (
    "Research and decision support, not diagnosis. A second reader for chest X-ray review by a qualified "
    "clinician; never a stand-alone test for COVID-19."
)
LIMITATIONS = (
    "Source confounding: in the sample, COVID images come only from web/publication and COVID-hospital sources "
    "and Normal images mostly from NIH, JSRT and paediatric Kermany. Source alone predicts the label, so a high "
    "in-distribution AUC can reflect where an image came from rather than the lungs. The leave-one-source-out "
    "figures are the honest estimate for images from a new hospital.",
    "Markings (arrows, boxes, captions from publications) appear only in COVID images of the sample; the model "
    "may have learnt to use them.",
    "Kermany normals are children; COVID images are adults. Age is a further shortcut.",
    "Small data: a few hundred patients per class; confidence intervals are wide.",
    "Two classes only (COVID vs Normal): other pneumonias, effusions and devices are outside the training data.",
    "Probabilities are calibrated on the validation split of the same sources; calibration on other sources is "
    "not guaranteed.",
)
SPLIT_DESCRIPTION = "Patient-grouped, label x source stratified 70/15/15 train/validation/test split with a fixed seed."
METRIC_KEYS = ("roc_auc", "pr_auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "ece")


def base_card(
    name: str, architecture: str, parameters: int, preprocess: Mapping[str, Any],
    classes: tuple[str, ...] = ("COVID", "Normal"), positive: str = "COVID",
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A new card with the fixed sections filled in; evaluation and audits are added later."""
    return {
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "architecture": architecture,
        "parameters": int(parameters),
        "preprocess": dict(preprocess),
        "classes": list(classes),
        "positive": positive,
        "training": dict(training or {}),
        "split": SPLIT_DESCRIPTION,
        "metrics": None,
        "calibration": None,
        "leave_one_source_out": None,
        "intended_use": INTENDED_USE,
        "limitations": list(LIMITATIONS),
        "shortcut_audit": None,
    }


def card_metrics(evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of an evaluation result that a card (and ``evaluation.md``) shows."""
    return {
        "data_dir": evaluation.get("data", {}).get("dir"),
        "split": evaluation.get("split"),
        "n": evaluation.get("n"),
        "n_covid": evaluation.get("n_covid"),
        "n_normal": evaluation.get("n_normal"),
        **{k: evaluation.get(k) for k in METRIC_KEYS},
        "threshold": evaluation.get("threshold"),
        "confusion": evaluation.get("confusion"),
        "at_0_5": evaluation.get("at_0_5"),
        "ci95": evaluation.get("ci95"),
        "by_source": evaluation.get("by_source"),
        "label_by_source": evaluation.get("label_by_source"),
    }


def card_with_evaluation(card: Mapping[str, Any], evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The card updated with the model's own test evaluation (metrics, CIs, per-source table, calibration)."""
    updated = dict(card)
    updated.setdefault("intended_use", INTENDED_USE)
    updated.setdefault("limitations", list(LIMITATIONS))
    updated.setdefault("shortcut_audit", None)
    model = evaluation.get("model", {})
    for key in ("version", "architecture", "parameters", "classes", "positive"):
        if model.get(key) is not None and (key == "version" or not updated.get(key)):
            updated[key] = model[key]
    updated["metrics"] = card_metrics(evaluation)
    updated["calibration"] = {
        "temperature": evaluation.get("temperature"),
        "threshold": evaluation.get("threshold"),
        "target_sensitivity": evaluation.get("target_sensitivity"),
        "ece_uncalibrated": evaluation.get("ece_uncalibrated"),
        "ece": evaluation.get("ece"),
    }
    return updated


def card_with_external(card: Mapping[str, Any], key: str, evaluation: Mapping[str, Any]) -> dict[str, Any]:
    """The card with a summary of an evaluation on another dataset recorded under ``external_evaluations``."""
    updated = dict(card)
    external = dict(updated.get("external_evaluations") or {})
    external[key] = {k: evaluation.get(k) for k in ("n", "n_covid", "n_normal", "roc_auc", "accuracy", "sensitivity",
                                                     "specificity", "ece", "threshold")}
    external[key]["data_dir"] = evaluation.get("data", {}).get("dir")
    updated["external_evaluations"] = external
    return updated


def card_with_loso(card: Mapping[str, Any], loso: Mapping[str, Any]) -> dict[str, Any]:
    """The card with leave-one-source-out results."""
    return {**dict(card), "leave_one_source_out": dict(loso)}


def _fmt(value: Any, digits: int = 3) -> str:
    """A number for a Markdown table ('–' when missing)."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def metrics_markdown(metrics: Mapping[str, Any]) -> list[str]:
    """The metrics section: headline table with CIs, per-source table."""
    ci = metrics.get("ci95") or {}
    lines = [
        f"Evaluated on `{metrics.get('data_dir')}`, split **{metrics.get('split')}**: n = {metrics.get('n')} "
        f"({metrics.get('n_covid')} COVID, {metrics.get('n_normal')} Normal), threshold {_fmt(metrics.get('threshold'))}.",
        "",
        "| metric | value | 95% CI (patient bootstrap) | at 0.5 |",
        "|---|---|---|---|",
    ]
    at_half = metrics.get("at_0_5") or {}
    for key in METRIC_KEYS:
        low_high = ci.get(key)
        interval = f"{_fmt(low_high[0])} – {_fmt(low_high[1])}" if low_high else "–"
        lines.append(f"| {key} | {_fmt(metrics.get(key))} | {interval} | {_fmt(at_half.get(key))} |")
    confusion = metrics.get("confusion") or {}
    lines += ["", f"Confusion at the threshold: TP {confusion.get('tp')}, FP {confusion.get('fp')}, "
              f"TN {confusion.get('tn')}, FN {confusion.get('fn')}.", ""]
    by_source = metrics.get("by_source") or {}
    if by_source:
        lines += ["| source | n | accuracy | sensitivity | specificity | ROC AUC |", "|---|---|---|---|---|---|"]
        for source, row in by_source.items():
            lines.append(
                f"| {source} | {row.get('n')} | {_fmt(row.get('accuracy'))} | {_fmt(row.get('sensitivity'))} | "
                f"{_fmt(row.get('specificity'))} | {_fmt(row.get('roc_auc'))} |"
            )
    return lines


def _loso_md(loso: Mapping[str, Any]) -> list[str]:
    """The leave-one-source-out section."""
    lines = [str(loso.get("method", "")), "", "| held-out source | n | COVID | Normal | accuracy | sensitivity | "
             "specificity | ROC AUC |", "|---|---|---|---|---|---|---|---|"]
    for source, row in (loso.get("sources") or {}).items():
        lines.append(
            f"| {source} | {row.get('n')} | {row.get('n_covid')} | {row.get('n_normal')} | {_fmt(row.get('accuracy'))} | "
            f"{_fmt(row.get('sensitivity'))} | {_fmt(row.get('specificity'))} | {_fmt(row.get('roc_auc'))} |"
        )
    if loso.get("pooled"):
        pooled = loso["pooled"]
        lines += ["", f"Pooled over held-out sources: accuracy {_fmt(pooled.get('accuracy'))}, ROC AUC "
                  f"{_fmt(pooled.get('roc_auc'))} (n = {pooled.get('n')})."]
    return lines


def _training_md(training: Mapping[str, Any], from_index: Mapping[str, Any]) -> list[str]:
    """Images per split and class, the training split by source and class, and the scalar training settings."""
    lines: list[str] = []
    by_class = training.get("by_class") or from_index.get("splits") or {}
    if by_class:
        lines += ["| split | COVID | Normal |", "|---|---|---|"]
        lines += [f"| {split} | {row.get('COVID', 0)} | {row.get('Normal', 0)} |" for split, row in by_class.items()]
        lines.append("")
    by_source: dict[str, dict[str, int]] = {}
    for key, n in (training.get("by_source") or {}).items():
        source, _, label = str(key).rpartition("/")
        by_source.setdefault(source, {})[label] = int(n)
    by_source = by_source or dict(from_index.get("train_by_source") or {})
    if by_source:
        lines += ["Training split by source:", "", "| source | COVID | Normal |", "|---|---|---|"]
        lines += [f"| {src} | {row.get('COVID', 0)} | {row.get('Normal', 0)} |" for src, row in sorted(by_source.items())]
        lines.append("")
    settings = {k: v for k, v in training.items() if k not in ("by_class", "by_source", "split")}
    if settings:
        lines += ["Training settings: " + ", ".join(f"{k} `{json.dumps(v, sort_keys=True)}`" for k, v in sorted(settings.items())), ""]
    return lines


def _audit_md(audit: Mapping[str, Any]) -> list[str]:
    """The shortcut-audit section: the verdict and the audit's top-level numbers (details stay in ``audit.json``)."""
    lines = [f"**{audit['verdict']}**", ""] if audit.get("verdict") else []
    lines += [f"- {key}: {_fmt(value)}" for key, value in sorted(audit.items())
              if key != "verdict" and isinstance(value, (int, float, str)) and not isinstance(value, bool)]
    return lines + ["", "Full results: `audit.json`."]


def render_markdown(card: Mapping[str, Any]) -> str:
    """The human-readable ``card.md`` for a card dict."""
    lines = [f"# Model card: {card.get('name', 'model')}", ""]
    lines += [f"- **Architecture:** {card.get('architecture', '–')}", f"- **Parameters:** {card.get('parameters', '–')}"]
    if card.get("version"):
        lines.append(f"- **Version:** {card['version']}")
    if card.get("preprocess"):
        lines.append(f"- **Preprocessing:** `{json.dumps(card['preprocess'], sort_keys=True)}`")
    lines.append(f"- **Classes (output order):** {', '.join(card.get('classes', []))}; positive: {card.get('positive', 'COVID')}")
    lines += ["", "## Intended use", "", str(card.get("intended_use", INTENDED_USE)), ""]
    lines += ["## Training data", "", str(card.get("split", SPLIT_DESCRIPTION)), ""]
    lines += _training_md(card.get("training") or {}, card.get("training_data") or {})
    lines += ["## Test metrics", ""]
    lines += metrics_markdown(card["metrics"]) if card.get("metrics") else ["Not evaluated yet: run `cxr evaluate`."]
    calibration = card.get("calibration") or {}
    lines += ["", "## Calibration", ""]
    if calibration:
        lines.append(
            f"Temperature scaling fitted on the validation split: T = {_fmt(calibration.get('temperature'))}. "
            f"Threshold {_fmt(calibration.get('threshold'))} chosen on validation for sensitivity ≥ "
            f"{_fmt(calibration.get('target_sensitivity'), 2)}. ECE (10 equal-width bins) before "
            f"{_fmt(calibration.get('ece_uncalibrated'))}, after {_fmt(calibration.get('ece'))}."
        )
    else:
        lines.append("No calibration recorded.")
    external = card.get("external_evaluations") or {}
    if external:
        lines += ["", "## Other datasets", "", "| dataset | n | ROC AUC | accuracy | sensitivity | specificity |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {key} | {row.get('n')} | {_fmt(row.get('roc_auc'))} | {_fmt(row.get('accuracy'))} | "
                  f"{_fmt(row.get('sensitivity'))} | {_fmt(row.get('specificity'))} |" for key, row in external.items()]
    lines += ["", "## Leave-one-source-out", ""]
    loso = card.get("leave_one_source_out")
    lines += _loso_md(loso) if loso else ["Not run yet: `cxr evaluate --leave-one-source-out`."]
    if loso and card.get("metrics"):
        lines += ["", f"For comparison, in-distribution test ROC AUC {_fmt(card['metrics'].get('roc_auc'))}, accuracy "
                  f"{_fmt(card['metrics'].get('accuracy'))}: the held-out-source figures are what to expect from a new hospital."]
    lines += ["", "## Limitations", ""] + [f"- {item}" for item in card.get("limitations", LIMITATIONS)]
    lines += ["", "## Shortcut audit", ""]
    audit = card.get("shortcut_audit")
    lines += _audit_md(audit) if audit else ["Not audited yet: `cxr audit`."]
    return "\n".join(lines) + "\n"


def write_card(directory: str | Path, card: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``card.json`` and ``card.md`` atomically into a model directory; returns the card."""
    data = dict(card)
    write_json_atomic(Path(directory) / "card.json", data)
    write_text_atomic(Path(directory) / "card.md", render_markdown(data))
    return data


def read_card(directory: str | Path) -> dict[str, Any]:
    """A model directory's card (empty when it has none)."""
    data = read_json(Path(directory) / "card.json", {})
    return data if isinstance(data, dict) else {}
