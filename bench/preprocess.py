"""Benchmark the normalisation methods and ``cxr preprocess`` on the sample, all ratios measured in one run.

Usage: ``.venv/bin/python bench/preprocess.py [--data ../shared/data/cxr-sample] [--limit N]``

1. Every registered method with its defaults on every sample image at 299x299, one process, methods
   interleaved per image (so a change in machine load hits all methods alike): median, p90 and mean ms
   per image, images/s on one core, and the ratio to ``local_rank_eq(radius=70)`` (the paper's method).
2. Wall time of ``cxr preprocess DATA --method clahe --size 224`` over the whole sample with 1 and 2
   workers, each into an empty cache (the dataset index is built once beforehand and reused, as it is
   after the first ``cxr index``), and its extrapolation to the 13,808-image Kaggle database.

Writes ``bench/results/preprocess.json`` and ``bench/results/preprocess.md``. Takes about 2-3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import skimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxr_core.config import load_config
from cxr_core.curation.curated import curated_index
from cxr_core.data.imaging import read_image
from cxr_core.preprocess.cache import PreprocessCache
from cxr_core.preprocess.normalise import METHODS, describe, normalise
from cxr_core.preprocess.recipe import PreprocessConfig
from cxr_core.util.atomic import write_json_atomic, write_text_atomic

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cxr-sample"
RESULTS = REPO / "bench" / "results"
DATABASE_IMAGES = 13_808
SIZE = 299
DEFAULT_METHOD = "clahe"
PAPER_METHOD = "local_rank_eq"
TARGET_SPEEDUP = 100.0
TARGET_DATABASE_SECONDS = 30.0


def machine() -> dict[str, Any]:
    """CPU model, core counts, load and library versions."""
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").exists() else ""
    models = sorted({line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")})
    mhz = sorted({line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("cpu MHz")})
    return {
        "cpu_model": ", ".join(models) or platform.processor() or "unknown",
        "cpu_mhz": mhz[0] if mhz else None,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "scikit_image": skimage.__version__,
        "numpy": np.__version__,
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other processes share these cores)."""
    return [round(v, 2) for v in os.getloadavg()]


