"""Classical detector of overlaid annotations (arrows, boxes, captions) on chest X-rays.

Overlays are drawn in pure white or black, with thin strokes and crisp edges, on top of smooth anatomy. The
detector finds thin near-saturated structures with a white top-hat and a black-hat, keeps only the strokes
that stand out strongly from their surroundings, groups them into objects (letters into words), classifies
each object by shape (hollow rectangle, straight arrow shaft, text line, large glyph, small blob, a repeated
symbol) and adds up evidence. Small compact objects near the top and lateral edges (the ordinary L/R and
position markers), near-vertical slits along the lateral edges (skin folds, arm gaps, collimators) and
anything hugging the image border carry no evidence. Small bright objects weigh less
than dark ones: bone, wires and electrodes can be white, but nothing inside the body is pure black. A second
pass finds solid saturated boxes that contain text (burned-in captions).

A learned detector (:mod:`cxr_core.markings.net`, a tiny CNN trained only on synthetic overlays) can score the
same image: with ``MarkingsOptions.combine`` set to ``learned``, ``max`` or ``noisy-or``, :func:`detect_markings`
combines both scores and outlines the classical objects plus the net's hot cells that no classical object already
covers. The default stays ``classical``: the net flags too many presumably clean Normal images (technician's
labels, position markers, electrodes), see ``models/markings/card.md`` and ``bench/results/markings.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from cxr_core.markings.net import cell_regions, gray_uint8, load_markings_net, model_digest

Region = tuple[int, int, int, int]
COMBINE_RULES = ("max", "noisy-or", "learned", "classical")


@dataclass(frozen=True)
class MarkingsOptions:
    """Tunable constants of the detector, as fractions of the working size where they are lengths."""

    work_size: int = 512
    stroke: float = 0.03
    contrast: int = 60
    bright: int = 238
    dark: int = 12
    min_area: float = 4e-5
    edge_band: float = 0.15
    top_band: float = 0.22
    small: float = 0.07
    arrow_min: float = 0.04
    arrow_max: float = 0.35
    arrow_elongation: float = 3.0
    text_gap: float = 0.025
    border: float = 0.03
    bright_small_weight: float = 0.4
    symbol_min: float = 0.02
    box_level: int = 12
    box_min_area: float = 0.004
    combine: str = "classical"
    cell_threshold: float = 0.5
    model_dir: str | None = None
    model_digest: str = ""
    evidence: dict[str, float] = field(
        default_factory=lambda: {
            "rectangle": 1.0,
            "text box": 1.0,
            "arrow": 0.55,
            "text": 0.6,
            "symbol": 0.35,
            "glyph": 0.3,
            "blob": 0.12,
        }
    )

    def __post_init__(self) -> None:
        """Reject an unknown combination rule; with the net in use, record its file's digest (keys cached scores)."""
        if self.combine not in COMBINE_RULES:
            raise ValueError(
                f"unknown markings combination rule {self.combine!r} (use one of {', '.join(COMBINE_RULES)})"
            )
        if self.combine != "classical" and not self.model_digest:
            object.__setattr__(self, "model_digest", model_digest(self.model_dir))


@dataclass(frozen=True)
class Marking:
    """One detected object in original-image pixel coordinates."""

    kind: str
    region: Region
    evidence: float


@dataclass(frozen=True)
class MarkingsResult:
    """Markings score in [0, 1] and the regions (x, y, w, h) of the objects that contributed to it."""

    score: float
    regions: list[Region]
    marks: list[Marking] = field(default_factory=list)
    classical: float | None = None
    learned: float | None = None


DEFAULT_OPTIONS = MarkingsOptions()
SMALL_KINDS = ("arrow", "glyph", "blob", "marker", "symbol")
# One object of evidence >= 0.12 flags an image (a dark blob or a bright glyph alone: 1 - exp(-0.12) = 0.113). Chosen
# on the 60 hand labels of the sample as the two-decimal threshold of highest Youden's J (bench/results/markings.md).
DEFAULT_THRESHOLD = 0.11


