"""``cxr train``: train a model into a run directory (or ``--resume`` one) with progress bars on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

from tqdm import tqdm

from cxr_core.architectures import ARCHITECTURES, ArchitectureError
from cxr_core.cli import CliError, index_or_fail
from cxr_core.config import Config
from cxr_core.pipeline import Augmentation, PipelineError
from cxr_core.preprocess import ROI_MODES, PreprocessError
from cxr_core.training import (PIPELINES, SAMPLINGS, STRATEGIES, TRAIN_CONFIG_FILE, TrainConfig, TrainingError,
                               TrainResult, read_train_config, resume, train)


def _json_object(text: str) -> dict[str, Any]:
    """Parse a JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as '{\"width\": 48}'")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    defaults = Augmentation()
    p = sub.add_parser("train", help="train a classifier into a run directory (checkpoints, live status, resume)")
    p.add_argument("--data", type=Path, help="dataset folder (default: the configured data dir)")
    p.add_argument("--arch", default="cxr_net", choices=sorted(ARCHITECTURES), help="architecture (default cxr_net)")
    p.add_argument("--epochs", type=int, help="maximum epochs (default 30; with --resume: train on to this many)")
    p.add_argument("--size", type=int, help="image size in px (default: the architecture's, 224 for cxr_net)")
    p.add_argument("--method", default="clahe", help="normalisation method (default clahe)")
    p.add_argument("--method-params", type=_json_object, default={}, help="normalisation parameters as JSON")
    p.add_argument("--roi", default="none", choices=ROI_MODES, help="region of interest: none, lung_crop or lung_mask (default none)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the architecture's)")
    p.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    p.add_argument("--limit", type=int, help="train on N images only (smoke runs; val/test capped at max(16, N/4))")
    p.add_argument("--seed", type=int, help="random seed (default: the configured seed)")
    p.add_argument("--patience", type=int, default=8, help="early-stopping patience in epochs (default 8)")
    p.add_argument("--monitor", default="val_auc", choices=["val_auc", "val_loss"], help="early stopping / best model")
    p.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=False,
                   help="bfloat16 mixed precision (default off)")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True,
                   help="validate and keep an exponential moving average of the weights (Polyak averaging; default on)")
    p.add_argument("--pipeline", default="ours", choices=PIPELINES, help="tf.data (ours) or the paper's ImageDataGenerator")
    weighting = p.add_mutually_exclusive_group()
    weighting.add_argument("--class-weights", "--class-weight", action=argparse.BooleanOptionalAction, default=True,
                           help="inverse-frequency class weights (default on)")
    weighting.add_argument("--balanced", action="store_true", help="balanced sampling instead of class weights")
    weighting.add_argument("--sampling", choices=SAMPLINGS,
                           help="class_weight, balanced (classes equally likely), source_balanced (classes equally "
                                "likely and, within a class, every source equally likely) or none")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True, help="augmentation (default on)")
    p.add_argument("--rotation", type=float, default=defaults.rotation, help="max rotation in degrees (default 15)")
    p.add_argument("--zoom", type=float, default=defaults.zoom, help="max zoom fraction (default 0.2)")
    p.add_argument("--shift", type=float, default=defaults.shift, help="max shift fraction (default 0.2)")
    p.add_argument("--shear", type=float, default=defaults.shear, help="max shear fraction (default 0.2)")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=False, help="horizontal flips (default off)")
    p.add_argument("--hparams", type=_json_object, default={}, help="architecture hyperparameters as JSON, e.g. '{\"width\": 48}'")
    p.add_argument("--weights", help="pre-trained weights file (vgg19_frozen, densenet121); 'imagenet' downloads")
    p.add_argument("--strategy", default="auto", choices=STRATEGIES, help="distribution strategy (default auto)")
    p.add_argument("--config", type=Path, metavar="FILE",
                   help=f"start from a saved configuration ({TRAIN_CONFIG_FILE} of a model, or a run's config.json); "
                        "options given here override it")
    p.add_argument("--run-dir", type=Path, help="run directory (default: a new folder under the work dir's runs/)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run from its latest checkpoint")
    p.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")
    for action in p._actions:  # noqa: SLF001 - only options given on the command line override --config
        if action.dest not in ("help", "json"):
            action.default = argparse.SUPPRESS
    p.set_defaults(handler=run)


SAME_NAMED = ("arch", "epochs", "size", "method", "method_params", "roi", "lr", "batch", "limit", "seed", "patience",
              "monitor", "mixed_precision", "ema", "pipeline", "augment", "hparams", "weights", "strategy")
