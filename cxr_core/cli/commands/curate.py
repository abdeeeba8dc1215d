"""``cxr discard`` / ``cxr keep`` / ``cxr restore`` / ``cxr ledger``: record curation decisions in the ledger."""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError
from cxr_core.config import Config
from cxr_core.curation.ledger import REASONS, Decision, LedgerError, decision_dicts, identify_image, open_ledger


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``discard``, ``keep``, ``restore`` and ``ledger`` sub-commands."""
    for name in ("discard", "keep", "restore"):
        p = sub.add_parser(name, help=command_help(name))
        p.add_argument("path", type=Path, help="image file (absolute, or relative to the cwd or the data dir)")
        if name == "discard":
            p.add_argument("--reason", required=True, choices=REASONS, help="why the image is discarded")
        p.add_argument("--note", default="", help="free text stored with the decision")
        _common(p)
        p.set_defaults(handler=run_decision, decision=name)
    ledger = sub.add_parser("ledger", help=command_help("ledger"))
    actions = ledger.add_subparsers(dest="action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="write the full decision history as CSV")
    export.add_argument("file", type=Path)
    imp = actions.add_parser("import", help="append the valid rows of a CSV export (bad rows are reported)")
    imp.add_argument("file", type=Path)
    hist = actions.add_parser("history", help="list recent decisions, newest first")
    hist.add_argument("--limit", type=int, default=20)
    undo = actions.add_parser("undo", help="undo a decision by id (appends a compensating row)")
    undo.add_argument("id", type=int)
    for p in (export, imp, hist, undo):
        _common(p)
        p.set_defaults(handler=run_ledger)


def _common(parser: argparse.ArgumentParser) -> None:
    """Options shared by every curation command."""
    parser.add_argument("--data", type=Path, help="dataset folder (default: the configured data dir)")
    parser.add_argument("--reviewer", help="name stored with the decision (default $CXR_REVIEWER or the login name)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _reviewer(args: argparse.Namespace) -> str:
    """The reviewer name from the option, the environment or the login name."""
    return args.reviewer or os.environ.get("CXR_REVIEWER") or getpass.getuser()


def _line(d: Decision) -> str:
    """One decision as a line of text."""
    why = f" ({d.reason}{': ' + d.note if d.note else ''})" if d.reason or d.note else ""
    undo = f" [undoes #{d.undoes}]" if d.undoes else ""
    return f"#{d.id} {d.timestamp} {d.reviewer}: {d.decision} {d.path}{why}{undo}"


def _emit(args: argparse.Namespace, payload: dict, text: str) -> None:
    """Print the JSON payload or the human text."""
    print(json.dumps(payload) if args.json else text)


def run_decision(args: argparse.Namespace, cfg: Config) -> int:
    """Record a discard, keep or restore for one image."""
    data_dir = (args.data or cfg.data_dir).expanduser().resolve()
    try:
        sha256, rel = identify_image(args.path, data_dir)
        ledger = open_ledger(cfg)
        current = ledger.latest_for(sha256)
        if args.decision == "restore" and (current is None or current.decision not in ("discard", "repair")):
            raise CliError(f"{rel} is neither discarded nor repaired; nothing to restore")
        decision = ledger.record(sha256, rel, args.decision, getattr(args, "reason", ""), args.note, _reviewer(args))
    except LedgerError as exc:
        raise CliError(str(exc)) from exc
    _emit(args, {"decision": decision_dicts([decision])[0]}, _line(decision))
    return 0


def run_ledger(args: argparse.Namespace, cfg: Config) -> int:
    """Export, import, list or undo ledger decisions."""
    try:
        ledger = open_ledger(cfg)
        if args.action == "export":
            with args.file.open("w", encoding="utf-8", newline="") as out:
                n = ledger.export_csv(out)
            _emit(args, {"exported": n, "file": str(args.file)}, f"exported {n} decisions to {args.file}")
        elif args.action == "import":
            if not args.file.is_file():
                raise CliError(f"{args.file}: no such file")
            with args.file.open(encoding="utf-8", newline="") as src:
                report = ledger.import_csv(src)
            text = (
                f"imported {report.added} decisions, {report.duplicates} already present, {len(report.errors)} bad rows"
            )
            _emit(
                args,
                {"added": report.added, "duplicates": report.duplicates, "errors": report.errors},
                "\n".join([text, *report.errors]),
            )
            return 1 if report.errors else 0
        elif args.action == "history":
            rows = ledger.history(limit=args.limit)
            _emit(args, {"decisions": decision_dicts(rows)}, "\n".join(map(_line, rows)) or "no decisions yet")
        else:
            decision = ledger.undo(args.id, _reviewer(args))
            _emit(args, {"decision": decision_dicts([decision])[0]}, _line(decision))
    except LedgerError as exc:
        raise CliError(str(exc)) from exc
    return 0
