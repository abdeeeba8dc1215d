"""Train the learned markings detector on synthetic overlays drawn onto unlabelled sample images.

Backgrounds: the Normal images of a sample (assumed clean; markings in the sample occur in COVID images) give both
clean negatives and marked positives. Unlabelled COVID images may carry real markings, so they only serve as
backgrounds for positives, and only the cells under a drawn overlay count in the loss (the rest of such an image
is "unknown"). Any file listed in ``markings.csv`` (the hand labels) is left out entirely, so the labels stay an
untouched test set. Validation uses other Normal patients, with freshly drawn overlays.
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from cxr_core.data.imaging import ImageReadError, read_image
from cxr_core.markings.net import CARD_FILE, MODEL_FILE, STRIDE, MarkingsNet, build_net
from cxr_core.markings.synth import PAINTERS, OverlayOptions, Painter, draw_overlays
from cxr_core.util.atomic import write_json_atomic, write_text_atomic
from cxr_core.util.keras_files import save_keras_atomically
from cxr_core.util.progress import TrainerBudget, epoch_budget_callback

LABELS_FILE = "markings.csv"


class MarkingsDataError(ValueError):
    """The sample folder is missing or has no usable backgrounds."""


@dataclass(frozen=True)
class MarkingsTrainConfig(TrainerBudget):
    """Options of a markings-net training run."""

    epochs: int = 30
    size: int = 256
    draw_size: int = 512
    width: int = 32
    samples_per_epoch: int = 1536
    lr: float = 3e-3
    val_fraction: float = 0.25
    covid_share: float = 0.2
    val_samples: int = 400
    cell_min: float = 0.01
    positive_cell_weight: float = 3.0
    max_minutes: float = 11.0


@dataclass
class Backgrounds:
    """Square uint8 background images at the drawing size: clean Normal train/val, and unlabelled COVID."""

    normal_train: np.ndarray
    normal_val: np.ndarray
    covid: np.ndarray
    val_patients: list[str]


def _is_val(key: str, fraction: float) -> bool:
    """A stable pseudo-random split by patient (or file) id."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def load_backgrounds(data_dir: str | Path, cfg: MarkingsTrainConfig) -> Backgrounds:
    """Read the sample's unlabelled images squashed to ``cfg.draw_size``, split Normal by patient into train/val."""
    root = Path(data_dir)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise MarkingsDataError(f"no manifest.csv in {root}")
    labelled = set()
    if (root / LABELS_FILE).is_file():
        labelled = {row["file"] for row in csv.DictReader((root / LABELS_FILE).open(encoding="utf-8"))}
    rows = [r for r in csv.DictReader(manifest.open(encoding="utf-8")) if r["file"] not in labelled]
    rows = sorted(rows, key=lambda r: hashlib.sha256((str(cfg.seed) + r["file"]).encode()).hexdigest())
    if cfg.limit:
        rows = rows[: cfg.limit]
    groups: dict[str, list[np.ndarray]] = {"normal_train": [], "normal_val": [], "covid": []}
    val_patients = []
    for row in rows:
        try:
            gray = read_image(root / row["file"])
        except ImageReadError:
            continue
        square = cv2.resize(gray, (cfg.draw_size, cfg.draw_size), interpolation=cv2.INTER_AREA)
        if row["label"] != "Normal":
            groups["covid"].append(square)
        elif _is_val(row.get("patient_id") or row["file"], cfg.val_fraction):
            groups["normal_val"].append(square)
            val_patients.append(row.get("patient_id") or row["file"])
        else:
            groups["normal_train"].append(square)
    if not groups["normal_train"] or not groups["normal_val"]:
        raise MarkingsDataError(f"need unlabelled Normal images for both training and validation in {root}")
    empty = np.zeros((0, cfg.draw_size, cfg.draw_size), np.uint8)
    arrays = {k: np.stack(v) if v else empty for k, v in groups.items()}
    return Backgrounds(**arrays, val_patients=sorted(set(val_patients)))


