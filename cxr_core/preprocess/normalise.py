"""Contrast normalisation methods: pure functions ``(gray uint8, **params) -> gray uint8`` in a registry.

Every method keeps the shape and the uint8 dtype and never modifies its input. Call methods through
:func:`normalise`, which validates the image, fills in defaults, coerces and range-checks the parameters
(:class:`Param`) and handles constant images: methods marked ``needs_contrast`` (those defined by the image's
own intensity distribution) return a constant image unchanged instead of inventing contrast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

MIN_TILE = 8
"""Smallest tile side (pixels) of the tiled methods: on small images the tile grid shrinks to keep tiles this big."""


class NormaliseError(ValueError):
    """A normalisation input or parameter is invalid."""


@dataclass(frozen=True)
class Param:
    """One numeric parameter of a method: its default, the closed range it accepts and what it does."""

    default: int | float
    low: int | float
    high: int | float
    help: str

    @property
    def kind(self) -> type:
        """``int`` or ``float``, from the default's type."""
        return int if isinstance(self.default, int) else float


@dataclass(frozen=True)
class Method:
    """A registered normalisation method with its parameter specs and default values."""

    name: str
    func: Callable[..., np.ndarray]
    defaults: dict[str, Any]
    summary: str
    params: dict[str, Param] = field(default_factory=dict)
    needs_contrast: bool = False


METHODS: dict[str, Method] = {}


