"""``cxr index``: index a dataset folder and print its summary (``--json`` for tools)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from cxr_core.cli import index_or_fail
from cxr_core.config import Config
from cxr_core.progress import ProgressBar


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``index`` sub-command."""
    parser = sub.add_parser("index", help="index a dataset folder: counts, patient-grouped splits, leak and confounding audits")
    parser.add_argument("data_dir", nargs="?", type=Path, help="dataset folder (default: the configured data dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


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
        lines.append("WARNING: classes come from largely different sources; high scores may reflect the source, not disease")
    for item in summary["unreadable"]:
        lines.append(f"unreadable: {item['path']}: {item['error']}")
    for folder in summary["empty_folders"]:
        lines.append(f"no images in {folder}")
    return "\n".join(lines)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Build or refresh the index and print it."""
    with ProgressBar("indexing") as progress:
        index = index_or_fail(cfg, args.data_dir, progress)
    summary = index.summary()
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
