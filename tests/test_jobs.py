"""The job runner: queue, detached worker, liveness, cancel, resume, delete; a fake trainer and the real ``cxr train``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import REPO, write_dataset
from cxr_core.config import Config
from cxr_core.train import jobs

FAKE_TRAINER = r'''
"""A stand-in for ``cxr train`` that follows the run-directory contract (status, heartbeat, csvs, cancel, resume)."""
import argparse, json, os, socket, sys, time
from datetime import datetime, timezone
from pathlib import Path

def now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

def write(path, data):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)

def status(run, **fields):
    path = run / "status.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(fields, updated=now())
    write(path, data)

p = argparse.ArgumentParser()
p.add_argument("--run-dir"); p.add_argument("--resume"); p.add_argument("--config")
args, _ = p.parse_known_args()
train = json.loads(Path(args.config).read_text())["train"] if args.config else {"arch": None, "epochs": 2, "batch": 4}
args.arch, args.epochs, args.batch = train["arch"], train["epochs"], train["batch"]
sleep = float(os.environ.get("FAKE_SLEEP", "0.2")); batches = 4
if os.environ.get("FAKE_CRASH"):
    raise RuntimeError("fake trainer exploded on purpose")
if args.resume:
    run = Path(args.resume); start = json.loads((run / "checkpoints" / "latest.json").read_text())["epoch"]
    epochs = json.loads((run / "config.json").read_text())["train"]["epochs"]
    status(run, status="running", pid=os.getpid())
else:
    run = Path(args.run_dir); epochs = args.epochs; start = 0
    if (run / "status.json").exists():
        sys.exit("run dir already holds a run")
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    write(run / "config.json", {"train": {"arch": args.arch, "epochs": epochs, "batch": args.batch}})
    status(run, status="queued", pid=os.getpid(), host=socket.gethostname(), created=now())
    status(run, status="running", started=now(), epochs=epochs, batches_per_epoch=batches)
    (run / "metrics.csv").write_text("epoch,loss,accuracy,auc,val_loss,val_accuracy,val_auc,lr,seconds\n")
    (run / "batches.csv").write_text("epoch,batch,step,loss,accuracy\n")
for epoch in range(start + 1, epochs + 1):
    for batch in range(1, batches + 1):
        time.sleep(sleep)
        with open(run / "batches.csv", "a") as f:
            f.write(f"{epoch},{batch},{(epoch - 1) * batches + batch},{1 / (epoch + batch)},0.5\n")
        status(run, epoch=epoch, batch=batch)
        if (run / "cancel.request").exists():
            status(run, status="cancelled", finished=now())
            sys.exit(0)
    with open(run / "metrics.csv", "a") as f:
        f.write(f"{epoch},{1 / epoch},0.6,0.7,{1.1 / epoch},0.6,{0.5 + epoch / 10},0.001,{batches * sleep}\n")
    write(run / "checkpoints" / "latest.json", {"epoch": epoch})
    status(run, best_val_auc=0.5 + epoch / 10, best_epoch=epoch)
(run / "model").mkdir(exist_ok=True)
status(run, status="done", finished=now())
'''


@pytest.fixture
def fake(
    tmp_path: Path, make_cfg: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> tuple[Config, jobs.JobOptions]:
    """A config in tmp and job options whose training command is the fake trainer."""
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAINER)
    monkeypatch.setenv("FAKE_SLEEP", "0.15")
    return make_cfg(), jobs.JobOptions(train_command=(str(script),), poll_seconds=0.2)


def wait_for(predicate: Callable[[], bool], timeout: float = 120.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def metric_rows(run_dir: Path) -> int:
    """Number of epochs recorded in the run's metrics.csv so far."""
    path = run_dir / "metrics.csv"
    return max(len(path.read_text().splitlines()) - 1, 0) if path.exists() else 0


def state(run_dir: Path, opts: jobs.JobOptions = jobs.JobOptions()) -> str:
    """The effective status of a run."""
    return str(jobs.effective_status(run_dir, opts)["status"])


