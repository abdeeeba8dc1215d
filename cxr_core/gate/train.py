"""Train the gate net: real training-split chest X-rays (upright, rotated, inverted) against procedural negatives.

Positives come from the dataset index's *train* split, validation X-rays from its *val* split (other patients).
Every X-ray is augmented the way real films differ (crop, aspect, tilt, gamma, contrast, blur, noise, JPEG, frames)
before it is rotated or inverted, so the net learns orientation and polarity, not one source's look. Negatives
are drawn fresh every epoch by :mod:`cxr_core.gate.negatives`. The threshold on P(frontal) follows a rule fixed
before training: the largest value (at most 0.5) that accepts 99 % of the validation split's untouched X-rays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cxr_core.config import Config
from cxr_core.curation.curated import curated_index
from cxr_core.data.imaging import ImageReadError, read_image
from cxr_core.gate import negatives
from cxr_core.gate.net import CARD_FILE, KINDS, MODEL_FILE, ROTATIONS, GateNet, build_net, prepare
from cxr_core.util.atomic import write_json_atomic, write_text_atomic
from cxr_core.util.keras_files import save_keras_atomically
from cxr_core.util.progress import TrainerBudget, epoch_budget_callback

SHARES = {"frontal": 0.34, "rot90": 0.08, "rot180": 0.08, "rot270": 0.08, "inverted": 0.12, "other": 0.30}
ACCEPT_RULE = 0.99


class GateDataError(ValueError):
    """The dataset has no usable training or validation X-rays."""


@dataclass(frozen=True)
class GateTrainConfig(TrainerBudget):
    """Options of a gate-net training run."""

    size: int = 64
    width: int = 16
    load_size: int = 160
    samples_per_epoch: int = 4096
    epochs: int = 14
    batch: int = 64
    lr: float = 3e-3
    val_negatives: int = 900
    max_minutes: float = 15.0


def load_xrays(
    cfg: Config, data_dir: str | Path, split: str, load_size: int, limit: int | None = None
) -> list[np.ndarray]:
    """The readable images of one split of the dataset index, squashed to ``load_size`` px."""
    rows = curated_index(cfg, data_dir).images(split)
    if limit:
        rows = rows.sample(n=min(limit, len(rows)), random_state=0)
    images = []
    for rel in rows["path"]:
        try:
            gray = read_image(Path(data_dir) / rel)
        except ImageReadError:
            continue
        images.append(cv2.resize(gray, (load_size, load_size), interpolation=cv2.INTER_AREA))
    return images


def augment_xray(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """A chest X-ray as another hospital might store it: cropped, tilted, re-exposed, blurred, noisy, framed."""
    h, w = image.shape
    ch, cw = int(h * rng.uniform(0.8, 1.0)), int(w * rng.uniform(0.75, 1.0))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = image[y : y + ch, x : x + cw].astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.6:
        matrix = cv2.getRotationMatrix2D((cw / 2, ch / 2), float(rng.uniform(-12, 12)), float(rng.uniform(0.9, 1.1)))
        out = cv2.warpAffine(np.ascontiguousarray(out), matrix, (cw, ch), borderMode=cv2.BORDER_REPLICATE)
    out = 255.0 * (np.clip(out, 0, 255) / 255.0) ** rng.uniform(0.6, 1.6)
    out = (out - out.mean()) * rng.uniform(0.7, 1.3) + out.mean() + rng.uniform(-25, 25)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 2.0))
    if rng.random() < 0.3:
        out = out + rng.normal(0, rng.uniform(2, 12), out.shape)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.2:
        ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 90))])
        out = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if ok else out
    if rng.random() < 0.25:
        pad = [int(rng.integers(0, max(1, s // 8))) for s in (ch, ch, cw, cw)]
        out = cv2.copyMakeBorder(out, *pad, cv2.BORDER_CONSTANT, value=float(rng.choice([0, 255, rng.uniform(0, 255)])))
    return out


def kind_of(rng: np.random.Generator, xray: np.ndarray, kind: str) -> np.ndarray:
    """Turn an (augmented) upright X-ray into an example of ``kind`` (any of :data:`KINDS`)."""
    if kind in ROTATIONS:
        return np.rot90(xray, ROTATIONS[kind])
    if kind == "inverted":
        return np.rot90(255 - xray, int(rng.integers(4)) if rng.random() < 0.3 else 0)
    if kind == "other":
        return negatives.negative(rng, xray)[1]
    return xray


def make_batch(xrays: list[np.ndarray], n: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fresh training examples in the proportions of :data:`SHARES`: inputs and integer kind labels."""
    labels = rng.choice(len(KINDS), size=n, p=[SHARES[k] for k in KINDS])
    images = [
        prepare(kind_of(rng, augment_xray(rng, xrays[int(rng.integers(len(xrays)))]), KINDS[k]), size) for k in labels
    ]
    return np.stack(images), labels.astype(np.int32)


