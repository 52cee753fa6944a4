"""DICOM files through pydicom: modality rescale, windowing, MONOCHROME1 inversion, colour,
8-bit output.

A file that is not DICOM, is truncated, has no pixel data or holds pixels we cannot decode
raises `ImageError` with one line saying why, so readers and scorers can reject it by name.
"""

import math
import os
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from apps.medical.config import WINDOW_PRESETS
from shared.images import ImageError

DICOM_SUFFIXES = (".dcm", ".dicom")


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a `.dcm` name or the 'DICM' marker after the 128-byte preamble."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def read_dicom(path: str | os.PathLike, window: str = "", max_pixels: int = 0) -> np.ndarray:
    """One single-frame DICOM image as uint8 (height, width, 1), or (height, width, 3) for
    colour, displayed as a reader sees it, through pydicom's own pipeline.

    Grayscale: stored values go through `apply_modality_lut` (RescaleSlope/RescaleIntercept, or
    a Modality LUT Sequence), then `apply_voi_lut`: the file's VOI LUT Sequence, else its
    WindowCenter/WindowWidth with its VOILUTFunction (LINEAR, LINEAR_EXACT or SIGMOID); a named
    preset (WINDOW_PRESETS) replaces the file's VOI with a LINEAR window; a file with neither
    is stretched over its own range. The VOI output is mapped to 0..255 over the range the VOI
    can produce. MONOCHROME1 (bright means low values) is inverted so bone is always bright.
    Colour (RGB, YBR_* which pydicom decodes to RGB, PALETTE COLOR through its lookup table)
    is already display values: DICOM applies neither rescale nor window to it. Multi-frame
    files are refused from the header, before any frame is decoded. A rescale or window value
    that is not a finite number, or that pydicom cannot apply (a LINEAR width under 1, an
    unknown VOILUTFunction), is a reject with its reason (a preset does not read the file's
    window).
    """
    dataset = read_header(path)
    if "PixelData" not in dataset:
        raise ImageError(f"{path}: DICOM without pixel data")
    rows, columns = int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))
    frames = int(_header_number(path, dataset, "NumberOfFrames") or 1)
    if frames > 1:
        raise ImageError(
            f"{path}: multi-frame DICOM ({frames} frames of {columns} x {rows}, modality "
            f"{dataset.get('Modality', 'unknown')}); the app reads single-frame images: export "
            "the frames you need as single files"
        )
    if max_pixels and rows * columns > max_pixels:
        raise ImageError(
            f"{path}: image is {columns} x {rows} = {rows * columns:,} pixels, over the limit "
            f"of {max_pixels:,}; refused without decoding"
        )
    try:
        pixels = dataset.pixel_array
        photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if photometric == "PALETTE COLOR":
            pixels = apply_color_lut(pixels, dataset)
    except Exception as exc:  # pydicom raises many types for missing codecs and short data
        raise ImageError(
            f"{path}: DICOM pixel data cannot be decoded ({_first_line(exc)})"
        ) from exc
    if pixels.size == 0:
        raise ImageError(f"{path}: DICOM image has no pixels")
    if pixels.ndim == 3 and pixels.shape[-1] == 3:
        return _colour_to_uint8(pixels, dataset)
    if pixels.ndim != 2:
        raise ImageError(f"{path}: expected one 2-D frame, got pixel array {pixels.shape}")
    values = _rescaled(path, pixels, dataset)
    scaled = displayed(path, dataset, window, values)
    if photometric == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.round(scaled).astype(np.uint8)[..., None]


