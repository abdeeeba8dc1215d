"""Near-duplicate search: the multi-index search equals brute force, and a re-index reuses unchanged pairs."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

import cxr_core.data.index as dataset_index
from conftest import write_dataset
from cxr_core.data.hashing import _run_pairs, hashes_to_array, near_pairs
from cxr_core.data.index import load_index


def brute_force_pairs(hashes: list[str], max_distance: int, chunk: int = 1024) -> list[tuple[int, int, int]]:
    """The test oracle: every hash against every other, in blocks of ``chunk`` rows (the former implementation)."""
    values = hashes_to_array(hashes)
    valid = np.array([bool(h) for h in hashes])
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(values), chunk):
        block = values[start : start + chunk]
        dist = np.bitwise_count(block[:, None] ^ values[None, :])
        rows, cols = np.nonzero(dist <= max_distance)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if i < c and valid[i] and valid[c]:
                pairs.append((i, c, int(dist[r, c])))
    return pairs


def planted_hashes(n: int, max_distance: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int, int]]]:
    """``n`` random hashes, a tenth of them copies of others with 0..max_distance+1 bits flipped, and (source, copy, flips)."""
    rng = np.random.default_rng(seed)
    n_copies = n // 10
    values = [int(v) for v in rng.integers(0, 2**64 - 1, n - n_copies, dtype=np.uint64, endpoint=True)]
    planted = []
    for k, source in enumerate(rng.integers(0, len(values), n_copies).tolist()):
        flips = k % (max_distance + 2)
        mask = sum(1 << int(bit) for bit in rng.choice(64, flips, replace=False))
        planted.append((source, len(values), flips))
        values.append(values[source] ^ mask)
    return [f"{v:016x}" for v in values], planted


def test_21000_planted_hashes_match_brute_force() -> None:
    hashes, planted = planted_hashes(21_000, 4)
    pairs = near_pairs(hashes, 4)
    assert pairs == brute_force_pairs(hashes, 4)
    found = {(i, j): d for i, j, d in pairs}
    for source, copy, flips in planted:
        assert found.get((source, copy)) == (flips if flips <= 4 else None)


@pytest.mark.parametrize("max_distance", range(9))
def test_every_distance_up_to_8_matches_brute_force(max_distance: int) -> None:
    hashes, _ = planted_hashes(2_000, max_distance, seed=max_distance)
    hashes[7] = hashes[11] = ""
    hashes += [hashes[3]] * 4 + [""] * 3 + [hashes[5]]
    expected = brute_force_pairs(hashes, max_distance)
    assert near_pairs(hashes, max_distance) == expected
    assert near_pairs(hashes, max_distance, chunk=50) == expected


def test_edge_cases() -> None:
    assert near_pairs([], 4) == [] and near_pairs(["", "", ""], 4) == [] and near_pairs(["0123456789abcdef"], 4) == []
    same = ["0123456789abcdef"] * 300
    assert near_pairs(same, 0) == [(i, j, 0) for i in range(300) for j in range(i + 1, 300)]
    zeros = ["", "0000000000000000", "", "0000000000000001", "0000000000000000", ""]
    assert near_pairs(zeros, 0) == [(1, 4, 0)] and near_pairs(zeros, 1) == [(1, 3, 1), (1, 4, 0), (3, 4, 1)]
    hashes, _ = planted_hashes(300, 4, seed=9)
    assert near_pairs(hashes, -1) == []
    for max_distance in (40, 64, 100):
        assert near_pairs(hashes, max_distance) == brute_force_pairs(hashes, max_distance)


def test_huge_buckets_of_similar_hashes_match_brute_force() -> None:
    hashes = [f"{v << 40:016x}" for v in range(1_500)] + ["ffffffffffffffff"] * 200 + [""] * 500
    assert near_pairs(hashes, 4, chunk=1_000) == brute_force_pairs(hashes, 4)


def test_candidate_pairs_come_in_bounded_chunks() -> None:
    keys = np.r_[np.zeros(1_000, np.uint64), np.arange(1, 500, dtype=np.uint64).repeat(3)]
    chunks = list(_run_pairs(keys, 100))
    assert max(len(p) for p, _ in chunks) <= 100 + 999
    pairs = {(p, q) for ps, qs in chunks for p, q in zip(ps.tolist(), qs.tolist())}
    runs = [range(1_000)] + [range(1_000 + 3 * k, 1_003 + 3 * k) for k in range(499)]
    expected = {pair for run in runs for pair in itertools.combinations(run, 2)}
    assert pairs == expected and sum(len(p) for p, _ in chunks) == len(expected)


def counting_near_pairs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the index count its near-duplicate searches; returns the list that grows by one per search."""
    calls: list[int] = []

    def counted(hashes: list[str], max_distance: int) -> list[tuple[int, int, int]]:
        """``near_pairs``, recorded."""
        calls.append(len(hashes))
        return near_pairs(hashes, max_distance)

    monkeypatch.setattr(dataset_index, "near_pairs", counted)
    return calls


