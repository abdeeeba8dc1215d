"""``--strategy multi_worker``: a real ``cxr train`` under MultiWorkerMirroredStrategy configured by TF_CONFIG.

Keras 3.15's ``Model.fit`` fails under a MultiWorkerMirroredStrategy of two or more workers (keras-team/keras#20585);
``training.fit_across_workers`` works around it. The real runs here are clusters of one and of two workers on free
localhost ports; the two workers train on different images, so identical weights prove the gradients are shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import REPO, _free_port, write_dataset
from cxr_core.train import rundir
from cxr_core.train.trainer import TrainingError, check_cluster

pytestmark = pytest.mark.slow
TRAIN_ARGS = [
    "train",
    "--strategy",
    "multi_worker",
    "--epochs",
    "1",
    "--limit",
    "32",
    "--size",
    "64",
    "--batch",
    "8",
    "--hparams",
    '{"width": 8, "depth": 2}',
]


def _tf_config(ports: list[int], index: int = 0) -> str:
    """TF_CONFIG of a cluster of workers on localhost ``ports``, for task ``index``."""
    return json.dumps(
        {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    )


def _start(tmp_path: Path, data: Path, tf_config: str, run: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``cxr train --strategy multi_worker`` with TF_CONFIG into ``run``; its output goes to files beside ``run``
    (not pipes, which a worker could fill while the test waits on its peer)."""
    env = {
        **os.environ,
        "CXR_HOME": str(tmp_path / "home"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": str(REPO),
        "TF_CONFIG": tf_config,
    }
    output = run.with_name(f"{run.name}.output")
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.with_suffix(".stdout").open("wb") as out, output.with_suffix(".stderr").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cxr_core", *TRAIN_ARGS, "--data", str(data), "--run-dir", str(run), "--json"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=err,
        )
    return proc, output


def _finish(started: tuple[subprocess.Popen[bytes], Path]) -> tuple[int, str, str]:
    """Wait for a started run (killed after 5 minutes: a worker whose peer died waits for it): code, stdout, stderr."""
    proc, output = started
    try:
        proc.wait(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return proc.returncode, output.with_suffix(".stdout").read_text(), output.with_suffix(".stderr").read_text()


def _two_free_ports() -> list[int]:
    """Two different unused localhost ports."""
    ports = [_free_port()]
    while len(ports) < 2:
        ports = list({*ports, _free_port()})
    return ports


def test_cluster_check_counts_workers_in_a_valid_tf_config() -> None:
    assert check_cluster({"TF_CONFIG": _tf_config([1234])}) == 1
    assert check_cluster({"TF_CONFIG": _tf_config([1, 2])}) == 2
    for env, words in [
        ({}, "needs the TF_CONFIG"),
        ({"TF_CONFIG": "{not json"}, "not a JSON object"),
        ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}, "not a JSON object"),
        ({"TF_CONFIG": '{"cluster": {}, "task": {"type": "worker", "index": 0}}'}, "no chief or worker"),
    ]:
        with pytest.raises(TrainingError, match=words):
            check_cluster(env)


def test_one_worker_cluster_trains_a_full_run_directory(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_per_class=20, size=64, seed=2)
    run = tmp_path / "home" / "runs" / "mw"
    code, stdout, stderr = _finish(_start(tmp_path, data, _tf_config([_free_port()]), run))
    assert code == 0, stderr[-3000:]
    assert json.loads(stdout)["status"] == "done"
    assert rundir.read_status(run)["status"] == "done"
    assert list(rundir.read_metrics(run)["epoch"]) == [1]
    assert (run / "model" / "model.keras").is_file()
    assert "strategy CollectiveAllReduceStrategy with 1 replicas" in (run / "train.log").read_text()  # MWMS's class


def test_two_workers_on_different_images_train_the_same_model(tmp_path: Path) -> None:
    ports = _two_free_ports()
    runs = [tmp_path / "home" / "runs" / f"worker{i}" for i in range(2)]
    procs = [
        _start(
            tmp_path,
            write_dataset(tmp_path / f"data{i}", n_per_class=20, size=64, seed=10 + i),
            _tf_config(ports, i),
            runs[i],
        )
        for i in range(2)
    ]
    results = [_finish(proc) for proc in procs]
    for code, stdout, stderr in results:
        assert code == 0, stderr[-3000:]
        assert json.loads(stdout)["status"] == "done"
    assert all(
        "strategy CollectiveAllReduceStrategy with 2 replicas" in (run / "train.log").read_text() for run in runs
    )
    metrics = [rundir.read_metrics(run) for run in runs]
    assert list(metrics[0]["epoch"]) == [1]
    columns = ["loss", "accuracy", "auc", "val_loss", "val_auc"]
    assert metrics[0][columns].equals(metrics[1][columns])  # one all-reduced log, so early stopping agrees
    models = [keras.saving.load_model(run / "model" / "model.keras", safe_mode=True) for run in runs]
    kernels = [[w.numpy() for w in m.trainable_weights] for m in models]
    assert all(np.array_equal(a, b) for a, b in zip(*kernels))


def test_an_invalid_tf_config_is_refused_with_one_line_and_no_run_directory(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_per_class=6, size=32, seed=2)
    run = tmp_path / "home" / "runs" / "bad"
    code, _, stderr = _finish(_start(tmp_path, data, '{"cluster": {"worker": ["localhost:1"]}}', run))
    assert code != 0
    assert len([line for line in stderr.splitlines() if "TF_CONFIG is not a JSON object" in line]) == 1
    assert "Traceback" not in stderr
    assert not run.exists()
