"""Small shared helpers: atomic writes, the clock, process liveness and progress bars.

Names are loaded lazily (``lazy_loader``, as scikit-image does): importing the package imports none of its
modules, so ``cxr --help`` and the pages stay fast; ``cxr_core.util.NAME`` imports the module defining NAME.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["atomic", "clock", "keras_files", "processes", "progress"],
    submod_attrs={
        "atomic": ["read_json", "read_json_object", "write_json_atomic", "write_text_atomic"],
        "clock": ["utc_now"],
        "keras_files": ["load_keras_safely", "save_keras_atomically"],
        "processes": ["pid_alive"],
        "progress": ["Progress", "ProgressBar", "StageProgress", "TrainerBudget", "epoch_budget_callback"],
    },
)
