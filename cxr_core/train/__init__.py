"""Training: architectures, input pipelines, the one TrainConfig, the trainer, run directories, jobs and tuning.

Names are loaded lazily (``lazy_loader``, as scikit-image does): importing the package imports none of its
modules, so ``cxr --help`` and the pages stay fast; ``cxr_core.train.NAME`` imports the module defining NAME.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["architectures", "config", "jobs", "pipeline", "robust", "rundir", "trainer", "tuning"],
    submod_attrs={
        "architectures": [
            "ARCHITECTURES",
            "ArchitectureError",
            "CLASSES",
            "VGG19_NOTOP",
            "build_model",
            "flops_per_image",
            "set_batchnorm_statistics",
        ],
        "config": [
            "GROUPS",
            "OptionSpec",
            "TRAIN_CONFIG_FILE",
            "TrainConfig",
            "TrainingError",
            "config_from_options",
            "read_train_config",
            "train_options",
        ],
        "pipeline": [
            "Augmentation",
            "PipelineError",
            "SPLIT_COLUMNS",
            "augmentation_layers",
            "class_weights",
            "labels_of",
            "load_arrays",
            "make_dataset",
            "paper_iterator",
            "select_images",
        ],
        "robust": ["GradientReversal", "RobustModel", "input_gradient_penalty"],
        "rundir": ["MODEL_DIR", "log_tail", "read_batches", "read_config", "read_metrics", "write_json_safe"],
        "trainer": ["TrainResult", "TrainingData", "input_data", "resume", "train"],
        "tuning": ["RESULTS_CSV", "TuneConfig", "tune", "tuning_dir"],
    },
)
