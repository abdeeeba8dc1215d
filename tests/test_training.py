"""Training runs: the CLI smoke run, run-directory contract, cancel, crash, kill -9 + resume, MirroredStrategy, paper pipeline."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO, write_dataset
from cxr_core.config import Config
from cxr_core.train import jobs, rundir
from cxr_core.train.appearance import Appearance
from cxr_core.train.trainer import TrainConfig, TrainingError, resume, train

pytestmark = pytest.mark.slow


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A synthetic 60-image dataset."""
    return write_dataset(tmp_path / "data", n_per_class=30, size=80, seed=1)


def _env(tmp_path: Path, data: Path) -> dict[str, str]:
    """Environment for a ``cxr`` subprocess with its own work dir."""
    return {
        **os.environ,
        "CXR_HOME": str(tmp_path / "home"),
        "CXR_DATA_DIR": str(data),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(REPO),
    }


def _cxr(args: list[str], env: Mapping[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cxr_core ARGS``."""
    return subprocess.run(
        [sys.executable, "-m", "cxr_core", *args],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _children_cpu_seconds() -> float:
    """User + system CPU seconds of finished child processes (wall time is meaningless on a shared, busy machine)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tiny(**changes: Any) -> TrainConfig:
    """A TrainConfig for a few seconds of training on 64 px images."""
    values: dict[str, Any] = {
        "arch": "cxr_net",
        "epochs": 2,
        "size": 64,
        "batch": 8,
        "limit": 32,
        "seed": 3,
        "hparams": {"width": 8, "depth": 2},
    }
    values.update(changes)
    return TrainConfig(**values)


def test_cli_smoke_run_writes_the_whole_run_directory_in_under_a_minute(tmp_path: Path, data: Path) -> None:
    start, cpu_start = time.monotonic(), _children_cpu_seconds()
    result = _cxr(
        ["train", "--arch", "cxr_net", "--epochs", "1", "--limit", "64", "--size", "64", "--json"], _env(tmp_path, data)
    )
    elapsed, cpu = time.monotonic() - start, _children_cpu_seconds() - cpu_start
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    busy = os.getloadavg()[0] > (os.cpu_count() or 1)
    assert (cpu if busy else elapsed) < 60, f"smoke run took {elapsed:.0f} s wall, {cpu:.0f} s CPU"
    run = Path(summary["run_dir"])
    assert run.parent == tmp_path / "home" / "runs"
    for name in (
        "config.json",
        "status.json",
        "metrics.csv",
        "batches.csv",
        "train.log",
        "split.csv",
        "checkpoints/latest.keras",
        "checkpoints/latest.json",
        "checkpoints/best.keras",
        "model/model.keras",
        "model/preprocess.json",
        "model/classes.json",
        "model/calibration.json",
        "model/card.json",
    ):
        assert (run / name).is_file(), name
    status = rundir.read_status(run)
    assert status["status"] == "done" and status["epoch"] == 1 and status["finished"]
    metrics = rundir.read_metrics(run)
    assert list(metrics["epoch"]) == [1]
    assert set(rundir.METRICS_COLUMNS) <= set(metrics.columns)
    assert rundir.read_batches(run)["step"].max() == status["batches_per_epoch"]
    assert json.loads((run / "model" / "classes.json").read_text())["classes"] == ["COVID", "Normal"]
    assert json.loads((run / "model" / "preprocess.json").read_text())["size"] == 64
    assert [r.id for r in jobs.list_runs(Config(home=tmp_path / "home", data_dir=data))] == [run.name]
    recipe = json.loads((run / "model" / "train_config.json").read_text())
    first = json.loads((run / "config.json").read_text())["train"]
    assert recipe == {**first, "data_dir": None}
    again = _cxr(
        [
            "train",
            "--config",
            str(run / "model" / "train_config.json"),
            "--sampling",
            "source_balanced",
            "--hflip",
            "--run-dir",
            str(tmp_path / "again"),
            "--json",
        ],
        _env(tmp_path, data),
    )
    assert again.returncode == 0, again.stderr[-2000:]
    second = json.loads((tmp_path / "again" / "config.json").read_text())["train"]
    assert second == {**first, "sampling": "source_balanced", "augmentation": {**first["augmentation"], "flip": True}}


def test_bad_requests_are_one_line_cli_errors(tmp_path: Path, data: Path) -> None:
    env = _env(tmp_path, data)
    for args, expected in (
        (["--epochs", "0"], "epochs must be at least 1"),
        (["--lr", "-1"], "learning rate"),
        (["--method", "magic"], "argument --method: invalid choice: 'magic'"),
        (["--config", str(tmp_path / "nowhere.json")], "no configuration file"),
    ):
        result = _cxr(["train", "--size", "64", *args], env)
        assert result.returncode == 2
        assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "runs").exists()


def test_exported_model_reloads_in_safe_mode_and_predicts_like_the_best_checkpoint(
    make_cfg: Callable[..., Config], data: Path
) -> None:
    import keras

    from cxr_core.serve.registry import load_model

    cfg = make_cfg(data_dir=data)
    result = train(cfg, _tiny(epochs=2))
    assert result.status == "done" and result.model_dir is not None
    loaded = load_model(result.model_dir)
    best = keras.saving.load_model(result.run_dir / "checkpoints" / "best.keras", safe_mode=True)
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 1)).astype("float32")
    np.testing.assert_allclose(loaded.model.predict(x, verbose=0), best.predict(x, verbose=0), atol=1e-5)
    assert getattr(loaded.model, "optimizer", None) is None
    assert 0 < loaded.threshold < 1 and loaded.temperature > 0
    card = json.loads((result.model_dir / "card.json").read_text())
    assert card["training"]["run_id"] == result.run_dir.name and card["architecture"] == "cxr_net"
    assert loaded.familiarity is not None and loaded.familiarity.info["n_train"] > 0


