"""The shortcut audit: does a model's score depend on the lungs, and are the labels predictable without a CNN?

For every audited image the model's own preprocessing is applied and the lung mask is carried into the model's
input geometry. The model is then scored on (1) the plain inputs, (2) inputs with the dilated lung fields set to
black, (3) inputs with everything outside the dilated lungs set to black, and its Grad-CAM mass inside the lungs is
measured. A random forest on plain image statistics (histogram, border brightness, sharpness, size) predicts the
label and the source out-of-fold: the "no CNN" baseline (DeGrave et al. 2021; Maguolo & Nanni 2021).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from cxr_core.data.imaging import read_image
from cxr_core.lungs.segmenter import LungSegmenter, load_segmenter
from cxr_core.preprocess.roi import dilate
from cxr_core.util.atomic import write_json_atomic
from cxr_core.util.clock import utc_now

AUDIT_FILE = "audit.json"
AUDITS_DIR = "audits"
STAT_BORDER = 0.05
HIST_BINS = 32


class AuditError(ValueError):
    """The audit cannot run (no images, one class only, unreadable model); ``str(exc)`` is one line."""


@dataclass(frozen=True)
class AuditOptions:
    """What to audit and how: split, lung dilation, Grad-CAM sample size, stats-baseline folds and trees."""

    split: str = "test"
    dilation: float = 0.03
    cam_method: str = "gradcam"
    cam_images: int = 300
    folds: int = 5
    trees: int = 300
    seed: int = 1337
    limit: int | None = None


def image_statistics(gray: np.ndarray) -> np.ndarray:
    """Plain statistics of one image: size, histogram, percentiles, border/corner/centre brightness, sharpness."""
    img = gray.astype(np.float32)
    height, width = img.shape
    hist = np.histogram(gray, bins=HIST_BINS, range=(0, 256))[0] / gray.size
    by, bx = max(1, round(STAT_BORDER * height)), max(1, round(STAT_BORDER * width))
    strips = [img[:by], img[-by:], img[:, :bx], img[:, -bx:]]
    corners = [img[:by, :bx], img[:by, -bx:], img[-by:, :bx], img[-by:, -bx:]]
    centre = img[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4]
    small = cv2.resize(gray, (256, 256), interpolation=cv2.INTER_AREA).astype(np.float32)
    gradient = np.hypot(cv2.Sobel(small, cv2.CV_32F, 1, 0), cv2.Sobel(small, cv2.CV_32F, 0, 1))
    nonzero = hist[hist > 0]
    features = [
        width,
        height,
        width / height,
        img.mean(),
        img.std(),
        *np.percentile(img, [1, 5, 25, 50, 75, 95, 99]),
        *(s.mean() for s in strips),
        *(s.std() for s in strips),
        *(c.mean() for c in corners),
        centre.mean(),
        centre.std(),
        cv2.Laplacian(small, cv2.CV_32F).var(),
        gradient.mean(),
        float((gray == 0).mean()),
        float((gray == 255).mean()),
        float(-(nonzero * np.log2(nonzero)).sum()),
    ]
    return np.concatenate([np.asarray(features, np.float64), hist])


def _folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-grouped, label-stratified folds (fewer when the data is small)."""
    from sklearn.model_selection import StratifiedGroupKFold

    smallest = int(pd.Series(labels).value_counts().min())
    n = max(2, min(folds, smallest, len(np.unique(groups))))
    return list(StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed).split(labels, labels, groups))


def _out_of_fold(features: np.ndarray, target: np.ndarray, groups: np.ndarray, opts: AuditOptions) -> np.ndarray:
    """Out-of-fold class probabilities of a random forest (columns in sorted class order)."""
    from sklearn.ensemble import RandomForestClassifier

    classes = np.unique(target)
    proba = np.zeros((len(target), len(classes)))
    for train, test in _folds(target, groups, opts.folds, opts.seed):
        forest = RandomForestClassifier(n_estimators=opts.trees, min_samples_leaf=2, random_state=opts.seed, n_jobs=1)
        forest.fit(features[train], target[train])
        proba[np.ix_(test, np.searchsorted(classes, forest.classes_))] = forest.predict_proba(features[test])
    return proba


