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

What the film is: :func:`decode_dicom` also reads four descriptive elements, Modality,
Body Part Examined, View Position and Patient's Age, into a :class:`DicomHeader`, from which
:func:`find_header_refusal` says whether the film is one the model may read (a chest radiograph in
a frontal view). The age is kept only as a band (:func:`age_group`): the exact age never leaves
this module.

Privacy: only the technical elements needed to decode the pixels and those four are parsed
(``specific_tags``); patient, study and device elements are never read into memory, and no element
value is ever put into an error message, a warning or a log record. Messages quote only
whitelisted enumerated values (photometric interpretation, transfer syntax names from pydicom's
dictionary) and counts.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import NamedTuple, Optional

import numpy as np

from pneumonia.errors import InvalidImageError

DICOM_MAGIC = b"DICM"
MAGIC_OFFSET = 128
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
# The largest image any decoder opens (the one definition of this cap, shared with
# pneumonia.preprocessing): a real film is at most ~4300 x 4300 px (18 MP); anything above this
# is refused before it is decoded, which also defuses decompression bombs (a tiny file that
# declares a huge canvas).
MAX_PIXELS = 50_000_000

# What a DICOM header may say for the model to read the film (upper-cased, spaces trimmed).
# Modality: plain radiographs (computed, digital, radiographic); OT (other) and SC (secondary
# capture, e.g. a digitised film) say nothing either way, so the image checks decide.
RADIOGRAPH_MODALITIES = ("", "CR", "DX", "DR", "RG", "OT", "SC")
# Body Part Examined: blank (not recorded) or a chest term.
CHEST_BODY_PARTS = ("", "CHEST", "THORAX", "LUNG", "LUNGS", "TORAX", "TORSO_CHEST")
# View Position values of a lateral or oblique film (DICOM defined terms and common vendor ones).
SIDE_VIEWS = ("LL", "RL", "LAT", "LATERAL", "LLAT", "RLAT", "LATERAL LEFT", "LATERAL RIGHT",
              "RLO", "LLO", "RAO", "LAO", "RPO", "LPO", "OBL", "OBLIQUE")
# Age bands (lower bound in years, label); the first band the age reaches from the top wins.
# 1-5 years is the training films' age range; the other bands are coarse on purpose.
AGE_GROUPS = ((65.0, "65 years and over"), (18.0, "18-64 years"), (6.0, "6-17 years"),
              (1.0, "1-5 years"), (0.0, "under 1 year"))
