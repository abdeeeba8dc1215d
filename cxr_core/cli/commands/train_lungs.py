"""``cxr train-lungs``: train the lung segmenter on image/mask pairs and write ``models/lungs/``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError, add_trainer_args, trainer_budget
from cxr_core.config import Config
from cxr_core.lungs.train import LungDataError, LungTrainConfig, train_segmenter

DEFAULT_DATA = Path("../shared/data/lung-masks")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train-lungs`` sub-command."""
    d = LungTrainConfig()
    p = sub.add_parser("train-lungs", help=command_help("train-lungs"))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with images/, masks/, manifest.csv")
    p.add_argument("--out", type=Path, help="output model dir (default MODELS_DIR/lungs)")
    p.add_argument("--size", type=int, default=d.size, help=f"input size in px (default {d.size})")
    p.add_argument("--filters", type=int, default=d.base_filters, help="filters of the first level")
    p.add_argument("--patience", type=int, default=d.patience)
    add_trainer_args(p, d, "maximum epochs (early stopping on val Dice)", "use only N random pairs (quick tests)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Train and report validation Dice per source."""
    if args.size < 16:
        raise CliError("--size must be >= 16")
    options = LungTrainConfig(
        size=args.size, base_filters=args.filters, patience=args.patience, **trainer_budget(args, cfg)
    )
    out = args.out or cfg.models_dir / "lungs"
    try:
        card = train_segmenter(args.data, out, options, log=lambda msg: print(msg, file=sys.stderr))
    except (LungDataError, ValueError) as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(card))
        return 0
    val = card["validation"]
    print(f"saved {out}: val Dice {val['overall']['dice_mean']:.3f}, IoU {val['overall']['iou_mean']:.3f}")
    for source, m in val["by_source"].items():
        print(f"  {source}: Dice {m['dice_mean']:.3f}  IoU {m['iou_mean']:.3f}  (n={m['n']})")
    return 0
