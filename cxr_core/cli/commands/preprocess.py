"""``cxr preprocess``: resize and normalise every indexed image into the preprocessing cache, in parallel."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError, index_or_fail
from cxr_core.config import Config
from cxr_core.data.imaging import DecodedImages
from cxr_core.preprocess.cache import PreprocessReport, preprocess_dataset
from cxr_core.preprocess.normalise import METHODS, NormaliseError, describe, parse_params
from cxr_core.preprocess.recipe import (
    INTERPOLATIONS,
    LUNG_STANDARDISATION,
    RESIZE_POLICIES,
    ROI_MODES,
    PreprocessConfig,
    PreprocessError,
)
from cxr_core.preprocess.roi import Segment
from cxr_core.util.progress import ProgressBar

MAX_LISTED = 20


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``preprocess`` sub-command."""
    parser = sub.add_parser(
        "preprocess",
        help=command_help("preprocess"),
        description="Resize and normalise every readable, non-excluded image of a dataset into "
        "<home>/cache/preprocessed/<config digest>/, skipping images already done. Originals are never modified.",
    )
    parser.add_argument("data_dir", nargs="?", type=Path, help="dataset folder (default: the configured data dir)")
    parser.add_argument("--method", default="clahe", choices=list(METHODS), help="normalisation method (default clahe)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="method parameter, repeatable (e.g. --param clip_limit=3); see docs/normalisation.md for each method's parameters",
    )
    parser.add_argument("--size", type=int, default=224, help="output side in pixels (default 224)")
    parser.add_argument(
        "--resize", default="squash", choices=RESIZE_POLICIES, help="squash (ignore aspect) or pad (keep it)"
    )
    parser.add_argument("--interpolation", default="area", choices=sorted(INTERPOLATIONS), help="resize interpolation")
    parser.add_argument(
        "--roi",
        default="none",
        choices=ROI_MODES,
        help="region of interest: lung_crop / lung_mask find the lungs with the lung segmenter (as training does)",
    )
    parser.add_argument(
        "--lung-standardise",
        default="none",
        choices=LUNG_STANDARDISATION,
        help="intensity standardisation inside the lungs (needs a lung roi)",
    )
    parser.add_argument("--workers", type=int, help="parallel threads (default: the configured workers = all cores)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def format_report(report: PreprocessReport) -> str:
    """Human-readable summary of a batch run."""
    method = describe(report.config["method"], report.config["params"])
    lines = [
        f"{method}, {report.config['size']} px {report.config['resize']}: {report.images} images "
        f"({report.written} written, {report.cached} already cached, {len(report.failed)} failed) "
        f"in {report.seconds:.1f} s with {report.workers} worker(s)",
        f"cache: {report.cache_dir}",
    ]
    if report.excluded:
        reasons = ", ".join(f"{reason} {count}" for reason, count in report.excluded_by_reason.items())
        lines.append(f"excluded: {report.excluded} ({reasons})")
    problems = [("unreadable", item) for item in report.unreadable] + [("failed", item) for item in report.failed]
    for kind, item in problems[:MAX_LISTED]:
        lines.append(f"{kind}: {item['path']}: {item['error']}")
    if len(problems) > MAX_LISTED:
        lines.append(f"... and {len(problems) - MAX_LISTED} more (see --json)")
    return "\n".join(lines)


def segmenter(config: PreprocessConfig) -> Segment | None:
    """The lung segmenter a config with a lung roi needs (None without one, so TensorFlow is not imported)."""
    if config.roi == "none":
        return None
    from cxr_core.lungs.segmenter import lung_mask

    return lung_mask


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Validate the options, index the dataset, preprocess it and print the report."""
    if args.workers is not None and args.workers < 1:
        raise CliError(f"--workers must be at least 1, got {args.workers}")
    try:
        params = parse_params(args.method, args.param)
        config = PreprocessConfig(
            args.method, params, args.size, args.resize, args.interpolation, args.roi, args.lung_standardise
        )
    except (NormaliseError, PreprocessError) as exc:
        raise CliError(str(exc)) from exc
    decoded = DecodedImages()
    with ProgressBar("indexing") as progress:
        index = index_or_fail(cfg, args.data_dir, progress, decoded)
        progress.stage("preprocess", total=len(index.images()))
        try:
            report = preprocess_dataset(
                cfg, config, index, workers=args.workers, progress=progress, segment=segmenter(config), decoded=decoded
            )
        except PreprocessError as exc:
            raise CliError(str(exc)) from exc
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0
