"""Grad-CAM evidence, the heatmap on its fixed scale, and overlays.

The Grad-CAM the product uses (:func:`pneumonia.gradcam.build_network_functions`, called by
``Predictor.run_network``) is checked against a hand computation in numpy on a tiny network whose
last convolution feeds global average pooling and one dense unit: there the gradient of the logit
with respect to each activation is the dense weight divided by ``h * w``, so the channel weights,
the maps of both classes, the pooled features and the logit all follow in closed form. A second
check takes the gradients from TensorFlow itself, as Grad-CAM is defined.
"""

import numpy as np
import pytest
from PIL import Image

from pneumonia.gradcam import (
    COLORMAPS,
    build_network_functions,
    colormap_table,
    fit_evidence_scale,
    normalise_class_maps,
    overlay_heatmap,
    scale_evidence,
)
from pneumonia.inference import Predictor
from pneumonia.model import ModelMetadata

from phantoms import frontal_phantom

SIZE, KERNEL, CHANNELS = 12, 3, 4


def make_tiny_model(seed: int, bias: float = 0.0):
    """Input (12, 12, 1) -> conv 3x3 (4 channels, ReLU, 'valid') -> GAP -> dense logit."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(CHANNELS, KERNEL, activation="relu", name="conv")(inputs)
    pool = keras.layers.GlobalAveragePooling2D(name="pool")(conv)
    logit = keras.layers.Dense(1, name="logit")(pool)
    model = keras.Model(inputs, logit)
    kernel, conv_bias = model.get_layer("conv").get_weights()
    model.get_layer("conv").set_weights([kernel, np.abs(conv_bias) + 0.05])  # some channels always on
    weights, _ = model.get_layer("logit").get_weights()
    model.get_layer("logit").set_weights([weights, np.array([bias], np.float32)])
    return model


def numpy_gradcam(model, batch: np.ndarray):
    """Logits, pooled features and the raw evidence map ``(N, h, w)`` computed by hand in numpy."""
    kernel, conv_bias = model.get_layer("conv").get_weights()  # (3, 3, 1, C), (C,)
    weights, bias = model.get_layer("logit").get_weights()  # (C, 1), (1,)
    images = batch[..., 0].astype(np.float64)
    n, out = len(images), SIZE - KERNEL + 1
    conv = np.zeros((n, out, out, CHANNELS))
    for i in range(out):
        for j in range(out):
            patch = images[:, i:i + KERNEL, j:j + KERNEL]  # (N, 3, 3)
            conv[:, i, j, :] = np.einsum("nab,abc->nc", patch, kernel[:, :, 0, :]) + conv_bias
    conv = np.maximum(conv, 0.0)
    pooled = conv.mean(axis=(1, 2))
    logits = pooled @ weights[:, 0] + bias[0]
    channel_weights = weights[:, 0] / (out * out)  # mean over locations of d logit / d activation
    # Grad-CAM's sum over channels, times the cell count: each cell's share of the logit.
    evidence = np.einsum("nhwc,c->nhw", conv, channel_weights) * (out * out)
    return logits, pooled, evidence


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_explain_pass_matches_the_hand_computation(seed):
    model = make_tiny_model(seed)
    rng = np.random.default_rng(seed)
    batch = rng.random((3, SIZE, SIZE, 1)).astype(np.float32)
    functions = build_network_functions(model, "conv", "pool", SIZE)
    logits, pooled, evidence = (output.numpy() for output in functions.explain(batch))
    expected_logits, expected_pooled, expected_evidence = numpy_gradcam(model, batch)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-5)
    np.testing.assert_allclose(pooled, expected_pooled, atol=1e-5)
    np.testing.assert_allclose(evidence, expected_evidence, atol=1e-4)
    assert evidence.shape == (3, SIZE - KERNEL + 1, SIZE - KERNEL + 1)
    # The map splits the logit: its mean plus the bias is the logit.
    bias = model.get_layer("logit").get_weights()[1][0]
    np.testing.assert_allclose(evidence.mean(axis=(1, 2)) + bias, expected_logits, atol=1e-4)
    forward_logits, forward_pooled = (output.numpy() for output in functions.forward(batch))
    np.testing.assert_allclose(forward_logits, expected_logits, atol=1e-5)
    np.testing.assert_allclose(forward_pooled, expected_pooled, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_closed_form_maps_equal_gradient_grad_cam_with_dropout_in_the_head(seed):
    """Grad-CAM by its definition (channel weights = mean gradient of the logit, from a
    GradientTape) on a head with dropout between pooling and logit, as the product's network
    has, against the closed form the product computes."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(CHANNELS, KERNEL, activation="relu", bias_initializer="ones", name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(conv)
    logit = keras.layers.Dense(1, name="logit")(keras.layers.Dropout(0.5)(pooled))
    model = keras.Model(inputs, logit)
    batch = np.random.default_rng(seed).random((4, SIZE, SIZE, 1)).astype(np.float32)
    probe = keras.Model(inputs, [logit, conv])
    with tf.GradientTape() as tape:
        logits, activations = probe(batch, training=False)
        score = tf.reduce_sum(logits)
    grads = tape.gradient(score, activations).numpy()
    cells = grads.shape[1] * grads.shape[2]
    expected = np.einsum("nhwc,nc->nhw", activations.numpy(), grads.mean(axis=(1, 2))) * cells
    evidence = build_network_functions(model, "conv", "pool", SIZE).explain(batch)[2].numpy()
    np.testing.assert_allclose(evidence, expected, atol=1e-4)


