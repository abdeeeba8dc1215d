"""Lung intensity standardisation: the lungs of films exposed differently end up alike, the recipe needs a lung
region of interest, and recipes without it keep their digests."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import synthetic_xray
from cxr_core.preprocess.recipe import PreprocessConfig, PreprocessError
from cxr_core.preprocess.roi import REFERENCE_MEAN, REFERENCE_SD, standardise_lungs
from cxr_core.train.config import TrainingError, config_from_options


def film_and_lungs(seed: int = 0, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic film and a lung-shaped mask (two ellipses)."""
    import cv2

    film = synthetic_xray(np.random.default_rng(seed), size)
    mask = np.zeros((size, size), np.uint8)
    for cx in (size * 0.32, size * 0.68):
        cv2.ellipse(mask, (int(cx), size // 2), (size // 7, size // 3), 0, 0, 360, 1, -1)
    return film, mask.astype(bool)


@pytest.mark.parametrize("how", ["zscore", "histogram"])
def test_the_lungs_match_the_reference_whatever_the_exposure(how: str) -> None:
    film, lungs = film_and_lungs()
    dark = np.clip(film.astype(float) * 0.6, 0, 255).astype(np.uint8)
    bright = np.clip(film.astype(float) * 0.8 + 60, 0, 255).astype(np.uint8)
    results = [standardise_lungs(image, lungs, how) for image in (film, dark, bright)]
    for out in results:
        inside = out[lungs].astype(float)
        assert out.dtype == np.uint8 and out.shape == film.shape
        assert abs(inside.mean() - REFERENCE_MEAN) < 6 and abs(inside.std() - REFERENCE_SD) < 8
    before = abs(dark[lungs].mean() - bright[lungs].mean())
    after = abs(results[1][lungs].mean() - results[2][lungs].mean())
    assert after < before / 5
    assert (np.diff(results[0][lungs][np.argsort(film[lungs], kind="stable")].astype(int)) >= 0).all(), "monotone"


def test_none_and_an_empty_mask_change_nothing() -> None:
    film, lungs = film_and_lungs()
    np.testing.assert_array_equal(standardise_lungs(film, lungs, "none"), film)
    np.testing.assert_array_equal(standardise_lungs(film, np.zeros_like(lungs), "zscore"), film)


def test_the_recipe_needs_a_lung_roi_and_keeps_older_digests() -> None:
    with pytest.raises(PreprocessError, match="needs a lung region of interest"):
        PreprocessConfig(lung_standardise="zscore")
    plain = PreprocessConfig(roi="lung_mask")
    assert "lung_standardise" not in plain.to_dict()
    recipe = PreprocessConfig(roi="lung_mask", lung_standardise="histogram")
    assert recipe.digest() != plain.digest()
    assert PreprocessConfig.from_dict(recipe.to_dict()) == recipe
    film, lungs = film_and_lungs()
    out, _ = recipe.apply_with_lungs(film, lungs)
    assert out.shape == (recipe.size, recipe.size) and not np.array_equal(out, plain.apply_with_lungs(film, lungs)[0])
    tc = config_from_options({"roi": "lung_mask", "lung_standardise": "zscore"})
    assert tc.validate().preprocess().lung_standardise == "zscore"
    with pytest.raises(TrainingError, match="needs a lung region of interest"):
        config_from_options({"lung_standardise": "zscore"}).validate()
