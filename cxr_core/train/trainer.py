"""Train a classifier into a run directory: checkpoints every epoch, live status, cancel, resume, calibrated export.

``train(cfg, TrainConfig(...))`` creates ``cfg.runs_dir/<run_id>/`` (see :mod:`cxr_core.train.rundir`), fits the model
with Adam, early stopping on the validation AUC (best weights restored from ``checkpoints/best.keras``) and
ReduceLROnPlateau, then writes ``model/`` with the temperature and threshold fitted on the validation split.
``resume(cfg, run_dir)`` continues a killed, failed or cancelled run from ``checkpoints/latest.keras`` on the
same split (``split.csv``) with a continuous ``metrics.csv``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxr_core import __version__
from cxr_core.config import Config
from cxr_core.preprocess.recipe import PreprocessConfig
from cxr_core.train import rundir
from cxr_core.train.appearance import Appearance
from cxr_core.train.architectures import CLASSES, build_model, set_batchnorm_statistics
from cxr_core.train.config import MONITORS, TRAIN_CONFIG_FILE, TrainConfig, TrainingError, check_cluster
from cxr_core.train.pipeline import (
    Augmentation,
    class_sources,
    class_weights,
    labels_of,
    load_allowed,
    load_arrays,
    make_dataset,
    paper_iterator,
    select_images,
    source_codes,
)
from cxr_core.util.atomic import read_json_object
from cxr_core.util.keras_files import save_keras_atomically
from cxr_core.util.progress import StageProgress as Progress

HEARTBEAT_SECONDS = 2.0
METRICS_FILE_COLUMNS = rundir.METRICS_COLUMNS + ("train_seconds",)


class TrainingCancelled(Exception):
    """Raised inside training when ``cancel.request`` appears in the run directory."""


@dataclass
class TrainingData:
    """Preprocessed arrays of the training and validation images with their labels and the split rows."""

    frame: pd.DataFrame
    preprocess: PreprocessConfig
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    allowed_train: np.ndarray | None = None

    @property
    def train_sources(self) -> np.ndarray:
        """The source of every training image, in order."""
        return self.frame.loc[self.frame["split"] == "train", "source"].astype(str).to_numpy()


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    status: str
    epochs_run: int = 0
    best_epoch: int = 0
    best_val_auc: float | None = None
    seconds: float = 0.0
    seconds_to_best: float = 0.0
    images_per_second: float = 0.0
    model_dir: Path | None = None
    calibration: dict[str, Any] = field(default_factory=dict)


def _notify(progress: Progress | None, stage: str, done: int, total: int, **info: Any) -> None:
    """Call the progress callback when there is one."""
    if progress is not None:
        progress(stage, done, total, info)


def prepare_data(
    cfg: Config, tc: TrainConfig, frame: pd.DataFrame | None = None, progress: Progress | None = None
) -> TrainingData:
    """Select the split (unless ``frame`` is given), then read, preprocess and cache the train and val images."""
    from cxr_core.curation.curated import curated_index

    seed = cfg.seed if tc.seed is None else tc.seed
    data_dir = Path(tc.data_dir or cfg.data_dir)
    if frame is None:
        if not data_dir.is_dir():
            raise TrainingError(f"no dataset at {data_dir}: run `cxr fetch` or pass --data DIR")
        frame = select_images(curated_index(cfg, data_dir), tc.limit, seed)
    pp = tc.preprocess()
    arrays = {}
    total = int(frame["split"].isin(("train", "val")).sum())
    done = 0
    for split in ("train", "val"):
        rows = frame[frame["split"] == split]
        offset = done

        def report(i: int, _: int, offset: int = offset) -> None:
            _notify(progress, "load", offset + i, total)

        arrays[split] = (
            load_arrays(rows, data_dir, pp, cfg=cfg, workers=cfg.workers, progress=report),
            labels_of(rows),
        )
        done += len(rows)
    allowed = None
    if tc.gradient_penalty:

        def lungs(i: int, n: int) -> None:
            _notify(progress, "lungs", i, n)

        train = frame[frame["split"] == "train"]
        allowed = load_allowed(train, data_dir, pp, workers=cfg.workers, progress=lungs)
    return TrainingData(frame, pp, *arrays["train"], *arrays["val"], allowed_train=allowed)


def fit_across_workers(model: Any) -> None:
    """Let ``model.fit`` train under a MultiWorkerMirroredStrategy of several workers (keras-team/keras#20585).

    Keras 3.15 fails there twice: it all-reduces the first input batch (a tuple) to build the model symbolically,
    and it reduces each step's scalar metrics with ``strategy.reduce(MEAN, axis=0)``. The model is already built,
    so it forgets its strategy (``fit`` then takes it from the enclosing ``strategy.scope()``), and its train and
    test steps return their metrics as one-element vectors, whose mean over all replicas is the scalar Keras logs:
    every worker sees the same logs, so early stopping and checkpoints agree.
    """
    import tensorflow as tf

    def vector_metrics(step: Callable[[Any], Mapping[str, Any]]) -> Callable[[Any], dict[str, Any]]:
        """``step`` with every metric reshaped to a one-element vector."""
        return lambda data: {name: tf.reshape(value, [1]) for name, value in step(data).items()}

    model._distribute_strategy = None  # noqa: SLF001 - Keras 3.15 has no public way to detach fit from the strategy
    model.train_step = vector_metrics(model.train_step)
    model.test_step = vector_metrics(model.test_step)


def choose_strategy(name: str = "auto") -> Any:
    """``MirroredStrategy`` over all GPUs when several are visible (``auto``), else the default strategy.

    ``mirrored`` forces MirroredStrategy (over the CPUs when there is no GPU); ``multi_worker`` uses
    ``MultiWorkerMirroredStrategy`` configured by the ``TF_CONFIG`` environment variable (see :func:`check_cluster`),
    which TensorFlow only accepts before the process has run any TensorFlow operation.
    """
    import tensorflow as tf

    if name == "multi_worker":
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as exc:
            raise TrainingError(
                f"--strategy multi_worker must be set up before TensorFlow runs anything: {exc}"
            ) from exc
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy(gpus or [d.name for d in tf.config.list_logical_devices("CPU")])
    return tf.distribute.get_strategy()


def _callback_classes() -> tuple[type, type, type, type]:
    """Build the Keras callback classes lazily (importing keras is slow)."""
    import keras

    def resumable(base: type, counters: tuple[str, ...]) -> type:
        """``base`` (a Keras callback) whose ``counters`` can be saved and restored after ``on_train_begin`` resets them."""

        class Resumable(base):  # type: ignore[misc, valid-type]
            """A Keras callback that resumes its counters from the latest checkpoint."""

            def __init__(self, state: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
                """Keep the saved counters ``state`` to restore when training begins."""
                super().__init__(**kwargs)
                self.initial_state = dict(state or {})

            def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
                """Reset as Keras does, then restore the saved counters."""
                super().on_train_begin(logs)
                for key in counters:
                    if self.initial_state.get(key) is not None:
                        setattr(self, key, self.initial_state[key])

            def state(self) -> dict[str, Any]:
                """Counters to save with the latest checkpoint."""
                return {key: _float(self.best) if key == "best" else getattr(self, key) for key in counters}

        Resumable.__name__ = Resumable.__qualname__ = f"Resumable{base.__name__}"
        return Resumable

    ResumableEarlyStopping = resumable(keras.callbacks.EarlyStopping, ("wait", "best", "best_epoch"))
    ResumableReduceLR = resumable(keras.callbacks.ReduceLROnPlateau, ("wait", "best", "cooldown_counter"))

    class RunMonitor(keras.callbacks.Callback):
        """Writes status heartbeat, metrics.csv, batches.csv, checkpoints and train.log; honours cancel.request."""

        def __init__(
            self,
            run_dir: Path,
            tc: TrainConfig,
            n_train: int,
            steps: int,
            start_epoch: int,
            stoppers: list[Any],
            export_twin: Any,
            log: logging.Logger,
            progress: Progress | None,
        ) -> None:
            """Remember the run and reload the rows and best score of earlier epochs (when resuming)."""
            super().__init__()
            self.run_dir, self.tc, self.n_train, self.steps = run_dir, tc, n_train, steps
            self.stoppers, self.export_twin, self.log, self.progress = stoppers, export_twin, log, progress
            latest = read_json_object(run_dir / rundir.CHECKPOINTS / "latest.json")
            self.metrics: list[Mapping[str, Any]] = [
                r for r in rundir.read_csv_rows(run_dir / rundir.METRICS_FILE) if int(float(r["epoch"])) <= start_epoch
            ]
            if start_epoch and len(self.metrics) < start_epoch and latest.get("metrics_row"):
                self.metrics.append(latest["metrics_row"])
            self.batches = [
                r for r in rundir.read_csv_rows(run_dir / rundir.BATCHES_FILE) if int(float(r["epoch"])) <= start_epoch
            ]
            self.best_val_auc = latest.get("best_val_auc")
            self.best_epoch = int(latest.get("best_epoch") or 0)
            self.best_score = latest.get("best_score")
            self.last_beat = 0.0
            self.pending_best = False
            self.pending_row: dict[str, Any] = {}
            self.epoch = start_epoch + 1
            self.epoch_start = self.train_end = time.monotonic()

        def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            """Start the epoch clock and record the learning rate used in this epoch."""
            self.epoch_start = time.monotonic()
            self.epoch = epoch + 1
            self.epoch_lr = _float(self.model.optimizer.learning_rate)
            rundir.update_status(self.run_dir, epoch=epoch + 1, batch=0)

        def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
            """Log every N batches, beat the heartbeat, report progress and honour a cancel request."""
            logs = logs or {}
            self.train_end = time.monotonic()
            epoch = self.epoch
            if (batch + 1) % self.tc.batch_log_every == 0 or batch + 1 == self.steps:
                self.batches.append(
                    {
                        "epoch": epoch,
                        "batch": batch + 1,
                        "step": (epoch - 1) * self.steps + batch + 1,
                        "loss": _float(logs.get("loss")),
                        "accuracy": _float(logs.get("accuracy")),
                    }
                )
                rundir.write_csv_atomic(self.run_dir / rundir.BATCHES_FILE, self.batches, rundir.BATCHES_COLUMNS)
            now = time.monotonic()
            if now - self.last_beat >= HEARTBEAT_SECONDS:
                self.last_beat = now
                rundir.update_status(self.run_dir, batch=batch + 1)
            _notify(self.progress, "batch", batch + 1, self.steps, epoch=epoch, loss=_float(logs.get("loss")))
            if rundir.cancel_requested(self.run_dir):
                raise TrainingCancelled(f"cancel requested during epoch {epoch}, batch {batch + 1}")

        def on_test_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
            """Keep the heartbeat going during validation."""
            now = time.monotonic()
            if now - self.last_beat >= HEARTBEAT_SECONDS:
                self.last_beat = now
                rundir.update_status(self.run_dir)

        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            """Judge the epoch and save ``latest.keras``; :meth:`commit` records it once ``best.keras`` is written."""
            logs = dict(logs or {})
            seconds = time.monotonic() - self.epoch_start
            train_seconds = max(1e-9, self.train_end - self.epoch_start)
            row = {
                "epoch": epoch + 1,
                **{k: _float(logs.get(k)) for k in rundir.METRICS_COLUMNS[1:-2]},
                "lr": self.epoch_lr,
                "seconds": round(seconds, 3),
                "train_seconds": round(train_seconds, 3),
            }
            score = _float(logs.get(self.tc.monitor))
            better = score is not None and (
                self.best_score is None
                or (score > self.best_score if MONITORS[self.tc.monitor] == "max" else score < self.best_score)
            )
            self.pending_best = better
            if better:
                self.best_score, self.best_epoch, self.best_val_auc = score, epoch + 1, _float(logs.get("val_auc"))
            save_keras_atomically(self.model, self.run_dir / rundir.CHECKPOINTS / "latest.keras")
            self.pending_row = row

        def commit(self) -> None:
            """Record the epoch (latest.json, metrics.csv, status, log) only after best.keras is saved: a kill never splits them."""
            row, better = self.pending_row, self.pending_best
            epoch = int(row["epoch"])
            rundir.write_json_safe(
                self.run_dir / rundir.CHECKPOINTS / "latest.json",
                {
                    "epoch": epoch,
                    "lr": _float(self.model.optimizer.learning_rate),
                    "best_epoch": self.best_epoch,
                    "best_val_auc": self.best_val_auc,
                    "best_score": self.best_score,
                    "metrics_row": row,
                    "early_stopping": self.stoppers[0].state(),
                    "reduce_lr": self.stoppers[1].state(),
                    "saved": rundir.utc_now(),
                },
            )
            self.metrics.append(row)
            rundir.write_csv_atomic(self.run_dir / rundir.METRICS_FILE, self.metrics, METRICS_FILE_COLUMNS)
            ips = self.n_train / row["train_seconds"]
            rundir.update_status(
                self.run_dir,
                epoch=epoch,
                best_val_auc=self.best_val_auc,
                best_epoch=self.best_epoch,
                images_per_second=round(ips, 2),
            )
            self.log.info(
                "epoch %d/%d: %s (%.1f s, %.1f img/s)%s",
                epoch,
                self.tc.epochs,
                ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k not in ("epoch", "seconds", "train_seconds")),
                row["seconds"],
                ips,
                " best" if better else "",
            )
            _notify(self.progress, "epoch", epoch, self.tc.epochs, **row, best=better)

    class BestSaver(keras.callbacks.Callback):
        """Saves ``checkpoints/best.keras`` (no optimizer) when the RunMonitor found a better epoch; placed after
        ``SwapEMAWeights`` so that the saved weights are the averaged ones the validation metrics were computed with."""

        def __init__(self, monitor: RunMonitor) -> None:
            """Follow ``monitor``'s verdict on each epoch."""
            super().__init__()
            self.monitor = monitor

        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            """Save the best checkpoint when this epoch was the best so far, then let the monitor commit the epoch."""
            if self.monitor.pending_best:
                save_keras_atomically(
                    self.monitor.export_twin, self.monitor.run_dir / rundir.CHECKPOINTS / "best.keras"
                )
            self.monitor.commit()

    return ResumableEarlyStopping, ResumableReduceLR, RunMonitor, BestSaver


def _float(value: Any) -> float | None:
    """A plain float (None for missing/NaN)."""
    if value is None:
        return None
    try:
        number = float(np.asarray(value))
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _fmt(value: Any) -> str:
    """Short formatting of a metric value for the log."""
    return "nan" if value is None else f"{value:.4g}"


def _logger(run_dir: Path) -> logging.Logger:
    """A logger appending to the run's ``train.log``."""
    log = logging.getLogger(f"cxr.train.{run_dir.name}")
    log.setLevel(logging.INFO)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    handler = logging.FileHandler(run_dir / rundir.LOG_FILE, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
    log.addHandler(handler)
    return log


def train(
    cfg: Config, tc: TrainConfig, run_dir: str | Path | None = None, progress: Progress | None = None
) -> TrainResult:
    """Train a new run into ``run_dir`` (default: a new folder in ``cfg.runs_dir``) and export its model."""
    tc.validate()
    run = rundir.create_run_dir(cfg, tc.arch, run_dir)
    seed = cfg.seed if tc.seed is None else tc.seed
    tc.seed, tc.data_dir = seed, str(Path(tc.data_dir or cfg.data_dir).expanduser().resolve())
    rundir.write_json_safe(
        run / rundir.CONFIG_FILE,
        {
            "train": tc.to_dict(),
            "preprocess": tc.preprocess().to_dict(),
            "classes": list(CLASSES),
            "positive": cfg.positive_class,
            "split_fractions": list(cfg.split_fractions),
            "cxr_version": __version__,
            "host": socket.gethostname(),
            "created": rundir.utc_now(),
        },
    )
    return _run(cfg, run, tc, resume_from=False, progress=progress)


def resume(
    cfg: Config, run_dir: str | Path, epochs: int | None = None, progress: Progress | None = None
) -> TrainResult:
    """Continue a killed, failed or cancelled run from ``checkpoints/latest.keras`` (optionally to more ``epochs``)."""
    run = Path(run_dir).expanduser().resolve()
    status = rundir.read_status(run)
    config = rundir.read_config(run)
    if not config.get("train"):
        raise TrainingError(f"{run} is not a training run directory (no config.json)")
    if status["status"] in rundir.ACTIVE:
        raise TrainingError(f"{run.name} is still {status['status']} (pid {status.get('pid')})")
    tc = TrainConfig.from_dict(config["train"])
    if epochs is not None:
        tc.epochs = int(epochs)
    latest = read_json_object(run / rundir.CHECKPOINTS / "latest.json")
    if status["status"] == "done" and int(latest.get("epoch", 0)) >= tc.epochs:
        raise TrainingError(
            f"{run.name} is already done; pass --epochs N (more than {latest.get('epoch')}) to train further"
        )
    tc.validate()
    rundir.clear_cancel(run)
    return _run(cfg, run, tc, resume_from=True, progress=progress)


def _read_split(run: Path) -> pd.DataFrame | None:
    """The split saved by an earlier attempt of this run, or None."""
    path = run / rundir.SPLIT_FILE
    return pd.read_csv(path, dtype=str, keep_default_na=False) if path.is_file() else None


def _run(cfg: Config, run: Path, tc: TrainConfig, resume_from: bool, progress: Progress | None) -> TrainResult:
    """Run (or continue) the fit in ``run``, recording status; re-raises failures after marking the run failed."""
    import keras

    log = _logger(run)
    started = time.monotonic()
    rundir.update_status(
        run,
        status="running",
        pid=os.getpid(),
        host=socket.gethostname(),
        started=rundir.utc_now(),
        finished=None,
        error=None,
        epochs=tc.epochs,
    )
    log.info("%s run %s: %s", "resuming" if resume_from else "starting", run.name, tc.to_dict())
    previous_policy = keras.mixed_precision.global_policy().name
    try:
        result = _fit(cfg, run, tc, resume_from, log, progress)
        result.seconds = time.monotonic() - started
        rundir.update_status(run, status="done", finished=rundir.utc_now())
        log.info("done in %.1f s; model written to %s", result.seconds, result.model_dir)
        return result
    except TrainingCancelled as exc:
        rundir.clear_cancel(run)
        rundir.update_status(run, status="cancelled", finished=rundir.utc_now())
        log.info("cancelled: %s", exc)
        latest = read_json_object(run / rundir.CHECKPOINTS / "latest.json")
        return TrainResult(
            run,
            "cancelled",
            int(latest.get("epoch", 0)),
            int(latest.get("best_epoch") or 0),
            latest.get("best_val_auc"),
            time.monotonic() - started,
        )
    except BaseException as exc:
        tail = "".join(traceback.format_exception(exc))[-3000:]
        rundir.update_status(run, status="failed", finished=rundir.utc_now(), error=tail)
        log.error("failed: %s", tail)
        raise
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        for handler in list(log.handlers):
            log.removeHandler(handler)
            handler.close()


def _fit(
    cfg: Config, run: Path, tc: TrainConfig, resume_from: bool, log: logging.Logger, progress: Progress | None
) -> TrainResult:
    """Load data, build or restore the model, fit with all callbacks and export the best model."""
    import keras

    from cxr_core.train.robust import RobustModel

    keras.utils.set_random_seed(int(tc.seed or 0))
    frame = _read_split(run)
    data = prepare_data(cfg, tc, frame, progress)
    if frame is None:
        rundir.write_csv_atomic(run / rundir.SPLIT_FILE, data.frame.to_dict("records"), list(data.frame.columns))
    counts = data.frame.groupby(["split", "label"]).size()
    log.info("images: %s", {f"{split}/{label}": int(n) for (split, label), n in counts.items()})
    latest = read_json_object(run / rundir.CHECKPOINTS / "latest.json") if resume_from else {}
    start_epoch = int(latest.get("epoch", 0))
    if resume_from and not (run / rundir.CHECKPOINTS / "latest.keras").is_file():
        start_epoch, latest = 0, {}
    if tc.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    strategy = choose_strategy(tc.strategy)
    log.info("strategy %s with %d replicas", type(strategy).__name__, strategy.num_replicas_in_sync)
    with strategy.scope():
        if start_epoch:
            model = keras.saving.load_model(run / rundir.CHECKPOINTS / "latest.keras", compile=True)
            model.optimizer.learning_rate = float(latest.get("lr") or tc.learning_rate)
            log.info("restored epoch %d from checkpoints/latest.keras (lr %s)", start_epoch, latest.get("lr"))
        else:
            model = build_model(tc.arch, tc.image_size, weights=tc.weights, **tc.hparams)
            if tc.robust_objective:
                n_sources = tuple(len(names) for names in class_sources(data.frame))
                model = RobustModel(model, n_sources, adversary=tc.adversary, gradient_penalty=tc.gradient_penalty)
            model.compile(
                optimizer=keras.optimizers.Adam(tc.learning_rate, use_ema=tc.ema, ema_momentum=0.98),
                loss="categorical_crossentropy",
                metrics=["accuracy", keras.metrics.AUC(name="auc", multi_label=True, num_labels=len(CLASSES))],
            )
        classifier = model.classifier if isinstance(model, RobustModel) else model
        twin = keras.Model(classifier.inputs, classifier.outputs, name=classifier.name)
    if tc.strategy == "multi_worker" and check_cluster() > 1:
        fit_across_workers(model)
    train_data, val_data, steps = input_data(data, tc, start_epoch)
    weights = recipe_class_weights(data, tc)
    early_cls, reduce_cls, monitor_cls, best_cls = _callback_classes()
    early = early_cls(latest.get("early_stopping"), monitor=tc.monitor, mode=MONITORS[tc.monitor], patience=tc.patience)
    reduce = reduce_cls(
        latest.get("reduce_lr"), monitor="val_loss", mode="min", factor=0.5, patience=tc.lr_patience, min_lr=1e-6
    )
    monitor = monitor_cls(run, tc, len(data.y_train), steps, start_epoch, [early, reduce], twin, log, progress)
    swap = [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if tc.ema else []
    precise = [precise_batchnorm(data.x_train, tc.batch)] if tc.pipeline == "ours" else []
    callbacks = [early, reduce, monitor, *swap, *precise, best_cls(monitor)]
    if importlib.util.find_spec("tensorboard") is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run / "tensorboard")))
    rundir.update_status(
        run,
        epoch=start_epoch,
        batch=0,
        batches_per_epoch=steps,
        epochs=tc.epochs,
        n_train=int(len(data.y_train)),
        n_val=int(len(data.y_val)),
    )
    if start_epoch < tc.epochs:
        with strategy.scope():
            model.fit(
                train_data,
                validation_data=val_data,
                epochs=tc.epochs,
                initial_epoch=start_epoch,
                steps_per_epoch=steps if tc.pipeline == "ours" else None,
                class_weight=weights,
                callbacks=callbacks,
                shuffle=False,
                verbose=0,
            )
    return _export(cfg, run, tc, data, log, progress)


