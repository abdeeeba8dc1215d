"""``cxr audit --model M --data DIR``: the shortcut audit of a registered model on a dataset folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError
from cxr_core.config import Config
from cxr_core.evaluate.audit import AuditError, AuditOptions, run_audit, save_audit
from cxr_core.evaluate.evaluate import SPLIT_CHOICES
from cxr_core.explain.cam import ExplainError
from cxr_core.lungs.segmenter import LungModelError
from cxr_core.serve.registry import RegistryError, default_model_dir, load_model


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``audit`` sub-command."""
    d = AuditOptions()
    p = sub.add_parser("audit", help=command_help("audit"))
    p.add_argument("--model", help="model dir or registered name (default: the default model)")
    p.add_argument("--data", type=Path, help="dataset folder (default: the configured data dir)")
    p.add_argument("--split", choices=SPLIT_CHOICES, default=d.split, help="images to audit (default test)")
    p.add_argument(
        "--cam-images", type=int, default=d.cam_images, help="images explained with Grad-CAM (random subset)"
    )
    p.add_argument("--limit", type=int, help="audit at most N images of the split (quick look)")
    p.add_argument("--no-save", action="store_true", help="do not write audit.json / the card")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=run)


def _model_dir(cfg: Config, model: str | None) -> Path:
    """Resolve --model: a directory, a registered name, or the default model."""
    if model is None:
        found = default_model_dir(cfg)
        if found is None:
            raise CliError(f"no default model in {cfg.models_dir}: pass --model")
        return found
    for candidate in (Path(model), cfg.models_dir / model):
        if candidate.is_dir():
            return candidate
    raise CliError(f"no model directory {model!r} (neither a folder nor a model in {cfg.models_dir})")


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Run the audit, save it with the model, print the result."""
    if args.cam_images < 1:
        raise CliError("--cam-images must be >= 1")
    options = AuditOptions(split=args.split, cam_images=args.cam_images, seed=cfg.seed, limit=args.limit)
    try:
        model = load_model(_model_dir(cfg, args.model))
        result = run_audit(model, cfg, args.data or cfg.data_dir, options)
    except (AuditError, RegistryError, LungModelError, ExplainError) as exc:
        raise CliError(str(exc)) from exc
    if not args.no_save:
        result["saved_to"] = str(save_audit(model.path, result))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"shortcut audit of {result['model']} on {result['data_dir']} ({result['split']}, n={result['n']})")
    for key in ("auc", "auc_lungs_blanked", "auc_lungs_only", "lung_attention_mean", "stats_baseline_auc"):
        print(f"  {key:22s} {result[key]}")
    print(f"verdict ({result['verdict_level']}): {result['verdict']}")
    return 0
