"""Normalisation methods (registry, parameters, edge cases, known behaviour) and the PreprocessConfig they feed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, synthetic_xray
from cxr_core.preprocess.normalise import (
    METHODS,
    NormaliseError,
    describe,
    normalise,
    parse_params,
    percentiles,
    resolve_params,
)
from cxr_core.preprocess.recipe import PreprocessConfig, PreprocessError, resize

ISSUE_METHODS = [
    "none",
    "hist_eq",
    "clahe",
    "adaptive_eq",
    "local_rank_eq",
    "gamma",
    "percentile_stretch",
    "bcet",
    "complement",
]
EQUALISERS = ["hist_eq", "clahe", "adaptive_eq", "local_rank_eq", "percentile_stretch", "bcet"]
FAST = {"local_rank_eq": {"radius": 9}}


def low_contrast_ramp(height: int = 48, width: int = 64) -> np.ndarray:
    """A horizontal ramp squeezed into gray levels 100..140."""
    return np.tile(np.linspace(100, 140, width).round().astype(np.uint8), (height, 1))


@pytest.fixture(scope="module")
def xray() -> np.ndarray:
    """A non-square synthetic chest image."""
    return synthetic_xray(np.random.default_rng(3), size=96)[:, 8:80].copy()


def test_registry_holds_every_method_of_the_issue_with_documented_parameters() -> None:
    assert list(METHODS) == ISSUE_METHODS
    for method in METHODS.values():
        assert method.summary and method.func.__doc__
        for name, spec in method.params.items():
            assert spec.help and spec.low <= spec.default <= spec.high, (method.name, name)
            assert method.defaults[name] == spec.default
    assert METHODS["local_rank_eq"].defaults == {"radius": 70}


@pytest.mark.parametrize("method", ISSUE_METHODS)
def test_every_method_keeps_shape_and_dtype_and_leaves_its_input_alone(xray: np.ndarray, method: str) -> None:
    before = xray.copy()
    out = normalise(xray, method, **FAST.get(method, {}))
    assert out.shape == xray.shape and out.dtype == np.uint8
    assert out is not xray
    np.testing.assert_array_equal(xray, before)


@pytest.mark.parametrize("method", ISSUE_METHODS)
def test_non_contiguous_and_read_only_inputs_give_the_same_result_as_a_copy(xray: np.ndarray, method: str) -> None:
    view = xray.T
    frozen = xray.copy()
    frozen.flags.writeable = False
    assert not view.flags["C_CONTIGUOUS"]
    params = FAST.get(method, {})
    np.testing.assert_array_equal(normalise(view, method, **params), normalise(view.copy(), method, **params))
    np.testing.assert_array_equal(normalise(frozen, method, **params), normalise(xray, method, **params))


@pytest.mark.parametrize("method", [m for m in EQUALISERS if m != "clahe"])
def test_equalisers_widen_the_histogram_of_a_low_contrast_ramp(method: str) -> None:
    ramp = low_contrast_ramp()
    out = normalise(ramp, method, **FAST.get(method, {}))
    assert int(out.max()) - int(out.min()) > 150, method
    assert out.std() > 2.5 * ramp.std(), method


def test_clahe_widens_low_contrast_texture_more_as_the_clip_limit_rises() -> None:
    texture = np.random.default_rng(0).integers(100, 141, (128, 128)).astype(np.uint8)
    spreads = [normalise(texture, "clahe", clip_limit=c).std() for c in (1.0, 2.0, 4.0, 40.0)]
    assert spreads == sorted(spreads) and spreads[0] < spreads[-1]
    assert spreads[1] > 2 * texture.std()
    assert np.ptp(normalise(low_contrast_ramp(), "clahe", clip_limit=40.0)) > 150


@pytest.mark.parametrize("method", ["hist_eq", "percentile_stretch", "bcet", "gamma"])
def test_global_methods_preserve_the_order_of_gray_levels(method: str) -> None:
    ramp = low_contrast_ramp()
    row = normalise(ramp, method)[0].astype(int)
    assert (np.diff(row) >= 0).all(), method


def test_gamma_below_one_brightens_above_one_darkens_and_one_is_identity(xray: np.ndarray) -> None:
    bright, dark = normalise(xray, "gamma", gamma=0.5), normalise(xray, "gamma", gamma=2.0)
    assert bright.mean() > xray.mean() + 10 and (bright >= xray).all()
    assert dark.mean() < xray.mean() - 10 and (dark <= xray).all()
    np.testing.assert_array_equal(normalise(xray, "gamma", gamma=1.0), xray)
    assert normalise(np.array([[0, 64, 255]], np.uint8), "gamma", gamma=0.5).tolist() == [[0, 128, 255]]


def test_complement_inverts_and_is_its_own_inverse(xray: np.ndarray) -> None:
    once = normalise(xray, "complement")
    np.testing.assert_array_equal(once.astype(int), 255 - xray.astype(int))
    np.testing.assert_array_equal(normalise(once, "complement"), xray)


def test_percentile_stretch_maps_the_percentiles_to_the_ends() -> None:
    image = np.arange(10_000, dtype=np.int64).reshape(100, 100) // 100
    image = image.astype(np.uint8)
    lo, hi = np.percentile(image, [5, 95])
    out = normalise(image, "percentile_stretch", low=5, high=95)
    assert out[image <= lo].max() == 0 and out[image >= hi].min() == 255
    assert abs(int(out[image == 50][0]) - round((50 - lo) * 255 / (hi - lo))) <= 1


def test_histogram_percentiles_equal_numpys_linear_percentiles() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        shape = tuple(int(v) for v in rng.integers(1, 40, 2))
        image = rng.integers(0, int(rng.integers(1, 256)) + 1, shape).astype(np.uint8)
        qs = (0.0, *rng.uniform(0, 100, 3), 100.0)
        np.testing.assert_allclose(percentiles(image, qs), np.percentile(image, qs))


def test_bcet_reaches_the_requested_minimum_maximum_and_mean() -> None:
    rng = np.random.default_rng(0)
    image = np.clip(rng.gamma(2.0, 20.0, (80, 80)) + 30, 0, 200).astype(np.uint8)
    out = normalise(image, "bcet", low=10, high=240, mean=90)
    assert out.min() == 10 and out.max() == 240
    assert abs(out.mean() - 90) < 1.0
    order = np.argsort(image.ravel(), kind="stable")
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all(), "the parabola must be monotonic on the image range"


def test_bcet_falls_back_to_a_monotonic_linear_stretch_when_the_mean_is_unreachable() -> None:
    image = np.zeros((10, 10), np.uint8)
    image[0, 0] = 200
    out = normalise(image, "bcet", mean=200)
    assert out[0, 0] == 255 and out.min() == 0
    order = np.argsort(image.ravel(), kind="stable")
    assert (np.diff(out.ravel()[order].astype(int)) >= 0).all()


@pytest.mark.parametrize("method", ISSUE_METHODS)
def test_constant_images_are_handled(method: str) -> None:
    flat = np.full((40, 30), 77, np.uint8)
    out = normalise(flat, method, **FAST.get(method, {}))
    assert out.shape == flat.shape and len(np.unique(out)) == 1
    if METHODS[method].needs_contrast or method == "none":
        np.testing.assert_array_equal(out, flat)
    expected = {"complement": 178, "gamma": round(255 * (77 / 255) ** 0.8)}
    assert out[0, 0] == expected.get(method, 77)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (3, 3), (9, 5), (2, 300)])
@pytest.mark.parametrize("method", ISSUE_METHODS)
def test_tiny_images_are_handled(method: str, shape: tuple[int, int]) -> None:
    image = (np.arange(np.prod(shape)) % 11 * 15 + 40).astype(np.uint8).reshape(shape)
    out = normalise(image, method)
    assert out.shape == shape and out.dtype == np.uint8


@pytest.mark.parametrize("method", ["clahe", "adaptive_eq"])
def test_tiled_methods_shrink_the_grid_instead_of_saturating_a_small_image(method: str) -> None:
    ramp = np.arange(64, dtype=np.uint8).reshape(8, 8) + 50
    out = normalise(ramp, method)
    assert len(np.unique(out)) > 16 and out.min() < 128


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ([[1, 2], [3, 4]], "numpy array"),
        (np.zeros((8, 8, 3), np.uint8), "2-D"),
        (np.zeros(8, np.uint8), "2-D"),
        (np.zeros((8, 8), np.float32), "uint8"),
        (np.zeros((8, 8), bool), "uint8"),
        (np.zeros((0, 8), np.uint8), "empty"),
    ],
)
def test_bad_arrays_raise_clear_errors(image: object, message: str) -> None:
    with pytest.raises(NormaliseError, match=message):
        normalise(image, "clahe")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "params", "message"),
    [
        ("sharpen", {}, "unknown normalisation method 'sharpen'"),
        ("clahe", {"clip": 2}, "takes no parameter"),
        ("complement", {"gamma": 2}, "takes no parameter"),
        ("clahe", {"clip_limit": 0}, "between 0.01 and 40.0"),
        ("clahe", {"tile_grid": 2.5}, "must be an integer"),
        ("gamma", {"gamma": "bright"}, "must be a number"),
        ("gamma", {"gamma": True}, "must be a number"),
        ("local_rank_eq", {"radius": 0}, "between 1 and 500"),
        ("bcet", {"low": 100, "mean": 50}, "low < mean < high"),
    ],
)
def test_bad_methods_and_parameters_raise_clear_errors(method: str, params: dict, message: str) -> None:
    with pytest.raises(NormaliseError, match=message):
        normalise(np.full((16, 16), 9, np.uint8) + np.eye(16, dtype=np.uint8), method, **params)


def test_parameters_are_resolved_coerced_and_parsed() -> None:
    assert resolve_params("clahe") == {"clip_limit": 2.0, "tile_grid": 8}
    assert resolve_params("clahe", {"tile_grid": 4.0, "clip_limit": 3}) == {"clip_limit": 3.0, "tile_grid": 4}
    assert parse_params("clahe", ["clip_limit=3.5", " tile_grid = 4"]) == {"clip_limit": 3.5, "tile_grid": 4}
    assert describe("gamma", {"gamma": 0.5}) == "gamma(gamma=0.5)" and describe("none") == "none"
    with pytest.raises(NormaliseError, match="key=value"):
        parse_params("clahe", ["clip_limit"])


def test_preprocess_config_is_hashable_order_independent_and_round_trips(tmp_path: Path) -> None:
    a = PreprocessConfig("clahe", {"tile_grid": 4, "clip_limit": 3.0}, size=128, resize="pad")
    b = PreprocessConfig("clahe", (("clip_limit", 3.0), ("tile_grid", 4)), size=128, resize="pad")
    assert a == b and hash(a) == hash(b) and a.digest() == b.digest() and len({a, b}) == 1
    assert PreprocessConfig("clahe", {"tile_grid": 5, "clip_limit": 3.0}, size=128, resize="pad").digest() != a.digest()
    assert PreprocessConfig.from_dict(a.to_dict()) == a
    a.save(tmp_path)
    assert PreprocessConfig.load(tmp_path).digest() == a.digest()
    with pytest.raises(PreprocessError, match="unknown normalisation method"):
        PreprocessConfig("sharpen")


def test_config_digest_is_stable_across_processes() -> None:
    config = PreprocessConfig("gamma", {"gamma": 0.6}, size=299)
    code = "from cxr_core.preprocess.recipe import PreprocessConfig; print(PreprocessConfig('gamma', {'gamma': 0.6}, size=299).digest())"
    other = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin"},
    )
    assert other.stdout.strip() == config.digest()


def test_preprocess_config_apply_is_resize_then_normalise(xray: np.ndarray) -> None:
    config = PreprocessConfig("percentile_stretch", {"low": 1.0}, size=32, resize="pad", interpolation="linear")
    expected = normalise(resize(xray, 32, "pad", "linear"), "percentile_stretch", low=1.0)
    np.testing.assert_array_equal(config.apply(xray), expected)
