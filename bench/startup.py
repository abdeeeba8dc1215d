"""Benchmark start-up and first-use latency against the targets of issue 18, all measured in one run.

Usage: ``.venv/bin/python bench/startup.py [--data ../shared/data/cxr-sample] [--images 21000] [--quick]``

Every measurement drives the code through subprocesses only (``python -m cxr_core ...`` and small ``python -c``
AppTest snippets naming page files), never by importing ``cxr_core`` modules, so it survives modules moving.
Subprocesses get ``PYTHONPATH`` = this checkout, so they run its code even when the venv is installed editable
from another one (checked and recorded as ``code_under_test``).

1. ``cxr --help`` wall time vs ``python -c "import numpy, argparse"``: median of ``--repeats`` (>= 7) runs each,
   interleaved. Target: ratio <= 5.
2. End to end over a fresh 421-image folder (a seeded subset of the sample, hard-linked in the Kaggle layout with
   its manifest rows): ``cxr preprocess DIR --method clahe --size 299`` into a fresh work dir (start-up, indexing and
   preprocessing), vs the paper's approach in a fresh process: read each image, resize to 299x299 where needed,
   scikit-image ``rank.equalize(img, disk(70))``, write a PNG to a second folder (one loop, as in the paper).
   Median of 3 runs each, interleaved. Target: ours >= 10x faster.
3. ``cxr index DIR --json`` on a ~21,000-image folder built from the sample, first in an empty work dir, then again
   with nothing changed (median of 3). Copy 0 of every image is a hard link of the original; copies 1.. are
   re-encoded variants (one of the 8 rotations/flips, from copy 8 on also a 10 % border crop, plus 5 random pixels)
   so that every file has its own SHA-256 and a pHash at least 10 bits from its siblings': hard links alone would
   make 14 exact copies of every image, i.e. ~137,000 near-duplicate pairs and a test split emptied of
   "duplicate-of-train" leaks, which no real dataset looks like. Each copy counts as a patient of its own (manifest).
   Target: re-index <= 10 % of the first index.
4. The Dataset page (``AppTest.from_file(pages/*Dataset*.py).run()``) in a fresh process on that folder with its
   index cached in the work dir (step 3): median of 3. Target: <= 5 s.
5. The Predict page's first visit in a fresh process, with the shipped models (``models/``): time from the start of
   ``AppTest.run()`` until ``st.file_uploader`` is called (median of 3). Target: <= 1 s.

Page times are from the start of ``AppTest.run()`` (a running server has already imported Streamlit), so they
include every import the page makes; the whole-process wall time is reported beside them. For each of targets 3-5
that is missed, one more run is profiled (cProfile, and ``-X importtime`` for pages) and its top entries recorded.

Writes ``bench/results/startup.json`` and ``bench/results/startup.md`` (``--quick``: 3,000 images, fewer repeats,
written to a temporary folder unless ``--out`` is given). Takes about 10-15 minutes on 2 cores (``--quick``: 3).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import pstats
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cxr-sample"
RESULTS = REPO / "bench" / "results"
CLASSES = ("COVID", "Normal")
SUBSET = 421
SIZE = 299
METHOD = "clahe"
PAPER_RADIUS = 70
FULL_IMAGES = 21_000
QUICK_IMAGES = 3_000
CROP = 0.10
CHANGED_PIXELS = 5
TARGETS = {
    "help_ratio": 5.0,  # cxr --help / python -c "import numpy, argparse", at most
    "preprocess_speedup": 10.0,  # paper end to end / cxr preprocess end to end, at least
    "reindex_share": 0.10,  # unchanged re-index / first index, at most
    "dataset_page_s": 5.0,  # cold Dataset page, at most
    "predict_page_s": 1.0,  # Predict page until the uploader, at most
}
TOP = 10


def machine() -> dict[str, Any]:
    """CPU model, core counts, memory, Python and library versions (read without importing the project)."""
    cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8") if Path("/proc/cpuinfo").exists() else ""
    models = sorted({line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")})
    versions = {}
    for name, dists in {
        "numpy": ["numpy"],
        "pandas": ["pandas"],
        "scikit-image": ["scikit-image"],
        "streamlit": ["streamlit"],
        "tensorflow": ["tensorflow", "tensorflow-cpu"],
        "keras": ["keras"],
    }.items():
        versions[name] = None
        for dist in dists:
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return {
        "cpu_model": ", ".join(models) or platform.processor() or "unknown",
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        **versions,
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (other processes share these cores)."""
    return [round(v, 2) for v in os.getloadavg()]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def children_cpu() -> float:
    """CPU seconds (user + system) used so far by finished child processes and their children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def base_env(**extra: str | Path) -> dict[str, str]:
    """The environment of every subprocess: no inherited CXR_* settings, this checkout first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["CXR_CONFIG"] = str(REPO / "bench" / "no-such-cxr.toml")  # ignore any cxr.toml in the working dir
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd: list[str], env: dict[str, str], what: str) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Wall and CPU seconds (all its processes) of one subprocess, run from the repository root."""
    start, cpu = time.perf_counter(), children_cpu()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return wall, cpu, done


def cxr(args: list[str], env: dict[str, str]) -> tuple[float, float, dict[str, Any] | None]:
    """Wall seconds, CPU seconds and JSON output (or None) of ``python -m cxr_core ARGS``."""
    wall, cpu, done = run([sys.executable, "-m", "cxr_core", *args], env, f"cxr {' '.join(args[:1])}")
    out = done.stdout.strip()
    return wall, cpu, (json.loads(out) if out.startswith("{") else None)


def code_under_test() -> str:
    """Where the subprocesses import the ``cxr_core`` package from (must be this checkout)."""
    _, _, done = run([sys.executable, "-c", "import cxr_core; print(cxr_core.__file__)"], base_env(), "import check")
    path = done.stdout.strip()
    if not Path(path).resolve().is_relative_to(REPO):
        raise RuntimeError(f"subprocesses import cxr_core from {path}, not from {REPO}")
    return path


def page_file(word: str) -> Path:
    """The page file of ``pages/`` whose name contains ``word`` (e.g. 1_Dataset.py)."""
    found = sorted((REPO / "pages").glob(f"*{word}*.py"))
    if not found:
        raise RuntimeError(f"no page file matching *{word}*.py in {REPO / 'pages'}")
    return found[0]


def rounded(values: list[float], digits: int = 3) -> list[float]:
    """Each value rounded."""
    return [round(v, digits) for v in values]


# --- 1. CLI start-up -------------------------------------------------------------------------------------------


def time_help(repeats: int) -> dict[str, Any]:
    """``cxr --help`` vs ``python -c "import numpy, argparse"``, interleaved, median of ``repeats`` each."""
    env = base_env()
    commands = {
        "help": [sys.executable, "-m", "cxr_core", "--help"],
        "baseline": [sys.executable, "-c", "import numpy, argparse"],
    }
    for cmd in commands.values():  # warm the file cache once
        run(cmd, env, "warm-up")
    walls: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(repeats):
        for name in list(commands) if i % 2 == 0 else list(commands)[::-1]:
            walls[name].append(run(commands[name], env, name)[0])
    help_s, base_s = statistics.median(walls["help"]), statistics.median(walls["baseline"])
    return {
        "runs": repeats,
        "help_s": round(help_s, 3),
        "baseline_s": round(base_s, 3),
        "help_walls": rounded(walls["help"]),
        "baseline_walls": rounded(walls["baseline"]),
        "ratio": round(help_s / base_s, 2),
    }


# --- 2. cxr preprocess vs the paper, end to end ------------------------------------------------------------------


def sample_files(data: Path) -> list[Path]:
    """Every PNG of the sample's class folders (Kaggle layout: CLASS/images/*.png), sorted."""
    return sorted(p for label in CLASSES for p in (data / label).rglob("*.png"))


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (copy when the file systems differ)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def read_manifest(data: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The sample manifest's header and rows by file (empty when there is none)."""
    import csv

    path = data / "manifest.csv"
    if not path.is_file():
        return [], {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), {row["file"]: row for row in reader}


def write_manifest(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    """Write a manifest.csv."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def make_subset(data: Path, dest: Path, n: int) -> int:
    """Hard-link a seeded random ``n`` of the sample's images into ``dest`` (same layout, manifest rows kept)."""
    files = sample_files(data)
    chosen = sorted(np.random.default_rng(18).choice(len(files), size=min(n, len(files)), replace=False))
    header, manifest = read_manifest(data)
    rows = []
    for i in chosen:
        rel = files[i].relative_to(data).as_posix()
        link_or_copy(files[i], dest / rel)
        if rel in manifest:
            rows.append(manifest[rel])
    if header:
        write_manifest(dest / "manifest.csv", header, rows)
    return len(chosen)


PAPER_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import cv2
    from skimage.filters import rank
    from skimage.morphology import disk
    src, out, size, radius = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    footprint = disk(radius)
    start, n = time.perf_counter(), 0
    for path in sorted(src.rglob("*.png")):
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if gray.shape != (size, size):
            gray = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA)
        target = out / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), rank.equalize(gray, footprint=footprint))
        n += 1
    print(n, time.perf_counter() - start)