def statistics_images(images: np.ndarray, n: int = 256) -> np.ndarray:
    """``n`` training images spread evenly over the training set (un-augmented), as float32 model inputs."""
    picks = np.unique(np.linspace(0, len(images) - 1, min(len(images), n)).round().astype(int))
    return images[picks][..., None].astype(np.float32)


def precise_batchnorm(x_train: np.ndarray, batch: int) -> Any:
    """A Keras callback that sets batch-norm statistics from un-augmented training images before each validation."""
    import keras

    class PreciseBatchNorm(keras.callbacks.Callback):
        """Before each validation, batch-norm statistics from un-augmented training images (set_batchnorm_statistics)."""

        def __init__(self, images: np.ndarray) -> None:
            """Keep the images the statistics are computed on."""
            super().__init__()
            self.images = images

        def on_test_begin(self, logs: Mapping[str, Any] | None = None) -> None:
            """Recompute the statistics of the weights about to be validated (and checkpointed)."""
            set_batchnorm_statistics(self.model, self.images, batch)

    return PreciseBatchNorm(statistics_images(x_train))


def input_data(data: TrainingData, tc: TrainConfig, start_epoch: int = 0) -> tuple[Any, Any, int]:
    """Training and validation data of the run's pipeline and the batches per epoch, from epoch ``start_epoch + 1`` on.

    With ``--pipeline ours`` the training dataset holds the remaining epochs back to back, each shuffled and
    augmented from ``(seed, epoch)`` alone, so a resumed run sees exactly the batches an uninterrupted one would.
    """
    seed = int(tc.seed or 0)
    augment = Augmentation(**tc.augmentation) if tc.augment else None
    steps = -(-len(data.y_train) // tc.batch)
    if tc.pipeline == "paper":
        return (
            paper_iterator(data.x_train, data.y_train, batch=tc.batch, training=True, seed=seed, augment=augment),
            paper_iterator(data.x_val, data.y_val, batch=tc.batch, training=False, seed=seed),
            steps,
        )
    train_data = training_dataset(data, tc, range(start_epoch, tc.epochs))
    return train_data, make_dataset(data.x_val, data.y_val, batch=tc.batch, training=False, seed=seed), steps


def training_dataset(data: TrainingData, tc: TrainConfig, epochs: range | None = None) -> Any:
    """The tf.data training set of ``tc``'s recipe: sampling, geometric and appearance augmentation, markings on
    Normal images (``epochs`` as in :func:`~cxr_core.train.pipeline.make_dataset`); ``cxr train`` and ``cxr tune``."""
    names = data.train_sources if tc.sampling == "source_balanced" or tc.robust_objective else None
    return make_dataset(
        data.x_train,
        data.y_train,
        batch=tc.batch,
        training=True,
        seed=int(tc.seed or 0),
        augment=Augmentation(**tc.augmentation) if tc.augment else None,
        balanced=tc.sampling in ("balanced", "source_balanced"),
        sources=names if tc.sampling == "source_balanced" else None,
        epochs=epochs,
        appearance=Appearance(**tc.appearance_ops) if tc.appearance else None,
        normal_markings=tc.normal_markings,
        source_codes=source_codes(data.y_train, names)[0] if names is not None and tc.robust_objective else None,
        allowed=data.allowed_train if tc.gradient_penalty else None,
    )


def recipe_class_weights(data: TrainingData, tc: TrainConfig) -> dict[int, float] | None:
    """Inverse-frequency class weights when ``tc`` corrects class imbalance with them, else None."""
    return class_weights(data.y_train) if tc.sampling == "class_weight" else None


def _export(
    cfg: Config, run: Path, tc: TrainConfig, data: TrainingData, log: logging.Logger, progress: Progress | None
) -> TrainResult:
    """Rebuild the model in float32 with the best weights, calibrate on validation and write ``run/model/``."""
    import keras

    from cxr_core.evaluate.calibration import calibrate
    from cxr_core.evaluate.card import base_card
    from cxr_core.gate.familiarity import DEFAULT_METHOD, FEATURES, dataset_features, fit_model
    from cxr_core.serve.registry import load_model, save_model_dir

    _notify(progress, "export", 0, 1)
    keras.mixed_precision.set_global_policy("float32")
    best = keras.saving.load_model(run / rundir.CHECKPOINTS / "best.keras", compile=False)
    model = build_model(tc.arch, tc.image_size, weights=None, **tc.hparams)
    model.set_weights(best.get_weights())
    probs = model.predict(data.x_val[..., None].astype(np.float32), batch_size=64, verbose=0)
    calibration = calibrate(
        probs, data.y_val, positive_index=CLASSES.index("COVID"), target_sensitivity=tc.target_sensitivity
    )
    metrics = rundir.read_metrics(run)
    latest = read_json_object(run / rundir.CHECKPOINTS / "latest.json")
    best_epoch = int(latest.get("best_epoch") or 0)
    card = base_card(
        name=run.name,
        architecture=tc.arch,
        parameters=model.count_params(),
        preprocess=data.preprocess.to_dict(),
        training=_training_summary(run, tc, data, metrics, best_epoch),
    )
    model_dir = save_model_dir(
        run / rundir.MODEL_DIR,
        model,
        data.preprocess,
        temperature=calibration.temperature,
        threshold=calibration.threshold,
        target_sensitivity=calibration.target_sensitivity,
        card=card,
    )
    recipe = {**tc.to_dict(), "data_dir": None}
    rundir.write_json_safe(model_dir / TRAIN_CONFIG_FILE, recipe)
    log.info("calibration on validation: %s", calibration.to_dict())
    exported, split = load_model(model_dir), data.frame["split"]
    features = {
        name: dataset_features(
            cfg,
            exported,
            Path(tc.data_dir or cfg.data_dir),
            data.frame[split == name],
            FEATURES[DEFAULT_METHOD],
            workers=cfg.workers,
            prepared=x,
        )
        for name, x in (("train", data.x_train), ("val", data.x_val))
    }
    fam = fit_model(exported, features["train"], data.frame[split == "train"], features["val"])
    log.info("familiarity (%s) fitted on %d training images", fam.method, fam.info["n_train"])
    train_seconds = metrics["train_seconds"].dropna() if "train_seconds" in metrics else pd.Series(dtype=float)
    return TrainResult(
        run,
        "done",
        epochs_run=int(metrics["epoch"].max()) if len(metrics) else 0,
        best_epoch=best_epoch,
        best_val_auc=latest.get("best_val_auc"),
        seconds_to_best=float(metrics.loc[metrics["epoch"] <= best_epoch, "seconds"].sum()),
        images_per_second=float(len(data.y_train) / train_seconds.median()) if len(train_seconds) else 0.0,
        model_dir=model_dir,
        calibration=calibration.to_dict(),
    )


def _training_summary(
    run: Path, tc: TrainConfig, data: TrainingData, metrics: pd.DataFrame, best_epoch: int
) -> dict[str, Any]:
    """The ``training`` section of the model card: data by split, class and source, and how the fit went."""
    frame = data.frame
    by_class = {s: frame[frame["split"] == s]["label"].value_counts().to_dict() for s in ("train", "val", "test")}
    by_source = {
        f"{src}/{label}": int(n)
        for (src, label), n in frame[frame["split"] == "train"].groupby(["source", "label"]).size().items()
    }
    best_row = metrics[metrics["epoch"] == best_epoch]
    return {
        "run_id": run.name,
        "data_dir": tc.data_dir,
        "epochs": int(metrics["epoch"].max()) if len(metrics) else 0,
        "best_epoch": best_epoch,
        "best_val_auc": _float(best_row["val_auc"].iloc[0]) if len(best_row) else None,
        "split": {s: int((frame["split"] == s).sum()) for s in ("train", "val", "test")},
        "by_class": by_class,
        "by_source": by_source,
        "learning_rate": tc.learning_rate,
        "batch": tc.batch,
        "pipeline": tc.pipeline,
        "sampling": tc.sampling,
        "augmentation": tc.augmentation if tc.augment else None,
        "appearance": tc.appearance_ops if tc.appearance else None,
        "normal_markings": tc.normal_markings,
        "adversary": tc.adversary,
        "gradient_penalty": tc.gradient_penalty,
        "mixed_precision": tc.mixed_precision,
        "hparams": tc.hparams,
        "seed": tc.seed,
        "limit": tc.limit,
    }