def test_class_maps_are_each_signs_evidence_over_its_peak():
    evidence = np.array([[[2.0, -1.0], [0.5, -4.0]], [[-3.0, -1.0], [0.0, -0.5]]], np.float32)
    maps = normalise_class_maps(evidence)
    np.testing.assert_allclose(maps[1, 0], [[1.0, 0.0], [0.25, 0.0]])
    np.testing.assert_allclose(maps[0, 0], [[0.0, 0.25], [0.0, 1.0]])
    np.testing.assert_array_equal(maps[1, 1], np.zeros((2, 2)))  # no cell argues for pneumonia
    np.testing.assert_allclose(maps[0, 1], [[1.0, 1 / 3], [0.0, 1 / 6]], rtol=1e-6)


def test_a_logit_layer_that_does_not_fit_the_explained_channels_is_refused():
    import keras

    inputs = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(CHANNELS, KERNEL, name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(conv)
    model = keras.Model(inputs, keras.layers.Dense(1, name="logit")(keras.layers.Dense(7)(pooled)))
    with pytest.raises(ValueError, match="needs average pooling and one linear logit"):
        build_network_functions(model, "conv", "pool", SIZE)


def make_thresholded_predictor(margin: float, heatmap: dict | None):
    """A tiny predictor whose logit on the phantom is -0.5 (NORMAL at logit 0) and whose threshold
    lies ``margin`` from sigmoid(-0.5): PNEUMONIA for a negative margin, NORMAL for a positive one.

    Returns:
        ``(predictor, film, evidence of the film (h, w) by hand)``.
    """
    import cv2

    film = frontal_phantom(64)
    model = make_tiny_model(3)
    # The film as the model sees it (area-averaged to 12 px, as resize_image does).
    model_input = np.clip(cv2.resize(film, (SIZE, SIZE), interpolation=cv2.INTER_AREA), 0, 1)[None, ..., None]
    raw_logit = numpy_gradcam(model, model_input)[0][0]
    weights, _ = model.get_layer("logit").get_weights()
    model.get_layer("logit").set_weights([weights, np.array([-0.5 - raw_logit], np.float32)])
    logits, _, evidence = numpy_gradcam(model, model_input)
    assert logits[0] == pytest.approx(-0.5, abs=1e-4)
    threshold = 1.0 / (1.0 + np.exp(0.5)) + margin
    metadata = ModelMetadata(version="tiny", input_size=SIZE, threshold=threshold, temperature=1.0,
                             last_conv_layer="conv", heatmap=heatmap or {})
    return Predictor(model, metadata), film, evidence[0]


@pytest.mark.parametrize("margin, expected_label", [(-0.05, "PNEUMONIA"), (0.05, "NORMAL")])
@pytest.mark.parametrize("scale", [0.05, 0.3, 2.0])
def test_predictor_shows_one_signed_map_on_the_fixed_scale_whatever_the_verdict(margin, expected_label, scale):
    """The map shown is the evidence over the model's recorded scale, clipped to [-1, 1]: the
    same for a PNEUMONIA and a NORMAL verdict, with both signs kept."""
    predictor, film, evidence = make_thresholded_predictor(margin, {"scale": scale, "colormap": "blue-red"})
    assert evidence.max() > 0 > evidence.min()  # the film has evidence of both signs to show
    result = predictor.predict(film, explain=True)
    assert result.label == expected_label
    np.testing.assert_allclose(result.evidence, evidence, atol=1e-4)
    expected = np.minimum(np.maximum(evidence / scale, -1.0), 1.0)
    np.testing.assert_allclose(result.heatmap, expected, atol=1e-4)
    assert result.heatmap.min() < 0 < result.heatmap.max()
    assert result.overlay is not None and result.overlay.size == (64, 64)


def test_the_map_does_not_depend_on_the_verdict():
    heatmaps = [make_thresholded_predictor(margin, {"scale": 0.3, "colormap": "blue-red"})
                for margin in (-0.05, 0.05)]
    results = [predictor.predict(film, explain=True) for predictor, film, _ in heatmaps]
    assert [r.label for r in results] == ["PNEUMONIA", "NORMAL"]
    np.testing.assert_array_equal(results[0].heatmap, results[1].heatmap)


def test_a_model_without_a_heatmap_scale_draws_no_map_but_returns_the_evidence():
    predictor, film, evidence = make_thresholded_predictor(-0.05, None)
    result = predictor.predict(film, explain=True)
    assert result.heatmap is None and result.overlay is None
    np.testing.assert_allclose(result.evidence, evidence, atol=1e-4)
    # The pointing game's map: the PNEUMONIA evidence over its own peak, argmax at the evidence peak.
    peak = np.unravel_index(np.argmax(evidence), evidence.shape)
    assert np.unravel_index(np.argmax(result.class_heatmaps["PNEUMONIA"]), evidence.shape) == peak


@pytest.mark.parametrize("evidence, scale, expected", [
    ([[2.0, -1.0]], 4.0, [[0.5, -0.25]]),
    ([[9.0, -9.0]], 3.0, [[1.0, -1.0]]),  # saturates on both sides
    ([[0.0, 0.3]], 0.6, [[0.0, 0.5]]),
])
def test_scale_evidence_divides_by_the_fixed_scale_and_clips(evidence, scale, expected):
    got = scale_evidence(np.array(evidence, np.float32), scale)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_evidence_scale_is_the_99th_percentile_of_the_positive_cells(seed):
    rng = np.random.default_rng(seed)
    evidence = rng.normal(0.0, 5.0, (7, 4, 4)).astype(np.float32)
    fitted = fit_evidence_scale(evidence)
    # Independently: sort the positive cells and interpolate at rank 0.99 * (n - 1).
    positive = np.sort(evidence[evidence > 0].astype(np.float64))
    rank = 0.99 * (len(positive) - 1)
    low = int(np.floor(rank))
    expected = positive[low] + (rank - low) * (positive[min(low + 1, len(positive) - 1)] - positive[low])
    assert fitted["scale"] == pytest.approx(expected, rel=1e-5)
    assert fitted["colormap"] == "blue-red" and fitted["films"] == 7 and "99" in fitted["rule"]
    ModelMetadata(version="x", input_size=64, heatmap=fitted).validate()  # storable as it is


@pytest.mark.parametrize("evidence, colormap, message", [
    (np.full((2, 3, 3), -1.0, np.float32), "blue-red", "no cell"),
    (np.zeros((0, 3, 3), np.float32), "blue-red", "N >= 1"),
    (np.ones((2, 3, 3), np.float32), "jet", "unknown colour map"),
])
def test_fit_evidence_scale_refuses_what_gives_no_scale(evidence, colormap, message):
    with pytest.raises(ValueError, match=message):
        fit_evidence_scale(evidence, colormap)


def test_colour_table_runs_from_cool_for_normal_to_warm_for_pneumonia():
    table = colormap_table("blue-red")
    assert table.shape == (256, 3) and table.dtype == np.uint8
    (first, first_colour), (last, last_colour) = COLORMAPS["blue-red"][0], COLORMAPS["blue-red"][-1]
    assert (first, last) == (-1.0, 1.0)
    assert tuple(table[0]) == first_colour and tuple(table[255]) == last_colour
    red_minus_blue = table[:, 0].astype(int) - table[:, 2].astype(int)
    assert np.all(red_minus_blue[:128] < 0) and np.all(red_minus_blue[128:] > 0)  # cool below 0, warm above


def test_product_heatmap_shape_range_and_finite(predictor, film_paths):
    from pneumonia.model import load_model

    layer = load_model()[0].get_layer(predictor.metadata.last_conv_layer)
    results = [predictor.predict(path, explain=True) for path in (film_paths[0], film_paths[-1])]
    for result in results:
        assert result.heatmap.shape == tuple(layer.output.shape[1:3]) == result.evidence.shape
        assert result.heatmap.dtype == np.float32
        assert np.all(np.isfinite(result.heatmap))
        assert result.heatmap.min() >= -1.0 and result.heatmap.max() <= 1.0
        scale = predictor.metadata.heatmap["scale"]
        np.testing.assert_allclose(result.heatmap, np.clip(result.evidence / scale, -1, 1), atol=1e-6)
    assert np.abs(results[0].heatmap - results[1].heatmap).mean() > 0.01  # two films, two maps


def test_prediction_reads_the_pneumonia_probability_by_class_name():
    from pneumonia.inference import Prediction

    prediction = Prediction(label="PNEUMONIA", probabilities={"PNEUMONIA": 0.9, "NORMAL": 0.1}, threshold=0.5,
                            logit=2.2)
    assert prediction.pneumonia_probability == 0.9


TABLE = colormap_table("blue-red")


@pytest.mark.parametrize("size", [(64, 64), (300, 200), (1500, 2000)])
def test_overlay_keeps_the_film_resolution(size):
    width, height = size
    film = np.linspace(0, 1, width * height, dtype=np.float32).reshape(height, width)
    heatmap = np.zeros((5, 5), np.float32)
    heatmap[2, 2] = 1.0
    overlay = overlay_heatmap(film, heatmap, TABLE, alpha=0.5)
    assert isinstance(overlay, Image.Image) and overlay.size == (width, height) and overlay.mode == "RGB"
    assert not overlay.info  # no metadata leaks into the returned image


def test_overlay_leaves_the_film_untouched_where_the_heatmap_is_zero():
    film = np.full((50, 50), 0.5, np.float32)
    overlay = np.asarray(overlay_heatmap(film, np.zeros((5, 5), np.float32), TABLE, alpha=0.9))
    assert np.all(overlay == 128)


@pytest.mark.parametrize("sign, entry", [(1.0, 255), (-1.0, 0)])
def test_overlay_alpha_one_shows_the_table_colour_at_full_strength(sign, entry):
    film = np.zeros((40, 40), np.float32)
    overlay = np.asarray(overlay_heatmap(film, np.full((5, 5), sign, np.float32), TABLE, alpha=1.0))
    np.testing.assert_allclose(overlay[20, 20], TABLE[entry], atol=1)


def blend_by_formula(film: np.ndarray, heatmap: np.ndarray, alpha: float) -> np.ndarray:
    """film * (1 - alpha * |s|) + table(s) * alpha * |s| at full size, float64, indexing the table."""
    from pneumonia.gradcam import resize_heatmap

    height, width = film.shape
    s = resize_heatmap(heatmap, (width, height), signed=True).astype(np.float64)  # the map at the film's size
    colour = TABLE[np.rint((s + 1.0) * 127.5).astype(int)].astype(np.float64)
    weight = alpha * np.abs(s)[..., None]
    return film[..., None] * 255.0 * (1 - weight) + colour * weight


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_overlay_matches_the_blending_formula(dtype):
    """A small film is coloured at full size: the formula's value to rounding, both signs."""
    rng = np.random.default_rng(3)
    film = rng.random((37, 53)).astype(dtype)
    heatmap = rng.uniform(-1, 1, (5, 5)).astype(np.float32)
    got = np.asarray(overlay_heatmap(film, heatmap, TABLE, alpha=0.6)).astype(np.float64)
    assert np.abs(got - blend_by_formula(film, heatmap, 0.6)).max() <= 2.0


@pytest.mark.parametrize("size", [(1024, 967), (2000, 1500)])
def test_overlay_of_a_large_film_stays_close_to_the_formula(size):
    """Coloured at a quarter of the side and upsampled: a few levels off where the colours bend, no more."""
    width, height = size
    rng = np.random.default_rng(4)
    film = rng.random((height, width)).astype(np.float32)
    heatmap = rng.uniform(-1, 1, (14, 14)).astype(np.float32)
    error = np.abs(np.asarray(overlay_heatmap(film, heatmap, TABLE, alpha=0.6)).astype(np.float64)
                   - blend_by_formula(film, heatmap, 0.6))
    assert error.mean() <= 1.5 and np.percentile(error, 99.9) <= 15 and error.max() <= 30
