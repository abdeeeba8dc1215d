"""Tiny trained models in the registry's model-directory format, shared by the predict/explain tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import synthetic_xray

TINY_SIZE = 64


def build_tiny_model(size: int = TINY_SIZE, nested: bool = False):  # noqa: ANN201 (keras import is lazy)
    """A small functional CNN (Rescaling, Conv2D..., GAP, Dense(2, softmax, name="predictions")), optionally
    with its convolutions inside a nested backbone model."""
    import keras

    keras.utils.set_random_seed(7)
    inputs = keras.Input((size, size, 1))
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
    return keras.Model(inputs, outputs)


def train_briefly(model, size: int = TINY_SIZE, n_per_class: int = 16, epochs: int = 3):  # noqa: ANN001, ANN201
    """Fit a few epochs on synthetic chest-like images (index 0 = COVID, 1 = Normal) so gradients are informative."""
    rng = np.random.default_rng(0)
    images = [synthetic_xray(rng, size, covid=c) for c in (True, False) for _ in range(n_per_class)]
    x = np.stack(images).astype(np.float32)[..., None]
    y = np.repeat(np.eye(2, dtype=np.float32), n_per_class, axis=0)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0)
    return model


def make_model_dir(directory: Path, size: int = TINY_SIZE, threshold: float = 0.5, name: str = "tiny") -> Path:
    """Build, briefly train and save a tiny model directory (model, preprocess, classes, calibration, card)."""
    from cxr_core.preprocess import PreprocessConfig
    from cxr_core.registry import save_model_dir

    model = train_briefly(build_tiny_model(size), size)
    card = {"name": name, "architecture": "tiny_test_cnn"}
    return save_model_dir(directory, model, PreprocessConfig(size=size), temperature=1.2, threshold=threshold, card=card)


def dicom_bytes(gray: np.ndarray, photometric: str = "MONOCHROME2", patient_name: str = "Doe^Jane",
                patient_id: str = "PID-0042") -> bytes:
    """A 12-bit DICOM file of a grayscale image with patient identifiers; MONOCHROME1 stores inverted values."""
    import io

    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    values = gray.astype(np.uint16) * 16
    if photometric == "MONOCHROME1":
        values = 4095 - values
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = patient_name, patient_id, "DX"
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = values.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
