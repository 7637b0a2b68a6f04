"""Read a DICOM radiograph into the grayscale convention of :mod:`pneumonia.preprocessing`.

The pixel values go through the DICOM display pipeline in its standard order:

1. decode the stored values (compressed transfer syntaxes through pydicom's pixel-data plugins:
   RLE natively; JPEG, JPEG-LS and JPEG 2000 through ``pylibjpeg-libjpeg`` / ``pylibjpeg-openjpeg``,
   which pydicom finds by itself when they are installed);
2. the modality LUT (Rescale Slope / Intercept, or a Modality LUT Sequence);
3. the VOI transform: the first VOI LUT Sequence item if there is one, else the first Window
   Centre / Width pair; the output range of that transform (the LUT's smallest to largest entry,
   or the window's output range) is mapped linearly onto ``[0, 1]``. Without a VOI transform (or
   with an invalid one) the image's own minimum..maximum is mapped onto ``[0, 1]``;
4. ``MONOCHROME1`` films (where the smallest value is displayed white) are inverted, so the result
   always reads 0 = black (air), 1 = white (bone), like every other input.

Only a monotone linear rescaling of what a DICOM viewer would show is therefore applied; the
network standardises each image itself, so that is all that matters to its answer.

Privacy: only the technical elements needed to decode the pixels are parsed (``specific_tags``);
patient, study and device elements are never read into memory, and no element value is ever put
into an error message, a warning or a log record. Messages quote only whitelisted enumerated
values (photometric interpretation, transfer syntax names from pydicom's dictionary) and counts.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from pneumonia.errors import InvalidImageError

DICOM_MAGIC = b"DICM"
MAGIC_OFFSET = 128
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
# Refuse to decode more pixels than this (a compressed DICOM can declare a huge canvas).
DEFAULT_MAX_PIXELS = 50_000_000

# The only elements read from the file: what decoding and the display pipeline need.
_TECHNICAL_TAGS = [
    0x00280002,  # Samples per Pixel
    0x00280004,  # Photometric Interpretation
    0x00280006,  # Planar Configuration
    0x00280008,  # Number of Frames
    0x00280010,  # Rows
    0x00280011,  # Columns
    0x00280100,  # Bits Allocated
    0x00280101,  # Bits Stored
    0x00280102,  # High Bit
    0x00280103,  # Pixel Representation
    0x00281050,  # Window Center
    0x00281051,  # Window Width
    0x00281052,  # Rescale Intercept
    0x00281053,  # Rescale Slope
    0x00281054,  # Rescale Type
    0x00281056,  # VOI LUT Function
    0x00283000,  # Modality LUT Sequence
    0x00283010,  # VOI LUT Sequence
    0x7FE00001,  # Extended Offset Table
    0x7FE00002,  # Extended Offset Table Lengths
    0x7FE00008,  # Float Pixel Data
    0x7FE00009,  # Double Float Pixel Data
    0x7FE00010,  # Pixel Data
]
_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
# Enumerated values of Photometric Interpretation (safe to quote: they cannot carry personal data).
_KNOWN_PHOTOMETRIC = _GRAYSCALE + (
    "PALETTE COLOR", "RGB", "HSV", "ARGB", "CMYK", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_422",
    "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "XYB",
)


def has_dicom_magic(data: bytes) -> bool:
    """Whether ``data`` carries the DICOM Part 10 preamble magic ``b"DICM"`` at byte 128.

    Args:
        data: the file's bytes.

    Returns:
        ``True`` for a DICOM Part 10 file (with preamble), else ``False``.
    """
    return data[MAGIC_OFFSET:MAGIC_OFFSET + len(DICOM_MAGIC)] == DICOM_MAGIC


def has_dicom_name(name: str) -> bool:
    """Whether a file name has a DICOM extension (``.dcm``, ``.dicom``, ``.dic``; any case)."""
    return str(name).lower().endswith(DICOM_SUFFIXES)


def looks_like_bare_dicom(data: bytes) -> bool:
    """Whether ``data`` may be a DICOM data set written without the 128-byte preamble.

    Such files start directly with a little-endian element of group 0x0002 (file meta) or 0x0008
    (identifying elements, the first group of every image IOD).

    Args:
        data: the file's bytes.

    Returns:
        ``True`` if it is worth trying to parse ``data`` as a preamble-less DICOM data set.
    """
    return len(data) >= 8 and data[:2] in (b"\x02\x00", b"\x08\x00")


def read_dicom(data: bytes, name: str = "the upload", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a single-frame grayscale DICOM image into grayscale floats.

    Args:
        data: the file's bytes (DICOM Part 10 with or without the 128-byte preamble).
        name: how to call the file in error messages (the file name; never a DICOM value).
        max_pixels: refuse images with more pixels than this before decoding them.

    Returns:
        ``float32`` array of shape ``(Rows, Columns)`` with values in ``[0, 1]``; 0 = black (air),
        1 = white (bone) whatever the photometric interpretation.

    Raises:
        InvalidImageError: not DICOM, no pixel data, several frames, colour, oversized, damaged
            pixel data, or a compression no installed plugin decodes. The message never contains
            a value taken from the file.
    """
    if not data:
        raise InvalidImageError(f"{name} is empty (0 bytes).")
    # pydicom warns about odd values; its warnings could quote them, so none may leave this block.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds, has_header = _parse(data, name)
        _check_image_elements(ds, name, max_pixels, has_header)
        pixels = _decode_pixels(ds, name)
        return _to_display_gray(pixels, ds, name)


