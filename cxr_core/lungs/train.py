"""Train, evaluate and save the lung segmenter (a small separable-conv U-Net) on image/mask pairs."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from cxr_core.lungs.segmenter import CARD_FILE, MODEL_FILE, LungSegmenter, dice, iou
from cxr_core.util.keras_files import save_keras_atomically
from cxr_core.util.progress import TrainerBudget, epoch_budget_callback

SOURCE_NOTES = {
    "jsrt": "JSRT adult PA films with SCR masks: lung only, the mask follows the heart and diaphragm borders.",
    "v7labs-ieee8023": "ieee8023 COVID collection with V7 Labs masks: two large rounded fields that include most of the heart shadow.",
    "v7labs-kermany": "Kermany paediatric AP films with V7 Labs masks (V7 style, heart shadow mostly included).",
}


class LungDataError(ValueError):
    """The image/mask folder is missing or malformed."""


@dataclass(frozen=True)
class LungTrainConfig(TrainerBudget):
    """Options of a segmenter training run."""

    size: int = 128
    base_filters: int = 16
    depth: int = 4
    batch: int = 16
    lr: float = 2e-3
    patience: int = 6


@dataclass
class LungData:
    """Image/mask pairs in memory with their manifest rows (images and masks 2-D uint8 / bool)."""

    frame: pd.DataFrame
    images: list[np.ndarray]
    masks: list[np.ndarray]

    def subset(self, split: str) -> LungData:
        """The rows whose ``split_hint`` equals ``split``."""
        rows = np.flatnonzero(self.frame["split_hint"].to_numpy() == split)
        return LungData(
            self.frame.iloc[rows].reset_index(drop=True), [self.images[i] for i in rows], [self.masks[i] for i in rows]
        )


def load_pairs(data_dir: str | Path, limit: int | None = None, seed: int = 0) -> LungData:
    """Read ``manifest.csv``, ``images/`` and ``masks/`` of a lung-mask folder (optionally a seeded subset)."""
    root = Path(data_dir)
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        raise LungDataError(f"{manifest} not found: expected images/, masks/ and manifest.csv")
    frame = pd.read_csv(manifest, dtype=str).fillna("")
    missing = {"file", "source", "split_hint"} - set(frame.columns)
    if missing:
        raise LungDataError(f"{manifest} lacks columns {sorted(missing)}")
    if limit:
        frame = frame.sample(n=min(limit, len(frame)), random_state=seed).reset_index(drop=True)
    images, masks = [], []
    for name in frame["file"]:
        image = cv2.imread(str(root / "images" / name), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(root / "masks" / name), cv2.IMREAD_GRAYSCALE)
        if image is None or mask is None:
            raise LungDataError(f"cannot read image or mask {name} under {root}")
        images.append(image)
        masks.append(cv2.resize(mask, image.shape[::-1], interpolation=cv2.INTER_NEAREST) > 127)
    return LungData(frame, images, masks)


def build_unet(size: int = 128, base_filters: int = 16, depth: int = 4) -> Any:
    """A functional U-Net with separable convolutions and group normalisation; input raw 0-255 ``(size, size, 1)``, output P(lung)."""
    import keras
    from keras import layers

    if size % (2**depth):
        raise ValueError(f"size {size} must be divisible by 2**depth = {2**depth}")

    def block(x: Any, filters: int, name: str, first: bool = False) -> Any:
        """Two (separable) 3x3 conv + group-norm + ReLU layers (group norm: identical in training and inference)."""
        for i in (1, 2):
            conv = layers.Conv2D if first and i == 1 else layers.SeparableConv2D
            x = conv(filters, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
            x = layers.GroupNormalization(groups=8, name=f"{name}_gn{i}")(x)
            x = layers.ReLU(name=f"{name}_relu{i}")(x)
        return x

    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    skips = []
    for level in range(depth):
        x = block(x, base_filters * 2**level, f"down{level}", first=level == 0)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = block(x, base_filters * 2**depth, "bottleneck")
    for level in reversed(range(depth)):
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}")(x)
        x = layers.Concatenate(name=f"skip{level}")([x, skips[level]])
        x = block(x, base_filters * 2**level, f"dec{level}")
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="mask")(x)
    return keras.Model(inputs, outputs, name="lung_unet")


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random affine (rotation, scale, shift), gamma, contrast, blur and noise on a uint8 image and its bool mask."""
    size = image.shape[0]
    angle, scale = rng.uniform(-12, 12), rng.uniform(0.85, 1.15)
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    matrix[:, 2] += rng.uniform(-0.08, 0.08, 2) * size
    border = int(rng.choice([0, int(rng.integers(0, 256))]))
    image = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=border)
    mask = cv2.warpAffine(mask.astype(np.uint8), matrix, (size, size), flags=cv2.INTER_NEAREST) > 0
    values = (image.astype(np.float32) / 255.0) ** rng.uniform(0.6, 1.6)
    values = (values - 0.5) * rng.uniform(0.7, 1.3) + 0.5 + rng.uniform(-0.1, 0.1)
    if rng.random() < 0.3:
        values = cv2.GaussianBlur(values, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < 0.3:
        values = values + rng.normal(0, rng.uniform(0.01, 0.05), values.shape).astype(np.float32)
    return np.clip(values * 255.0, 0, 255).astype(np.uint8), mask


def _model_inputs(images: list[np.ndarray], size: int) -> np.ndarray:
    """Prepared model inputs (n, size, size) uint8 for a list of images."""
    from cxr_core.lungs.segmenter import prepare

    return np.stack([prepare(img, size) for img in images])


def _model_masks(masks: list[np.ndarray], size: int) -> np.ndarray:
    """Masks resized to the model size (n, size, size) bool."""
    return np.stack([cv2.resize(m.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST) > 0 for m in masks])


def _batches(inputs: np.ndarray, masks: np.ndarray, cfg: LungTrainConfig) -> Any:
    """A Keras PyDataset yielding augmented training batches."""
    import keras

    class Batches(keras.utils.PyDataset):
        """Shuffled, augmented batches; reshuffled every epoch."""

        def __init__(self) -> None:
            """Set up the random order."""
            super().__init__()
            self.rng = np.random.default_rng(cfg.seed)
            self.order = self.rng.permutation(len(inputs))

        def __len__(self) -> int:
            """Batches per epoch."""
            return math.ceil(len(inputs) / cfg.batch)

        def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
            """One augmented batch."""
            pairs = [
                augment(inputs[i], masks[i], self.rng) for i in self.order[index * cfg.batch : (index + 1) * cfg.batch]
            ]
            x = np.stack([p[0] for p in pairs]).astype(np.float32)[..., None]
            y = np.stack([p[1] for p in pairs]).astype(np.float32)[..., None]
            return x, y

        def on_epoch_end(self) -> None:
            """Reshuffle."""
            self.order = self.rng.permutation(len(inputs))

    return Batches()


def dice_bce_loss(y_true: Any, y_pred: Any) -> Any:
    """Binary cross-entropy plus (1 - soft Dice) per image."""
    from keras import ops

    bce = ops.mean(ops.binary_crossentropy(y_true, y_pred), axis=(1, 2))
    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    total = ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3))
    return bce + 1.0 - (2.0 * inter + 1.0) / (total + 1.0)


