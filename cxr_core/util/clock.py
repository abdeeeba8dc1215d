"""The project's one clock: UTC timestamps as ISO 8601 strings."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now(timespec: str = "seconds") -> str:
    """The current UTC time as ISO 8601 (``2026-12-04T07:50:00+00:00``; ``timespec`` as in ``isoformat``)."""
    return datetime.now(UTC).isoformat(timespec=timespec)