def _parse(data: bytes, name: str):
    """Parse the technical elements of ``data``.

    Returns:
        ``(dataset, has_header)``: the data set, and whether the file had a file-meta header
        naming its transfer syntax (a genuine DICOM Part 10 file).

    Raises:
        InvalidImageError: the parser failed.
    """
    import pydicom
    from pydicom import uid

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True, specific_tags=list(_TECHNICAL_TAGS))
    except Exception:  # hostile input can make the parser fail in many ways; all mean "unreadable"
        raise InvalidImageError(f"{name} is not a readable DICOM file (it is damaged or truncated).") from None

    # A file without a file-meta header (no preamble) does not say its transfer syntax; take the
    # encoding the parser detected (an uncompressed one: compressed data needs the header).
    try:
        meta = ds.file_meta
        has_header = "TransferSyntaxUID" in meta
        if not has_header:
            implicit, little = ds.original_encoding
            if implicit is None or little is None:
                raise ValueError
            meta.TransferSyntaxUID = (
                uid.ImplicitVRLittleEndian if implicit
                else uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian
            )
    except Exception:
        raise InvalidImageError(f"{name} is not a readable DICOM file (it is damaged or truncated).") from None
    return ds, has_header or has_dicom_magic(data)


def _element_int(ds, keyword: str, default: int | None, name: str) -> int | None:
    """Read an integer element; a present but unparsable value makes the file unreadable."""
    try:
        value = ds.get(keyword, default)
        if value is None or value == "":
            return default
        return int(value)
    except Exception:
        raise InvalidImageError(
            f"{name} is a DICOM file whose image description is damaged; it cannot be decoded."
        ) from None


def _check_image_elements(ds, name: str, max_pixels: int, has_header: bool) -> None:
    """Refuse DICOM files this app cannot use before any pixel is decoded."""
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        if not has_header:
            raise InvalidImageError(
                f"{name} is neither an image nor a DICOM file this app can read "
                "(use PNG, JPEG, TIFF, BMP, WebP or DICOM)."
            )
        raise InvalidImageError(
            f"{name} is a DICOM file without an image (no pixel data); it may be a report, a "
            "structured document or a damaged export. Upload the film itself."
        )
    frames = _element_int(ds, "NumberOfFrames", 1, name)
    if frames is not None and frames > 1:
        raise InvalidImageError(
            f"{name} is a multi-frame DICOM ({frames} frames, e.g. a cine loop or a series); "
            "upload a single frontal chest film."
        )
    try:
        photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    except Exception:
        photometric = ""
    samples = _element_int(ds, "SamplesPerPixel", 1, name)
    if not photometric:
        raise InvalidImageError(
            f"{name} is a DICOM file that does not say how its pixels are to be shown (no "
            "photometric interpretation); it cannot be decoded."
        )
    if photometric not in _GRAYSCALE or samples != 1:
        described = f" ({photometric})" if photometric in _KNOWN_PHOTOMETRIC else ""
        raise InvalidImageError(
            f"{name} is a colour or non-grayscale DICOM image{described}; only grayscale "
            "radiographs (MONOCHROME1 or MONOCHROME2) can be read."
        )
    rows = _element_int(ds, "Rows", None, name)
    columns = _element_int(ds, "Columns", None, name)
    if not rows or not columns or rows < 0 or columns < 0:
        raise InvalidImageError(
            f"{name} is a DICOM file whose image size is missing or zero; it cannot be decoded."
        )
    if rows * columns > max_pixels:
        raise InvalidImageError(
            f"{name} declares {columns}x{rows} pixels, more than any X-ray "
            f"({max_pixels // 1_000_000} megapixels at most)."
        )