# The unit is optional: real files often carry a bare number ("062", "62"), which is years.
_AGE_STRING = re.compile(r"(\d{1,3})([DWMY]?)")
_DAYS_PER_UNIT = {"D": 1.0, "W": 7.0, "M": 365.25 / 12.0, "Y": 365.25, "": 365.25}

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
# What the film is: read into a DicomHeader (the age only as a band), never into a message.
_DESCRIPTIVE_TAGS = [
    0x00080060,  # Modality
    0x00101010,  # Patient's Age (kept only as an age group)
    0x00180015,  # Body Part Examined
    0x00185101,  # View Position
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


class DicomHeader(NamedTuple):
    """What a DICOM header says the film is (values upper-cased and trimmed; ``""`` when absent).

    Attributes:
        modality: e.g. ``"DX"``, ``"CR"``, ``"CT"``.
        body_part: Body Part Examined, e.g. ``"CHEST"``, ``"KNEE"``.
        view_position: e.g. ``"PA"``, ``"AP"``, ``"LL"``.
        age_group: the patient's age band (see :data:`AGE_GROUPS`), ``None`` when the file gives
            no readable age. The exact age is never kept.
    """

    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    age_group: Optional[str] = None


class DicomImage(NamedTuple):
    """A decoded DICOM film: ``gray`` ``float32 (Rows, Columns)`` in ``[0, 1]`` and its header facts."""

    gray: np.ndarray
    header: DicomHeader


def read_dicom(data: bytes, name: str = "the upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a single-frame grayscale DICOM image into grayscale floats: ``decode_dicom(...).gray``."""
    return decode_dicom(data, name, max_pixels).gray


def decode_dicom(data: bytes, name: str = "the upload", max_pixels: int = MAX_PIXELS) -> DicomImage:
    """Decode a single-frame grayscale DICOM image into grayscale floats and its header facts.

    Args:
        data: the file's bytes (DICOM Part 10 with or without the 128-byte preamble).
        name: how to call the file in error messages (the file name; never a DICOM value).
        max_pixels: refuse images with more pixels than this before decoding them.

    Returns:
        A :class:`DicomImage`: ``float32`` pixels of shape ``(Rows, Columns)`` in ``[0, 1]``
        (0 = black (air), 1 = white (bone) whatever the photometric interpretation), and the
        :class:`DicomHeader` (modality, body part, view, age group).

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
        return DicomImage(_to_display_gray(pixels, ds, name), _read_header(ds))


def age_group(age_string: str) -> Optional[str]:
    """The age band of a DICOM Age String (``nnnD``, ``nnnW``, ``nnnM`` or ``nnnY``), or of a bare
    number of years (``"062"``, ``"62"``: not the standard's form, but common in real files).

    Args:
        age_string: the element's value, e.g. ``"045Y"``, ``"006M"``, ``"010D"``, ``"002W"``, ``"62"``.

    Returns:
        The label of the first :data:`AGE_GROUPS` band whose lower bound the age reaches (e.g.
        ``"18-64 years"``), or ``None`` when the value is blank or malformed.
    """
    match = _AGE_STRING.fullmatch(str(age_string).strip().upper())
    if match is None:
        return None
    years = int(match.group(1)) * _DAYS_PER_UNIT[match.group(2)] / 365.25
    return next(label for lower, label in AGE_GROUPS if years >= lower)


def find_header_refusal(header: DicomHeader) -> Optional[str]:
    """Why the header says the model must not read this film, or ``None`` when it may.

    Args:
        header: from :func:`decode_dicom`.

    Returns:
        ``"modality"`` (not a plain radiograph, e.g. CT, MR, US), ``"body_part"`` (not the
        chest, e.g. KNEE, HAND) or ``"side_view"`` (a lateral or oblique view), checked in that
        order; ``None`` when each is a chest radiograph value or blank. The keys index
        :data:`pneumonia.notes.UNKNOWN_REASONS`.
    """
    if header.modality not in RADIOGRAPH_MODALITIES:
        return "modality"
    if header.body_part not in CHEST_BODY_PARTS:
        return "body_part"
    if header.view_position in SIDE_VIEWS or "LATERAL" in header.view_position:
        return "side_view"
    return None


def _read_header(ds) -> DicomHeader:
    """The descriptive elements of a parsed data set; unreadable values count as absent."""
    return DicomHeader(_element_text(ds, "Modality"), _element_text(ds, "BodyPartExamined"),
                       _element_text(ds, "ViewPosition"), age_group(_element_text(ds, "PatientAge")))


def _element_text(ds, keyword: str) -> str:
    """A text element upper-cased and trimmed; ``""`` when absent or unreadable."""
    try:
        value = ds.get(keyword, "")
        return "" if value is None else " ".join(str(value).upper().split())
    except Exception:  # a damaged value is treated as a missing one
        return ""


def refuse_oversized(width: int, height: int, name: str, max_pixels: int = MAX_PIXELS) -> None:
    """Raise :class:`InvalidImageError` when an image declares more than ``max_pixels`` pixels."""
    if width * height > max_pixels:
        raise InvalidImageError(
            f"{name} declares {width}x{height} pixels, more than any X-ray "
            f"({max_pixels // 1_000_000} megapixels at most)."
        )


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
        ds = pydicom.dcmread(io.BytesIO(data), force=True, specific_tags=_TECHNICAL_TAGS + _DESCRIPTIVE_TAGS)
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
    refuse_oversized(columns, rows, name, max_pixels)


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
