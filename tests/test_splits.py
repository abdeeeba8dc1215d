"""Patient groups and seeded splits: the fast paths agree with the general ones on random data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxr_core.data.splits import assign_splits, majority, patient_groups


def random_rows(n: int, seed: int, shared_every: int = 0) -> pd.DataFrame:
    """``n`` rows of patients, hashes (some empty, some shared across patients), labels and sources."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "patient_id": [f"p{x}" for x in rng.integers(0, max(2, n // 3), n)],
            "sha256": ["" if rng.random() < 0.1 else f"s{i}" for i in range(n)],
            "label": rng.choice(["COVID", "Normal"], n),
            "source": rng.choice(["a", "b", "c"], n),
            "error": "",
        },
        index=rng.permutation(n) + 5,
    )
    if shared_every:
        frame.iloc[::shared_every, 1] = "shared"
    return frame


def groups_by_merging(frame: pd.DataFrame) -> pd.Series:
    """The group key spelled out: the smallest member of each connected set of patients and hashes."""
    members: dict[str, set[str]] = {}
    for patient, sha in zip(frame["patient_id"], frame["sha256"]):
        linked = {f"p:{patient}"} | ({f"h:{sha}"} if sha else set())
        for key in list(linked):
            linked |= members.get(key, set())
        for key in linked:
            members[key] = linked
    return pd.Series([min(members[f"p:{p}"]) for p in frame["patient_id"]], index=frame.index)


@pytest.mark.parametrize("shared_every", [0, 17])
def test_patient_groups_join_patients_that_share_an_image(shared_every: int) -> None:
    frame = random_rows(600, seed=shared_every, shared_every=shared_every)
    groups = patient_groups(frame)
    assert groups.index.equals(frame.index) and (groups == groups_by_merging(frame)).all()
    assert (groups.nunique() < frame["patient_id"].nunique()) == bool(shared_every)


def test_majority_breaks_ties_by_the_first_row() -> None:
    groups = pd.Series(["g1", "g1", "g2", "g2", "g2", "g1"])
    values = pd.Series(["b", "a", "x", "y", "y", "c"])
    assert majority(groups, values).to_dict() == {"g1": "b", "g2": "y"}


def test_splits_keep_groups_whole_and_move_with_the_seed() -> None:
    frame = random_rows(900, seed=3, shared_every=23)
    splits = assign_splits(frame, (0.7, 0.15, 0.15), seed=1)
    assert set(splits) == {"train", "val", "test"}
    assert (splits.groupby(patient_groups(frame)).nunique() == 1).all()
    assert splits.equals(assign_splits(frame, (0.7, 0.15, 0.15), seed=1))
    assert not splits.equals(assign_splits(frame, (0.7, 0.15, 0.15), seed=2))
    assert 0.6 < (splits == "train").mean() < 0.8
