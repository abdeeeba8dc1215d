"""Hyperparameter search for ``cxr_net`` with KerasTuner Hyperband on the validation split (resumable).

Searched: learning rate, width, depth, dropout, image size and normalisation method. Everything else about a trial
is a fixed recipe of training options (:data:`RECIPE_GROUPS` of :class:`~cxr_core.train.config.TrainConfig`: region
of interest, sampling, augmentation and the source-robustness recipes), the same options ``cxr train`` takes. Each
(size, method) pair's arrays are read once through the training pipeline's cache. The search state lives in
``<directory>/<project>/`` (KerasTuner's oracle files), so running the same command again continues where it
stopped; ``results.csv`` / ``results.json`` there list every completed trial, best first.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cxr_core.config import Config
from cxr_core.train import rundir
from cxr_core.train.config import OptionSpec, config_from_options, train_options
from cxr_core.train.pipeline import class_sources, make_dataset, select_images
from cxr_core.train.trainer import (
    TrainConfig,
    TrainingData,
    TrainingError,
    precise_batchnorm,
    prepare_data,
    recipe_class_weights,
    training_dataset,
)

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
RECIPE_GROUPS = ("preprocessing", "sampling", "augmentation", "robustness")
"""The TrainConfig option groups a search keeps fixed (less what it searches or sets itself)."""
NOT_IN_RECIPE = frozenset({"method", "method_params", "limit", "seed", "data"})


def recipe_options() -> list[OptionSpec]:
    """The training options a search takes as its fixed recipe (``cxr tune`` offers each as a flag)."""
    return [s for s in train_options() if s.option.group in RECIPE_GROUPS and s.name not in NOT_IN_RECIPE]


@dataclass
class TuneConfig:
    """What to search and with which budget."""

    max_epochs: int = 12
    factor: int = 3
    hyperband_iterations: int = 1
    sizes: tuple[int, ...] = (128, 160, 224)
    methods: tuple[str, ...] = ("none", "clahe", "gamma")
    lrs: tuple[float, ...] = (5e-4, 1e-3, 2e-3, 4e-3)
    widths: tuple[int, ...] = (16, 24, 32, 48)
    depths: tuple[int, ...] = (3, 4, 5)
    dropouts: tuple[float, ...] = (0.1, 0.3, 0.5)
    batch: int = 32
    limit: int | None = None
    seed: int | None = None
    data_dir: str | None = None
    directory: str | None = None
    project: str = "cxr_net"
    recipe: dict[str, Any] = field(default_factory=dict)
    """Flat training options (names of :func:`recipe_options`) every trial uses, e.g. ``{"appearance": True}``."""

    def base(self) -> TrainConfig:
        """The TrainConfig of the fixed recipe (unknown or searched options refused in one line)."""
        allowed = {s.name for s in recipe_options()}
        unknown = sorted(set(self.recipe) - allowed)
        if unknown:
            raise TrainingError(f"{unknown} cannot be part of a search's recipe; it takes {sorted(allowed)}")
        return config_from_options(self.recipe)

    def validate(self) -> TuneConfig:
        """Check the budget and search space (one-line :class:`TrainingError`)."""
        if self.max_epochs < 1 or self.factor < 2 or self.hyperband_iterations < 1:
            raise TrainingError("need max_epochs >= 1, factor >= 2 and hyperband_iterations >= 1")
        for name in ("sizes", "methods", "lrs", "widths", "depths", "dropouts"):
            if not getattr(self, name):
                raise TrainingError(f"the search space for {name} is empty")
        base = self.base()
        for size in self.sizes:
            for method in self.methods:
                TrainConfig.from_dict({**base.to_dict(), "size": size, "method": method}).validate()
        return self


def tuning_dir(cfg: Config, tune: TuneConfig) -> Path:
    """Folder holding the search state and results of ``tune.project``."""
    return Path(tune.directory or cfg.home / "tuning") / tune.project


def _build_tuner(cfg: Config, tune: TuneConfig, frame: pd.DataFrame, on_trial: Callable[[str], None] | None) -> Any:
    """A Hyperband tuner whose trials load the data matching their (size, method) and train ``cxr_net``."""
    import keras
    import keras_tuner as kt

    from cxr_core.train.architectures import CLASSES, build_model
    from cxr_core.train.robust import RobustModel

    seed = cfg.seed if tune.seed is None else tune.seed
    base = tune.base()
    n_sources = tuple(len(names) for names in class_sources(frame))
    cache: dict[tuple[int, str], tuple[TrainingData, TrainConfig]] = {}

    def declare(hp: Any) -> dict[str, Any]:
        """Declare (or read) every hyperparameter of a trial."""
        return {
            "size": hp.Choice("size", list(tune.sizes)),
            "method": hp.Choice("method", list(tune.methods)),
            "lr": hp.Choice("lr", list(tune.lrs)),
            "width": hp.Choice("width", list(tune.widths)),
            "depth": hp.Choice("depth", list(tune.depths)),
            "dropout": hp.Choice("dropout", list(tune.dropouts)),
        }

    def build(hp: Any) -> Any:
        """The compiled model of a trial."""
        values = declare(hp)
        model = build_model(
            "cxr_net", values["size"], width=values["width"], depth=values["depth"], dropout=values["dropout"]
        )
        if base.robust_objective:
            model = RobustModel(model, n_sources, adversary=base.adversary, gradient_penalty=base.gradient_penalty)
        model.compile(
            optimizer=keras.optimizers.Adam(values["lr"]),
            loss="categorical_crossentropy",
            metrics=["accuracy", keras.metrics.AUC(name="auc", multi_label=True, num_labels=len(CLASSES))],
        )
        return model

    class CxrHyperband(kt.Hyperband):
        """Hyperband whose trials feed the tf.data pipeline of their own image size and normalisation."""

        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
            values = declare(trial.hyperparameters)
            key = (int(values["size"]), str(values["method"]))
            if key not in cache:
                recipe = {**base.to_dict(), "size": key[0], "method": key[1], "data_dir": tune.data_dir}
                tc = TrainConfig.from_dict({**recipe, "seed": seed, "batch": tune.batch})
                cache[key] = prepare_data(cfg, tc, frame), tc
            data, tc = cache[key]
            if on_trial:
                on_trial(f"trial {trial.trial_id}: {values}")
            train = training_dataset(data, tc)
            val = make_dataset(data.x_val, data.y_val, batch=tune.batch, training=False, seed=seed)
            kwargs["callbacks"] = [*kwargs.get("callbacks", []), precise_batchnorm(data.x_train, tune.batch)]
            weights = recipe_class_weights(data, tc)
            return super().run_trial(trial, train, validation_data=val, class_weight=weights, verbose=0, **kwargs)

        def _configure_tensorboard_dir(self, callbacks: Any, trial: Any, execution: int = 0) -> None:
            """KerasTuner imports tensorboard here unconditionally; skip it when tensorboard is not installed."""
            if importlib.util.find_spec("tensorboard") is not None:
                super()._configure_tensorboard_dir(callbacks, trial, execution)

    return CxrHyperband(
        build,
        objective=kt.Objective("val_auc", direction="max"),
        max_epochs=tune.max_epochs,
        factor=tune.factor,
        hyperband_iterations=tune.hyperband_iterations,
        seed=seed,
        directory=str(tuning_dir(cfg, tune).parent),
        project_name=tune.project,
        overwrite=False,
    )


def results_table(tuner: Any) -> pd.DataFrame:
    """Every completed trial, best first: trial id, validation AUC, hyperparameters and Hyperband epochs."""
    rows = []
    for trial in tuner.oracle.get_best_trials(num_trials=10_000):
        if trial.score is None:
            continue
        values = dict(trial.hyperparameters.values)
        rows.append(
            {
                "trial": trial.trial_id,
                "val_auc": float(trial.score),
                **{k: values.get(k) for k in ("size", "method", "lr", "width", "depth", "dropout")},
                "epochs": values.get("tuner/epochs"),
            }
        )
    return pd.DataFrame(
        rows, columns=["trial", "val_auc", "size", "method", "lr", "width", "depth", "dropout", "epochs"]
    )


def tune(cfg: Config, tune: TuneConfig, on_trial: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Run (or continue) the Hyperband search and save the results table as CSV and JSON; returns it."""
    from cxr_core.curation.curated import curated_index

    tune.validate()
    seed = cfg.seed if tune.seed is None else tune.seed
    data_dir = Path(tune.data_dir or cfg.data_dir)
    if not data_dir.is_dir():
        raise TrainingError(f"no dataset at {data_dir}: run `cxr fetch` or pass --data DIR")
    frame = select_images(curated_index(cfg, data_dir), tune.limit, seed)
    tuner = _build_tuner(cfg, tune, frame, on_trial)
    tuner.search()
    table = results_table(tuner)
    folder = tuning_dir(cfg, tune)
    rundir.write_csv_atomic(folder / RESULTS_CSV, table.to_dict("records"), list(table.columns))
    rundir.write_json_safe(
        folder / RESULTS_JSON,
        {
            "search_space": {
                k: list(getattr(tune, k)) for k in ("sizes", "methods", "lrs", "widths", "depths", "dropouts")
            },
            "max_epochs": tune.max_epochs,
            "recipe": tune.base().to_dict(),
            "trials": table.to_dict("records"),
        },
    )
    return table
