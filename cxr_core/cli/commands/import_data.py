"""``cxr import DIR [--labels LABELS.csv] --out DATASET``: a de-identified copy of a dataset in the Kaggle layout.

DIR is indexed as ``cxr index`` does (a given label CSV is validated and remembered), then every usable frontal image
is written as an 8-bit grey PNG to ``DATASET/CLASS/images/CLASS-n.png`` with ``manifest.csv`` (file, label, source,
patient_id as pseudonyms). DIR is only read; DATASET must be new or empty and outside DIR.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError
from cxr_core.config import Config
from cxr_core.curation.curated import curated_index
from cxr_core.data.labels import LabelsError, check_export_target, export_copy
from cxr_core.util.progress import ProgressBar


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``import`` sub-command."""
    parser = sub.add_parser("import", help=command_help("import"))
    parser.add_argument("data_dir", type=Path, help="folder of images (any tree; class folders or a label CSV)")
    parser.add_argument("--labels", type=Path, metavar="LABELS.csv", help="label CSV (file,label[,patient_id,source])")
    parser.add_argument("--out", type=Path, required=True, help="new (or empty) folder for the copy, outside DIR")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Index the folder, write the copy and print what was written and left out."""
    try:
        out = check_export_target(args.data_dir, args.out)
        with ProgressBar("indexing") as progress:
            index = curated_index(cfg, args.data_dir, progress=progress, labels=args.labels)
        with ProgressBar("writing PNGs") as progress:
            result = export_copy(cfg, index, out, progress)
    except LabelsError as exc:
        raise CliError(str(exc)) from exc
    if args.json:
        print(json.dumps(result))
        return 0
    skipped = ", ".join(f"{v} {k}" for k, v in result["skipped"].items() if v) or "nothing"
    print(
        f"wrote {result['n_images']} images to {result['out']} ("
        + ", ".join(f"{k} {v}" for k, v in result["by_class"].items())
        + f"); left out: {skipped}"
    )
    print(f"next: `cxr index {result['out']}`")
    return 0
