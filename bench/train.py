"""Training benchmarks: the paper's CNN and pipeline against ``cxr_net``, normalisation ablation, pipelines, bf16.

Usage: ``.venv/bin/python bench/train.py [--data ../shared/data/cxr-sample] [--parts compare,pipeline,precision,ablation,full,first-epoch]``

Every training is a real ``cxr train`` subprocess on the same patient-grouped split (its peak RSS measured with
``/proc/PID/status`` VmHWM), evaluated on the full test split with ``cxr_core.evaluate.evaluate.evaluate`` (patient-bootstrap 95% CIs).
The budget is deliberately small and stated in the results (``--limit`` training images, ``--epochs`` with early
stopping): the paper CNN trains at a few images/s on this 2-core machine.

1. compare: ``paper_cnn`` with the paper pipeline (ImageDataGenerator, steps-per-epoch bug fixed, local rank
   equalisation, 299 px) at the learning rate of their code (0.008) and of their text (0.001), versus ``cxr_net``
   with ours, same images and epochs: parameters, FLOPs, training images/s, wall time to the best validation
   AUC, test AUC with CI, inference ms/image, model file size, peak RSS.
2. pipeline: images/s of both pipelines on both models (paper_cnn with ours, cxr_net with the paper's, plus the
   runs of part 1).
3. precision: ``cxr_net`` fp32 vs bf16 mixed precision: throughput and test AUC.
4. ablation: ``cxr_net`` with none / clahe / local_rank_eq / gamma: test AUC with CI and preprocessing ms/image.
5. full: the same epoch budget for both on all training images (``--full-epochs``, default 25 as in the default
   model's recipe): ``paper_cnn`` (paper pipeline, lr 0.001) with the paper's early stopping (val_loss, patience 10),
   and ``cxr_net`` with the shipped default model's recipe (patience 6): time to a test AUC.
6. first-epoch: ``cxr_net`` with the default recipe stopped after one epoch and tested, so the time to a *test* AUC
   no worse than ``paper_cnn``'s is measured, not inferred from validation.

Writes ``bench/results/train.json`` and ``bench/results/train.md`` (parts already in the JSON are kept unless
re-run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from preprocess import load_average, machine

from cxr_core.config import load_config
from cxr_core.curation.curated import curated_index
from cxr_core.data.imaging import read_image
from cxr_core.preprocess.normalise import normalise
from cxr_core.train import rundir
from cxr_core.util.atomic import write_json_atomic, write_text_atomic

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cxr-sample"
RESULTS = REPO / "bench" / "results"
PARTS = ("compare", "pipeline", "precision", "ablation", "full", "first-epoch")
ABLATION_METHODS = ("none", "clahe", "local_rank_eq", "gamma")
DEFAULT_RECIPE = [
    "--size",
    "160",
    "--lr",
    "0.001",
    "--epochs",
    "25",
    "--patience",
    "6",
    "--rotation",
    "10",
    "--zoom",
    "0.1",
    "--shift",
    "0.1",
    "--shear",
    "0.05",
]
PAPER_PATIENCE = 10  # the paper's EarlyStopping(val_loss, patience=10)


def _vm_hwm_kb(pid: int) -> int:
    """Peak resident set size (VmHWM, kB) of a running process; 0 once it has gone.

    Read from /proc rather than ``wait4``'s ``ru_maxrss``, which a forked child inherits from its (large) parent.
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_training(name: str, args: list[str], env: dict[str, str], runs: Path) -> dict[str, Any]:
    """Run ``cxr train ARGS --run-dir runs/NAME --json`` (replacing an earlier benchmark's run of that name) and return
    its summary plus wall time and peak RSS."""
    run_dir = runs / name
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "-m", "cxr_core", "train", *args, "--run-dir", str(run_dir), "--json"]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(args)}", file=sys.stderr, flush=True)
    start = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)
        peak_kb = 0
        while proc.poll() is None:
            peak_kb = max(peak_kb, _vm_hwm_kb(proc.pid))
            time.sleep(0.25)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}): {stderr[-1500:]}")
    summary = json.loads(stdout.strip().splitlines()[-1])
    metrics = rundir.read_metrics(run_dir)
    train_seconds = metrics["train_seconds"].dropna().tolist()
    n_train = int(rundir.read_status(run_dir).get("n_train") or 0)
    steady = train_seconds[1:] or train_seconds
    summary.update(
        {
            "wall_seconds": round(time.monotonic() - start, 1),
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "n_train": n_train,
            "train_images_per_second": round(n_train / statistics.median(steady), 2) if steady else None,
            "first_epoch_images_per_second": round(n_train / train_seconds[0], 2) if train_seconds else None,
            "seconds_to_best": round(float(metrics.loc[metrics["epoch"] <= summary["best_epoch"], "seconds"].sum()), 1),
            "val_auc_curve": [
                [round(float(s), 1), round(float(a), 4)]
                for s, a in zip(metrics["seconds"].cumsum(), metrics["val_auc"])
                if a == a
            ],
            "args": args,
        }
    )
    print(
        f"    -> {summary['status']} best val AUC {summary['best_val_auc']} in {summary['wall_seconds']} s, "
        f"{summary['train_images_per_second']} img/s, peak RSS {summary['peak_rss_mb']} MB",
        file=sys.stderr,
        flush=True,
    )
    return summary