def test_validation_refuses_bad_requests() -> None:
    """Negative learning rate, zero epochs and unknown options are refused with a message naming the problem."""
    with pytest.raises(jobs.JobError, match="learning rate"):
        jobs.validate_request({"arch": "cxr_net", "epochs": 2, "lr": -0.01})
    with pytest.raises(jobs.JobError, match="epochs"):
        jobs.validate_request({"arch": "cxr_net", "epochs": 0})
    with pytest.raises(jobs.JobError, match="unknown"):
        jobs.validate_request({"arch": "cxr_net", "epochs": 1, "colour": "red"})
    with pytest.raises(jobs.JobError, match="epochs must be a whole number"):
        jobs.validate_request({"arch": "cxr_net", "epochs": "3"})
    with pytest.raises(jobs.JobError, match=r"roi must be one of \['none', 'lung_crop', 'lung_mask'\]"):
        jobs.validate_request({"arch": "cxr_net", "epochs": 1, "roi": "lungs"})
    assert jobs.validate_request({"arch": "cxr_net", "epochs": 1, "lr": 1e-3, "seed": None}) == {
        "arch": "cxr_net",
        "epochs": 1,
        "lr": 1e-3,
    }


def test_job_carries_the_config_and_the_worker_builds_it(fake: tuple[Config, jobs.JobOptions]) -> None:
    """job.json holds TrainConfig.to_dict() as ``train``; the command reads it back with --config."""
    from cxr_core.cli.commands.train import config_from_args
    from cxr_core.cli.parser import build_parser
    from cxr_core.train.config import TrainConfig, read_train_config

    cfg, opts = fake
    request = {"arch": "cxr_net", "epochs": 2, "roi": "lung_mask", "ema": False, "hflip": True, "sampling": "balanced"}
    run = jobs.launch(cfg, request, opts)
    job = json.loads((run / "job.json").read_text())
    expected = TrainConfig(epochs=2, roi="lung_mask", ema=False, sampling="balanced")
    expected.augmentation["flip"] = True
    assert job["train"] == expected.to_dict() and job["request"] == request
    assert job["argv"][-4:] == ["--config", str(run / "job.json"), "--run-dir", str(run)]
    args = build_parser().parse_args(["train", *job["argv"][-4:], "--epochs", "5"])
    assert config_from_args(args, read_train_config(args.config)) == TrainConfig.from_dict(
        {**expected.to_dict(), "epochs": 5}
    )
    wait_for(lambda: state(run) == "done", what="run done")


def test_liveness_judges_dead_pid_and_stale_heartbeat() -> None:
    """Running with a dead pid or a stale heartbeat reads as interrupted; a fresh live one as running."""
    now = datetime.now(UTC)
    fresh = {"status": "running", "pid": os.getpid(), "updated": now.isoformat()}
    assert jobs.judge_status(fresh)["status"] == "running"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert jobs.judge_status({**fresh, "pid": dead.pid})["status"] == "interrupted"
    stale = {**fresh, "updated": (now - timedelta(minutes=30)).isoformat()}
    judged = jobs.judge_status(stale, opts=jobs.JobOptions(heartbeat_timeout=60))
    assert judged["status"] == "interrupted" and "heartbeat" in judged["note"]
    assert jobs.judge_status({"status": "done", "pid": dead.pid})["status"] == "done"
    assert jobs.judge_status({"status": "failed"}, {"state": "queued"})["status"] == "queued"


