"""Broken or hostile uploads: the project's own error with a message a person can act on.

Every case goes through :func:`read_image` twice: as bytes and as a file on disk with the name a
user would give it. Property tests then throw random bytes and mutated real files at the decoder:
whatever happens, nothing but :class:`PneumoniaError` may come out.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

from pneumonia.errors import InvalidImageError, PneumoniaError
from pneumonia.preprocessing import decode_bytes, read_image

ROOT = Path(__file__).resolve().parent.parent
FILM = ROOT / "tests" / "data" / "films" / "NORMAL" / "NORMAL2-IM-1427-0001.jpeg"
PATIENT = "Brokentest^Privatename"


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A valid-looking PNG of a few hundred bytes whose header declares ``width x height``."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 4096, 9)) + chunk(b"IEND", b""))


def _dicom(pixels: np.ndarray | None = None, rows: int | None = None, columns: int | None = None,
           transfer_syntax: str = uid.ExplicitVRLittleEndian, pixel_bytes: bytes | None = None) -> bytes:
    """A minimal grayscale DX DICOM (with a made-up patient name); no pixel data if both are None."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT
    ds.PatientID = "BROKEN-PID-31337"
    ds.Modality = "DX"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if pixels is not None:
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = pixels.astype(np.uint8).tobytes()
    if rows is not None:
        ds.Rows, ds.Columns = rows, columns
    if pixel_bytes is not None:
        ds.PixelData = pixel_bytes
    if "PixelData" in ds:
        if uid.UID(transfer_syntax).is_compressed:
            ds.PixelData = encapsulate([ds.PixelData])
        ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _animated_gif() -> bytes:
    frames = [Image.new("L", (64, 64), shade) for shade in (0, 128, 255)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multipage_tiff() -> bytes:
    pages = [Image.new("L", (64, 64), shade) for shade in (10, 200)]
    return _encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])


SVG = (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" '
       b'width="512" height="512"><rect width="512" height="512" fill="black"/>'
       b'<circle cx="256" cy="256" r="200" fill="white"/></svg>\n')


def _broken_inputs() -> dict[str, tuple[str, bytes, str]]:
    """name -> (file name, bytes, a word the message must contain)."""
    jpeg = FILM.read_bytes()
    png = _encode(Image.open(FILM).convert("L"), "PNG")
    rng = np.random.default_rng(1234)
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    return {
        "zero_bytes": ("empty.png", b"", "empty"),
        "zero_bytes_dicom": ("empty.dcm", b"", "empty"),
        "truncated_jpeg": ("cut.jpeg", jpeg[: len(jpeg) // 2], "truncated"),
        "jpeg_header_only": ("header.jpg", jpeg[:200], "truncated"),
        "truncated_png": ("cut.png", png[: len(png) // 2], "truncated"),
        "text_renamed_png": ("notes.png", b"Patient doing well, see attached film.\n" * 20, "not an image"),
        "random_bytes_jpg": ("noise.jpg", rng.bytes(4096), "not an image"),
        "random_bytes_dcm": ("noise.dcm", rng.bytes(4096), "DICOM"),
        "one_pixel": ("dot.png", _encode(Image.new("L", (1, 1), 128), "PNG"), "1x1"),
        "sliver_3x2000": ("sliver.png", _encode(Image.new("L", (3, 2000), 128), "PNG"), "3x2000"),
        "sliver_2000x300": ("banner.png", _encode(Image.new("L", (2000, 300), 128), "PNG"), "square"),
        "decompression_bomb": ("bomb.png", _png_declaring(40000, 40000), "pixels"),
        "bomb_below_pillow_limit": ("big.png", _png_declaring(9000, 9000), "megapixels"),
        "animated_gif": ("anim.gif", _animated_gif(), "frames"),
        "multipage_tiff": ("stack.tiff", _multipage_tiff(), "frames"),
        "svg": ("drawing.svg", SVG, "SVG"),
        "svg_renamed_png": ("drawing.png", SVG, "SVG"),
        "html": ("page.png", b"<!doctype html><html><body><img src='x.png'></body></html>", "not an image"),
        "dicom_without_pixel_data": ("report.dcm", _dicom(), "no pixel data"),
        "dicom_truncated_pixels": ("cut.dcm", _dicom(ramp)[:-1000], "DICOM"),
        "dicom_truncated_header": ("head.dcm", _dicom(ramp)[:150], "DICOM"),
        "dicom_bomb": ("huge.dcm", _dicom(rows=60000, columns=60000, pixel_bytes=b"\x00" * 64,
                                          transfer_syntax=uid.RLELossless), "pixels"),
        "dicom_undecodable_syntax": ("mpeg.dcm", _dicom(ramp, transfer_syntax="1.2.840.10008.1.2.4.100"),
                                     "compressed"),
        "dicom_one_pixel": ("dot.dcm", _dicom(np.zeros((1, 1), np.uint8)), "1x1"),
    }


BROKEN = _broken_inputs()


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_bytes_raise_a_clear_error(case):
    name, data, word = BROKEN[case]
    with pytest.raises(InvalidImageError) as info:
        read_image(data)
    _check_message(str(info.value), word)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files_raise_a_clear_error(case, tmp_path):
    name, data, word = BROKEN[case]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InvalidImageError) as info:
        read_image(path)
    message = str(info.value)
    _check_message(message, word)
    assert name in message or "image is" in message  # says which file, or what is wrong with it


def _check_message(message: str, word: str) -> None:
    assert isinstance(message, str) and len(message) >= 20
    assert word.lower() in message.lower(), message
    assert "Traceback" not in message
    assert "privatename" not in message.lower() and "31337" not in message


def test_error_types():
    assert issubclass(InvalidImageError, PneumoniaError)
    assert issubclass(InvalidImageError, ValueError)


@pytest.mark.parametrize(
    "make_path, word",
    [
        (lambda tmp: tmp / "missing.png", "not found"),
        (lambda tmp: tmp, "folder"),
    ],
)
def test_bad_paths(make_path, word, tmp_path):
    with pytest.raises(InvalidImageError) as info:
        read_image(make_path(tmp_path))
    assert word in str(info.value)


def test_a_good_file_after_broken_ones_still_works():
    for _, data, _ in BROKEN.values():
        with pytest.raises(InvalidImageError):
            read_image(data)
    gray = read_image(FILM)
    assert gray.shape == (224, 224) and gray.dtype == np.float32


# --- property tests: random and mutated bytes ---------------------------------------------------


def _seeds() -> dict[str, bytes]:
    image = Image.open(FILM).convert("L").resize((64, 64))
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    return {
        "jpeg": _encode(image, "JPEG", quality=80),
        "png": _encode(image, "PNG"),
        "png16": _encode(Image.fromarray(np.asarray(image, np.uint16) * 257), "PNG"),
        "dicom": _dicom(ramp),
        "dicom_rle": _rle_dicom(ramp),
    }


def _rle_dicom(pixels: np.ndarray) -> bytes:
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(_dicom(pixels)))
    ds.compress(uid.RLELossless)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


SEEDS = _seeds()
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow])


