"""One real film in every container people upload must get the same answer as the plain JPEG.

The film is re-encoded at test time (into ``tmp_path``) as PNG 8/16-bit, grayscale + alpha, RGB,
RGBA, palette, CMYK JPEG, progressive JPEG, JPEG stored rotated with an EXIF orientation tag, TIFF,
BMP, WebP, an upscaled 2000+ px PNG, and DICOM: MONOCHROME2 / MONOCHROME1, 8/12/16-bit (unsigned and
signed) with rescale slope / intercept, window centre / width, a VOI LUT, without the preamble, and
compressed (RLE, JPEG 2000 lossless and lossy, JPEG baseline). Every variant must give the JPEG's
label and a PNEUMONIA probability within 0.05 of it, with the shipped model.

Lossless variants are also checked pixel by pixel against ``v / 255`` (``v`` the JPEG's 8-bit
values), and the DICOM display pipeline against the DICOM standard's formulas, computed here.
The test DICOM files carry made-up patient details that must never appear in any message.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

from pneumonia.dicom import read_dicom
from pneumonia.errors import InvalidImageError
from pneumonia.preprocessing import decode_bytes, read_image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PROBABILITY_TOLERANCE = 0.05

# Made-up identifying details written into every test DICOM: none may ever leak.
SECRETS = {
    "PatientName": "Zzyzx^Confidentia",
    "PatientID": "PID-SECRET-90210",
    "PatientBirthDate": "19011231",
    "StudyDate": "19020102",
    "InstitutionName": "Hospital Of Secret Records",
    "ReferringPhysicianName": "Drsecret^Who",
    "AccessionNumber": "ACC7777777",
}
SECRET_FRAGMENTS = ("Zzyzx", "Confidentia", "SECRET", "90210", "19011231", "19020102",
                    "Hospital", "Drsecret", "7777777")


# --- a small DICOM writer for the tests ---------------------------------------------------------


def make_dicom(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    window: tuple | None = None,
    voi_function: str | None = None,
    voi_lut: tuple[int, np.ndarray] | None = None,
    compress: str | None = None,
    compress_kwargs: dict | None = None,
    jpeg_frame: bytes | None = None,
    preamble: bool = True,
    file_meta: bool = True,
    tags: dict | None = None,
) -> bytes:
    """Write ``stored`` (the raw stored values) as a DICOM file and return its bytes.

    ``stored`` is ``(H, W)`` grayscale, ``(F, H, W)`` multi-frame or ``(H, W, 3)`` RGB; uint8,
    uint16 or int16. ``window`` is ``(centre, width)``, each a number or a list (several views).
    ``voi_lut`` is ``(first_mapped_value, table)``. ``jpeg_frame`` replaces the pixel data with that
    encapsulated JPEG (baseline) stream. ``tags`` overrides the made-up patient details.
    """
    stored = np.asarray(stored)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    for keyword, value in dict(SECRETS, **(tags or {})).items():
        setattr(ds, keyword, value)

    colour = stored.ndim == 3 and stored.shape[-1] == 3 and photometric == "RGB"
    frames = stored.shape[0] if stored.ndim == 3 and not colour else 1
    ds.Rows, ds.Columns = (stored.shape[:2] if colour else stored.shape[-2:])
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = photometric
    bits_allocated = 8 if stored.dtype == np.uint8 else 16
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(stored.dtype, np.signedinteger) else 0
    if slope is not None:
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = (
            [f"{v:g}" for v in value] if isinstance(value, (list, tuple)) else f"{value:g}"
            for value in window
        )
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        first, table = voi_lut
        item = Dataset()
        item.add_new(0x00283002, "US", [len(table) % 65536, first, 16])  # LUT Descriptor
        item.add_new(0x00283006, "US", [int(v) for v in table])  # LUT Data
        ds.VOILUTSequence = [item]

    if jpeg_frame is not None:
        ds.PixelData = encapsulate([jpeg_frame])
        ds["PixelData"].VR = "OB"
        meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
        ds.LossyImageCompression = "01"
    else:
        ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
        ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
        if compress is not None:
            ds.compress(compress, **(compress_kwargs or {}))

    buffer = io.BytesIO()
    if file_meta:
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        return data if preamble else data[132:]  # drop the 128-byte preamble and "DICM"
    del ds.file_meta
    ds.save_as(buffer, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


# --- the film and its variants ------------------------------------------------------------------


def _film_values(path: Path) -> np.ndarray:
    """The plain JPEG's 8-bit grayscale values (H, W)."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _jpeg_with_orientation_6(v: np.ndarray) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    stored = np.ascontiguousarray(np.rot90(v, 1))  # the pixels kept turned counter-clockwise
    return _encode(Image.fromarray(stored, mode="L"), "JPEG", quality=95, exif=exif.tobytes())


