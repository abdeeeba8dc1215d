"""``cxr fetch``: download the Kaggle COVID-19 Radiography Database into the data dir."""

from __future__ import annotations

import argparse
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError
from cxr_core.config import DEFAULT_DATA_DIR, Config
from cxr_core.data.fetch import FetchError, fetch_dataset


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``fetch`` sub-command."""
    parser = sub.add_parser("fetch", help=command_help("fetch"))
    parser.add_argument(
        "--dest",
        type=Path,
        help="where to link the dataset (default: the configured data dir, or ./data while that is the demo)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Download, verify the layout, and link the class folders into the data dir."""
    dest = (args.dest or (DEFAULT_DATA_DIR if cfg.uses_demo else cfg.data_dir)).expanduser().resolve()
    try:
        target = fetch_dataset(dest, cfg.include_classes)
    except FetchError as exc:
        raise CliError(str(exc)) from exc
    print(f"dataset ready in {target}; run `cxr index {target}` next")
    return 0