def sample_images(data: Path, limit: int | None) -> list[np.ndarray]:
    """Every readable image of the sample (COVID/ and Normal/), resized to 299x299 where it is not already."""
    paths = sorted(p for label in ("COVID", "Normal") for p in (data / label).rglob("*.png"))[:limit]
    images = []
    for path in paths:
        gray = read_image(path)
        images.append(
            gray if gray.shape == (SIZE, SIZE) else cv2.resize(gray, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        )
    return images


def time_methods(images: list[np.ndarray]) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU milliseconds per image for every method, interleaved per image in a rotating order."""
    names = list(METHODS)
    for name in names:
        normalise(images[0], name)
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in names}
    for i, image in enumerate(images):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            wall, cpu = time.perf_counter(), time.thread_time()
            normalise(image, name)
            times[name]["cpu"].append((time.thread_time() - cpu) * 1000)
            times[name]["wall"].append((time.perf_counter() - wall) * 1000)
    return times


def method_rows(times: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Summary row per method, with the speed-up over the paper's method from the same run."""
    paper = {kind: statistics.median(times[PAPER_METHOD][kind]) for kind in ("wall", "cpu")}
    rows = []
    for name, values in times.items():
        median = statistics.median(values["wall"])
        cpu = statistics.median(values["cpu"])
        rows.append(
            {
                "method": name,
                "config": describe(name),
                "images": len(values["wall"]),
                "median_ms": round(median, 4),
                "p90_ms": round(float(np.percentile(values["wall"], 90)), 4),
                "mean_ms": round(statistics.fmean(values["wall"]), 4),
                "median_cpu_ms": round(cpu, 4),
                "images_per_s_one_core": round(1000 / median, 1) if median > 0 else None,
                "speedup_vs_local_rank_eq": round(paper["wall"] / median, 1) if median > 0 else None,
                "cpu_speedup_vs_local_rank_eq": round(paper["cpu"] / cpu, 1) if cpu > 0 else None,
            }
        )
    return rows


def children_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes and their children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, float, dict[str, Any] | None]:
    """Wall seconds, CPU seconds (all its processes) and JSON output (or None) of ``python -m cxr_core ARGS``."""
    start, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run([sys.executable, "-m", "cxr_core", *args], cwd=REPO, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"cxr {' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return wall, cpu, (json.loads(done.stdout) if done.stdout.strip().startswith("{") else None)


def pipeline_cpu(data: Path, home: Path) -> float:
    """Median CPU ms of one image through the batch step (read, resize, CLAHE, PNG encode, atomic write)."""
    cfg = load_config(home=home, data_dir=data)
    cache = PreprocessCache(cfg, PreprocessConfig(DEFAULT_METHOD, size=224), data)
    cache.prepare()
    rows = curated_index(cfg, data).images()
    times = []
    for rel, sha in zip(rows["path"], rows["sha256"]):
        start = time.thread_time()
        cache.process(rel, sha)
        times.append((time.thread_time() - start) * 1000)
    return statistics.median(times)


def time_cli(data: Path, home: Path) -> dict[str, Any]:
    """CLI start-up, one index build, then ``cxr preprocess`` with 1 and 2 workers into an empty cache each."""
    env = {**os.environ, "CXR_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    startup, startup_cpu, _ = run_cli(["--version"], env)
    index_wall, _, summary = run_cli(["index", str(data), "--json"], env)
    _, index_cpu, _ = run_cli(["index", str(data), "--json"], env)
    pipeline_cpu_ms = pipeline_cpu(data, home)
    runs = []
    for workers in (1, 2):
        shutil.rmtree(home / "cache" / "preprocessed", ignore_errors=True)
        wall, cpu, report = run_cli(
            ["preprocess", str(data), "--method", DEFAULT_METHOD, "--size", "224", "--workers", str(workers), "--json"],
            env,
        )
        assert report is not None
        processing = report["seconds"]
        overhead = wall - processing
        per_image = processing / report["images"]
        scale = DATABASE_IMAGES / report["images"]
        idle = (
            startup_cpu
            + max(0.0, index_cpu - startup_cpu) * scale
            + pipeline_cpu_ms / 1000 * DATABASE_IMAGES / report["workers"]
        )
        runs.append(
            {
                "workers_requested": workers,
                "workers": report["workers"],
                "images": report["images"],
                "written": report["written"],
                "excluded": report["excluded"],
                "unreadable": len(report["unreadable"]),
                "wall_s": round(wall, 2),
                "preprocessing_s": round(processing, 2),
                "overhead_s": round(overhead, 2),
                "images_per_s": round(report["images"] / processing, 1),
                "database_extrapolated_wall_s": round(overhead + per_image * DATABASE_IMAGES, 1),
                "cpu_s": round(cpu, 2),
                "database_idle_estimate_s": round(idle, 1),
            }
        )
    return {
        "cli_startup_s": round(startup, 2),
        "cli_startup_cpu_s": round(startup_cpu, 2),
        "index_cached_load_cpu_s": round(max(0.0, index_cpu - startup_cpu), 2),
        "pipeline_cpu_ms_per_image": round(pipeline_cpu_ms, 3),
        "index_first_build_s": round(index_wall, 2),
        "index_images": summary["n_images"] if summary else None,
        "runs": runs,
    }


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown report."""
    m = result["machine"]
    lines = [
        "# Preprocessing benchmark",
        "",
        f"Measured {result['date']} by `bench/preprocess.py` on {m['cpu_model']} ({m['usable_cores']} usable cores, "
        f"{m['logical_cores']} logical), Python {m['python']}, OpenCV {m['opencv']}, scikit-image {m['scikit_image']}. "
        f"Load average before/after: {result['load_before']} / {result['load_after']} (the cores are shared with other "
        "work, so absolute times are noisy; the ratios come from one interleaved run and are steadier).",
        "",
        f"## Methods: ms per 299x299 image ({result['methods'][0]['images']} sample images, one core, defaults)",
        "",
        "| method | median ms | p90 ms | images/s (1 core) | speed-up vs local_rank_eq(radius=70) "
        "| median CPU ms | CPU speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(result["methods"], key=lambda r: r["median_ms"]):
        lines.append(
            f"| `{row['config']}` | {row['median_ms']:.3f} | {row['p90_ms']:.3f} | {row['images_per_s_one_core']:,.0f} "
            f"| {row['speedup_vs_local_rank_eq']:,.1f}x | {row['median_cpu_ms']:.3f} | {row['cpu_speedup_vs_local_rank_eq']:,.1f}x |"
        )
    lines += [
        "",
        "Wall ms is what the method took while sharing the cores; CPU ms is the time it actually ran "
        "(`time.thread_time`), a closer guide to an idle machine. Both ratios come from the same interleaved run.",
    ]
    cli = result["cli"]
    lines += [
        "",
        f"## `cxr preprocess DATA --method {DEFAULT_METHOD} --size 224` over the sample",
        "",
        f"CLI start-up alone (`cxr --version`, which imports every command module): {cli['cli_startup_s']} s wall, "
        f"{cli['cli_startup_cpu_s']} s CPU. Loading the cached index: {cli['index_cached_load_cpu_s']} s CPU. One image "
        f"through the batch step (read, resize, CLAHE, PNG encode, atomic write), in-process: "
        f"{cli['pipeline_cpu_ms_per_image']} ms CPU (median). First index build of the sample "
        f"(`cxr index`, {cli['index_images']} images, reused by the runs below): {cli['index_first_build_s']} s.",
        "",
        "| workers | images | wall s | preprocessing s | start-up + index load s | images/s | CPU s (all processes) "
        "| 13,808 images: extrapolated wall s | 13,808 images: idle-machine estimate s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in cli["runs"]:
        lines.append(
            f"| {run['workers']} | {run['images']} | {run['wall_s']} | {run['preprocessing_s']} | {run['overhead_s']} "
            f"| {run['images_per_s']} | {run['cpu_s']} | {run['database_extrapolated_wall_s']} "
            f"| {run['database_idle_estimate_s']} |"
        )
    t = result["targets"]
    lines += [
        "",
        "Extrapolated wall: start-up + index load as measured here, plus the measured per-image preprocessing "
        f"time times {DATABASE_IMAGES:,}. Idle-machine estimate: CLI start-up CPU, plus the cached index load's CPU "
        f"scaled linearly to {DATABASE_IMAGES:,} images, plus the per-image CPU time times {DATABASE_IMAGES:,} divided "
        "by the workers (assumes each worker has a core to itself). Both assume the database's index is already built and its images are 299x299 "
        "PNGs like the sample's; a cold `cxr index` of the database is extra.",
        "",
        "## Targets",
        "",
        f"- Default method `{DEFAULT_METHOD}` at least {TARGET_SPEEDUP:.0f}x faster than `local_rank_eq(radius=70)`: "
        f"**{t['speedup']}x — {'met' if t['speedup_met'] else 'MISSED'}**.",
        f"- Whole database in under {TARGET_DATABASE_SECONDS:.0f} s wall on 2 cores: extrapolated from this run "
        f"**{t['database_wall_s']} s — {'met' if t['database_met'] else 'MISSED'}** "
        f"(idle-machine estimate from CPU time: {t['database_idle_estimate_s']} s).",
        f"- For comparison, the paper's `local_rank_eq` alone over the database at the median measured here, "
        f"perfectly split over 2 cores: {t['paper_database_s']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset folder (default: the shared sample)")
    parser.add_argument("--limit", type=int, help="only the first N images for the method timings (quick check)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "load_before": load_average(),
    }
    cv2.setNumThreads(1)
    images = sample_images(args.data, args.limit)
    print(f"timing {len(METHODS)} methods on {len(images)} images…", file=sys.stderr)
    result["methods"] = method_rows(time_methods(images))
    print("timing cxr preprocess with 1 and 2 workers…", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="cxr-bench-preprocess-") as home:
        result["cli"] = time_cli(args.data, Path(home))
    result["load_after"] = load_average()
    by_method = {row["method"]: row for row in result["methods"]}
    two = next(run for run in result["cli"]["runs"] if run["workers_requested"] == 2)
    result["targets"] = {
        "default_method": DEFAULT_METHOD,
        "speedup": by_method[DEFAULT_METHOD]["speedup_vs_local_rank_eq"],
        "speedup_met": by_method[DEFAULT_METHOD]["speedup_vs_local_rank_eq"] >= TARGET_SPEEDUP,
        "database_wall_s": two["database_extrapolated_wall_s"],
        "database_met": two["database_extrapolated_wall_s"] < TARGET_DATABASE_SECONDS,
        "database_idle_estimate_s": two["database_idle_estimate_s"],
        "paper_database_s": round(by_method[PAPER_METHOD]["median_ms"] * DATABASE_IMAGES / 1000 / 2, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "preprocess.json", result)
    write_text_atomic(args.out / "preprocess.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