def test_cancel_request_stops_after_the_current_batch_and_the_run_resumes(
    make_cfg: Callable[..., Config], data: Path
) -> None:
    cfg = make_cfg(data_dir=data)
    run_dir = cfg.runs_dir / "cancel-me"
    seen: list[tuple[int, int]] = []

    def progress(stage: str, done: int, total: int, info: Mapping[str, Any]) -> None:
        if stage == "batch":
            seen.append((int(info["epoch"]), done))
            if info["epoch"] == 2 and done == 1:
                rundir.request_cancel(run_dir)

    result = train(cfg, _tiny(epochs=3), run_dir=run_dir, progress=progress)
    assert result.status == "cancelled"
    assert seen[-1] == (2, 1)
    assert rundir.read_status(run_dir)["status"] == "cancelled"
    assert not (run_dir / rundir.CANCEL_FILE).exists()
    assert list(rundir.read_metrics(run_dir)["epoch"]) == [1]
    resumed = resume(cfg, run_dir)
    assert resumed.status == "done"
    assert list(rundir.read_metrics(run_dir)["epoch"]) == [1, 2, 3]
    with pytest.raises(TrainingError, match="already done"):
        resume(cfg, run_dir)


def test_a_crash_is_recorded_as_failed_with_the_traceback_tail(
    make_cfg: Callable[..., Config], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cxr_core.train import trainer as training

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("GPU caught fire")

    monkeypatch.setattr(training, "build_model", broken)
    cfg = make_cfg(data_dir=data)
    with pytest.raises(RuntimeError):
        train(cfg, _tiny(), run_dir=cfg.runs_dir / "crash")
    status = rundir.read_status(cfg.runs_dir / "crash")
    assert status["status"] == "failed"
    assert "RuntimeError: GPU caught fire" in status["error"]
    assert "failed" in (cfg.runs_dir / "crash" / "train.log").read_text()


def test_run_killed_after_its_first_epoch_resumes_with_a_continuous_metrics_log(tmp_path: Path, data: Path) -> None:
    env = _env(tmp_path, data)
    run = tmp_path / "home" / "runs" / "killed"
    args = [
        "train",
        "--epochs",
        "6",
        "--limit",
        "32",
        "--size",
        "64",
        "--batch",
        "8",
        "--hparams",
        '{"width": 8, "depth": 2}',
        "--run-dir",
        str(run),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cxr_core", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and len(rundir.read_metrics(run)) < 1:
            assert proc.poll() is None, "training ended before it could be killed"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    epochs_before = list(rundir.read_metrics(run)["epoch"])
    assert 1 <= len(epochs_before) < 6
    assert rundir.read_status(run)["status"] == "interrupted"
    result = _cxr(["train", "--resume", str(run), "--json"], env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["status"] == "done"
    metrics = rundir.read_metrics(run)
    assert list(metrics["epoch"]) == [1, 2, 3, 4, 5, 6][: len(metrics)]
    assert len(metrics) >= len(epochs_before) + 1
    assert metrics["loss"].notna().all()
    restored = re.search(r"restored epoch (\d+)", (run / "train.log").read_text())
    assert restored and int(restored.group(1)) >= len(epochs_before)
    assert rundir.read_status(run)["status"] == "done"


MIRRORED_SCRIPT = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cxr_core.config import Config
from cxr_core.train.trainer import TrainConfig, choose_strategy, train
assert choose_strategy("mirrored").num_replicas_in_sync == 2
cfg = Config(data_dir=sys.argv[1], home=sys.argv[2], workers=1)
tc = TrainConfig(epochs=1, size=64, batch=8, limit=32, seed=0, strategy="mirrored", hparams={"width": 8, "depth": 2})
result = train(cfg, tc)
print(result.status, result.epochs_run)
"""


def test_training_under_mirrored_strategy_on_two_cpu_devices(tmp_path: Path, data: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(data), str(tmp_path / "home")],
        cwd=REPO,
        env=_env(tmp_path, data),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["done", "1"]


def test_paper_pipeline_and_mixed_precision_runs_export_a_float32_model(
    make_cfg: Callable[..., Config], data: Path
) -> None:
    import keras

    from cxr_core.serve.registry import load_model

    cfg = make_cfg(data_dir=data)
    paper = train(cfg, _tiny(epochs=1, pipeline="paper"))
    assert paper.status == "done"
    assert rundir.read_status(paper.run_dir)["batches_per_epoch"] == 4
    mixed = train(cfg, _tiny(epochs=1, mixed_precision=True))
    assert mixed.status == "done"
    assert keras.mixed_precision.global_policy().name == "float32"
    model = load_model(mixed.model_dir).model
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}


def test_a_run_with_the_appearance_and_normal_markings_recipes_trains_and_records_them(
    make_cfg: Callable[..., Config], data: Path
) -> None:
    from cxr_core.train.config import TRAIN_CONFIG_FILE, read_train_config

    cfg = make_cfg(data_dir=data)
    recipe = {"appearance": True, "appearance_ops": {**Appearance().to_dict(), "jpeg_p": 1.0}, "normal_markings": 0.5}
    result = train(cfg, _tiny(epochs=1, **recipe))
    assert result.status == "done"
    saved = read_train_config(Path(result.model_dir) / TRAIN_CONFIG_FILE)
    assert saved.appearance and saved.appearance_ops["jpeg_p"] == 1.0 and saved.normal_markings == 0.5


def test_tune_saves_a_results_table_and_resumes_without_repeating_trials(
    make_cfg: Callable[..., Config], data: Path
) -> None:
    from cxr_core.train.tuning import RESULTS_CSV, TuneConfig, tune, tuning_dir

    cfg = make_cfg(data_dir=data)
    search = TuneConfig(
        max_epochs=2,
        factor=2,
        sizes=(48,),
        methods=("none", "clahe"),
        lrs=(1e-3,),
        widths=(8,),
        depths=(2,),
        dropouts=(0.1,),
        batch=8,
        limit=24,
        seed=0,
        recipe={"appearance": True, "normal_markings": 0.5, "sampling": "source_balanced", "adversary": 0.3},
    )
    started: list[str] = []
    first = tune(cfg, search, on_trial=started.append)
    assert len(first) >= 1 and set(first["method"]) <= {"none", "clahe"}
    saved = json.loads((tuning_dir(cfg, search) / "results.json").read_text())["recipe"]
    assert saved["appearance"] and saved["normal_markings"] == 0.5 and saved["sampling"] == "source_balanced"
    assert saved["adversary"] == 0.3, "a recipe that changes the objective trains through RobustModel"
    assert first["val_auc"].is_monotonic_decreasing
    assert (tuning_dir(cfg, search) / RESULTS_CSV).is_file()
    count = len(started)
    again = tune(cfg, search, on_trial=started.append)
    assert len(started) == count
    assert sorted(again["trial"]) == sorted(first["trial"])


def test_cxr_tune_takes_its_fixed_recipe_from_a_config_file_and_the_training_flags(tmp_path: Path) -> None:
    from cxr_core.cli.commands.tune import recipe_from_args
    from cxr_core.cli.parser import build_parser
    from cxr_core.train.tuning import TuneConfig

    saved = tmp_path / "train_config.json"
    saved.write_text(json.dumps(TrainConfig(sampling="balanced", normal_markings=0.3, epochs=99).to_dict()))
    argv = ["tune", "--config", str(saved), "--appearance", "--appearance-jpeg-p", "0.9", "--max-epochs", "2"]
    recipe = recipe_from_args(build_parser(argv).parse_args(argv))
    assert recipe["sampling"] == "balanced" and recipe["normal_markings"] == 0.3 and recipe["appearance"] is True
    assert recipe["appearance_jpeg_p"] == 0.9 and "epochs" not in recipe
    base = TuneConfig(recipe=recipe).base()
    assert base.appearance_ops["jpeg_p"] == 0.9 and base.sampling == "balanced"
    with pytest.raises(TrainingError, match="cannot be part of a search's recipe"):
        TuneConfig(recipe={"lr": 0.1}).validate()


def test_the_shipped_default_model_carries_its_recipe() -> None:
    """models/default/train_config.json reads back and describes the preprocessing the shipped model uses."""
    from cxr_core.train.config import read_train_config

    tc = read_train_config(REPO / "models" / "default" / "train_config.json").validate()
    assert tc.preprocess().to_dict() == json.loads((REPO / "models" / "default" / "preprocess.json").read_text())
    assert tc.data_dir is None and tc.seed == 1


def test_a_config_file_with_unknown_options_is_refused(tmp_path: Path) -> None:
    """A configuration naming options this version does not know is one line naming them."""
    from cxr_core.train.config import read_train_config

    path = tmp_path / "train_config.json"
    path.write_text(json.dumps({"arch": "cxr_net", "colour": "red"}))
    with pytest.raises(TrainingError, match=r"unknown training options \['colour'\]"):
        read_train_config(path)
    path.write_text("{not json")
    with pytest.raises(TrainingError, match="not a readable JSON"):
        read_train_config(path)
