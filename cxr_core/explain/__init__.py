"""Explanations: Grad-CAM and friends, and where a heatmap puts its mass.

Names are loaded lazily (``lazy_loader``, as scikit-image does): importing the package imports none of its
modules, so ``cxr --help`` and the pages stay fast; ``cxr_core.explain.NAME`` imports the module defining NAME.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["attention", "cam"],
    submod_attrs={
        "attention": [
            "AttentionError",
            "AttentionShares",
            "Box",
            "COLORMAPS",
            "RegionLayout",
            "attention_shares",
            "attention_warning",
            "boxes_mask",
            "colorize",
            "draw_boxes",
            "outline",
            "outline_gray",
            "overlay",
            "png_bytes",
            "region_masks",
        ],
        "cam": [
            "CAM_METHODS",
            "ExplainError",
            "ExplainOptions",
            "Explainer",
            "find_target_layer",
            "rescale01",
            "to_original_shape",
        ],
    },
)
