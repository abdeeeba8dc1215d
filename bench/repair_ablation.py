"""Repair instead of discard: keep, discard or repair (inpaint) the training images the markings detector flags.

Usage: ``.venv/bin/python bench/repair_ablation.py [--data ../shared/data/cxr-sample] [--quick] [--work DIR]``

Question (issue "Repair instead of discard"). In the sample every human-marked image is COVID, so burned-in markings
are a label shortcut. For the images of the **train and val** splits that the classical markings detector flags
(``cxr_core.curation.flags.compute_flags`` + ``flagged(frame, "markings")``, library default threshold, not tuned),
three arms are compared, each in its own work dir (``home``) so the curation ledgers never mix:

- **keep**: the flagged images stay as they are (no ledger);
- **discard**: a ``discard`` decision (reason ``markings``) for each, so ``curated_index`` leaves them out;
- **repair**: ``repair_images`` (default ``RepairOptions``: method, mask margin and contrast of the library; the mask
  uses the classical detector and the learned markings net in ``models/markings``) writes inpainted copies into the
  arm's work dir and records ``repair`` decisions, so ``curated_index`` reads the repaired pixels in training.

Test images are never curated: in every arm the test split is the same set of original images (asserted), so every
arm is scored on exactly the same images. The split is the library's patient-grouped split (asserted identical
across arms); each run is handed that split explicitly (``split.csv`` in the run dir, as ``cxr_core.evaluate.loso``
does). The work dirs are under a temporary folder (``--work``); nothing is written into the data folder.

Fixed training recipe for every run (``cxr_core.train.trainer.train``, in process): ``cxr_net``, 128 px, CLAHE,
the library's default augmentation, sampling (class weights), EMA and learning rate, batch 32, seed 1337, at most
6 epochs with early stopping on val AUC (patience 2; learning rate halved after 1 epoch without val-loss gain, as
``loso`` sets it). Calibration and threshold are the library's (validation split, target sensitivity 0.95).

Measured per arm:

1. test ROC AUC with the library's patient-bootstrap 95% CI (``cxr_core.evaluate.evaluate.evaluate``, 1000
   resamples), plus a paired patient bootstrap of the AUC difference to keep (same resamples for every arm);
2. the shortcut audit on the test split (``run_audit``): AUC with the lungs blacked out (lower = less shortcut),
   also AUC on the lungs only and the Grad-CAM share inside the lungs;
3. Grad-CAM share on the markings regions (``predict_image(..., "gradcam", boxes=detect_markings(gray).regions)``,
   ``Prediction.shares.markings``) for the test images the detector flags (the same images in every arm); the heatmap
   is that of the COVID class (the shortcut's class) and, separately, of the decided class (the library's default);
4. leave-one-source-out accuracy (= sensitivity, they are COVID-only sources) on ``covid-cxnet`` and ``ieee8023``:
   the same recipe trained without that source (and without patients shared with it), with the arm's curation
   applied to the training images; tested on every image of the held-out source as originals, at the model's own
   validation-chosen threshold (``cxr_core.evaluate.loso._held_out_metrics``).

Also: how many train/val images were flagged (per split, class and source), repairs skipped, wall time per step,
machine and load.

Budget: 9 trainings (3 arms x (1 main + 2 held-out sources)) of ~0.8-1.1k images for <= 6 epochs at 128 px, plus
the three audits: about 15-25 minutes on this 2-core machine. ``--quick`` (a smoke run: 1 epoch, 160 training
images, one held-out source, fewer bootstrap resamples) writes only into the work dir, not into ``bench/results``.

Decision rule (fixed before the first real run)
-----------------------------------------------
Primary outcome: held-out COVID-source accuracy, the mean over covid-cxnet and ieee8023 (the images of a source the
model never saw; a shortcut that does not travel shows up here). Each run has one training seed, whose spread these
small runs do not measure, so:

- arm A *beats* arm B when A's mean held-out accuracy is at least 3 percentage points higher than B's AND the
  95% CI of the paired patient bootstrap of the difference (both held-out sources pooled, each image weighted once)
  excludes 0; otherwise the two *tie*.
- **repair is supported** if it beats keep, is not beaten by discard, its test AUC lies inside keep's test-AUC 95%
  CI, and its Grad-CAM share on markings is no higher than keep's. (On a tie with discard repair is preferred, since
  it keeps the images.)
- **discard is supported** by the same rule with repair and discard swapped (and repair not also supported).
- otherwise the evidence does **not** support changing from keep: no arm wins. The lungs-blanked AUC and the
  Grad-CAM share on markings are reported as secondary shortcut evidence and decide nothing on their own.

Writes ``bench/results/repair_ablation.json`` and ``bench/results/repair_ablation.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Library helpers that call load_config() themselves (the markings net, the lung segmenter) must find the repo's
# models and never fall back to a work dir in the current folder.
os.environ["CXR_MODELS_DIR"] = str(REPO / "models")

from preprocess import load_average, machine

DEFAULT_DATA = REPO.parent / "shared" / "data" / "cxr-sample"
RESULTS = REPO / "bench" / "results"
ARMS = ("keep", "discard", "repair")
HELD_OUT = ("covid-cxnet", "ieee8023")
REVIEWER = "bench/repair_ablation"
MARGIN_PP = 0.03  # the decision rule's minimum held-out accuracy gain
SEED = 1337  # the first run's seed; --seed sets each run's
SEEDS = (1337, 1338, 1339)  # the seeds the summary expects (fixed before the multi-seed runs)


class Clock:
    """Wall time per named step."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    def __call__(self, name: str):
        clock = self

        class _Step:
            def __enter__(self) -> None:
                self.start = time.monotonic()
                print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)

            def __exit__(self, *exc: Any) -> None:
                seconds = round(time.monotonic() - self.start, 1)
                clock.steps[name] = seconds
                print(f"[{time.strftime('%H:%M:%S')}] {name}: {seconds} s", file=sys.stderr, flush=True)

        return _Step()