def _rescaled(path, pixels: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """Stored values through the modality LUT (or RescaleSlope/RescaleIntercept), checked."""
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        _header_number(path, dataset, keyword)
    try:
        values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    except (ValueError, TypeError, KeyError, IndexError) as exc:  # a broken Modality LUT
        raise ImageError(
            f"{path}: DICOM modality LUT cannot be applied ({_first_line(exc)})"
        ) from exc
    if not np.isfinite(values).all():
        raise ImageError(f"{path}: DICOM rescaled pixel values are not finite")
    return values


def _header_number(path, dataset: pydicom.Dataset, keyword: str) -> float | None:
    """The (first) value of a numeric header element, None when absent; ImageError naming the
    element when it is not a finite number (pydicom keeps such a value as text)."""
    value = dataset.get(keyword)
    if isinstance(value, pydicom.multival.MultiValue):
        value = value[0] if len(value) else None
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ImageError(
            f"{path}: DICOM {keyword} {str(value)[:40]!r} is not a finite number; fix the header"
            + (" or train with data.window set to a preset" if "Window" in keyword else "")
        )
    return number


def _colour_to_uint8(pixels: np.ndarray, dataset: pydicom.Dataset) -> np.ndarray:
    """RGB display values as uint8: 8-bit as stored, wider samples scaled down to 8 bits."""
    if pixels.dtype == np.uint8:
        return pixels
    # A palette's entries are 16-bit whatever BitsStored says; stored RGB uses BitsStored.
    palette = str(dataset.get("PhotometricInterpretation", "")).upper() == "PALETTE COLOR"
    bits = 16 if palette else int(dataset.get("BitsStored", 8) or 8)
    top = float(2**bits - 1)
    return np.round(np.clip(pixels.astype(np.float64) / top, 0.0, 1.0) * 255.0).astype(np.uint8)


def is_colour(path: str | os.PathLike) -> bool:
    """True when the file's header says its pixels are colour (read without the pixels)."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return False  # rejected with its reason when decoded
    photometric = str(dataset.get("PhotometricInterpretation", "")).upper()
    return int(dataset.get("SamplesPerPixel", 1) or 1) == 3 or photometric == "PALETTE COLOR"


def read_header(path: str | os.PathLike) -> pydicom.Dataset:
    """The parsed file, or ImageError naming why it is not a usable DICOM file."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError as exc:
        raise ImageError(f"{path}: not a DICOM file ({_first_line(exc)})") from exc
    except Exception as exc:  # truncated or corrupt data elements
        raise ImageError(f"{path}: corrupt DICOM file ({_first_line(exc)})") from exc


def patient_id(path: str | os.PathLike) -> str:
    """The file's PatientID ('' when absent), read without the pixel data."""
    try:
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return ""
    return str(dataset.get("PatientID", "") or "")


def displayed(path, dataset: pydicom.Dataset, preset: str, values: np.ndarray) -> np.ndarray:
    """Modality values -> display values 0..255 (float) through pydicom's `apply_voi_lut`.

    The VOI's output range depends on BitsStored, the rescale and the LUT, so it is measured
    by putting the extremes of the VOI's own input through it: the same pydicom code decides
    both, and the result spans 0..255 whatever the file's bit depth.
    """
    voi = _preset_dataset(dataset, preset) if preset else dataset
    if not preset:
        for keyword in ("WindowCenter", "WindowWidth"):
            _header_number(path, dataset, keyword)
    if voi.get("VOILUTSequence"):
        # The LUT's entries are what it displays: a 12-bit LUT in a 16-bit descriptor (common
        # in real files) would look dark if scaled by the descriptor's nominal bit depth.
        descriptor = voi.VOILUTSequence[0].LUTDescriptor
        domain = np.arange(descriptor[1], descriptor[1] + (descriptor[0] or 2**16))
        values = np.round(values).astype(np.int64)
    elif "WindowCenter" in voi and "WindowWidth" in voi:
        domain = np.array([-1e300, 1e300])  # LINEAR and SIGMOID reach both ends there
    else:  # no VOI in the file: its own range
        low, high = float(values.min()), float(values.max())
        return (values - low) / max(high - low, 1e-9) * 255.0
    try:
        with np.errstate(over="ignore"):  # SIGMOID at the extremes: exp overflows to its limit
            shown = np.asarray(apply_voi_lut(values, voi), dtype=np.float64)
            reach = np.asarray(apply_voi_lut(domain, voi), dtype=np.float64)
    except (ValueError, TypeError, KeyError, IndexError, NotImplementedError) as exc:
        raise ImageError(
            f"{path}: DICOM VOI LUT / window cannot be applied ({_first_line(exc)})"
            + ("; fix the header or train with data.window set to a preset" if not preset else "")
        ) from exc
    low, high = float(reach.min()), float(reach.max())
    if not (np.isfinite(shown).all() and high > low):
        raise ImageError(f"{path}: DICOM VOI LUT / window maps every pixel to one value")
    return np.clip((shown - low) / (high - low), 0.0, 1.0) * 255.0


def _preset_dataset(dataset: pydicom.Dataset, preset: str) -> pydicom.Dataset:
    """The header elements windowing reads, with the named preset as a LINEAR window in place
    of the file's VOI (its LUT, function and window are left out)."""
    voi = pydicom.Dataset()
    for keyword in (
        "PhotometricInterpretation",
        "BitsStored",
        "PixelRepresentation",
        "RescaleSlope",
        "RescaleIntercept",
        "ModalityLUTSequence",
    ):
        if keyword in dataset:
            setattr(voi, keyword, dataset.get(keyword))
    voi.PhotometricInterpretation = "MONOCHROME2"  # inversion is applied after the VOI
    voi.BitsStored = int(voi.get("BitsStored", 16) or 16)
    voi.PixelRepresentation = int(voi.get("PixelRepresentation", 0) or 0)
    voi.WindowCenter, voi.WindowWidth = WINDOW_PRESETS[preset]
    return voi


def write_dicom(
    path: str | os.PathLike,
    pixels: np.ndarray,
    patient: str,
    *,
    photometric: str = "MONOCHROME2",
    slope: float = 1.0,
    intercept: float = 0.0,
    window: tuple[float, float] | None = None,
    pixel_data: bool = True,
    voi_function: str = "",
    voi_lut: np.ndarray | None = None,
) -> Path:
    """A minimal valid single-frame DICOM file (explicit VR little endian) with pydicom.

    `pixels` are the stored uint16 values; `pixel_data=False` leaves the image out (a file a
    reader must reject). `voi_function` sets VOILUTFunction (LINEAR_EXACT, SIGMOID) and
    `voi_lut` a VOI LUT Sequence of 16-bit entries for stored values 0, 1, 2, ...
    """
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from shared.io import atomic_path

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.PatientID = patient
    dataset.Modality = "DX"
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = photometric
    pixels = np.asarray(pixels, dtype=np.uint16)
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelRepresentation = 0
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    if voi_function:
        dataset.VOILUTFunction = voi_function
    if voi_lut is not None:
        item = pydicom.Dataset()
        # Both tags have ambiguous VRs (US/SS, US/OW): say which, or pydicom cannot write them.
        item.add_new("LUTDescriptor", "US", [len(voi_lut), 0, 16])
        item.add_new("LUTData", "US", [int(v) for v in voi_lut])
        dataset.VOILUTSequence = pydicom.Sequence([item])
    if pixel_data:
        dataset.PixelData = pixels.tobytes()
    path = Path(path)
    with atomic_path(path, suffix=".dcm") as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return path


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
