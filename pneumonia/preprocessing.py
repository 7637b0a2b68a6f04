"""Decode an upload and turn it into the model's input.

Intensity convention (the one place it is written down; :func:`check_model_input` enforces it):

    The network eats ``float32`` arrays of shape ``(N, S, S, 1)`` with values in ``[0, 1]``:
    one grayscale channel, 0 = black (air on a standard film), 1 = white (bone), the full
    range of the source's sample type mapped linearly onto ``[0, 1]`` (8-bit: ``v / 255``;
    16-bit containers: ``v / (2**b - 1)`` with ``b`` the smallest of 10, 12, 14 and 16 bits
    that holds the image's largest value, because detectors store 10-14-bit data in 16-bit
    files and a 12-bit film read as ``v / 65535`` would fill only 1/16 of the range). DICOM is
    the exception, because its stored values are not meant to be
    shown as they are: the modality LUT and the VOI transform (VOI LUT, else window) are applied
    and the VOI output range is mapped onto ``[0, 1]`` (the image's own min..max when the file has
    no VOI transform); MONOCHROME1 is inverted (:mod:`pneumonia.dicom`). ``S`` is
    ``metadata.input_size``. Films are squashed to a square (no letterbox) because the training
    films were stored that way.

The network standardises each image itself (zero mean, unit variance), so the absolute scale of
that range matters little to its answer (its standardisation has a small epsilon, 1e-3 in
variance units, which is why a film must still span most of ``[0, 1]``).

Everything here is a pure function of its arguments: no model, no global state.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import NamedTuple, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pneumonia.dicom import (  # MAX_PIXELS: the one pixel cap, defined beside the lower decoder
    MAX_PIXELS,
    DicomHeader,
    decode_dicom,
    has_dicom_magic,
    has_dicom_name,
    looks_like_bare_dicom,
    refuse_oversized,
)
from pneumonia.errors import InvalidImageError

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

# Smaller than this there is nothing to diagnose.
MIN_SIDE = 32
# A frontal chest film is roughly square; a 1:4 sliver is not one.
MAX_ASPECT_RATIO = 4.0
# The raster formats Pillow may try (DICOM is read by pneumonia.dicom; "JPEG" includes MPO). The
# whitelist keeps magic-less formats (TGA ...) from claiming random bytes, and formats that need
# external programs (EPS via Ghostscript) away from untrusted uploads. GIF is in it so that an
# animation gets its own message.
PILLOW_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF", "PPM", "JPEG2000")


class Film(NamedTuple):
    """A decoded upload: its grayscale pixels, how colourful the original was, and what a DICOM
    header said it is.

    Attributes:
        gray: ``float32 (H, W)`` in ``[0, 1]`` (the intensity convention above).
        colourfulness: mean chroma of the original, ``max(R, G, B) - min(R, G, B)`` over the
            full range, in ``[0, 1]``; 0 for grayscale sources. A chest film has none.
        header: modality, body part, view and age group from a DICOM file
            (:class:`pneumonia.dicom.DicomHeader`); ``None`` for every other format.
    """

    gray: np.ndarray
    colourfulness: float
    header: Optional[DicomHeader] = None


def read_image(source: ImageSource) -> np.ndarray:
    """Decode an image into grayscale floats: ``read_film(source).gray``.

    Args:
        source: see :func:`read_film`.

    Returns:
        ``float32`` array of shape ``(H, W)`` with values in ``[0, 1]``.

    Raises:
        InvalidImageError: see :func:`read_film`.
    """
    return read_film(source).gray


def read_film(source: ImageSource, name: Optional[str] = None) -> Film:
    """Decode an image from a path, bytes, PIL image or numpy array into grayscale floats.

    Files and bytes may be PNG, JPEG, TIFF, BMP, WebP, GIF, PGM, JPEG 2000 or DICOM (see
    :func:`decode_bytes`). EXIF orientation is applied. Modes 1, L, LA, P, RGB, RGBA, CMYK, I,
    I;16 and F are accepted; colour is reduced to luminance (ITU-R 601), alpha is dropped.

    Args:
        source: a file path, the file's bytes, a ``PIL.Image.Image``, or a numpy array of shape
            ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (uint8, uint16 or float in
            ``[0, 1]``).
        name: what to call bytes in error messages and which extension to read them by (e.g. an
            archive member's file name); default ``"the upload"``. A path is called by its file name.

    Returns:
        A :class:`Film`: ``float32 (H, W)`` grayscale in ``[0, 1]`` and the source's colourfulness.

    Raises:
        InvalidImageError: the input is empty, not an image, truncated, animated, multi-frame,
            colour DICOM, too large, too small or of a shape no chest film has.
    """
    if isinstance(source, np.ndarray):
        return Film(_check_shape(array_to_gray(source)), array_colourfulness(source))
    if isinstance(source, Image.Image):
        return Film(_check_shape(pil_to_gray(source)), pil_colourfulness(source))
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        name = name or "the upload"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = path.name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InvalidImageError(f"File not found: {name}.") from None
        except IsADirectoryError:
            raise InvalidImageError(f"{name} is a folder, not an image file.") from None
        except OSError as exc:
            raise InvalidImageError(f"Could not read {name}: {exc.strerror}.") from None
    else:
        raise InvalidImageError(
            f"Unsupported input type {type(source).__name__}: give a path, bytes, PIL image or array."
        )
    film = decode_film(data, name)
    return film._replace(gray=_check_shape(film.gray))


def decode_bytes(data: bytes, name: str = "the upload") -> np.ndarray:
    """Decode an encoded image file into grayscale floats: ``decode_film(data, name).gray``."""
    return decode_film(data, name).gray


def decode_film(data: bytes, name: str = "the upload") -> Film:
    """Decode an encoded image file (PNG, JPEG, TIFF, BMP, WebP, GIF, PGM, JPEG 2000 or DICOM).

    DICOM is recognised by the ``DICM`` magic at byte 128; files named ``.dcm`` / ``.dicom`` (or
    starting like a DICOM data set) that Pillow cannot read are also tried as DICOM without the
    preamble. See :mod:`pneumonia.dicom` for how DICOM values become grayscale.

    Args:
        data: the file's bytes.
        name: how to call the file in error messages (the file name; never a patient detail).

    Returns:
        A :class:`Film` (DICOM films are grayscale: colour DICOM is refused).

    Raises:
        InvalidImageError: empty, unreadable, truncated, animated, multi-frame or oversized input.
    """
    if not data:
        raise InvalidImageError(f"{name} is empty (0 bytes).")
    if has_dicom_magic(data):
        return _dicom_film(data, name)
    try:
        return _decode_with_pillow(data, name)
    except _NotAnImage:
        if has_dicom_name(name) or looks_like_bare_dicom(data):
            try:
                return _dicom_film(data, name)
            except InvalidImageError:
                if has_dicom_name(name):
                    raise
        head = data[:1024].lstrip().lower()
        if head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) and b"<svg" in head:
            raise InvalidImageError(
                f"{name} is an SVG drawing, not a photograph or scan of a film "
                "(use PNG, JPEG, TIFF, BMP, WebP or DICOM)."
            ) from None
        raise InvalidImageError(
            f"{name} is not an image format this app can read "
            "(use PNG, JPEG, TIFF, BMP, WebP or DICOM)."
        ) from None


def _dicom_film(data: bytes, name: str) -> Film:
    gray, header = decode_dicom(data, name, MAX_PIXELS)
    return Film(gray, 0.0, header)


class _NotAnImage(Exception):
    """Pillow recognised no (allowed) format in the bytes."""


def _decode_with_pillow(data: bytes, name: str) -> Film:
    """Decode ``data`` with Pillow, restricted to :data:`PILLOW_FORMATS`.

    Raises:
        _NotAnImage: no allowed format recognised (the caller may still try DICOM).
        InvalidImageError: a recognised image that is damaged, animated or oversized.
    """
    with warnings.catch_warnings():
        # Corrupt files make Pillow warn ("Corrupt EXIF data" ...) before failing or coping.
        warnings.simplefilter("ignore", UserWarning)
        # Pillow warns, then raises, on huge canvases; make both an error we can word.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as image:
                refuse_oversized(*image.size, name, MAX_PIXELS)
                # MPO (a JPEG with extra pictures, as phones write) is read as its first picture.
                if image.format != "MPO" and getattr(image, "n_frames", 1) > 1:
                    raise InvalidImageError(
                        f"{name} has {image.n_frames} frames (an animation or a stack); "
                        "upload a single frontal film."
                    )
                image.load()
                return Film(pil_to_gray(image), pil_colourfulness(image))
        except InvalidImageError:
            raise
        except UnidentifiedImageError:
            raise _NotAnImage() from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InvalidImageError(
                f"{name} declares more pixels than any X-ray; it was not opened."
            ) from None
        except MemoryError:
            raise InvalidImageError(f"{name} is too large to decode.") from None
        except Exception as exc:
            # Pillow reports truncated and corrupt files as OSError, SyntaxError, ValueError,
            # EOFError, struct.error, IndexError ...: on bytes from outside, all mean "damaged".
            raise InvalidImageError(f"{name} is damaged or truncated and cannot be decoded.") from exc


EXIF_ORIENTATION = 0x0112


def pil_to_gray(image: Image.Image) -> np.ndarray:
    """Convert a PIL image of any common mode to grayscale floats, honouring EXIF orientation.

    Args:
        image: a loaded PIL image.

    Returns:
        ``float32`` array of shape ``(H, W)`` in ``[0, 1]``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like
            # Only films with an orientation tag need transposing; exif_transpose would
            # otherwise still copy the whole film.
            if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(image)
    except Exception:  # a malformed EXIF block must not stop an otherwise good film
        pass
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image).astype(np.float64)
        if values.min() < 0:
            raise InvalidImageError("The image holds negative pixel values; it is not a radiograph.")
        return _scale_integer(values, np.uint16)
    if mode == "F":
        return array_to_gray(np.asarray(image).astype(np.float32))
    if mode in ("LA", "La"):
        image = image.getchannel(0)
    elif mode != "L":
        # P, RGB, RGBA, CMYK, YCbCr, 1 ...: go through RGB so palette and CMYK are resolved,
        # then take ITU-R 601 luminance.
        try:
            image = image.convert("RGB").convert("L")
        except (ValueError, OSError):
            raise InvalidImageError(
                f"Images in the {mode} colour mode are not supported; save the film as grayscale "
                "or RGB."
            ) from None
    # np.asarray(image, dtype=float32) converts element by element through the array interface
    # (4.7 ms for a 1-megapixel film); taking the uint8 array first and converting it in place
    # gives the same bits in 0.2 ms.
    gray = np.asarray(image).astype(np.float32)
    gray /= np.float32(255.0)
    return gray


