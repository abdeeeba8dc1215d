"""Familiarity by an autoencoder's reconstruction error, the issue's third candidate, measured leave-one-source-out.

Usage: ``.venv/bin/python bench/familiarity_autoencoder.py [--data ../shared/data/cxr-sample] [--epochs 30]``

For every source: a small convolutional autoencoder (64 x 64 grey input as read, divided by 255; Conv2D 16/32/64
with stride 2, a 1x1 code of 8 channels at 8 x 8, Conv2DTranspose 64/32/16, a sigmoid 1x1 output; MSE, Adam 1e-3,
batch 32, seed 0) is trained on the index's train split of the other sources. The score is the mean squared
reconstruction error; AUROC of all the held-out source's images against the index's test images of the other
sources (nearly the sets of ``bench/gate.py``'s familiarity part, which trains on the leave-one-source-out runs'
splits). Rule, written before the first run: it would replace the default familiarity method only if its mean
AUROC beat the default's. Writes
``bench/results/familiarity_autoencoder.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from preprocess import load_average, machine

from cxr_core.config import load_config
from cxr_core.curation.curated import curated_index
from cxr_core.data.imaging import read_image
from cxr_core.util.atomic import read_json, write_json_atomic, write_text_atomic

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cxr-sample"
RESULTS = REPO / "bench" / "results"
SIZE = 64


def build_autoencoder() -> Any:
    """The small convolutional autoencoder, compiled with MSE."""
    import keras

    layers = keras.layers
    inputs = keras.Input((SIZE, SIZE, 1))
    x = inputs
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2D(8, 1, activation="relu")(x)
    for filters in (64, 32, 16):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(x)
    model = keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    return model


def measure(data: Path, epochs: int) -> dict[str, Any]:
    """AUROC of the reconstruction error for every held-out source."""
    import keras
    from sklearn.metrics import roc_auc_score

    index = curated_index(load_config(data_dir=data), data)
    rows = {split: index.images(split) for split in ("train", "val", "test")}
    pixels = {
        split: np.stack(
            [cv2.resize(read_image(data / rel), (SIZE, SIZE), interpolation=cv2.INTER_AREA) for rel in frame["path"]]
        ).astype(np.float32)[..., None]
        / 255
        for split, frame in rows.items()
    }
    sources: dict[str, Any] = {}
    for source in sorted(set(rows["test"]["source"])):
        keras.utils.set_random_seed(0)
        train = pixels["train"][rows["train"]["source"].to_numpy() != source]
        model = build_autoencoder()
        model.fit(train, train, epochs=epochs, batch_size=32, verbose=0)
        held = np.concatenate([pixels[s][rows[s]["source"].to_numpy() == source] for s in rows])
        inside = pixels["test"][rows["test"]["source"].to_numpy() != source]

        def error(x: np.ndarray, model: Any = model) -> np.ndarray:
            """Mean squared reconstruction error per image."""
            return ((model.predict(x, verbose=0) - x) ** 2).mean(axis=(1, 2, 3))

        y = np.r_[np.ones(len(held)), np.zeros(len(inside))]
        auroc = float(roc_auc_score(y, np.r_[error(held), error(inside)]))
        sources[source] = {"auroc": round(auroc, 4), "n_held_out": len(held), "n_in_distribution": len(inside)}
        print(f"autoencoder: {source}: AUROC {auroc:.3f}", file=sys.stderr, flush=True)
    aurocs = [e["auroc"] for e in sources.values()]
    return {"sources": sources, "mean_auroc": round(float(np.mean(aurocs)), 4), "worst_auroc": min(aurocs)}


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report."""
    m = result["machine"]
    default = result.get("default_method") or {}
    lines = [
        "# Familiarity by autoencoder reconstruction error (`bench/familiarity_autoencoder.py`)",
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cores']} usable cores; load average {result['load_average']} at the "
        f"end; {result['seconds']:.0f} s; {result['epochs']} epochs per autoencoder.",
        "",
        "| held-out source | n held out | n in-dist. | AUROC |",
        "|---|---|---|---|",
        *(
            f"| {s} | {e['n_held_out']} | {e['n_in_distribution']} | {e['auroc']} |"
            for s, e in result["sources"].items()
        ),
        "",
        f"Mean AUROC {result['mean_auroc']}, worst {result['worst_auroc']}. The default method "
        f"({default.get('name')}) has mean {default.get('mean_auroc')} in `bench/results/gate.json`. "
        f"Verdict: **{result['verdict']}**.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    """Measure, compare with the default familiarity method's committed figure, write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    start = time.perf_counter()
    result = measure(args.data, args.epochs)
    fam = (read_json(RESULTS / "gate.json", {}) or {}).get("familiarity") or {}
    chosen = fam.get("chosen")
    default_mean = (fam.get("mean_auroc") or {}).get(chosen)
    beats = default_mean is not None and result["mean_auroc"] > default_mean
    result.update(
        {
            "epochs": args.epochs,
            "default_method": {"name": chosen, "mean_auroc": default_mean},
            "verdict": "replaces the default" if beats else "rejected: the default stays",
            "machine": machine(),
            "load_average": load_average(),
            "seconds": round(time.perf_counter() - start, 1),
        }
    )
    write_json_atomic(RESULTS / "familiarity_autoencoder.json", result)
    write_text_atomic(RESULTS / "familiarity_autoencoder.md", markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
