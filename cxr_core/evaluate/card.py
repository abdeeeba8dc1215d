"""Model cards (``card.json`` + ``card.md``): what a model is, what it was trained on, how well it does, where it fails.

``card.json`` keys: ``name``, ``architecture``, ``parameters``, ``preprocess``, ``classes``, ``positive``,
``training`` (``data_dir``, ``run_id``, ``epochs``, ``split`` counts, ``by_class``, ``by_source`` — free-form from
the trainer), ``split`` (how the split was made), ``metrics`` (test metrics with ``ci95``), ``calibration``
(temperature, threshold, target sensitivity, ECE before/after), ``leave_one_source_out`` (None until run),
``intended_use``, ``limitations``, ``shortcut_audit`` (None until the shortcut audit of issue 8 fills it from
``audit.json``) and, for a model chosen among audited candidates, ``selection``: the rule (:class:`SelectionRule`),
the compared alternatives' audit numbers (read from their ``audit.json``), free-text ``notes`` and the ``decision``
that :func:`write_card` derives from them and this model's own ``shortcut_audit``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cxr_core.util.atomic import read_json, write_json_atomic, write_text_atomic
from cxr_core.util.clock import utc_now

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
AUDIT_KEYS = (
    "auc",
    "auc_lungs_blanked",
    "auc_lungs_only",
    "lung_attention_mean",
    "lung_area_mean",
    "verdict_level",
    "data_dir",
    "split",
    "n",
    "model_version",
    "created",
)


@dataclass(frozen=True)
class SelectionRule:
    """How a default is chosen among audited candidates: an AUC floor, then the lowest lungs-blanked AUC.

    ``lung_goal_*`` is the lung-reliance goal each candidate is checked against (shown, not used to choose).
    """

    min_auc: float = 0.97
    min_auc_source: str = "issue #4's target for the shipped default"
    lung_goal_min_auc: float = 0.93
    lung_goal_max_blanked: float = 0.65
    lung_goal_min_attention: float = 0.70


def base_card(
    name: str,
    architecture: str,
    parameters: int,
    preprocess: Mapping[str, Any],
    classes: tuple[str, ...] = ("COVID", "Normal"),
    positive: str = "COVID",
    training: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A new card with the fixed sections filled in; evaluation and audits are added later."""
    return {
        "name": name,
        "created": utc_now(),
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
    external[key] = {
        k: evaluation.get(k)
        for k in ("n", "n_covid", "n_normal", "roc_auc", "accuracy", "sensitivity", "specificity", "ece", "threshold")
    }
    external[key]["data_dir"] = evaluation.get("data", {}).get("dir")
    updated["external_evaluations"] = external
    return updated


def slug(text: str) -> str:
    """A file-name-safe slug."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "dataset"


def result_key(data_dir: str | Path, split: str) -> str:
    """``<dataset folder>-<split>``: where a result on other data is kept (``evaluations/``, ``audits/``)."""
    return f"{slug(Path(data_dir).name)}-{split}"


def is_own_result(card: Mapping[str, Any], data_dir: str | Path, split: str) -> bool:
    """True for the test split of the dataset the model was trained on (or of any dataset when that is unknown)."""
    trained_on = (card.get("training") or {}).get("data_dir")
    same_data = not trained_on or Path(str(trained_on)).resolve() == Path(data_dir).resolve()
    return split == "test" and same_data


def card_with_other_audit(card: Mapping[str, Any], key: str, audit: Mapping[str, Any]) -> dict[str, Any]:
    """The card with a summary of an audit on another dataset or split under ``other_audits`` (``audit.json`` and
    ``shortcut_audit`` stay the model's own test-split audit)."""
    others = dict(card.get("other_audits") or {})
    others[key] = {k: audit.get(k) for k in AUDIT_KEYS}
    return {**dict(card), "other_audits": others}


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
    lines += [
        "",
        f"Confusion at the threshold: TP {confusion.get('tp')}, FP {confusion.get('fp')}, "
        f"TN {confusion.get('tn')}, FN {confusion.get('fn')}.",
        "",
    ]
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
    """The leave-one-source-out section: the worst held-out source first, then the table."""
    sources = loso.get("sources") or {}
    lines = []
    if sources:
        worst, row = min(sources.items(), key=lambda item: item[1].get("accuracy", 1.0))
        lines += [
            f"**What to expect at a new hospital:** trained without a source and tested on it, the recipe's worst "
            f"source is {worst} (accuracy {_fmt(row.get('accuracy'))}).",
            "",
        ]
    lines += [
        str(loso.get("method", "")),
        "",
        "| held-out source | n | COVID | Normal | accuracy | sensitivity | specificity | ROC AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for source, row in (loso.get("sources") or {}).items():
        lines.append(
            f"| {source} | {row.get('n')} | {row.get('n_covid')} | {row.get('n_normal')} | {_fmt(row.get('accuracy'))} | "
            f"{_fmt(row.get('sensitivity'))} | {_fmt(row.get('specificity'))} | {_fmt(row.get('roc_auc'))} |"
        )
    if loso.get("pooled"):
        pooled = loso["pooled"]
        lines += [
            "",
            f"Pooled over held-out sources: accuracy {_fmt(pooled.get('accuracy'))}, ROC AUC "
            f"{_fmt(pooled.get('roc_auc'))} (n = {pooled.get('n')}).",
        ]
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
        lines += [
            f"| {src} | {row.get('COVID', 0)} | {row.get('Normal', 0)} |" for src, row in sorted(by_source.items())
        ]
        lines.append("")
    settings = {k: v for k, v in training.items() if k not in ("by_class", "by_source", "split")}
    if settings:
        lines += [
            "Training settings: "
            + ", ".join(f"{k} `{json.dumps(v, sort_keys=True)}`" for k, v in sorted(settings.items())),
            "",
        ]
    return lines


def _audit_md(audit: Mapping[str, Any]) -> list[str]:
    """The shortcut-audit section: the verdict and the audit's top-level numbers (details stay in ``audit.json``)."""
    lines = [f"**{audit['verdict']}**", ""] if audit.get("verdict") else []
    lines += [
        f"- {key}: {_fmt(value)}"
        for key, value in sorted(audit.items())
        if key != "verdict" and isinstance(value, (int, float, str)) and not isinstance(value, bool)
    ]
    return lines + ["", "Full results: `audit.json`."]


def _candidate(directory: Path) -> dict[str, Any]:
    """An audited model directory as a selection candidate: its name, architecture, input and audit numbers."""
    audit = read_json(directory / "audit.json", None)
    if not isinstance(audit, dict) or audit.get("auc") is None:
        raise ValueError(f"{directory} has no audit.json with an AUC: run `cxr audit --model {directory}` first")
    card = read_card(directory)
    preprocess = card.get("preprocess") or audit.get("preprocess") or {}
    return {
        "dir": directory.name,
        "name": card.get("name") or audit.get("model") or directory.name,
        "architecture": card.get("architecture"),
        "roi": preprocess.get("roi", "none"),
        "size": preprocess.get("size"),
        **{key: audit.get(key) for key in AUDIT_KEYS},
    }


def card_with_selection(
    card: Mapping[str, Any],
    alternatives: Sequence[str | Path],
    rule: SelectionRule = SelectionRule(),
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """The card with a ``selection`` section comparing it with audited alternative model directories.

    The alternatives' numbers are read from their ``audit.json``; they must have been audited on the same data and
    split as this model's ``shortcut_audit``, or the comparison is refused.
    """
    own = card.get("shortcut_audit")
    if not own or own.get("auc") is None:
        raise ValueError("this model has no shortcut audit: run `cxr audit` on it first")
    others = [_candidate(Path(directory)) for directory in alternatives]
    for other in others:
        if (other["data_dir"], other["split"]) != (own.get("data_dir"), own.get("split")):
            raise ValueError(
                f"{other['dir']} was audited on {other['data_dir']} ({other['split']}), this model on "
                f"{own.get('data_dir')} ({own.get('split')}): not comparable"
            )
    selection = {"rule": asdict(rule), "alternatives": others, "notes": list(notes), "created": utc_now()}
    return {**dict(card), "selection": selection}


def _meets_lung_goal(candidate: Mapping[str, Any], rule: SelectionRule) -> bool:
    """True when a candidate reaches the AUC, lungs-blanked and Grad-CAM-in-lungs goal of ``rule``."""
    return (
        candidate["auc"] >= rule.lung_goal_min_auc
        and _blanked(candidate) <= rule.lung_goal_max_blanked
        and (candidate.get("lung_attention_mean") or 0.0) >= rule.lung_goal_min_attention
    )


def _blanked(candidate: Mapping[str, Any]) -> float:
    """A candidate's lungs-blanked AUC (1.0, no lung reliance shown, when missing)."""
    value = candidate.get("auc_lungs_blanked")
    return 1.0 if value is None else float(value)


def has_selection(card: Mapping[str, Any]) -> bool:
    """True when the card has a selection section and its own audit AUC to compare."""
    return bool(card.get("selection")) and (card.get("shortcut_audit") or {}).get("auc") is not None


def _pct(value: Any) -> str:
    """A share as a whole percentage ('–' when missing)."""
    return "–" if value is None else f"{float(value):.0%}"


def _candidates(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """This model (first, ``dir`` None, numbers from its ``shortcut_audit``) and the selection's alternatives."""
    audit, preprocess = card.get("shortcut_audit") or {}, card.get("preprocess") or {}
    own = {
        "dir": None,
        "name": card.get("name"),
        "architecture": card.get("architecture"),
        "roi": preprocess.get("roi", "none"),
        "size": preprocess.get("size"),
        **{k: audit.get(k) for k in AUDIT_KEYS},
    }
    return [own, *card["selection"]["alternatives"]]


def selection_decision(card: Mapping[str, Any]) -> dict[str, Any]:
    """Which candidate the card's selection rule picks, and why each other candidate was not picked."""
    rule = SelectionRule(**card["selection"]["rule"])
    candidates = _candidates(card)
    own = candidates[0]
    eligible = [c for c in candidates if c["auc"] >= rule.min_auc]
    if eligible:
        chosen = min(eligible, key=lambda c: (_blanked(c), -c["auc"]))
    else:
        chosen = max(candidates, key=lambda c: c["auc"])
    reasons = []
    for other in candidates:
        if other is chosen:
            continue
        label = "this model" if other is own else f"`{other['dir']}`"
        lungs = (
            f"lungs-blanked AUC {_fmt(other.get('auc_lungs_blanked'))} vs {_fmt(chosen.get('auc_lungs_blanked'))}, "
            f"{_pct(other.get('lung_attention_mean'))} vs {_pct(chosen.get('lung_attention_mean'))} "
            "of Grad-CAM in the lungs"
        )
        if other["auc"] < rule.min_auc and _blanked(other) < _blanked(chosen):
            reasons.append(
                f"{label} relies more on the lungs ({lungs}) but its test AUC {_fmt(other['auc'])} misses "
                f"the {_fmt(rule.min_auc, 2)} target."
            )
        elif other["auc"] < rule.min_auc:
            reasons.append(
                f"{label} misses the AUC target (test AUC {_fmt(other['auc'])} < {_fmt(rule.min_auc, 2)}) "
                f"and does not rely more on the lungs ({lungs})."
            )
        else:
            reasons.append(f"{label} reaches the AUC target but relies less on the lungs ({lungs}).")
    return {
        "chosen": "this model" if chosen is own else chosen["dir"],
        "this_model_chosen": chosen is own,
        "reasons": reasons,
        "lung_goal_met_by": ["this model" if c is own else c["dir"] for c in candidates if _meets_lung_goal(c, rule)],
    }


def _selection_md(card: Mapping[str, Any]) -> list[str]:
    """The "Why this model is the default" section: the rule, the candidates' audit numbers and the decision."""
    selection, decision = card["selection"], selection_decision(card)
    rule = SelectionRule(**selection["rule"])
    candidates = _candidates(card)
    own = candidates[0]
    lines = [
        f"Rule: among the audited candidates whose test AUC reaches {_fmt(rule.min_auc, 2)} ({rule.min_auc_source}), "
        "the one with the lowest lungs-blanked AUC (the most reliance on the lung fields); if none reaches it, the "
        "highest AUC. Numbers from each model's `audit.json`, same data and split.",
        "",
        f"| model | architecture | roi | px | test AUC | lungs blanked | lungs only | Grad-CAM in lungs (lungs' share) "
        f"| verdict | AUC ≥ {_fmt(rule.min_auc, 2)} |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in candidates:
        label = f"this model ({c['name']})" if c is own else f"`{c['dir']}` ({c.get('name')})"
        lines.append(
            f"| {label} | {c.get('architecture') or '–'} | {c.get('roi')} | {_fmt(c.get('size'))} | "
            f"{_fmt(c.get('auc'))} | {_fmt(c.get('auc_lungs_blanked'))} | {_fmt(c.get('auc_lungs_only'))} | "
            f"{_pct(c.get('lung_attention_mean'))} ({_pct(c.get('lung_area_mean'))}) | {c.get('verdict_level') or '–'} | "
            f"{'yes' if c['auc'] >= rule.min_auc else 'no'} |"
        )
    lines.append("")
    if decision["this_model_chosen"]:
        lines.append(
            f"**This model is the default by this rule.** Its own shortcut verdict is "
            f"*{own.get('verdict_level') or 'not audited'}* (see Shortcut audit)."
        )
    else:
        lines.append(f"**By this rule `{decision['chosen']}` should be the default, not this model.**")
    lines += [f"- {reason}" for reason in decision["reasons"]]
    goal = (
        f"test AUC ≥ {_fmt(rule.lung_goal_min_auc, 2)}, lungs-blanked AUC ≤ {_fmt(rule.lung_goal_max_blanked, 2)} "
        f"and ≥ {_pct(rule.lung_goal_min_attention)} of Grad-CAM in the lungs"
    )
    met = decision["lung_goal_met_by"]
    lines += ["", f"Lung-reliance goal ({goal}): " + (f"met by {', '.join(met)}." if met else "met by no candidate.")]
    notes = list(selection.get("notes") or [])
    lines += [""] + [f"- {note}" for note in notes] if notes else []
    return lines


def render_markdown(card: Mapping[str, Any]) -> str:
    """The human-readable ``card.md`` for a card dict."""
    lines = [f"# Model card: {card.get('name', 'model')}", ""]
    lines += [
        f"- **Architecture:** {card.get('architecture', '–')}",
        f"- **Parameters:** {card.get('parameters', '–')}",
    ]
    if card.get("version"):
        lines.append(f"- **Version:** {card['version']}")
    if card.get("preprocess"):
        lines.append(f"- **Preprocessing:** `{json.dumps(card['preprocess'], sort_keys=True)}`")
    lines.append(
        f"- **Classes (output order):** {', '.join(card.get('classes', []))}; positive: {card.get('positive', 'COVID')}"
    )
    lines += ["", "## Leave-one-source-out", ""]
    loso = card.get("leave_one_source_out")
    lines += _loso_md(loso) if loso else ["Not run yet: `cxr evaluate --leave-one-source-out`."]
    if loso and card.get("metrics"):
        lines += [
            "",
            f"For comparison, in-distribution test ROC AUC {_fmt(card['metrics'].get('roc_auc'))}, accuracy "
            f"{_fmt(card['metrics'].get('accuracy'))}: the held-out-source figures are what to expect from a new hospital.",
        ]
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
        lines += [
            "",
            "## Other datasets",
            "",
            "| dataset | n | ROC AUC | accuracy | sensitivity | specificity |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {key} | {row.get('n')} | {_fmt(row.get('roc_auc'))} | {_fmt(row.get('accuracy'))} | "
            f"{_fmt(row.get('sensitivity'))} | {_fmt(row.get('specificity'))} |"
            for key, row in external.items()
        ]
    lines += ["", "## Limitations", ""] + [f"- {item}" for item in card.get("limitations", LIMITATIONS)]
    lines += ["", "## Shortcut audit", ""]
    audit = card.get("shortcut_audit")
    lines += _audit_md(audit) if audit else ["Not audited yet: `cxr audit`."]
    others = card.get("other_audits") or {}
    if others:
        lines += [
            "",
            "### Audits on other datasets",
            "",
            "| dataset | n | AUC | lungs blanked | lungs only | Grad-CAM in lungs | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {key} | {row.get('n')} | {_fmt(row.get('auc'))} | {_fmt(row.get('auc_lungs_blanked'))} | "
            f"{_fmt(row.get('auc_lungs_only'))} | {_fmt(row.get('lung_attention_mean'))} | "
            f"{row.get('verdict_level') or '–'} |"
            for key, row in others.items()
        ]
        lines += ["", "Full results: `audits/<dataset>-<split>/audit.json`."]
    if has_selection(card):
        lines += ["", "## Why this model is the default", ""] + _selection_md(card)
    return "\n".join(lines) + "\n"


def write_card(directory: str | Path, card: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``card.json`` and ``card.md`` atomically into a model directory (refreshing a selection's decision
    from the card's current audit); returns the card."""
    data = dict(card)
    if has_selection(data):
        data["selection"] = {**data["selection"], "decision": selection_decision(data)}
    write_json_atomic(Path(directory) / "card.json", data)
    write_text_atomic(Path(directory) / "card.md", render_markdown(data))
    return data


def read_card(directory: str | Path) -> dict[str, Any]:
    """A model directory's card (empty when it has none)."""
    data = read_json(Path(directory) / "card.json", {})
    return data if isinstance(data, dict) else {}
