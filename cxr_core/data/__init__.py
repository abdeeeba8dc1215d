"""Data: reading X-ray files (raster and DICOM), the patient-grouped dataset index, splits, duplicate hashes and labels.

Names are loaded lazily (``lazy_loader``, as scikit-image does): importing the package imports none of its
modules, so ``cxr --help`` and the pages stay fast; ``cxr_core.data.NAME`` imports the module defining NAME.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submodules=["fetch", "hashing", "imaging", "index", "labels", "splits", "thumbnails"],
    submod_attrs={
        "fetch": ["FetchError", "fetch_dataset", "find_dataset_root"],
        "hashing": ["hamming", "near_pairs", "phash"],
        "imaging": [
            "IMAGE_SUFFIXES",
            "ImageReadError",
            "XRay",
            "read_image",
            "read_xray",
            "safe_dicom_tags",
            "sha256_bytes",
            "sha256_file",
        ],
        "index": ["DatasetIndex", "confounding", "labels_file", "load_index", "pixel_sources", "with_replacements"],
        "labels": ["LabelsError", "pseudonym", "read_labels", "work_salt"],
        "splits": ["SPLIT_NAMES", "assign_splits", "majority", "patient_groups"],
        "thumbnails": ["thumbnail"],
    },
)
