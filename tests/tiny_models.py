"""Tiny Keras models and model directories in the registry's format for the tests (no training engine needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from conftest import synthetic_xray
from cxr_core.preprocess.recipe import PreprocessConfig
from cxr_core.serve.registry import save_model_dir

TINY_SIZE = 64


def build_tiny_model(size: int = TINY_SIZE, nested: bool = False, seed: int = 7, compiled: bool = False) -> Any:
    """A small functional CNN ``tiny_net`` (Rescaling, Conv2D..., GAP, Dense(2, softmax, name="predictions")) on raw
    0-255 input of (size, size, 1); ``nested`` puts its convolutions inside a nested ``backbone`` model."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((size, size, 1), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    if nested:
        inner_in = keras.Input((size, size, 1))
        y = keras.layers.Conv2D(8, 3, activation="relu", padding="same", name="b_conv1")(inner_in)
        y = keras.layers.MaxPooling2D()(y)
        y = keras.layers.Conv2D(16, 3, activation="relu", padding="same", name="b_conv2")(y)
        y = keras.layers.GlobalAveragePooling2D()(y)
        x = keras.Model(inner_in, y, name="backbone")(x)
    else:
        x = keras.layers.Conv2D(8, 3, activation="relu", padding="same")(x)
        x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Conv2D(16, 3, activation="relu", padding="same", name="last_conv")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="tiny_net")
    if compiled:
        model.compile(optimizer="adam", loss="categorical_crossentropy")
    return model


def train_briefly(model: Any, size: int = TINY_SIZE, n_per_class: int = 16, epochs: int = 3) -> Any:
    """Fit a few epochs on synthetic chest-like images (index 0 = COVID, 1 = Normal) so gradients are informative."""
    rng = np.random.default_rng(0)
    images = [synthetic_xray(rng, size, covid=c) for c in (True, False) for _ in range(n_per_class)]
    x = np.stack(images).astype(np.float32)[..., None]
    y = np.repeat(np.eye(2, dtype=np.float32), n_per_class, axis=0)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    return model


def tiny_model_dir(directory: Path, size: int = TINY_SIZE, **kwargs: Any) -> Path:
    """Save an untrained tiny model (no normalisation) as a complete model directory."""
    return save_model_dir(directory, build_tiny_model(size), PreprocessConfig(method="none", size=size), **kwargs)


def make_model_dir(directory: Path, size: int = TINY_SIZE, threshold: float = 0.5, name: str = "tiny") -> Path:
    """Build, briefly train and save a tiny model directory (model, preprocess, classes, calibration, card)."""
    model = train_briefly(build_tiny_model(size), size)
    card = {"name": name, "architecture": "tiny_test_cnn"}
    return save_model_dir(
        directory, model, PreprocessConfig(size=size), temperature=1.2, threshold=threshold, card=card
    )


def brightness_model(size: int = TINY_SIZE, slope: float = 10.0, center: float = 0.64) -> Any:
    """A hand-weighted classifier: P(COVID) = sigmoid(2 * slope * (mean brightness - center)); no training needed.

    The synthetic COVID images of ``conftest.synthetic_xray`` are hazier, hence brighter (mean ~0.73 vs ~0.55).
    """
    import keras

    inputs = keras.Input((size, size, 1), name="image")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(2, activation="softmax", name="predictions")
    outputs = dense(x)
    dense.set_weights(
        [np.array([[slope, -slope]], np.float32), np.array([-slope * center, slope * center], np.float32)]
    )
    return keras.Model(inputs, outputs, name="brightness_net")
