"""Procedural pictures that are not chest X-rays, for training and checking the gate's learned score.

Every generator is a plain function ``(rng) -> 2-D uint8 image`` of a random size. The families cover what people
upload by mistake: noise, blank or graded fields, textures, rendered text (documents), geometric shapes, and
natural-image stand-ins (dead-leaves compositions and 1/f noise, which share the statistics of photographs), crude
radiographs of other body parts (a limb's bones, a skull), plus chest X-rays transformed until they are no longer
assessable (shuffled tiles, mosaics, tight crops). Real pictures
from packages (scikit-image's ``data`` module, pydicom's test files) are never generated or used here: they are kept
for evaluation only (``bench/gate.py``).
"""

from __future__ import annotations

import string
from collections.abc import Callable

import cv2
import numpy as np

Generator = Callable[[np.random.Generator], np.ndarray]
XrayGenerator = Callable[[np.random.Generator, np.ndarray], np.ndarray]
FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    cv2.FONT_ITALIC | cv2.FONT_HERSHEY_SIMPLEX,
)


def _shape(rng: np.random.Generator) -> tuple[int, int]:
    """A random (height, width) between 96 and 320 px with aspect ratio 0.6-1.7."""
    side = int(rng.integers(96, 321))
    aspect = float(rng.uniform(0.6, 1.7))
    return side, int(np.clip(side * aspect, 64, 480))


