"""CLI sub-commands: each module defines ``register(subparsers)``; :data:`COMMANDS` names them for :mod:`cxr_core.cli.parser`.

The table lets ``cxr --help`` and every command import only the module of the command being run.
"""

from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    "audit": (
        "audit",
        "shortcut audit: AUC with lungs blanked / lungs only, Grad-CAM mass in the lungs, no-CNN baseline",
    ),
    "discard": ("curate", "exclude an image from training and evaluation (reversible)"),
    "keep": ("curate", "record that an image was reviewed and kept"),
    "restore": ("curate", "undo the discard or repair of an image: its original is used again"),
    "repair": ("repair", "inpaint an image's markings into the work dir and use the repaired image (reversible)"),
    "ledger": ("curate", "export, import or list curation decisions, or undo one"),
    "evaluate": (
        "evaluate",
        "evaluate a model: AUC, sensitivity/specificity with patient-bootstrap CIs, calibration, per-source table, leave-one-source-out",
    ),
    "familiarity": (
        "familiarity",
        "fit a model's familiarity score (has it seen images like this?) on its training split",
    ),
    "fetch": ("fetch", "download the Kaggle COVID-19 Radiography Database (needs internet and Kaggle credentials)"),
    "flags": ("flags", "score every image for markings, exposure, size, duplicates, readability"),
    "import": (
        "import_data",
        "write a de-identified PNG copy (Kaggle layout + manifest.csv) of a folder of images, DICOM or not, labelled by a CSV",
    ),
    "index": ("index", "index a dataset folder: counts, patient-grouped splits, leak and confounding audits"),
    "runs": ("jobs", "list training runs (live status); cancel, resume, delete or promote one"),
    "lungs": ("lungs", "segment the lung fields of every image under a folder (masks cached, failures flagged)"),
    "models": ("models", "list the models in the registry (models/)"),
    "predict": ("predict", "gate and predict X-ray files or folders with a registered model, with Grad-CAM overlays"),
    "preprocess": ("preprocess", "resize + normalise every image into the cache (parallel, resumable)"),
    "train": ("train", "train a classifier into a run directory (checkpoints, live status, resume)"),
    "train-gate": ("train_gate", "train the chest X-ray gate (upright frontal X-ray vs rotated, inverted, other)"),
    "train-lungs": ("train_lungs", "train the lung-field segmenter (U-Net) and save it with its card"),
    "train-markings": ("train_markings", "train the learned markings detector on synthetic overlays"),
    "tune": ("tune", "Hyperband search over cxr_net's lr, width, depth, dropout, size and normalisation"),
}
"""Command name -> (module in this package, one-line help)."""


def command_help(name: str) -> str:
    """The one-line help of a command."""
    return COMMANDS[name][1]