def fresh_pairs(make_cfg, root: Path, home: Path, **overrides: object) -> pd.DataFrame:
    """The duplicate pairs of an index built from scratch in its own work dir."""
    return load_index(make_cfg(home=home, **overrides), root).duplicate_pairs


def test_reindex_reuses_pairs_until_files_change(tmp_path: Path, make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=10)
    images = root / "COVID" / "images"
    original = cv2.imread(str(images / "COVID-1.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(images / "COVID-resized.png"), cv2.resize(cv2.resize(original, (70, 70)), original.shape[::-1]))
    cfg = make_cfg()
    calls = counting_near_pairs(monkeypatch)
    first = load_index(cfg, root)
    assert len(calls) == 1 and (first.duplicate_pairs["kind"] == "near").any()
    again = load_index(cfg, root)
    assert len(calls) == 1 and list(cfg.index_dir.glob("*.pairs.npz"))
    pd.testing.assert_frame_equal(again.duplicate_pairs, first.duplicate_pairs)
    assert len(calls) == 1 and load_index(cfg, root, refresh=False).duplicate_pairs.equals(first.duplicate_pairs)

    def changed(step: str) -> None:
        """Re-index after ``step``: one new search, and the same pairs as an index built from scratch."""
        before = len(calls)
        pairs = load_index(cfg, root).duplicate_pairs
        assert len(calls) == before + 1, step
        pd.testing.assert_frame_equal(pairs, fresh_pairs(make_cfg, root, tmp_path / f"fresh-{step}"), obj=step)

    (images / "COVID-copy.png").write_bytes((images / "COVID-2.png").read_bytes())
    changed("added")
    (images / "COVID-resized.png").unlink()
    changed("removed")
    target = images / "COVID-3.png"
    cv2.imwrite(str(target), cv2.flip(cv2.imread(str(target), cv2.IMREAD_GRAYSCALE), 1))
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    changed("changed")
    before = len(calls)
    pairs = load_index(make_cfg(near_duplicate_distance=1), root).duplicate_pairs
    assert len(calls) == before + 1
    pd.testing.assert_frame_equal(pairs, fresh_pairs(make_cfg, root, tmp_path / "fresh-d1", near_duplicate_distance=1))


def test_damaged_pairs_cache_is_recomputed(tmp_path: Path, make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=6)
    cfg = make_cfg()
    first = load_index(cfg, root).duplicate_pairs
    calls = counting_near_pairs(monkeypatch)
    for cache in cfg.index_dir.glob("*.pairs.npz"):
        cache.write_bytes(b"not a zip file")
    for memo in cfg.index_dir.glob("*.assembled-*.json"):
        memo.unlink()
    pd.testing.assert_frame_equal(load_index(cfg, root).duplicate_pairs, first)
    assert len(calls) == 1 and len(load_index(cfg, root).duplicate_pairs) == len(first) and len(calls) == 1


def same(index) -> dict:
    """An index's summary without its refresh counts."""
    return {k: v for k, v in index.summary().items() if k != "refresh"}


def test_an_unchanged_reindex_reuses_the_assembled_index_and_a_damaged_one_is_rebuilt(
    tmp_path: Path,
    make_cfg,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=6)
    cfg = make_cfg()
    first = load_index(cfg, root)
    calls = counting_near_pairs(monkeypatch)
    (cfg.index_dir / next(cfg.index_dir.glob("*.pairs.npz")).name).unlink()
    again = load_index(cfg, root)
    assert calls == [] and same(again) == same(first)
    pd.testing.assert_frame_equal(again.frame, first.frame)
    for frame_file in cfg.index_dir.glob("*.assembled-*.frame.parquet"):
        frame_file.write_bytes(b"PAR1 truncated")
    rebuilt = load_index(cfg, root)
    assert len(calls) == 1 and same(rebuilt) == same(first)
    pd.testing.assert_frame_equal(rebuilt.frame, first.frame)
    assert len(list(cfg.index_dir.glob("*.assembled-*"))) == 3
