"""DICOM decoding: every transfer syntax a chest radiograph archive uses, frames, pixel scaling, undecodable data."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder
from pydicom.uid import (
    MPEG2MPML,
    UID,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from cxr_core.data.imaging import ImageReadError, read_xray


def synthetic_12bit(height: int = 96, width: int = 128) -> np.ndarray:
    """A smooth, noisy 12-bit test image that reaches both ends of the 0..4095 range."""
    y, x = np.mgrid[0:height, 0:width]
    smooth = 2048 + 2100 * np.sin(x / 9.0) * np.cos(y / 7.0)
    noise = np.random.default_rng(0).normal(0, 60, (height, width))
    return np.clip(smooth + noise, 0, 4095).astype(np.uint16)


IMAGE = synthetic_12bit()


def dataset(pixels: np.ndarray, **tags: object) -> Dataset:
    """An uncompressed 16-bit-allocated MONOCHROME2 DX dataset with patient identifiers; ``tags`` override."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = "Doe^Jane", "SECRET-123", "DX"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels.astype(np.int16 if ds.PixelRepresentation else np.uint16).tobytes()
    return ds


def file_bytes(ds: Dataset) -> bytes:
    """The dataset written as a DICOM Part 10 file."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def jpeg_lossless_sv1(image: np.ndarray, precision: int = 12) -> bytes:
    """Encode an unsigned 2-D image as JPEG Lossless Process 14, predictor 1 (SV1); a test-only encoder."""
    values = image.astype(np.int64)
    predicted = np.empty_like(values)
    predicted[0, 0] = 1 << (precision - 1)
    predicted[0, 1:] = values[0, :-1]
    predicted[1:, 0] = values[:-1, 0]
    predicted[1:, 1:] = values[1:, :-1]
    diff = (values - predicted).ravel()
    size = np.zeros(diff.shape, np.int64)
    nonzero = diff != 0
    size[nonzero] = np.floor(np.log2(np.abs(diff[nonzero]))).astype(np.int64) + 1
    extra = np.where(diff < 0, diff - 1, diff) & ((1 << size) - 1)
    bits = "".join(f"{s:05b}" + (f"{e:0{s}b}" if s else "") for s, e in zip(size.tolist(), extra.tolist()))
    bits += "1" * (-len(bits) % 8)
    scan = int(bits, 2).to_bytes(len(bits) // 8, "big").replace(b"\xff", b"\xff\x00")
    rows, cols = image.shape
    frame = struct.pack(">HHBHHBBBB", 0xFFC3, 11, precision, rows, cols, 1, 1, 0x11, 0)
    table = struct.pack(">HHB", 0xFFC4, 2 + 1 + 16 + 17, 0) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    start = struct.pack(">HHBBBBBB", 0xFFDA, 8, 1, 1, 0, 1, 0, 0)
    return b"\xff\xd8" + frame + table + start + scan + b"\xff\xd9"


def encoded(syntax: str) -> bytes:
    """IMAGE as a DICOM file in ``syntax``, encoded by pydicom, pyjpegls, pylibjpeg-openjpeg or jpeg_lossless_sv1."""
    ds = dataset(IMAGE)
    if syntax in (JPEGLossless, JPEGLosslessSV1):
        ds.PixelData = encapsulate([jpeg_lossless_sv1(IMAGE)])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = syntax
    elif UID(syntax).is_compressed:
        ds.compress(syntax, encoding_plugin="pydicom" if syntax == RLELossless else "")
    else:
        ds.file_meta.TransferSyntaxUID = syntax
    data = file_bytes(ds)
    assert dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == syntax
    return data


def refused(data: bytes) -> str:
    """The one-line ImageReadError message for a DICOM file that must be refused."""
    with pytest.raises(ImageReadError) as info:
        read_xray(data, name="x.dcm")
    message = str(info.value)
    assert "\n" not in message and message.startswith("x.dcm: ") and "SECRET" not in message and "Doe" not in message
    return message


def test_uncompressed_12bit_maps_the_stored_bit_range_to_8_bits() -> None:
    xray = read_xray(file_bytes(dataset(IMAGE)), name="a.dcm")
    assert xray.pixels.dtype == np.uint8 and xray.original_dtype == "uint16" and xray.original_mode == "MONOCHROME2"
    assert np.array_equal(xray.pixels, (IMAGE >> 4).astype(np.uint8))


@pytest.mark.parametrize(
    "syntax",
    [
        ImplicitVRLittleEndian,
        DeflatedExplicitVRLittleEndian,
        RLELossless,
        JPEGLSLossless,
        JPEG2000Lossless,
        JPEGLossless,
        JPEGLosslessSV1,
    ],
    ids=lambda syntax: UID(syntax).name,
)
def test_every_transfer_syntax_decodes_to_the_uncompressed_pixels(syntax: str) -> None:
    reference = read_xray(file_bytes(dataset(IMAGE))).pixels
    xray = read_xray(encoded(syntax), name="a.dcm")
    assert xray.format == "DICOM" and xray.pixels.shape == IMAGE.shape
    assert np.array_equal(xray.pixels, reference)
    assert xray.dicom_tags["PatientName"] == "***" and "SECRET-123" not in str(xray.dicom_tags)


def test_multi_frame_is_refused_with_one_line() -> None:
    frames = np.stack([IMAGE, IMAGE])
    message = refused(file_bytes(dataset(frames, NumberOfFrames=2)))
    assert "multi-frame DICOM (2 frames) is not supported" in message


def test_narrow_12bit_values_are_not_stretched() -> None:
    narrow = (100 + (np.arange(96 * 128).reshape(96, 128) % 101)).astype(np.uint16)
    pixels = read_xray(file_bytes(dataset(narrow))).pixels
    assert (int(pixels.min()), int(pixels.max())) == (100 // 16, 200 // 16)


@pytest.mark.parametrize(("bits", "top"), [(8, 255), (6, 63)])
def test_eight_bits_are_kept_and_fewer_are_spread_to_white(bits: int, top: int) -> None:
    ramp = np.tile(np.arange(128) % (top + 1), (96, 1)).astype(np.uint8)
    ds = dataset(ramp.astype(np.uint16), BitsAllocated=8, BitsStored=bits, HighBit=bits - 1)
    ds.PixelData = ramp.tobytes()
    pixels = read_xray(file_bytes(ds)).pixels
    assert np.array_equal(pixels, np.rint(ramp * (255 / top)).astype(np.uint8))


def test_signed_rescaled_values_map_their_whole_range() -> None:
    signed = np.tile(np.linspace(-2048, 2047, 128).astype(np.int16), (96, 1))
    ds = dataset(signed, PixelRepresentation=1, RescaleSlope=2, RescaleIntercept=-1024)
    pixels = read_xray(file_bytes(ds)).pixels
    assert (int(pixels[0, 0]), int(pixels[0, -1])) == (0, 255)
    assert np.array_equal(pixels[0], ((signed[0].astype(int) + 2048) >> 4).astype(np.uint8))


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_window_is_applied(photometric: str) -> None:
    ramp = np.tile(np.arange(0, 4096, 32, dtype=np.uint16), (96, 1))
    ds = dataset(ramp, WindowCenter=1024, WindowWidth=512, PhotometricInterpretation=photometric)
    pixels = read_xray(file_bytes(ds)).pixels[0].astype(int)
    if photometric == "MONOCHROME1":
        pixels = 255 - pixels
    assert np.all(pixels[ramp[0] <= 768] == 0) and np.all(pixels[ramp[0] >= 1280] == 255)
    assert abs(pixels[ramp[0] == 1024][0] - 128) <= 1
    assert np.all(np.diff(pixels) >= 0) and len(set(pixels[(ramp[0] > 768) & (ramp[0] < 1280)])) > 10


def test_voi_lut_sequence_is_applied_over_its_output_range() -> None:
    ds = dataset(IMAGE)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])
    item.add_new(0x00283006, "OW", (4095 - np.arange(4096)).astype("<u2").tobytes())
    ds.VOILUTSequence = [item]
    pixels = read_xray(file_bytes(ds)).pixels
    assert np.array_equal(pixels, (255 - (IMAGE >> 4)).astype(np.uint8))


def test_transfer_syntax_without_any_decoder_is_refused() -> None:
    ds = dataset(IMAGE)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(2000)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    message = refused(file_bytes(ds))
    assert "unsupported DICOM transfer syntax MPEG2" in message and "no decoder exists" in message


def test_transfer_syntax_whose_decoder_is_not_installed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_decoder(JPEGLSLossless), "_available", {})
    message = refused(encoded(JPEGLSLossless))
    assert "unsupported DICOM transfer syntax JPEG-LS Lossless" in message and "no decoder installed" in message


COMPRESSED = [JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1]


@pytest.mark.parametrize("syntax", COMPRESSED, ids=lambda s: UID(s).name)
def test_compressed_stream_with_a_broken_header_is_refused_with_one_line(syntax: str) -> None:
    ds = dcmread(io.BytesIO(encoded(syntax)))
    frame = next(generate_frames(ds.PixelData))
    ds.PixelData = encapsulate([b"\x00\x00" + frame[2:]])
    message = refused(file_bytes(ds))
    assert f"DICOM pixel data ({UID(syntax).name}) cannot be decoded (pylibjpeg: " in message


@pytest.mark.parametrize(
    ("syntax", "reason"),
    [
        (JPEGLSLossless, "cut short or damaged"),
        (JPEGLosslessSV1, "cut short or damaged"),
        (JPEG2000Lossless, "cannot be decoded"),
    ],
    ids=["JPEG-LS", "JPEG Lossless SV1", "JPEG 2000"],
)
def test_cut_compressed_stream_is_refused_not_filled_in(syntax: str, reason: str) -> None:
    ds = dcmread(io.BytesIO(encoded(syntax)))
    frame = next(generate_frames(ds.PixelData))
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])
    assert reason in refused(file_bytes(ds))


def test_zeroed_compressed_stream_is_refused_not_decoded_as_grey() -> None:
    ds = dcmread(io.BytesIO(encoded(JPEG2000Lossless)))
    frame = next(generate_frames(ds.PixelData))
    ds.PixelData = encapsulate([frame[:200] + bytes(len(frame) - 200)])
    assert "cut short or damaged (its frame has no end marker)" in refused(file_bytes(ds))
