"""``cxr predict``: calibrated predictions with explanations for image files or folders (CSV + overlays)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError
from cxr_core.config import Config
from cxr_core.explain.attention import overlay, png_bytes
from cxr_core.explain.cam import CAM_METHODS, Explainer, ExplainError
from cxr_core.gate import GateModelError, load_gate_net
from cxr_core.serve.inference import NO_CAM, BatchItem, Prediction, Regions, collect_inputs, predict_paths, report_dict
from cxr_core.serve.registry import RegistryError, default_model_dir, load_model
from cxr_core.util.atomic import write_text_atomic

CSV_COLUMNS = (
    "path",
    "sha256",
    "gate",
    "gate_reasons",
    "familiarity",
    "p_covid",
    "decision",
    "certainty",
    "threshold",
    "attention_thorax",
    "attention_lungs",
    "attention_markings",
    "attention_warning",
    "overlay",
    "error",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``predict`` sub-command."""
    parser = sub.add_parser("predict", help=command_help("predict"))
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH", help="image files (PNG, JPEG, DICOM, ...) or folders"
    )
    parser.add_argument("--model", type=Path, help="model directory (default: the registry's default model)")
    parser.add_argument(
        "--cam", choices=[*CAM_METHODS, NO_CAM], default="gradcam", help="explanation method (default gradcam)"
    )
    parser.add_argument("--out", type=Path, help="write predictions.csv and overlay PNGs into this folder")
    parser.add_argument("--alpha", type=float, default=0.4, help="overlay opacity in [0, 1] (default 0.4)")
    parser.add_argument(
        "--lungs", action="store_true", help="also measure attention inside the lungs (needs models/lungs)"
    )
    parser.add_argument(
        "--markings", action="store_true", help="also measure attention on detected markings (text, arrows)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def _model_dir(args: argparse.Namespace, cfg: Config) -> Path:
    """The model directory asked for, else the registry default."""
    if args.model is not None:
        return args.model
    found = default_model_dir(cfg)
    if found is None:
        raise CliError(f"no default model in {cfg.models_dir}: pass --model DIR or register one")
    return found


def _regions(lungs: bool, markings: bool) -> Regions | None:
    """The per-image lung mask / marking boxes finder asked for on the command line (None for neither)."""
    if not (lungs or markings):
        return None
    from cxr_core.lungs.segmenter import LungModelError, load_segmenter, lung_mask
    from cxr_core.markings.classical import detect_markings

    segmenter = None
    if lungs:
        try:
            segmenter = load_segmenter()
        except LungModelError as exc:
            raise CliError(str(exc)) from exc

    def find(gray: np.ndarray) -> tuple[np.ndarray | None, list[tuple[int, int, int, int]]]:
        """Lung mask and marking boxes of one image."""
        mask = lung_mask(gray, segmenter) if segmenter is not None else None
        return mask, list(detect_markings(gray).regions) if markings else []

    return find


def _overlay_name(item: BatchItem) -> str:
    """A unique overlay file name: the image stem plus the start of its sha256."""
    return f"{item.path.stem}_{item.sha256[:8]}_overlay.png"


def _share(pred: Prediction, key: str) -> str:
    """One attention share formatted for the CSV ("" when absent)."""
    value = getattr(pred.shares, key, None) if pred.shares is not None else None
    return "" if value is None else f"{value:.4f}"


def _row(item: BatchItem, overlay_file: str) -> dict[str, Any]:
    """One predictions.csv row."""
    pred = item.prediction
    if pred is None:
        return {"path": str(item.path), "error": item.error}
    familiarity = "" if pred.familiarity is None else f"{pred.familiarity['score']:.4f}"
    return {
        "path": str(item.path),
        "sha256": item.sha256,
        "gate": "pass" if pred.gate.chest_xray else "fail",
        "gate_reasons": " | ".join(pred.gate.reasons),
        "familiarity": familiarity,
        "p_covid": "" if pred.p_covid is None else f"{pred.p_covid:.6f}",
        "decision": pred.label,
        "certainty": pred.certainty,
        "threshold": f"{pred.threshold:.6f}",
        **{f"attention_{key}": _share(pred, key) for key in ("thorax", "lungs", "markings")},
        "attention_warning": "yes" if pred.warning else "",
        "overlay": overlay_file,
        "error": "",
    }


def _text_line(report: dict[str, Any]) -> str:
    """One human line per prediction: the refusal, or probability, decision, certainty and warnings."""
    if report["p_covid"] is None:
        return f"{report['path']}: not assessed: {'; '.join(report['gate']['reasons'])}"
    shares = report["attention_shares"] or {}
    thorax = f"  thorax attention {shares['thorax']:.0%}" if shares.get("thorax") is not None else ""
    flag = "  WARNING: attention outside the chest" if report["attention_warning"] else ""
    familiar = report["familiarity"]
    unfamiliar = (
        (
            f"  WARNING: unfamiliar to this model (score {familiar['score']:.2f}, nearest source "
            f"{familiar['nearest_source']})"
        )
        if familiar and not familiar["familiar"]
        else ""
    )
    return (
        f"{report['path']}: p_covid {report['p_covid']:.3f} -> {report['decision']} (threshold "
        f"{report['threshold']:.3f}, {report['certainty']}){thorax}{flag}{unfamiliar}"
    )


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write predictions.csv atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Load the model and explainer once, predict every input, report unreadable files one line each."""
    if not 0.0 <= args.alpha <= 1.0:
        raise CliError("--alpha must lie in [0, 1]")
    files = collect_inputs(args.paths)
    if not files:
        raise CliError("no image files found in " + ", ".join(str(p) for p in args.paths))
    try:
        loaded = load_model(_model_dir(args, cfg))
        explainer = Explainer(loaded.model) if args.cam != NO_CAM else None
        gate_net = load_gate_net()
    except (RegistryError, ExplainError, GateModelError) as exc:
        raise CliError(str(exc)) from exc
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    progress = tqdm(total=len(files), desc="predict", unit="img", file=sys.stderr, disable=len(files) < 2)
    regions = _regions(args.lungs, args.markings)
    items = predict_paths(
        files,
        loaded,
        explainer,
        args.cam,
        max_pixels=cfg.max_pixels,
        min_side=cfg.min_side,
        regions=regions,
        gate_net=gate_net,
    )
    for item in items:
        progress.update(1)
        if item.prediction is None:
            errors.append({"path": str(item.path), "error": item.error})
            tqdm.write(f"cxr predict: skipped {item.path}: {item.error}", file=sys.stderr)
            rows.append(_row(item, ""))
            continue
        overlay_file = ""
        if args.out is not None and item.prediction.heatmap is not None and item.gray is not None:
            overlay_file = _overlay_name(item)
            (args.out / overlay_file).write_bytes(png_bytes(overlay(item.gray, item.prediction.heatmap, args.alpha)))
        rows.append(_row(item, overlay_file))
        reports.append({"path": str(item.path), **report_dict(item.prediction, loaded, item.sha256, explainer)})
    progress.close()
    if args.out is not None:
        _write_csv(args.out / "predictions.csv", rows)
    if not reports:
        raise CliError(f"none of the {len(files)} input file(s) could be read")
    if args.json:
        payload = (
            reports[0]
            if len(files) == 1
            else {
                "model": {"name": loaded.name, "version": loaded.version},
                "n": len(files),
                "n_predicted": len(reports),
                "n_errors": len(errors),
                "predictions": reports,
                "errors": errors,
                "out": str(args.out) if args.out is not None else None,
            }
        )
        print(json.dumps(payload, indent=2))
        return 0
    for report in reports:
        print(_text_line(report))
    refused = sum(1 for r in reports if r["p_covid"] is None)
    summary = f"{len(reports) - refused} predicted, {refused} not assessed, {len(errors)} unreadable"
    print(summary + (f"; results in {args.out / 'predictions.csv'}" if args.out is not None else ""), file=sys.stderr)
    return 0