def _to_uint8(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stretch a float field to a random grey range inside 0-255."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    lo = rng.uniform(0, 120)
    hi = rng.uniform(max(lo + 30, 140), 255)
    return np.clip(lo + scaled * (hi - lo), 0, 255).astype(np.uint8)


def uniform_noise(rng: np.random.Generator) -> np.ndarray:
    """Independent uniform noise, sometimes over a random grey range."""
    return _to_uint8(rng.random(_shape(rng)), rng)


def gaussian_noise(rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise around a random grey level, optionally blurred a little."""
    field = rng.normal(rng.uniform(40, 210), rng.uniform(5, 60), _shape(rng))
    if rng.random() < 0.5:
        field = cv2.GaussianBlur(field, (0, 0), rng.uniform(0.5, 2.5))
    return np.clip(field, 0, 255).astype(np.uint8)


def blank(rng: np.random.Generator) -> np.ndarray:
    """A constant grey field, sometimes with faint noise."""
    image = np.full(_shape(rng), rng.uniform(0, 255))
    if rng.random() < 0.5:
        image = image + rng.normal(0, rng.uniform(0.5, 4), image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def gradient(rng: np.random.Generator) -> np.ndarray:
    """A linear or radial grey ramp."""
    h, w = _shape(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        field = np.cos(angle) * xx + np.sin(angle) * yy
    else:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        field = np.hypot(yy - cy, xx - cx) ** rng.uniform(0.5, 2)
    return _to_uint8(field, rng)


def pink_noise(rng: np.random.Generator) -> np.ndarray:
    """1/f^beta noise (cloud-like fields with the spectrum of natural images)."""
    h, w = _shape(rng)
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    radius = np.hypot(fy, fx)
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w))) / radius ** rng.uniform(0.8, 2.2)
    return _to_uint8(np.real(np.fft.ifft2(spectrum)), rng)


def dead_leaves(rng: np.random.Generator) -> np.ndarray:
    """Overlapping discs and rectangles of random grey and size: a photograph stand-in, with blur and lighting."""
    h, w = _shape(rng)
    image = np.full((h, w), rng.uniform(0, 255), np.float64)
    for _ in range(int(rng.integers(20, 200))):
        grey = float(rng.uniform(0, 255))
        size = int(max(2, min(h, w) * rng.uniform(0.01, 0.4) ** 1.5 * 2))
        cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        if rng.random() < 0.6:
            cv2.circle(image, (cx, cy), size, grey, -1)
        else:
            cv2.rectangle(image, (cx - size, cy - size // 2), (cx + size, cy + size // 2), grey, -1)
    yy, xx = np.mgrid[0:h, 0:w]
    image = image * (1 + rng.uniform(-0.4, 0.4) * (xx / w - 0.5) + rng.uniform(-0.4, 0.4) * (yy / h - 0.5))
    if rng.random() < 0.7:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 3))
    return np.clip(image + rng.normal(0, rng.uniform(0, 8), image.shape), 0, 255).astype(np.uint8)


def texture(rng: np.random.Generator) -> np.ndarray:
    """Stripes, checkerboards or grids at a random scale and angle."""
    h, w = _shape(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * xx + np.sin(angle) * yy
    v = -np.sin(angle) * xx + np.cos(angle) * yy
    period = rng.uniform(4, 60)
    kind = int(rng.integers(3))
    if kind == 0:
        field = np.sin(2 * np.pi * u / period)
    elif kind == 1:
        field = np.sign(np.sin(np.pi * u / period) * np.sin(np.pi * v / period))
    else:
        field = np.maximum(np.cos(2 * np.pi * u / period), np.cos(2 * np.pi * v / period)) > 0.9
    return _to_uint8(field.astype(np.float64) + rng.normal(0, 0.1, (h, w)), rng)


def _random_word(rng: np.random.Generator) -> str:
    """A random word of letters and digits."""
    letters = string.ascii_letters + string.digits + ".,:;-()%"
    return "".join(rng.choice(list(letters), int(rng.integers(1, 10))))


def text_page(rng: np.random.Generator) -> np.ndarray:
    """Lines of rendered text, dark on light (a document) or light on dark (a screen)."""
    h, w = _shape(rng)
    dark_on_light = rng.random() < 0.7
    paper, ink = (
        (rng.uniform(200, 255), rng.uniform(0, 80)) if dark_on_light else (rng.uniform(0, 60), rng.uniform(170, 255))
    )
    image = np.full((h, w), paper, np.uint8)
    font = FONTS[int(rng.integers(len(FONTS)))]
    scale = rng.uniform(0.3, 1.2)
    step = int(max(8, 30 * scale))
    for y in range(int(rng.integers(step, 2 * step)), h, step):
        line = " ".join(_random_word(rng) for _ in range(int(rng.integers(1, 12))))
        cv2.putText(
            image, line, (int(rng.integers(0, 20)), y), font, scale, float(ink), int(rng.integers(1, 3)), cv2.LINE_AA
        )
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def shapes(rng: np.random.Generator) -> np.ndarray:
    """A few outlined or filled polygons, ellipses and lines on a plain background (diagrams, logos)."""
    h, w = _shape(rng)
    image = np.full((h, w), rng.uniform(0, 255), np.float64)
    for _ in range(int(rng.integers(1, 12))):
        grey = float(rng.uniform(0, 255))
        thickness = -1 if rng.random() < 0.5 else int(rng.integers(1, 6))
        kind = int(rng.integers(3))
        if kind == 0:
            points = np.stack([rng.integers(0, w, 5), rng.integers(0, h, 5)], axis=1).astype(np.int32)
            if thickness < 0:
                cv2.fillPoly(image, [points], grey)
            else:
                cv2.polylines(image, [points], True, grey, thickness)
        elif kind == 1:
            axes = (int(rng.integers(4, max(5, w // 2))), int(rng.integers(4, max(5, h // 2))))
            cv2.ellipse(
                image,
                (int(rng.integers(0, w)), int(rng.integers(0, h))),
                axes,
                float(rng.uniform(0, 180)),
                0,
                360,
                grey,
                thickness,
            )
        else:
            cv2.line(
                image,
                (int(rng.integers(0, w)), int(rng.integers(0, h))),
                (int(rng.integers(0, w)), int(rng.integers(0, h))),
                grey,
                abs(thickness),
            )
    return image.astype(np.uint8)


def other_radiograph(rng: np.random.Generator) -> np.ndarray:
    """A crude radiograph of another body part: bright bones (a limb's chain or a skull's ring) in soft tissue."""
    h, w = _shape(rng)
    image = np.full((h, w), rng.uniform(0, 40), np.float64)
    tissue = np.zeros((h, w), np.float64)
    bones = np.zeros((h, w), np.float64)
    if rng.random() < 0.6:
        x, y = rng.uniform(0.2, 0.8) * w, rng.uniform(0.05, 0.2) * h
        angle = rng.uniform(-0.4, 0.4) + np.pi / 2
        for _ in range(int(rng.integers(2, 6))):
            length, width = rng.uniform(0.12, 0.35) * h, rng.uniform(0.04, 0.1) * w
            cx, cy = x + np.cos(angle) * length / 2, y + np.sin(angle) * length / 2
            centre, axes = (int(cx), int(cy)), (int(length / 2), int(width / 2))
            cv2.ellipse(tissue, centre, (axes[0], int(axes[1] * 2.5)), float(np.degrees(angle)), 0, 360, 1.0, -1)
            cv2.ellipse(bones, centre, axes, float(np.degrees(angle)), 0, 360, 1.0, -1)
            x, y = x + np.cos(angle) * length * 1.05, y + np.sin(angle) * length * 1.05
            angle += rng.uniform(-0.5, 0.5)
    else:
        centre = (int(w / 2 + rng.uniform(-0.1, 0.1) * w), int(h / 2 + rng.uniform(-0.1, 0.1) * h))
        axes = (int(rng.uniform(0.3, 0.45) * w), int(rng.uniform(0.35, 0.48) * h))
        cv2.ellipse(tissue, centre, axes, 0, 0, 360, 1.0, -1)
        cv2.ellipse(bones, centre, axes, 0, 0, 360, 1.0, int(rng.integers(4, 14)))
    tissue = cv2.GaussianBlur(tissue, (0, 0), rng.uniform(2, 6)) * rng.uniform(50, 110)
    bones = cv2.GaussianBlur(bones, (0, 0), rng.uniform(0.8, 2.5)) * rng.uniform(90, 160)
    image = image + tissue + bones + rng.normal(0, rng.uniform(1, 6), (h, w))
    return np.clip(image, 0, 255).astype(np.uint8)


def shuffled_tiles(rng: np.random.Generator, xray: np.ndarray) -> np.ndarray:
    """A chest X-ray cut into a grid of tiles put back in random order."""
    n = int(rng.integers(2, 6))
    h, w = (xray.shape[0] // n) * n, (xray.shape[1] // n) * n
    tiles = [xray[i * h // n : (i + 1) * h // n, j * w // n : (j + 1) * w // n] for i in range(n) for j in range(n)]
    order = rng.permutation(len(tiles))
    rows = [np.hstack([tiles[k] for k in order[r * n : (r + 1) * n]]) for r in range(n)]
    return np.vstack(rows)


def mosaic(rng: np.random.Generator, xray: np.ndarray) -> np.ndarray:
    """A 2x2 or 3x3 mosaic of shrunken copies of a chest X-ray (a contact sheet, not one film)."""
    n = int(rng.integers(2, 4))
    small = cv2.resize(xray, (max(16, xray.shape[1] // n), max(16, xray.shape[0] // n)), interpolation=cv2.INTER_AREA)
    row = np.hstack([np.fliplr(small) if rng.random() < 0.3 else small for _ in range(n)])
    return np.vstack([row] * n)


def tight_crop(rng: np.random.Generator, xray: np.ndarray) -> np.ndarray:
    """A small patch (5-15 % of the area) of a chest X-ray blown up: texture, no chest."""
    h, w = xray.shape
    frac = float(np.sqrt(rng.uniform(0.05, 0.15)))
    ch, cw = max(8, int(h * frac)), max(8, int(w * frac))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return cv2.resize(xray[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_LINEAR)


GENERATORS: dict[str, Generator] = {
    "uniform_noise": uniform_noise,
    "gaussian_noise": gaussian_noise,
    "blank": blank,
    "gradient": gradient,
    "pink_noise": pink_noise,
    "dead_leaves": dead_leaves,
    "texture": texture,
    "text": text_page,
    "shapes": shapes,
    "other_radiograph": other_radiograph,
}
XRAY_GENERATORS: dict[str, XrayGenerator] = {
    "shuffled_tiles": shuffled_tiles,
    "mosaic": mosaic,
    "tight_crop": tight_crop,
}


def negative(rng: np.random.Generator, xray: np.ndarray | None = None) -> tuple[str, np.ndarray]:
    """One random negative and its family name; with ``xray`` given, a quarter of them transform it."""
    if xray is not None and rng.random() < 0.25:
        name = list(XRAY_GENERATORS)[int(rng.integers(len(XRAY_GENERATORS)))]
        return name, XRAY_GENERATORS[name](rng, xray)
    name = list(GENERATORS)[int(rng.integers(len(GENERATORS)))]
    return name, GENERATORS[name](rng)
