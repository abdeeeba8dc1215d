"""Benchmark single-image review: preprocess + predict + explanation per image, and the memory it takes.

Usage: ``.venv/bin/python bench/predict.py [--model models/default] [--data ../shared/data/cxr-sample] [--n 50]``

In one run, on the same ``--n`` sample images (seeded choice, both classes):
1. the default model: preprocess + predict + Grad-CAM per image (p50, p95, mean) with the product's compiled
   Grad-CAM and through tf-keras-vis' ``Gradcam``, the explainer's build time, and Grad-CAM++, bounded Score-CAM
   (``max_N`` from :class:`ExplainOptions`) and SmoothGrad (tf-keras-vis) per image;
2. ``paper_cnn`` (the paper's 18.1M-parameter CNN at 299 px, untrained weights: the cost does not depend on
   the weights): preprocess + predict + tf-keras-vis Grad-CAM with the paper's own preprocessing (local rank
   equalisation, disk(70)) and with CLAHE (same preprocessing as ours), and with the compiled Grad-CAM, and the
   ratios to (1);
3. peak RSS of a fresh process that loads the default model, builds its explainer and explains one image.
When ``models/default`` does not exist yet, an untrained ``cxr_net`` stands in for it and the results say so.
The first call of each method is a warm-up and is not timed. Writes ``bench/results/predict.json`` + ``.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from cxr_core.data.imaging import read_image
from cxr_core.explain.cam import CAM_METHODS as METHODS
from cxr_core.explain.cam import Explainer, ExplainOptions
from cxr_core.serve.inference import predict_image
from cxr_core.serve.registry import LoadedModel, load_model
from cxr_core.util.atomic import write_json_atomic, write_text_atomic

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cxr-sample"
RESULTS = REPO / "bench" / "results"
TARGETS = {"p50_ms": 100.0, "p95_ms": 200.0, "speedup_vs_paper_cnn": 5.0, "rss_mb": 1536.0}


def _bench_preprocess_module() -> Any:
    """bench/preprocess.py, for its ``machine()`` and ``load_average()`` helpers."""
    spec = importlib.util.spec_from_file_location("bench_preprocess", REPO / "bench" / "preprocess.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def pick_images(data_dir: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` sample images, half per class where possible, chosen with a fixed seed."""
    rng = np.random.default_rng(seed)
    chosen: list[Path] = []
    for label in ("COVID", "Normal"):
        files = sorted((data_dir / label).rglob("*.png"))
        take = min(len(files), n // 2 + (n % 2 if label == "COVID" else 0))
        chosen += [files[i] for i in sorted(rng.choice(len(files), take, replace=False))]
    return chosen


def stats(values_ms: list[float]) -> dict[str, float]:
    """p50, p95, mean and max of millisecond timings."""
    arr = np.asarray(values_ms, dtype=np.float64)
    return {
        "n": int(arr.size),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "mean_ms": round(float(arr.mean()), 2),
        "max_ms": round(float(arr.max()), 2),
    }


TF_KERAS_VIS = ExplainOptions(compiled_gradcam=False)
LABELS = {
    "gradcam": "Grad-CAM (compiled, the product's default)",
    "gradcam_tf_keras_vis": "Grad-CAM through tf-keras-vis",
    "gradcam_paper_preprocessing": "Grad-CAM through tf-keras-vis, paper preprocessing (local_rank_eq)",
}


def time_method(loaded: LoadedModel, explainer: Explainer | None, images: list[np.ndarray], cam: str) -> dict[str, Any]:
    """Per-image wall time of preprocess + predict (+ explanation) through :func:`predict_image`."""
    predict_image(loaded, images[0], explainer, cam)
    totals, parts = [], {"preprocess": [], "predict": [], "explain": []}
    for gray in images:
        start = time.perf_counter()
        pred = predict_image(loaded, gray, explainer, cam)
        totals.append((time.perf_counter() - start) * 1000)
        for key, value in pred.timings_ms.items():
            parts[key].append(value)
    result = stats(totals)
    result["parts_p50_ms"] = {k: round(float(np.median(v)), 2) for k, v in parts.items() if v}
    return result


def build_explainer(model: Any, options: ExplainOptions = ExplainOptions()) -> tuple[Explainer, float]:
    """An explainer and its build time in ms (including the warm-up call)."""
    start = time.perf_counter()
    explainer = Explainer(model, options)
    return explainer, round((time.perf_counter() - start) * 1000, 1)


def stand_in_model(arch: str, size: int, directory: Path, method: str = "clahe") -> LoadedModel:
    """An untrained architecture saved as a model directory with ``method`` preprocessing (for timing only)."""
    from cxr_core.preprocess.recipe import PreprocessConfig
    from cxr_core.serve.registry import save_model_dir
    from cxr_core.train.architectures import build_model

    save_model_dir(
        directory,
        build_model(arch, size=size),
        PreprocessConfig(method=method, size=size),
        card={"name": f"{arch} (untrained, timing only)", "architecture": arch},
    )
    return load_model(directory)


RSS_SCRIPT = """
import os, re, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, {repo!r})
from cxr_core.explain.cam import Explainer
from cxr_core.data.imaging import read_image
from cxr_core.serve.inference import predict_image
from cxr_core.serve.registry import load_model
loaded = load_model({model!r})
explainer = Explainer(loaded.model)
for _ in range(3):
    predict_image(loaded, read_image({image!r}), explainer, "gradcam")
print(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
"""


def peak_rss_mb(model_dir: Path, image: Path) -> float:
    """Peak RSS (MB, VmHWM: unlike ru_maxrss it is not inherited across exec) of a fresh process holding the
    model and its explainer after three explained predictions."""
    script = RSS_SCRIPT.format(repo=str(REPO), model=str(model_dir), image=str(image))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return round(int(out.stdout.strip().splitlines()[-1]) / 1024, 1)


def markdown(result: dict[str, Any]) -> str:
    """The results as a Markdown report."""
    d, p = result["default_model"], result["paper_cnn"]
    lines = [
        "# Predict benchmark: preprocess + predict + explanation per image",
        "",
        f"Machine: {result['machine']['cpu_model']}, {result['machine']['usable_cores']} usable cores; "
        f"load average {result['load_average_start']} at start, {result['load_average_end']} at end "
        "(nothing else of ours ran during it; a load average near 1 is this benchmark itself). "
        f"TensorFlow {result['versions']['tensorflow']}, Keras {result['versions']['keras']}, "
        f"tf-keras-vis {result['versions']['tf_keras_vis']}. {result['n_images']} sample images, "
        "one warm-up call per method not timed.",
        "",
        f"Default model: **{d['name']}** ({d['note']}), {d['parameters']:,} parameters, input {d['size']} px. "
        f"paper_cnn: {p['parameters']:,} parameters, input {p['size']} px, {p['note']}. The default model uses its own "
        "CLAHE preprocessing; paper_cnn is timed with CLAHE too (same preprocessing, isolates model + explainer) and "
        "with the paper's own pipeline, local rank equalisation with disk(70) (`gradcam_paper_preprocessing`).",
        "",
        "| model | method | p50 ms | p95 ms | mean ms | explainer build ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, block in (("default", d), ("paper_cnn", p)):
        for method, timing in block["methods"].items():
            label = LABELS.get(method) or METHODS[method]
            lines.append(
                f"| {name} | {label} | {timing['p50_ms']} | {timing['p95_ms']} | "
                f"{timing['mean_ms']} | {block['explainer_build_ms']} |"
            )
    checks = result["targets"]
    lines += [
        "",
        f"Grad-CAM per image (p50) split into preprocess / predict / explain: {d['methods']['gradcam']['parts_p50_ms']} ms.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| default p50 <= {TARGETS['p50_ms']:.0f} ms | {d['methods']['gradcam']['p50_ms']} ms | {checks['p50']} |",
        f"| default p95 <= {TARGETS['p95_ms']:.0f} ms | {d['methods']['gradcam']['p95_ms']} ms | {checks['p95']} |",
        f"| >= {TARGETS['speedup_vs_paper_cnn']:.0f}x faster than paper_cnn + Grad-CAM in the paper's pipeline (p50) | {result['speedup_vs_paper_cnn']}x | {checks['speedup']} |",
        f"| (same, both with CLAHE preprocessing) | {result['speedup_vs_paper_cnn_same_preprocessing']}x | {result['speedup_vs_paper_cnn_same_preprocessing'] >= TARGETS['speedup_vs_paper_cnn']} |",
        f"| (same, both with CLAHE and the compiled Grad-CAM: the models alone) | {result['speedup_vs_paper_cnn_same_preprocessing_and_explainer']}x | {result['speedup_vs_paper_cnn_same_preprocessing_and_explainer'] >= TARGETS['speedup_vs_paper_cnn']} |",
        f"| peak RSS (default model + explainer) < {TARGETS['rss_mb']:.0f} MB | {result['peak_rss_mb']} MB | {checks['rss']} |",
        "",
        f"Score-CAM is bounded to max_N={result['options']['scorecam_max_n']} channels (full Score-CAM over every "
        f"channel took ~10 s/image here); SmoothGrad uses {result['options']['smoothgrad_samples']} samples.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    """Run every measurement and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    import keras
    import tensorflow as tf
    import tf_keras_vis

    helpers = _bench_preprocess_module()
    load_start = helpers.load_average()
    files = pick_images(args.data, args.n)
    images = [read_image(f) for f in files]
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    if (args.model / "model.keras").is_file():
        default, note = load_model(args.model), "the registered default model"
        model_dir = args.model
    else:
        default, note = (
            stand_in_model("cxr_net", 224, work / "cxr_net"),
            "models/default missing: untrained cxr_net stand-in",
        )
        model_dir = work / "cxr_net"
    explainer, build_ms = build_explainer(default.model)
    methods = {m: time_method(default, explainer, images, m) for m in METHODS}
    methods["gradcam_tf_keras_vis"] = time_method(
        default, build_explainer(default.model, TF_KERAS_VIS)[0], images, "gradcam"
    )
    paper = stand_in_model("paper_cnn", 299, work / "paper_cnn")
    paper_explainer, paper_build_ms = build_explainer(paper.model, TF_KERAS_VIS)
    paper_gradcam = time_method(paper, paper_explainer, images, "gradcam")
    paper_compiled = time_method(paper, build_explainer(paper.model)[0], images, "gradcam")
    faithful = stand_in_model("paper_cnn", 299, work / "paper_cnn_rank_eq", method="local_rank_eq")
    faithful.model = paper.model
    paper_pipeline = time_method(faithful, paper_explainer, images, "gradcam")
    rss = peak_rss_mb(model_dir, files[0])
    ours = methods["gradcam"]["p50_ms"]
    speedup_same = round(paper_gradcam["p50_ms"] / ours, 1)
    speedup = round(paper_pipeline["p50_ms"] / ours, 1)
    result = {
        "machine": helpers.machine(),
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tf_keras_vis": tf_keras_vis.__version__,
        },
        "load_average_start": load_start,
        "n_images": len(images),
        "options": ExplainOptions().__dict__,
        "default_model": {
            "name": default.name,
            "version": default.version,
            "note": note,
            "size": default.preprocess.size,
            "parameters": int(default.model.count_params()),
            "explainer_build_ms": build_ms,
            "explained_layer": explainer.layer_name,
            "methods": methods,
        },
        "paper_cnn": {
            "note": "untrained weights (timing only)",
            "size": 299,
            "parameters": int(paper.model.count_params()),
            "explainer_build_ms": paper_build_ms,
            "explained_layer": paper_explainer.layer_name,
            "methods": {
                "gradcam_tf_keras_vis": paper_gradcam,
                "gradcam_paper_preprocessing": paper_pipeline,
                "gradcam": paper_compiled,
            },
        },
        "speedup_vs_paper_cnn": speedup,
        "speedup_vs_paper_cnn_same_preprocessing": speedup_same,
        "speedup_vs_paper_cnn_same_preprocessing_and_explainer": round(paper_compiled["p50_ms"] / ours, 1),
        "peak_rss_mb": rss,
        "bench_process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_average_end": helpers.load_average(),
    }
    result["targets"] = {
        "p50": methods["gradcam"]["p50_ms"] <= TARGETS["p50_ms"],
        "p95": methods["gradcam"]["p95_ms"] <= TARGETS["p95_ms"],
        "speedup": speedup >= TARGETS["speedup_vs_paper_cnn"],
        "rss": rss < TARGETS["rss_mb"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "predict.json", result)
    write_text_atomic(args.out / "predict.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