def augment_background(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (70-100 %), flip and gamma of a square background, at the same size."""
    side = image.shape[0]
    crop = int(side * rng.uniform(0.7, 1.0))
    x, y = (int(v) for v in rng.integers(0, side - crop + 1, 2))
    out = cv2.resize(image[y : y + crop, x : x + crop], (side, side), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    table = (255 * (np.arange(256) / 255.0) ** rng.uniform(0.7, 1.4)).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(out), table)


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mild blur, noise or JPEG compression, as scanned and re-encoded figures have."""
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.2))
    if rng.random() < 0.3:
        noise = rng.standard_normal(image.shape, dtype=np.float32) * rng.uniform(1, 6)
        image = np.clip(image + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
        image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if ok else image
    return image


def cell_targets(marks: np.ndarray, grid: int, cfg: MarkingsTrainConfig, known_clean: bool) -> np.ndarray:
    """Per-cell (target, weight): 1 where overlays cover >= ``cell_min`` of a cell, 0 where none, ignored between.

    Cells under a corner letter are clean. When the background is not ``known_clean`` only marked cells count.
    """
    cover = cv2.resize((marks > 0).astype(np.float32), (grid, grid), interpolation=cv2.INTER_AREA)
    target = (cover >= cfg.cell_min).astype(np.float32)
    weight = np.where(target > 0, cfg.positive_cell_weight, 1.0).astype(np.float32)
    weight[(cover > 0) & (target == 0)] = 0.0
    if not known_clean:
        weight[target == 0] = 0.0
    return np.stack([target, weight], axis=-1)


def make_sample(
    background: np.ndarray,
    rng: np.random.Generator,
    positive: bool,
    cfg: MarkingsTrainConfig,
    known_clean: bool = True,
    painters: tuple[Painter, ...] | None = None,
    options: OverlayOptions = OverlayOptions(),
) -> tuple[np.ndarray, np.ndarray]:
    """One training pair: the net-sized image (uint8) and its per-cell (target, weight) grid."""
    image, marks = draw_overlays(augment_background(background, rng), rng, positive, options, painters)
    small = cv2.resize(degrade(image, rng), (cfg.size, cfg.size), interpolation=cv2.INTER_AREA)
    return small, cell_targets(marks, cfg.size // STRIDE, cfg, known_clean)


def make_batch(
    normal: np.ndarray, covid: np.ndarray, n: int, rng: np.random.Generator, cfg: MarkingsTrainConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples: half clean / half marked Normal backgrounds, with a ``covid_share`` of marked COVID ones."""
    images, targets = [], []
    for _ in range(n):
        if len(covid) and rng.random() < cfg.covid_share:
            img, tgt = make_sample(covid[rng.integers(len(covid))], rng, True, cfg, known_clean=False)
        else:
            img, tgt = make_sample(normal[rng.integers(len(normal))], rng, rng.random() < 0.5, cfg)
        images.append(img)
        targets.append(tgt)
    return np.stack(images).astype(np.float32)[..., None], np.stack(targets)


def weighted_cell_loss(y_true: Any, y_pred: Any) -> Any:
    """Binary cross-entropy per cell, weighted by the second target channel and normalised by the total weight."""
    import keras.ops as K

    target, weight = y_true[..., :1], y_true[..., 1:]
    p = K.clip(y_pred, 1e-6, 1 - 1e-6)
    bce = -(target * K.log(p) + (1 - target) * K.log(1 - p))
    return K.sum(bce * weight) / (K.sum(weight) + 1e-6)


def validation_set(bg: Backgrounds, cfg: MarkingsTrainConfig) -> dict[str, Any]:
    """A fixed synthetic validation set on held-out Normal patients: clean images and one overlay kind per image."""
    rng = np.random.default_rng(cfg.seed + 1)
    names = [p.__name__ for p in PAINTERS]
    kinds = sorted(set(names))
    images, labels, kind_of = [], [], []
    for i in range(cfg.val_samples):
        background = bg.normal_val[i % len(bg.normal_val)]
        positive = i % 2 == 1
        kind = kinds[(i // 2) % len(kinds)] if positive else "clean"
        painters = tuple(p for p in PAINTERS if p.__name__ == kind) or None
        image, marks = draw_overlays(augment_background(background, rng), rng, positive, OverlayOptions(), painters)
        images.append(degrade(image, rng))
        labels.append(int(positive and bool(marks.any())))
        kind_of.append(kind if labels[-1] else "clean")
    return {"images": images, "labels": np.array(labels), "kinds": kind_of}


def recall_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Share of positives scoring >= threshold."""
    return float((scores[labels == 1] >= threshold).mean())


def threshold_for_recall(scores: np.ndarray, labels: np.ndarray, recall: float) -> float:
    """The highest threshold keeping at least ``recall`` of the positives."""
    positives = np.sort(scores[labels == 1])
    return float(positives[int(math.floor((1 - recall) * len(positives)))])


def summarise_scores(
    scores: np.ndarray, labels: np.ndarray, kinds: list[str], thresholds: list[float]
) -> dict[str, Any]:
    """AUC, recall per kind and false-alarm rate at some thresholds, and the threshold for 90 / 95 % recall."""
    kinds_arr = np.array(kinds)
    return {
        "roc_auc": round(float(roc_auc_score(labels, scores)), 4),
        "threshold_recall_90": round(threshold_for_recall(scores, labels, 0.90), 4),
        "threshold_recall_95": round(threshold_for_recall(scores, labels, 0.95), 4),
        "at": {
            str(t): {
                "recall": round(recall_at(scores, labels, t), 4),
                "false_alarm_rate": round(float((scores[labels == 0] >= t).mean()), 4),
                "recall_by_kind": {
                    k: round(float((scores[kinds_arr == k] >= t).mean()), 4) for k in sorted(set(kinds)) if k != "clean"
                },
            }
            for t in thresholds
        },
    }


def train_markings_net(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: MarkingsTrainConfig = MarkingsTrainConfig(),
    log: Callable[[str], None] = print,
    backgrounds: Backgrounds | None = None,
) -> dict[str, Any]:
    """Train on synthetic overlays, validate on held-out patients, save ``model.keras`` + card; returns the card."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    bg = backgrounds or load_backgrounds(data_dir, cfg)
    log(f"backgrounds: {len(bg.normal_train)} Normal train, {len(bg.normal_val)} Normal val, {len(bg.covid)} COVID")
    model = build_net(cfg.size, cfg.width)
    steps = max(1, cfg.samples_per_epoch // cfg.batch) * cfg.epochs
    schedule = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=weighted_cell_loss)
    rng = np.random.default_rng(cfg.seed)
    x_val, y_val = make_batch(
        bg.normal_val, bg.covid[:0], max(cfg.batch, cfg.val_samples // 2), np.random.default_rng(cfg.seed + 2), cfg
    )
    started = time.time()
    progress = epoch_budget_callback(cfg.epochs, started + cfg.max_minutes * 60, log, "train-markings")
    epochs_run = 0
    for epoch in range(cfg.epochs):
        x, y = make_batch(bg.normal_train, bg.covid, cfg.samples_per_epoch, rng, cfg)
        model.fit(
            x,
            y,
            batch_size=cfg.batch,
            epochs=epoch + 1,
            initial_epoch=epoch,
            validation_data=(x_val, y_val),
            callbacks=[progress],
            verbose=0,
        )
        epochs_run += 1
        if model.stop_training:
            break
    seconds = time.time() - started
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_keras_atomically(model, out / MODEL_FILE)
    net = MarkingsNet(model)
    val = validation_set(bg, cfg)
    scores = np.array([c.max() for c in net.cells_batch(val["images"])])
    clean = np.array([c.max() for c in net.cells_batch(list(bg.normal_val))])
    card = {
        "name": "markings",
        "task": "overlaid annotations (arrows, circles, boxes, hand-drawn lines, captions) on chest X-rays",
        "architecture": "fully convolutional: strided conv, separable conv blocks, dilated context, sigmoid cell grid",
        "parameters": int(model.count_params()),
        "config": asdict(cfg),
        "data": str(Path(data_dir)),
        "backgrounds": {"normal_train": len(bg.normal_train), "normal_val": len(bg.normal_val), "covid": len(bg.covid)},
        "val_patients": bg.val_patients,
        "epochs_run": epochs_run,
        "train_seconds": round(seconds, 1),
        "synthetic_validation": summarise_scores(scores, val["labels"], val["kinds"], [0.3, 0.5, 0.7]),
        "clean_val_normal": {
            "n": len(clean),
            **{f"above_{t}": int((clean >= t).sum()) for t in (0.3, 0.5, 0.7)},
        },
    }
    write_card(out, card)
    return card


def write_card(out_dir: Path, card: dict[str, Any]) -> None:
    """Write ``card.json`` and a short human ``card.md``."""
    write_json_atomic(out_dir / CARD_FILE, card)
    val, clean = card["synthetic_validation"], card["clean_val_normal"]
    lines = [
        "# Learned markings detector (`models/markings/`)",
        "",
        f"{card['architecture']}; {card['parameters']:,} parameters; input {card['config']['size']} px (squashed, "
        f"no contrast stretch); output P(overlay) per {STRIDE}x{STRIDE}-px cell; image score = highest cell.",
        "",
        "## Data",
        "",
        "Synthetic only. Overlays (arrows, lone arrowheads, circles/ellipses, rectangles some open, hand-drawn "
        "polylines, captions with or without a filled box, large single letters) are drawn with OpenCV in white, black "
        "or grey onto unlabelled images of the sample, after random crop, flip and gamma; then mild blur, noise or JPEG. "
        "Small corner letters and technician's words (L, R, PA, AP, PORTABLE, SUPINE, ...) in the outer bands, some "
        "with a small orientation arrow, ECG electrodes with thin curving leads, large filled shapes and black or white "
        "padding bands are drawn on clean and marked images alike, as non-markings. "
        f"Backgrounds: {card['backgrounds']['normal_train']} Normal images (train patients) as clean and marked images, "
        f"{card['backgrounds']['covid']} unlabelled COVID images as marked images only (only cells under a drawn "
        "overlay count in the loss, because these images may carry real markings). Every file in `markings.csv` (the "
        "hand labels) is left out.",
        "",
        "## Training",
        "",
        f"`cxr train-markings`: {card['epochs_run']} epochs of {card['config']['samples_per_epoch']} fresh samples, "
        f"batch {card['config']['batch']}, Adam with cosine decay from {card['config']['lr']}, weighted per-cell "
        f"cross-entropy; {card['train_seconds'] / 60:.1f} min on 2 shared CPU cores.",
        "",
        f"## Synthetic validation ({card['config']['val_samples']} images drawn on the {card['backgrounds']['normal_val']} "
        "Normal images of held-out patients, half clean, half with one overlay kind)",
        "",
        f"ROC AUC {val['roc_auc']}; threshold for 90 % recall {val['threshold_recall_90']}, for 95 % recall "
        f"{val['threshold_recall_95']}.",
        "",
        "| threshold | recall | false alarms (clean) | recall by kind |",
        "|---|---|---|---|",
    ]
    for t, m in val["at"].items():
        kinds = ", ".join(f"{k} {v:.2f}" for k, v in m["recall_by_kind"].items())
        lines.append(f"| {t} | {m['recall']:.3f} | {m['false_alarm_rate']:.3f} | {kinds} |")
    lines += [
        "",
        f"Held-out Normal images as they are (n={clean['n']}, presumed clean): "
        + ", ".join(f"{v} score >= {k.split('_')[1]}" for k, v in clean.items() if k != "n")
        + ".",
        "",
        "## Limits",
        "",
        "Trained on drawn shapes only. On real images it can also fire on technician's labels (PORTABLE, SUPINE), "
        "large position letters, electrodes and crisp-edged shapes (see the held-out Normal counts above), so it "
        "does not raise the markings flags (the classical detector does); the repair mask uses it beside the "
        "classical detector, and `MarkingsOptions(combine=...)` opts in elsewhere. Real annotations in styles it "
        "never saw may be missed; thin strokes lose contrast at 256 px. Measured numbers on the hand labels: "
        "`bench/results/markings.md`. Not for clinical use.",
    ]
    write_text_atomic(out_dir / "card.md", "\n".join(lines) + "\n")
