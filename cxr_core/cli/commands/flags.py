"""``cxr flags``: compute the automatic curation flags of a dataset and summarise them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError, index_or_fail
from cxr_core.config import Config
from cxr_core.curation.flags import FLAGS, FlagOptions, compute_flags, flagged, summarise
from cxr_core.util.progress import ProgressBar


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``flags`` sub-command."""
    parser = sub.add_parser("flags", help=command_help("flags"))
    parser.add_argument("data_dir", nargs="?", type=Path, help="dataset folder (default: the configured data dir)")
    parser.add_argument(
        "--min-resolution",
        type=int,
        default=FlagOptions.min_resolution,
        help="shorter side below which an image is flagged small (default %(default)s)",
    )
    parser.add_argument("--workers", type=int, help="parallel processes (default: the configured workers)")
    parser.add_argument("--top", type=int, default=5, help="list this many top-scoring images per flag (text output)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Index the dataset, compute (or reuse cached) flags and print the summary."""
    if args.min_resolution <= 0:
        raise CliError("--min-resolution must be positive")
    with ProgressBar("indexing") as bar:
        index = index_or_fail(cfg, args.data_dir, bar)
        bar.stage("flagging")
        frame = compute_flags(cfg, index, FlagOptions(args.min_resolution, args.workers), bar)
    summary = summarise(frame)
    top = {}
    for name in FLAGS:
        hits = frame[flagged(frame, name)].sort_values(name, ascending=False)
        top[name] = [
            {
                "path": p,
                "score": round(float(s), 4),
                **({"duplicate_of": d} if name == "duplicate" else {}),
                **({"reason": r} if name == "lungs" else {}),
            }
            for p, s, d, r in zip(hits["path"], hits[name], hits["duplicate_of"], hits["lung_flags"])
        ]
    if args.json:
        print(json.dumps({**summary, "data_dir": str(index.data_dir), "flagged": top}))
        return 0
    print(f"{index.data_dir}: {summary['images']} images, {summary['flagged_any']} with at least one flag")
    for name, flag in FLAGS.items():
        print(f"{name:>14}: {summary['flags'][name]:5d}  (score >= {flag.threshold}: {flag.summary})")
        for item in top[name][: args.top]:
            extra = f" (of {item['duplicate_of']})" if "duplicate_of" in item else ""
            extra += f" ({item['reason']})" if "reason" in item else ""
            print(f"{'':>16}{item['score']:.2f} {item['path']}{extra}")
    print(
        f"lung segmentation recorded for {summary['lung_segmentation']['checked']} of {summary['images']} images "
        "(`cxr lungs DATA_DIR` records the rest)"
    )
    return 0