def pil_colourfulness(image: Image.Image, max_side: int = 256) -> float:
    """Mean chroma ``max(R,G,B) - min(R,G,B)`` of a PIL image in ``[0, 1]``; 0 for gray modes.

    Measured on a thumbnail of at most ``max_side`` pixels: colour is a global property and the
    full-resolution conversion would cost more than the network.
    """
    if image.mode in ("1", "L", "LA", "La", "I", "F") or image.mode.startswith("I;16"):
        return 0.0
    thumb = image.copy()
    thumb.thumbnail((max_side, max_side))
    try:
        r, g, b = (np.asarray(plane, dtype=np.int16) for plane in thumb.convert("RGB").split())
    except (ValueError, OSError):
        return 0.0
    # Per-plane maximum and minimum: the same values as max/min over a trailing RGB axis, ~7x faster.
    return float((np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)).mean() / 255.0)


def array_colourfulness(array: np.ndarray) -> float:
    """Mean chroma of an ``(H, W, 3|4)`` array in ``[0, 1]`` of its type's range; 0 for grayscale."""
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[-1] < 3:
        return 0.0
    step = max(1, max(array.shape[:2]) // 256)
    rgb = array[::step, ::step, :3].astype(np.float64)
    full_scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype, 1.0)
    return float((rgb.max(axis=2) - rgb.min(axis=2)).mean() / full_scale)