AUGMENTATION_FLAGS = {"rotation": "rotation", "zoom": "zoom", "shift": "shift", "shear": "shear", "hflip": "flip"}


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """The TrainConfig of ``base`` (default: TrainConfig's defaults) with every option given on the command line."""
    given = vars(args)
    values = (base or TrainConfig()).to_dict()
    values.update({name: given[name] for name in SAME_NAMED if name in given})
    if "data" in given:
        values["data_dir"] = str(given["data"])
    if given.get("sampling"):
        values["sampling"] = given["sampling"]
    elif given.get("balanced"):
        values["sampling"] = "balanced"
    elif "class_weights" in given:
        values["sampling"] = "class_weight" if given["class_weights"] else "none"
    augmentation = {**Augmentation().to_dict(), **values.get("augmentation", {})}
    augmentation.update({key: given[flag] for flag, key in AUGMENTATION_FLAGS.items() if flag in given})
    values["augmentation"] = asdict(Augmentation(**augmentation))
    tc = TrainConfig.from_dict(values)
    if tc.weights is None and "weights" not in given and tc.arch in ARCHITECTURES and ARCHITECTURES[tc.arch].pretrained:
        tc.weights = "imagenet"
    return tc


class Bars:
    """tqdm progress bars on stderr for loading images, the batches of each epoch, and the epochs."""

    def __init__(self) -> None:
        self.bars: dict[str, tqdm] = {}

    def _bar(self, stage: str, total: int, desc: str, unit: str, leave: bool) -> tqdm:
        """The bar of ``stage``, (re)created when its total changes."""
        bar = self.bars.get(stage)
        if bar is None or bar.total != total:
            if bar is not None:
                bar.close()
            bar = tqdm(total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, disable=None, dynamic_ncols=True)
            self.bars[stage] = bar
        return bar

    def __call__(self, stage: str, done: int, total: int, info: Mapping[str, Any]) -> None:
        """Progress callback of :func:`cxr_core.training.train`."""
        if stage == "load":
            bar = self._bar(stage, total, "loading images", "img", leave=False)
        elif stage == "batch":
            bar = self._bar(stage, total, f"epoch {info.get('epoch')}", "batch", leave=False)
            bar.set_description(f"epoch {info.get('epoch')}")
            if info.get("loss") is not None:
                bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
            if done < bar.n:
                bar.reset(total)
        elif stage == "epoch":
            bar = self._bar(stage, total, "epochs", "epoch", leave=True)
            bar.set_postfix({k: f"{info[k]:.4f}" for k in ("val_auc", "val_loss") if info.get(k) is not None}, refresh=False)
            batch_bar = self.bars.pop("batch", None)
            if batch_bar is not None:
                batch_bar.close()
        else:
            return
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        """Close every bar."""
        for bar in self.bars.values():
            bar.close()


def _summary(result: TrainResult) -> dict[str, Any]:
    """The JSON-ready result of a run."""
    return {"run_dir": str(result.run_dir), "status": result.status, "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch, "best_val_auc": result.best_val_auc, "seconds": round(result.seconds, 1),
            "images_per_second": round(result.images_per_second, 1),
            "model_dir": str(result.model_dir) if result.model_dir else None, "calibration": result.calibration}


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Train or resume and print where the run and its model are."""
    bars = Bars()
    try:
        if getattr(args, "resume", None):
            result = resume(cfg, args.resume, epochs=getattr(args, "epochs", None), progress=bars)
        else:
            base = read_train_config(args.config) if getattr(args, "config", None) else None
            tc = config_from_args(args, base).validate()
            index_or_fail(cfg, tc.data_dir)
            result = train(cfg, tc, run_dir=getattr(args, "run_dir", None), progress=bars)
    except (TrainingError, ArchitectureError, PipelineError, PreprocessError, FileExistsError) as exc:
        raise CliError(str(exc)) from exc
    finally:
        bars.close()
    summary = _summary(result)
    if args.json:
        print(json.dumps(summary))
    else:
        auc = "n/a" if result.best_val_auc is None else f"{result.best_val_auc:.4f}"
        print(f"{result.status}: {result.run_dir} (best val AUC {auc} at epoch {result.best_epoch}, "
              f"{result.seconds:.0f} s, {result.images_per_second:.1f} img/s)")
        if result.model_dir:
            print(f"model: {result.model_dir}  calibration: {result.calibration}")
    return 0 if result.status in ("done", "cancelled") else 1
