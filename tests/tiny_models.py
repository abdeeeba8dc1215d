"""Tiny functional Keras models and model directories for the evaluation/registry tests (no training engine needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cxr_core.preprocess import PreprocessConfig
from cxr_core.registry import save_model_dir


def tiny_model(size: int = 64, seed: int = 0, compiled: bool = False) -> Any:
    """Rescaling -> Conv -> GAP -> Dense(2, softmax, name="predictions"), input (size, size, 1) raw 0-255."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 1), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="tiny_net")
    if compiled:
        model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def tiny_model_dir(directory: Path, size: int = 64, **kwargs: Any) -> Path:
    """Save a tiny untrained model as a complete model directory."""
    return save_model_dir(directory, tiny_model(size), PreprocessConfig(method="none", size=size), **kwargs)


def brightness_model(size: int = 64, slope: float = 10.0, center: float = 0.64) -> Any:
    """A hand-weighted classifier: P(COVID) = sigmoid(2 * slope * (mean brightness - center)); no training needed.

    The synthetic COVID images of ``conftest.synthetic_xray`` are hazier, hence brighter (mean ~0.73 vs ~0.55).
    """
    import keras
    import numpy as np

    inputs = keras.Input((size, size, 1), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, activation="softmax", name="predictions")
    outputs = dense(x)
    dense.set_weights([np.array([[slope, -slope]], np.float32), np.array([-slope * center, slope * center], np.float32)])
    return keras.Model(inputs, outputs, name="brightness_net")
