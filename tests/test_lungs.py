"""Lung segmentation: post-processing, the shipped segmenter at any size, plausibility flags, `cxr lungs`, training."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import SHIPPED_LUNGS_DIR as SHIPPED_MODEL_DIR
from conftest import synthetic_xray
from cxr_core.cli.parser import main
from cxr_core.lungs.segmenter import (
    MaskChecks,
    count_components,
    dice,
    iou,
    keep_two_largest,
    load_segmenter,
    lung_mask,
    plausibility_flags,
    segment,
)
from cxr_core.preprocess.roi import bounding_box, dilate

needs_model = pytest.mark.skipif(
    not (SHIPPED_MODEL_DIR / "model.keras").is_file(), reason="models/lungs not trained yet"
)


def two_ellipses(height: int = 256, width: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Two dark lung-like ellipses on a bright background, and their true mask."""
    image = np.full((height, width), 200, np.uint8)
    truth = np.zeros((height, width), np.uint8)
    for cx in (0.3, 0.7):
        centre, axes = (int(cx * width), int(0.5 * height)), (int(0.14 * width), int(0.3 * height))
        cv2.ellipse(image, centre, axes, 0, 0, 360, 50, -1)
        cv2.ellipse(truth, centre, axes, 0, 0, 360, 1, -1)
    noise = np.random.default_rng(0).normal(0, 5, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8), truth > 0


def test_keep_two_largest_drops_small_blobs_and_fills_holes() -> None:
    mask = np.zeros((100, 100), bool)
    mask[10:90, 5:40] = True
    mask[10:90, 60:95] = True
    mask[2:6, 45:50] = True
    mask[40:50, 15:25] = False
    kept = keep_two_largest(mask)
    assert count_components(kept)[0] == 2
    assert kept[45, 20] and not kept[3, 47]


def test_metrics_and_geometry_helpers() -> None:
    a = np.zeros((10, 10), bool)
    a[:, :5] = True
    b = np.zeros((10, 10), bool)
    b[:, :4] = True
    assert dice(a, b) == pytest.approx(2 * 40 / 90)
    assert iou(a, b) == pytest.approx(40 / 50)
    assert dice(np.zeros_like(a), np.zeros_like(a)) == 1.0
    box = np.zeros((100, 200), bool)
    box[40:60, 50:100] = True
    assert bounding_box(box, margin=0.1) == (30, 70, 30, 120)
    assert bounding_box(np.zeros((20, 30), bool)) == (0, 20, 0, 30)
    grown = dilate(box, 0.05)
    assert grown.sum() > box.sum() and grown[box].all()


def test_plausibility_flags() -> None:
    prob = np.zeros((64, 64), np.float32)
    assert plausibility_flags(prob > 0.5, prob) == ("empty",)
    one = np.zeros((64, 64), bool)
    one[10:50, 5:30] = True
    assert "one_lung" in plausibility_flags(one, one.astype(np.float32))
    two = one.copy()
    two[10:50, 35:60] = True
    assert plausibility_flags(two, two.astype(np.float32)) == ()
    tiny = np.zeros((64, 64), bool)
    tiny[10:14, 10:14] = tiny[10:14, 40:44] = True
    assert "area_low" in plausibility_flags(tiny, tiny.astype(np.float32), MaskChecks())


@needs_model
def test_segmenter_finds_two_lungs_on_synthetic_image() -> None:
    image, truth = two_ellipses()
    result = segment(image)
    assert result.components == 2
    assert "empty" not in result.flags and "one_lung" not in result.flags
    assert dice(result.mask, truth) > 0.7


@needs_model
@pytest.mark.parametrize("shape", [(300, 420), (97, 64), (1024, 768)])
def test_lung_mask_comes_back_at_input_size(shape: tuple[int, int]) -> None:
    image, truth = two_ellipses(*shape)
    mask = lung_mask(image)
    assert mask.shape == shape and mask.dtype == bool
    assert dice(mask, truth) > 0.6


@needs_model
def test_segmenter_is_cached() -> None:
    assert load_segmenter() is load_segmenter()


@needs_model
def test_cxr_lungs_writes_masks_and_flags_failures(
    tmp_path: Path, make_cfg, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    data = tmp_path / "imgs"
    (data / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    cv2.imwrite(str(data / "a.png"), synthetic_xray(rng, 128))
    cv2.imwrite(str(data / "sub" / "b.jpg"), two_ellipses(200, 160)[0])
    cv2.imwrite(str(data / "blank.png"), np.zeros((96, 96), np.uint8))
    (data / "broken.png").write_bytes(b"not an image")
    home, out = tmp_path / "home", tmp_path / "out"
    code = main(["--home", str(home), "lungs", str(data), "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 4
    flagged = {row["path"]: row["flags"] for row in summary["flagged_images"]}
    assert flagged["broken.png"] == "unreadable"
    assert "area_low" in flagged["blank.png"] or "empty" in flagged["blank.png"]
    for good in ("a.png", "sub/b.jpg"):
        assert not {"empty", "unreadable", "one_lung", "area_low"} & set(flagged.get(good, "").split(";"))
    written = cv2.imread(str(out / "sub" / "b.png"), cv2.IMREAD_GRAYSCALE)
    assert written.shape == (200, 160) and set(np.unique(written)) <= {0, 255}
    assert cv2.imread(str(out / "a.png"), cv2.IMREAD_GRAYSCALE).shape == (128, 128)
    flags = pd.read_csv(summary["flags_csv"], dtype=str).fillna("")
    assert len(flags) == 3 and set(flags["path"]) == {"a.png", "sub/b.jpg", "blank.png"}
    assert len(list((home / "cache" / "lungs").rglob("*.png"))) == 3


def test_cxr_lungs_refuses_missing_folder(tmp_path: Path, capsys) -> None:
    assert main(["--home", str(tmp_path / "h"), "lungs", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_train_lungs_smoke(tmp_path: Path, capsys) -> None:
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["file,source,patient_id,split_hint"]
    for i in range(12):
        image, truth = two_ellipses(64, 64)
        cv2.imwrite(str(root / "images" / f"{i}.png"), image)
        cv2.imwrite(str(root / "masks" / f"{i}.png"), truth.astype(np.uint8) * 255)
        rows.append(f"{i}.png,{'jsrt' if i % 2 else 'v7labs-kermany'},p{i},{'val' if i < 4 else 'train'}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "lungs"
    code = main(
        [
            "--home",
            str(tmp_path / "h"),
            "train-lungs",
            "--data",
            str(root),
            "--out",
            str(out),
            "--size",
            "32",
            "--epochs",
            "1",
            "--batch",
            "4",
            "--json",
        ]
    )
    assert code == 0
    card = json.loads(capsys.readouterr().out)
    assert set(card["validation"]["by_source"]) == {"jsrt", "v7labs-kermany"}
    assert (out / "model.keras").is_file() and (out / "card.md").is_file()
    assert load_segmenter(out).size == 32