def register(
    name: str, summary: str, *, needs_contrast: bool = False, **params: Param
) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Decorator adding a method to :data:`METHODS` under ``name`` with its parameter specs."""

    def decorate(func: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        defaults = {key: spec.default for key, spec in params.items()}
        METHODS[name] = Method(name, func, defaults, summary, dict(params), needs_contrast)
        return func

    return decorate


def check_gray(image: np.ndarray) -> np.ndarray:
    """Validate a non-empty 2-D uint8 image and return it unchanged."""
    if not isinstance(image, np.ndarray):
        raise NormaliseError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim != 2:
        raise NormaliseError(f"expected a 2-D grayscale image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise NormaliseError(f"expected dtype uint8, got {image.dtype}")
    if image.size == 0:
        raise NormaliseError(f"image is empty (shape {image.shape})")
    return image


def get_method(method: str) -> Method:
    """The registered :class:`Method` called ``method``; a clear error for an unknown name."""
    if method not in METHODS:
        raise NormaliseError(f"unknown normalisation method {method!r}; choose from {list(METHODS)}")
    return METHODS[method]


def _coerce(method: str, name: str, spec: Param, value: Any) -> int | float:
    """Convert ``value`` (number or numeric string) to the parameter's type and check its range."""
    if isinstance(value, bool):
        raise NormaliseError(f"{method}: {name} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise NormaliseError(f"{method}: {name} must be a number, got {value!r}") from None
    if spec.kind is int:
        if not number.is_integer():
            raise NormaliseError(f"{method}: {name} must be an integer, got {value!r}")
        number = int(number)
    if not spec.low <= number <= spec.high:
        raise NormaliseError(f"{method}: {name} must be between {spec.low} and {spec.high}, got {value!r}")
    return number


def resolve_params(method: str, params: Mapping[str, Any] | None = None) -> dict[str, int | float]:
    """Every parameter of ``method``: ``params`` over the defaults, coerced to int/float and range-checked."""
    entry = get_method(method)
    given = dict(params or {})
    unknown = set(given) - set(entry.params)
    if unknown:
        takes = ", ".join(entry.params) or "no parameters"
        raise NormaliseError(f"{method} takes no parameter(s) {sorted(unknown)}; it takes {takes}")
    return {key: _coerce(method, key, spec, given.get(key, spec.default)) for key, spec in entry.params.items()}


def parse_params(method: str, pairs: Iterable[str]) -> dict[str, int | float]:
    """Parse ``["key=value", ...]`` (command-line style) into resolved parameters of ``method``."""
    given: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise NormaliseError(f"parameter {pair!r} is not of the form key=value")
        given[key.strip()] = value.strip()
    return resolve_params(method, given)


def describe(method: str, params: Mapping[str, Any] | None = None) -> str:
    """A short label such as ``clahe(clip_limit=2.0, tile_grid=8)`` with every resolved parameter."""
    values = resolve_params(method, params)
    return f"{method}({', '.join(f'{k}={v}' for k, v in values.items())})" if values else method


def normalise(image: np.ndarray, method: str = "clahe", **params: Any) -> np.ndarray:
    """Apply the registered ``method`` with ``params`` over its defaults; returns a new uint8 image of the same shape."""
    entry = get_method(method)
    values = resolve_params(method, params)
    gray = check_gray(image)
    if not (gray.flags.c_contiguous and gray.flags.writeable):
        gray = np.array(gray, order="C")
    if entry.needs_contrast and gray.min() == gray.max():
        return gray.copy()
    out = entry.func(gray, **values)
    return np.ascontiguousarray(out, dtype=np.uint8)


def _apply_lut(image: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Map every gray level through a 256-entry float table, rounded and clipped to uint8."""
    table = np.clip(np.rint(lut), 0, 255).astype(np.uint8)
    return cv2.LUT(image, table)


def percentiles(image: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """``np.percentile(image, qs)`` (linear interpolation) from the gray-level histogram: O(pixels), no sort."""
    cumulative = np.cumsum(np.bincount(image.ravel(), minlength=256))
    position = np.asarray(qs, dtype=np.float64) / 100.0 * (image.size - 1)
    below, above = np.floor(position), np.ceil(position)
    lower = np.searchsorted(cumulative, below, side="right").astype(np.float64)
    upper = np.searchsorted(cumulative, above, side="right").astype(np.float64)
    return lower + (position - below) * (upper - lower)


def _tiles(length: int, wanted: int) -> int:
    """Tiles along an axis of ``length`` pixels: ``wanted``, reduced so that each tile is at least MIN_TILE pixels."""
    return max(1, min(int(wanted), length // MIN_TILE))


@register("none", "No change.")
def identity(image: np.ndarray) -> np.ndarray:
    """Return the image unchanged (a copy)."""
    return image.copy()


@register("hist_eq", "Global histogram equalisation (OpenCV).", needs_contrast=True)
def hist_eq(image: np.ndarray) -> np.ndarray:
    """Spread the gray levels so that the cumulative histogram becomes roughly linear (``cv2.equalizeHist``)."""
    return cv2.equalizeHist(image)


@register(
    "clahe",
    "Contrast-limited adaptive histogram equalisation (OpenCV).",
    needs_contrast=True,
    clip_limit=Param(2.0, 0.01, 40.0, "contrast limit per tile, relative to a flat histogram (higher = stronger)"),
    tile_grid=Param(8, 1, 64, "tiles per side; reduced on small images so that tiles stay >= 8 px"),
)
def clahe(image: np.ndarray, clip_limit: float = 2.0, tile_grid: int = 8) -> np.ndarray:
    """``cv2.createCLAHE(clip_limit, (tile_grid, tile_grid))``; about 0.3 ms on a 299x299 image."""
    height, width = image.shape
    grid = (_tiles(width, tile_grid), _tiles(height, tile_grid))
    return cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=grid).apply(image)


@register(
    "adaptive_eq",
    "Contrast-limited adaptive histogram equalisation (scikit-image equalize_adapthist).",
    needs_contrast=True,
    clip_limit=Param(0.01, 0.0001, 1.0, "normalised clip limit in [0, 1] (higher = stronger)"),
    tile_grid=Param(8, 1, 64, "kernel = image side / tile_grid (8 is scikit-image's default of 1/8)"),
    nbins=Param(256, 2, 256, "histogram bins"),
)
def adaptive_eq(image: np.ndarray, clip_limit: float = 0.01, tile_grid: int = 8, nbins: int = 256) -> np.ndarray:
    """``skimage.exposure.equalize_adapthist`` (first stretches to the full range); several ms per image."""
    from skimage.exposure import equalize_adapthist

    height, width = image.shape
    kernel = (-(-height // _tiles(height, tile_grid)), -(-width // _tiles(width, tile_grid)))
    out = equalize_adapthist(image, kernel_size=kernel, clip_limit=float(clip_limit), nbins=int(nbins))
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


@register(
    "local_rank_eq",
    "The paper's local histogram equalisation over a disk (scikit-image rank.equalize); slow.",
    needs_contrast=True,
    radius=Param(70, 1, 500, "disk radius in pixels (the paper used 70)"),
)
def local_rank_eq(image: np.ndarray, radius: int = 70) -> np.ndarray:
    """``skimage.filters.rank.equalize(image, disk(radius))``: tens of ms per 299x299 image at radius 70."""
    from skimage.filters import rank
    from skimage.morphology import disk

    return rank.equalize(image, footprint=disk(int(radius)))


@register(
    "gamma",
    "Gamma correction: out = 255 * (in / 255) ** gamma.",
    gamma=Param(0.8, 0.05, 10.0, "exponent; < 1 brightens dark regions, > 1 darkens, 1 is no change"),
)
def gamma(image: np.ndarray, gamma: float = 0.8) -> np.ndarray:
    """Power-law intensity mapping through a lookup table."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    return _apply_lut(image, 255.0 * levels ** float(gamma))


@register(
    "percentile_stretch",
    "Linear contrast stretch between two intensity percentiles.",
    needs_contrast=True,
    low=Param(2.0, 0.0, 49.9, "percentile mapped to 0"),
    high=Param(98.0, 50.1, 100.0, "percentile mapped to 255"),
)
def percentile_stretch(image: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Map the ``low`` percentile to 0 and the ``high`` one to 255, clipping outside; unchanged if they coincide."""
    lo, hi = percentiles(image, (low, high))
    if hi <= lo:
        return image.copy()
    levels = np.arange(256, dtype=np.float64)
    return _apply_lut(image, (levels - lo) * (255.0 / (hi - lo)))


@register(
    "bcet",
    "Balance contrast enhancement technique (Guo 1991): a parabola fixing output min, max and mean.",
    needs_contrast=True,
    low=Param(0, 0, 254, "output minimum L"),
    high=Param(255, 1, 255, "output maximum H"),
    mean=Param(110, 1, 254, "output mean E; must lie strictly between L and H"),
)
def bcet(image: np.ndarray, low: int = 0, high: int = 255, mean: int = 110) -> np.ndarray:
    """``y = a (x - b)^2 + c`` with min ``low``, max ``high`` and mean ``mean``.

    When no monotonic parabola reaches the requested mean (its vertex would fall inside the image's
    range and invert part of the contrast), the image is stretched linearly to [low, high] instead.
    """
    if not low < mean < high:
        raise NormaliseError(f"bcet: need low < mean < high, got low={low}, mean={mean}, high={high}")
    x = image.astype(np.float64)
    lo, hi, avg, sq = float(x.min()), float(x.max()), float(x.mean()), float((x * x).mean())
    big_l, big_h, big_e = float(low), float(high), float(mean)
    levels = np.arange(256, dtype=np.float64)
    linear = big_l + (levels - lo) * (big_h - big_l) / (hi - lo)
    denominator = 2.0 * (hi * (big_e - big_l) - avg * (big_h - big_l) + lo * (big_h - big_e))
    if abs(denominator) < 1e-9:
        return _apply_lut(image, linear)
    b = (hi * hi * (big_e - big_l) - sq * (big_h - big_l) + lo * lo * (big_h - big_e)) / denominator
    if lo < b < hi:
        return _apply_lut(image, linear)
    a = (big_h - big_l) / ((hi - lo) * (hi + lo - 2.0 * b))
    c = big_l - a * (lo - b) ** 2
    return _apply_lut(image, a * (levels - b) ** 2 + c)


@register("complement", "Image complement (negative): out = 255 - in.")
def complement(image: np.ndarray) -> np.ndarray:
    """Invert the gray levels."""
    return 255 - image
