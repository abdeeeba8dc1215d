"""Learned markings detector: the shipped net loads safely, ranks drawn overlays above clean images, and retrains."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO, synthetic_xray, write_dataset
from cxr_core.cli.parser import main
from cxr_core.markings.classical import MarkingsOptions, combine_scores, detect_markings
from cxr_core.markings.net import MODEL_FILE, MarkingsModelError, cell_regions, load_markings_net
from cxr_core.markings.synth import draw_overlays

SHIPPED = REPO / "models" / "markings"


def chest(seed: int = 3, size: int = 384) -> np.ndarray:
    """A crude chest-like image with soft-edged lungs (real anatomy has no crisp outlines) and no overlays."""
    return cv2.GaussianBlur(synthetic_xray(np.random.default_rng(seed), size), (0, 0), 2)


def test_shipped_model_is_small_and_loads_in_safe_mode() -> None:
    import keras

    path = SHIPPED / MODEL_FILE
    assert path.stat().st_size < 1_000_000
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    assert model.count_params() < 200_000
    assert (SHIPPED / "card.md").is_file()


def test_arrow_and_caption_score_higher_than_the_clean_image() -> None:
    net = load_markings_net(SHIPPED)
    clean = chest()
    marked = clean.copy()
    cv2.arrowedLine(marked, (240, 260), (160, 180), 255, 4, tipLength=0.3)
    cv2.putText(marked, "DAY 6 PORTABLE", (60, 340), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 3)
    clean_score, marked_score = net.score(clean), net.score(marked)
    assert 0.0 <= clean_score <= 1.0 and 0.0 <= marked_score <= 1.0
    assert marked_score > clean_score + 0.2
    result = detect_markings(marked, MarkingsOptions(combine="max"))
    assert result.learned == pytest.approx(marked_score, abs=1e-3)
    assert 0.0 <= result.score <= 1.0 and result.regions


def test_default_is_classical_without_the_net_and_bad_rules_are_rejected() -> None:
    result = detect_markings(chest())
    assert result.learned is None and result.classical == result.score
    with pytest.raises(ValueError, match="combination rule"):
        MarkingsOptions(combine="average")
    assert combine_scores(0.2, 0.5, "noisy-or") == pytest.approx(0.6)
    assert combine_scores(0.2, 0.5, "max") == 0.5


def test_hot_cells_become_regions_in_image_coordinates() -> None:
    cells = np.zeros((4, 4), np.float32)
    cells[1, 2] = cells[2, 2] = 0.9
    assert cell_regions(cells, 0.5, (400, 800)) == [(400, 100, 200, 200)]


def test_synthetic_overlays_mark_what_they_draw() -> None:
    rng = np.random.default_rng(0)
    image = chest(size=256)
    clean, clean_mask = draw_overlays(image, rng, positive=False)
    marked, mask = draw_overlays(image, rng, positive=True)
    assert not clean_mask.any() and mask.any()
    assert (marked != image)[mask > 0].mean() > 0.5


def test_missing_model_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MarkingsModelError, match="train-markings"):
        load_markings_net(tmp_path)


def test_train_markings_cli_runs_a_tiny_training(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "data", n_per_class=12, size=64)
    out = tmp_path / "model"
    code = main(
        [
            "--home",
            str(tmp_path / "h"),
            "train-markings",
            "--data",
            str(root),
            "--out",
            str(out),
            "--size",
            "32",
            "--epochs",
            "1",
            "--samples",
            "8",
            "--batch",
            "4",
            "--val-fraction",
            "0.5",
            "--json",
        ]
    )
    assert code == 0
    card = json.loads((out / "card.json").read_text())
    assert card["epochs_run"] == 1 and card["config"]["size"] == 32
    assert 0.0 <= card["synthetic_validation"]["roc_auc"] <= 1.0
    net = load_markings_net(out)
    assert net.cells(chest(size=64)).shape == (2, 2)


def test_train_markings_rejects_a_bad_size(tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert main(["--home", str(tmp_path / "h"), "train-markings", "--out", str(out), "--size", "40"]) == 2
    assert not out.exists()
