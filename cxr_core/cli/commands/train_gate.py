"""``cxr train-gate``: train the chest X-ray gate net on training-split X-rays and procedural negatives."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError, add_trainer_args, index_or_fail, trainer_budget
from cxr_core.config import Config
from cxr_core.gate.net import SHIPPED_DIR
from cxr_core.gate.train import GateDataError, GateTrainConfig, train_gate_net


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train-gate`` sub-command."""
    d = GateTrainConfig()
    p = sub.add_parser("train-gate", help=command_help("train-gate"))
    p.add_argument(
        "--data",
        type=Path,
        help="dataset folder whose train/val splits give the X-rays (default: the configured data dir)",
    )
    p.add_argument("--out", type=Path, help=f"output model dir (default {SHIPPED_DIR})")
    p.add_argument("--size", type=int, default=d.size, help=f"input size in px, at least 32 (default {d.size})")
    p.add_argument("--samples", type=int, default=d.samples_per_epoch, help="samples drawn per epoch")
    add_trainer_args(p, d, "epochs of fresh samples", "use only N X-rays per split (quick tests)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Train and report the validation figures."""
    if args.samples < 1 or args.size < 32:
        raise CliError("--samples must be >= 1 and --size at least 32")
    data = args.data or cfg.data_dir
    index_or_fail(cfg, data)
    options = GateTrainConfig(size=args.size, samples_per_epoch=args.samples, **trainer_budget(args, cfg))
    out = args.out or SHIPPED_DIR
    try:
        card = train_gate_net(cfg, data, out, options, log=lambda msg: print(msg, file=sys.stderr))
    except GateDataError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(card))
        return 0
    val = card["validation"]
    print(
        f"saved {out}: threshold {card['threshold']:.3f}; untouched validation X-rays accepted "
        f"{val['frontal']['accepted']:.1%}, negatives accepted {val['other']['accepted']:.1%}"
    )
    return 0