def _upscaled(v: np.ndarray) -> bytes:
    height, width = v.shape
    scale = 2400 / width
    image = Image.fromarray(v, mode="L").resize((2400, round(height * scale)), Image.LANCZOS)
    assert max(image.size) >= 2000
    return _encode(image, "PNG")


def _alpha(v: np.ndarray) -> np.ndarray:
    """An alpha channel unrelated to the film (must be ignored)."""
    height, width = v.shape
    return (np.arange(width)[None, :] * 255 // max(1, width - 1) * np.ones((height, 1))).astype(np.uint8)


def _window_spanning(low: float, high: float) -> tuple[float, float]:
    """A LINEAR window whose output maps modality value ``low`` to black and ``high`` to white.

    PS3.3 C.11.2.1.2.1: y = ((x - (c - 0.5)) / (w - 1) + 0.5); y = 0 at low, 1 at high.
    """
    width = high - low + 1
    return low + (width - 1) / 2 + 0.5, width


# name -> (file suffix, bytes maker, whether the pixels equal v / 255 exactly)
RASTER_VARIANTS = {
    "png_8bit": (".png", lambda v: _encode(Image.fromarray(v, "L"), "PNG"), True),
    "png_16bit": (".png", lambda v: _encode(Image.fromarray(v.astype(np.uint16) * 257), "PNG"), True),
    "png_gray_alpha": (".png", lambda v: _encode(Image.fromarray(np.dstack([v, _alpha(v)]), "LA"), "PNG"), True),
    "png_rgb": (".png", lambda v: _encode(Image.fromarray(np.dstack([v] * 3), "RGB"), "PNG"), True),
    "png_rgba": (".png", lambda v: _encode(Image.fromarray(np.dstack([v] * 3 + [_alpha(v)]), "RGBA"), "PNG"), True),
    "png_palette": (".png", lambda v: _encode(
        Image.fromarray(np.dstack([v] * 3), "RGB").quantize(256, method=Image.Quantize.MEDIANCUT), "PNG"), False),
    "jpeg_cmyk": (".jpg", lambda v: _encode(Image.fromarray(v, "L").convert("CMYK"), "JPEG", quality=95), False),
    "jpeg_progressive": (".jpg", lambda v: _encode(Image.fromarray(v, "L"), "JPEG", quality=95, progressive=True), False),
    "jpeg_exif_rotated": (".jpg", _jpeg_with_orientation_6, False),
    "jpeg_rgb": (".jpeg", lambda v: _encode(Image.fromarray(np.dstack([v] * 3), "RGB"), "JPEG", quality=95), False),
    "tiff_8bit": (".tif", lambda v: _encode(Image.fromarray(v, "L"), "TIFF"), True),
    "tiff_16bit_lzw": (".tiff", lambda v: _encode(Image.fromarray(v.astype(np.uint16) * 257), "TIFF",
                                                  compression="tiff_lzw"), True),
    "bmp": (".bmp", lambda v: _encode(Image.fromarray(v, "L"), "BMP"), True),
    "bmp_rgb": (".bmp", lambda v: _encode(Image.fromarray(np.dstack([v] * 3), "RGB"), "BMP"), True),
    "webp_lossless": (".webp", lambda v: _encode(Image.fromarray(v, "L"), "WEBP", lossless=True), True),
    "webp_lossy": (".webp", lambda v: _encode(Image.fromarray(v, "L"), "WEBP", quality=90), False),
    "gif_static": (".gif", lambda v: _encode(Image.fromarray(v, "L"), "GIF"), True),
    "pgm": (".pgm", lambda v: _encode(Image.fromarray(v, "L"), "PPM"), True),
    "png_2400px": (".png", _upscaled, False),
}

DICOM_VARIANTS = {
    "dcm_mono2_8bit": (lambda v: make_dicom(v), True),
    "dcm_mono1_8bit": (lambda v: make_dicom(255 - v, photometric="MONOCHROME1"), True),
    "dcm_mono2_12bit_rescale": (lambda v: make_dicom(
        v.astype(np.uint16) * 16, bits_stored=12, slope=0.5, intercept=-1024), True),
    "dcm_mono1_12bit_rescale": (lambda v: make_dicom(
        4095 - v.astype(np.uint16) * 16, bits_stored=12, slope=2, intercept=100,
        photometric="MONOCHROME1"), True),
    "dcm_mono2_16bit_rescale": (lambda v: make_dicom(
        v.astype(np.uint16) * 257, bits_stored=16, slope=1.5, intercept=-30000), True),
    "dcm_mono2_16bit_signed": (lambda v: make_dicom(
        (v.astype(np.int16) * 100 - 12000).astype(np.int16), bits_stored=16, slope=1, intercept=0), True),
    # Modality values 0.5 * 16v - 1024; a window from v = 0 to v = 255 shows exactly the film.
    "dcm_12bit_window": (lambda v: make_dicom(
        v.astype(np.uint16) * 16, bits_stored=12, slope=0.5, intercept=-1024,
        window=_window_spanning(-1024, 0.5 * 16 * 255 - 1024)), True),
    "dcm_12bit_window_mono1": (lambda v: make_dicom(
        4095 - v.astype(np.uint16) * 16, bits_stored=12,
        window=_window_spanning(4095 - 16 * 255, 4095), photometric="MONOCHROME1"), True),
    "dcm_16bit_window_multivalued": (lambda v: make_dicom(
        v.astype(np.uint16) * 257, bits_stored=16,
        window=([_window_spanning(0, 257 * 255)[0], 1000], [_window_spanning(0, 257 * 255)[1], 10])), True),
    # A VOI LUT (linear, 12-bit in, 16-bit out: 16 v -> 257 v) beside a narrow window: the LUT
    # must win.
    "dcm_12bit_voi_lut": (lambda v: make_dicom(
        v.astype(np.uint16) * 16, bits_stored=12, window=(100, 10),
        voi_lut=(0, np.minimum(np.round(np.arange(4096) * 65535 / 4080), 65535))), True),
    "dcm_rle": (lambda v: make_dicom(
        v.astype(np.uint16) * 16, bits_stored=12, slope=0.5, intercept=-1024, compress=uid.RLELossless), True),
    "dcm_rle_8bit_mono1": (lambda v: make_dicom(
        255 - v, photometric="MONOCHROME1", compress=uid.RLELossless), True),
    "dcm_jpeg2000_lossless": (lambda v: make_dicom(
        v.astype(np.uint16) * 16, bits_stored=12, compress=uid.JPEG2000Lossless), True),
    "dcm_jpeg2000_lossy": (lambda v: make_dicom(
        v.astype(np.uint16) * 16, bits_stored=12, compress=uid.JPEG2000, compress_kwargs={"j2k_cr": [15]}), False),
    "dcm_jpeg_baseline": (lambda v: make_dicom(
        v, jpeg_frame=_encode(Image.fromarray(v, "L"), "JPEG", quality=95)), False),
    "dcm_no_preamble": (lambda v: make_dicom(v.astype(np.uint16) * 16, bits_stored=12, preamble=False), True),
    "dcm_bare_dataset": (lambda v: make_dicom(v, file_meta=False), True),
}


@pytest.fixture(scope="module")
def film_and_reference(predictor):
    """The bundled example film the comparison is most sensitive on, and its JPEG prediction.

    A film the model is sure about (P = 0.999) would hide any decoding difference, so the film is
    the one whose PNEUMONIA probability is furthest from 0 and 1, among the films called NORMAL or
    PNEUMONIA (not UNKNOWN) at least 0.1 away from the threshold, so that 'same label' is decided
    by the 0.05 tolerance and not by chance.
    """
    candidates = []
    for path in sorted(EXAMPLES.glob("*/*.jpeg")):
        result = predictor.predict(path)
        p = result.pneumonia_probability
        if result.label in predictor.class_names and abs(p - result.threshold) >= 0.1:
            candidates.append((min(p, 1.0 - p), path.name, path, result))
    assert candidates, "no bundled example is classified clearly enough to compare formats on"
    _, _, path, result = max(candidates, key=lambda c: (c[0], c[1]))
    return path, result


@pytest.fixture(scope="module")
def film_values(film_and_reference) -> np.ndarray:
    return _film_values(film_and_reference[0])


@pytest.fixture(scope="module")
def reference(film_and_reference):
    """The plain JPEG's prediction."""
    return film_and_reference[1]


@pytest.fixture(scope="module")
def exact_film_values() -> np.ndarray:
    """A fixed film for the model-free pixel checks."""
    return _film_values(EXAMPLES / "PNEUMONIA" / "person1304_bacteria_3269.jpeg")


def _write_variant(name: str, v: np.ndarray, folder: Path) -> Path:
    if name in RASTER_VARIANTS:
        suffix, make, _ = RASTER_VARIANTS[name]
        data = make(v)
    else:
        suffix, data = ".dcm", DICOM_VARIANTS[name][0](v)
    path = folder / f"{name}{suffix}"
    path.write_bytes(data)
    return path


ALL_VARIANTS = sorted(RASTER_VARIANTS) + sorted(DICOM_VARIANTS)
EXACT_VARIANTS = sorted([n for n, (_, _, exact) in RASTER_VARIANTS.items() if exact]
                        + [n for n, (_, exact) in DICOM_VARIANTS.items() if exact])


# --- same answer as the plain JPEG ----------------------------------------------------------------


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_variant_gives_the_jpeg_answer(variant, predictor, reference, film_values, tmp_path):
    path = _write_variant(variant, film_values, tmp_path)
    result = predictor.predict(path)
    assert result.label == reference.label, (variant, result.probabilities, reference.probabilities)
    assert abs(result.pneumonia_probability - reference.pneumonia_probability) <= PROBABILITY_TOLERANCE, (
        variant, result.pneumonia_probability, reference.pneumonia_probability)


def test_variant_bytes_give_the_jpeg_answer(predictor, reference, film_values):
    """Bytes (no file name to go by) are recognised as DICOM by the magic at byte 128."""
    result = predictor.predict(DICOM_VARIANTS["dcm_mono1_12bit_rescale"][0](film_values))
    assert result.label == reference.label
    assert abs(result.pneumonia_probability - reference.pneumonia_probability) <= PROBABILITY_TOLERANCE


def test_12bit_film_in_16bit_png_gives_the_jpeg_answer(predictor, reference, film_values):
    """12-bit data in a 16-bit PNG is scaled by 4095, not 65535, so it spans [0, 1] and passes the gate."""
    data = io.BytesIO()
    Image.fromarray(film_values.astype(np.uint16) * 16).save(data, "PNG")
    result = predictor.predict(data.getvalue())
    assert result.label == reference.label
    assert abs(result.pneumonia_probability - reference.pneumonia_probability) <= PROBABILITY_TOLERANCE


# --- pixel-exact decoding of the lossless variants ----------------------------------------------


@pytest.mark.parametrize("variant", EXACT_VARIANTS)
def test_lossless_variant_decodes_to_v_over_255(variant, exact_film_values, tmp_path):
    gray = read_image(_write_variant(variant, exact_film_values, tmp_path))
    assert gray.dtype == np.float32 and gray.shape == exact_film_values.shape
    np.testing.assert_allclose(gray, exact_film_values.astype(np.float64) / 255.0, atol=1e-5)


def test_exif_rotated_jpeg_is_upright(exact_film_values, tmp_path):
    gray = read_image(_write_variant("jpeg_exif_rotated", exact_film_values, tmp_path))
    assert gray.shape == exact_film_values.shape
    # JPEG is lossy: compare with the film, allowing for compression error only.
    assert np.abs(gray - exact_film_values / 255.0).mean() < 0.01


def test_upscaled_film_is_full_resolution(exact_film_values, tmp_path):
    gray = read_image(_write_variant("png_2400px", exact_film_values, tmp_path))
    assert gray.shape[1] == 2400 and gray.dtype == np.float32


# --- the DICOM display pipeline against the standard's formulas ---------------------------------

RAMP_12BIT = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)  # 0 .. 4095


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
@pytest.mark.parametrize("center, width", [(0, 2000), (-500, 801), (1500, 1)])
def test_window_linear_matches_the_standard(photometric, center, width):
    slope, intercept = 1.0, -1024.0
    data = make_dicom(RAMP_12BIT, bits_stored=12, slope=slope, intercept=intercept,
                      window=(center, width), photometric=photometric)
    x = RAMP_12BIT * slope + intercept
    if width == 1:
        expected = (x > center - 0.5).astype(np.float64)  # a threshold
    else:
        expected = np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected
    np.testing.assert_allclose(read_dicom(data), expected, atol=1e-6)


