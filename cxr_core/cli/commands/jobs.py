"""``cxr runs``: list training runs and cancel, resume, delete (to trash) or promote one (the job runner's CLI)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

from cxr_core.cli.commands import command_help
from cxr_core.cli.parser import CliError
from cxr_core.config import Config
from cxr_core.train import jobs


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``runs`` sub-command with its actions."""
    p = sub.add_parser("runs", help=command_help("runs"))
    p.add_argument(
        "action",
        nargs="?",
        default="list",
        choices=["list", "show", "cancel", "resume", "delete", "promote"],
        help="what to do (default: list)",
    )
    p.add_argument("run", nargs="?", help="run id or run directory (all actions but list)")
    p.add_argument("--name", help="promote: the registry name of the model")
    p.add_argument("--default", action="store_true", help="promote: also make it the default model")
    p.add_argument("--yes", action="store_true", help="delete: confirm moving the run to the trash folder")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(handler=run)


def _row(summary: jobs.RunSummary) -> dict[str, object]:
    """A JSON-ready summary of one run."""
    return {**asdict(summary), "path": str(summary.path)}


def _act(args: argparse.Namespace, cfg: Config) -> dict[str, object]:
    """Perform a run action and return what to print."""
    if args.action == "show":
        return _row(jobs.summarize(jobs.find_run(cfg, args.run)))
    if args.action == "cancel":
        return {"run": args.run, "result": jobs.cancel(cfg, args.run)}
    if args.action == "resume":
        return {"run": args.run, "result": f"resume queued in {jobs.resume(cfg, args.run)}"}
    if args.action == "delete":
        if not args.yes:
            raise CliError(f"deleting moves the run to {cfg.trash_dir}; confirm with --yes")
        return {"run": args.run, "result": f"moved to {jobs.delete_run(cfg, args.run)}"}
    if not args.name:
        raise CliError("promote needs --name NAME")
    return {"run": args.run, "result": f"registered as {jobs.promote(cfg, args.run, args.name, args.default)}"}


def run(args: argparse.Namespace, cfg: Config) -> int:
    """List runs or act on one; prints a table or one JSON object."""
    if args.action == "list":
        runs = jobs.list_runs(cfg)
        if args.json:
            print(json.dumps({"runs": [_row(r) for r in runs]}, default=str))
        elif not runs:
            print(f"no runs in {cfg.runs_dir}")
        else:
            print(jobs.runs_frame(runs).to_string(index=False))
        return 0
    if not args.run:
        raise CliError(f"{args.action} needs a run id")
    try:
        result = _act(args, cfg)
    except jobs.JobError as exc:
        raise CliError(str(exc)) from exc
    print(
        json.dumps(result, default=str)
        if args.json
        else (json.dumps(result, indent=2, default=str) if args.action == "show" else str(result["result"]))
    )
    return 0
