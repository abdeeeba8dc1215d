"""The ``cxr`` command line: builds the parser from :data:`cxr_core.cli.commands.COMMANDS` and dispatches.

Only the module of the command being run is imported (with its libraries), so ``cxr --help`` and every command start
without loading TensorFlow, scikit-learn or pandas unless they need them.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cxr_core import __version__
from cxr_core.cli import commands
from cxr_core.cli.commands import COMMANDS
from cxr_core.config import Config, ConfigError, load_config
from cxr_core.errors import DatasetError

if TYPE_CHECKING:
    from cxr_core.data.imaging import DecodedImages
    from cxr_core.data.index import DatasetIndex
    from cxr_core.util.progress import Progress, TrainerBudget

Handler = Callable[[argparse.Namespace, Config], int]


class CliError(Exception):
    """An expected failure: printed as one line on stderr, exit code 2 (so is any :class:`DatasetError`)."""


def index_or_fail(
    cfg: Config,
    data_dir: str | os.PathLike[str] | None,
    progress: Progress | None = None,
    decoded: DecodedImages | None = None,
) -> DatasetIndex:
    """Load the dataset index for a command (``decoded`` keeps the pixels read), turning dataset problems into a
    one-line CLI error."""
    from cxr_core.curation.curated import curated_index

    try:
        return curated_index(cfg, data_dir, progress=progress, decoded=decoded)
    except DatasetError as exc:
        raise CliError(str(exc)) from exc


def add_trainer_args(p: argparse.ArgumentParser, defaults: TrainerBudget, epochs_help: str, limit_help: str) -> None:
    """Add the options every small trainer takes: --epochs, --batch, --lr, --max-minutes, --limit, --seed, --json."""
    p.add_argument("--epochs", type=int, default=defaults.epochs, help=f"{epochs_help} (default {defaults.epochs})")
    p.add_argument("--batch", type=int, default=defaults.batch)
    p.add_argument("--lr", type=float, default=defaults.lr)
    p.add_argument("--max-minutes", type=float, default=defaults.max_minutes, help="wall-time budget")
    p.add_argument("--limit", type=int, help=limit_help)
    p.add_argument("--seed", type=int, help="random seed (default: the config seed)")
    p.add_argument("--json", action="store_true", help="print the card as one JSON object")


def trainer_budget(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    """The :class:`TrainerBudget` fields from the options of :func:`add_trainer_args` (the config's seed by default)."""
    if args.epochs < 1 or args.batch < 1:
        raise CliError("--epochs and --batch must be >= 1")
    return {
        "epochs": args.epochs,
        "batch": args.batch,
        "lr": args.lr,
        "max_minutes": args.max_minutes,
        "seed": cfg.seed if args.seed is None else args.seed,
        "limit": args.limit,
    }


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the command and where its help is."""

    def error(self, message: str) -> typing.NoReturn:
        """Exit 2 with ``cxr train: error: ... (see cxr train --help)``."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def chosen_command(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv`` (after the global options), None when there is none."""
    rest = list(argv)
    while rest:
        token = rest.pop(0)
        if token == "--home":
            rest = rest[1:]
        elif not token.startswith("-"):
            return token if token in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The root parser: every command fully registered, or with ``argv`` only the command it names (the others
    listed by name and help, their modules not imported)."""
    parser = Parser(prog="cxr", description="CXR Review: chest X-ray curation, training and review.")
    parser.add_argument("--version", action="version", version=f"cxr {__version__}")
    parser.add_argument("--home", help="work dir for caches, index, ledger and runs (default $CXR_HOME or .cxr/)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    chosen = None if argv is None else chosen_command(argv)
    wanted = list(COMMANDS) if argv is None else [chosen] if chosen else []
    modules = dict.fromkeys(COMMANDS[name][0] for name in wanted)
    for module in modules:
        importlib.import_module(f"{commands.__name__}.{module}").register(sub)
    for name, (_, text) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=text)
    for command in sub.choices.values():
        command.add_argument("--home", default=argparse.SUPPRESS, help="work dir (default $CXR_HOME or .cxr/)")
    return parser


def _uses_configured_data(args: argparse.Namespace) -> bool:
    """True when the command takes a dataset folder (``data``/``data_dir``) and none was given."""
    return any(hasattr(args, name) and getattr(args, name) is None for name in ("data", "data_dir"))


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, build the config and run the chosen command; returns the exit code."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        cfg = load_config(home=args.home)
        if cfg.uses_demo and _uses_configured_data(args):
            print(
                f"cxr {args.command}: using the demo dataset at {cfg.data_dir} (set CXR_DATA_DIR for your own)",
                file=sys.stderr,
            )
        handler: Handler = args.handler
        return int(handler(args, cfg) or 0)
    except (CliError, ConfigError, DatasetError) as exc:
        print(f"cxr {args.command}: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cxr {args.command}: interrupted", file=sys.stderr)
        return 130


def run() -> typing.NoReturn:
    """The ``cxr`` script and ``python -m cxr_core``: run :func:`main`, then exit with its code.

    What is still alive is first frozen out of the cyclic garbage collector: the exit frees it anyway, and the
    interpreter's last collection would walk every object of pandas and pyarrow (0.07 s of ``cxr preprocess``).
    """
    status = main()
    gc.freeze()
    raise SystemExit(status)