def recipe(args: argparse.Namespace, data: Path) -> Any:
    """The one training recipe of every run."""
    from cxr_core.train.config import TrainConfig

    return TrainConfig(
        arch="cxr_net",
        size=128,
        method="clahe",
        epochs=args.epochs,
        patience=args.patience,
        lr_patience=max(1, args.patience // 2),
        seed=args.seed,
        data_dir=str(data),
    )


def make_cfg(home: Path, data: Path) -> Any:
    """The Config of one work dir (and CXR_HOME pointed at it for helpers that load their own config)."""
    from cxr_core.config import load_config

    os.environ["CXR_HOME"] = str(home)
    os.environ["CXR_DATA_DIR"] = str(data)
    return load_config(home=str(home), data_dir=str(data), models_dir=str(REPO / "models"))


def usable_rows(index: Any) -> pd.DataFrame:
    """The library's training selection (train/val/test rows, both classes, ``SPLIT_COLUMNS``)."""
    from cxr_core.train.pipeline import select_images

    return select_images(index)


def as_original(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows read as their original files (no repaired pixels)."""
    return rows.assign(repaired=False, pixels_path="", pixels_sha256="")


def subsample(frame: pd.DataFrame, n_train: int, n_val: int, seed: int) -> pd.DataFrame:
    """Quick mode: a class-stratified subset of the train and val rows (test rows untouched)."""
    parts = [frame[frame["split"] == "test"]]
    for split, n in (("train", n_train), ("val", n_val)):
        rows = frame[frame["split"] == split]
        parts += [
            g.sample(n=min(len(g), max(2, round(n * len(g) / len(rows)))), random_state=seed)
            for _, g in rows.groupby("label")
        ]
    return pd.concat(parts).sort_values(["split", "path"]).reset_index(drop=True)


def train_run(cfg: Any, tc: Any, frame: pd.DataFrame, run: Path) -> dict[str, Any]:
    """Train ``tc`` on the explicit split ``frame`` into ``run``; summary of the run."""
    from cxr_core.train import rundir
    from cxr_core.train.trainer import train

    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    rundir.write_csv_atomic(run / rundir.SPLIT_FILE, frame.to_dict("records"), list(frame.columns))
    start = time.monotonic()
    result = train(cfg, tc, run_dir=run)
    seconds = time.monotonic() - start
    status = rundir.read_status(run)
    metrics = rundir.read_metrics(run)
    n_train = int(status.get("n_train") or 0)
    epoch_s = metrics["train_seconds"].dropna().tolist()
    return {
        "status": result.status,
        "epochs_run": int(result.epochs_run),
        "best_epoch": int(result.best_epoch),
        "best_val_auc": None if result.best_val_auc is None else round(float(result.best_val_auc), 4),
        "n_train": n_train,
        "n_val": int(status.get("n_val") or 0),
        "train_images_per_second": round(n_train / float(np.median(epoch_s)), 1) if epoch_s else None,
        "wall_seconds": round(seconds, 1),
        "model_dir": str(run / "model"),
    }


def paired_bootstrap(
    y: np.ndarray, scores: dict[str, np.ndarray], clusters: np.ndarray, stat: Any, n_boot: int, seed: int
) -> dict[str, np.ndarray]:
    """The statistic of each arm on the same patient-bootstrap resamples (draws where it is undefined are NaN)."""
    codes, inverse = np.unique(clusters, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(codes))]
    rng = np.random.default_rng(seed)
    draws = {arm: np.full(n_boot, np.nan) for arm in scores}
    for b in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        for arm, s in scores.items():
            value = stat(y[idx], s[idx])
            draws[arm][b] = np.nan if value is None else value
    return draws


def diff_ci(draws: dict[str, np.ndarray], arm: str, ref: str) -> list[float] | None:
    """95% percentile interval of ``arm - ref`` over paired draws."""
    d = draws[arm] - draws[ref]
    d = d[~np.isnan(d)]
    if len(d) < 10:
        return None
    return [round(float(np.percentile(d, 2.5)), 4), round(float(np.percentile(d, 97.5)), 4)]


def auc_stat(y: np.ndarray, p: np.ndarray) -> float | None:
    """ROC AUC (None with one class) via the library."""
    from cxr_core.evaluate.metrics import rank_metrics

    return rank_metrics(y, p)["roc_auc"]


def markings_attention(loaded: Any, data: Path, rows: pd.DataFrame) -> dict[str, Any]:
    """Grad-CAM share on the detected markings regions of each row (COVID-class and decided-class heatmaps)."""
    from cxr_core.data.imaging import read_image
    from cxr_core.explain.cam import Explainer
    from cxr_core.markings.classical import detect_markings
    from cxr_core.serve.inference import predict_image

    explainer = Explainer(loaded.model)
    covid, decided, area, not_assessed = [], [], [], 0
    for rel in rows["path"]:
        gray = read_image(data / rel)
        regions = detect_markings(gray).regions
        if not regions:
            continue
        box = np.zeros(gray.shape, bool)
        for x, y, w, h in regions:
            box[y : y + h, x : x + w] = True
        pred = predict_image(loaded, gray, explainer, "gradcam", target=loaded.positive, boxes=regions)
        if pred.shares is None or pred.shares.markings is None:
            not_assessed += 1
            continue
        covid.append(pred.shares.markings)
        area.append(float(box.mean()))
        own = predict_image(loaded, gray, explainer, "gradcam", boxes=regions)
        decided.append(own.shares.markings if own.shares is not None and own.shares.markings is not None else np.nan)
    return {
        "n": len(covid),
        "not_assessed": not_assessed,
        "share_markings_covid_cam_mean": round(float(np.mean(covid)), 4) if covid else None,
        "share_markings_covid_cam_median": round(float(np.median(covid)), 4) if covid else None,
        "share_markings_decided_cam_mean": round(float(np.nanmean(decided)), 4) if decided else None,
        "markings_area_mean": round(float(np.mean(area)), 4) if area else None,
        "per_image_covid_cam": [round(float(v), 4) for v in covid],
    }


def run_arm(
    arm: str,
    args: argparse.Namespace,
    base_home: Path,
    work: Path,
    base: dict[str, Any],
    clock: Clock,
) -> dict[str, Any]:
    """Curate, train, evaluate, audit, explain and hold sources out for one arm."""
    import keras

    from cxr_core.curation.curated import curated_index
    from cxr_core.curation.ledger import open_ledger
    from cxr_core.curation.repaired import RepairOptions, repair_images
    from cxr_core.evaluate.audit import AuditOptions, run_audit
    from cxr_core.evaluate.evaluate import evaluate, raw_predictions
    from cxr_core.evaluate.loso import _held_out_metrics, calibrated_p
    from cxr_core.serve.registry import load_model
    from cxr_core.train.pipeline import SPLIT_COLUMNS

    data: Path = args.data
    home = work / arm
    shutil.rmtree(home, ignore_errors=True)
    # A copy of the base work dir: the same salt, index cache, flag analyses and preprocessing cache, no ledger.
    shutil.copytree(base_home, home)
    cfg = make_cfg(home, data)
    targets = base["targets"]
    pairs = list(zip(targets["sha256"], targets["path"]))
    out: dict[str, Any] = {"arm": arm, "home": str(home)}
    with clock(f"{arm}: curate"):
        if arm == "discard":
            open_ledger(cfg).record_many(pairs, "discard", "markings", "", REVIEWER)
            out["curation"] = {"discarded": len(pairs)}
        elif arm == "repair":
            done = repair_images(cfg, data, pairs, RepairOptions(), REVIEWER)
            out["curation"] = {
                "repaired": len(done["repaired"]),
                "skipped": done["skipped"],
                "mask_fraction_mean": round(float(np.mean([r["mask_fraction"] for r in done["repaired"]])), 5)
                if done["repaired"]
                else None,
                "options": asdict(RepairOptions()),
            }
        else:
            out["curation"] = {}
        index = curated_index(cfg, data)
    frame = usable_rows(index)
    # The same split, and the same original test images, in every arm.
    splits = dict(zip(index.frame["path"], index.frame["split"]))
    assert all(splits[p] == s for p, s in zip(base["index_frame"]["path"], base["index_frame"]["split"])), arm
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    assert test["path"].tolist() == base["test"]["path"].tolist(), f"{arm}: test split differs"
    assert not test["repaired"].astype(bool).any(), f"{arm}: a test image is repaired"
    trainval = frame[frame["split"] != "test"]
    if args.quick:
        frame = subsample(frame, args.quick_train, args.quick_val, args.seed)
        trainval = frame[frame["split"] != "test"]
    out["n_train_val"] = {f"{s}/{c}": int(n) for (s, c), n in trainval.groupby(["split", "label"]).size().items()}
    out["n_repaired_in_training"] = int(trainval["repaired"].astype(bool).sum())
    tc = recipe(args, data)

    with clock(f"{arm}: train main"):
        out["main"] = train_run(cfg, tc, frame.loc[:, list(SPLIT_COLUMNS)], home / "runs" / "main")
    loaded = load_model(out["main"]["model_dir"])
    with clock(f"{arm}: evaluate test"):
        ev = evaluate(loaded, index, "test", cfg=cfg, n_boot=args.n_boot, seed=args.seed)
        out["test"] = {
            "n": ev["n"],
            "roc_auc": round(ev["roc_auc"], 4),
            "roc_auc_ci95": [round(v, 4) for v in ev["ci95"]["roc_auc"]],
            "accuracy": round(ev["accuracy"], 4),
            "sensitivity": round(ev["sensitivity"], 4),
            "specificity": round(ev["specificity"], 4),
            "threshold": round(ev["threshold"], 4),
            "training_overlap": ev["training_overlap"],
        }
        raw = raw_predictions(loaded, index, base["test"], cfg)
        out["_test_p"] = raw[:, loaded.positive_index]
        flagged_test = base["test"]["sha256"].isin(base["flagged_sha"]).to_numpy()
        y = (base["test"]["label"] == loaded.positive).to_numpy(int)
        out["test"]["roc_auc_flagged_images"] = auc_stat(y[flagged_test], out["_test_p"][flagged_test])
        out["test"]["roc_auc_unflagged_images"] = auc_stat(y[~flagged_test], out["_test_p"][~flagged_test])
    with clock(f"{arm}: shortcut audit"):
        audit = run_audit(
            loaded,
            cfg,
            data,
            AuditOptions(split="test", cam_images=args.cam_images, trees=args.trees, folds=3, seed=args.seed),
            progress=False,
        )
        out["audit"] = {
            k: audit.get(k)
            for k in (
                "n",
                "auc",
                "auc_lungs_blanked",
                "auc_lungs_only",
                "auc_lungs_blanked_drop",
                "lung_attention_mean",
                "verdict_level",
            )
        }
    with clock(f"{arm}: Grad-CAM on markings"):
        out["markings_cam"] = markings_attention(loaded, data, base["test_flagged"])
    del loaded
    keras.utils.clear_session()
    gc.collect()

    out["held_out"] = {}
    arm_usable = frame[frame["split"].isin(("train", "val"))]
    for source in args.held_out:
        held = as_original(base["usable"][base["usable"]["source"] == source]).assign(split="test")
        if args.quick:
            held = held.sample(n=min(len(held), 60), random_state=args.seed)
        patients = set(held["patient_id"].astype(str)) - {""}
        rest = arm_usable[(arm_usable["source"] != source) & ~arm_usable["patient_id"].astype(str).isin(patients)]
        loso = pd.concat([rest, held]).loc[:, list(SPLIT_COLUMNS)].sort_values(["split", "path"]).reset_index(drop=True)
        with clock(f"{arm}: held out {source}"):
            summary = train_run(cfg, tc, loso, home / "runs" / f"loso-{source}")
            model = load_model(summary["model_dir"])
            held_rows = loso[loso["split"] == "test"].reset_index(drop=True)
            row, y, p = _held_out_metrics(model, index, held_rows, cfg)
            pred = p >= model.threshold
            normal = base["test"][base["test"]["label"] != model.positive]
            p_normal = calibrated_p(model, index, normal, cfg)
            marked = held_rows["sha256"].isin(base["flagged_sha"]).to_numpy()
            summary.update(
                {
                    "n_held_out": int(len(held_rows)),
                    "accuracy": round(float(row["accuracy"]), 4),
                    "threshold": round(float(model.threshold), 4),
                    "mean_p_covid": round(float(row["mean_p_covid"]), 4),
                    "auc_vs_test_normal": round(
                        float(auc_stat(np.r_[y, np.zeros(len(p_normal), int)], np.r_[p, p_normal])), 4
                    ),
                    "n_flagged_held_out": int(marked.sum()),
                    "accuracy_flagged": round(float(pred[marked].mean()), 4) if marked.any() else None,
                    "accuracy_unflagged": round(float(pred[~marked].mean()), 4) if (~marked).any() else None,
                    "n_train_flagged_curated": int(
                        rest[rest["split"] == "train"]["sha256"].isin(base["flagged_sha"]).sum()
                    )
                    if arm != "keep"
                    else 0,
                }
            )
            summary["_y"], summary["_p"], summary["_pred"] = y, p, pred.astype(int)
            summary["_paths"] = held_rows["path"].tolist()
            summary["_patients"] = held_rows["patient_id"].astype(str).tolist()
            out["held_out"][source] = summary
            del model
            keras.utils.clear_session()
            gc.collect()
    return out


def prepare_base(args: argparse.Namespace, base_home: Path, clock: Clock) -> dict[str, Any]:
    """Index, flag and pre-fill the preprocessing cache once in a base work dir that each arm copies."""
    from cxr_core.curation.curated import curated_index
    from cxr_core.curation.flags import compute_flags, flagged
    from cxr_core.train.pipeline import load_arrays

    data: Path = args.data
    cfg = make_cfg(base_home, data)
    with clock("base: index"):
        index = curated_index(cfg, data)
    with clock("base: markings flags"):
        flags = compute_flags(cfg, index)
    marked = flags[flagged(flags, "markings")]
    frame = usable_rows(index)
    flagged_sha = set(marked["sha256"])
    in_frame = frame["sha256"].isin(flagged_sha)
    targets = frame[in_frame & frame["split"].isin(("train", "val"))].drop_duplicates("sha256")
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    test_flagged = test[test["sha256"].isin(flagged_sha)].reset_index(drop=True)
    with clock("base: preprocess cache"):
        load_arrays(frame, data, recipe(args, data).preprocess(), cfg=cfg, workers=cfg.workers)
    by = targets.groupby(["split", "label", "source"]).size()
    counts = {
        "train_val_total": int(len(targets)),
        "by_class": {str(k): int(v) for k, v in targets["label"].value_counts().sort_index().items()},
        "by_split_class": {f"{s}/{c}": int(v) for (s, c), v in targets.groupby(["split", "label"]).size().items()},
        "by_class_source": {f"{c}/{s}": int(v) for (c, s), v in targets.groupby(["label", "source"]).size().items()},
        "by_split_class_source": {f"{a}/{b}/{c}": int(v) for (a, b, c), v in by.items()},
        "share_of_train_val": round(len(targets) / int(frame["split"].isin(("train", "val")).sum()), 4),
        "test_flagged": int(len(test_flagged)),
        "test_flagged_by_class": {str(k): int(v) for k, v in test_flagged["label"].value_counts().items()},
        "held_out_sources_flagged": {
            s: f"{int(frame[(frame['source'] == s)]['sha256'].isin(flagged_sha).sum())} of "
            f"{int((frame['source'] == s).sum())}"
            for s in HELD_OUT
        },
    }
    return {
        "index_frame": index.frame[["path", "split"]].copy(),
        "frame": frame,
        "usable": frame,
        "test": test,
        "test_flagged": test_flagged,
        "targets": targets,
        "flagged_sha": flagged_sha,
        "counts": counts,
        "n_splits": {f"{s}/{c}": int(n) for (s, c), n in frame.groupby(["split", "label"]).size().items()},
    }


def compare(arms: dict[str, dict[str, Any]], base: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Paired bootstraps (test AUC, held-out accuracy) and the decision rule."""
    test = base["test"]
    y = (test["label"] == "COVID").to_numpy(int)
    clusters = test["patient_id"].astype(str).to_numpy()
    draws = paired_bootstrap(y, {a: arms[a]["_test_p"] for a in arms}, clusters, auc_stat, args.n_boot, args.seed)
    out: dict[str, Any] = {"test_auc_diff_vs_keep_ci95": {}, "held_out_accuracy_diff_ci95": {}}
    for arm in arms:
        if arm != "keep":
            out["test_auc_diff_vs_keep_ci95"][arm] = diff_ci(draws, arm, "keep")
    # held-out accuracy: pool both sources (each image once), paired over arms, patients resampled
    sources = [s for s in args.held_out if all(s in arms[a]["held_out"] for a in arms)]
    ys = np.concatenate([arms["keep"]["held_out"][s]["_y"] for s in sources])
    patients = np.concatenate([[f"{s}|{p}" for p in arms["keep"]["held_out"][s]["_patients"]] for s in sources])
    preds = {a: np.concatenate([arms[a]["held_out"][s]["_pred"] for s in sources]).astype(float) for a in arms}
    for a in arms:  # the same images in the same order in every arm
        for s in sources:
            assert arms[a]["held_out"][s]["_paths"] == arms["keep"]["held_out"][s]["_paths"]
    mean_acc = {a: float(np.mean([arms[a]["held_out"][s]["accuracy"] for s in sources])) for a in arms}
    hdraws = paired_bootstrap(ys, preds, patients, lambda _y, p: float(p.mean()), args.n_boot, args.seed)
    pooled = {a: float(preds[a].mean()) for a in arms}
    for a, b in (("repair", "keep"), ("discard", "keep"), ("repair", "discard"), ("discard", "repair")):
        out["held_out_accuracy_diff_ci95"][f"{a}-{b}"] = diff_ci(hdraws, a, b)
    out["held_out_mean_accuracy"] = {a: round(v, 4) for a, v in mean_acc.items()}
    out["held_out_pooled_accuracy"] = {a: round(v, 4) for a, v in pooled.items()}

    def beats(a: str, b: str) -> bool:
        ci = (
            out["held_out_accuracy_diff_ci95"][f"{a}-{b}"] if f"{a}-{b}" in out["held_out_accuracy_diff_ci95"] else None
        )
        if ci is None:
            ci = diff_ci(hdraws, a, b)
        return mean_acc[a] - mean_acc[b] >= MARGIN_PP and ci is not None and ci[0] > 0

    keep_ci = arms["keep"]["test"]["roc_auc_ci95"]
    keep_cam = arms["keep"]["markings_cam"]["share_markings_covid_cam_mean"]

    def supported(arm: str, other: str) -> dict[str, Any]:
        auc = arms[arm]["test"]["roc_auc"]
        cam = arms[arm]["markings_cam"]["share_markings_covid_cam_mean"]
        checks = {
            f"beats keep on held-out accuracy (>= {MARGIN_PP:.0%} and paired CI > 0)": beats(arm, "keep"),
            f"not beaten by {other}": not beats(other, arm),
            "test AUC inside keep's 95% CI": keep_ci[0] <= auc <= keep_ci[1],
            "Grad-CAM share on markings <= keep's": cam is not None and keep_cam is not None and cam <= keep_cam,
        }
        return {"checks": checks, "supported": all(checks.values())}

    out["rule"] = {"repair": supported("repair", "discard"), "discard": supported("discard", "repair")}
    if out["rule"]["repair"]["supported"]:
        verdict = "repair"
    elif out["rule"]["discard"]["supported"]:
        verdict = "discard"
    else:
        verdict = "keep (no arm wins: the evidence does not support changing from keep)"
    out["verdict"] = verdict
    return out


def markdown(result: dict[str, Any]) -> str:
    """The Markdown report."""
    m = result["machine"]
    c = result["flagged"]
    cmp_ = result["comparison"]
    arms = result["arms"]
    lines = [
        "# Repair instead of discard: keep / discard / repair the images flagged for markings",
        "",
        f"Produced by `bench/repair_ablation.py`{' (QUICK smoke run)' if result['quick'] else ''} on "
        f"{result['created']}. Machine: {m.get('cpu_model')}, {m.get('usable_cores', m.get('logical_cores'))} usable "
        f"cores; load average {result['load_average_start']} at the start, {result['load_average_end']} at the end "
        f"(the cores are shared with other work). Total wall time {result['total_seconds'] / 60:.1f} min.",
        "",
        f"Dataset: `{result['data']}`, the library's patient-grouped split ({result['n_splits']}); "
        f"test split identical (same {arms['keep']['test']['n']} original images) in every arm.",
        "",
        f"**Recipe (every run):** {result['recipe']}",
        "",
        f"**Flagged for markings** (classical detector, default threshold) in train+val: {c['train_val_total']} images "
        f"({c['share_of_train_val']:.1%}): {c['by_class']}; by split: {c['by_split_class']}; by class/source: "
        f"{c['by_class_source']}. Flagged test images (Grad-CAM set): {c['test_flagged']} {c['test_flagged_by_class']}. "
        f"Flagged images of the held-out sources (all splits): {c['held_out_sources_flagged']}.",
        "",
        "| arm | train+val images | test AUC (95% CI) | AUC - keep (paired 95% CI) | lungs-blanked AUC | lungs-only AUC "
        "| Grad-CAM share on markings (COVID CAM / decided CAM) | held-out covid-cxnet acc | held-out ieee8023 acc "
        "| mean held-out acc | best val AUC |",
        "|" + "---|" * 11,
    ]
    for arm, r in arms.items():
        t, a, g = r["test"], r["audit"], r["markings_cam"]
        diff = cmp_["test_auc_diff_vs_keep_ci95"].get(arm)
        ho = r["held_out"]

        def acc(s: str, ho: dict[str, Any] = ho) -> str:
            """Held-out accuracy of source ``s`` with its count, or n/a."""
            return f"{ho[s]['accuracy']:.3f} (n={ho[s]['n_held_out']})" if s in ho else "n/a"

        lines.append(
            f"| {arm} | {sum(r['n_train_val'].values())} | {t['roc_auc']:.3f} ({t['roc_auc_ci95'][0]:.3f}-"
            f"{t['roc_auc_ci95'][1]:.3f}) | "
            + (
                f"{t['roc_auc'] - arms['keep']['test']['roc_auc']:+.3f} ({diff[0]:+.3f} to {diff[1]:+.3f})"
                if diff
                else "-"
            )
            + f" | {_f(a['auc_lungs_blanked'])} | {_f(a['auc_lungs_only'])} | "
            f"{_f(g['share_markings_covid_cam_mean'])} / {_f(g['share_markings_decided_cam_mean'])} (n={g['n']}) | "
            f"{acc('covid-cxnet')} | {acc('ieee8023')} | {_f(cmp_['held_out_mean_accuracy'][arm])} | "
            f"{_f(r['main']['best_val_auc'])} |"
        )
    lines += [
        "",
        f"Mean area of the markings boxes on those test images: {_f(arms['keep']['markings_cam']['markings_area_mean'])} "
        "of the image (the share a flat heatmap would put there).",
        "",
        "Held-out accuracy differences (pooled over both sources, paired patient bootstrap 95% CI): "
        + "; ".join(f"{k}: {v}" for k, v in cmp_["held_out_accuracy_diff_ci95"].items())
        + ".",
        "",
        "Held-out accuracy on the held-out source's flagged / unflagged images: "
        + "; ".join(
            f"{arm} {s}: {_f(h['accuracy_flagged'])} (n={h['n_flagged_held_out']}) / {_f(h['accuracy_unflagged'])}"
            for arm, r in arms.items()
            for s, h in r["held_out"].items()
        )
        + ".",
        "",
        "Test AUC on flagged / unflagged test images: "
        + "; ".join(
            f"{arm}: {_f(r['test']['roc_auc_flagged_images'])} / {_f(r['test']['roc_auc_unflagged_images'])}"
            for arm, r in arms.items()
        )
        + ".",
        "",
        "## Decision rule (fixed before the run) and verdict",
        "",
        result["rule_text"],
        "",
    ]
    for arm in ("repair", "discard"):
        lines.append(
            f"- {arm}: " + "; ".join(f"{k}: {'yes' if v else 'no'}" for k, v in cmp_["rule"][arm]["checks"].items())
        )
    lines += ["", f"**Verdict: {cmp_['verdict']}.**", ""]
    if result.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]
    lines += ["## Wall time per step (s)", ""] + [f"- {k}: {v}" for k, v in result["steps_seconds"].items()]
    return "\n".join(lines) + "\n"


def _f(value: Any) -> str:
    """Three decimals or n/a."""
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.3f}"


