"""Progress reporting for the command line: a tqdm bar on stderr usable as a ``progress(done, total)`` callback."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm import tqdm

Progress = Callable[[int, int], None]
"""A ``progress(done, total)`` callback: every long library call takes one."""
StageProgress = Callable[[str, int, int, Mapping[str, Any]], None]
"""A ``progress(stage, done, total, info)`` callback of work in stages (training: load, batch, epoch)."""


@dataclass(frozen=True)
class TrainerBudget:
    """Options the small trainers (lung segmenter, markings net) share; each trainer's config extends it."""

    epochs: int = 20
    batch: int = 32
    lr: float = 1e-3
    max_minutes: float = 20.0
    seed: int = 1337
    limit: int | None = None


class ProgressBar:
    """A stderr progress bar (none when stderr is not a terminal) that library code calls as ``progress(done, total)``."""

    def __init__(self, desc: str, unit: str = "img") -> None:
        """Open an empty bar labelled ``desc``; without a terminal there is none, and tqdm is not even imported."""
        self.bar: tqdm | None = None
        if sys.stderr is not None and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=0, unit=unit, desc=desc, leave=False)

    def __call__(self, done: int, total: int) -> None:
        """Show ``done`` of ``total``."""
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()

    def stage(self, desc: str, total: int = 0) -> None:
        """Start a new stage of the work under another label."""
        if self.bar is not None:
            self.bar.reset(total=total)
            self.bar.set_description(desc)

    def __enter__(self) -> ProgressBar:
        """Use as a context manager that closes the bar."""
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


def epoch_budget_callback(
    epochs: int, deadline: float, log: Callable[[str], None], desc: str, keys: Sequence[str] = ("loss", "val_loss")
) -> Any:
    """A Keras callback: a tqdm epoch bar on stderr, one ``log`` line per epoch with ``keys`` of the epoch's logs,
    and a stop once ``time.time()`` passes ``deadline`` (the wall-time budget)."""
    import keras
    from tqdm import tqdm

    class EpochBudget(keras.callbacks.Callback):
        """Epoch progress bar, per-epoch log line, wall-time stop; also across one-epoch ``fit`` calls in a loop."""

        def __init__(self) -> None:
            """Start the clock; the bar opens at the first epoch's end."""
            super().__init__()
            self.bar: tqdm | None = None
            self.started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            """Advance the bar, log the metrics and stop at the deadline."""
            logs = logs or {}
            if self.bar is None:
                self.bar = tqdm(total=epochs, desc=desc, unit="epoch", disable=None, leave=False)
            self.bar.n = epoch + 1
            self.bar.refresh()
            values = " ".join(f"{key} {logs.get(key, 0):.4f}" for key in keys)
            log(f"epoch {epoch + 1}/{epochs}: {values} ({time.monotonic() - self.started:.0f} s)")
            if time.time() > deadline:
                log("wall-time budget reached: stopping")
                self.model.stop_training = True

        def on_train_end(self, logs: dict | None = None) -> None:
            """Close the bar when training is over (last epoch reached or stopped)."""
            if self.bar is not None and (self.bar.n >= epochs or self.model.stop_training):
                self.bar.close()

    return EpochBudget()