""")


def time_preprocess(data: Path, tmp: Path, repeats: int) -> dict[str, Any]:
    """``cxr preprocess`` (fresh work dir each time) vs the paper's loop over a fresh 421-image folder, interleaved."""
    folder = tmp / "subset"
    n = make_subset(data, folder, SUBSET)
    ours, ours_cpu, paper, paper_cpu, paper_loop, reports = [], [], [], [], [], []
    for r in range(repeats):
        home, out = tmp / f"home-preprocess-{r}", tmp / f"paper-out-{r}"
        for turn in (0, 1) if r % 2 == 0 else (1, 0):
            if turn == 0:
                wall, cpu, report = cxr(
                    ["preprocess", str(folder), "--method", METHOD, "--size", str(SIZE), "--json"],
                    base_env(CXR_HOME=home),
                )
                assert report is not None and report["written"] == report["images"], report
                ours.append(wall), ours_cpu.append(cpu), reports.append(report)
            else:
                cmd = [sys.executable, "-c", PAPER_SCRIPT, str(folder), str(out), str(SIZE), str(PAPER_RADIUS)]
                wall, cpu, done = run(cmd, base_env(), "paper baseline")
                count, loop = done.stdout.split()
                assert int(count) == n, (count, n)
                paper.append(wall), paper_cpu.append(cpu), paper_loop.append(float(loop))
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    last = reports[-1]
    ours_s, paper_s = statistics.median(ours), statistics.median(paper)
    return {
        "images": n,
        "runs": repeats,
        "size": SIZE,
        "method": METHOD,
        "workers": last["workers"],
        "ours_written": last["written"],
        "ours_excluded": last["excluded"],
        "ours_s": round(ours_s, 2),
        "ours_walls": rounded(ours, 2),
        "ours_cpu_s": round(statistics.median(ours_cpu), 2),
        "ours_preprocessing_s": round(statistics.median(r["seconds"] for r in reports), 2),
        "paper_s": round(paper_s, 2),
        "paper_walls": rounded(paper, 2),
        "paper_cpu_s": round(statistics.median(paper_cpu), 2),
        "paper_loop_s": round(statistics.median(paper_loop), 2),
        "speedup": round(paper_s / ours_s, 1),
        "cpu_speedup": round(statistics.median(paper_cpu) / statistics.median(ours_cpu), 1),
    }


