"""``cxr tune``: KerasTuner Hyperband search for ``cxr_net`` on the validation split (rerun to resume)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cxr_core.cli.commands import command_help
from cxr_core.cli.commands.train import add_config_argument, add_option_arguments
from cxr_core.cli.parser import CliError
from cxr_core.config import Config
from cxr_core.preprocess.recipe import PreprocessError
from cxr_core.train.config import read_train_config
from cxr_core.train.pipeline import PipelineError
from cxr_core.train.trainer import TrainingError
from cxr_core.train.tuning import RESULTS_CSV, TuneConfig, recipe_options, tune, tuning_dir


def _ints(text: str) -> tuple[int, ...]:
    """Comma-separated integers."""
    return tuple(int(v) for v in text.split(","))


def _floats(text: str) -> tuple[float, ...]:
    """Comma-separated numbers."""
    return tuple(float(v) for v in text.split(","))


def _words(text: str) -> tuple[str, ...]:
    """Comma-separated names."""
    return tuple(v.strip() for v in text.split(",") if v.strip())


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``tune`` sub-command."""
    d = TuneConfig()
    p = sub.add_parser("tune", help=command_help("tune"))
    p.add_argument("--data", type=Path, help="dataset folder (default: the configured data dir)")
    p.add_argument(
        "--max-epochs", type=int, default=d.max_epochs, help=f"Hyperband max epochs (default {d.max_epochs})"
    )
    p.add_argument("--factor", type=int, default=d.factor, help=f"Hyperband reduction factor (default {d.factor})")
    p.add_argument("--iterations", type=int, default=d.hyperband_iterations, help="Hyperband iterations (default 1)")
    p.add_argument("--sizes", type=_ints, default=d.sizes, help="image sizes, e.g. 128,160,224")
    p.add_argument("--methods", type=_words, default=d.methods, help="normalisation methods, e.g. none,clahe,gamma")
    p.add_argument("--lrs", type=_floats, default=d.lrs, help="learning rates, e.g. 0.0005,0.001,0.002")
    p.add_argument("--widths", type=_ints, default=d.widths, help="cxr_net widths, e.g. 16,32,48")
    p.add_argument("--depths", type=_ints, default=d.depths, help="cxr_net depths, e.g. 3,4,5")
    p.add_argument("--dropouts", type=_floats, default=d.dropouts, help="dropout rates, e.g. 0.1,0.3,0.5")
    p.add_argument("--batch", type=int, default=d.batch, help="batch size (default 32)")
    p.add_argument("--limit", type=int, help="use N training images only")
    p.add_argument("--seed", type=int, help="random seed (default: the configured seed)")
    p.add_argument("--directory", type=Path, help="search state folder (default: <work dir>/tuning)")
    p.add_argument("--project", default=d.project, help="search name; rerun with the same name to resume")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    add_config_argument(
        p,
        "take the fixed recipe (roi, sampling, augmentation, robustness recipes) from a saved configuration",
        "the options below override it",
    )
    add_option_arguments(p, recipe_options())
    p.set_defaults(handler=run)


def recipe_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The fixed recipe: the ``--config`` file's recipe options, overridden by those given on the command line."""
    specs = recipe_options()
    recipe: dict[str, Any] = {}
    if "config" in vars(args):
        saved = read_train_config(args.config).to_dict()
        recipe = {spec.name: spec.value_in(saved) for spec in specs}
    recipe.update({s.name: vars(args)[s.name] for s in specs if s.name in vars(args)})
    return recipe


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Run or resume the search and print the results table."""
    try:
        config = TuneConfig(
            max_epochs=args.max_epochs,
            factor=args.factor,
            hyperband_iterations=args.iterations,
            sizes=args.sizes,
            methods=args.methods,
            lrs=args.lrs,
            widths=args.widths,
            depths=args.depths,
            dropouts=args.dropouts,
            batch=args.batch,
            limit=args.limit,
            seed=args.seed,
            data_dir=str(args.data) if args.data else None,
            directory=str(args.directory) if args.directory else None,
            project=args.project,
            recipe=recipe_from_args(args),
        )
        table = tune(cfg, config, on_trial=lambda line: print(line, file=sys.stderr, flush=True))
    except (TrainingError, PipelineError, PreprocessError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    folder = tuning_dir(cfg, config)
    if args.json:
        print(json.dumps({"directory": str(folder), "trials": table.to_dict("records")}))
    else:
        print(table.to_string(index=False) if len(table) else "no completed trials")
        print(f"results: {folder / RESULTS_CSV}")
    return 0
