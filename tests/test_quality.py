"""Image quality measures on images whose values are known in closed form."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import synthetic_xray
from cxr_core.preprocess.normalise import NormaliseError, normalise
from cxr_core.preprocess.quality import (
    MEASURES,
    clipped_fraction,
    entropy,
    histogram,
    mean_brightness,
    measure_files,
    quality_measures,
    rms_contrast,
    sharpness,
    signed_difference,
)


@pytest.mark.parametrize("value", [0, 77, 255])
def test_a_constant_image_has_no_contrast_entropy_or_sharpness(value: int) -> None:
    flat = np.full((20, 30), value, np.uint8)
    assert rms_contrast(flat) == 0.0 and entropy(flat) == 0.0 and sharpness(flat) == 0.0
    assert mean_brightness(flat) == pytest.approx(value / 255)
    assert clipped_fraction(flat) == (1.0 if value in (0, 255) else 0.0)


def test_half_black_half_white_has_the_maximal_rms_contrast_and_one_bit() -> None:
    image = np.zeros((10, 10), np.uint8)
    image[:, 5:] = 255
    assert rms_contrast(image) == pytest.approx(0.5)
    assert entropy(image) == pytest.approx(1.0)
    assert mean_brightness(image) == pytest.approx(0.5)
    assert clipped_fraction(image) == 1.0


def test_every_gray_level_once_has_eight_bits_of_entropy() -> None:
    image = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert entropy(image) == pytest.approx(8.0)
    assert clipped_fraction(image) == pytest.approx(2 / 256)
    counts = histogram(image)
    assert counts.shape == (256,) and (counts == 1).all()


def test_blurring_lowers_sharpness_and_stretching_raises_contrast() -> None:
    xray = synthetic_xray(np.random.default_rng(1), size=96)
    blurred = cv2.GaussianBlur(xray, (0, 0), 2.0)
    assert sharpness(blurred) < 0.5 * sharpness(xray)
    stretched = normalise(xray, "percentile_stretch")
    assert rms_contrast(stretched) > rms_contrast(xray)
    assert mean_brightness(normalise(xray, "gamma", gamma=0.5)) > mean_brightness(xray)


def test_sharpness_is_the_variance_of_the_laplacian() -> None:
    image = np.zeros((9, 9), np.uint8)
    image[4, 4] = 100
    laplacian = np.zeros((9, 9))
    laplacian[4, 4] = -400
    laplacian[3, 4] = laplacian[5, 4] = laplacian[4, 3] = laplacian[4, 5] = 100
    assert sharpness(image) == pytest.approx(laplacian.var())


def test_quality_measures_returns_every_measure_in_order() -> None:
    xray = synthetic_xray(np.random.default_rng(2), size=64)
    measures = quality_measures(xray)
    assert list(measures) == list(MEASURES)
    assert measures["rms_contrast"] == rms_contrast(xray) and measures["sharpness"] == sharpness(xray)
    assert all(isinstance(v, float) for v in measures.values())


@pytest.mark.parametrize("image", [np.zeros((4, 4), np.float64), np.zeros((4, 4, 3), np.uint8), [[1, 2]]])
def test_bad_arrays_are_refused(image: object) -> None:
    with pytest.raises(NormaliseError):
        quality_measures(image)  # type: ignore[arg-type]


def test_signed_difference_shows_where_a_method_brightened_or_darkened() -> None:
    before = np.array([[10, 200]], np.uint8)
    after = np.array([[60, 0]], np.uint8)
    diff = signed_difference(before, after)
    assert diff.dtype == np.int16 and diff.tolist() == [[50, -200]]
    with pytest.raises(NormaliseError, match="shapes"):
        signed_difference(before, np.zeros((2, 2), np.uint8))


def test_measure_files_reports_unreadable_files_instead_of_dropping_them(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), synthetic_xray(np.random.default_rng(3), size=64))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    calls: list[tuple[int, int]] = []
    table = measure_files([good, bad], progress=lambda done, total: calls.append((done, total)))
    assert list(table.columns) == ["path", *MEASURES, "error"]
    assert table.loc[0, "error"] == "" and table.loc[0, "entropy"] > 3
    assert "bad.png" in table.loc[1, "error"] and np.isnan(table.loc[1, "rms_contrast"])
    assert calls == [(1, 2), (2, 2)]
