"""Overlaid markings (arrows, boxes, captions): the classical detector, the learned net, synthetic overlays and training.

Names are loaded lazily (``lazy_loader``, as scikit-image does): importing the package imports none of its
modules, so ``cxr --help`` and the pages stay fast; ``cxr_core.markings.NAME`` imports the module defining NAME.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["classical", "net", "synth", "train"],
    submod_attrs={
        "classical": [
            "DEFAULT_OPTIONS",
            "DEFAULT_THRESHOLD",
            "MarkingsOptions",
            "MarkingsResult",
            "combine_scores",
            "detect_markings",
            "outline_regions",
        ],
        "net": ["CARD_FILE", "MODEL_FILE", "MarkingsModelError", "cell_regions", "load_markings_net", "model_dir"],
        "synth": ["OverlayOptions", "draw_overlays"],
        "train": ["MarkingsDataError", "MarkingsTrainConfig", "train_markings_net"],
    },
)
