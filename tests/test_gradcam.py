"""Grad-CAM heatmaps and overlays."""

import numpy as np
import pytest
from PIL import Image

from pneumonia.gradcam import colorize_heatmap, make_gradcam_heatmap, overlay_heatmap
from pneumonia.preprocessing import preprocess_image


@pytest.fixture(scope="module")
def heatmaps(predictor, film_paths):
    meta = predictor.metadata
    batches = [preprocess_image(p, meta.input_size) for p in (film_paths[0], film_paths[-1])]
    return [make_gradcam_heatmap(predictor.model, b, meta.last_conv_layer) for b in batches]


def test_heatmap_shape_range_and_finite(heatmaps, predictor):
    layer = predictor.model.get_layer(predictor.metadata.last_conv_layer)
    for heatmap in heatmaps:
        assert heatmap.shape == tuple(layer.output.shape[1:3])
        assert heatmap.dtype == np.float32
        assert np.all(np.isfinite(heatmap))
        assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0


def test_heatmaps_differ_between_two_films(heatmaps):
    assert np.abs(heatmaps[0] - heatmaps[1]).mean() > 0.01


def test_predictor_heatmap_matches_the_standalone_function(predictor, film_paths):
    result = predictor.predict(film_paths[-1], explain=True)
    batch = preprocess_image(film_paths[-1], predictor.metadata.input_size)
    class_index = predictor.class_names.index(result.label)
    expected = make_gradcam_heatmap(predictor.model, batch, predictor.metadata.last_conv_layer, class_index)
    assert np.allclose(result.heatmap, expected, atol=1e-4)


@pytest.mark.parametrize("size", [(64, 64), (300, 200), (1500, 2000)])
def test_overlay_keeps_the_film_resolution(size):
    width, height = size
    film = np.linspace(0, 1, width * height, dtype=np.float32).reshape(height, width)
    heatmap = np.zeros((5, 5), np.float32)
    heatmap[2, 2] = 1.0
    overlay = overlay_heatmap(film, heatmap, alpha=0.5)
    assert isinstance(overlay, Image.Image) and overlay.size == (width, height) and overlay.mode == "RGB"
    assert not overlay.info  # no metadata leaks into the returned image


def test_overlay_leaves_the_film_untouched_where_the_heatmap_is_zero():
    film = np.full((50, 50), 0.5, np.float32)
    overlay = np.asarray(overlay_heatmap(film, np.zeros((5, 5), np.float32), alpha=0.9))
    assert np.all(overlay == 128)


def test_overlay_alpha_one_shows_pure_colour_at_the_peak():
    film = np.zeros((40, 40), np.float32)
    overlay = np.asarray(overlay_heatmap(film, np.ones((5, 5), np.float32), alpha=1.0))
    assert np.array_equal(overlay[20, 20], colorize_heatmap(np.ones((1, 1)))[0, 0])  # JET's top: dark red
    assert overlay[20, 20, 0] > 100 and overlay[20, 20, 2] == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_overlay_matches_the_blending_formula(dtype):
    """film * (1 - alpha * w) + jet(w) * alpha * w, computed here directly with broadcasting."""
    from pneumonia.gradcam import resize_heatmap

    rng = np.random.default_rng(3)
    film = rng.random((37, 53)).astype(dtype)
    heatmap = rng.random((5, 5)).astype(np.float32)
    w = resize_heatmap(heatmap, (53, 37))
    expected = film[..., None] * 255.0 * (1 - 0.6 * w[..., None]) + colorize_heatmap(w) * (0.6 * w[..., None])
    got = np.asarray(overlay_heatmap(film, heatmap, alpha=0.6)).astype(np.float64)
    assert np.abs(got - np.rint(expected)).max() <= 1.0