# --- 3. Indexing a 21,000-image folder ---------------------------------------------------------------------------


def variant(gray: np.ndarray, copy: int, rng: np.random.Generator) -> np.ndarray:
    """Copy ``copy`` (>= 1) of an image: rotation/flip ``copy % 8``, a border crop from copy 8 on, a few changed pixels."""
    out = np.rot90(gray, copy % 4)
    if copy % 8 >= 4:
        out = out[:, ::-1]
    level = copy // 8
    if level:
        h, w = out.shape
        my, mx = int(h * CROP * level), int(w * CROP * level)
        out = cv2.resize(np.ascontiguousarray(out[my : h - my, mx : w - mx]), (w, h), interpolation=cv2.INTER_AREA)
    out = np.ascontiguousarray(out).copy()
    ys, xs = rng.integers(0, out.shape[0], CHANGED_PIXELS), rng.integers(0, out.shape[1], CHANGED_PIXELS)
    out[ys, xs] = rng.integers(0, 256, CHANGED_PIXELS, dtype=np.uint8)
    return out


def write_copies(job: tuple[str, list[tuple[str, int]]]) -> int:
    """Write the given copies of one source image (a process-pool task)."""
    src, copies = job
    gray = cv2.imread(src, cv2.IMREAD_GRAYSCALE)
    for dst, copy in copies:
        rng = np.random.default_rng([copy, zlib.crc32(dst.encode())])
        if not cv2.imwrite(dst, variant(gray, copy, rng)):
            raise OSError(f"cannot write {dst}")
    return len(copies)


