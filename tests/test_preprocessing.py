"""Decoding and the intensity convention: every Pillow mode, several sizes, EXIF orientation.

Expected values are computed here from the definitions (v / 255, v / 65535, ITU-R 601 luminance,
the naive CMYK -> RGB formula), not by calling the code under test.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from pneumonia.errors import InvalidImageError, PneumoniaError
from pneumonia.preprocessing import (
    check_model_input,
    decode_bytes,
    preprocess_image,
    read_image,
    resize_image,
    to_batch,
)

# One LSB of an 8-bit value, plus slack for Pillow's fixed-point luminance rounding.
TOL_8BIT = 1.0 / 255 + 1e-6
SIZES = [(32, 32), (40, 97), (224, 224), (300, 257), (2048, 2500)]  # (height, width)


def _encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _rng_uint8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an (H, W, 3) array of 0..255 values, as 0..1 floats."""
    rgb = rgb.astype(np.float64)
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 255.0


def _assert_convention(gray: np.ndarray, shape) -> None:
    assert gray.dtype == np.float32
    assert gray.shape == tuple(shape)
    assert float(gray.min()) >= 0.0 and float(gray.max()) <= 1.0


# --- every mode, against an independent computation -------------------------------------------


@pytest.mark.parametrize("shape", SIZES)
def test_mode_L_gradient_is_v_over_255(shape):
    height, width = shape
    values = ((np.arange(height)[:, None] * 7 + np.arange(width)[None, :] * 3) % 256).astype(np.uint8)
    gray = read_image(_encode(Image.fromarray(values, mode="L")))
    _assert_convention(gray, shape)
    np.testing.assert_array_equal(gray, values.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("shape", SIZES)
def test_mode_I16_is_v_over_its_container_full_scale(shape):
    height, width = shape
    values = ((np.arange(height)[:, None] * 131 + np.arange(width)[None, :] * 17) % 65536).astype(np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    gray = read_image(_encode(image))
    _assert_convention(gray, shape)
    # The smallest 2**b - 1 (b = 10, 12, 14, 16) holding the largest value, computed here directly.
    full_scale = next(2.0**b - 1 for b in (10, 12, 14, 16) if values.max() < 2**b)
    np.testing.assert_allclose(gray, values.astype(np.float64) / full_scale, atol=1e-6)


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_16bit_container_is_scaled_by_its_bit_depth(bits):
    """A b-bit film stored in a 16-bit PNG spans [0, 1] like the same film at 8 bits."""
    ramp = np.linspace(0, 2**bits - 1, 64 * 64).reshape(64, 64).round().astype(np.uint16)
    gray = read_image(_encode(Image.fromarray(ramp)))
    assert gray.max() == pytest.approx(1.0) and gray.min() == 0.0
    np.testing.assert_allclose(gray, ramp / (2.0**bits - 1), atol=1e-6)


@pytest.mark.parametrize("shape", SIZES[:4])
def test_mode_RGB_is_itu601_luminance(shape):
    rgb = _rng_uint8(shape + (3,), seed=1)
    gray = read_image(_encode(Image.fromarray(rgb, mode="RGB")))
    _assert_convention(gray, shape)
    np.testing.assert_allclose(gray, _luminance(rgb), atol=TOL_8BIT)


@pytest.mark.parametrize("shape", SIZES[:4])
def test_mode_RGBA_drops_alpha(shape):
    rgba = _rng_uint8(shape + (4,), seed=2)
    gray = read_image(_encode(Image.fromarray(rgba, mode="RGBA")))
    _assert_convention(gray, shape)
    np.testing.assert_allclose(gray, _luminance(rgba[..., :3]), atol=TOL_8BIT)


@pytest.mark.parametrize("shape", SIZES[:4])
def test_mode_LA_drops_alpha(shape):
    la = _rng_uint8(shape + (2,), seed=3)
    gray = read_image(_encode(Image.fromarray(la, mode="LA")))
    _assert_convention(gray, shape)
    np.testing.assert_array_equal(gray, la[..., 0].astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("shape", SIZES[:4])
def test_mode_P_is_luminance_of_the_palette_colour(shape):
    palette = _rng_uint8((256, 3), seed=4)
    indices = _rng_uint8(shape, seed=5)
    image = Image.fromarray(indices, mode="L")
    image = image.convert("P")
    image.putpalette(palette.flatten().tolist())
    image.putdata(indices.flatten().tolist())
    gray = read_image(_encode(image))
    _assert_convention(gray, shape)
    np.testing.assert_allclose(gray, _luminance(palette[indices]), atol=TOL_8BIT)


@pytest.mark.parametrize("shape", SIZES[:4])
def test_mode_CMYK_goes_through_naive_rgb(shape):
    cmyk = _rng_uint8(shape + (4,), seed=6)
    image = Image.frombytes("CMYK", (shape[1], shape[0]), cmyk.tobytes())
    gray = read_image(_encode(image, "TIFF"))  # TIFF keeps CMYK losslessly
    _assert_convention(gray, shape)
    c, m, y, k = (cmyk[..., i].astype(np.float64) for i in range(4))
    rgb = np.stack([(255 - c) * (255 - k), (255 - m) * (255 - k), (255 - y) * (255 - k)], -1) / 255
    np.testing.assert_allclose(gray, _luminance(rgb), atol=1.5 / 255)


@pytest.mark.parametrize("shape", SIZES[:4])
def test_mode_1_is_zero_or_one(shape):
    bits = _rng_uint8(shape, seed=7) > 127
    image = Image.fromarray(bits.astype(np.uint8) * 255, mode="L").convert("1", dither=Image.Dither.NONE)
    gray = read_image(_encode(image))
    _assert_convention(gray, shape)
    np.testing.assert_array_equal(gray, bits.astype(np.float32))


def test_mode_I_32bit_is_v_over_65535():
    values = (np.arange(64 * 64).reshape(64, 64) * 11 % 65536).astype(np.int32)
    image = Image.fromarray(values)
    assert image.mode == "I"
    gray = read_image(image)
    np.testing.assert_allclose(gray, values / 65535.0, atol=1e-6)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "PPM"])
def test_lossless_formats_keep_8bit_values(fmt):
    values = _rng_uint8((50, 61), seed=8)
    gray = decode_bytes(_encode(Image.fromarray(values, mode="L"), fmt))
    np.testing.assert_array_equal(gray, values.astype(np.float32) / np.float32(255))


# --- numpy and PIL inputs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((40, 40), 51, np.uint8), 0.2),
        (np.full((40, 40), 52428, np.uint16), 0.8),
        (np.full((40, 40), 819, np.uint16), 819 / 1023),  # 10-bit data in a 16-bit array
        (np.full((40, 40), 0.2, np.float64), 0.2),
        (np.full((40, 40, 1), 51, np.uint8), 0.2),
        (np.ones((40, 40), bool), 1.0),
        (np.dstack([np.full((40, 40), 100, np.uint8)] * 3), 100 / 255),
        (np.dstack([np.full((40, 40), 100, np.uint8)] * 3 + [np.zeros((40, 40), np.uint8)]), 100 / 255),
    ],
)
def test_array_inputs(array, expected):
    gray = read_image(array)
    _assert_convention(gray, (40, 40))
    np.testing.assert_allclose(gray, expected, atol=1e-6)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((40, 40, 2), np.uint8),  # two channels
        np.zeros((2, 40, 40, 1), np.uint8),  # a batch
        np.full((40, 40), 1.5),  # float outside [0, 1]
        np.full((40, 40), np.nan),
        np.zeros((40, 40), np.int64),  # unsupported dtype
    ],
)
def test_array_inputs_rejected(array):
    with pytest.raises(InvalidImageError) as info:
        read_image(array)
    assert str(info.value)