def evaluate_model(model_dir: str, index: Any, cfg: Any, n_boot: int) -> dict[str, Any]:
    """Test-split metrics with patient-bootstrap CIs, parameters, FLOPs, file size and inference ms/image."""
    from cxr_core.evaluate.evaluate import evaluate
    from cxr_core.serve.registry import load_model
    from cxr_core.train.architectures import flops_per_image

    loaded = load_model(model_dir)
    result = evaluate(loaded, index, "test", cfg=cfg, n_boot=n_boot)
    size = loaded.preprocess.size
    batch = np.random.default_rng(0).uniform(0, 255, (32, size, size, 1)).astype("float32")
    loaded.model.predict(batch, verbose=0)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        loaded.model.predict(batch, batch_size=32, verbose=0)
        times.append((time.perf_counter() - start) / len(batch) * 1000)
    return {
        "test_roc_auc": result["roc_auc"],
        "test_roc_auc_ci95": result["ci95"].get("roc_auc"),
        "test_sensitivity": result["sensitivity"],
        "test_specificity": result["specificity"],
        "test_ece": result["ece"],
        "n_test": result["n"],
        "parameters": int(loaded.model.count_params()),
        "flops_per_image": int(flops_per_image(loaded.model)),
        "model_file_mb": round((Path(model_dir) / "model.keras").stat().st_size / 2**20, 2),
        "inference_ms_per_image": round(min(times), 2),
    }


def preprocessing_ms(index: Any, methods: tuple[str, ...], n: int = 40) -> dict[str, float]:
    """Median ms per 299x299 image of each normalisation method on ``n`` sample images."""
    rows = index.images(split="train").head(n)
    images = [read_image(index.abspath(p)) for p in rows["path"]]
    result = {}
    for method in methods:
        times = []
        for image in images:
            start = time.perf_counter()
            normalise(image, method)
            times.append((time.perf_counter() - start) * 1000)
        result[method] = round(statistics.median(times), 3)
    return result