def _decode_or_project_error(data: bytes, name: str) -> None:
    """Decoding may succeed (a valid image) or raise PneumoniaError; nothing else."""
    for attempt in (lambda: read_image(data), lambda: decode_bytes(data, name)):
        try:
            gray = attempt()
        except PneumoniaError as exc:
            assert str(exc)
            continue
        assert gray.dtype == np.float32 and gray.ndim == 2
        assert np.all(np.isfinite(gray)) and float(gray.min()) >= 0.0 and float(gray.max()) <= 1.0


@PROPERTY_SETTINGS
@given(data=st.binary(max_size=4096), name=st.sampled_from(["x.jpg", "x.png", "x.dcm", "x.DICOM"]))
def test_random_bytes_only_raise_the_projects_error(data, name):
    _decode_or_project_error(data, name)


@PROPERTY_SETTINGS
@given(body=st.binary(max_size=2048), magic=st.sampled_from([
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM", b"RIFF",
    b"\x00" * 128 + b"DICM", b"\x02\x00\x00\x00", b"\x08\x00\x05\x00CS"]))
def test_random_bytes_behind_a_real_magic_only_raise_the_projects_error(body, magic):
    _decode_or_project_error(magic + body, "x.dcm")


@st.composite
def _mutated(draw):
    kind = draw(st.sampled_from(sorted(SEEDS)))
    data = bytearray(SEEDS[kind])
    for _ in range(draw(st.integers(1, 8))):
        operation = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set" and data:
            data[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, draw(st.integers(0, 255))]))
        elif operation == "truncate":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "delete":
            del data[position:position + draw(st.integers(1, 16))]
    return kind, bytes(data)


@PROPERTY_SETTINGS
@given(case=_mutated())
def test_mutated_real_files_only_raise_the_projects_error(case):
    kind, data = case
    _decode_or_project_error(data, "x.dcm" if kind.startswith("dicom") else f"x.{kind[:4]}")


DICOM_HEADER_END = len(SEEDS["dicom"]) - 64 * 64  # the seed's pixel data is its last 4096 bytes


@PROPERTY_SETTINGS
@given(edits=st.lists(st.tuples(st.integers(0, DICOM_HEADER_END - 1), st.integers(0, 255)),
                      min_size=1, max_size=6))
def test_mutated_dicom_header_fields_only_raise_the_projects_error(edits):
    """Mutations aimed at the DICOM header (rows, bits, photometric, lengths, transfer syntax)."""
    data = bytearray(SEEDS["dicom"])
    for position, value in edits:
        data[position] = value
    _decode_or_project_error(bytes(data), "x.dcm")
