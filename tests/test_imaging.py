"""The shared image reader: formats, conversions and every kind of bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr_core.data.imaging import DecodedImages, ImageReadError, read_image, read_xray


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    """Encode an array with Pillow."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def gradient(h: int = 120, w: int = 100) -> np.ndarray:
    """A uint8 horizontal ramp."""
    return np.tile(np.linspace(0, 255, w, dtype=np.uint8), (h, 1))


NOISE = np.random.default_rng(0).integers(0, 256, (128, 128), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_reads_common_raster_formats(fmt: str) -> None:
    image = read_image(encode(gradient(), fmt))
    assert image.shape == (120, 100) and image.dtype == np.uint8
    assert abs(int(image[:, -1].mean()) - 255) < 4


def test_reads_from_path(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(encode(gradient()))
    assert read_image(path).shape == (120, 100)


def test_sixteen_bit_png_scales_to_full_range() -> None:
    raw = (np.arange(100 * 100, dtype=np.uint32).reshape(100, 100) % 4096).astype(np.uint16) + 1000
    image = read_image(encode(raw))
    assert image.dtype == np.uint8 and image.min() == 0 and image.max() == 255
    assert np.all(np.diff(image[0].astype(int)) >= 0)


def test_rgba_converts_to_luminance_ignoring_alpha() -> None:
    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[..., 1] = 200
    rgba[..., 3] = 7
    assert int(read_image(encode(rgba))[0, 0]) == round(0.587 * 200)


def test_rgb_jpeg_becomes_gray() -> None:
    rgb = np.dstack([gradient()] * 3)
    image = read_image(encode(rgb, "JPEG"))
    assert image.ndim == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is a text file renamed to png\n" * 10, "not a readable image"),
        (encode(NOISE)[: len(encode(NOISE)) // 2], "truncated"),
        (encode(NOISE, "JPEG")[: len(encode(NOISE, "JPEG")) // 2], "truncated"),
        (encode(np.zeros((40, 300), np.uint8)), "smaller than"),
    ],
)
def test_bad_inputs_raise_one_line_errors(data: bytes, message: str) -> None:
    with pytest.raises(ImageReadError) as info:
        read_image(data, name="x.png")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith("x.png: ")


def test_pixel_limit_refuses_large_images_before_decoding() -> None:
    with pytest.raises(ImageReadError, match="over the limit"):
        read_image(encode(np.zeros((300, 300), np.uint8)), max_pixels=50_000)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


def test_reader_never_modifies_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.png"
    path.write_bytes(b"garbage" * 50)
    before = path.read_bytes()
    with pytest.raises(ImageReadError):
        read_image(path)
    assert path.read_bytes() == before


def make_dicom(
    pixels: np.ndarray, photometric: str = "MONOCHROME2", with_pixels: bool = True, syntax: str | None = None
) -> bytes:
    """A minimal valid DICOM file built with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SECRET-123"
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if with_pixels:
        raw = pixels.astype(np.uint16).tobytes()
        ds.PixelData = encapsulate([raw]) if syntax else raw
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_windowing_and_inversion(photometric: str) -> None:
    raw = np.tile(np.linspace(0, 4095, 128).astype(np.uint16), (96, 1))
    xray = read_xray(make_dicom(raw, photometric), name="a.dcm")
    assert xray.pixels.shape == (96, 128) and xray.pixels.dtype == np.uint8 and xray.format == "DICOM"
    left, right = int(xray.pixels[0, 0]), int(xray.pixels[0, -1])
    assert (left, right) == ((0, 255) if photometric == "MONOCHROME2" else (255, 0))
    assert xray.dicom_tags["PatientName"] == "***" and xray.dicom_tags["PatientID"] == "***"
    assert "SECRET-123" not in str(xray.dicom_tags) and xray.dicom_tags["Modality"] == "DX"


def test_dicom_without_pixel_data_is_refused() -> None:
    data = make_dicom(np.zeros((80, 80), np.uint16), with_pixels=False)
    with pytest.raises(ImageReadError, match="no pixel data"):
        read_image(data, name="empty.dcm")


def test_dicom_with_unsupported_transfer_syntax_is_refused() -> None:
    data = make_dicom(np.zeros((80, 80), np.uint16), syntax="1.2.840.10008.1.2.4.90")
    with pytest.raises(ImageReadError, match="transfer syntax|cannot be decoded"):
        read_image(data, name="j2k.dcm")


def test_decoded_images_are_kept_within_the_budget_and_handed_over_once() -> None:
    store = DecodedImages(budget=150)
    store.keep("a.png", np.full((10, 10), 7, np.uint8))
    store.keep("b.png", np.zeros((10, 10), np.uint8))
    kept = store.take("a.png")
    assert kept is not None and int(kept[0, 0]) == 7
    assert store.take("a.png") is None and store.take("b.png") is None
