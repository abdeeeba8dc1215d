"""Read any supported X-ray file (PNG, JPEG, BMP, TIFF, DICOM) into a 2-D uint8 grayscale array.

DICOM pixel scaling follows one convention. The modality LUT is applied (Modality LUT Sequence, or RescaleSlope and
RescaleIntercept), then the VOI LUT Sequence or else the first WindowCenter/WindowWidth when either is present. The
result goes to 0-255 by its fixed output range, never by the image's own minimum and maximum: the range BitsStored can
hold (signed when PixelRepresentation is 1) passed through the rescale, which is also a window's output range, or the
lowest to highest entry of a VOI LUT. That range is cut into 256 equal bins, so a 12-bit value x becomes x // 16
(a range of fewer than 256 codes is spread evenly so its top code is white).
MONOCHROME1 is then inverted. On 301 sample PNGs stored as 12-bit DICOMs (PNG value v stored as v*16, with and
without a 2048/4096 window) this gives the PNG's pixels exactly (mean absolute difference 0.000); scaling the range by
255/4095 with rounding differs by 0.586, and stretching min-max (the old rule) by 8.04 on average and up to 46.8, which
moved the default model's P(COVID) by up to 0.31. Raster files keep the min-max stretch of ``to_uint8``.

Only single-frame DICOMs are read. Decoders (pylibjpeg with libjpeg, openjpeg and rle) cover JPEG, JPEG Lossless
(Process 14 and SV1), JPEG-LS, JPEG 2000 and RLE; a file no installed decoder handles, or whose compressed stream is
damaged or cut short, is refused with one line.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MIN_SIDE = 64
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
IMAGE_SUFFIXES = RASTER_SUFFIXES + DICOM_SUFFIXES

# Tags that identify a person; never shown, logged or written anywhere.
IDENTIFYING_TAGS = frozenset(
    {
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientMotherBirthName",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
        "InstitutionName",
        "InstitutionAddress",
        "AccessionNumber",
        "StudyID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "FrameOfReferenceUID",
        "MedicalRecordLocator",
        "IssuerOfPatientID",
        "PatientInsurancePlanCodeSequence",
        "MilitaryRank",
        "BranchOfService",
        "RequestingPhysician",
        "StationName",
        "DeviceSerialNumber",
    }
)

Source = str | Path | bytes | bytearray | memoryview


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


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file (``hashlib.file_digest``, read in chunks); the one file digest of the project."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


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
        raise ImageReadError(
            f"corrupt or truncated image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from exc
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


def _decode_problem(syntax: str | None) -> str:
    """Why pixel data in ``syntax`` cannot be decoded here, or "" when an installed decoder handles it."""
    from pydicom.pixels import get_decoder

    if not syntax:
        return ""
    name = getattr(syntax, "name", str(syntax))
    try:
        decoder = get_decoder(str(syntax))
    except NotImplementedError:
        return f"unsupported DICOM transfer syntax {name} (no decoder exists for it)"
    if not decoder.is_available:
        return f"unsupported DICOM transfer syntax {name} (no decoder installed)"
    return ""


def _first_reason(exc: BaseException) -> str:
    """One short line from a (possibly multi-line) decoder error, preferring the first plugin's own reason."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    reason = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return reason if len(reason) <= 160 else reason[:157] + "..."


def _lacks_end_marker(dataset: Dataset, syntax: str | None) -> bool:
    """True when a JPEG, JPEG-LS or JPEG 2000 frame has no end marker: a cut stream, which decoders fill in silently."""
    from pydicom.encaps import generate_frames
    from pydicom.uid import UID, RLELossless

    if not syntax or not UID(syntax).is_encapsulated or syntax == RLELossless:
        return False
    frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
    return b"\xff\xd9" not in frame[-16:]


def _frame_count(dataset: Dataset) -> int:
    """NumberOfFrames (1 when absent); a value that is not a whole number is refused."""
    value = dataset.get("NumberOfFrames", 1)
    try:
        return int(value or 1)
    except (TypeError, ValueError) as exc:
        raise ImageReadError(f"DICOM NumberOfFrames {str(value)[:20]!r} is not a whole number") from exc


def _stored_range(dataset: Dataset, rescale: bool) -> tuple[float, float, float]:
    """Lowest and highest value the stored bit range can hold, and the step between codes, after the modality LUT."""
    get = dataset.get
    bits = int(get("BitsStored", 0) or get("BitsAllocated", 0) or 16)
    if int(get("PixelRepresentation", 0) or 0) == 1:
        low, high = -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    else:
        low, high = 0.0, 2.0**bits - 1
    if not rescale:
        return low, high, 1.0
    if get("ModalityLUTSequence"):
        return 0.0, 2.0 ** int(dataset.ModalityLUTSequence[0].LUTDescriptor[2]) - 1, 1.0
    slope, intercept = get("RescaleSlope"), get("RescaleIntercept")
    if slope is None or intercept is None:
        return low, high, 1.0
    ends = sorted((low * float(slope) + float(intercept), high * float(slope) + float(intercept)))
    return ends[0], ends[1], abs(float(slope))


