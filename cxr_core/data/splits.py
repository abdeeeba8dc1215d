"""Reproducible train/val/test splits grouped by patient (and exact duplicates), stratified by label and source."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "val", "test")


def patient_groups(frame: pd.DataFrame) -> pd.Series:
    """Group key per row: patients joined whenever they share an identical image (same sha256).

    The key is the smallest member of the group (``h:<sha256>`` before ``p:<patient>``), independent of merge order,
    so a group's key, and with it its seeded place in the split, stays stable. When no image is shared by two
    patients no groups merge, and each patient's key is found without building the disjoint sets.
    """
    hashed = frame["sha256"] != ""
    if not (frame[hashed].groupby("sha256")["patient_id"].nunique() > 1).any():
        smallest_hash = ("h:" + frame["sha256"]).where(hashed).groupby(frame["patient_id"]).transform("min")
        return smallest_hash.fillna("p:" + frame["patient_id"]).astype(object)
    from scipy.cluster.hierarchy import DisjointSet

    sets = DisjointSet()
    for patient, sha in zip(frame["patient_id"], frame["sha256"]):
        sets.add(f"p:{patient}")
        if sha:
            sets.add(f"h:{sha}")
            sets.merge(f"p:{patient}", f"h:{sha}")
    smallest: dict[str, str] = {}
    keys = []
    for patient in frame["patient_id"]:
        root = sets[f"p:{patient}"]
        if root not in smallest:
            smallest[root] = min(sets.subset(root))
        keys.append(smallest[root])
    return pd.Series(keys, index=frame.index)


def majority(groups: pd.Series, values: pd.Series) -> pd.Series:
    """Each group's most frequent value; ties go to the value seen first in the group's rows."""
    rows = pd.DataFrame({"group": groups.to_numpy(), "value": values.to_numpy(), "row": np.arange(len(groups))})
    counts = rows.groupby(["group", "value"], sort=False).agg(n=("row", "size"), first=("row", "min")).reset_index()
    best = counts.sort_values(["group", "n", "first"], ascending=[True, False, True], kind="stable")
    return best.drop_duplicates("group").set_index("group")["value"]


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
    per_group = pd.DataFrame(
        {
            "label": majority(groups, readable["label"]),
            "source": majority(groups, readable["source"]),
            "size": groups.value_counts(),
        }
    ).sort_index()
    per_group["rank"] = [_rank(seed, g) for g in per_group.index]
    bounds = (fractions[0], fractions[0] + fractions[1])
    chosen: dict[str, str] = {}
    for _, stratum in per_group.sort_values("rank").groupby(["label", "source"], sort=True):
        total = stratum["size"].sum()
        before = 0
        for group, size in zip(stratum.index, stratum["size"]):
            position = (before + size / 2) / total
            chosen[group] = (
                SPLIT_NAMES[0] if position < bounds[0] else SPLIT_NAMES[1] if position < bounds[1] else SPLIT_NAMES[2]
            )
            before += size
    result.loc[readable.index] = [chosen[g] for g in groups]
    return result
