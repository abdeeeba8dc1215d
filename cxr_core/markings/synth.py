"""Synthetic overlays for training the learned markings detector: arrows, circles, boxes, scribbles and captions.

Every drawing function paints onto a uint8 image and, with the same geometry, onto a mask, so the trainer knows
where each overlay lies. Small corner letters (L, R, PA, AP, ...) and technician's words, sometimes with a small
orientation arrow, lead position markers (a letter in a disc, often with an outlined upright arrow and AP or PORTABLE
beside it, or a large L or R near a top corner), large filled shapes, ECG electrodes with their leads and padding
bands are drawn too, on clean and marked images alike, but not onto the mask: they are part of ordinary films and must
not count as markings.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_COMPLEX_SMALL,
)
CORNER_LETTERS = ("L", "R", "PA", "AP", "A", "P", "D", "S", "LT", "RT")
TECHNICIAN_WORDS = ("PORTABLE", "SUPINE", "UPRIGHT", "ERECT", "SEMI-ERECT", "AP SUPINE", "PA ERECT", "INSP", "SITTING")
CAPTION_CHARS = string.ascii_uppercase + string.digits + "  :/-."
CAPTION_HEIGHT = (0.035, 0.09)
SMALL_TEXT_HEIGHT = (0.02, 0.035)
CENTRE = (0.15, 0.85)
BIG_LETTER_HEIGHT = (0.08, 0.16)
BIG_CHARACTERS = [c for c in string.ascii_uppercase + string.digits if c not in "LR"]
MARKER_WORDS = ("AP", "PA", "PORTABLE", "AP PORTABLE", "SUPINE", "ERECT")


@dataclass(frozen=True)
class OverlayOptions:
    """How overlays are drawn, lengths as fractions of the image side."""

    corner_letter_rate: float = 0.5
    distractor_rate: float = 0.35
    max_objects: int = 3
    many_arrows_rate: float = 0.1
    corner_height: tuple[float, float] = (0.015, 0.035)
    marker_rate: float = 0.3


Painter = Callable[[np.ndarray, np.ndarray, np.random.Generator], None]


def _colour(rng: np.random.Generator, image: np.ndarray, x: int, y: int) -> int:
    """A stroke colour: mostly pure white or black, sometimes a grey that differs from the local background."""
    kind = rng.random()
    if kind < 0.5:
        return int(rng.integers(225, 256))
    if kind < 0.8:
        return int(rng.integers(0, 30))
    local = int(image[min(y, image.shape[0] - 1), min(x, image.shape[1] - 1)])
    return int(np.clip(local + rng.choice([-1, 1]) * rng.integers(60, 130), 0, 255))


def _thickness(rng: np.random.Generator, side: int) -> int:
    """A stroke thickness in pixels, from hairline to bold, scaled to the image side."""
    return max(1, int(round(side * rng.uniform(0.002, 0.012))))


def _point(rng: np.random.Generator, side: int, margin: float = 0.08) -> tuple[int, int]:
    """A random point away from the border."""
    lo, hi = int(margin * side), int((1 - margin) * side)
    return int(rng.integers(lo, hi)), int(rng.integers(lo, hi))


def _both(image: np.ndarray, mask: np.ndarray, colour: int, draw: Callable[[np.ndarray, int], None]) -> None:
    """Apply one drawing call to the image (in ``colour``) and to the mask (in 255)."""
    draw(image, colour)
    draw(mask, 255)


def arrow(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """A straight arrow (shaft and head, open or filled, optionally outlined) or a lone filled arrowhead."""
    side = image.shape[0]
    tip = _point(rng, side)
    angle, length = rng.uniform(0, 2 * np.pi), side * rng.uniform(0.05, 0.3)
    tail = (int(tip[0] + length * np.cos(angle)), int(tip[1] + length * np.sin(angle)))
    colour, t = _colour(rng, image, *tip), _thickness(rng, side)
    head = max(6.0, length * rng.uniform(0.2, 0.45)) if rng.random() < 0.6 else side * rng.uniform(0.015, 0.05)
    spread = rng.uniform(0.3, 0.6)
    wings = [
        (int(tip[0] + head * np.cos(angle + s * spread)), int(tip[1] + head * np.sin(angle + s * spread)))
        for s in (-1, 1)
    ]
    triangle = np.array([tip, wings[0], wings[1]], np.int32)
    style = rng.random()
    if style < 0.15:
        _both(image, mask, colour, lambda im, c: cv2.fillPoly(im, [triangle], c, cv2.LINE_AA))
        return
    if rng.random() < 0.2:
        outline = 0 if colour > 127 else 255
        _both(image, mask, outline, lambda im, c: cv2.line(im, tail, tip, c, t + 2 * max(1, t // 2), cv2.LINE_AA))
    _both(image, mask, colour, lambda im, c: cv2.line(im, tail, tip, c, t, cv2.LINE_AA))
    if style < 0.6:
        _both(image, mask, colour, lambda im, c: cv2.fillPoly(im, [triangle], c, cv2.LINE_AA))
    else:
        _both(image, mask, colour, lambda im, c: cv2.polylines(im, [triangle[[1, 0, 2]]], False, c, t, cv2.LINE_AA))


def ellipse(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """A hollow circle or ellipse (sometimes an open arc) around a region of interest."""
    side = image.shape[0]
    centre = _point(rng, side, 0.15)
    axes = (int(side * rng.uniform(0.04, 0.22)), int(side * rng.uniform(0.04, 0.22)))
    start = 0 if rng.random() < 0.7 else int(rng.integers(0, 120))
    colour, t = _colour(rng, image, *centre), _thickness(rng, side)
    rotation = int(rng.integers(0, 180))
    _both(image, mask, colour, lambda im, c: cv2.ellipse(im, centre, axes, rotation, start, 360, c, t, cv2.LINE_AA))


def rectangle(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """A hollow rectangle, sometimes missing one side."""
    side = image.shape[0]
    x, y = _point(rng, side, 0.1)
    w, h = int(side * rng.uniform(0.06, 0.35)), int(side * rng.uniform(0.06, 0.35))
    corners = [
        (x, y),
        (min(x + w, side - 2), y),
        (min(x + w, side - 2), min(y + h, side - 2)),
        (x, min(y + h, side - 2)),
    ]
    colour, t = _colour(rng, image, x, y), _thickness(rng, side)
    points = np.array(corners, np.int32)
    if rng.random() < 0.3:
        points = np.roll(points, int(rng.integers(0, 4)), axis=0)
        _both(image, mask, colour, lambda im, c: cv2.polylines(im, [points], False, c, t, cv2.LINE_AA))
    else:
        _both(image, mask, colour, lambda im, c: cv2.polylines(im, [points], True, c, t, cv2.LINE_AA))


def scribble(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """A hand-drawn polyline: a jittery random walk of a few to many segments."""
    side = image.shape[0]
    start = np.array(_point(rng, side, 0.12), float)
    steps = int(rng.integers(4, 20))
    heading, step = rng.uniform(0, 2 * np.pi), side * rng.uniform(0.01, 0.04)
    points = [start]
    for _ in range(steps):
        heading += rng.normal(0, 0.5)
        points.append(np.clip(points[-1] + step * np.array([np.cos(heading), np.sin(heading)]), 2, side - 3))
    line = np.array(points, np.int32)
    colour, t = _colour(rng, image, int(start[0]), int(start[1])), _thickness(rng, side)
    _both(image, mask, colour, lambda im, c: cv2.polylines(im, [line], False, c, t, cv2.LINE_AA))


def _text(
    image: np.ndarray,
    mask: np.ndarray | None,
    rng: np.random.Generator,
    words: str,
    height: float,
    where: tuple[int, int] | None,
    boxed: bool,
) -> None:
    """Draw ``words`` about ``height`` (fraction of the side) tall at ``where`` (random if None), on a box if asked."""
    side = image.shape[0]
    font = int(rng.choice(FONTS))
    base = cv2.getTextSize("A", font, 1.0, 1)[0][1]
    scale = max(0.2, height * side / base)
    thick = max(1, int(round(scale * rng.uniform(0.8, 2.5))))
    (w, h), below = cv2.getTextSize(words, font, scale, thick)
    if w >= side - 4 or h >= side - 4:
        return
    x, y = (
        where if where is not None else (int(rng.integers(2, side - w - 2)), int(rng.integers(h + 2, side - below - 2)))
    )
    x, y = int(np.clip(x, 2, side - w - 2)), int(np.clip(y, h + 2, side - below - 2))
    colour = _colour(rng, image, x + w // 2, y - h // 2)
    pad = max(2, h // 3)
    box = ((x - pad, y - h - pad), (x + w + pad, y + below + pad))
    target = [image] if mask is None else [image, mask]
    if boxed:
        cv2.rectangle(image, *box, 255 - colour if abs(255 - 2 * colour) > 60 else 0, -1)
        if mask is not None:
            cv2.rectangle(mask, *box, 255, -1)
    for im, c in zip(target, (colour, 255)):
        cv2.putText(im, words, (x, y), font, scale, c, thick, cv2.LINE_AA)


def caption(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> None:
    """A burned-in caption, sometimes on a filled box, or a large single letter (not L or R) or number.

    Captions are at least ``CAPTION_HEIGHT[0]`` of the side tall, or smaller but over the central region; small
    text in the outer bands is what :func:`corner_letter` draws as a non-marking.
    """
    if rng.random() < 0.2:
        letter = str(rng.choice(BIG_CHARACTERS))
        _text(image, mask, rng, letter, rng.uniform(*BIG_LETTER_HEIGHT), None, rng.random() < 0.2)
        return
    n = int(rng.integers(3, 14))
    words = "".join(rng.choice(list(CAPTION_CHARS), n)).strip() or "DAY 6"
    if rng.random() < 0.7:
        _text(image, mask, rng, words, rng.uniform(*CAPTION_HEIGHT), None, rng.random() < 0.3)
        return
    side = image.shape[0]
    where = (int(side * rng.uniform(CENTRE[0], 0.5)), int(side * rng.uniform(0.3, CENTRE[1])))
    _text(image, mask, rng, words, rng.uniform(*SMALL_TEXT_HEIGHT), where, rng.random() < 0.3)


def corner_letter(image: np.ndarray, rng: np.random.Generator, options: OverlayOptions) -> None:
    """Draw a small position marker (L, R, PA, ...) or technician's word (PORTABLE, ...) in an outer band (not a marking)."""
    side = image.shape[0]
    letters = str(rng.choice(CORNER_LETTERS if rng.random() < 0.6 else TECHNICIAN_WORDS))
    band = int(0.15 * side)
    if rng.random() < 0.5:
        x = int(rng.integers(4, band)) if rng.random() < 0.5 else int(rng.integers(side - band, side - 4))
        y = int(rng.integers(int(0.05 * side), side - 4))
    else:
        x = int(rng.integers(4, side - band))
        y = (
            int(rng.integers(int(0.05 * side), band))
            if rng.random() < 0.6
            else int(rng.integers(side - band, side - 4))
        )
    height = rng.uniform(*options.corner_height)
    _text(image, None, rng, letters, height, (x, y), rng.random() < 0.3)
    if letters in TECHNICIAN_WORDS and rng.random() < 0.4:
        orientation_arrow(image, rng, (x, y), height)


