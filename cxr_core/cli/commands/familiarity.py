"""``cxr familiarity``: fit a model's familiarity score on its training split and store it in the model directory."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError, index_or_fail
from cxr_core.config import Config
from cxr_core.gate.familiarity import DEFAULT_FALSE_ALARM, DEFAULT_METHOD, METHODS, FamiliarityError, fit_on_dataset
from cxr_core.serve.registry import RegistryError, default_model_dir, load_model


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``familiarity`` sub-command."""
    p = sub.add_parser("familiarity", help=command_help("familiarity"))
    p.add_argument("--model", type=Path, help="model directory (default: the registry's default model)")
    p.add_argument(
        "--data", type=Path, help="the dataset the model was trained on (default: its card's, else the configured one)"
    )
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help=f"distance (default {DEFAULT_METHOD})")
    p.add_argument(
        "--false-alarm",
        type=float,
        default=DEFAULT_FALSE_ALARM,
        help=f"share of validation images called unfamiliar; sets the threshold (default {DEFAULT_FALSE_ALARM})",
    )
    p.add_argument("--json", action="store_true", help="print the stored familiarity.json as one JSON object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Load the model, fit on its train split, calibrate on validation, write familiarity.json/.npz."""
    if not 0 < args.false_alarm < 1:
        raise CliError("--false-alarm must lie strictly between 0 and 1")
    model_dir = args.model or default_model_dir(cfg)
    if model_dir is None:
        raise CliError(f"no --model given and no default model in {cfg.models_dir}")
    try:
        model = load_model(model_dir)
        trained_on = (model.card.get("training") or {}).get("data_dir")
        data = args.data or (Path(trained_on) if trained_on and Path(trained_on).is_dir() else cfg.data_dir)
        index = index_or_fail(cfg, data)
        fam = fit_on_dataset(cfg, model, index, args.method, args.false_alarm)
    except (RegistryError, FamiliarityError) as exc:
        raise CliError(str(exc)) from exc
    summary = {
        "model": model.name,
        "version": model.version,
        "method": fam.method,
        "features": fam.features,
        "threshold": fam.threshold,
        "false_alarm_rate": fam.false_alarm_rate,
        "sources": list(fam.sources),
        **fam.info,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"{model.path}: familiarity ({fam.method}) fitted on {fam.info['n_train']} training images; threshold set so "
        f"{fam.false_alarm_rate:.0%} of {fam.info['n_val']} validation images are called unfamiliar"
    )
    return 0