def test_window_linear_exact_and_sigmoid_match_the_standard():
    x = RAMP_12BIT.astype(np.float64)
    exact = make_dicom(RAMP_12BIT, bits_stored=12, window=(2000, 1000), voi_function="LINEAR_EXACT")
    np.testing.assert_allclose(read_dicom(exact), np.clip((x - 2000) / 1000 + 0.5, 0, 1), atol=1e-6)
    sigmoid = make_dicom(RAMP_12BIT, bits_stored=12, window=(2000, 1000), voi_function="SIGMOID")
    np.testing.assert_allclose(read_dicom(sigmoid), 1 / (1 + np.exp(-4 * (x - 2000) / 1000)), atol=1e-6)


@pytest.mark.parametrize("first", [0, 300])
def test_nonlinear_voi_lut_matches_table_lookup(first):
    table = np.round(65535 * np.linspace(0, 1, 2048) ** 0.5).astype(np.int64)
    data = make_dicom(RAMP_12BIT, bits_stored=12, voi_lut=(first, table))
    index = np.clip(RAMP_12BIT.astype(np.int64) - first, 0, len(table) - 1)
    np.testing.assert_allclose(read_dicom(data), table[index] / 65535.0, atol=1e-6)


@pytest.mark.parametrize(
    "stored, bits, signed",
    [
        (np.arange(64 * 64).reshape(64, 64) % 200 + 20, 8, False),
        (np.arange(64 * 64).reshape(64, 64) % 3000 + 500, 12, False),
        (np.arange(64 * 64).reshape(64, 64) * 13 % 60000 + 10, 16, False),
        (np.arange(64 * 64).reshape(64, 64) * 7 % 30000 - 15000, 16, True),
    ],
)
@pytest.mark.parametrize("slope, intercept", [(None, None), (2.0, -1000.0), (-1.0, 4000.0)])
def test_without_window_the_image_range_maps_to_0_1(stored, bits, signed, slope, intercept):
    dtype = np.uint8 if bits == 8 else (np.int16 if signed else np.uint16)
    data = make_dicom(stored.astype(dtype), bits_stored=bits, slope=slope, intercept=intercept)
    x = stored * (slope or 1.0) + (intercept or 0.0)
    expected = (x - x.min()) / (x.max() - x.min())
    gray = read_dicom(data)
    assert gray.dtype == np.float32 and gray.shape == stored.shape
    np.testing.assert_allclose(gray, expected, atol=1e-6)