def array_to_gray(array: np.ndarray) -> np.ndarray:
    """Convert a numpy image to grayscale floats.

    Args:
        array: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; uint8 (0-255),
            uint16 (0-65535), bool, or float already in ``[0, 1]``.

    Returns:
        ``float32`` array of shape ``(H, W)`` in ``[0, 1]``.

    Raises:
        InvalidImageError: wrong rank, channel count, dtype or range.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        # ITU-R 601 luminance, the weights Pillow uses for convert("L"); keep the source scale.
        luminance = array[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return array_to_gray(luminance.astype(np.float32)) if np.issubdtype(array.dtype, np.floating) \
            else _scale_integer(luminance, array.dtype)
    if array.ndim != 2:
        raise InvalidImageError(
            f"Expected a 2-D grayscale or an RGB(A) image array, got shape {tuple(np.shape(array))}."
        )
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype in (np.uint8, np.uint16):
        return _scale_integer(array, array.dtype)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise InvalidImageError("The image array contains NaN or infinite values.")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise InvalidImageError("A float image array must hold values in [0, 1].")
        return array.astype(np.float32)
    raise InvalidImageError(
        f"Unsupported image array dtype {array.dtype}: use uint8, uint16 or float in [0, 1]."
    )


def container_full_scale(max_value: float) -> float:
    """Full-scale value of a 16-bit container: ``2**b - 1`` for the smallest ``b`` in
    (10, 12, 14, 16) with ``max_value <= 2**b - 1``."""
    for bits in (10, 12, 14):
        if max_value <= 2**bits - 1:
            return float(2**bits - 1)
    return 65535.0


def _scale_integer(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Map uint8 / uint16 sample values (possibly already cast to float) onto [0, 1].

    uint8 is divided by 255; uint16 by its container's effective full scale
    (:func:`container_full_scale`).
    """
    if np.dtype(dtype) == np.uint8:
        return (np.asarray(values, dtype=np.float32) / 255.0).clip(0.0, 1.0)
    if np.dtype(dtype) == np.uint16:
        values = np.asarray(values, dtype=np.float32)
        full_scale = container_full_scale(float(values.max()) if values.size else 0.0)
        return (values / full_scale).clip(0.0, 1.0)
    raise InvalidImageError(
        f"Unsupported image array dtype {np.dtype(dtype)}: use uint8, uint16 or float in [0, 1]."
    )


