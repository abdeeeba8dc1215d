"""Reproducible train/val/test splits grouped by patient (and exact duplicates), stratified by label and source."""

from __future__ import annotations

import hashlib

import pandas as pd

SPLIT_NAMES = ("train", "val", "test")


class _UnionFind:
    """Disjoint sets over hashable keys."""

    def __init__(self) -> None:
        """Start with no sets."""
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        """Representative of ``key``'s set (path-halving)."""
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: str, b: str) -> None:
        """Merge the sets of ``a`` and ``b`` (the smaller key becomes the representative)."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            low, high = sorted((ra, rb))
            self.parent[high] = low


def patient_groups(frame: pd.DataFrame) -> pd.Series:
    """Group key per row: patients joined whenever they share an identical image (same sha256)."""
    sets = _UnionFind()
    for patient, sha in zip(frame["patient_id"], frame["sha256"]):
        sets.union(f"p:{patient}", f"h:{sha}" if sha else f"p:{patient}")
    return pd.Series([sets.find(f"p:{p}") for p in frame["patient_id"]], index=frame.index)


def _rank(seed: int, key: str) -> str:
    """A stable pseudo-random sort key for a group."""
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def assign_splits(frame: pd.DataFrame, fractions: tuple[float, float, float], seed: int) -> pd.Series:
    """Split readable rows so no group spans two splits; each label x source stratum is cut at the fractions.

    Groups are ordered by a seeded hash, so adding images moves few existing groups. Unreadable rows get "".
    """
    result = pd.Series("", index=frame.index, dtype=object)
    readable = frame[frame["error"] == ""]
    if readable.empty:
        return result
    groups = patient_groups(readable)
    info = pd.DataFrame({"group": groups, "label": readable["label"], "source": readable["source"]})
    per_group = info.groupby("group").agg(
        label=("label", lambda s: s.value_counts().index[0]),
        source=("source", lambda s: s.value_counts().index[0]),
        size=("label", "size"),
    )
    per_group["rank"] = [_rank(seed, g) for g in per_group.index]
    bounds = (fractions[0], fractions[0] + fractions[1])
    chosen: dict[str, str] = {}
    for _, stratum in per_group.sort_values("rank").groupby(["label", "source"], sort=True):
        total = stratum["size"].sum()
        before = 0
        for group, size in zip(stratum.index, stratum["size"]):
            position = (before + size / 2) / total
            chosen[group] = SPLIT_NAMES[0] if position < bounds[0] else SPLIT_NAMES[1] if position < bounds[1] else SPLIT_NAMES[2]
            before += size
    result.loc[readable.index] = [chosen[g] for g in groups]
    return result
