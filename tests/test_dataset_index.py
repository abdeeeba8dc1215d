"""Dataset index: layouts, manifest, incremental refresh, patient-grouped splits, audits, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, write_dataset
from cxr_core.data.hashing import hamming, phash
from cxr_core.data.index import DatasetError, load_index


def test_kaggle_and_flat_layouts_with_manifest(tmp_path: Path, make_cfg) -> None:
    for layout in ("kaggle", "flat"):
        root = write_dataset(tmp_path / layout, n_per_class=10, layout=layout)
        index = load_index(make_cfg(), root)
        summary = index.summary()
        assert summary["n_images"] == 20 and summary["by_class"] == {"COVID": 10, "Normal": 10}
        assert set(summary["by_source"]) == {"covid-src0", "covid-src1", "normal-src0", "normal-src1"}
        assert summary["patients_in_multiple_splits"] == 0


def test_without_manifest_each_image_is_its_own_patient(tmp_path: Path, make_cfg) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=6)
    (root / "manifest.csv").unlink()
    frame = load_index(make_cfg(), root).frame
    assert set(frame["source"]) == {"unknown"} and frame["patient_id"].nunique() == 12


def test_class_folders_are_case_insensitive_and_other_classes_ignored(tmp_path: Path, make_cfg) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=4, layout="flat")
    (root / "COVID").rename(root / "covid")
    (root / "Lung_Opacity").mkdir()
    cv2.imwrite(str(root / "Lung_Opacity" / "x.png"), np.full((80, 80), 9, np.uint8))
    frame = load_index(make_cfg(), root).frame
    assert sorted(frame["label"].unique()) == ["COVID", "Normal"] and len(frame) == 8


def test_unreadable_files_are_listed_not_dropped(tmp_path: Path, make_cfg) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=4)
    (root / "COVID" / "images" / "broken.png").write_bytes(b"not an image at all" * 10)
    (root / "Normal" / "images" / "empty.png").write_bytes(b"")
    index = load_index(make_cfg(), root)
    errors = {item["path"]: item["error"] for item in index.summary()["unreadable"]}
    assert errors == {
        "COVID/images/broken.png": "not a readable image (unknown or unsupported format)",
        "Normal/images/empty.png": "file is empty",
    }
    assert index.summary()["n_images"] == 8 and len(index.images()) + 0 <= 8


def test_empty_folder_reported_and_missing_dataset_refused(tmp_path: Path, make_cfg) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=4, layout="flat")
    for path in (root / "Normal").iterdir():
        path.unlink()
    assert load_index(make_cfg(), root).summary()["empty_folders"] == ["Normal"]
    with pytest.raises(DatasetError, match="does not exist"):
        load_index(make_cfg(), tmp_path / "missing")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DatasetError, match="none of the class folders"):
        load_index(make_cfg(), tmp_path / "nothing")


def test_refresh_rereads_only_changed_files(tmp_path: Path, make_cfg) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=8)
    cfg = make_cfg()
    first = load_index(cfg, root)
    assert (first.n_read, first.n_reused) == (16, 0)
    target = root / "COVID" / "images" / "COVID-3.png"
    cv2.imwrite(str(target), np.full((90, 90), 77, np.uint8))
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    second = load_index(cfg, root)
    assert (second.n_read, second.n_reused) == (1, 15)
    row = second.frame.set_index("path").loc["COVID/images/COVID-3.png"]
    assert row["sha256"] != first.frame.set_index("path").loc["COVID/images/COVID-3.png", "sha256"]
    (root / "Normal" / "images" / "Normal-2.png").unlink()
    cv2.imwrite(str(root / "Normal" / "images" / "Normal-new.png"), np.full((90, 90), 33, np.uint8))
    third = load_index(cfg, root)
    assert (third.n_read, third.n_reused) == (1, 15)
    paths = third.frame["path"].tolist()
    assert (
        paths == sorted(paths) and "Normal/images/Normal-2.png" not in paths and "Normal/images/Normal-new.png" in paths
    )
    read = ["sha256", "phash", "width", "height", "error"]
    reused = third.frame.set_index("path").drop(["Normal/images/Normal-new.png"])[read]
    assert reused.equals(second.frame.set_index("path").drop(["Normal/images/Normal-2.png"])[read])


def test_the_data_layer_excludes_only_the_discards_it_is_given(tmp_path: Path, make_cfg) -> None:
    from cxr_core.curation import curated_index, open_ledger

    root = write_dataset(tmp_path / "d", n_per_class=8)
    cfg = make_cfg()
    victim = load_index(cfg, root).frame.iloc[2]
    open_ledger(cfg).record(victim["sha256"], victim["path"], "discard", reason="markings", reviewer="test")
    assert load_index(cfg, root).excluded_counts() == {}
    given = load_index(cfg, root, discarded={victim["sha256"]}).frame.set_index("path")
    assert given.at[victim["path"], "exclude_reason"] == "discarded" and int(given["excluded"].sum()) == 1
    curated = curated_index(cfg, root).frame.set_index("path")
    assert curated.at[victim["path"], "exclude_reason"] == "discarded" and int(curated["excluded"].sum()) == 1


def test_splits_are_reproducible_and_grouped(tmp_path: Path, make_cfg) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=40)
    a = load_index(make_cfg(), root).frame["split"].tolist()
    b = load_index(make_cfg(home=tmp_path / "other"), root).frame["split"].tolist()
    c = load_index(make_cfg(home=tmp_path / "third", seed=7), root).frame["split"].tolist()
    assert a == b and a != c
    assert set(a) == {"train", "val", "test"}


def test_exact_duplicates_share_a_split_and_near_duplicates_are_cleaned_from_test(tmp_path: Path, make_cfg) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=30, seed=3)
    images = root / "COVID" / "images"
    original = cv2.imread(str(images / "COVID-1.png"), cv2.IMREAD_GRAYSCALE)
    (images / "COVID-copy.png").write_bytes((images / "COVID-1.png").read_bytes())
    manifest = pd.read_csv(root / "manifest.csv")
    manifest.loc[len(manifest)] = ["COVID/images/COVID-copy.png", "COVID", "covid-src0", "someone-else"]
    manifest.to_csv(root / "manifest.csv", index=False)
    index = load_index(make_cfg(), root)
    rows = index.frame.set_index("path")
    assert rows.at["COVID/images/COVID-copy.png", "split"] == rows.at["COVID/images/COVID-1.png", "split"]
    exact = index.duplicate_pairs[index.duplicate_pairs["kind"] == "exact"]
    assert len(exact) == 1 and index.summary()["patients_in_multiple_splits"] == 0
    assert (
        phash(original) == phash(cv2.resize(cv2.resize(original, (60, 60)), original.shape[::-1]))
        or hamming(phash(original), phash(cv2.resize(cv2.resize(original, (60, 60)), original.shape[::-1]))) <= 4
    )


def test_confounding_reports_source_predicting_label(tmp_path: Path, make_cfg) -> None:
    root = write_dataset(tmp_path / "d", n_per_class=10)
    conf = load_index(make_cfg(), root).summary()["confounding"]
    assert conf["source_only_accuracy"] == 1.0 and conf["cramers_v"] > 0.9


@pytest.mark.data
def test_sample_index_matches_manifest(sample_dir: Path, make_cfg) -> None:
    manifest = pd.read_csv(sample_dir / "manifest.csv")
    index = load_index(make_cfg(data_dir=sample_dir, workers=2), sample_dir)
    summary = index.summary()
    assert summary["n_images"] == len(manifest) and summary["unreadable"] == []
    assert summary["by_class"] == manifest["label"].value_counts().sort_index().to_dict()
    assert summary["by_source"] == manifest["source"].value_counts().sort_index().to_dict()
    assert summary["n_patients"] == manifest["patient_id"].nunique()
    assert summary["patients_in_multiple_splits"] == 0
    by_patient = index.images(include_excluded=True).groupby("patient_id")["split"].nunique()
    assert (by_patient == 1).all()
    sizes = {s: sum(c.values()) for s, c in summary["splits"].items()}
    assert 0.65 < sizes["train"] / summary["n_images"] < 0.75
    assert summary["confounding"]["cramers_v"] > 0.9
    assert not any(p.name.startswith(".") or p.suffix == ".parquet" for p in sample_dir.rglob("*"))


@pytest.mark.data
def test_cli_index_json(sample_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "CXR_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-m", "cxr_core", "index", str(sample_dir), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    for key in (
        "n_images",
        "by_class",
        "by_source",
        "splits",
        "patients_in_multiple_splits",
        "duplicates_across_splits",
        "unreadable",
    ):
        assert key in summary
    assert summary["n_images"] == 1502 and summary["patients_in_multiple_splits"] == 0


def test_cli_index_bad_arguments(tmp_path: Path) -> None:
    env = {**os.environ, "CXR_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [sys.executable, "-m", "cxr_core", "index", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 2 and "does not exist" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run(
        [sys.executable, "-m", "cxr_core", "index", "--bogus"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert out.returncode == 2 and "unrecognized arguments" in out.stderr
