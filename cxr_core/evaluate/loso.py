"""Leave-one-source-out: how well the model's *recipe* does on a source it never saw.

For every source with enough images, a small model of the same architecture and normalisation is trained with
:func:`cxr_core.train.trainer.train` on the train/val images of all *other* sources (patients that also appear in the
held-out source are removed from training, since the sample links patients across sources), calibrated on that
validation split, and tested on every image of the held-out source. Retraining is the only honest way: the
shipped model has seen every source. To keep it affordable on a CPU the models are trained at a small image size
(96 px by default) for a few epochs, so the figures estimate the recipe, not the exact shipped weights.
Finished runs are kept under ``cfg.home/loso/<dataset>-<recipe digest>/<source>/`` and reused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score

from cxr_core.config import Config
from cxr_core.data.index import DatasetIndex
from cxr_core.evaluate.calibration import apply_temperature
from cxr_core.evaluate.card import slug
from cxr_core.evaluate.metrics import rank_metrics, subgroup_table
from cxr_core.serve.registry import LoadedModel, load_model

Log = Callable[[str], None]


@dataclass(frozen=True)
class LosoOptions:
    """The recipe retrained per held-out source and the budget of each retraining."""

    arch: str = "cxr_net"
    method: str = "clahe"
    method_params: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    lr: float | None = None
    augmentation: dict[str, Any] | None = None
    size: int = 96
    epochs: int = 12
    patience: int = 4
    batch: int = 32
    min_images: int = 20
    seed: int = 1337
    recipe: dict[str, Any] = field(default_factory=dict)
    """Further training options (flat names of :func:`cxr_core.train.tuning.recipe_options`), e.g. robust recipes."""

    @classmethod
    def for_model(cls, model: LoadedModel, size: int | None = None, epochs: int | None = None) -> LosoOptions:
        """The recipe of a registry model: architecture, hyperparameters, learning rate and augmentation from its
        card, normalisation from its preprocess.json."""
        from cxr_core.train.architectures import ARCHITECTURES

        arch = str(model.card.get("architecture") or "cxr_net")
        known = arch in ARCHITECTURES
        training = model.card.get("training") or {}
        options = cls(
            arch=arch if known else "cxr_net",
            method=model.preprocess.method,
            method_params=model.preprocess.param_dict,
            hparams=dict(training.get("hparams") or {}) if known else {},
            lr=training.get("learning_rate") if known else None,
            augmentation=training.get("augmentation") or None,
        )
        options = replace(options, recipe=model_recipe(model) if known else {})
        return replace(options, **{k: v for k, v in {"size": size, "epochs": epochs}.items() if v is not None})

    def digest(self) -> str:
        """A short hash of the options (names the folder of reusable runs)."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def model_recipe(model: LoadedModel) -> dict[str, Any]:
    """The recipe options (sampling, augmentation, robustness, roi) in which a model's ``train_config.json`` differs
    from the defaults; {} without that file."""
    from cxr_core.train.config import TRAIN_CONFIG_FILE, TrainConfig, read_train_config
    from cxr_core.train.tuning import recipe_options

    path = model.path / TRAIN_CONFIG_FILE
    if not path.is_file():
        return {}
    values, defaults = read_train_config(path).to_dict(), TrainConfig().to_dict()
    return {s.name: s.value_in(values) for s in recipe_options() if s.value_in(values) != s.value_in(defaults)}


def loso_frame(usable: pd.DataFrame, source: str) -> pd.DataFrame:
    """Training frame for one held-out source: other sources' train/val rows (minus shared patients) + the
    held-out source's rows as ``test``."""
    from cxr_core.train.pipeline import SPLIT_COLUMNS

    held = usable[usable["source"] == source].assign(split="test")
    patients = set(held["patient_id"].astype(str)) - {""}
    rest = usable[(usable["source"] != source) & ~usable["patient_id"].astype(str).isin(patients)]
    rest = rest[rest["split"].isin(("train", "val"))]
    return pd.concat([rest, held]).loc[:, list(SPLIT_COLUMNS)].sort_values(["split", "path"]).reset_index(drop=True)


