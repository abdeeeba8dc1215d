"""``cxr lungs DIR [--out OUT_DIR]``: segment the lungs of every image under a folder and flag failures."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError
from cxr_core.config import Config
from cxr_core.lungs.cache import segment_folder
from cxr_core.lungs.segmenter import LungModelError, load_segmenter


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``lungs`` sub-command."""
    p = sub.add_parser("lungs", help=command_help("lungs"))
    p.add_argument("dir", type=Path, help="a dataset folder or any folder of images")
    p.add_argument("--out", type=Path, help="also write 0/255 PNG masks here, same relative paths, input size")
    p.add_argument("--model", type=Path, help="segmenter dir (default $CXR_LUNGS_MODEL, else <models dir>/lungs)")
    p.add_argument("--json", action="store_true", help="print one JSON summary object")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Segment, then print counts and every flagged image."""
    if not args.dir.is_dir():
        raise CliError(f"{args.dir} is not a folder")
    if args.out is not None and args.out.resolve() == args.dir.resolve():
        raise CliError("--out must differ from DIR (masks would overwrite the images)")
    try:
        result = segment_folder(cfg, args.dir, args.out, load_segmenter(args.model))
    except LungModelError as exc:
        raise CliError(str(exc)) from exc
    rows, flagged = result.rows, result.flagged
    if rows.empty:
        raise CliError(f"no images under {args.dir}")
    summary = {
        "n": int(len(rows)),
        "flagged": int(len(flagged)),
        "flags_csv": str(result.flags_path),
        "out": str(args.out) if args.out else None,
        "flagged_images": flagged[["path", "flags", "area_fraction", "error"]].to_dict(orient="records"),
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"segmented {len(rows)} images, {len(flagged)} flagged (see {result.flags_path})")
    for row in flagged.itertuples():
        print(f"  {row.path}: {row.flags} (area {row.area_fraction:.2f}){' ' + row.error if row.error else ''}")
    return 0