def test_queue_runs_one_at_a_time_and_finishes(
    fake: tuple[Config, jobs.JobOptions], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two launches: one runs, one waits; metrics.csv grows; both end done; the worker exits."""
    cfg, opts = fake
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    first = jobs.launch(cfg, {"arch": "cxr_net", "epochs": 2}, opts)
    second = jobs.launch(cfg, {"arch": "cxr_net", "epochs": 2}, opts)
    assert state(second) == "queued"
    wait_for(lambda: state(first) == "done", what="first run done")
    wait_for(lambda: state(second) == "done", what="second run done")
    assert metric_rows(first) == 2 and metric_rows(second) == 2
    one, two = (json.loads((run / "status.json").read_text()) for run in (first, second))
    assert two["started"] >= one["finished"], "the queued run started before the first one ended"
    wait_for(lambda: not jobs.worker_alive(cfg), what="worker exit")
    summary = jobs.list_runs(cfg)
    assert [r.status for r in summary] == ["done", "done"] and summary[0].id == second.name
    assert summary[1].best_val_auc == pytest.approx(0.7) and summary[1].arch == "cxr_net"


def test_two_simultaneous_launches_start_one_run(
    fake: tuple[Config, jobs.JobOptions], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes pressing Launch at the same moment: exactly one run starts, the other is queued."""
    cfg, opts = fake
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    code = (
        "import sys, time; from cxr_core.train import jobs; from cxr_core.config import Config;"
        f"cfg = Config(data_dir={str(cfg.data_dir)!r}, home={str(cfg.home)!r}, models_dir={str(cfg.models_dir)!r});"
        f"opts = jobs.JobOptions(train_command=({opts.train_command[0]!r},), poll_seconds=0.2);"
        "time.sleep(max(0.0, float(sys.argv[1]) - time.time()));"
        "print(jobs.launch(cfg, {'arch': 'cxr_net', 'epochs': 2}, opts))"
    )
    at = f"{time.time() + 10:.3f}"
    procs = [subprocess.Popen([sys.executable, "-c", code, at], cwd=REPO, stdout=subprocess.PIPE) for _ in range(2)]
    dirs = [Path(p.communicate(timeout=60)[0].decode().strip()) for p in procs]
    assert all(p.returncode == 0 for p in procs) and dirs[0] != dirs[1]
    wait_for(lambda: any(state(d) == "running" for d in dirs), what="a run to start")
    assert sorted(state(d) for d in dirs) == ["queued", "running"]
    wait_for(lambda: all(state(d) == "done" for d in dirs), what="both runs done")


def test_kill_9_reads_interrupted_then_resume_finishes(fake: tuple[Config, jobs.JobOptions]) -> None:
    """kill -9 of the training process: interrupted (not running forever); resume continues to done."""
    cfg, opts = fake
    run = jobs.launch(cfg, {"arch": "cxr_net", "epochs": 3}, opts)
    wait_for(lambda: metric_rows(run) >= 1, what="first epoch")
    os.kill(int(jobs.effective_status(run)["pid"]), signal.SIGKILL)
    wait_for(lambda: state(run) == "interrupted", what="interrupted")
    wait_for(lambda: json.loads((run / "status.json").read_text())["status"] == "interrupted", what="recorded end")
    with pytest.raises(jobs.JobError, match="only queued or running"):
        jobs.cancel(cfg, run.name, opts)
    jobs.resume(cfg, run.name, opts)
    wait_for(lambda: state(run) == "done", what="resumed run done")
    epochs = [int(line.split(",")[0]) for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [1, 2, 3]


def test_crash_shows_failed_with_traceback(
    fake: tuple[Config, jobs.JobOptions], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trainer that crashes before writing its status ends as failed with the end of its traceback."""
    cfg, opts = fake
    monkeypatch.setenv("FAKE_CRASH", "1")
    run = jobs.launch(cfg, {"arch": "cxr_net", "epochs": 1}, opts)
    wait_for(lambda: state(run) == "failed", what="failed")
    assert "exploded on purpose" in jobs.summarize(run).error


def test_cancel_running_and_queued(fake: tuple[Config, jobs.JobOptions], monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancel stops a running run after its batch (cancelled) and takes a queued one out of the queue."""
    cfg, opts = fake
    monkeypatch.setenv("FAKE_SLEEP", "0.5")
    first = jobs.launch(cfg, {"arch": "cxr_net", "epochs": 50}, opts)
    second = jobs.launch(cfg, {"arch": "cxr_net", "epochs": 50}, opts)
    wait_for(lambda: state(first) == "running", what="start")
    assert jobs.cancel(cfg, second.name, opts).startswith("removed")
    assert state(second) == "cancelled"
    jobs.cancel(cfg, first.name, opts)
    wait_for(lambda: state(first) == "cancelled", what="cancelled")
    assert jobs.summarize(first).epoch < 50
    wait_for(lambda: not jobs.worker_alive(cfg), what="worker exit")
    assert state(second) == "cancelled" and not (second / "status.json").exists()


def test_delete_moves_to_trash_and_refuses_active(fake: tuple[Config, jobs.JobOptions]) -> None:
    """Delete moves a finished run into the trash folder; a queued run is refused."""
    cfg, opts = fake
    run = cfg.runs_dir / "r1"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"status": "done", "created": "2026-01-01T00:00:00+00:00"}))
    (run / "job.json").write_text(json.dumps({"state": "queued"}))
    with pytest.raises(jobs.JobError, match="cancel it"):
        jobs.delete_run(cfg, "r1", opts)
    (run / "job.json").write_text(json.dumps({"state": "ended"}))
    target = jobs.delete_run(cfg, "r1", opts)
    assert target.parent == cfg.trash_dir and (target / "status.json").exists() and not run.exists()
    with pytest.raises(jobs.JobError, match="no run"):
        jobs.delete_run(cfg, "r1", opts)


