"""Serving: the model registry (safe loading) and prediction of single images and batches.

Names are loaded lazily (``lazy_loader``, as scikit-image does): importing the package imports none of its
modules, so ``cxr --help`` and the pages stay fast; ``cxr_core.serve.NAME`` imports the module defining NAME.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["inference", "registry"],
    submod_attrs={
        "inference": [
            "BatchItem",
            "InferenceError",
            "NO_CAM",
            "Prediction",
            "Regions",
            "collect_inputs",
            "predict_image",
            "predict_paths",
            "report_dict",
            "uncertainty_hint",
            "unfamiliar_warning",
        ],
        "registry": [
            "EVALUATION_FILE",
            "LoadedModel",
            "ModelInfo",
            "RegistryError",
            "default_model",
            "default_model_dir",
            "list_models",
            "load_model",
            "model_version",
            "register_model",
            "save_model_dir",
            "set_default",
        ],
    },
)