def stats_baseline(
    features: np.ndarray,
    positive: np.ndarray,
    sources: np.ndarray,
    groups: np.ndarray,
    audited: np.ndarray,
    opts: AuditOptions,
) -> dict[str, Any]:
    """Out-of-fold label AUC (on the audited rows) and source accuracy of random forests on image statistics."""
    from sklearn.metrics import balanced_accuracy_score

    label_p = _out_of_fold(features, positive.astype(int), groups, opts)[:, 1]
    result: dict[str, Any] = {
        "model": f"random forest ({opts.trees} trees) on {features.shape[1]} image statistics, "
        f"patient-grouped {len(_folds(positive.astype(int), groups, opts.folds, opts.seed))}-fold out-of-fold",
        "features": int(features.shape[1]),
        "n_fit": int(len(positive)),
        "label_auc": _auc(positive[audited], label_p[audited]),
        "label_auc_all": _auc(positive, label_p),
    }
    counts = pd.Series(sources).value_counts()
    if len(counts) >= 2 and counts.min() >= 2:
        source_p = _out_of_fold(features, sources, groups, opts)
        predicted = np.unique(sources)[source_p.argmax(axis=1)]
        result.update(
            n_sources=int(len(counts)),
            source_accuracy=round(float((predicted == sources).mean()), 4),
            source_balanced_accuracy=round(float(balanced_accuracy_score(sources, predicted)), 4),
            source_chance=round(float(counts.max() / counts.sum()), 4),
        )
    rate = pd.Series(positive.astype(float)).groupby(sources).transform("mean").to_numpy()
    result["label_from_source_auc"] = _auc(positive, rate)
    return result


def _auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC rounded to 4 decimals; None unless both classes are present."""
    from cxr_core.evaluate.metrics import rank_metrics

    value = rank_metrics(np.asarray(positive, int), np.asarray(scores, float))["roc_auc"]
    return None if value is None else round(float(value), 4)


def _distribution(values: np.ndarray) -> dict[str, Any]:
    """Histogram (10 bins over [0, 1]) and quantiles of shares."""
    counts = np.histogram(values, bins=10, range=(0.0, 1.0))[0]
    quantiles = np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9]) if len(values) else [None] * 5
    return {
        "bins": [round(b, 1) for b in np.linspace(0, 1, 11).tolist()],
        "counts": counts.astype(int).tolist(),
        "quantiles": {
            q: (None if v is None else round(float(v), 4))
            for q, v in zip(("p10", "p25", "p50", "p75", "p90"), quantiles)
        },
    }


def model_inputs(
    model: Any, images: Sequence[np.ndarray], segmenter: LungSegmenter, dilation: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[str, ...]]]:
    """Prepared inputs (n, s, s), lung masks and dilated lung masks in the model geometry, and segmentation flags."""
    results = segmenter.segment(list(images))
    xs, lungs, keep = [], [], []
    for img, seg in zip(images, results):
        x, mask = model.preprocess.apply_with_lungs(img, seg.mask)
        xs.append(x)
        lungs.append(mask)
        keep.append(dilate(mask, dilation))
    return np.stack(xs), np.stack(lungs), np.stack(keep), [r.flags for r in results]


def _scores(model: Any, inputs: np.ndarray, batch: int = 32) -> np.ndarray:
    """Uncalibrated P(positive) for prepared inputs (AUC is unaffected by temperature scaling)."""
    parts = [
        model.predict_batch(inputs[i : i + batch].astype(np.float32)[..., None]) for i in range(0, len(inputs), batch)
    ]
    return np.concatenate(parts)[:, model.positive_index]


def lung_attention(model: Any, inputs: np.ndarray, lungs: np.ndarray, predicted: np.ndarray, method: str) -> np.ndarray:
    """Share of each input's heatmap mass (for its predicted class) inside its lung mask (NaN for empty heatmaps)."""
    from cxr_core.explain.attention import attention_shares
    from cxr_core.explain.cam import Explainer

    explainer = Explainer(model.model)
    shares = []
    for x, mask, target in zip(inputs, lungs, predicted):
        heat = explainer.explain(x.astype(np.float32), int(target), method)
        value = attention_shares(heat, lung_mask=mask).lungs
        shares.append(np.nan if value is None else value)
    return np.asarray(shares, dtype=np.float64)