def validation_set(xrays: list[np.ndarray], cfg: GateTrainConfig) -> dict[str, Any]:
    """Untouched validation X-rays, their rotated and inverted copies, and fresh negatives (fixed seed)."""
    rng = np.random.default_rng(cfg.seed + 1)
    images, labels = [], []
    for kind in KINDS[:-1]:
        for xray in xrays:
            images.append(kind_of(rng, xray, kind) if kind != "inverted" else 255 - xray)
            labels.append(KINDS.index(kind))
    families = []
    for _ in range(cfg.val_negatives):
        family, image = negatives.negative(rng, xrays[int(rng.integers(len(xrays)))])
        images.append(image)
        labels.append(KINDS.index("other"))
        families.append(family)
    return {"images": images, "labels": np.array(labels), "families": families}


def choose_threshold(frontal_scores: np.ndarray) -> float:
    """The rule fixed before training: the largest threshold <= 0.5 accepting 99 % of untouched validation X-rays."""
    return float(min(0.5, np.quantile(frontal_scores, 1 - ACCEPT_RULE)))


def summarise(probs: np.ndarray, val: dict[str, Any], threshold: float) -> dict[str, Any]:
    """Validation figures: acceptance of untouched X-rays, refusal and naming of each transformed kind and family."""
    labels = val["labels"]
    accepted = probs[:, 0] >= threshold
    named = probs.argmax(axis=1)
    out: dict[str, Any] = {"threshold": round(threshold, 4)}
    for i, kind in enumerate(KINDS):
        rows = labels == i
        out[kind] = {
            "n": int(rows.sum()),
            "accepted": round(float(accepted[rows].mean()), 4),
            "named_correctly": round(float((named[rows] == i).mean()), 4),
        }
    others = np.flatnonzero(labels == KINDS.index("other"))
    families = np.array(val["families"])
    out["other_by_family"] = {
        f: round(float(1 - accepted[others][families == f].mean()), 4) for f in sorted(set(families))
    }
    return out


