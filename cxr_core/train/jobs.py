"""Background training jobs: a file-locked queue of run directories, a detached worker, liveness, cancel and resume.

Design: a launch creates ``runs/<id>/job.json`` (the request, its full ``TrainConfig`` as ``train``, the command
``cxr train --config job.json --run-dir DIR``, queue ``state`` = ``queued``) while holding an exclusive ``fcntl.flock`` on ``<home>/jobs/queue.lock``, then spawns a
detached queue worker (``python -m cxr_core.train.jobs worker``, ``start_new_session=True``). At most one worker lives at
a time (it holds ``<home>/jobs/worker.lock`` while it runs; another one exits at once). Under the queue lock the
worker starts the oldest queued runs while fewer than ``max_parallel`` runs are alive, each as its own detached
process (new session, output appended to the run's ``train.log``), so killing the worker, the browser or
Streamlit never kills training. When a child exits without recording its end (kill -9, a crash before training
began) the worker records ``interrupted``/``failed``/``cancelled`` in ``status.json``; with nothing queued or
running it exits. All state lives in run directories; readers judge liveness themselves (pid gone or heartbeat
stale means ``interrupted``), so a run never shows ``running`` forever, and :func:`ensure_worker` restarts the queue
when runs wait without a worker (e.g. after a reboot). ``status.json`` belongs to ``cxr train``
(:mod:`cxr_core.train.rundir`); the runner only writes it when no training process is alive for that run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pandas as pd

from cxr_core.config import Config, load_config
from cxr_core.train.config import TrainConfig, config_from_options
from cxr_core.train.rundir import (
    ACTIVE,
    JOB_FILE,
    LOG_FILE,
    MODEL_DIR,
    STATUS_FILE,
    cancel_requested,
    clear_cancel,
    log_tail,
    new_run_id,
    parse_time,
    pid_alive,
    read_config,
    request_cancel,
    run_dirs,
    stale_reason,
    update_status,
)
from cxr_core.util.atomic import read_json_object, write_json_atomic
from cxr_core.util.clock import utc_now

RESUMABLE = frozenset({"cancelled", "failed", "interrupted"})
TERMINAL = frozenset({"done", "failed", "cancelled", "interrupted"})
REPO_ROOT = Path(__file__).resolve().parents[2]


class JobError(ValueError):
    """A job operation is not possible (unknown run, wrong state, bad request); the message is one line."""


@dataclass(frozen=True)
class JobOptions:
    """How the job runner behaves: parallel runs, liveness timeout, polling and the command that trains."""

    max_parallel: int = 1
    heartbeat_timeout: float = 900.0
    poll_seconds: float = 1.0
    python: str = field(default_factory=lambda: sys.executable)
    train_command: tuple[str, ...] = ("-m", "cxr_core", "train")


@dataclass(frozen=True)
class RunSummary:
    """One row of the run history, read from a run directory (status already judged for liveness)."""

    id: str
    path: Path
    status: str
    arch: str
    config: dict[str, Any]
    created: str | None
    started: str | None
    finished: str | None
    duration_seconds: float | None
    epoch: int
    epochs: int
    best_val_auc: float | None
    best_epoch: int | None
    test_auc: float | None
    error: str
    note: str
    cancel_requested: bool
    has_model: bool


def jobs_dir(cfg: Config) -> Path:
    """Folder of the runner's lock files and worker log."""
    path = cfg.home / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def queue_lock(cfg: Config) -> Iterator[None]:
    """Hold the exclusive queue lock (blocking) so launches, starts and state changes never race."""
    with open(jobs_dir(cfg) / "queue.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_job(run_dir: Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into the run's ``job.json`` atomically."""
    job = read_json_object(run_dir / JOB_FILE)
    job.update(changes)
    write_json_atomic(run_dir / JOB_FILE, job)
    return job


def _recorded_since(raw: Mapping[str, Any], started: Any) -> bool:
    """True when ``status.json`` was written by the process started at ``started`` (running or finished)."""
    updated, begun = parse_time(raw.get("updated")), parse_time(started)
    return (
        bool(raw) and updated is not None and begun is not None and updated >= begun and (raw.get("status") != "queued")
    )


def judge_status(
    raw: Mapping[str, Any],
    job: Mapping[str, Any] | None = None,
    opts: JobOptions = JobOptions(),
    now: datetime | None = None,
) -> dict[str, Any]:
    """The effective status of a run from its ``status.json`` (``raw``) and ``job.json``, judged for liveness.

    Queued in the runner's queue wins; a process that is starting or training counts as ``running`` while its pid
    lives and its ``updated`` heartbeat is fresh, and as ``interrupted`` (with a ``note`` saying why) otherwise.
    """
    job = job or {}
    status = dict(raw)
    status["note"] = ""
    if job.get("state") == "queued":
        status["status"] = "queued"
        return status
    if job.get("state") == "started" and pid_alive(job.get("pid")) and not _recorded_since(raw, job.get("started")):
        status.update(status="running", pid=job.get("pid"), note="starting")
        return status
    if not raw:
        status["status"] = "cancelled" if job.get("state") == "dequeued" else "interrupted"
        status["note"] = "" if job.get("state") == "dequeued" else "the training process ended before it wrote a status"
        return status
    if status.get("status") not in ACTIVE:
        return status
    status["note"] = stale_reason(status, opts.heartbeat_timeout, now)
    status["status"] = "interrupted" if status["note"] else "running"
    return status


def effective_status(run_dir: Path, opts: JobOptions = JobOptions()) -> dict[str, Any]:
    """The run's effective status: ``status.json`` judged with ``job.json`` for liveness (see :func:`judge_status`);
    :func:`cxr_core.train.rundir.read_status` is the file as written."""
    run_dir = Path(run_dir)
    return judge_status(read_json_object(run_dir / STATUS_FILE), read_json_object(run_dir / JOB_FILE), opts)


def run_config(run_dir: Path) -> dict[str, Any]:
    """The run's flat training configuration: ``config.json`` written by ``cxr train`` over the queued request."""
    run_dir = Path(run_dir)
    config = dict(read_json_object(run_dir / JOB_FILE).get("request") or {})
    written = read_config(run_dir)
    config.update({k: v for k, v in written.items() if not isinstance(v, dict)})
    for section in ("train", "preprocess"):
        if isinstance(written.get(section), dict):
            config.update({k: v for k, v in written[section].items() if not isinstance(v, dict)})
    return config


def _test_auc(run_dir: Path) -> float | None:
    """Test ROC AUC from the run model's ``evaluation.json`` when it has been evaluated."""
    evaluation = read_json_object(run_dir / MODEL_DIR / "evaluation.json")
    return _float_or_none(evaluation.get("roc_auc"))


def _float_or_none(value: Any) -> float | None:
    """``value`` as a finite float, else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def summarize(run_dir: Path, opts: JobOptions = JobOptions()) -> RunSummary:
    """A :class:`RunSummary` for one run directory."""
    run_dir = Path(run_dir)
    status = effective_status(run_dir, opts)
    config = run_config(run_dir)
    started, finished = parse_time(status.get("started")), parse_time(status.get("finished"))
    end = finished or (datetime.now(UTC) if status["status"] == "running" else parse_time(status.get("updated")))
    best_epoch = _float_or_none(status.get("best_epoch"))
    return RunSummary(
        id=run_dir.name,
        path=run_dir,
        status=str(status["status"]),
        arch=str(config.get("arch", "")),
        config=config,
        created=status.get("created") or read_json_object(run_dir / JOB_FILE).get("queued"),
        started=status.get("started"),
        finished=status.get("finished"),
        duration_seconds=(end - started).total_seconds() if started and end else None,
        epoch=int(_float_or_none(status.get("epoch")) or 0),
        epochs=int(_float_or_none(status.get("epochs")) or _float_or_none(config.get("epochs")) or 0),
        best_val_auc=_float_or_none(status.get("best_val_auc")),
        best_epoch=int(best_epoch) if best_epoch is not None else None,
        test_auc=_test_auc(run_dir),
        error=str(status.get("error") or ""),
        note=str(status["note"]),
        cancel_requested=cancel_requested(run_dir),
        has_model=(run_dir / MODEL_DIR / "model.keras").is_file(),
    )


def list_runs(cfg: Config, opts: JobOptions = JobOptions()) -> list[RunSummary]:
    """Summaries of all runs, newest first."""
    return [summarize(p, opts) for p in reversed(run_dirs(cfg))]


def runs_frame(runs: Sequence[RunSummary]) -> pd.DataFrame:
    """The run-history table: status, architecture, key config, best val AUC, test AUC, duration, started."""
    rows = [
        {
            "run": r.id,
            "status": r.status,
            "arch": r.arch,
            "size": r.config.get("size"),
            "method": r.config.get("method"),
            "epochs": f"{r.epoch}/{r.epochs}" if r.epochs else "",
            "lr": r.config.get("lr"),
            "batch": r.config.get("batch"),
            "best val AUC": r.best_val_auc,
            "test AUC": r.test_auc,
            "duration (min)": round(r.duration_seconds / 60, 1) if r.duration_seconds is not None else None,
            "started": (r.started or r.created or "").replace("T", " ")[:19],
        }
        for r in runs
    ]
    return pd.DataFrame(
        rows,
        columns=[
            "run",
            "status",
            "arch",
            "size",
            "method",
            "epochs",
            "lr",
            "batch",
            "best val AUC",
            "test AUC",
            "duration (min)",
            "started",
        ],
    )


def find_run(cfg: Config, run: str | Path) -> Path:
    """Resolve a run id or path to an existing run directory; :class:`JobError` otherwise."""
    candidate = Path(run)
    path = candidate if candidate.is_dir() else cfg.runs_dir / str(run)
    if not path.is_dir() or not ((path / STATUS_FILE).exists() or (path / JOB_FILE).exists()):
        raise JobError(f"no run {str(run)!r} under {cfg.runs_dir}")
    return path.resolve()


def progress(status: Mapping[str, Any], metrics: pd.DataFrame | None = None) -> tuple[float, float | None]:
    """Fraction of the run done (epochs and batches) and the estimated seconds left (None when unknown)."""
    epochs = int(_float_or_none(status.get("epochs")) or 0)
    if status.get("status") == "done":
        return 1.0, 0.0
    if epochs <= 0:
        return 0.0, None
    batch = _float_or_none(status.get("batch")) or 0.0
    per_epoch = _float_or_none(status.get("batches_per_epoch")) or 0.0
    done_epochs = len(metrics) if metrics is not None else 0
    current = int(_float_or_none(status.get("epoch")) or 0)
    within = min(batch / per_epoch, 1.0) if per_epoch and done_epochs < min(current, epochs) else 0.0
    fraction = min((done_epochs + within) / epochs, 1.0)
    eta = None
    if metrics is not None and len(metrics) and "seconds" in metrics:
        seconds = _float_or_none(metrics["seconds"].dropna().tail(3).mean())
        if seconds is not None:
            eta = max(epochs - done_epochs - within, 0.0) * seconds
    return fraction, eta


def request_config(request: Mapping[str, Any]) -> tuple[dict[str, Any], TrainConfig]:
    """A training request (flat option names, as the Training page sends them) cleaned and as a validated config.

    Empty values mean the option's default. :class:`JobError` names the first problem.
    """
    clean = {k: v for k, v in request.items() if v is not None and v != "" and v != {}}
    if not clean.get("arch"):
        raise JobError("choose an architecture")
    try:
        return clean, config_from_options(clean).validate()
    except ValueError as exc:
        raise JobError(str(exc)) from exc


def validate_request(request: Mapping[str, Any]) -> dict[str, Any]:
    """Check a training request and return it cleaned; :class:`JobError` names the first problem."""
    return request_config(request)[0]


def _child_env(cfg: Config) -> dict[str, str]:
    """Environment for worker and training processes: the same config, the repo importable."""
    env = dict(os.environ)
    env.update(
        {
            "CXR_HOME": str(cfg.home),
            "CXR_DATA_DIR": str(cfg.data_dir),
            "CXR_MODELS_DIR": str(cfg.models_dir),
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        }
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def launch(cfg: Config, request: Mapping[str, Any], opts: JobOptions = JobOptions()) -> Path:
    """Queue a training run and make sure a worker runs it.

    The run dir's ``job.json`` holds the request, the full ``TrainConfig.to_dict()`` as ``train``, and the command
    ``cxr train --config job.json --run-dir RUN``, so the worker builds the config from that file.
    """
    clean, tc = request_config(request)
    cfg.runs_dir.mkdir(parents=True, exist_ok=True)
    with queue_lock(cfg):
        run_dir = cfg.runs_dir / new_run_id(tc.arch)
        run_dir.mkdir()
        argv = [opts.python, *opts.train_command, "--config", str(run_dir / JOB_FILE), "--run-dir", str(run_dir)]
        write_json_atomic(
            run_dir / JOB_FILE,
            {
                "request": clean,
                "train": tc.to_dict(),
                "argv": argv,
                "kind": "train",
                "state": "queued",
                "queued": utc_now(),
                "queued_ns": time.time_ns(),
                "pid": None,
            },
        )
    spawn_worker(cfg, opts)
    return run_dir


@contextlib.contextmanager
def _locked_run(cfg: Config, run: str | Path, opts: JobOptions) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Find the run, then hold the queue lock while the caller acts on it and its effective status."""
    run_dir = find_run(cfg, run)
    with queue_lock(cfg):
        yield run_dir, effective_status(run_dir, opts)


def resume(cfg: Config, run: str | Path, opts: JobOptions = JobOptions()) -> Path:
    """Queue ``cxr train --resume RUN_DIR`` for a cancelled, failed or interrupted run."""
    with _locked_run(cfg, run, opts) as (run_dir, status):
        if status["status"] not in RESUMABLE:
            raise JobError(
                f"run {run_dir.name} is {status['status']}; only cancelled, failed or interrupted runs resume"
            )
        if not (run_dir / STATUS_FILE).exists():
            raise JobError(f"run {run_dir.name} never started training; launch a new run instead")
        if pid_alive(status.get("pid")):
            raise JobError(f"run {run_dir.name}: process {status.get('pid')} is still alive; stop it before resuming")
        clear_cancel(run_dir)
        _write_job(
            run_dir,
            argv=[opts.python, *opts.train_command, "--resume", str(run_dir)],
            kind="resume",
            state="queued",
            queued=utc_now(),
            queued_ns=time.time_ns(),
            pid=None,
        )
    spawn_worker(cfg, opts)
    return run_dir


def cancel(cfg: Config, run: str | Path, opts: JobOptions = JobOptions()) -> str:
    """Cancel a run: a queued one leaves the queue at once; a running one stops after its current batch."""
    with _locked_run(cfg, run, opts) as (run_dir, status):
        state = status["status"]
        if state == "queued":
            _write_job(run_dir, state="dequeued")
            return "removed from the queue"
        if state != "running":
            raise JobError(f"run {run_dir.name} is {state}; only queued or running runs can be cancelled")
        request_cancel(run_dir)
        return "cancel requested: training stops after the current batch"


def delete_run(cfg: Config, run: str | Path, opts: JobOptions = JobOptions()) -> Path:
    """Move a run that is not queued or running into ``cfg.trash_dir`` (nothing is removed)."""
    with _locked_run(cfg, run, opts) as (run_dir, status):
        state = status["status"]
        if state in ("queued", "running"):
            raise JobError(f"run {run_dir.name} is {state}; cancel it before deleting")
        cfg.trash_dir.mkdir(parents=True, exist_ok=True)
        target = cfg.trash_dir / f"run-{run_dir.name}-{datetime.now(UTC).strftime('%Y%m%d%H%M%S')}"
        shutil.move(str(run_dir), str(target))
    return target


def promote(cfg: Config, run: str | Path, name: str, make_default: bool = False) -> Path:
    """Register a finished run's model (``run/model``) in the model registry under ``name``."""
    from cxr_core.serve import registry

    run_dir = find_run(cfg, run)
    model_dir = run_dir / MODEL_DIR
    if not (model_dir / "model.keras").is_file():
        raise JobError(
            f"run {run_dir.name} has no finished model to promote (status {effective_status(run_dir)['status']})"
        )
    try:
        return Path(registry.register_model(model_dir, cfg, name, make_default=make_default))
    except (registry.RegistryError, OSError) as exc:
        raise JobError(str(exc)) from exc


def spawn_worker(cfg: Config, opts: JobOptions = JobOptions()) -> int:
    """Start a detached queue worker (it exits at once if another one is alive); returns its pid."""
    argv = [
        opts.python,
        "-m",
        "cxr_core.train.jobs",
        "worker",
        "--max-parallel",
        str(opts.max_parallel),
        "--heartbeat-timeout",
        str(opts.heartbeat_timeout),
        "--poll",
        str(opts.poll_seconds),
    ]
    with open(jobs_dir(cfg) / "worker.log", "ab") as log:
        return _detached(cfg, argv, log).pid


def _detached(cfg: Config, argv: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session from the repository root with the work dir's environment, output to ``log``."""
    return subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=_child_env(cfg),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def worker_alive(cfg: Config) -> bool:
    """True when a queue worker holds the worker lock."""
    with open(jobs_dir(cfg) / "worker.lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def ensure_worker(cfg: Config, opts: JobOptions = JobOptions()) -> bool:
    """Restart the queue when runs wait without a worker (e.g. after a reboot); True when one was spawned."""
    if any(read_json_object(p / JOB_FILE).get("state") == "queued" for p in run_dirs(cfg)) and not worker_alive(cfg):
        spawn_worker(cfg, opts)
        return True
    return False


def _start(cfg: Config, run_dir: Path, opts: JobOptions) -> subprocess.Popen[bytes]:
    """Start a queued run's command as a detached process appending to ``train.log``; records its pid."""
    job = read_json_object(run_dir / JOB_FILE)
    argv = [opts.python, *list(job.get("argv") or [])[1:]]
    if len(argv) < 2:
        raise JobError(f"run {run_dir.name} has no command in job.json")
    with open(run_dir / LOG_FILE, "ab") as log:
        log.write(f"[{utc_now()}] job runner starts: {' '.join(argv[1:])}\n".encode())
        log.flush()
        proc = _detached(cfg, argv, log)
    _write_job(run_dir, state="started", pid=proc.pid, started=utc_now())
    return proc


def finalize(run_dir: Path, pid: int, returncode: int) -> str:
    """Record the end of child ``pid`` if it exited without recording it itself; returns the final status.

    A run queued again (resumed) after this child died is left alone.
    """
    if read_json_object(run_dir / JOB_FILE).get("pid") != pid:
        return "queued again"
    job = _write_job(run_dir, state="ended", returncode=returncode, ended=utc_now())
    raw = read_json_object(run_dir / STATUS_FILE)
    if raw.get("status") in TERMINAL and _recorded_since(raw, job.get("started")):
        return str(raw["status"])
    if cancel_requested(run_dir) and returncode <= 0:
        final, error = "cancelled", ""
    elif returncode < 0:
        final, error = "interrupted", f"killed by signal {-returncode}"
    elif returncode == 0:
        final, error = "failed", "cxr train exited without recording its result"
    else:
        final, error = "failed", log_tail(run_dir, 25) or f"cxr train exited with code {returncode}"
    defaults = {"created": job.get("queued"), "started": job.get("started"), "pid": job.get("pid")}
    update_status(
        run_dir, **{k: v for k, v in defaults.items() if k not in raw}, status=final, error=error, finished=utc_now()
    )
    return final


def run_worker(cfg: Config, opts: JobOptions = JobOptions()) -> int:
    """The queue worker loop: start queued runs while slots are free, record exits, leave when all is done."""
    handle = open(jobs_dir(cfg) / "worker.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return 0
    children: dict[Path, subprocess.Popen[bytes]] = {}
    while True:
        for run_dir, proc in list(children.items()):
            if proc.poll() is not None:
                with queue_lock(cfg):
                    final = finalize(run_dir, proc.pid, proc.returncode)
                print(f"[{utc_now()}] {run_dir.name} exited with {proc.returncode}: {final}", flush=True)
                del children[run_dir]
        with queue_lock(cfg):
            states = {p: effective_status(p, opts)["status"] for p in run_dirs(cfg)}
            queued = [p for p, s in states.items() if s == "queued" and p not in children]
            busy = set(children) | {p for p, s in states.items() if s == "running"}
            free = max(opts.max_parallel - len(busy), 0)
            for run_dir in queued[:free]:
                try:
                    children[run_dir] = _start(cfg, run_dir, opts)
                    print(f"[{utc_now()}] started {run_dir.name} as pid {children[run_dir].pid}", flush=True)
                except (OSError, JobError) as exc:
                    _write_job(run_dir, state="ended")
                    update_status(run_dir, status="failed", error=str(exc), finished=utc_now())
            if not children and len(queued) <= free:
                handle.close()
                return 0
        time.sleep(opts.poll_seconds)


def estimate_epoch_seconds(
    arch: str, size: int, batch: int, n_train: int, steps: int = 3, hparams: Mapping[str, Any] | None = None
) -> dict[str, float]:
    """Parameter count and seconds per epoch of ``arch`` from timing ``steps`` training batches on random input.

    The model is built without pre-trained weights (timing does not depend on them) and trained with Adam on
    random 0-255 images of ``size`` px; one warm-up batch is excluded from the timing.
    """
    import keras
    import numpy as np

    from cxr_core.train.architectures import build_model

    model = build_model(arch, size, **dict(hparams or {}))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 1)).astype("float32")
    y = keras.utils.to_categorical(rng.integers(0, 2, batch), 2)
    model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(max(1, steps)):
        model.train_on_batch(x, y)
    per_batch = (time.perf_counter() - start) / max(1, steps)
    return {
        "params": float(model.count_params()),
        "seconds_per_batch": per_batch,
        "seconds_per_epoch": per_batch * math.ceil(max(n_train, 1) / batch),
        "images_per_second": batch / per_batch,
    }


def count_params(arch: str, size: int, hparams: Mapping[str, Any] | None = None) -> int:
    """Number of parameters of ``arch`` built at ``size`` px (without pre-trained weights)."""
    from cxr_core.train.architectures import build_model

    return int(build_model(arch, size, **dict(hparams or {})).count_params())


def _main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cxr_core.train.jobs worker`` (the detached queue worker)."""
    parser = argparse.ArgumentParser(prog="python -m cxr_core.train.jobs")
    parser.add_argument("command", choices=["worker"])
    parser.add_argument("--max-parallel", type=int, default=1)
    parser.add_argument("--heartbeat-timeout", type=float, default=JobOptions.heartbeat_timeout)
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args(argv)
    opts = JobOptions(max_parallel=args.max_parallel, heartbeat_timeout=args.heartbeat_timeout, poll_seconds=args.poll)
    return run_worker(load_config(), opts)


if __name__ == "__main__":
    raise SystemExit(_main())
