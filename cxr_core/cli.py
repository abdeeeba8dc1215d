"""The ``cxr`` command line: discovers every module in :mod:`cxr_core.commands` and dispatches to it."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from typing import Callable, Sequence

from cxr_core import __version__, commands
from cxr_core.config import Config, ConfigError, load_config
from cxr_core.dataset_index import DatasetError, DatasetIndex, Progress, load_index

Handler = Callable[[argparse.Namespace, Config], int]


class CliError(Exception):
    """An expected failure: printed as one line on stderr, exit code 2."""


def index_or_fail(cfg: Config, data_dir: str | os.PathLike[str] | None, progress: Progress | None = None) -> DatasetIndex:
    """Load the dataset index for a command, turning dataset problems into a one-line CLI error."""
    try:
        return load_index(cfg, data_dir, progress=progress)
    except DatasetError as exc:
        raise CliError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    """The root parser with every discovered sub-command registered."""
    parser = argparse.ArgumentParser(prog="cxr", description="CXR Review: chest X-ray curation, training and review.")
    parser.add_argument("--version", action="version", version=f"cxr {__version__}")
    parser.add_argument("--home", help="work dir for caches, index, ledger and runs (default $CXR_HOME or .cxr/)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    for command in sub.choices.values():
        command.add_argument("--home", default=argparse.SUPPRESS, help="work dir (default $CXR_HOME or .cxr/)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build the config and run the chosen command; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(home=args.home)
        handler: Handler = args.handler
        return int(handler(args, cfg) or 0)
    except (CliError, ConfigError) as exc:
        print(f"cxr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cxr {args.command}: interrupted", file=sys.stderr)
        return 130