def train_gate_net(
    cfg: Config,
    data_dir: str | Path,
    out_dir: str | Path,
    options: GateTrainConfig = GateTrainConfig(),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train, choose the threshold by the fixed rule, save ``model.keras`` + card; returns the card."""
    import keras

    keras.utils.set_random_seed(options.seed)
    train = load_xrays(cfg, data_dir, "train", options.load_size, options.limit)
    val = load_xrays(cfg, data_dir, "val", options.load_size, options.limit)
    if not train or not val:
        raise GateDataError(f"{data_dir} has no readable X-rays in its train and val splits")
    log(f"gate: {len(train)} training and {len(val)} validation X-rays")
    model = build_net(options.size, options.width)
    steps = max(1, options.samples_per_epoch // options.batch) * options.epochs
    schedule = keras.optimizers.schedules.CosineDecay(options.lr, decay_steps=steps, alpha=0.05)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    rng = np.random.default_rng(options.seed)
    started = time.time()
    progress = epoch_budget_callback(options.epochs, started + options.max_minutes * 60, log, "train-gate")
    epochs_run = 0
    for epoch in range(options.epochs):
        x, y = make_batch(train, options.samples_per_epoch, rng, options.size)
        model.fit(
            x, y, batch_size=options.batch, epochs=epoch + 1, initial_epoch=epoch, callbacks=[progress], verbose=0
        )
        epochs_run += 1
        if model.stop_training:
            break
    seconds = time.time() - started
    held = validation_set(val, options)
    probs = GateNet(model).probabilities(held["images"])
    threshold = choose_threshold(probs[held["labels"] == 0, 0])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_keras_atomically(model, out / MODEL_FILE)
    card = {
        "name": "gate",
        "task": "is this an upright, frontal, normally windowed chest X-ray?",
        "kinds": list(KINDS),
        "architecture": "4 conv-BN-ReLU stages, global average + max pooling, dense softmax over the kinds",
        "parameters": int(model.count_params()),
        "config": asdict(options),
        "data": str(Path(data_dir)),
        "train_xrays": len(train),
        "val_xrays": len(val),
        "epochs_run": epochs_run,
        "train_seconds": round(seconds, 1),
        "threshold": threshold,
        "threshold_rule": f"largest threshold <= 0.5 accepting {ACCEPT_RULE:.0%} of untouched validation X-rays",
        "negative_families": sorted([*negatives.GENERATORS, *negatives.XRAY_GENERATORS]),
        "validation": summarise(probs, held, threshold),
    }
    write_card(out, card)
    return card


def write_card(out_dir: Path, card: dict[str, Any]) -> None:
    """Write ``card.json`` and a short human ``card.md``."""
    write_json_atomic(out_dir / CARD_FILE, card)
    val = card["validation"]
    lines = [
        "# Chest X-ray gate (`models/gate/`)",
        "",
        f"{card['architecture']}; {card['parameters']:,} parameters; input {card['config']['size']} px squashed, raw "
        "grey levels. Output: P(kind) for " + ", ".join(f"`{k}`" for k in card["kinds"]) + ". The gate's content score "
        "is P(frontal).",
        "",
        "## Data",
        "",
        f"{card['train_xrays']} chest X-rays of the training split of `{card['data']}` (augmented, then rotated or "
        "inverted for those kinds) and procedural negatives drawn fresh every epoch: "
        + ", ".join(card["negative_families"])
        + ". No package sample picture (scikit-image `data`, pydicom test "
        "files) is used: those are kept for `bench/gate.py`.",
        "",
        "## Training",
        "",
        f"`cxr train-gate`: {card['epochs_run']} epochs of {card['config']['samples_per_epoch']} samples, "
        f"{card['train_seconds'] / 60:.1f} min on 2 CPU cores. Threshold {card['threshold']:.3f}: "
        f"{card['threshold_rule']}.",
        "",
        f"## Validation ({card['val_xrays']} X-rays of other patients, each also rotated and inverted; "
        f"{val['other']['n']} fresh negatives)",
        "",
        "| kind | n | accepted by the gate | named correctly |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {val[k]['n']} | {val[k]['accepted']:.3f} | {val[k]['named_correctly']:.3f} |" for k in card["kinds"]
    ]
    lines += [
        "",
        "Negatives accepted by family: "
        + ", ".join(f"{f} {1 - r:.3f}" for f, r in val["other_by_family"].items())
        + ".",
        "",
        "## Limits",
        "",
        "It has never seen a lateral film, a chest CT scout, or a real X-ray of another body part (only crude drawn "
        "ones: limb bones, skull rings); the DICOM header checks cover some of those. Results on real non-X-ray pictures: `bench/results/gate.md`.",
    ]
    write_text_atomic(out_dir / "card.md", "\n".join(lines) + "\n")
