"""Shortcut benchmark: train each architecture with roi none / lung_crop / lung_mask and audit every model.

Usage: .venv/bin/python bench/shortcuts.py [--data ../shared/data/cxr-sample] [--epochs 6] [--size 128]
       [--archs cxr_net,paper_cnn] [--rois none,lung_crop,lung_mask] [--home /tmp/cxr-bench-shortcuts]

Writes bench/results/shortcuts.json and shortcuts.md after every configuration (partial results survive a stop).
Goal per issue 8: test AUC >= 0.93 while the lungs-blanked AUC <= 0.65 and >= 70% of Grad-CAM mass in the lungs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cxr_core.config import load_config
from cxr_core.evaluate.audit import AuditOptions, run_audit, save_audit
from cxr_core.serve.registry import load_model
from cxr_core.train.trainer import TrainConfig, train
from cxr_core.util.atomic import write_json_atomic, write_text_atomic

RESULTS = REPO / "bench" / "results"
GOAL = {"auc": 0.93, "auc_lungs_blanked": 0.65, "lung_attention_mean": 0.70}


def meets_goal(row: dict[str, Any]) -> bool:
    """True when a row reaches the issue's AUC, lungs-blanked and attention targets."""
    return (
        (row.get("auc") or 0) >= GOAL["auc"]
        and (row.get("auc_lungs_blanked") or 1) <= GOAL["auc_lungs_blanked"]
        and (row.get("lung_attention_mean") or 0) >= GOAL["lung_attention_mean"]
    )


def one_config(
    cfg: Any, data: Path, arch: str, roi: str, args: argparse.Namespace
) -> tuple[dict[str, Any], dict | None]:
    """Train one architecture with one roi mode, audit it on the test split; the table row and the stats baseline."""
    tc = TrainConfig(
        arch=arch,
        epochs=args.epochs,
        size=args.size,
        roi=roi,
        method="clahe",
        data_dir=str(data),
        patience=args.epochs,
        batch=32,
    )
    started = time.time()
    result = train(cfg, tc)
    train_seconds = time.time() - started
    if result.model_dir is None:
        return {"arch": arch, "roi": roi, "status": result.status, "train_seconds": round(train_seconds, 1)}, None
    audit = run_audit(
        load_model(result.model_dir),
        cfg,
        data,
        AuditOptions(split="test", cam_images=args.cam_images, seed=cfg.seed),
        progress=False,
    )
    save_audit(result.model_dir, audit)
    row = {
        "arch": arch,
        "roi": roi,
        "size": args.size,
        "status": result.status,
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_auc": result.best_val_auc,
        "train_seconds": round(train_seconds, 1),
        "model_dir": str(result.model_dir),
        **{
            k: audit[k]
            for k in (
                "n",
                "auc",
                "auc_lungs_blanked",
                "auc_lungs_blanked_drop",
                "auc_lungs_only",
                "lung_attention_mean",
                "lung_attention_by_class",
                "stats_baseline_auc",
                "verdict_level",
                "verdict",
            )
        },
        "audit_seconds": audit["seconds"],
    }
    row["meets_goal"] = meets_goal(row)
    return row, audit["stats_baseline"]


def write_results(rows: list[dict[str, Any]], args: argparse.Namespace, stats: dict[str, Any] | None) -> None:
    """Write shortcuts.json and shortcuts.md."""
    meta = {
        "data": str(args.data),
        "epochs": args.epochs,
        "size": args.size,
        "cam_images": args.cam_images,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "goal": GOAL,
        "note": "2 shared CPU cores; short trainings (reduced budget), one seed; numbers are indicative.",
    }
    write_json_atomic(RESULTS / "shortcuts.json", {"meta": meta, "stats_baseline": stats, "rows": rows})
    lines = [
        "# Shortcut benchmark",
        "",
        f"Sample `{args.data}`, patient-grouped split, test split audited; {args.epochs} epochs max at {args.size} px, "
        f"CLAHE, Grad-CAM on up to {args.cam_images} test images. 2 shared CPU cores, one seed: indicative.",
        "",
        "| arch | roi | test AUC | lungs blanked | drop | lungs only | Grad-CAM in lungs | train s | verdict | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(v: float | None) -> str:
        """A metric with three decimals, or a dash."""
        return "–" if v is None else f"{v:.3f}"

    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['roi']} | {fmt(r.get('auc'))} | {fmt(r.get('auc_lungs_blanked'))} | "
            f"{fmt(r.get('auc_lungs_blanked_drop'))} | {fmt(r.get('auc_lungs_only'))} | "
            f"{fmt(r.get('lung_attention_mean'))} | {r.get('train_seconds', 0):.0f} | {r.get('verdict_level', r.get('status'))} | "
            f"{'yes' if r.get('meets_goal') else 'no'} |"
        )
    if stats:
        lines += [
            "",
            f"No-CNN baseline (random forest on image statistics, out-of-fold): label AUC on test "
            f"{fmt(stats.get('label_auc'))}, source accuracy {fmt(stats.get('source_accuracy'))} "
            f"(chance {fmt(stats.get('source_chance'))}).",
        ]
    lines += [
        "",
        f"Goal: AUC >= {GOAL['auc']}, lungs-blanked AUC <= {GOAL['auc_lungs_blanked']}, "
        f">= {GOAL['lung_attention_mean']:.0%} of Grad-CAM mass in the lungs.",
        "",
        "Caveats: `train s` is wall time on shared cores and includes reading, segmenting and preprocessing the "
        "images when they are not cached yet. Lungs-blanked is a test-time intervention (a black hole is also "
        "out of distribution). Grad-CAM is coarse, so even `lung_mask` models, which see only black outside the "
        "dilated lungs, show some mass outside the mask. Models trained on the lungs only can still use "
        "source-specific appearance inside the lungs (the Normal images include children).",
    ]
    write_text_atomic(RESULTS / "shortcuts.md", "\n".join(lines) + "\n")


def main() -> int:
    """Run every configuration, writing results after each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cxr-sample")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cam-images", type=int, default=120)
    parser.add_argument("--archs", default="cxr_net")
    parser.add_argument("--rois", default="none,lung_crop,lung_mask")
    parser.add_argument("--keep", action="store_true", help="keep other rows of an existing shortcuts.json")
    parser.add_argument("--home", type=Path, default=Path("/tmp/cxr-bench-shortcuts"))
    args = parser.parse_args()
    cfg = load_config(home=args.home, data_dir=args.data, models_dir=args.home / "models")
    previous = json.loads((RESULTS / "shortcuts.json").read_text()) if (RESULTS / "shortcuts.json").is_file() else {}
    rows: list[dict[str, Any]] = previous.get("rows", []) if args.keep else []
    stats = previous.get("stats_baseline") if args.keep else None
    for arch in args.archs.split(","):
        for roi in args.rois.split(","):
            print(f"== {arch} roi={roi}", file=sys.stderr, flush=True)
            row, baseline = one_config(cfg, args.data.resolve(), arch, roi, args)
            rows = [r for r in rows if (r["arch"], r["roi"]) != (arch, roi)] + [row]
            stats = stats or baseline
            print(
                json.dumps({k: row.get(k) for k in ("arch", "roi", "auc", "auc_lungs_blanked", "lung_attention_mean")}),
                file=sys.stderr,
                flush=True,
            )
            write_results(rows, args, stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