def verdict(result: dict[str, Any]) -> tuple[str, str]:
    """A level (``shortcut`` / ``mixed`` / ``lungs`` / ``undetermined``) and a plain-language verdict from the numbers."""
    auc, blanked, only = result["auc"], result["auc_lungs_blanked"], result["auc_lungs_only"]
    attention, stats = result["lung_attention_mean"], result["stats_baseline_auc"]
    notes, level = [], "lungs"
    if auc is None or blanked is None:
        return "undetermined", "The audit needs both classes among the audited images to compute an AUC."
    if auc < 0.6:
        return "undetermined", (
            f"The model is close to chance on these images (AUC {auc:.2f}): the audit cannot tell what it relies on."
        )
    if blanked >= 0.75:
        level = "shortcut"
        notes.append(
            f"This model's score survives with the lungs removed (AUC {auc:.2f} with lungs, {blanked:.2f} with the lung "
            "fields blacked out): it is using shortcuts outside the lungs."
        )
    elif blanked > 0.65:
        level = "mixed"
        notes.append(
            f"With the lungs blacked out it still reaches AUC {blanked:.2f} (of {auc:.2f}): part of its signal comes from outside the lungs."
        )
    else:
        notes.append(
            f"With the lungs blacked out its AUC falls to {blanked:.2f} (from {auc:.2f}): it needs the lung fields, or is at "
            "least thrown off by a black hole where they were (this test alone cannot tell the two apart)."
        )
    area = f" (the lungs cover {result['lung_area_mean']:.0%} of its input)" if result.get("lung_area_mean") else ""
    if attention is not None and attention < 0.5:
        level = "shortcut" if level == "shortcut" else "mixed"
        notes.append(f"Only {attention:.0%} of its Grad-CAM attention lies inside the lungs{area}.")
    elif attention is not None:
        notes.append(f"{attention:.0%} of its Grad-CAM attention lies inside the lungs{area}.")
    if only is not None:
        notes.append(f"Shown only the lungs it reaches AUC {only:.2f}.")
    if stats is not None and auc is not None and stats >= auc - 0.02:
        notes.append(
            f"A random forest on plain image statistics (no CNN, no lungs) already reaches AUC {stats:.2f}: on this data "
            "the labels are predictable from borders, processing and source, so a high score is not evidence of disease detection."
        )
    return level, " ".join(notes)


