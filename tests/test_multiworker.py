"""``--strategy multi_worker``: a real ``cxr train`` under MultiWorkerMirroredStrategy configured by TF_CONFIG.

Keras 3's ``Model.fit`` cannot train under a MultiWorkerMirroredStrategy of two or more workers
(keras-team/keras#20585), so the real run here is a one-worker cluster on a free localhost port and a larger
cluster is refused up front with a one-line error that leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, _free_port, write_dataset
from cxr_core import rundir
from cxr_core.training import TrainingError, check_cluster

pytestmark = pytest.mark.slow
TRAIN_ARGS = ["train", "--strategy", "multi_worker", "--epochs", "1", "--limit", "32", "--size", "64", "--batch", "8",
              "--hparams", '{"width": 8, "depth": 2}']


def _tf_config(ports: list[int], index: int = 0) -> str:
    """TF_CONFIG of a cluster of workers on localhost ``ports``, for task ``index``."""
    return json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}})


def _cxr(tmp_path: Path, data: Path, tf_config: str, run: Path) -> subprocess.CompletedProcess[str]:
    """Run ``cxr train --strategy multi_worker`` with TF_CONFIG into ``run``."""
    env = {**os.environ, "CXR_HOME": str(tmp_path / "home"), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO),
           "TF_CONFIG": tf_config}
    return subprocess.run([sys.executable, "-m", "cxr_core", *TRAIN_ARGS, "--data", str(data), "--run-dir", str(run),
                           "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)


def test_cluster_check_needs_one_worker_in_a_valid_tf_config() -> None:
    assert check_cluster({"TF_CONFIG": _tf_config([1234])}) == 1
    for env, words in [({}, "needs the TF_CONFIG"), ({"TF_CONFIG": "{not json"}, "not a JSON object"),
                       ({"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}}'}, "not a JSON object"),
                       ({"TF_CONFIG": _tf_config([1, 2])}, "keras-team/keras#20585")]:
        with pytest.raises(TrainingError, match=words):
            check_cluster(env)


def test_one_worker_cluster_trains_a_full_run_directory(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_per_class=20, size=64, seed=2)
    run = tmp_path / "home" / "runs" / "mw"
    result = _cxr(tmp_path, data, _tf_config([_free_port()]), run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["status"] == "done"
    assert rundir.read_status(run)["status"] == "done"
    assert list(rundir.read_metrics(run)["epoch"]) == [1]
    assert (run / "model" / "model.keras").is_file()
    assert "strategy CollectiveAllReduceStrategy with 1 replicas" in (run / "train.log").read_text()  # MWMS's class


def test_a_two_worker_cluster_is_refused_with_one_line_and_no_run_directory(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_per_class=6, size=32, seed=2)
    run = tmp_path / "home" / "runs" / "two"
    result = _cxr(tmp_path, data, _tf_config([_free_port(), _free_port()]), run)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "keras-team/keras#20585" in line]
    assert len(lines) == 1 and "2 workers" in lines[0]
    assert "Traceback" not in result.stderr
    assert not run.exists()
