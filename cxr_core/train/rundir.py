"""Training run directories: ids, atomic JSON/CSV writes, status with heartbeat, and readers for the dashboard.

Layout of ``cfg.runs_dir/<run_id>/`` (see BRIEF.md): ``config.json``, ``status.json``, ``metrics.csv``,
``batches.csv``, ``train.log``, ``split.csv``, ``checkpoints/``, ``model/`` (plus ``job.json`` when the job runner
queued it). Readers (:func:`run_dirs`, :func:`read_status`, :func:`read_config`, :func:`read_metrics`,
:func:`read_batches`, :func:`log_tail`) never raise on a half-written or missing file: they return what can be read.
The liveness judgement (:func:`stale_reason`: pid gone or heartbeat stale) lives here once.
"""

from __future__ import annotations

import csv
import io
import math
import os
import secrets
import socket
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from cxr_core.config import Config
from cxr_core.util import atomic
from cxr_core.util.atomic import read_json_object, write_text_atomic
from cxr_core.util.clock import utc_now
from cxr_core.util.processes import pid_alive

STATUS_FILE = "status.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
BATCHES_FILE = "batches.csv"
LOG_FILE = "train.log"
SPLIT_FILE = "split.csv"
CANCEL_FILE = "cancel.request"
JOB_FILE = "job.json"
CHECKPOINTS = "checkpoints"
MODEL_DIR = "model"
METRICS_COLUMNS = ("epoch", "loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc", "lr", "seconds")
BATCHES_COLUMNS = ("epoch", "batch", "step", "loss", "accuracy")
STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
ACTIVE = ("queued", "running")


def new_run_id(arch: str) -> str:
    """A sortable unique run id: ``YYYYmmdd-HHMMSS-<arch>-<4 hex>``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{arch}-{secrets.token_hex(2)}"


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats replaced by None and numpy scalars by Python ones (recursively)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json_safe(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write a JSON object atomically after :func:`json_safe` (so NaN becomes null)."""
    return atomic.write_json_atomic(path, json_safe(data))


def write_csv_atomic(path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write rows (dicts) as CSV with exactly ``columns``, atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buffer.getvalue())


def read_csv_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings, ``[]`` when missing."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError:
        return []


def create_run_dir(cfg: Config, arch: str, run_dir: str | Path | None = None) -> Path:
    """Create a new run directory (``run_dir`` or ``cfg.runs_dir/<new id>``) with status ``queued``."""
    path = Path(run_dir) if run_dir else cfg.runs_dir / new_run_id(arch)
    if (path / STATUS_FILE).exists():
        raise FileExistsError(f"{path} already holds a run; use --resume {path} to continue it")
    (path / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    now = utc_now()
    write_json_safe(
        path / STATUS_FILE,
        {"status": "queued", "pid": os.getpid(), "host": socket.gethostname(), "created": now, "updated": now},
    )
    return path


def update_status(run_dir: str | Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into ``status.json``, refresh the ``updated`` heartbeat, and return the new status."""
    path = Path(run_dir) / STATUS_FILE
    status = read_json_object(path)
    status.update(fields)
    status["updated"] = utc_now()
    write_json_safe(path, status)
    return status


def parse_time(value: Any) -> datetime | None:
    """Parse an ISO 8601 timestamp (naive ones are taken as UTC); None when absent or invalid."""
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def stale_reason(status: Mapping[str, Any], heartbeat_timeout: float | None = None, now: datetime | None = None) -> str:
    """Why a queued/running status is no longer live, ``""`` when it is live (or not active).

    Dead: its pid is gone on this host, or (when ``heartbeat_timeout`` is given) its ``updated`` heartbeat is older
    than ``heartbeat_timeout`` seconds.
    """
    if status.get("status") not in ACTIVE:
        return ""
    same_host = status.get("host") in (None, socket.gethostname())
    if same_host and not pid_alive(status.get("pid")):
        return f"process {status.get('pid')} is gone without recording an end"
    beat = parse_time(status.get("updated")) or parse_time(status.get("started"))
    if heartbeat_timeout is not None and beat is not None:
        age = ((now or datetime.now(UTC)) - beat).total_seconds()
        if age > heartbeat_timeout:
            return f"no heartbeat for {age:.0f} s (process {status.get('pid')} looks hung)"
    return ""


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """``status.json`` of a run; a queued/running run whose process is gone is reported as ``interrupted``.

    The returned dict always has ``status`` and ``run_id``; ``{"status": "unknown"}`` when there is no file.
    """
    run_dir = Path(run_dir)
    status = read_json_object(run_dir / STATUS_FILE) or {"status": "unknown"}
    status["run_id"] = run_dir.name
    if stale_reason(status):
        status["status"] = "interrupted"
    return status


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """``config.json`` of a run (the TrainConfig plus data details), ``{}`` when missing."""
    return read_json_object(Path(run_dir) / CONFIG_FILE)


def _read_frame(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    """A CSV as a numeric DataFrame with at least ``columns``; empty when the file is missing or unreadable."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError):
        return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    for column in columns:
        if column not in frame:
            frame[column] = float("nan")
    return frame.apply(pd.to_numeric, errors="coerce")


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """Per-epoch metrics (``metrics.csv``: epoch, loss, accuracy, auc, val_*, lr, seconds), one row per epoch."""
    return _read_frame(Path(run_dir) / METRICS_FILE, METRICS_COLUMNS)


def read_batches(run_dir: str | Path) -> pd.DataFrame:
    """Per-batch training loss and accuracy (``batches.csv``: epoch, batch, step, loss, accuracy)."""
    return _read_frame(Path(run_dir) / BATCHES_FILE, BATCHES_COLUMNS)


def run_dirs(cfg: Config) -> list[Path]:
    """Every run directory under ``cfg.runs_dir`` (one with a status or job file), oldest first."""
    if not cfg.runs_dir.is_dir():
        return []
    dirs = [p for p in cfg.runs_dir.iterdir() if p.is_dir() and ((p / STATUS_FILE).exists() or (p / JOB_FILE).exists())]
    return sorted(dirs, key=_queue_order)


def _queue_order(run_dir: Path) -> tuple[str, int, str]:
    """Sort key of a run: when it was queued or created, then the launch's nanosecond stamp (FIFO within a second)."""
    job = read_json_object(run_dir / JOB_FILE)
    return (
        str(job.get("queued") or read_json_object(run_dir / STATUS_FILE).get("created") or ""),
        int(job.get("queued_ns") or 0),
        run_dir.name,
    )


def log_tail(run_dir: str | Path, lines: int = 20) -> str:
    """The last ``lines`` lines of the run's ``train.log`` (progress-bar carriage returns folded)."""
    try:
        with open(Path(run_dir) / LOG_FILE, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64_000))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    rows = [row.rsplit("\r", 1)[-1] for row in text.replace("\r\n", "\n").split("\n")]
    return "\n".join([row for row in rows if row.strip()][-lines:])


def request_cancel(run_dir: str | Path) -> Path:
    """Ask a running training to stop after its current batch (creates ``cancel.request``)."""
    return write_text_atomic(Path(run_dir) / CANCEL_FILE, utc_now() + "\n")


def cancel_requested(run_dir: str | Path) -> bool:
    """True when ``cancel.request`` exists in the run directory."""
    return (Path(run_dir) / CANCEL_FILE).exists()


def clear_cancel(run_dir: str | Path) -> None:
    """Remove a pending ``cancel.request`` (when a run ends cancelled or is resumed)."""
    (Path(run_dir) / CANCEL_FILE).unlink(missing_ok=True)
