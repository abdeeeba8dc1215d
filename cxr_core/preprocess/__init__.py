"""Contrast normalisation, the preprocessing recipe saved with every model, its disk cache and image quality measures.

Names are loaded lazily (``lazy_loader``, as scikit-image does): importing the package imports none of its
modules, so ``cxr --help`` and the pages stay fast; ``cxr_core.preprocess.NAME`` imports the module defining NAME.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["cache", "normalise", "quality", "recipe", "roi"],
    submod_attrs={
        "cache": [
            "PreprocessCache",
            "PreprocessReport",
            "SOURCE_KEY",
            "TMP_DIR",
            "cache_root",
            "cached_name",
            "preprocess_dataset",
        ],
        "normalise": [
            "METHODS",
            "NormaliseError",
            "Param",
            "describe",
            "parse_params",
            "percentiles",
            "resolve_params",
        ],
        "quality": [
            "MEASURES",
            "clipped_fraction",
            "entropy",
            "histogram",
            "mean_brightness",
            "measure_files",
            "quality_measures",
            "rms_contrast",
            "sharpness",
            "signed_difference",
        ],
        "recipe": [
            "INTERPOLATIONS",
            "PreprocessConfig",
            "PreprocessError",
            "RESIZE_POLICIES",
            "ROI_DILATION",
            "ROI_MARGIN",
            "ROI_MODES",
            "resize",
        ],
        "roi": ["LUNG_STANDARDISATION", "Segment", "bounding_box", "dilate", "standardise_lungs"],
    },
)
