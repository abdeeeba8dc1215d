"""``cxr evaluate``: honest metrics of a registry model on a dataset folder (``--json`` for tools)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError, index_or_fail
from cxr_core.config import Config
from cxr_core.evaluate.evaluate import SPLIT_CHOICES, EvaluationError, evaluate
from cxr_core.evaluate.metrics import DEFAULT_BOOTSTRAP
from cxr_core.evaluate.report import write_report
from cxr_core.gate import GateModelError
from cxr_core.serve.registry import RegistryError, default_model_dir, load_model
from cxr_core.util.progress import ProgressBar


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    parser = sub.add_parser("evaluate", help=command_help("evaluate"))
    parser.add_argument("--model", type=Path, help="model directory (default: the registry's default model)")
    parser.add_argument("--data", type=Path, help="dataset folder (default: the configured data dir)")
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default="test",
        help="split to evaluate; 'all' for an external dataset (default: test)",
    )
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples for the 95%% CIs")
    parser.add_argument(
        "--leave-one-source-out",
        action="store_true",
        help="also retrain the model's recipe once per source without it and test on that source",
    )
    parser.add_argument("--loso-size", type=int, default=None, help="image size of the leave-one-source-out models")
    parser.add_argument("--loso-epochs", type=int, default=None, help="epochs of each leave-one-source-out model")
    parser.add_argument("--no-write", action="store_true", help="do not write reports into the model directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def _fmt(value: float | None) -> str:
    """A metric with three decimals, or n/a."""
    return "n/a" if value is None else f"{value:.3f}"


def format_result(result: dict[str, Any]) -> str:
    """Human-readable summary of an evaluation."""
    ci = result["ci95"]

    def line(key: str) -> str:
        """One metric with its interval."""
        value, interval = result.get(key), ci.get(key)
        text = "n/a" if value is None else f"{value:.3f}"
        return f"  {key:<12}{text}" + (f"  (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else "")

    c = result["confusion"]
    lines = [
        f"{result['model']['name']} ({result['model']['version']}) on {result['data']['dir']} [{result['split']}]: "
        f"n={result['n']} (COVID {result['n_covid']}, Normal {result['n_normal']})"
    ]
    lines += [
        line(k) for k in ("roc_auc", "pr_auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "ece")
    ]
    lines.append(
        f"  threshold {result['threshold']:.3f}: TP {c['tp']} FP {c['fp']} TN {c['tn']} FN {c['fn']}; "
        f"ECE uncalibrated {result['ece_uncalibrated']:.3f}"
    )
    lines.append(
        "  by source: "
        + "; ".join(f"{src} n={row['n']} acc={row['accuracy']:.2f}" for src, row in result["by_source"].items())
    )
    conf = result["confounding"]
    lines.append(
        f"  source alone predicts the label with accuracy {conf['source_only_accuracy']:.1%}: "
        "see leave-one-source-out for the honest figure"
    )
    cov = result.get("coverage")
    if cov:
        covered = cov["on_covered"]
        familiar = "no familiarity fit" if cov["familiar"] is None else f"{cov['familiar']} also familiar"
        lines.append(
            f"  coverage: {cov['gate_passed']}/{cov['n']} pass the gate, {familiar}: {cov['covered']} answered "
            f"({cov['coverage']:.1%}); on those sensitivity {_fmt(covered.get('sensitivity'))}, "
            f"specificity {_fmt(covered.get('specificity'))}"
        )
    loso = result.get("leave_one_source_out")
    if loso:
        lines.append(
            "  leave-one-source-out: "
            + "; ".join(f"{src} acc={row['accuracy']:.2f}" for src, row in loso["sources"].items())
        )
    if result.get("training_overlap"):
        lines.append(f"  WARNING: {result['training_overlap']} of these images were in the model's train/val split")
    if result.get("report_dir"):
        lines.append(f"  report: {result['report_dir']}")
    return "\n".join(lines)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Load the model, evaluate it, optionally run leave-one-source-out, write the report and print the result."""
    model_dir = args.model or default_model_dir(cfg)
    if model_dir is None:
        raise CliError(f"no --model given and no default model in {cfg.models_dir}")
    data_dir = (args.data or cfg.data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise CliError(f"no dataset at {data_dir}: run `cxr fetch` or pass --data DIR")
    if args.bootstrap < 100:
        raise CliError("--bootstrap must be at least 100")
    with ProgressBar("predicting") as progress:
        try:
            model = load_model(model_dir)
            index = index_or_fail(cfg, data_dir)
            result = evaluate(model, index, args.split, cfg=cfg, n_boot=args.bootstrap, progress=progress)
            if args.leave_one_source_out:
                from cxr_core.evaluate.loso import LosoOptions, leave_one_source_out

                options = LosoOptions.for_model(model, size=args.loso_size, epochs=args.loso_epochs)
                result["leave_one_source_out"] = leave_one_source_out(
                    cfg, index, options, model_dir=None if args.no_write else model.path
                )
        except (RegistryError, EvaluationError, GateModelError, ValueError) as exc:
            raise CliError(str(exc).splitlines()[0]) from exc
    if not args.no_write:
        try:
            result["report_dir"] = str(write_report(model.path, result))
        except OSError as exc:
            raise CliError(f"cannot write the report into {model.path}: {exc}") from exc
    print(json.dumps(result, indent=2) if args.json else format_result(result))
    return 0