def plan(args: argparse.Namespace) -> dict[str, list[tuple[str, list[str]]]]:
    """The trainings of each part: (name, cxr train arguments); cxr_net runs like the shipped default (no EMA)."""
    budget = ["--limit", str(args.limit), "--epochs", str(args.epochs), "--patience", str(args.patience)]
    small = ["--limit", str(args.pipeline_limit), "--epochs", "2", "--patience", "2"]
    paper = [
        "--arch",
        "paper_cnn",
        "--pipeline",
        "paper",
        "--method",
        "local_rank_eq",
        "--size",
        "299",
        "--monitor",
        "val_loss",
        "--no-ema",
    ]
    ours = ["--arch", "cxr_net", "--no-ema"]
    longer = [
        "--limit",
        str(args.ablation_limit),
        "--epochs",
        str(args.ablation_epochs),
        "--patience",
        str(args.patience),
    ]
    return {
        "compare": [
            ("paper_cnn-lr0.008", [*paper, *budget, "--lr", "0.008"]),
            ("paper_cnn-lr0.001", [*paper, *budget, "--lr", "0.001"]),
            ("cxr_net", [*ours, *budget]),
        ],
        "pipeline": [
            ("cxr_net-paper-pipeline", [*ours, *budget, "--pipeline", "paper"]),
            (
                "paper_cnn-ours-pipeline-small",
                [
                    "--arch",
                    "paper_cnn",
                    "--method",
                    "local_rank_eq",
                    "--size",
                    "299",
                    "--lr",
                    "0.001",
                    "--no-ema",
                    *small,
                ],
            ),
            ("paper_cnn-paper-pipeline-small", [*paper, *small, "--lr", "0.001"]),
        ],
        "precision": [
            ("cxr_net-160-fp32", [*ours, "--size", "160", *longer]),
            ("cxr_net-160-bf16", [*ours, "--size", "160", *longer, "--mixed-precision"]),
        ],
        "ablation": [
            (f"ablation-{m}", [*ours, "--size", str(args.ablation_size), *longer, "--method", m])
            for m in ABLATION_METHODS
        ],
        "full": [
            (
                "paper_cnn-full-lr0.001",
                [*paper, "--epochs", str(args.full_epochs), "--patience", str(PAPER_PATIENCE), "--lr", "0.001"],
            ),
            ("cxr_net-full-default-recipe", [*ours, *DEFAULT_RECIPE]),
        ],
        "first-epoch": [("cxr_net-first-epoch", [*ours, *DEFAULT_RECIPE, "--epochs", "1"])],
    }


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report of the results."""
    m = result["machine"]
    lines = [
        "# Training benchmarks",
        "",
        f"Machine: {m.get('cpu_model')}, {m.get('usable_cores', m.get('cores'))} usable cores, load average at start "
        f"{result['load_average_start']} (see the notes for what else ran). Dataset: {result['data']}; "
        f"test split {result.get('n_test', '?')} images (patient-grouped).",
        "",
        f"**Budget (reduced, honest):** {result['budget']}",
        "",
    ]
    runs = result.get("runs", {})
    header = (
        "| run | params | GFLOPs/img | train img/s | wall s | s to best val AUC | best val AUC | test AUC (95% CI) "
        "| infer ms/img | model MB | peak RSS MB |"
    )
    lines += [header, "|" + "---|" * 11]
    for name, r in runs.items():
        ci = r.get("test_roc_auc_ci95") or [None, None]
        auc = f"{r['test_roc_auc']:.3f} ({_f(ci[0])}-{_f(ci[1])})" if r.get("test_roc_auc") is not None else "n/a"
        lines.append(
            f"| {name} | {r.get('parameters', 0):,} | {r.get('flops_per_image', 0) / 1e9:.2f} | "
            f"{r.get('train_images_per_second')} | {r.get('wall_seconds')} | {r.get('seconds_to_best')} | "
            f"{_f(r.get('best_val_auc'))} | {auc} | {r.get('inference_ms_per_image')} | {r.get('model_file_mb')} | "
            f"{r.get('peak_rss_mb')} |"
        )
    if result.get("ratios"):
        lines += ["", "## Ratios (cxr_net vs paper_cnn, same run)", ""]
        lines += [f"- {k}: {v}" for k, v in result["ratios"].items()]
    if result.get("preprocessing_ms"):
        lines += ["", "## Preprocessing cost (median ms per 299x299 image, one core)", ""]
        lines += [f"- {k}: {v} ms" for k, v in result["preprocessing_ms"].items()]
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def _f(value: Any) -> str:
    """Three decimals or n/a."""
    return "n/a" if value is None else f"{value:.3f}"


def ratios(runs: dict[str, Any]) -> dict[str, Any]:
    """cxr_net vs the better paper_cnn run: parameter, throughput, time-to-best and AUC ratios."""
    papers = [runs[k] for k in ("paper_cnn-full-lr0.001",) if k in runs] or [
        runs[k] for k in ("paper_cnn-lr0.008", "paper_cnn-lr0.001") if k in runs
    ]
    ours = runs.get("cxr_net-full-default-recipe") or runs.get("cxr_net")
    if not papers or not ours:
        return {}
    paper = max(papers, key=lambda r: r.get("test_roc_auc") or 0)
    out = {
        "runs compared": f"{next(k for k, v in runs.items() if v is paper)} vs {next(k for k, v in runs.items() if v is ours)}",
        "parameters (paper / ours)": round(paper["parameters"] / ours["parameters"], 1),
        "FLOPs per image (paper / ours)": round(paper["flops_per_image"] / ours["flops_per_image"], 1),
        "training images/s (ours / paper)": round(
            ours["train_images_per_second"] / paper["train_images_per_second"], 1
        ),
        "seconds to best val AUC (paper / ours)": round(
            paper["seconds_to_best"] / max(ours["seconds_to_best"], 1e-9), 1
        ),
        "seconds to paper_cnn's best val AUC (paper / ours)": _time_to_auc_ratio(paper, ours),
        "same, every paper_cnn epoch at its median time (paper / ours)": _time_to_auc_ratio(paper, ours, median=True),
        "seconds to a test AUC no worse than paper_cnn's (paper / ours)": _time_to_test_auc_ratio(
            paper, runs.get("cxr_net-first-epoch")
        ),
        "test AUC ours - paper": round((ours.get("test_roc_auc") or 0) - (paper.get("test_roc_auc") or 0), 3),
        "peak RSS of cxr_net training (MB)": ours["peak_rss_mb"],
    }
    return out


def _time_to_auc_ratio(paper: dict[str, Any], ours: dict[str, Any], median: bool = False) -> float | None:
    """Paper's seconds to its best val AUC over ours to first reach that val AUC (None when we never do).

    ``median``: the paper's time is its best epoch times its median epoch time, discounting epochs slowed by the host.
    """
    target = paper.get("best_val_auc")
    reached = [s for s, auc in ours.get("val_auc_curve", []) if target is not None and auc >= target]
    seconds = paper["seconds_to_best"]
    if median:
        ends = [0.0] + [s for s, _ in paper.get("val_auc_curve", [])]
        seconds = statistics.median(np.diff(ends)) * paper["best_epoch"] if len(ends) > 1 else seconds
    return round(seconds / max(reached[0], 1e-9), 1) if reached else None


def _time_to_test_auc_ratio(paper: dict[str, Any], first: dict[str, Any] | None) -> float | None:
    """Paper's seconds to its tested model over the one-epoch cxr_net's, when that reaches a test AUC no worse."""
    if not first or (first.get("test_roc_auc") or 0) < (paper.get("test_roc_auc") or 1):
        return None
    return round(paper["seconds_to_best"] / max(first["seconds_to_best"], 1e-9), 1)


def main() -> int:
    """Run the chosen parts and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--limit", type=int, default=160, help="training images for compare/pipeline/precision")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--pipeline-limit", type=int, default=64, help="training images of the small pipeline runs")
    parser.add_argument("--ablation-size", type=int, default=128)
    parser.add_argument("--ablation-limit", type=int, default=400)
    parser.add_argument("--ablation-epochs", type=int, default=5)
    parser.add_argument("--full-epochs", type=int, default=25, help="epoch budget of the full-data paper_cnn run")
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "cxr-bench-train")
    args = parser.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    cfg = load_config(home=str(args.home), data_dir=str(args.data))
    env = {**os.environ, "CXR_HOME": str(cfg.home), "CXR_DATA_DIR": str(cfg.data_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    index = curated_index(cfg)
    out_json = RESULTS / "train.json"
    result: dict[str, Any] = json.loads(out_json.read_text()) if out_json.is_file() else {}
    result.update(
        {
            "machine": machine(),
            "load_average_start": load_average(),
            "data": str(cfg.data_dir),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    result["budget"] = (
        f"compare (and cxr_net-paper-pipeline): {args.limit} training images (class-stratified from "
        f"the train split), at most {args.epochs} epochs with early stopping (patience {args.patience}), "
        f"validation capped at {max(16, args.limit // 4)} images; *-small pipeline runs: "
        f"{args.pipeline_limit} images, 2 epochs (throughput only); precision: cxr_net at 160 px and "
        f"ablation: cxr_net at {args.ablation_size} px, {args.ablation_limit} training images, at most "
        f"{args.ablation_epochs} epochs. Test metrics on the full test split, {args.n_boot} "
        f"patient-bootstrap resamples. Training images/s is the median over epochs after the first. full: paper_cnn on "
        f"all training images for at most {args.full_epochs} epochs with the paper's early stopping (val_loss, patience "
        f"{PAPER_PATIENCE}); cxr_net with the default model's "
        f"recipe (160 px, up to 25 epochs, patience 6). first-epoch: that recipe stopped after one epoch."
    )
    runs = result.setdefault("runs", {})
    todo = plan(args)
    for part in parts:
        for name, train_args in todo[part]:
            summary = run_training(name, train_args, env, cfg.runs_dir)
            summary.update(evaluate_model(summary["model_dir"], index, cfg, args.n_boot))
            summary["part"] = part
            runs[name] = summary
            result["n_test"] = summary["n_test"]
            write_json_atomic(out_json, json.loads(json.dumps(result, default=str)))
    if "ablation" in parts:
        result["preprocessing_ms"] = preprocessing_ms(index, ABLATION_METHODS)
    result["ratios"] = ratios(runs)
    write_json_atomic(out_json, json.loads(json.dumps(result, default=str)))
    write_text_atomic(RESULTS / "train.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