def test_a_constant_dicom_is_black_not_a_crash():
    gray = read_dicom(make_dicom(np.full((40, 40), 77, np.uint8)))
    assert gray.dtype == np.float32 and not gray.any()


@pytest.mark.parametrize(
    "compressed",
    ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
     "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_expb.dcm"],
)
def test_pydicom_reference_files_decode_like_the_uncompressed_one(compressed):
    """JPEG-LS (no encoder here) is checked on pydicom's bundled reference files."""
    from pydicom.data import get_testdata_file

    plain, other = get_testdata_file("MR_small.dcm"), get_testdata_file(compressed)
    if plain is None or other is None:
        pytest.skip("pydicom's bundled test files are not installed")
    expected = read_dicom(Path(plain).read_bytes())
    np.testing.assert_array_equal(read_dicom(Path(other).read_bytes(), name=compressed), expected)


# --- DICOM that cannot be a film: a clear message, never a patient detail ------------------------

REFUSED_DICOM = {
    "multi_frame": (lambda: make_dicom(np.zeros((3, 64, 64), np.uint8)), "frames"),
    "rgb": (lambda: make_dicom(np.zeros((64, 64, 3), np.uint8), photometric="RGB"), "colour"),
    "rgb_rle": (lambda: make_dicom(np.zeros((64, 64, 3), np.uint8), photometric="RGB",
                                   compress=uid.RLELossless), "colour"),
    "palette": (lambda: make_dicom(np.zeros((64, 64), np.uint8), photometric="PALETTE COLOR"), "colour"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_DICOM))
