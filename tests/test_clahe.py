"""CLAHE inside the network: equal to OpenCV's, saved and loaded with the model, used by training."""

import cv2
import numpy as np
import pytest

from pneumonia.clahe import equalize_local_contrast
from pneumonia.model import build_model, describe_normalization, load_model
from pneumonia.data import resize_to_uint8
from pneumonia.preprocessing import read_image


def _films(film_paths, size):
    """Real films as uint8 at ``size``, plus two extremes: noise and a flat grey."""
    films = [resize_to_uint8(read_image(p), size) for p in film_paths[:4]]
    rng = np.random.default_rng(size)
    films.append(rng.integers(0, 256, (size, size), dtype=np.uint8))
    films.append(np.full((size, size), 77, np.uint8))
    return np.stack(films)


@pytest.mark.parametrize("size", [64, 160, 224])
@pytest.mark.parametrize("clip_limit, tiles", [(2.0, 8), (4.0, 4), (1.0, 8)])
def test_equalization_matches_opencv_clahe(film_paths, size, clip_limit, tiles):
    films = _films(film_paths, size)
    expected = np.stack([cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles)).apply(f) for f in films])
    got = equalize_local_contrast(films[..., None].astype(np.float32) / 255.0, clip_limit, tiles).numpy()
    assert got.shape == films[..., None].shape and got.dtype == np.float32
    assert np.array_equal(np.round(got[..., 0] * 255).astype(np.uint8), expected)


def test_equalization_refuses_sides_the_tiles_do_not_divide():
    with pytest.raises(ValueError, match="divisible"):
        equalize_local_contrast(np.zeros((1, 60, 60, 1), np.float32), 2.0, 8)


def test_network_with_equalization_saves_loads_and_answers_alike(tmp_path, film_paths):
    from pneumonia.model import ModelMetadata, save_model

    model = build_model(64, widths=(8, 8, 16), seed=3, clahe_clip=2.0)
    assert model.get_layer("equalize") is not None
    meta = ModelMetadata(version="test", input_size=64, normalization=describe_normalization(2.0))
    save_model(model, meta, tmp_path)
    loaded, loaded_meta = load_model(tmp_path)
    batch = _films(film_paths, 64)[..., None].astype(np.float32) / 255.0
    assert np.allclose(model(batch, training=False), loaded(batch, training=False), atol=1e-6)
    assert "CLAHE, clip 2" in loaded_meta.normalization


def test_equalization_layer_feeds_the_network_the_equalized_film(film_paths):
    """The network with CLAHE gives on a film what the network without it gives on OpenCV's CLAHE of it."""
    with_layer = build_model(64, widths=(8, 8, 16), seed=5, clahe_clip=2.0)
    without = build_model(64, widths=(8, 8, 16), seed=5)
    without.set_weights(with_layer.get_weights())  # the layer has no weights, so the lists align
    films = _films(film_paths, 64)
    equalized = np.stack([cv2.createCLAHE(2.0, (8, 8)).apply(f) for f in films])
    a = with_layer(films[..., None].astype(np.float32) / 255.0, training=False).numpy()
    b = without(equalized[..., None].astype(np.float32) / 255.0, training=False).numpy()
    assert np.allclose(a, b, atol=1e-4)
    assert describe_normalization(0.0) != describe_normalization(2.0)
