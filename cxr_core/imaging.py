"""Read any supported X-ray file (PNG, JPEG, BMP, TIFF, DICOM) into a 2-D uint8 grayscale array."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MIN_SIDE = 64
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = RASTER_SUFFIXES + DICOM_SUFFIXES

# Tags that identify a person; never shown, logged or written anywhere.
IDENTIFYING_TAGS = frozenset(
    {
        "PatientName", "PatientID", "PatientBirthDate", "PatientBirthTime", "PatientAddress",
        "PatientTelephoneNumbers", "OtherPatientIDs", "OtherPatientNames", "PatientMotherBirthName",
        "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName", "InstitutionName",
        "InstitutionAddress", "AccessionNumber", "StudyID", "StudyInstanceUID", "SeriesInstanceUID",
        "SOPInstanceUID", "FrameOfReferenceUID", "MedicalRecordLocator", "IssuerOfPatientID",
        "PatientInsurancePlanCodeSequence", "MilitaryRank", "BranchOfService", "RequestingPhysician",
        "StationName", "DeviceSerialNumber",
    }
)

Source = Union[str, Path, bytes, bytearray, memoryview]


class ImageReadError(ValueError):
    """A file could not be read as an X-ray image; ``str(exc)`` is one clear line."""

    def __init__(self, reason: str, name: str = "") -> None:
        """Store the reason and the file name it concerns."""
        self.reason = reason
        self.name = name
        super().__init__(f"{name}: {reason}" if name else reason)


@dataclass(frozen=True)
class XRay:
    """A decoded image with what is safe to know about its file."""

    pixels: np.ndarray
    format: str
    original_dtype: str
    original_mode: str
    dicom_tags: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """Height and width."""
        return self.pixels.shape  # type: ignore[return-value]


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of a byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def is_dicom_bytes(data: bytes) -> bool:
    """True when the bytes carry the DICOM Part 10 preamble marker."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale any numeric array to uint8 by its min and max (a constant array becomes zeros)."""
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return np.zeros(values.shape, np.uint8)
    low, high = float(values[finite].min()), float(values[finite].max())
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    scaled = (np.where(finite, values, low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def rgb_to_gray(array: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luminance of an RGB(A) array; the alpha channel is ignored."""
    rgb = array[..., :3].astype(np.float64)
    gray = rgb @ np.array([0.299, 0.587, 0.114])
    if array.dtype == np.uint8:
        return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    return gray


def _check_size(width: int, height: int, max_pixels: int, min_side: int) -> None:
    """Refuse images that are too large (decompression bombs) or too small."""
    if width * height > max_pixels:
        raise ImageReadError(f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}")
    if min(width, height) < min_side:
        raise ImageReadError(f"image is {width}x{height}, smaller than the minimum side of {min_side} px")


def _decode_raster(data: bytes, max_pixels: int, min_side: int) -> XRay:
    """Decode PNG/JPEG/BMP/TIFF bytes with Pillow, checking the size before decoding pixels."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = (image.format or "unknown").upper()
            _check_size(image.width, image.height, max_pixels, min_side)
            image.load()
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"image is too large to decode safely ({exc})") from exc
    except Image.UnidentifiedImageError as exc:
        raise ImageReadError("not a readable image (unknown or unsupported format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"corrupt or truncated image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    mode = image.mode
    if mode in {"1", "L", "P", "LA", "PA", "CMYK", "YCbCr", "HSV", "LAB"} or mode.startswith("RGB"):
        if mode in {"1", "L"}:
            pixels = np.asarray(image.convert("L"))
        elif mode in {"LA", "PA"}:
            pixels = np.asarray(image.convert("LA"))[..., 0]
        else:
            pixels = rgb_to_gray(np.asarray(image.convert("RGB")))
        dtype = "uint8"
    else:
        raw = np.asarray(image)
        dtype = str(raw.dtype)
        if raw.ndim == 3:
            raw = rgb_to_gray(raw)
        pixels = to_uint8(raw)
    return XRay(np.ascontiguousarray(pixels, dtype=np.uint8), fmt, dtype, mode)


def safe_dicom_tags(dataset: object) -> dict[str, str]:
    """Non-identifying, human-readable DICOM header fields; identifiers are masked."""
    shown: dict[str, str] = {}
    for element in dataset:  # type: ignore[attr-defined]
        keyword = getattr(element, "keyword", "")
        if not keyword or keyword == "PixelData" or element.VR in {"OB", "OW", "OF", "SQ", "UN"}:
            continue
        if keyword in IDENTIFYING_TAGS or keyword.startswith(("Patient", "Other")):
            shown[keyword] = "***"
            continue
        text = str(element.value)
        shown[keyword] = text if len(text) <= 80 else text[:77] + "..."
    return shown


def _decode_dicom(data: bytes, max_pixels: int, min_side: int) -> XRay:
    """Decode a DICOM file: modality LUT, VOI LUT/window, MONOCHROME1 inversion, scaled to 8 bits."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageReadError(f"corrupt DICOM file ({type(exc).__name__})") from exc
    if "PixelData" not in dataset:
        raise ImageReadError("DICOM file has no pixel data")
    rows, cols = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    _check_size(cols, rows, max_pixels, min_side)
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    try:
        raw = dataset.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        name = getattr(syntax, "name", str(syntax))
        raise ImageReadError(f"unsupported DICOM transfer syntax {name} (no decoder installed)") from exc
    except (ValueError, AttributeError, KeyError, TypeError, EOFError) as exc:
        raise ImageReadError(f"DICOM pixel data cannot be decoded ({str(exc).splitlines()[0][:120]})") from exc
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(dataset.get("NumberOfFrames", 1) or 1) > 1:
        raw = raw[0]
    if photometric.startswith("MONOCHROME"):
        values = apply_modality_lut(raw, dataset)
        values = apply_voi_lut(values, dataset)
        pixels = to_uint8(np.asarray(values, dtype=np.float64))
        if photometric == "MONOCHROME1":
            pixels = 255 - pixels
    else:
        pixels = to_uint8(rgb_to_gray(raw) if raw.ndim == 3 else raw)
    return XRay(np.ascontiguousarray(pixels), "DICOM", str(raw.dtype), photometric, safe_dicom_tags(dataset))


def read_xray(
    source: Source, *, name: str = "", max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = DEFAULT_MIN_SIDE
) -> XRay:
    """Read a path or bytes into an :class:`XRay`; raise :class:`ImageReadError` for anything unusable."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        name = name or path.name
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ImageReadError("file not found", name) from exc
        except IsADirectoryError as exc:
            raise ImageReadError("is a folder, not an image file", name) from exc
        except OSError as exc:
            raise ImageReadError(f"cannot read file ({exc.strerror})", name) from exc
    else:
        data = bytes(source)
    if not data:
        raise ImageReadError("file is empty", name)
    try:
        if is_dicom_bytes(data) or name.lower().endswith(DICOM_SUFFIXES):
            return _decode_dicom(data, max_pixels, min_side)
        return _decode_raster(data, max_pixels, min_side)
    except ImageReadError as exc:
        raise ImageReadError(exc.reason, name) from exc.__cause__


def read_image(source: Source, **kwargs: object) -> np.ndarray:
    """Read a path or bytes into a 2-D uint8 grayscale array (see :func:`read_xray`)."""
    return read_xray(source, **kwargs).pixels  # type: ignore[arg-type]