def _decode_pixels(ds, name: str) -> np.ndarray:
    """Decode the stored pixel values of a checked data set into a 2-D array."""
    from pydicom.pixels import get_decoder

    syntax = ds.file_meta.TransferSyntaxUID
    if not syntax.is_transfer_syntax:
        raise InvalidImageError(
            f"{name} declares an unknown transfer syntax (pixel encoding); it cannot be decoded."
        )
    if syntax.is_compressed:
        try:
            available = get_decoder(syntax).is_available
        except Exception:  # no decoder is even defined for this transfer syntax
            available = False
        if not available:
            raise InvalidImageError(
                f"{name} is compressed with {syntax.name}, which this installation cannot "
                "decode; export the film uncompressed or as PNG."
            )
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception:
        raise InvalidImageError(
            f"{name} is a DICOM file whose pixel data is damaged or truncated; it cannot be decoded."
        ) from None
    if pixels.ndim != 2:
        raise InvalidImageError(
            f"{name} does not hold a single grayscale image; upload a single frontal chest film."
        )
    if pixels.size == 0:
        raise InvalidImageError(f"{name} holds an empty image.")
    return pixels


def _to_display_gray(pixels: np.ndarray, ds, name: str) -> np.ndarray:
    """Modality LUT, VOI transform and MONOCHROME1 inversion, mapped onto ``[0, 1]``."""
    from pydicom.pixels import apply_modality_lut

    try:
        values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    except Exception:
        raise InvalidImageError(
            f"{name} has a damaged modality LUT (rescale); it cannot be decoded."
        ) from None
    if not np.all(np.isfinite(values)):
        raise InvalidImageError(f"{name} holds invalid (NaN or infinite) pixel values.")

    shown = _apply_voi(values, ds)
    if shown is None:  # no usable VOI transform: the image's own range
        low, high = float(values.min()), float(values.max())
        shown = values
    else:
        shown, low, high = shown

    if high == low:
        gray = np.zeros(shown.shape, dtype=np.float64)
    else:
        # (high - low) is negative for a window with a negative rescale slope: still monotone.
        gray = (shown - low) / (high - low)
    gray = np.clip(gray, 0.0, 1.0)
    if str(ds.PhotometricInterpretation).strip().upper() == "MONOCHROME1":
        gray = 1.0 - gray
    return np.ascontiguousarray(gray, dtype=np.float32)


def _apply_voi(values: np.ndarray, ds):
    """Apply the first VOI LUT, else the first window; ``None`` when neither is usable.

    Returns:
        ``(shown, low, high)``: the transformed float64 values and the output values that stand
        for black and white.
    """
    from pydicom.pixels import apply_voi, apply_windowing

    try:
        sequence = ds.get("VOILUTSequence")
        item = sequence[0] if sequence else None
        if item is not None and "LUTDescriptor" in item and "LUTData" in item:
            entries, first, _bits = (int(v) for v in item.LUTDescriptor)
            entries = entries or 2 ** 16
            # Integer input clipped to the LUT's domain (what the LUT does anyway), so pydicom's
            # unsigned index arithmetic cannot wrap around.
            inputs = np.clip(np.round(values), first, first + entries - 1).astype(np.int64)
            shown = np.asarray(apply_voi(inputs, ds), dtype=np.float64)
            table = np.asarray(apply_voi(np.arange(first, first + entries, dtype=np.int64), ds),
                               dtype=np.float64)
            return shown, float(table.min()), float(table.max())
    except Exception:
        pass  # a broken VOI LUT: fall back to the window, then to the image's range
    try:
        if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            shown = np.asarray(apply_windowing(values, ds), dtype=np.float64)
            # The window's output for inputs far below and above it: the values for black and
            # white (pydicom derives them from the bit depth and the rescale).
            with np.errstate(over="ignore"):
                ends = np.asarray(apply_windowing(np.array([-1e15, 1e15]), ds), dtype=np.float64)
            if np.all(np.isfinite(ends)) and np.all(np.isfinite(shown)):
                return shown, float(ends[0]), float(ends[1])
    except Exception:
        pass  # an invalid window (width < 1, unknown function): use the image's own range
    return None