def _train_one(cfg: Config, index: DatasetIndex, frame: pd.DataFrame, options: LosoOptions, run: Any, log: Log) -> None:
    """Train (or reuse) the held-out-source model in ``run``."""
    from cxr_core.train import rundir
    from cxr_core.train.config import config_from_options
    from cxr_core.train.trainer import TrainConfig, train

    if (run / rundir.MODEL_DIR / "model.keras").is_file() and rundir.read_status(run).get("status") == "done":
        log(f"reusing {run}")
        return
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    rundir.write_csv_atomic(run / rundir.SPLIT_FILE, frame.to_dict("records"), list(frame.columns))
    base = TrainConfig(
        arch=options.arch,
        epochs=options.epochs,
        size=options.size,
        method=options.method,
        method_params=dict(options.method_params),
        batch=options.batch,
        seed=options.seed,
        patience=options.patience,
        lr_patience=max(1, options.patience // 2),
        lr=options.lr,
        hparams=dict(options.hparams),
        data_dir=str(index.data_dir),
    )
    if options.augmentation is not None:
        base.augmentation = dict(options.augmentation)
    train(cfg, config_from_options(options.recipe, base).validate(), run_dir=run)


def usable_rows(index: DatasetIndex) -> pd.DataFrame:
    """The index's labelled images of both classes that are in a split."""
    from cxr_core.train.architectures import CLASSES

    usable = index.images()
    return usable[usable["label"].isin(CLASSES) & usable["split"].isin(("train", "val", "test"))]


def all_sources_model(cfg: Config, index: DatasetIndex, options: LosoOptions, log: Log | None = None) -> LoadedModel:
    """The recipe trained on every source's train/val images (the index's own split), for in-distribution figures."""
    from cxr_core.train.pipeline import SPLIT_COLUMNS

    frame = usable_rows(index).loc[:, list(SPLIT_COLUMNS)].sort_values(["split", "path"]).reset_index(drop=True)
    run = runs_root(cfg, index, options) / "all-sources"
    _train_one(cfg, index, frame, options, run, log or (lambda text: print(f"loso: {text}", file=sys.stderr)))
    return load_model(run / "model")


def runs_root(cfg: Config, index: DatasetIndex, options: LosoOptions) -> Any:
    """The folder of one recipe's reusable runs on one dataset."""
    return cfg.home / "loso" / f"{slug(index.data_dir.name)}-{options.digest()}"


def calibrated_p(model: LoadedModel, index: DatasetIndex, rows: pd.DataFrame, cfg: Config) -> np.ndarray:
    """The model's temperature-calibrated P(positive class) of each image in ``rows``."""
    from cxr_core.evaluate.evaluate import raw_predictions

    raw = raw_predictions(model, index, rows, cfg)
    return apply_temperature(raw, model.temperature)[:, model.positive_index]


def _held_out_metrics(
    model: LoadedModel, index: DatasetIndex, held: pd.DataFrame, cfg: Config
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Metrics of a held-out-source model on that source, with its labels and calibrated scores."""
    p = calibrated_p(model, index, held, cfg)
    y = (held["label"] == model.positive).to_numpy(int)
    row = subgroup_table(y, p, np.array(["all"] * len(y)), model.threshold)["all"]
    row["n_covid"], row["n_normal"] = row.pop("n_positive"), row.pop("n_negative")
    row.update(
        {
            "threshold": model.threshold,
            "temperature": model.temperature,
            "model_version": model.version,
            "mean_p_covid": float(p.mean()),
        }
    )
    return row, y, p


def leave_one_source_out(
    cfg: Config,
    index: DatasetIndex,
    options: LosoOptions = LosoOptions(),
    *,
    model_dir: Any = None,
    log: Log | None = None,
    only: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Train one model per held-out source (``only`` these, when given) and report each source's metrics plus the
    pooled figures."""
    from cxr_core.train.architectures import CLASSES

    say = log or (lambda text: print(f"loso: {text}", file=sys.stderr))
    usable = usable_rows(index)
    counts = usable["source"].value_counts()
    if only is not None:
        counts = counts[counts.index.isin(only)]
    root = runs_root(cfg, index, options)
    sources: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    pooled_y, pooled_p, pooled_pred = [], [], []
    for source in sorted(counts.index):
        if counts[source] < options.min_images:
            skipped[source] = f"only {counts[source]} images (< {options.min_images})"
            continue
        frame = loso_frame(usable, source)
        rest = frame[frame["split"] != "test"]
        missing = [
            f"{s}/{c}"
            for s in ("train", "val")
            for c in CLASSES
            if not ((rest["split"] == s) & (rest["label"] == c)).any()
        ]
        if missing:
            skipped[source] = f"without it no images for {', '.join(missing)}"
            continue
        say(
            f"{source}: training on {int((rest['split'] == 'train').sum())} images of other sources "
            f"({len(sources) + len(skipped) + 1}/{len(counts)})"
        )
        run = root / slug(source)
        _train_one(cfg, index, frame, options, run, say)
        model = load_model(run / "model")
        held = frame[frame["split"] == "test"].reset_index(drop=True)
        sources[source], y, p = _held_out_metrics(model, index, held, cfg)
        pooled_y.append(y)
        pooled_p.append(p)
        pooled_pred.append((p >= model.threshold).astype(int))
    pooled: dict[str, Any] = {}
    if pooled_y:
        y, p = np.concatenate(pooled_y), np.concatenate(pooled_p)
        pooled = {
            "n": int(len(y)),
            "accuracy": float(accuracy_score(y, np.concatenate(pooled_pred))),
            "roc_auc": rank_metrics(y, p)["roc_auc"],
        }
    result = {
        "method": (
            f"Retrained {options.arch} ({options.method}, {options.size} px, up to {options.epochs} epochs"
            f"{', recipe ' + json.dumps(options.recipe, sort_keys=True) if options.recipe else ''}) once "
            "per held-out source on the other sources' train/val images; tested on every image of the held-out "
            "source at that model's own validation-chosen threshold. Pooled AUC mixes scores of different models."
        ),
        "options": asdict(options),
        "runs_dir": str(root),
        "sources": sources,
        "skipped": skipped,
        "pooled": pooled,
    }
    if model_dir is not None:
        from cxr_core.util.atomic import write_json_atomic

        write_json_atomic(model_dir / "loso.json", result)
    return result