def orientation_arrow(image: np.ndarray, rng: np.random.Generator, at: tuple[int, int], height: float) -> None:
    """A technician's small up-arrow just left of ``at``, where a word such as UPRIGHT was asked to start (the word
    itself may have been shifted to fit the image): not a marking."""
    side = image.shape[0]
    length = max(4, int(side * height * rng.uniform(1.2, 2.0)))
    x = int(np.clip(at[0] - length // 2 - 2, 2, side - 3))
    foot = int(np.clip(at[1], length + 2, side - 3))
    colour = _colour(rng, image, x, foot)
    thick = max(1, int(round(side * height * 0.15)))
    cv2.arrowedLine(image, (x, foot), (x, foot - length), colour, thick, cv2.LINE_AA, tipLength=0.35)


def position_marker(image: np.ndarray, rng: np.random.Generator) -> None:
    """A radiographer's lead marker, not a marking: L or R in a filled disc or square in a lateral or top band, often
    with an outlined upright arrow and AP or PORTABLE beside it; or a large plain L or R near or against a top corner,
    sometimes with a small tag beside it."""
    side = image.shape[0]
    letter = str(rng.choice(["L", "R"]))
    if rng.random() < 0.3:
        height = rng.uniform(0.05, 0.1)
        x = int(side * (rng.uniform(0.0, 0.15) if rng.random() < 0.5 else rng.uniform(0.8, 0.97)))
        y = int(side * rng.uniform(height + 0.01, 0.22))
        _text(image, None, rng, letter, height, (x, y), False)
        if rng.random() < 0.3:
            tag = str(rng.choice(["1", "2", "P", "A", "T"]))
            _text(image, None, rng, tag, height * 0.35, (x + int(side * height * 0.8), y + int(side * 0.01)), False)
        return
    radius = max(3, int(side * rng.uniform(0.008, 0.02)))
    if rng.random() < 0.7:
        cx = int(side * (rng.uniform(0.04, 0.18) if rng.random() < 0.5 else rng.uniform(0.82, 0.96)))
        cy = int(side * rng.uniform(0.1, 0.8))
    else:
        cx, cy = int(side * rng.uniform(0.1, 0.9)), int(side * rng.uniform(0.05, 0.18))
    dark = rng.random() < 0.75
    disc, ink = (int(rng.integers(0, 30)), int(rng.integers(225, 256)))[:: 1 if dark else -1]
    if rng.random() < 0.7:
        cv2.circle(image, (cx, cy), radius, disc, -1, cv2.LINE_AA)
    else:
        cv2.rectangle(image, (cx - radius, cy - radius), (cx + radius, cy + radius), disc, -1)
    if rng.random() < 0.4:
        cv2.circle(image, (cx, cy), radius, ink, 1, cv2.LINE_AA)
    font = int(rng.choice(FONTS))
    scale = max(0.2, 1.1 * radius / cv2.getTextSize(letter, font, 1.0, 1)[0][1])
    (w, h), _ = cv2.getTextSize(letter, font, scale, 1)
    cv2.putText(image, letter, (cx - w // 2, cy + h // 2), font, scale, ink, max(1, radius // 4), cv2.LINE_AA)
    below = 1 if cy < side // 2 else -1
    if rng.random() < 0.6:
        block_arrow(
            image,
            rng,
            (cx + int(rng.integers(-radius, radius + 1)), cy + below * int(radius * rng.uniform(3, 6))),
            radius,
        )
    if rng.random() < 0.5:
        word = str(rng.choice(MARKER_WORDS))
        where = (cx - radius, cy + below * int(radius * rng.uniform(6, 12)))
        _text(image, None, rng, word, rng.uniform(*SMALL_TEXT_HEIGHT) * 0.7, where, False)


def block_arrow(image: np.ndarray, rng: np.random.Generator, centre: tuple[int, int], size: int) -> None:
    """A technician's small upright block arrow, filled and outlined in the opposite grey, centred at ``centre``."""
    x, y = centre
    half, shaft = size, max(1, size // 2)
    points = np.array(
        [
            (x, y - 2 * half),
            (x + half, y - half // 2),
            (x + shaft // 2 + 1, y - half // 2),
            (x + shaft // 2 + 1, y + 2 * half),
            (x - shaft // 2 - 1, y + 2 * half),
            (x - shaft // 2 - 1, y - half // 2),
            (x - half, y - half // 2),
        ],
        np.int32,
    )
    fill = int(rng.integers(225, 256)) if rng.random() < 0.7 else int(rng.integers(0, 30))
    cv2.fillPoly(image, [points], fill, cv2.LINE_AA)
    cv2.polylines(image, [points], True, 255 - fill, max(1, size // 5), cv2.LINE_AA)


def filled_shape(image: np.ndarray, rng: np.random.Generator) -> None:
    """A large filled ellipse or polygon of moderate contrast, crisp or soft-edged (anatomy, shields: not a marking)."""
    side = image.shape[0]
    layer = np.zeros_like(image)
    centre = _point(rng, side, 0.2)
    if rng.random() < 0.5:
        axes = (int(side * rng.uniform(0.1, 0.3)), int(side * rng.uniform(0.1, 0.3)))
        cv2.ellipse(layer, centre, axes, int(rng.integers(0, 180)), 0, 360, 255, -1)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 8))))
        radius = side * rng.uniform(0.08, 0.25, len(angles))
        points = np.column_stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)])
        cv2.fillPoly(layer, [points.astype(np.int32)], 255)
    if rng.random() < 0.5:
        layer = cv2.GaussianBlur(layer, (0, 0), rng.uniform(0.5, 3.0))
    shift = float(rng.choice([-1, 1]) * rng.uniform(30, 110))
    image[:] = np.clip(image + shift * (layer / 255.0), 0, 255).astype(np.uint8)


def border(image: np.ndarray, rng: np.random.Generator) -> None:
    """Black or white padding bands along one to three sides (letterboxed or cropped figures: not a marking)."""
    side = image.shape[0]
    value = 0 if rng.random() < 0.7 else 255
    for edge in rng.choice(4, int(rng.integers(1, 4)), replace=False):
        width = int(side * rng.uniform(0.02, 0.12))
        view = np.rot90(image, int(edge))
        view[:width, :] = value


def electrodes(image: np.ndarray, rng: np.random.Generator) -> None:
    """Two to five ECG electrodes (bright discs, some with a clip) with thin curving leads: not a marking."""
    side = image.shape[0]
    for _ in range(int(rng.integers(2, 6))):
        centre = _point(rng, side, 0.1)
        radius = max(2, int(side * rng.uniform(0.008, 0.02)))
        value = int(rng.integers(200, 256))
        cv2.circle(image, centre, radius, value, -1, cv2.LINE_AA)
        if rng.random() < 0.5:
            cv2.circle(image, centre, max(1, radius // 2), int(rng.integers(60, 160)), -1, cv2.LINE_AA)
        if rng.random() < 0.8:
            lead(image, rng, centre)


def lead(image: np.ndarray, rng: np.random.Generator, start: tuple[int, int]) -> None:
    """A thin, smoothly curving ECG lead from ``start`` (an electrode) out to a random image edge, its grey 40-90
    levels off the electrode's."""
    side = image.shape[0]
    edge = int(rng.integers(4))
    along = float(rng.uniform(0, side - 1))
    end = ((along, 0.0), (along, side - 1.0), (0.0, along), (side - 1.0, along))[edge]
    bend = rng.uniform(0.1 * side, 0.9 * side, 2)
    s = np.linspace(0.0, 1.0, 40)[:, None]
    curve = (1 - s) ** 2 * np.array(start, float) + 2 * s * (1 - s) * bend + s**2 * np.array(end)
    local = int(image[start[1], start[0]])
    colour = int(np.clip(local + rng.choice([-1, 1]) * rng.integers(40, 90), 0, 255))
    cv2.polylines(image, [curve.astype(np.int32)], False, colour, 1, cv2.LINE_AA)


# electrodes twice: half of the distractors, since they are the commonest non-marking in real films
DISTRACTORS: tuple[Callable[[np.ndarray, np.random.Generator], None], ...] = (
    filled_shape,
    border,
    electrodes,
    electrodes,
)
PAINTERS: tuple[Painter, ...] = (arrow, arrow, ellipse, rectangle, scribble, caption, caption)


def draw_overlays(
    image: np.ndarray,
    rng: np.random.Generator,
    positive: bool,
    options: OverlayOptions = OverlayOptions(),
    painters: tuple[Painter, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A copy of a square uint8 image with overlays (if ``positive``, drawn by ``painters``), maybe a corner letter,
    a lead position marker and a distractor (filled shape, padding band, electrodes) that is not a marking.

    Returns (image, marking mask), the mask uint8 0/255 of the image's shape.
    """
    out, marks = image.copy(), np.zeros_like(image)
    if rng.random() < options.distractor_rate:
        DISTRACTORS[int(rng.integers(len(DISTRACTORS)))](out, rng)
    if rng.random() < options.corner_letter_rate:
        corner_letter(out, rng, options)
    if options.marker_rate and rng.random() < options.marker_rate:
        position_marker(out, rng)
    if positive:
        choices = painters or PAINTERS
        if painters is None and rng.random() < options.many_arrows_rate:
            for _ in range(int(rng.integers(3, 9))):
                arrow(out, marks, rng)
        else:
            for _ in range(int(rng.integers(1, options.max_objects + 1))):
                choices[int(rng.integers(len(choices)))](out, marks, rng)
    return out, marks