def test_progress_and_eta() -> None:
    """Progress counts finished epochs plus the current batch; ETA from measured epoch seconds."""
    import pandas as pd

    metrics = pd.DataFrame({"epoch": [1], "seconds": [10.0]})
    fraction, eta = jobs.progress(
        {"status": "running", "epochs": 4, "epoch": 2, "batch": 5, "batches_per_epoch": 10}, metrics
    )
    assert fraction == pytest.approx(1.5 / 4) and eta == pytest.approx(25.0)
    assert jobs.progress({"status": "done", "epochs": 4}) == (1.0, 0.0)


@pytest.mark.slow
def test_real_tiny_run_queued_running_done_kill_resume(tmp_path: Path, make_cfg: Callable[..., Config]) -> None:
    """The real ``cxr train`` (64 px, 120 images, 2 epochs): queued -> running -> done, then kill -9 and resume."""
    # 60 images per class: an epoch lasts long enough on an idle machine for the poll below to see one metrics row
    data = write_dataset(tmp_path / "data", n_per_class=60, size=64)
    cfg = make_cfg(data_dir=data)
    opts = jobs.JobOptions(poll_seconds=0.5)
    request = {"arch": "cxr_net", "epochs": 2, "size": 64, "batch": 8, "method": "none"}
    run = jobs.launch(cfg, request, opts)
    assert state(run) == "queued"
    seen, rows = [], []
    deadline = time.monotonic() + 300
    while state(run) not in jobs.TERMINAL and time.monotonic() < deadline:
        seen.append(state(run))
        rows.append(metric_rows(run))
        time.sleep(0.1)
    assert state(run) == "done", jobs.log_tail(run, 30)
    assert "running" in seen and metric_rows(run) == 2 and 1 in rows
    killed = jobs.launch(cfg, {**request, "epochs": 3}, opts)
    wait_for(
        lambda: metric_rows(killed) >= 1 and (killed / "checkpoints" / "best.keras").exists(),
        timeout=300,
        what="first epoch (metrics and checkpoints) of the run to kill",
    )
    os.kill(int(jobs.effective_status(killed)["pid"]), signal.SIGKILL)
    wait_for(lambda: state(killed) == "interrupted", what="interrupted")
    jobs.resume(cfg, killed.name, opts)
    wait_for(lambda: (now := state(killed)) in jobs.TERMINAL and now != "interrupted", timeout=300, what="resume")
    assert state(killed) == "done", jobs.log_tail(killed, 30)
    epochs = [int(float(line.split(",")[0])) for line in (killed / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [1, 2, 3]


def test_cxr_runs_command(
    fake: tuple[Config, jobs.JobOptions], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cxr runs --json`` lists runs with their judged status; refusals are one-line errors with exit code 2."""
    from cxr_core.cli.parser import main

    cfg, _ = fake
    monkeypatch.setenv("CXR_HOME", str(cfg.home))
    run = cfg.runs_dir / "r-dead"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"status": "running", "pid": 2**22 + 4321, "epochs": 2}))
    assert main(["runs", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["id"], r["status"]) for r in listed] == [("r-dead", "interrupted")]
    assert main(["runs", "cancel", "r-dead"]) == 2
    assert main(["runs", "delete", "r-dead"]) == 2
    assert "--yes" in capsys.readouterr().err and run.exists()
    assert main(["runs", "delete", "r-dead", "--yes"]) == 0 and not run.exists()
