"""Progress reporting for the command line: a tqdm bar on stderr usable as a ``progress(done, total)`` callback."""

from __future__ import annotations

from types import TracebackType

from tqdm import tqdm


class ProgressBar:
    """A stderr progress bar (hidden when stderr is not a terminal) that library code calls as ``progress(done, total)``."""

    def __init__(self, desc: str, unit: str = "img") -> None:
        """Open an empty bar labelled ``desc``."""
        self.bar = tqdm(total=0, unit=unit, desc=desc, disable=None, leave=False)

    def __call__(self, done: int, total: int) -> None:
        """Show ``done`` of ``total``."""
        self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def stage(self, desc: str, total: int = 0) -> None:
        """Start a new stage of the work under another label."""
        self.bar.reset(total=total)
        self.bar.set_description(desc)

    def __enter__(self) -> "ProgressBar":
        """Use as a context manager that closes the bar."""
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Close the bar."""
        self.bar.close()