def _saturated_components(
    mask: np.ndarray, work: np.ndarray, keep_component: Callable[[np.ndarray], bool]
) -> np.ndarray:
    """The components of ``mask`` for which ``keep_component(pixel values)`` holds, as a 0/1 mask."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(mask.shape, np.uint8)
    order = np.argsort(labels, axis=None, kind="stable")
    values = work.ravel()[order]
    starts = np.searchsorted(labels.ravel()[order], np.arange(n + 1))
    keep = np.zeros(n, bool)
    for i in range(1, n):
        keep[i] = keep_component(values[starts[i] : starts[i + 1]])
    return keep[labels].astype(np.uint8)


def _stroke_mask(work: np.ndarray, opt: MarkingsOptions) -> np.ndarray:
    """Thin strokes much brighter (1) or darker (2) than their surroundings whose core is pure white or pure black."""
    side = max(3, int(round(opt.stroke * max(work.shape))) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    white = cv2.morphologyEx(work, cv2.MORPH_TOPHAT, kernel, borderType=cv2.BORDER_REFLECT)
    black = cv2.morphologyEx(work, cv2.MORPH_BLACKHAT, kernel, borderType=cv2.BORDER_REFLECT)
    bright = _saturated_components(white >= opt.contrast, work, lambda v: np.percentile(v, 90) >= opt.bright)
    dark = _saturated_components(black >= opt.contrast, work, lambda v: np.percentile(v, 10) <= opt.dark)
    mask = np.where(dark > 0, 2, bright).astype(np.uint8)
    mask[:2, :] = mask[-2:, :] = mask[:, :2] = mask[:, -2:] = 0
    return mask


def _is_small_marker_zone(x: int, y: int, w: int, h: int, size: int, opt: MarkingsOptions) -> bool:
    """Whether a box lies in the top band or a lateral band, where L/R and position markers sit."""
    band = opt.edge_band * size
    return y + h <= opt.top_band * size or x + w <= band or x >= size - band


def _hollow_rectangle(mask: np.ndarray, x: int, y: int, w: int, h: int) -> bool:
    """Whether the mask covers most of three or four sides of its bounding box but little of its inside."""
    if w < 8 or h < 8:
        return False
    box = mask[y : y + h, x : x + w] > 0
    t = max(2, min(w, h) // 20)
    rim = np.zeros_like(box)
    rim[:t, :] = rim[-t:, :] = rim[:, :t] = rim[:, -t:] = True
    sides = [
        box[:t, :].any(axis=0).mean(),
        box[-t:, :].any(axis=0).mean(),
        box[:, :t].any(axis=1).mean(),
        box[:, -t:].any(axis=1).mean(),
    ]
    inside = box[~rim].mean() if (~rim).any() else 1.0
    return sorted(sides)[1] >= 0.6 and inside <= 0.15


def _elongation(points: np.ndarray) -> tuple[float, float, float]:
    """Principal-axis length, principal/secondary spread ratio and |cos| of the axis to the vertical, of (row, col) points."""
    if len(points) < 3:
        return 0.0, 1.0, 0.0
    values, vectors = np.linalg.eigh(np.cov(points.T.astype(np.float64)))
    small, large = np.sqrt(np.maximum(values, 1e-6))
    return float(4.0 * large), float(large / small), float(abs(vectors[0, 1]))


def _classify(
    mask: np.ndarray,
    labels: np.ndarray,
    group: list[int],
    stats: np.ndarray,
    x: int,
    y: int,
    w: int,
    h: int,
    size: int,
    opt: MarkingsOptions,
) -> str:
    """Kind of one object (a group of stroke components): rectangle, arrow, text, glyph, blob, marker or none."""
    margin = opt.border * size
    if x + w <= margin or y + h <= margin or x >= size - margin or y >= size - margin:
        return "none"
    if max(w, h) >= 0.1 * size and _hollow_rectangle(mask, x, y, w, h):
        return "rectangle"
    if len(group) >= 3 and h <= 0.1 * size and w >= 2 * h:
        heights = stats[group, cv2.CC_STAT_HEIGHT]
        small_text = h <= 0.035 * size
        if heights.std() <= 0.5 * heights.mean() + 1:
            return "none" if small_text and _is_small_marker_zone(x, y, w, h, size, opt) else "text"
    biggest = group[int(np.argmax(stats[group, cv2.CC_STAT_AREA]))]
    points = np.column_stack(np.nonzero(labels == biggest))
    length, ratio, vertical = _elongation(points)
    if ratio >= opt.arrow_elongation and opt.arrow_min * size <= length <= opt.arrow_max * size:
        lateral = x + w <= opt.edge_band * size or x >= size - opt.edge_band * size
        return "none" if lateral and vertical >= 0.85 else "arrow"
    if length > opt.arrow_max * size:
        return "none"
    if max(w, h) >= opt.small * size:
        return "glyph"
    return "marker" if _is_small_marker_zone(x, y, w, h, size, opt) else "blob"


def _stroke_objects(work: np.ndarray, opt: MarkingsOptions) -> list[tuple[str, Region, bool]]:
    """Classified objects built from thin saturated strokes, in working coordinates, and whether they are dark."""
    size = max(work.shape)
    mask = _stroke_mask(work, opt)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= opt.min_area * size * size
    mask = mask * keep[labels].astype(np.uint8)
    gap = max(3, int(opt.text_gap * size))
    merged = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (gap, max(1, gap // 4))))
    m, groups = cv2.connectedComponents(merged, connectivity=8)
    owner = np.zeros(n, int)
    owner[labels[mask > 0]] = groups[mask > 0]
    objects = []
    for g in range(1, m):
        members = [i for i in range(1, n) if keep[i] and owner[i] == g]
        if not members:
            continue
        x0 = int(stats[members, cv2.CC_STAT_LEFT].min())
        y0 = int(stats[members, cv2.CC_STAT_TOP].min())
        x1 = int((stats[members, cv2.CC_STAT_LEFT] + stats[members, cv2.CC_STAT_WIDTH]).max())
        y1 = int((stats[members, cv2.CC_STAT_TOP] + stats[members, cv2.CC_STAT_HEIGHT]).max())
        kind = _classify(mask, labels, members, stats, x0, y0, x1 - x0, y1 - y0, size, opt)
        if kind != "none":
            box = mask[y0:y1, x0:x1]
            objects.append((kind, (x0, y0, x1 - x0, y1 - y0), bool((box == 2).sum() > (box == 1).sum())))
    return [obj for obj in _repeated_symbols(objects, size, opt) if obj[0] != "marker"]


def _repeated_symbols(
    objects: list[tuple[str, Region, bool]], size: int, opt: MarkingsOptions
) -> list[tuple[str, Region, bool]]:
    """Relabel as ``symbol`` every small object that has at least two look-alikes (rows of arrows, numbered boxes)."""
    small = [i for i, obj in enumerate(objects) if obj[0] in SMALL_KINDS]
    out = list(objects)
    for i in small:
        _, (_, _, w, h), dark = objects[i]
        if max(w, h) < opt.symbol_min * size:
            continue
        alike = sum(
            abs(w - objects[j][1][2]) <= 0.25 * max(w, objects[j][1][2])
            and abs(h - objects[j][1][3]) <= 0.25 * max(h, objects[j][1][3])
            for j in small
        )
        if alike >= 3:
            out[i] = ("symbol", objects[i][1], dark)
    return out


def _text_boxes(work: np.ndarray, opt: MarkingsOptions) -> list[tuple[str, Region, bool]]:
    """Solid pure-white or pure-black rectangles with several holes inside (burned-in caption boxes)."""
    size = max(work.shape)
    found = []
    for solid in (work >= 255 - opt.box_level, work <= opt.box_level):
        solid = solid.astype(np.uint8)
        closed = cv2.morphologyEx(solid, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=4)
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area < opt.box_min_area * size * size or h > 0.3 * size or w < 2 * h:
                continue
            if area / (w * h) < 0.85:
                continue
            holes = (1 - solid[y : y + h, x : x + w]) & (labels[y : y + h, x : x + w] == i)
            n_holes = cv2.connectedComponents(holes.astype(np.uint8), connectivity=8)[0] - 1
            if n_holes >= 2 and holes.mean() >= 0.02:
                found.append(("text box", (x, y, w, h), True))
    return found


def classical_markings(gray: np.ndarray, options: MarkingsOptions = DEFAULT_OPTIONS) -> MarkingsResult:
    """The classical detector alone: score a 2-D uint8 X-ray and return the objects that contributed."""
    gray = gray_uint8(gray)
    scale = min(1.0, options.work_size / max(gray.shape))
    work = cv2.resize(
        gray,
        (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    objects = _stroke_objects(work, options) + _text_boxes(work, options)
    marks = [
        Marking(
            kind,
            tuple(int(round(v / scale)) for v in region),  # type: ignore[arg-type]
            options.evidence[kind] * (1.0 if dark or kind not in SMALL_KINDS else options.bright_small_weight),
        )
        for kind, region, dark in objects
    ]
    total = sum(m.evidence for m in marks)
    score = float(1.0 - np.exp(-total))
    return MarkingsResult(
        score=round(score, 4), regions=[m.region for m in marks], marks=marks, classical=round(score, 4)
    )


def _overlaps(a: Region, b: Region) -> bool:
    """Whether two (x, y, w, h) boxes intersect."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def combine_scores(classical: float, learned: float, rule: str) -> float:
    """The markings score from the classical and learned scores by ``rule`` (max, noisy-or, learned, classical)."""
    if rule == "max":
        return max(classical, learned)
    if rule == "noisy-or":
        return 1.0 - (1.0 - classical) * (1.0 - learned)
    if rule == "learned":
        return learned
    return classical