RULE_TEXT = (
    "Primary outcome: held-out COVID-source accuracy, mean over covid-cxnet and ieee8023. Arm A beats arm B when A's "
    f"mean held-out accuracy is at least {MARGIN_PP * 100:.0f} percentage points higher AND the paired patient-bootstrap "
    "95% CI of the pooled difference excludes 0; otherwise they tie (one seed per run). Repair is supported if it beats "
    "keep, is not beaten by discard, its test AUC lies inside keep's 95% CI and its Grad-CAM share on markings is no "
    "higher than keep's (on a tie with discard, repair is preferred since it keeps the images). Discard is supported by "
    "the same rule with the two swapped. Otherwise no arm wins and the evidence does not support changing from keep; "
    "lungs-blanked AUC and the Grad-CAM share are secondary and decide nothing alone."
)


SEEDS_RULE_TEXT = (
    "Fixed before the multi-seed runs. Each seed is a full run of the three arms (same split, same recipe, only the "
    "training and resampling seed differs). Primary outcome: held-out AUC, the mean over covid-cxnet and ieee8023 of "
    "the AUC that ranks the held-out source's images (all COVID) against the test split's Normal images, both scored "
    "by the model trained without that source; unlike held-out accuracy it does not move with the decision threshold. "
    "Arm A beats arm B when A's held-out AUC is higher than B's in every seed and by at least 0.01 on average over "
    "the seeds. Repair is supported if it beats keep, is not beaten by discard, its test AUC averaged over the seeds "
    "is at most 0.01 below keep's, and its Grad-CAM share on markings averaged over the seeds is no higher than "
    "keep's. Discard is supported by the same rule with the two swapped (and repair not supported). Otherwise the "
    "evidence does not support changing from keep. Held-out accuracy, the lungs-blanked AUC and each seed's "
    "single-run verdict are reported and decide nothing."
)


