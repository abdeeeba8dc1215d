"""Evaluation: metrics with patient-bootstrap CIs, calibration, reports, leave-one-source-out, the shortcut audit and model cards.

Names are loaded lazily (``lazy_loader``, as scikit-image does): importing the package imports none of its
modules, so ``cxr --help`` and the pages stay fast; ``cxr_core.evaluate.NAME`` imports the module defining NAME.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["audit", "calibration", "card", "coverage", "evaluate", "figures", "loso", "metrics", "report", "view"],
    submod_attrs={
        "audit": ["AuditError", "AuditOptions", "image_statistics", "run_audit", "save_audit", "verdict"],
        "calibration": [
            "Calibration",
            "CalibrationError",
            "DEFAULT_TARGET_SENSITIVITY",
            "apply_temperature",
            "calibrate",
            "choose_threshold",
            "fit_temperature",
        ],
        "card": [
            "SelectionRule",
            "base_card",
            "card_with_loso",
            "card_with_selection",
            "read_card",
            "render_markdown",
            "write_card",
        ],
        "coverage": ["coverage_report", "risk_coverage"],
        "evaluate": ["EvaluationError", "HEADLINE", "SPLIT_CHOICES"],
        "loso": ["LosoOptions", "all_sources_model", "leave_one_source_out", "loso_frame", "model_recipe"],
        "metrics": [
            "DEFAULT_BOOTSTRAP",
            "all_metrics",
            "bootstrap_ci",
            "curves",
            "expected_calibration_error",
            "reliability",
            "subgroup_table",
            "threshold_metrics",
        ],
        "report": ["write_report"],
    },
)