def dice_score(y_true: Any, y_pred: Any) -> Any:
    """Mean hard Dice at threshold 0.5 (a Keras metric)."""
    from keras import ops

    pred = ops.cast(y_pred >= 0.5, "float32")
    inter = ops.sum(y_true * pred, axis=(1, 2, 3))
    total = ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(pred, axis=(1, 2, 3))
    return (2.0 * inter + 1.0) / (total + 1.0)


def train_segmenter(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: LungTrainConfig = LungTrainConfig(),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train on the ``train`` hint split, early-stop on validation Dice, save ``model.keras`` + card; returns the card."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    data = load_pairs(data_dir, cfg.limit, cfg.seed)
    train, val = data.subset("train"), data.subset("val")
    if not len(train.images) or not len(val.images):
        raise LungDataError("need both train and val rows (split_hint) to train the segmenter")
    x_val = _model_inputs(val.images, cfg.size).astype(np.float32)[..., None]
    y_val = _model_masks(val.masks, cfg.size).astype(np.float32)[..., None]
    model = build_unet(cfg.size, cfg.base_filters, cfg.depth)
    log(
        f"lung U-Net: {model.count_params():,} parameters, {cfg.size} px, {len(train.images)} train / {len(val.images)} val"
    )
    steps = math.ceil(len(train.images) / cfg.batch) * cfg.epochs
    schedule = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=dice_bce_loss, metrics=[dice_score])
    started = time.time()
    callbacks = [
        keras.callbacks.EarlyStopping("val_dice_score", mode="max", patience=cfg.patience, restore_best_weights=True),
        epoch_budget_callback(
            cfg.epochs,
            started + cfg.max_minutes * 60,
            log,
            "train-lungs",
            ("loss", "dice_score", "val_loss", "val_dice_score"),
        ),
    ]
    history = model.fit(
        _batches(_model_inputs(train.images, cfg.size), _model_masks(train.masks, cfg.size), cfg),
        validation_data=(x_val, y_val),
        epochs=cfg.epochs,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.time() - started
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_keras_atomically(model, out / MODEL_FILE)
    metrics = evaluate_segmenter(LungSegmenter(model, cfg.size), val)
    card = {
        "name": "lungs",
        "task": "lung-field segmentation of frontal chest X-rays",
        "architecture": "U-Net, separable convolutions, group normalisation",
        "parameters": int(model.count_params()),
        "config": asdict(cfg),
        "data": str(Path(data_dir)),
        "train_images": len(train.images),
        "val_images": len(val.images),
        "epochs_run": len(history.history["loss"]),
        "best_epoch": int(np.argmax(history.history["val_dice_score"])) + 1,
        "train_seconds": round(seconds, 1),
        "validation": metrics,
        "mask_styles": SOURCE_NOTES,
        "postprocessing": "threshold 0.5, keep the two largest components, fill holes, resize back (linear, 0.5)",
    }
    write_card(out, card)
    return card


def evaluate_segmenter(segmenter: LungSegmenter, data: LungData) -> dict[str, Any]:
    """Dice and IoU of the post-processed masks against the truth at the truth's resolution, overall and per source."""
    results = segmenter.segment(data.images)
    rows = pd.DataFrame(
        {
            "source": data.frame["source"].to_numpy(),
            "dice": [dice(r.mask, m) for r, m in zip(results, data.masks)],
            "iou": [iou(r.mask, m) for r, m in zip(results, data.masks)],
            "flagged": [bool(r.flags) for r in results],
        }
    )

    def summary(part: pd.DataFrame) -> dict[str, Any]:
        """n, mean/median/min Dice, mean IoU and flagged count of some rows."""
        return {
            "n": int(len(part)),
            "dice_mean": round(float(part["dice"].mean()), 4),
            "dice_median": round(float(part["dice"].median()), 4),
            "dice_min": round(float(part["dice"].min()), 4),
            "iou_mean": round(float(part["iou"].mean()), 4),
            "flagged": int(part["flagged"].sum()),
        }

    return {"overall": summary(rows), "by_source": {s: summary(p) for s, p in rows.groupby("source")}}


def write_card(out_dir: Path, card: dict[str, Any]) -> None:
    """Write ``card.json`` and a human ``card.md`` for the segmenter."""
    (out_dir / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    val = card["validation"]
    lines = [
        "# Lung segmenter (`models/lungs/`)",
        "",
        f"{card['architecture']}, {card['parameters']:,} parameters, input {card['config']['size']} px "
        "(squashed, histogram-equalised). Output: P(lung) per pixel; post-processing: "
        f"{card['postprocessing']}.",
        "",
        f"Trained with `cxr train-lungs` on {card['train_images']} pairs (split_hint=train) of `{card['data']}`, "
        f"{card['epochs_run']} epochs (best {card['best_epoch']}), {card['train_seconds'] / 60:.1f} min on 2 CPU cores.",
        "",
        f"## Validation ({card['val_images']} pairs, split_hint=val, other patients), at 256 px",
        "",
        "| source | n | Dice mean | Dice median | Dice min | IoU mean | flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in [("all", val["overall"]), *val["by_source"].items()]:
        lines.append(
            f"| {name} | {m['n']} | {m['dice_mean']:.3f} | {m['dice_median']:.3f} | {m['dice_min']:.3f} | "
            f"{m['iou_mean']:.3f} | {m['flagged']} |"
        )
    lines += ["", "## Two mask styles", ""]
    lines += [f"- **{k}**: {v}" for k, v in card["mask_styles"].items()]
    lines += [
        "",
        "The model is trained on both styles and blends them: on JSRT-like adult films it tends to follow the "
        "heart border, on V7-style data it includes more of the heart shadow. Compare Dice per source, not across them.",
        "",
        "## Limits",
        "",
        "Frontal (PA/AP) films only: lateral views, CT reconstructions and heavily cropped figures give empty or "
        "implausible masks, which `cxr lungs` flags (`empty`, `area_low`, `area_high`, `one_lung`, `uncertain`) "
        "instead of hiding. Not for clinical use.",
    ]
    (out_dir / "card.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
