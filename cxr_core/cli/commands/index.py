"""``cxr index``: index a dataset folder and print its summary (``--json`` for tools).

``--labels FILE`` indexes any folder tree of images (DICOM or not) by a label CSV and remembers FILE for the folder,
so later commands and pages find it again; ``--forget-labels`` drops that memory (see :mod:`cxr_core.data.index`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cxr_core.cli.commands import command_help
from cxr_core.config import Config
from cxr_core.curation.curated import curated_index
from cxr_core.data.index import forget_labels
from cxr_core.util.progress import ProgressBar

LISTED = 10


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``index`` sub-command."""
    parser = sub.add_parser("index", help=command_help("index"))
    parser.add_argument("data_dir", nargs="?", type=Path, help="dataset folder (default: the configured data dir)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument(
        "--labels",
        type=Path,
        metavar="LABELS.csv",
        help="label CSV (file,label[,patient_id,source]; file relative to the folder), remembered for it",
    )
    labels.add_argument(
        "--forget-labels",
        action="store_true",
        help="forget the remembered label CSV of the folder (a labels.csv at its root still counts)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def _listing(what: str, paths: list[str]) -> list[str]:
    """A count line for ``paths`` and the first few of them."""
    if not paths:
        return []
    more = [f"  … and {len(paths) - LISTED} more (all in --json)"] if len(paths) > LISTED else []
    return [f"{what}: {len(paths)}", *(f"  {p}" for p in paths[:LISTED]), *more]


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable text of an index summary."""
    lines = [f"{summary['data_dir']}: {summary['n_images']} images, {summary['n_patients']} patients"]
    lines.append("by class:  " + ", ".join(f"{k} {v}" for k, v in summary["by_class"].items()))
    lines.append("by source: " + ", ".join(f"{k} {v}" for k, v in summary["by_source"].items()))
    for split, counts in summary["splits"].items():
        lines.append(f"{split:>5}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines.append(f"patients in more than one split: {summary['patients_in_multiple_splits']}")
    lines.append(f"duplicate pairs: {summary['duplicate_pairs']} ({summary['duplicates_across_splits']} across splits)")
    if summary["excluded"]:
        lines.append("excluded: " + ", ".join(f"{k} {v}" for k, v in summary["excluded"].items()))
    conf = summary["confounding"]
    lines.append(
        f"source predicts label: Cramér's V {conf['cramers_v']:.2f}, accuracy from source alone {conf['source_only_accuracy']:.1%}"
    )
    if conf["cramers_v"] > 0.5:
        lines.append(
            "WARNING: classes come from largely different sources; high scores may reflect the source, not disease"
        )
    for item in summary["unreadable"]:
        lines.append(f"unreadable: {item['path']}: {item['error']}")
    for folder in summary["empty_folders"]:
        lines.append(f"no images in {folder}")
    if summary["labels_file"]:
        lines.append(f"labels from {summary['labels_file']}")
    lines += _listing("unlabelled image files (not in the label CSV, left out)", summary["unlabelled"])
    lines += _listing("lateral views (left out)", summary["lateral"])
    return "\n".join(lines)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Build or refresh the index and print it."""
    if args.forget_labels:
        forget_labels(cfg, args.data_dir or cfg.data_dir)
    with ProgressBar("indexing") as progress:
        index = curated_index(cfg, args.data_dir, progress=progress, labels=args.labels)
    summary = index.summary()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