def test_unsupported_source_type():
    with pytest.raises(PneumoniaError):
        read_image(12345)


# --- EXIF orientation -----------------------------------------------------------------------------

# EXIF orientation -> how the stored pixels must be turned to be shown upright (numpy terms).
ORIENTATIONS = {
    2: lambda a: a[:, ::-1],
    3: lambda a: np.rot90(a, 2),
    4: lambda a: a[::-1, :],
    6: lambda a: np.rot90(a, -1),  # stored rotated 90 degrees counter-clockwise: turn clockwise
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_honoured(orientation):
    stored = np.zeros((60, 100), np.uint8)  # landscape as stored
    stored[:20, :30] = 255  # a bright block in the top-left corner of the stored pixels
    stored[40:, 60:] = 128
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.fromarray(stored, mode="L"), "JPEG", quality=95, exif=exif.tobytes())

    with Image.open(io.BytesIO(data)) as raw:  # the stored pixels, orientation ignored
        raw_pixels = np.asarray(raw.convert("L"), dtype=np.float32) / np.float32(255)
    expected = ORIENTATIONS[orientation](raw_pixels)

    gray = read_image(data)
    assert gray.shape == expected.shape
    np.testing.assert_array_equal(gray, expected)


def test_exif_orientation_6_portrait_film():
    stored = np.tile(np.linspace(0, 255, 120, dtype=np.uint8), (80, 1))  # 80 x 120 stored
    exif = Image.Exif()
    exif[0x0112] = 6
    gray = read_image(_encode(Image.fromarray(stored, mode="L"), "JPEG", quality=100, exif=exif.tobytes()))
    assert gray.shape == (120, 80)  # shown portrait
    # Rotated clockwise: the stored left-to-right ramp now runs top to bottom.
    column = gray[:, 40]
    assert column[0] < 0.05 and column[-1] > 0.95
    assert np.all(np.diff(column.astype(np.float64)) > -0.03)


