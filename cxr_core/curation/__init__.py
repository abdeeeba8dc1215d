"""Curation: automatic flags, the decision ledger and repair of overlaid markings.

Names are loaded lazily (``lazy_loader``, as scikit-image does): importing the package imports none of its
modules, so ``cxr --help`` and the pages stay fast; ``cxr_core.curation.NAME`` imports the module defining NAME.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["curated", "flags", "ledger", "repair"],
    submod_attrs={
        "curated": ["curated_index"],
        "flags": [
            "DECISION_STATES",
            "FLAGS",
            "FlagOptions",
            "analyse_all",
            "compute_flags",
            "flagged",
            "lung_reasons",
            "missing_analyses",
            "quality_scores",
            "review_queue",
            "small_score",
            "summarise",
        ],
        "ledger": [
            "Decision",
            "Ledger",
            "LedgerError",
            "REASONS",
            "decision_dicts",
            "discarded_hashes",
            "identify_image",
            "latest_decisions",
            "open_ledger",
        ],
        "repair": ["DEFAULT_MARGIN", "METHODS", "RepairError", "marking_mask"],
    },
)