def _load_rows(cfg: Any, data_dir: Path, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The audited rows (split) and all usable rows (for the stats baseline) of a dataset folder."""
    from cxr_core.curation.curated import curated_index
    from cxr_core.data.index import DatasetError

    try:
        index = curated_index(cfg, data_dir)
        rows, every = index.images(split), index.images()
    except DatasetError as exc:
        raise AuditError(str(exc)) from exc
    return rows.assign(abspath=index.pixel_files(rows)), every.assign(abspath=index.pixel_files(every))


def run_audit(
    model: Any,
    cfg: Any,
    data_dir: str | Path,
    opts: AuditOptions = AuditOptions(),
    segmenter: LungSegmenter | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Audit a loaded registry model on a dataset folder; returns the audit dict (see module docs)."""
    from tqdm import tqdm

    started = time.time()
    rows, every = _load_rows(cfg, Path(data_dir), opts.split)
    if opts.limit:
        rows = rows.sample(n=min(opts.limit, len(rows)), random_state=opts.seed)
    if rows.empty:
        raise AuditError(f"no usable images in split {opts.split!r} of {data_dir} (try --split all)")
    positive = (rows["label"] == model.positive).to_numpy()
    if positive.all() or not positive.any():
        raise AuditError(f"split {opts.split!r} of {data_dir} holds only one class: AUC is undefined")
    segmenter = segmenter or load_segmenter()
    bar = tqdm(total=len(rows) + len(every), desc="audit", unit="img", file=sys.stderr, disable=not progress)
    inputs, lungs, keep, flags, features = [], [], [], [], {}
    for start in range(0, len(rows), 16):
        chunk = rows.iloc[start : start + 16]
        images = [read_image(p, max_pixels=cfg.max_pixels, min_side=cfg.min_side) for p in chunk["abspath"]]
        for path, img in zip(chunk["abspath"], images):
            features[path] = image_statistics(img)
        x, m, k, f = model_inputs(model, images, segmenter, opts.dilation)
        inputs.append(x)
        lungs.append(m)
        keep.append(k)
        flags += f
        bar.update(len(chunk))
    x, lung, keep_ = np.concatenate(inputs), np.concatenate(lungs), np.concatenate(keep)
    for path in every["abspath"]:
        if path not in features:
            features[path] = image_statistics(read_image(path, max_pixels=cfg.max_pixels, min_side=cfg.min_side))
        bar.update(1)
    bar.close()
    plain = _scores(model, x)
    blanked = _scores(model, np.where(keep_, 0, x))
    only = _scores(model, np.where(keep_, x, 0))
    predicted = np.where(plain >= 0.5, model.positive_index, 1 - model.positive_index)
    cam_n = min(len(x), opts.cam_images)
    cam_rows = np.random.default_rng(opts.seed).permutation(len(x))[:cam_n]
    shares = lung_attention(model, x[cam_rows], lung[cam_rows], predicted[cam_rows], opts.cam_method)
    valid = ~np.isnan(shares)
    audited = every["abspath"].isin(set(rows["abspath"])).to_numpy()
    baseline = stats_baseline(
        np.stack([features[p] for p in every["abspath"]]),
        (every["label"] == model.positive).to_numpy(),
        every["source"].astype(str).to_numpy(),
        every["patient_id"].astype(str).to_numpy(),
        audited,
        opts,
    )
    cam_labels = rows["label"].to_numpy()[cam_rows]
    auc = _auc(positive, plain)
    result: dict[str, Any] = {
        "model": model.name,
        "model_version": model.version,
        "model_dir": str(model.path),
        "preprocess": model.preprocess.to_dict(),
        "data_dir": str(Path(data_dir).resolve()),
        "split": opts.split,
        "n": int(len(rows)),
        "n_covid": int(positive.sum()),
        "n_normal": int((~positive).sum()),
        "auc": auc,
        "auc_lungs_blanked": _auc(positive, blanked),
        "auc_lungs_only": _auc(positive, only),
        "lung_attention_mean": round(float(shares[valid].mean()), 4) if valid.any() else None,
        "lung_attention_by_class": {
            str(c): round(float(shares[valid & (cam_labels == c)].mean()), 4) for c in sorted(set(cam_labels[valid]))
        },
        "lung_attention_distribution": _distribution(shares[valid]),
        "lung_area_mean": round(float(lung.mean()), 4),
        "cam_method": opts.cam_method,
        "cam_images": int(cam_n),
        "stats_baseline_auc": baseline["label_auc"],
        "stats_baseline": baseline,
        "segmentation": {
            "segmenter": str(segmenter.path) if segmenter.path else "in-memory",
            "flagged": int(sum(bool(f) for f in flags)),
            "flags": {
                str(k): int(v) for k, v in pd.Series([x for f in flags for x in f], dtype=str).value_counts().items()
            },
        },
        "options": asdict(opts),
    }
    result["auc_lungs_blanked_drop"] = (
        None if auc is None or result["auc_lungs_blanked"] is None else round(auc - result["auc_lungs_blanked"], 4)
    )
    result["verdict_level"], result["verdict"] = verdict(result)
    result["created"] = utc_now()
    result["seconds"] = round(time.time() - started, 1)
    return result


def save_audit(model_dir: str | Path, result: dict[str, Any]) -> Path:
    """Store an audit with the model, per dataset and split, as evaluations are; returns the file written.

    The model's own test-split audit is ``audit.json`` and the card's ``shortcut_audit`` (the headline, and what
    "Why this model is the default" compares). An audit of another dataset or split goes to
    ``audits/<dataset>-<split>/audit.json`` and is listed under the card's ``other_audits``, leaving those in place.
    """
    from cxr_core.evaluate.card import card_with_other_audit, is_own_result, read_card, result_key, write_card

    directory = Path(model_dir)
    card = read_card(directory)
    if is_own_result(card, result["data_dir"], result["split"]):
        path = write_json_atomic(directory / AUDIT_FILE, result)
        if card:
            write_card(directory, {**card, "shortcut_audit": result})
        return path
    key = result_key(result["data_dir"], result["split"])
    path = write_json_atomic(directory / AUDITS_DIR / key / AUDIT_FILE, result)
    if card:
        write_card(directory, card_with_other_audit(card, key, result))
    return path
