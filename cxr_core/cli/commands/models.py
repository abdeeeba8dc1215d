"""``cxr models``: list the registered models (name, version, architecture, size, test AUC, default)."""

from __future__ import annotations

import argparse
import json

from cxr_core.cli.commands import command_help
from cxr_core.config import Config
from cxr_core.serve.registry import list_models


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``models`` sub-command."""
    parser = sub.add_parser("models", help=command_help("models"))
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Print the registry listing."""
    models = list_models(cfg)
    if args.json:
        print(json.dumps({"models_dir": str(cfg.models_dir), "models": [m.to_dict() for m in models]}, indent=2))
        return 0
    if not models:
        print(f"no models in {cfg.models_dir}")
        return 0
    print(f"{'':2}{'name':<24}{'version':<14}{'arch':<16}{'params':>10}{'size':>10}{'test AUC':>10}")
    for m in models:
        params = f"{m.params:,}" if m.params is not None else "?"
        auc = f"{m.test_auc:.3f}" if m.test_auc is not None else "–"
        print(
            f"{'*' if m.default else ' ':2}{m.name:<24}{m.version:<14}{m.arch[:15]:<16}{params:>10}"
            f"{m.size_bytes / 1e6:>8.2f}MB{auc:>10}"
        )
    if any(m.default for m in models):
        print("* default model")
    return 0
