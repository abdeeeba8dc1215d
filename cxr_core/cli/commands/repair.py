"""``cxr repair``: inpaint the markings of images into the work dir and record a reversible ``repair`` decision."""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError, index_or_fail
from cxr_core.config import Config
from cxr_core.curation.ledger import LedgerError, identify_image, open_ledger
from cxr_core.curation.repair import DEFAULT_MARGIN, DEFAULT_METHOD, METHODS, STROKE_CONTRAST, RepairError
from cxr_core.curation.repaired import RepairOptions, repair_images
from cxr_core.markings.net import MarkingsModelError
from cxr_core.util.progress import ProgressBar


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``repair`` sub-command."""
    p = sub.add_parser("repair", help=command_help("repair"))
    p.add_argument("paths", nargs="+", type=Path, help="image files, or one dataset folder with --all-flagged")
    p.add_argument("--all-flagged", action="store_true", help="repair every image of DATA_DIR flagged for markings")
    p.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help="inpainting method (default %(default)s)")
    p.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="mask dilation, a fraction of the image side")
    p.add_argument("--contrast", type=int, default=STROKE_CONTRAST, help="stroke contrast that counts as a marking")
    p.add_argument("--data", type=Path, help="dataset folder of the image files (default: the configured data dir)")
    p.add_argument("--reviewer", help="name stored with the decision (default $CXR_REVIEWER or the login name)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run)


def _flagged_images(cfg: Config, data_dir: Path, bar: ProgressBar) -> tuple[Path, list[tuple[str, str]], list[dict]]:
    """The folder and its images flagged for markings, less those already repaired or discarded (skipped)."""
    from cxr_core.curation.flags import FlagOptions, compute_flags, flagged

    index = index_or_fail(cfg, data_dir, bar)
    bar.stage("flagging")
    frame = compute_flags(cfg, index, FlagOptions(workers=cfg.workers), bar)
    frame = frame[flagged(frame, "markings") & (frame["error"] == "")]
    latest = open_ledger(cfg).latest() if cfg.ledger_path.is_file() else {}
    images, skipped = [], []
    for sha256, rel in zip(frame["sha256"], frame["path"]):
        state = latest[sha256].decision if sha256 in latest else ""
        if state in ("repair", "discard"):
            skipped.append({"path": rel, "reason": "already repaired" if state == "repair" else "discarded"})
        else:
            images.append((sha256, rel))
    return index.data_dir, images, skipped


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Repair the named images (or every flagged one) and print what was repaired and what was skipped."""
    options = RepairOptions(args.method, args.margin, args.contrast)
    reviewer = args.reviewer or os.environ.get("CXR_REVIEWER") or getpass.getuser()
    try:
        options.validate()
        with ProgressBar("repairing") as bar:
            if args.all_flagged:
                if len(args.paths) != 1 or not args.paths[0].is_dir():
                    raise CliError("--all-flagged takes one dataset folder: cxr repair DATA_DIR --all-flagged")
                data_dir, images, skipped = _flagged_images(cfg, args.paths[0], bar)
            else:
                data_dir = (args.data or cfg.data_dir).expanduser().resolve()
                images, skipped = [identify_image(p, data_dir) for p in args.paths], []
            bar.stage("repairing", total=len(images))
            result = repair_images(cfg, data_dir, images, options, reviewer, bar)
    except (LedgerError, RepairError, MarkingsModelError) as exc:
        raise CliError(str(exc)) from exc
    result["skipped"] = skipped + result["skipped"]
    if args.json:
        print(json.dumps(result))
        return 0
    for item in result["repaired"]:
        print(
            f"repaired {item['path']} ({item['mask_fraction']:.2%} of the image, {item['method']}): {item['repaired_path']}"
        )
    for item in result["skipped"]:
        print(f"skipped {item['path']}: {item['reason']}")
    print(f"{len(result['repaired'])} repaired, {len(result['skipped'])} skipped; `cxr restore PATH` undoes a repair")
    return 0