def _check_shape(gray: np.ndarray) -> np.ndarray:
    height, width = gray.shape
    if min(height, width) < MIN_SIDE:
        raise InvalidImageError(
            f"The image is {width}x{height} pixels; a chest film needs at least "
            f"{MIN_SIDE} pixels on each side."
        )
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InvalidImageError(
            f"The image is {width}x{height} pixels, far from the near-square shape of a frontal "
            "chest film."
        )
    return gray


def resize_image(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a grayscale image to ``size x size`` (aspect squashed, area averaging when shrinking).

    Args:
        gray: ``float32`` array ``(H, W)`` in ``[0, 1]``.
        size: output side in pixels.

    Returns:
        ``float32`` array ``(size, size)`` in ``[0, 1]``.
    """
    import cv2  # imported here so that importing the package stays light

    height, width = gray.shape
    shrinking = size < height or size < width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(gray, dtype=np.float32), (size, size), interpolation=interpolation)
    return np.clip(out, 0.0, 1.0)


def shrink_to_fit(gray: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink a film, keeping its aspect ratio, so its longer side is at most ``max_side`` (for display).

    Args:
        gray: float array ``(H, W)`` in ``[0, 1]``.
        max_side: longest side of the result in pixels.

    Returns:
        ``gray`` itself when it already fits, else a ``float32`` area-averaged copy.
    """
    import cv2

    height, width = gray.shape
    if max(height, width) <= max_side:
        return gray
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(np.asarray(gray, dtype=np.float32), size, interpolation=cv2.INTER_AREA)


def preprocess_image(source: ImageSource, input_size: int) -> np.ndarray:
    """Decode, convert to grayscale, resize and normalise one image for the model.

    Args:
        source: anything :func:`read_image` accepts.
        input_size: the model's input side, from ``ModelMetadata.input_size``.

    Returns:
        ``float32`` batch of shape ``(1, input_size, input_size, 1)`` in ``[0, 1]``.

    Raises:
        InvalidImageError: the input cannot be read as a film.
    """
    gray = read_image(source)
    return to_batch(resize_image(gray, input_size))


def to_batch(gray: np.ndarray) -> np.ndarray:
    """Add batch and channel axes: ``(H, W)`` -> ``(1, H, W, 1)`` float32."""
    return np.asarray(gray, dtype=np.float32)[np.newaxis, :, :, np.newaxis]


def check_model_input(batch: np.ndarray, input_size: int) -> None:
    """Raise ``ValueError`` unless ``batch`` follows the intensity convention of this module.

    :meth:`pneumonia.inference.Predictor.run_network`, the one place the network is called,
    checks every batch with it (a min and a max: ~0.1 ms for 64 films at 160 px).

    Args:
        batch: candidate model input.
        input_size: expected spatial side.

    Raises:
        ValueError: not a numpy array, wrong dtype or shape, NaN or infinite values, or values
            outside ``[0, 1]`` (a programming error: decoding never makes such a batch).
    """
    if not isinstance(batch, np.ndarray):
        raise ValueError(f"model input must be a numpy array, got {type(batch).__name__}")
    if batch.dtype != np.float32:
        raise ValueError(f"model input must be float32, got {batch.dtype}")
    if batch.ndim != 4 or batch.shape[1:] != (input_size, input_size, 1):
        raise ValueError(f"model input must be (N, {input_size}, {input_size}, 1), got {batch.shape}")
    # NaN fails both comparisons, so one min and one max also catch it (and infinities).
    if batch.size and not (float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0):
        raise ValueError("model input must be finite and lie in [0, 1]")