def test_multiframe_and_colour_dicom_are_refused_clearly(case, tmp_path):
    make, word = REFUSED_DICOM[case]
    path = tmp_path / "study.dcm"
    path.write_bytes(make())
    for source in (path, path.read_bytes()):
        with pytest.raises(InvalidImageError) as info:
            read_image(source)
        message = str(info.value)
        assert word in message and len(message) > 30
        assert not any(fragment.lower() in message.lower() for fragment in SECRET_FRAGMENTS)


def test_no_patient_detail_in_messages_warnings_or_logs(caplog, tmp_path):
    """Every way a DICOM can fail, and success, with odd tag values that pydicom would warn about."""
    odd = {"PatientBirthDate": "SECRET-not-a-date", "StudyDate": "SECRET", "PatientAge": "SECRET-age"}
    ramp = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns (quoting them) while writing the odd values
        cases = [
            make_dicom(np.zeros((3, 64, 64), np.uint8), tags=odd),
            make_dicom(np.zeros((64, 64, 3), np.uint8), photometric="RGB", tags=odd),
            make_dicom(np.zeros((64, 64), np.uint8), tags=odd)[:-500],  # truncated pixel data
            make_dicom(ramp, bits_stored=12, window=(5, 0), tags=odd),  # invalid window width
            make_dicom(ramp, bits_stored=12, tags=odd),
        ]
    texts = []
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # only what reading logs counts
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for data in cases:
            assert b"SECRET-not-a-date" in data
            try:
                gray = decode_bytes(data, "scan.dcm")
                assert isinstance(gray, np.ndarray) and gray.dtype == np.float32
            except InvalidImageError as exc:
                texts.append(str(exc))
                texts.extend(str(e) for e in (exc.__cause__, exc.__context__) if e is not None)
    texts += [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert len([t for t in texts if t]) >= 3
    for text in texts:
        assert not any(fragment.lower() in text.lower() for fragment in SECRET_FRAGMENTS), text
