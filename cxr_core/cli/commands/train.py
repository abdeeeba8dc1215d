"""``cxr train``: train a model into a run directory (or ``--resume`` one) with progress bars on stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError, index_or_fail
from cxr_core.config import Config
from cxr_core.preprocess.recipe import PreprocessError
from cxr_core.train.architectures import ArchitectureError
from cxr_core.train.config import (
    TRAIN_CONFIG_FILE,
    OptionSpec,
    TrainConfig,
    TrainingError,
    config_from_options,
    read_train_config,
    train_options,
)
from cxr_core.train.pipeline import PipelineError

if TYPE_CHECKING:
    from cxr_core.train.trainer import TrainResult


def _json_object(text: str) -> dict[str, Any]:
    """Parse a JSON object given on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as '{\"width\": 48}'")
    return value


def _default_text(spec: OptionSpec) -> str:
    """`` (default X)`` for the help of an option whose default is worth stating."""
    if isinstance(spec.default, bool):
        return f" (default {'on' if spec.default else 'off'})"
    return "" if spec.default in (None, {}, "") else f" (default {spec.default})"


def add_option_arguments(parser: argparse.ArgumentParser, specs: list[OptionSpec]) -> None:
    """One argument per option spec; none has a default, so only options given override ``--config``."""
    for spec in specs:
        kwargs: dict[str, Any] = {
            "dest": spec.name,
            "default": argparse.SUPPRESS,
            "help": spec.option.help + _default_text(spec),
        }
        if spec.kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif spec.kind is dict:
            kwargs.update(type=_json_object, metavar="JSON")
        else:
            kwargs.update(type=spec.kind, choices=spec.choices)
        parser.add_argument(spec.flag, **kwargs)


def add_config_argument(parser: argparse.ArgumentParser, what: str, override: str) -> None:
    """``--config FILE``: a saved training configuration (given only when set), with ``what`` it is for."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"{what} ({TRAIN_CONFIG_FILE} of a model, a run's config.json or a job's job.json); {override}",
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command: one argument per :func:`~cxr_core.train.config.train_options` entry."""
    p = sub.add_parser("train", help=command_help("train"))
    add_option_arguments(p, train_options())
    add_config_argument(p, "start from a saved configuration", "options given here override it")
    p.add_argument(
        "--run-dir",
        type=Path,
        default=argparse.SUPPRESS,
        help="run directory (default: a new folder under the work dir's runs/)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        default=argparse.SUPPRESS,
        help="continue this run from its latest checkpoint",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object with the result on stdout")
    p.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """The TrainConfig of ``base`` (default: TrainConfig's defaults) with every option given on the command line."""
    names = {spec.name for spec in train_options()}
    return config_from_options({k: v for k, v in vars(args).items() if k in names}, base)


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
            bar = tqdm(
                total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr, disable=None, dynamic_ncols=True
            )
            self.bars[stage] = bar
        return bar

    def __call__(self, stage: str, done: int, total: int, info: Mapping[str, Any]) -> None:
        """Progress callback of :func:`cxr_core.train.trainer.train`."""
        if stage in ("load", "lungs"):
            text = "loading images" if stage == "load" else "finding the lungs (gradient penalty)"
            bar = self._bar(stage, total, text, "img", leave=False)
        elif stage == "batch":
            bar = self._bar(stage, total, f"epoch {info.get('epoch')}", "batch", leave=False)
            bar.set_description(f"epoch {info.get('epoch')}")
            if info.get("loss") is not None:
                bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)
            if done < bar.n:
                bar.reset(total)
        elif stage == "epoch":
            bar = self._bar(stage, total, "epochs", "epoch", leave=True)
            bar.set_postfix(
                {k: f"{info[k]:.4f}" for k in ("val_auc", "val_loss") if info.get(k) is not None}, refresh=False
            )
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
    return {
        "run_dir": str(result.run_dir),
        "status": result.status,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_auc": result.best_val_auc,
        "seconds": round(result.seconds, 1),
        "images_per_second": round(result.images_per_second, 1),
        "model_dir": str(result.model_dir) if result.model_dir else None,
        "calibration": result.calibration,
    }


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Train or resume and print where the run and its model are."""
    from cxr_core.train.trainer import resume, train

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
        print(
            f"{result.status}: {result.run_dir} (best val AUC {auc} at epoch {result.best_epoch}, "
            f"{result.seconds:.0f} s, {result.images_per_second:.1f} img/s)"
        )
        if result.model_dir:
            print(f"model: {result.model_dir}  calibration: {result.calibration}")
    return 0 if result.status in ("done", "cancelled") else 1