def seed_summary(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Per-arm figures of every seed, their means, and the multi-seed rule's verdict."""

    def figures(r: dict[str, Any]) -> dict[str, Any]:
        """The figures of one arm in one run."""
        ho = r["held_out"]
        return {
            "test_auc": r["test"]["roc_auc"],
            "lungs_blanked_auc": r["audit"]["auc_lungs_blanked"],
            "markings_cam_share": r["markings_cam"]["share_markings_covid_cam_mean"],
            "held_out_auc": float(np.mean([ho[s]["auc_vs_test_normal"] for s in HELD_OUT])),
            "held_out_accuracy": float(np.mean([ho[s]["accuracy"] for s in HELD_OUT])),
            **{f"held_out_auc_{s}": ho[s]["auc_vs_test_normal"] for s in HELD_OUT},
        }

    per_seed = {arm: {seed: figures(run["arms"][arm]) for seed, run in runs.items()} for arm in ARMS}
    mean = {
        arm: {k: round(float(np.mean([f[k] for f in by_seed.values()])), 4) for k in next(iter(by_seed.values()))}
        for arm, by_seed in per_seed.items()
    }

    def beats(a: str, b: str) -> bool:
        """A's held-out AUC above B's in every seed and by >= 0.01 on average."""
        every = all(per_seed[a][seed]["held_out_auc"] > per_seed[b][seed]["held_out_auc"] for seed in runs)
        return every and mean[a]["held_out_auc"] - mean[b]["held_out_auc"] >= 0.01 - 1e-9

    def supported(arm: str, other: str) -> dict[str, Any]:
        """The rule's checks for ``arm`` against keep and ``other``."""
        checks = {
            "beats keep on held-out AUC (every seed, >= 0.01 on average)": beats(arm, "keep"),
            f"not beaten by {other}": not beats(other, arm),
            "mean test AUC at most 0.01 below keep's": mean[arm]["test_auc"] >= mean["keep"]["test_auc"] - 0.01,
            "mean Grad-CAM share on markings <= keep's": mean[arm]["markings_cam_share"]
            <= mean["keep"]["markings_cam_share"],
        }
        return {"checks": checks, "supported": all(checks.values())}

    rule = {"repair": supported("repair", "discard"), "discard": supported("discard", "repair")}
    verdict = (
        "repair"
        if rule["repair"]["supported"]
        else "discard"
        if rule["discard"]["supported"]
        else "keep (no arm wins: the evidence does not support changing from keep)"
    )
    return {
        "seeds": sorted(runs),
        "per_seed": {arm: {str(k): v for k, v in by.items()} for arm, by in per_seed.items()},
        "mean": mean,
        "single_run_verdicts": {str(seed): run["comparison"]["verdict"] for seed, run in runs.items()},
        "rule_text": SEEDS_RULE_TEXT,
        "rule": rule,
        "verdict": verdict,
        "runs": {
            str(seed): {
                "created": run["created"],
                "total_minutes": round(run["total_seconds"] / 60, 1),
                "load_average_start": run["load_average_start"],
                "load_average_end": run["load_average_end"],
                "flagged_train_val": run["flagged"]["train_val_total"],
                "repair_mask_fraction_mean": run["arms"]["repair"]["curation"].get("mask_fraction_mean"),
            }
            for seed, run in runs.items()
        },
        "machine": next(iter(runs.values()))["machine"],
        "recipe": next(iter(runs.values()))["recipe"],
    }


def seeds_markdown(summary: dict[str, Any]) -> str:
    """The Markdown report of the multi-seed summary."""
    m = summary["machine"]
    lines = [
        "# Repair instead of discard: keep / discard / repair, over several seeds",
        "",
        f"Combined by `bench/repair_ablation.py --summarise` from the runs `repair_ablation.seed<N>.md` (seeds "
        f"{', '.join(map(str, summary['seeds']))}). Machine: {m.get('cpu_model')}, "
        f"{m.get('usable_cores', m.get('logical_cores'))} usable cores.",
        "",
        f"**Recipe (every run; quoted from the first, only the seed differs):** {summary['recipe']}",
        "",
        "Runs: "
        + "; ".join(
            f"seed {k}: {v['created']}, {v['total_minutes']} min, load {v['load_average_start']} -> "
            f"{v['load_average_end']}, {v['flagged_train_val']} flagged train+val images, repair mask "
            f"{_f(v['repair_mask_fraction_mean'])} of the pixels on average"
            for k, v in summary["runs"].items()
        )
        + ".",
        "",
        "| arm | seed | test AUC | lungs-blanked AUC | Grad-CAM share on markings | held-out AUC covid-cxnet "
        "| held-out AUC ieee8023 | mean held-out AUC | mean held-out accuracy |",
        "|" + "---|" * 9,
    ]
    for arm in ARMS:
        rows = [*summary["per_seed"][arm].items(), ("mean", summary["mean"][arm])]
        for seed, f in rows:
            lines.append(
                f"| {arm} | {seed} | {_f(f['test_auc'])} | {_f(f['lungs_blanked_auc'])} | "
                f"{_f(f['markings_cam_share'])} | {_f(f['held_out_auc_covid-cxnet'])} | "
                f"{_f(f['held_out_auc_ieee8023'])} | {_f(f['held_out_auc'])} | {_f(f['held_out_accuracy'])} |"
            )
    lines += ["", "## Decision rule and verdict", "", summary["rule_text"], ""]
    for arm in ("repair", "discard"):
        checks = summary["rule"][arm]["checks"]
        lines.append(f"- {arm}: " + "; ".join(f"{k}: {'yes' if v else 'no'}" for k, v in checks.items()))
    lines += [
        "",
        f"**Verdict: {summary['verdict']}.**",
        "",
        "Each seed's single-run verdict (held-out accuracy at the validation-chosen threshold; decides nothing "
        "here): " + "; ".join(f"seed {k}: {v}" for k, v in summary["single_run_verdicts"].items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def summarise() -> int:
    """Combine the per-seed results of :data:`SEEDS` into ``repair_ablation.json`` and ``.md``."""
    from cxr_core.util.atomic import write_json_atomic, write_text_atomic

    files = {seed: RESULTS / f"repair_ablation.seed{seed}.json" for seed in SEEDS}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        print(f"error: missing per-seed results: {', '.join(missing)}", file=sys.stderr)
        return 2
    summary = seed_summary({seed: json.loads(f.read_text()) for seed, f in files.items()})
    write_json_atomic(RESULTS / "repair_ablation.json", summary)
    write_text_atomic(RESULTS / "repair_ablation.md", seeds_markdown(summary))
    print(seeds_markdown(summary))
    return 0


def main() -> int:
    """Run the ablation and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--work", type=Path, default=None, help="work dir for the arms' homes (default: a new temp dir)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run; results stay in the work dir")
    parser.add_argument("--seed", type=int, default=SEED, help="training and resampling seed of this run")
    parser.add_argument(
        "--summarise", action="store_true", help="only combine the committed per-seed results into the summary"
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--cam-images", type=int, default=300, help="Grad-CAM images of the audit's lung attention")
    parser.add_argument("--trees", type=int, default=100, help="trees of the audit's stats baseline (not used here)")
    parser.add_argument("--quick-train", type=int, default=160)
    parser.add_argument("--quick-val", type=int, default=48)
    args = parser.parse_args()
    if args.summarise:
        return summarise()
    args.data = args.data.expanduser().resolve()
    args.held_out = HELD_OUT
    if args.quick:
        args.epochs, args.patience, args.n_boot, args.cam_images, args.trees = 1, 1, 100, 20, 20
        args.held_out = HELD_OUT[:1]
    work = (args.work or Path(tempfile.mkdtemp(prefix="cxr-repair-ablation-"))).resolve()
    assert not work.is_relative_to(args.data), "the work dir must not be inside the data folder"
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir: {work}", file=sys.stderr)
    started = time.monotonic()
    clock = Clock()
    result: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "load_average_start": load_average(),
        "data": str(args.data),
        "work_dir": str(work),
        "quick": bool(args.quick),
        "rule_text": RULE_TEXT,
    }
    base_home = work / "base"
    base = prepare_base(args, base_home, clock)
    tc = recipe(args, args.data)
    result["recipe"] = (
        f"{tc.arch}, {tc.size} px, {tc.method}, augmentation {tc.augmentation}, sampling {tc.sampling}, EMA {tc.ema}, "
        f"lr {tc.learning_rate}, batch {tc.batch}, seed {args.seed}, at most {tc.epochs} epochs, early stopping on "
        f"{tc.monitor} (patience {tc.patience}, lr halved after {tc.lr_patience} epoch(s) without val-loss gain), "
        f"calibrated on val (target sensitivity {tc.target_sensitivity}); test CIs: {args.n_boot} patient-bootstrap "
        "resamples." + (" QUICK: train/val subsampled, 1 epoch, one held-out source (60 images)." if args.quick else "")
    )
    result["flagged"] = base["counts"]
    result["n_splits"] = base["n_splits"]
    arms: dict[str, dict[str, Any]] = {}
    for arm in ARMS:
        arms[arm] = run_arm(arm, args, base_home, work, base, clock)
    result["comparison"] = compare(arms, base, args)
    result["arms"] = {
        arm: {
            **{k: v for k, v in r.items() if not k.startswith("_") and k != "held_out"},
            "held_out": {s: {k: v for k, v in h.items() if not k.startswith("_")} for s, h in r["held_out"].items()},
        }
        for arm, r in arms.items()
    }
    result["steps_seconds"] = clock.steps
    result["total_seconds"] = round(time.monotonic() - started, 1)
    result["load_average_end"] = load_average()
    result["notes"] = [
        "One training seed per run: its single-run verdict ignores the seed-to-seed spread, which the summary over "
        "several seeds (repair_ablation.md) measures; the summary's rule decides.",
        "The classical detector flags Normal images too (e.g. kermany-pediatric), although every human-marked "
        "image of the sample is COVID; discard and repair act on those as well.",
        "Grad-CAM share on markings: test images the detector flags and on which it returns regions; the 'COVID CAM' "
        "explains the COVID class on every image (the shortcut's class), the 'decided CAM' the predicted class "
        "(predict_image's default).",
    ]
    payload = json.loads(json.dumps(result, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    out_dir = work if args.quick else RESULTS
    name = "repair_ablation.quick" if args.quick else f"repair_ablation.seed{args.seed}"
    from cxr_core.util.atomic import write_json_atomic, write_text_atomic

    write_json_atomic(out_dir / f"{name}.json", payload)
    write_text_atomic(out_dir / f"{name}.md", markdown(payload))
    print(markdown(payload))
    print(f"written to {out_dir}/{name}.json and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
