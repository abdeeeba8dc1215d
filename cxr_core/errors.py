"""Errors shared by the library and its front ends, importable without the heavy modules that raise them."""


class DatasetError(ValueError):
    """The dataset folder cannot be indexed (missing, no class folders or labels, a bad label CSV, no readable image)."""
