"""``cxr train-markings``: train the learned markings detector on synthetic overlays and write ``models/markings/``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError, add_trainer_args, trainer_budget
from cxr_core.config import Config
from cxr_core.markings.train import MarkingsDataError, MarkingsTrainConfig, train_markings_net


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train-markings`` sub-command."""
    d = MarkingsTrainConfig()
    p = sub.add_parser("train-markings", help=command_help("train-markings"))
    p.add_argument(
        "--data",
        type=Path,
        help="dataset folder with manifest.csv (default: the configured data dir; "
        "files listed in its markings.csv are left out)",
    )
    p.add_argument("--out", type=Path, help="output model dir (default MODELS_DIR/markings)")
    p.add_argument("--size", type=int, default=d.size, help=f"input size in px, a multiple of 16 (default {d.size})")
    p.add_argument(
        "--width", type=int, default=d.width, help=f"filters of the first separable block (default {d.width})"
    )
    p.add_argument("--samples", type=int, default=d.samples_per_epoch, help="samples drawn per epoch")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="share of Normal patients held out")
    add_trainer_args(p, d, "epochs of fresh synthetic samples", "use only N random background images (quick tests)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Train and report the synthetic validation numbers."""
    if args.samples < 1 or args.size < 32 or args.size % 16:
        raise CliError("--samples must be >= 1 and --size a multiple of 16, >= 32")
    if not 0 < args.val_fraction < 1:
        raise CliError("--val-fraction must be between 0 and 1")
    options = MarkingsTrainConfig(
        size=args.size,
        draw_size=2 * args.size,
        width=args.width,
        samples_per_epoch=args.samples,
        val_fraction=args.val_fraction,
        **trainer_budget(args, cfg),
    )
    out = args.out or cfg.models_dir / "markings"
    try:
        card = train_markings_net(args.data or cfg.data_dir, out, options, log=lambda msg: print(msg, file=sys.stderr))
    except (MarkingsDataError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(card))
        return 0
    val = card["synthetic_validation"]
    print(
        f"saved {out}: synthetic validation ROC AUC {val['roc_auc']:.3f}, "
        f"recall {val['at']['0.5']['recall']:.3f} at 0.5 with {val['at']['0.5']['false_alarm_rate']:.3f} false alarms"
    )
    return 0