def detect_markings(gray: np.ndarray, options: MarkingsOptions = DEFAULT_OPTIONS) -> MarkingsResult:
    """Score a 2-D uint8 X-ray for overlaid annotations (classical, or combined with the net per ``options.combine``) and regions."""
    classical = classical_markings(gray, options)
    if options.combine == "classical":
        return classical
    cells = load_markings_net(options.model_dir).cells(gray)
    learned = float(cells.max())
    extra = [
        Marking("learned", region, round(learned, 4))
        for region in cell_regions(cells, options.cell_threshold, gray.shape[:2])
        if not any(_overlaps(region, r) for r in classical.regions)
    ]
    marks = classical.marks + extra
    score = combine_scores(classical.score, learned, options.combine)
    return MarkingsResult(
        score=round(score, 4),
        regions=[m.region for m in marks],
        marks=marks,
        classical=classical.score,
        learned=round(learned, 4),
    )


def outline_regions(gray: np.ndarray, regions: list[Region], color: tuple[int, int, int] = (255, 64, 0)) -> np.ndarray:
    """An RGB copy of a grayscale image with each (x, y, w, h) region outlined."""
    rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    thickness = max(1, round(max(gray.shape) / 300))
    for x, y, w, h in regions:
        cv2.rectangle(rgb, (int(x), int(y)), (int(x + w), int(y + h)), color, thickness)
    return rgb