def make_large(data: Path, dest: Path, n: int) -> dict[str, Any]:
    """``n`` images from the sample: copy 0 of each is a hard link, copies 1.. re-encoded variants (see the docs)."""
    files = sample_files(data)
    copies = math.ceil(n / len(files))
    if copies > 24:
        raise SystemExit(f"--images {n}: at most {24 * len(files)} distinct variants of {len(files)} images")
    header, manifest = read_manifest(data)
    header = header or ["file", "label", "source", "patient_id"]
    rows, jobs = [], {}
    start = time.perf_counter()
    for k in range(n):
        copy, src = divmod(k, len(files))
        path = files[src]
        rel = path.relative_to(data)
        new = rel.with_name(f"{path.stem}-c{copy:02d}{path.suffix}").as_posix()
        target = dest / new
        if copy == 0:
            link_or_copy(path, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            jobs.setdefault(str(path), []).append((str(target), copy))
        row = dict(manifest.get(rel.as_posix(), {"label": rel.parts[0], "source": "", "patient_id": ""}))
        patient = row.get("patient_id") or rel.as_posix()
        row.update(file=new, label=rel.parts[0], patient_id=f"{patient}#c{copy}")
        row.pop("sha256", None)
        rows.append(row)
    with ProcessPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        written = sum(pool.map(write_copies, jobs.items(), chunksize=16))
    write_manifest(dest / "manifest.csv", [h for h in header if h != "sha256"], rows)
    return {
        "images": n,
        "sources": len(files),
        "copies_per_image": copies,
        "hard_links": n - written,
        "re_encoded": written,
        "build_s": round(time.perf_counter() - start, 1),
    }


def time_index(folder: Path, home: Path, repeats: int) -> dict[str, Any]:
    """First ``cxr index DIR --json`` into an empty work dir, then ``repeats`` unchanged re-indexes."""
    env = base_env(CXR_HOME=home)
    first, first_cpu, summary = cxr(["index", str(folder), "--json"], env)
    assert summary is not None
    again, again_cpu, refresh = [], [], []
    for _ in range(repeats):
        wall, cpu, second = cxr(["index", str(folder), "--json"], env)
        assert second is not None
        again.append(wall), again_cpu.append(cpu), refresh.append(second["refresh"])
    reindex = statistics.median(again)
    return {
        "files": summary["n_files"],
        "images": summary["n_images"],
        "patients": summary["n_patients"],
        "duplicate_pairs": summary["duplicate_pairs"],
        "duplicates_across_splits": summary["duplicates_across_splits"],
        "excluded": summary["excluded"],
        "unreadable": len(summary["unreadable"]),
        "first_s": round(first, 2),
        "first_cpu_s": round(first_cpu, 2),
        "first_refresh": summary["refresh"],
        "reindex_s": round(reindex, 2),
        "reindex_walls": rounded(again, 2),
        "reindex_cpu_s": round(statistics.median(again_cpu), 2),
        "reindex_refresh": refresh[-1],
        "share": round(reindex / first, 3),
    }


# --- 4 and 5. Pages under AppTest in a fresh process ----------------------------------------------------------------

PAGE_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    started = time.perf_counter()
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    page, profile = sys.argv[1], sys.argv[2]
    marks = {}
    real_uploader = st.file_uploader
    def file_uploader(*args, **kwargs):
        marks.setdefault("uploader", time.perf_counter())
        return real_uploader(*args, **kwargs)
    st.file_uploader = file_uploader
    if profile:
        import cProfile
        from streamlit.testing.v1.local_script_runner import LocalScriptRunner
        profiler, thread_run = cProfile.Profile(), LocalScriptRunner._run_script_thread
        def profiled(self):
            profiler.enable()
            try:
                thread_run(self)
            finally:
                profiler.disable()
        LocalScriptRunner._run_script_thread = profiled
    at = AppTest.from_file(page, default_timeout=900)
    imported = time.perf_counter()
    print("=== page run starts ===", file=sys.stderr, flush=True)
    at.run()
    done = time.perf_counter()
    if profile:
        profiler.dump_stats(profile)
    print(json.dumps({
        "import_s": imported - started, "run_s": done - imported,
        "uploader_s": marks["uploader"] - imported if "uploader" in marks else None,
        "uploaders": len(at.get("file_uploader")), "exception": [str(e.value) for e in at.exception],
        "metrics": [[m.label, m.value] for m in at.metric], "warnings": [str(w.value)[:200] for w in at.warning],
        "errors": [str(e.value)[:200] for e in at.error],
    }))
""")


def run_page(page: Path, env: dict[str, str], profile: Path | None = None) -> tuple[float, dict[str, Any], str]:
    """Whole-process wall seconds, the snippet's report and stderr of one page run under AppTest in a fresh process."""
    cmd = [sys.executable, *(["-X", "importtime"] if profile else []), "-c", PAGE_SCRIPT, str(page), str(profile or "")]
    wall, _, done = run(cmd, env, f"AppTest {page.name}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["exception"]:
        raise RuntimeError(f"{page.name} raised under AppTest: {report['exception']}")
    return wall, report, done.stderr


def time_page(page: Path, env: dict[str, str], repeats: int, key: str) -> dict[str, Any]:
    """Median of ``repeats`` fresh-process runs of a page: ``key`` (run_s or uploader_s), run and process seconds."""
    walls, reports = [], []
    for _ in range(repeats):
        wall, report, _ = run_page(page, env)
        walls.append(wall), reports.append(report)
    if any(r[key] is None for r in reports):
        raise RuntimeError(
            f"{page.name}: no file uploader was rendered ({reports[-1]['warnings']} {reports[-1]['errors']})"
        )
    return {
        "page": page.relative_to(REPO).as_posix(),
        "runs": repeats,
        "seconds": round(statistics.median(r[key] for r in reports), 2),
        "seconds_runs": rounded([r[key] for r in reports], 2),
        "run_s": round(statistics.median(r["run_s"] for r in reports), 2),
        "streamlit_import_s": round(statistics.median(r["import_s"] for r in reports), 2),
        "process_s": round(statistics.median(walls), 2),
        "metrics": reports[-1]["metrics"],
        "uploaders": reports[-1]["uploaders"],
        "warnings": reports[-1]["warnings"],
        "errors": reports[-1]["errors"],
    }


# --- profiling of missed targets -------------------------------------------------------------------------------


def where(filename: str, line: int, func: str) -> str:
    """``file:function`` with the file relative to this checkout or to site-packages."""
    if filename.startswith("~") or not filename:
        return func
    path = Path(filename)
    if path.is_relative_to(REPO):
        name = path.relative_to(REPO).as_posix()
    elif "site-packages" in path.parts:
        name = "/".join(path.parts[path.parts.index("site-packages") + 1 :])
    else:
        name = path.name
    return f"{name}:{line}:{func}"


def profile_rows(stats_file: Path) -> dict[str, list[dict[str, Any]]]:
    """Top project functions by cumulative time and top functions overall by own time, from a cProfile dump."""
    stats = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    rows = [
        {
            "where": where(*key),
            "calls": nc,
            "own_s": round(tt, 3),
            "cumulative_s": round(ct, 3),
            "project": Path(key[0]).is_absolute() and Path(key[0]).resolve().is_relative_to(REPO),
        }
        for key, (_, nc, tt, ct, _) in stats.items()
    ]
    project = sorted((r for r in rows if r["project"]), key=lambda r: -r["cumulative_s"])[:TOP]
    own = sorted(rows, key=lambda r: -r["own_s"])[:TOP]

    def strip(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows without their ``project`` flag."""
        return [{k: v for k, v in r.items() if k != "project"} for r in items]

    return {"project_cumulative": strip(project), "own_time": strip(own)}


def import_rows(stderr: str) -> list[dict[str, Any]]:
    """The page's slowest top-level imports (after the run-start marker) from ``-X importtime`` output."""
    _, _, after = stderr.partition("=== page run starts ===")
    rows = []
    for line in after.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if match and len(match.group(3)) <= 2:  # the page's own imports and the first level below them
            rows.append(
                {
                    "module": match.group(4),
                    "depth": len(match.group(3)) // 2,
                    "cumulative_s": round(int(match.group(2)) / 1e6, 3),
                }
            )
    return sorted(rows, key=lambda r: -r["cumulative_s"])[:TOP]


def profile_index(folder: Path, home: Path, out: Path) -> dict[str, Any]:
    """cProfile of one more unchanged ``cxr index DIR --json``."""
    stats = out / "reindex.prof"
    run(
        [sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "cxr_core", "index", str(folder), "--json"],
        base_env(CXR_HOME=home),
        "profiled re-index",
    )
    return profile_rows(stats)


def profile_page(page: Path, env: dict[str, str], out: Path) -> dict[str, Any]:
    """cProfile of the page script's thread and ``-X importtime`` of one more fresh-process AppTest run."""
    stats = out / f"{page.stem}.prof"
    _, _, stderr = run_page(page, env, stats)
    return {**profile_rows(stats), "imports": import_rows(stderr)}


# --- report ----------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    """met / MISSED."""
    return "met" if ok else "MISSED"


def profile_md(title: str, prof: dict[str, Any]) -> list[str]:
    """A profile as Markdown tables."""
    lines = ["", f"### {title}", ""]
    if prof.get("imports"):
        lines += [
            "Slowest imports made while the page ran (`-X importtime`; depth 0 = imported by the page script itself, "
            "1 = by one of those):",
            "",
            "| module | depth | cumulative s |",
            "|---|---:|---:|",
        ]
        lines += [f"| `{r['module']}` | {r['depth']} | {r['cumulative_s']} |" for r in prof["imports"]]
        lines.append("")
    lines += [
        "Project functions by cumulative time (cProfile; profiling inflates the times):",
        "",
        "| function | calls | cumulative s | own s |",
        "|---|---:|---:|---:|",
    ]
    lines += [
        f"| `{r['where']}` | {r['calls']} | {r['cumulative_s']} | {r['own_s']} |" for r in prof["project_cumulative"]
    ]
    lines += [
        "",
        "All functions by own time:",
        "",
        "| function | calls | own s | cumulative s |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| `{r['where']}` | {r['calls']} | {r['own_s']} | {r['cumulative_s']} |" for r in prof["own_time"]]
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown report."""
    m, h, p, ix, ds, pr, t = (
        result[k] for k in ("machine", "help", "preprocess", "index", "dataset_page", "predict_page", "targets")
    )
    lines = [
        "# Start-up and first-use benchmark" + (" (quick run)" if result["quick"] else ""),
        "",
        f"Measured {result['date']} by `bench/startup.py` on {m['cpu_model']} ({m['usable_cores']} usable cores, "
        f"{m['logical_cores']} logical, {m['memory_gb']} GB), Python {m['python']}, NumPy {m['numpy']}, pandas "
        f"{m['pandas']}, OpenCV {m['opencv']}, scikit-image {m['scikit-image']}, Streamlit {m['streamlit']}, "
        f"TensorFlow {m['tensorflow']}. Load average before / after: {result['load_before']} / {result['load_after']}; "
        f"per step: {result['load_steps']} (the cores are shared with other work, so wall times are noisy; ratios "
        "come from interleaved runs of one process). Every measurement is a fresh subprocess running this checkout "
        f"(`{result['code_under_test']}`). Run took {result['total_s']:.0f} s.",
        "",
        "## Targets (issue 18)",
        "",
        "| target | measured | goal | met |",
        "|---|---|---|---|",
        f'| `cxr --help` / `python -c "import numpy, argparse"` | {h["ratio"]}x ({h["help_s"]} s / {h["baseline_s"]} s, '
        f"median of {h['runs']}) | <= {TARGETS['help_ratio']:g}x | {verdict(t['help'])} |",
        f"| paper / `cxr preprocess` end to end, {p['images']} images at {p['size']} px | {p['speedup']}x "
        f"({p['paper_s']} s / {p['ours_s']} s) | >= {TARGETS['preprocess_speedup']:g}x | {verdict(t['preprocess'])} |",
        f"| unchanged re-index / first index, {ix['files']:,} images | {ix['share']:.1%} ({ix['reindex_s']} s / "
        f"{ix['first_s']} s) | <= {TARGETS['reindex_share']:.0%} | {verdict(t['reindex'])} |",
        f"| cold Dataset page, {ix['files']:,} images, index cached | {ds['seconds']} s | <= {TARGETS['dataset_page_s']:g} s "
        f"| {verdict(t['dataset_page'])} |",
        f"| Predict page first visit, until the file uploader | {pr['seconds']} s | <= {TARGETS['predict_page_s']:g} s "
        f"| {verdict(t['predict_page'])} |",
        "",
        "## 1. CLI start-up",
        "",
        f'`python -m cxr_core --help`: {h["help_walls"]} s; `python -c "import numpy, argparse"`: {h["baseline_walls"]} s '
        "(interleaved, after one warm-up run of each).",
        "",
        "## 2. `cxr preprocess` vs the paper, end to end",
        "",
        f"A fresh folder of {p['images']} sample images (seeded subset, hard links, Kaggle layout and manifest rows). Ours: "
        f"`cxr preprocess DIR --method {p['method']} --size {p['size']} --json` into an empty work dir each time, so it "
        f"includes start-up and indexing ({p['workers']} workers, the default): {p['ours_walls']} s wall, median "
        f"{p['ours_cpu_s']} s CPU, of which preprocessing {p['ours_preprocessing_s']} s. The paper: one Python loop "
        f"reading each image, resizing to {p['size']}x{p['size']} where needed, `rank.equalize(img, disk({PAPER_RADIUS}))`, "
        f"writing a PNG to a second folder: {p['paper_walls']} s wall ({p['paper_loop_s']} s in the loop, "
        f"{p['paper_cpu_s']} s CPU). Speed-up {p['speedup']}x wall, {p['cpu_speedup']}x CPU.",
        "",
        "## 3. Indexing a large folder",
        "",
        f"{ix['files']:,} files built from the {ix['build']['sources']:,} sample images in {ix['build']['build_s']} s: "
        f"{ix['build']['hard_links']:,} hard links of the originals and {ix['build']['re_encoded']:,} re-encoded variants "
        "(rotation/flip, border crop from copy 8 on, 5 random pixels), each with its own SHA-256 and pHash, each copy "
        f"its own patient. The index finds {ix['duplicate_pairs']:,} duplicate pairs ({ix['duplicates_across_splits']:,} "
        f"across splits), excluded {ix['excluded']}, {ix['unreadable']} unreadable. The files were just written, so "
        "they sit in the page cache: the first index reads warm files (a cold disk would make it slower, and the ratio "
        "smaller).",
        "",
        f"- First `cxr index DIR --json` (empty work dir): {ix['first_s']} s wall, {ix['first_cpu_s']} s CPU; "
        f"refresh {ix['first_refresh']}.",
        f"- Unchanged re-index: {ix['reindex_walls']} s wall (median {ix['reindex_s']} s, {ix['reindex_cpu_s']} s CPU); "
        f"refresh {ix['reindex_refresh']}.",
        "",
        "## 4 and 5. Pages (AppTest, fresh process each run)",
        "",
        "Page seconds run from the start of `AppTest.run()`: the page's imports, index load and rendering (a running "
        "server has already imported Streamlit, which is the `streamlit import` column).",
        "",
        "| page | measured | runs (s) | whole AppTest run s | streamlit import s | whole process s | shown |",
        "|---|---:|---|---:|---:|---:|---|",
        f"| `{ds['page']}` ({ix['files']:,} images, index cached) | {ds['seconds']} s (whole run) | {ds['seconds_runs']} | "
        f"{ds['run_s']} | {ds['streamlit_import_s']} | {ds['process_s']} | metrics {ds['metrics']} |",
        f"| `{pr['page']}` (shipped models) | {pr['seconds']} s (until `st.file_uploader`) | {pr['seconds_runs']} | "
        f"{pr['run_s']} | {pr['streamlit_import_s']} | {pr['process_s']} | {pr['uploaders']} file uploader(s) |",
    ]
    profiles = result.get("profiles", {})
    if profiles:
        lines += ["", "## Profiles of the missed targets"]
        titles = {
            "reindex": "Unchanged re-index (`python -m cProfile -m cxr_core index DIR --json`)",
            "dataset_page": "Dataset page (script thread under cProfile)",
            "predict_page": "Predict page (script thread under cProfile)",
        }
        for key, prof in profiles.items():
            lines += profile_md(titles[key], prof)
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the sample (Kaggle layout, manifest.csv)")
    parser.add_argument(
        "--images", type=int, help=f"images in the large folder (default {FULL_IMAGES:,}; quick {QUICK_IMAGES:,})"
    )
    parser.add_argument("--repeats", type=int, help="runs of cxr --help and its baseline (default 9, quick 7; >= 7)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_IMAGES:,} images and fewer repeats, to try it")
    parser.add_argument("--no-profile", action="store_true", help="do not profile the missed targets 3-5")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results; quick: a temporary folder)")
    args = parser.parse_args()
    images = args.images or (QUICK_IMAGES if args.quick else FULL_IMAGES)
    repeats = max(7, args.repeats or (7 if args.quick else 9))
    runs = 1 if args.quick else 3
    out = args.out or (Path(tempfile.gettempdir()) / "cxr-bench-startup-quick" if args.quick else RESULTS)
    began = time.perf_counter()
    result: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "quick": args.quick,
        "machine": machine(),
        "load_before": load_average(),
        "load_steps": {},
        "targets_set": TARGETS,
        "code_under_test": code_under_test(),
    }
    steps = result["load_steps"]
    with tempfile.TemporaryDirectory(prefix="cxr-bench-startup-") as scratch:
        tmp = Path(scratch)
        print(f"1. cxr --help vs import numpy, argparse ({repeats} runs each)…", file=sys.stderr)
        result["help"] = time_help(repeats)
        steps["help"] = load_average()
        print(f"2. cxr preprocess vs the paper on {SUBSET} images ({runs} runs each)…", file=sys.stderr)
        result["preprocess"] = time_preprocess(args.data, tmp, runs)
        steps["preprocess"] = load_average()
        print(f"3. building {images:,} images…", file=sys.stderr)
        large, home = tmp / "large", tmp / "home-index"
        build = make_large(args.data, large, images)
        print("3. cxr index, first and unchanged…", file=sys.stderr)
        result["index"] = {**time_index(large, home, runs), "build": build}
        steps["index"] = load_average()
        page_env = base_env(
            CXR_HOME=home, CXR_DATA_DIR=large, CXR_MODELS_DIR=REPO / "models", CXR_LUNGS_MODEL=REPO / "models" / "lungs"
        )
        print("4. Dataset page…", file=sys.stderr)
        result["dataset_page"] = time_page(page_file("Dataset"), page_env, runs, "run_s")
        steps["dataset_page"] = load_average()
        print("5. Predict page…", file=sys.stderr)
        predict_env = {**page_env, "CXR_HOME": str(tmp / "home-predict"), "CXR_DATA_DIR": str(tmp / "subset")}
        result["predict_page"] = time_page(page_file("Predict"), predict_env, runs, "uploader_s")
        steps["predict_page"] = load_average()
        ix, p = result["index"], result["preprocess"]
        result["targets"] = {
            "help": result["help"]["ratio"] <= TARGETS["help_ratio"],
            "preprocess": p["speedup"] >= TARGETS["preprocess_speedup"],
            "reindex": ix["share"] <= TARGETS["reindex_share"],
            "dataset_page": result["dataset_page"]["seconds"] <= TARGETS["dataset_page_s"],
            "predict_page": result["predict_page"]["seconds"] <= TARGETS["predict_page_s"],
        }
        if not args.no_profile:
            profiles = result["profiles"] = {}
            if not result["targets"]["reindex"]:
                print("profiling the re-index…", file=sys.stderr)
                profiles["reindex"] = profile_index(large, home, tmp)
            if not result["targets"]["dataset_page"]:
                print("profiling the Dataset page…", file=sys.stderr)
                profiles["dataset_page"] = profile_page(page_file("Dataset"), page_env, tmp)
            if not result["targets"]["predict_page"]:
                print("profiling the Predict page…", file=sys.stderr)
                profiles["predict_page"] = profile_page(page_file("Predict"), predict_env, tmp)
    result["load_after"] = load_average()
    result["total_s"] = round(time.perf_counter() - began, 1)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "startup.json", json.dumps(result, indent=2) + "\n")
    write_atomic(out / "startup.md", markdown(result))
    print(markdown(result))
    print(f"results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
