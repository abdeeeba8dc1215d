"""Automatic flags: markings, exposure, size, duplicates and unreadable files; parallel, cached, queued for review."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import synthetic_xray, write_dataset
from cxr_core.config import Config
from cxr_core.curation import flags as flags_module
from cxr_core.curation.curated import curated_index
from cxr_core.curation.flags import (
    FlagOptions,
    compute_flags,
    flagged,
    quality_scores,
    review_queue,
    small_score,
    summarise,
)
from cxr_core.preprocess.quality import quality_measures


@pytest.fixture
def flag_cfg(tmp_path: Path, make_cfg: Callable[..., Config]) -> Config:
    """A 12-image dataset plus a marked image, an exact duplicate, a small image and an unreadable file."""
    root = write_dataset(tmp_path / "data", n_per_class=6, size=128)
    covid = root / "COVID" / "images"
    marked = synthetic_xray(np.random.default_rng(9), 128, covid=True)
    cv2.rectangle(marked, (20, 30), (70, 100), 0, 1)
    cv2.imwrite(str(covid / "COVID-marked.png"), marked)
    shutil.copy(covid / "COVID-1.png", covid / "COVID-copy.png")
    cv2.imwrite(str(covid / "COVID-small.png"), synthetic_xray(np.random.default_rng(5), 70))
    (covid / "COVID-broken.png").write_bytes(b"not an image at all")
    return make_cfg(data_dir=root)


def test_flags_find_each_problem(flag_cfg: Config) -> None:
    frame = compute_flags(flag_cfg, curated_index(flag_cfg), FlagOptions(min_resolution=100)).set_index("path")
    base = "COVID/images/"
    assert flagged(frame, "markings")[base + "COVID-marked.png"]
    assert frame.loc[base + "COVID-marked.png", "regions"]
    assert not flagged(frame, "markings")[base + "COVID-2.png"]
    assert flagged(frame, "duplicate")[base + "COVID-copy.png"]
    assert frame.loc[base + "COVID-copy.png", "duplicate_of"] == base + "COVID-1.png"
    assert frame.loc[base + "COVID-1.png", "duplicate_of"] == base + "COVID-copy.png"
    assert flagged(frame, "small")[base + "COVID-small.png"]
    assert not flagged(frame, "small")[base + "COVID-2.png"]
    assert flagged(frame, "unreadable")[base + "COVID-broken.png"]
    assert frame.loc[base + "COVID-broken.png", "error"]
    assert flagged(frame, "unreadable").sum() == 1
    summary = summarise(frame.reset_index())
    assert summary["images"] == 16
    assert summary["flags"]["unreadable"] == 1 and summary["flags"]["duplicate"] == 2


def test_analyses_are_cached_by_sha256_and_reused(flag_cfg: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    index = curated_index(flag_cfg)
    calls: list[tuple[int, int]] = []
    first = compute_flags(flag_cfg, index, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (14, 14)  # the exact copy shares its sha256
    assert len(list((flag_cfg.cache_dir / "flags").rglob("*.json"))) == 14
    assert len(list((flag_cfg.cache_dir / "thumbs").rglob("*.jpg"))) == 14

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("cached images must not be analysed again")

    monkeypatch.setattr(flags_module, "analyse_image", refuse)
    again = compute_flags(flag_cfg, index)
    assert again.drop(columns="regions").equals(first.drop(columns="regions"))


def test_parallel_workers_give_the_same_scores(
    flag_cfg: Config, make_cfg: Callable[..., Config], tmp_path: Path
) -> None:
    index = curated_index(flag_cfg)
    serial = compute_flags(flag_cfg, index)
    other = make_cfg(data_dir=flag_cfg.data_dir, home=tmp_path / "home2")
    parallel = compute_flags(other, index, FlagOptions(workers=2))
    assert np.allclose(serial["markings"], parallel["markings"])
    assert np.allclose(serial["low_contrast"], parallel["low_contrast"])


def test_exposure_and_contrast_scores() -> None:
    flat = np.full((64, 64), 128, np.uint8)
    bright = np.clip(np.random.default_rng(0).normal(235, 20, (64, 64)), 0, 255).astype(np.uint8)
    dark = np.clip(np.random.default_rng(0).normal(25, 20, (64, 64)), 0, 255).astype(np.uint8)
    normal = synthetic_xray(np.random.default_rng(0), 64)
    assert quality_scores(quality_measures(flat))["low_contrast"] == 1.0
    assert quality_scores(quality_measures(bright))["over_exposed"] == 1.0
    assert quality_scores(quality_measures(dark))["under_exposed"] == 1.0
    assert quality_scores(quality_measures(normal)) == {"low_contrast": 0.0, "over_exposed": 0.0, "under_exposed": 0.0}
    assert small_score(300, 400, 256) == 0.0
    assert 0.5 < small_score(100, 400, 256) < 1.0


def test_review_queue_sorts_and_filters(flag_cfg: Config) -> None:
    frame = compute_flags(flag_cfg, curated_index(flag_cfg))
    sha = dict(zip(frame["path"], frame["sha256"]))
    decisions = {sha["COVID/images/COVID-marked.png"]: "discard", sha["Normal/images/Normal-1.png"]: "keep"}
    queue = review_queue(frame, decisions, "markings")
    assert list(queue["score"]) == sorted(queue["score"], reverse=True)
    assert queue.iloc[0]["path"] == "COVID/images/COVID-marked.png"
    undecided = review_queue(frame, decisions, "markings", states=["undecided"])
    assert "COVID/images/COVID-marked.png" not in set(undecided["path"])
    assert set(review_queue(frame, decisions, states=["kept"])["path"]) == {"Normal/images/Normal-1.png"}
    assert set(review_queue(frame, decisions, labels=["Normal"])["label"]) == {"Normal"}
    only = review_queue(frame, decisions, "duplicate", only_flagged=True)
    assert len(only) == 2
    with pytest.raises(ValueError, match="unknown flag"):
        review_queue(frame, decisions, "blurry")
