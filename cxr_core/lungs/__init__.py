"""Lung fields: the shipped U-Net segmenter, its training and the per-folder mask cache.

Names are loaded lazily (``lazy_loader``, as scikit-image does): importing the package imports none of its
modules, so ``cxr --help`` and the pages stay fast; ``cxr_core.lungs.NAME`` imports the module defining NAME.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["cache", "segmenter", "train"],
    submod_attrs={
        "cache": [
            "describe_lung_flags",
            "load_lung_flags",
            "lung_flag_score",
            "lung_flags_version",
            "record_flags",
            "segment_folder",
        ],
        "segmenter": [
            "LungModelError",
            "LungSegmenter",
            "MODEL_FILE",
            "MaskChecks",
            "count_components",
            "dice",
            "iou",
            "keep_two_largest",
            "load_segmenter",
            "lung_mask",
            "model_dir",
            "plausibility_flags",
            "segment",
        ],
        "train": ["LungDataError", "LungTrainConfig", "train_segmenter"],
    },
)
