"""Grad-CAM heatmaps and overlays.

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

from pneumonia.gradcam import build_network_functions, colorize_heatmap, normalise_class_maps, overlay_heatmap
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


@pytest.mark.parametrize("margin, expected_label", [(-0.05, "PNEUMONIA"), (0.05, "NORMAL")])
def test_predictor_explains_the_class_the_calibrated_threshold_decides(margin, expected_label):
    """The logit is -0.5, so the class at logit >= 0 would be NORMAL; with the threshold just
    below sigmoid(-0.5) the label is PNEUMONIA and its map (not NORMAL's) must be shown."""
    import cv2

    film = frontal_phantom(64)
    model = make_tiny_model(3)
    # The film as the model sees it (area-averaged to 12 px, as resize_image does).
    model_input = np.clip(cv2.resize(film, (SIZE, SIZE), interpolation=cv2.INTER_AREA), 0, 1)[None, ..., None]
    raw_logit = numpy_gradcam(model, model_input)[0][0]
    weights, _ = model.get_layer("logit").get_weights()
    model.get_layer("logit").set_weights([weights, np.array([-0.5 - raw_logit], np.float32)])
    logits, _, evidence = numpy_gradcam(model, model_input)
    cam = np.maximum((1.0 if expected_label == "PNEUMONIA" else -1.0) * evidence[0], 0.0)
    assert logits[0] == pytest.approx(-0.5, abs=1e-4)
    threshold = 1.0 / (1.0 + np.exp(0.5)) + margin
    metadata = ModelMetadata(version="tiny", input_size=SIZE, threshold=threshold, temperature=1.0,
                             last_conv_layer="conv")
    predictor = Predictor(model, metadata)
    # The frontal-view check reads the model input; a 12 px phantom still shows its lung fields.
    result = predictor.predict(film, explain=True)
    assert result.label == expected_label
    np.testing.assert_allclose(result.heatmap, cam / cam.max(), atol=1e-4)
    assert not np.allclose(np.maximum(evidence[0], 0), np.maximum(-evidence[0], 0))  # the other class's map would differ


def test_product_heatmap_shape_range_and_finite(predictor, film_paths):
    from pneumonia.model import load_model

    layer = load_model()[0].get_layer(predictor.metadata.last_conv_layer)
    heatmaps = [predictor.predict(path, explain=True).heatmap for path in (film_paths[0], film_paths[-1])]
    for heatmap in heatmaps:
        assert heatmap.shape == tuple(layer.output.shape[1:3])
        assert heatmap.dtype == np.float32
        assert np.all(np.isfinite(heatmap))
        assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert np.abs(heatmaps[0] - heatmaps[1]).mean() > 0.01  # two films, two maps


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


def blend_by_formula(film: np.ndarray, heatmap: np.ndarray, alpha: float) -> np.ndarray:
    """film * (1 - alpha * w) + jet(w) * alpha * w at full size, float64, broadcast directly."""
    import cv2

    from pneumonia.gradcam import resize_heatmap

    height, width = film.shape
    w = resize_heatmap(heatmap, (width, height)).astype(np.float64)  # the map at the film's size
    jet = cv2.applyColorMap(np.rint(w * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    return film[..., None] * 255.0 * (1 - alpha * w[..., None]) + jet * (alpha * w[..., None])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_overlay_matches_the_blending_formula(dtype):
    """A small film is coloured at full size: the formula's value to rounding."""
    rng = np.random.default_rng(3)
    film = rng.random((37, 53)).astype(dtype)
    heatmap = rng.random((5, 5)).astype(np.float32)
    got = np.asarray(overlay_heatmap(film, heatmap, alpha=0.6)).astype(np.float64)
    assert np.abs(got - blend_by_formula(film, heatmap, 0.6)).max() <= 2.0


@pytest.mark.parametrize("size", [(1024, 967), (2000, 1500)])
def test_overlay_of_a_large_film_stays_close_to_the_formula(size):
    """Coloured at a quarter of the side and upsampled: a few levels off where JET bends, no more."""
    width, height = size
    rng = np.random.default_rng(4)
    film = rng.random((height, width)).astype(np.float32)
    heatmap = rng.random((14, 14)).astype(np.float32)
    error = np.abs(np.asarray(overlay_heatmap(film, heatmap, alpha=0.6)).astype(np.float64)
                   - blend_by_formula(film, heatmap, 0.6))
    assert error.mean() <= 1.5 and np.percentile(error, 99.9) <= 15 and error.max() <= 30