# --- resize, batch and the model-input contract -------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 32), (300, 257), (2048, 2500)])
@pytest.mark.parametrize("size", [64, 224])
def test_resize_and_preprocess(shape, size):
    values = _rng_uint8(shape, seed=9)
    gray = read_image(values)
    resized = resize_image(gray, size)
    _assert_convention(resized, (size, size))
    batch = preprocess_image(values, size)
    _assert_convention(batch, (1, size, size, 1))
    check_model_input(batch, size)
    np.testing.assert_array_equal(batch, to_batch(resized))


def test_resize_of_a_constant_is_constant():
    np.testing.assert_allclose(resize_image(np.full((300, 200), 0.25, np.float32), 64), 0.25, atol=1e-6)


def test_to_batch_shape():
    batch = to_batch(np.zeros((7, 9), np.float32))
    assert batch.shape == (1, 7, 9, 1) and batch.dtype == np.float32


def _with_nan(value: float) -> np.ndarray:
    batch = np.full((2, 64, 64, 1), 0.5, np.float32)
    batch[1, 10, 20, 0] = value
    return batch


BAD_BATCHES = {
    "float64": (np.zeros((1, 64, 64, 1), np.float64), "float32"),
    "uint8": (np.zeros((1, 64, 64, 1), np.uint8), "float32"),
    "2-D": (np.zeros((64, 64), np.float32), "(N, 64, 64, 1)"),
    "no channel": (np.zeros((1, 64, 64), np.float32), "(N, 64, 64, 1)"),
    "RGB": (np.zeros((1, 64, 64, 3), np.float32), "(N, 64, 64, 1)"),
    "other size": (np.zeros((1, 32, 32, 1), np.float32), "(N, 64, 64, 1)"),
    "above 1": (np.full((1, 64, 64, 1), 1.01, np.float32), "[0, 1]"),
    "below 0": (np.full((1, 64, 64, 1), -0.01, np.float32), "[0, 1]"),
    "0-255": (np.full((1, 64, 64, 1), 255.0, np.float32), "[0, 1]"),
    "NaN": (_with_nan(np.nan), "finite"),
    "infinity": (_with_nan(np.inf), "finite"),
    "list": ([[[[0.5]]]], "numpy array"),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_check_model_input_rejects(case):
    batch, words = BAD_BATCHES[case]
    with pytest.raises(ValueError, match=re.escape(words)):
        check_model_input(batch, 64)


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_the_product_path_refuses_a_batch_that_breaks_the_convention(case, predictor, monkeypatch):
    """Predictor.run_network, where the network is called, checks every batch first (at the
    model's own input size), whether scoring, explaining or describing for the gate."""
    batch, words = BAD_BATCHES[case]
    size = predictor.metadata.input_size
    if isinstance(batch, np.ndarray) and batch.ndim == 4 and batch.shape[1] == 64:
        batch = np.resize(batch, (batch.shape[0], size, size, batch.shape[3])).astype(batch.dtype)
        if case in ("NaN", "infinity"):
            batch[-1, 0, 0, 0] = np.nan if case == "NaN" else np.inf
    # Reaching the network would raise AttributeError instead of the convention's ValueError.
    monkeypatch.setattr(predictor, "_network", None)
    for run in (lambda: predictor.run_network(batch), lambda: predictor.run_network(batch, explain=True),
                lambda: predictor.score_batch(batch)):
        with pytest.raises(ValueError, match=re.escape(words.replace("64", str(size)))):
            run()


@pytest.mark.parametrize("n", [1, 3])
def test_check_model_input_accepts(n):
    check_model_input(np.linspace(0, 1, n * 64 * 64, dtype=np.float32).reshape(n, 64, 64, 1), 64)


@pytest.mark.parametrize("shape, max_side, expected", [((100, 50), 200, (100, 50)), ((1000, 500), 200, (200, 100)),
                                                       ((300, 1200), 400, (100, 400))])
def test_shrink_to_fit_keeps_the_aspect_ratio(shape, max_side, expected):
    from pneumonia.preprocessing import shrink_to_fit

    gray = np.full(shape, 0.25, np.float32)
    out = shrink_to_fit(gray, max_side)
    assert out.shape == expected and np.allclose(out, 0.25)