def _has_voi_lut(dataset: Dataset) -> bool:
    """True when the dataset carries a usable VOI LUT Sequence (pydicom prefers it over a window)."""
    items = dataset.get("VOILUTSequence")
    return bool(items) and items[0].get("LUTDescriptor") is not None and items[0].get("LUTData") is not None


def _voi_lut_range(dataset: Dataset) -> tuple[float, float, float]:
    """Lowest and highest entry of the first VOI LUT: its output range."""
    from pydicom.pixels import apply_voi

    descriptor = dataset.VOILUTSequence[0].LUTDescriptor
    entries = int(descriptor[0]) or 1 << 16
    table = apply_voi(np.arange(int(descriptor[1]), int(descriptor[1]) + entries), dataset)
    return float(table.min()), float(table.max()), 1.0


def _bit_range_to_uint8(values: np.ndarray, low: float, high: float, step: float = 1.0) -> np.ndarray:
    """Map [low, high] (codes ``step`` apart) onto 0-255 in 256 equal bins, or spread under 256 codes; clip the rest."""
    if high <= low:
        return np.zeros(values.shape, np.uint8)
    offset = np.asarray(values, dtype=np.float64) - low
    if (high - low) / step >= 255:
        scaled = np.floor(offset * (256.0 / (high - low + step)) + 1e-6)
    else:
        scaled = np.rint(offset * (255.0 / (high - low)))
    return np.clip(scaled, 0, 255).astype(np.uint8)


def _monochrome_to_uint8(raw: np.ndarray, dataset: Dataset) -> np.ndarray:
    """Modality LUT, then the VOI LUT or first window when present, then that output range onto 0-255."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        low, high, step = _voi_lut_range(dataset) if _has_voi_lut(dataset) else _stored_range(dataset, rescale=True)
        values = apply_voi_lut(apply_modality_lut(raw, dataset), dataset)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, NotImplementedError) as exc:
        raise ImageReadError(f"DICOM modality LUT, VOI LUT or window is invalid ({_first_reason(exc)})") from exc
    return _bit_range_to_uint8(values, low, high, step)


def _decode_dicom(data: bytes, max_pixels: int, min_side: int) -> XRay:
    """Decode a single-frame DICOM file to 8 bits by the module's pixel-scaling convention."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageReadError(f"corrupt DICOM file ({type(exc).__name__})") from exc
    if "PixelData" not in dataset:
        raise ImageReadError("DICOM file has no pixel data")
    rows, cols = int(dataset.get("Rows", 0) or 0), int(dataset.get("Columns", 0) or 0)
    _check_size(cols, rows, max_pixels, min_side)
    frames = _frame_count(dataset)
    if frames > 1:
        raise ImageReadError(f"multi-frame DICOM ({frames} frames) is not supported; save one frame per file")
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    name = getattr(syntax, "name", "unknown transfer syntax")
    problem = _decode_problem(syntax)
    if problem:
        raise ImageReadError(problem)
    try:
        raw = dataset.pixel_array
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, KeyError, TypeError, EOFError) as exc:
        raise ImageReadError(f"DICOM pixel data ({name}) cannot be decoded ({_first_reason(exc)})") from exc
    if _lacks_end_marker(dataset, syntax):
        raise ImageReadError(f"DICOM pixel data ({name}) is cut short or damaged (its frame has no end marker)")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric.startswith("MONOCHROME"):
        pixels = _monochrome_to_uint8(raw, dataset)
        if photometric == "MONOCHROME1":
            pixels = 255 - pixels
    else:
        gray = rgb_to_gray(raw) if raw.ndim == 3 else raw
        pixels = _bit_range_to_uint8(gray, *_stored_range(dataset, rescale=False))
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


DECODED_BUDGET = 512 * 2**20
"""Bytes of pixels a :class:`DecodedImages` keeps at most (about 6,000 images of 299 x 299)."""


@dataclass
class DecodedImages:
    """Pixels one reader decoded, kept by relative path for the next reader of the same file (the indexer hands
    them to ``cxr preprocess``, so each image is decoded once); images beyond ``budget`` bytes are not kept."""

    budget: int = DECODED_BUDGET
    pixels: dict[str, np.ndarray] = field(default_factory=dict)
    kept_bytes: int = 0

    def keep(self, rel: str, pixels: np.ndarray) -> None:
        """Keep the decoded pixels of ``rel`` while the budget allows."""
        if self.kept_bytes + pixels.nbytes <= self.budget:
            self.pixels[rel] = pixels
            self.kept_bytes += pixels.nbytes

    def take(self, rel: str) -> np.ndarray | None:
        """The pixels kept for ``rel``, handed over once (None when they were not kept)."""
        return self.pixels.pop(rel, None)
