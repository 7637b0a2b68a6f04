"""Grad-CAM (Selvaraju et al. 2017): where in the film the network's answer came from.

The network outputs one logit (log-odds of PNEUMONIA). For PNEUMONIA we take gradients of that
logit, for NORMAL of its negation, so the map always shows evidence *for the predicted class*.
Gradients are taken on the logit, not the probability, so a confident answer does not saturate
them to zero.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image


class NetworkFunctions(NamedTuple):
    """The network's two traced passes (``tf.function``\ s over ``float32 (N, S, S, 1)`` batches).

    Attributes:
        forward: ``batch -> (logits (N,), features (N, C))``: the PNEUMONIA logit and the pooled
            features the "not a chest X-ray" gate reads (:mod:`pneumonia.ood`).
        explain: ``batch -> (logits (N,), features (N, C), maps (2, N, h, w))``: the same, plus
            the Grad-CAM maps of both classes (index 0 the first class name, NORMAL; 1 the class
            the logit scores, PNEUMONIA), in one forward and one backward pass.
    """

    forward: Callable
    explain: Callable


def build_network_functions(model, last_conv_layer: str, feature_layer: str, input_size: int) -> NetworkFunctions:
    """Trace the network's forward pass and its forward + Grad-CAM pass, once per model.

    Grad-CAM needs a class; the class a user is shown depends on the calibrated threshold, which
    is in general not at logit 0. Both maps come out of the one backward pass (the NORMAL score is
    the negated logit), so the caller picks the map of the label it decided, after the pass.

    Args:
        model: the pneumonia network (one logit output).
        last_conv_layer: name of the layer Grad-CAM explains (``metadata.last_conv_layer``).
        feature_layer: name of the pooled layer the gate reads (:data:`pneumonia.ood.FEATURE_LAYER`).
        input_size: side ``S`` of the model input (``metadata.input_size``).

    Returns:
        :class:`NetworkFunctions`.
    """
    import keras
    import tensorflow as tf

    spec = tf.TensorSpec((None, input_size, input_size, 1), tf.float32)
    features = model.get_layer(feature_layer).output
    explained = keras.Model(model.inputs, [model.output, features, model.get_layer(last_conv_layer).output])

    # Calling the model directly in a traced graph avoids model.predict's per-call overhead.
    @tf.function(input_signature=[spec])
    def forward(batch):
        logits, pooled, _ = explained(batch, training=False)
        return logits[:, 0], pooled

    @tf.function(input_signature=[spec])
    def explain(batch):
        with tf.GradientTape() as tape:
            logits, pooled, conv = explained(batch, training=False)
            score = tf.reduce_sum(logits)  # each film's logit depends on its own activations only
        return logits[:, 0], pooled, class_activation_maps(conv, tape.gradient(score, conv))

    return NetworkFunctions(forward, explain)


def class_activation_maps(conv, logit_grads):
    """Grad-CAM maps of both classes from one gradient (a TensorFlow function body).

    The NORMAL score is the negated PNEUMONIA logit, so its gradients are the PNEUMONIA ones
    negated: one backward pass gives both maps.

    Args:
        conv: activations ``(N, h, w, C)`` of the explained layer.
        logit_grads: gradients ``(N, h, w, C)`` of the PNEUMONIA logit with respect to ``conv``.

    Returns:
        ``(2, N, h, w)`` tensor, index 0 NORMAL and 1 PNEUMONIA, each map in ``[0, 1]`` (all
        zero when no location supports the class).
    """
    import tensorflow as tf

    weights = tf.reduce_mean(logit_grads, axis=(1, 2))  # (N, C): importance of each channel
    evidence = tf.einsum("nhwc,nc->nhw", conv, weights)
    maps = []
    for sign in (-1.0, 1.0):
        cam = tf.nn.relu(sign * evidence)
        maps.append(tf.math.divide_no_nan(cam, tf.reduce_max(cam, axis=(1, 2), keepdims=True)))
    return tf.stack(maps)


def resize_heatmap(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a heatmap smoothly to ``size = (width, height)``; ``float32`` in ``[0, 1]``."""
    import cv2

    heatmap = np.asarray(heatmap, dtype=np.float32)
    width, height = size
    # Bicubic up to a quarter of the target side, then bilinear: the map is smooth at that scale,
    # and bicubic straight to a megapixel costs about 5 ms against 1.
    quarter = (max(1, -(-width // 4)), max(1, -(-height // 4)))
    if quarter[0] > heatmap.shape[1] and quarter[1] > heatmap.shape[0]:
        heatmap = cv2.resize(heatmap, quarter, interpolation=cv2.INTER_CUBIC)
        resized = cv2.resize(heatmap, size, interpolation=cv2.INTER_LINEAR)
    else:
        resized = cv2.resize(heatmap, size, interpolation=cv2.INTER_CUBIC)
    return np.clip(resized, 0.0, 1.0, out=resized)


def colorize_heatmap(heatmap: np.ndarray) -> np.ndarray:
    """Map a heatmap through the JET colour map (blue = low, red = high).

    Args:
        heatmap: ``float`` array ``(H, W)`` in ``[0, 1]``.

    Returns:
        ``uint8`` RGB array ``(H, W, 3)``.
    """
    import cv2

    levels = cv2.convertScaleAbs(np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, 1.0), alpha=255.0)
    # cv2.LUT with the colour map's 256 entries gives applyColorMap's colours (the same table)
    # about 10x faster on a 1-megapixel map.
    return cv2.LUT(cv2.cvtColor(levels, cv2.COLOR_GRAY2RGB), _jet_table())


@functools.lru_cache(maxsize=1)
def _jet_table() -> np.ndarray:
    """OpenCV's JET colour map as an RGB lookup table, ``uint8 (256, 1, 3)``."""
    import cv2

    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_JET)
    return np.ascontiguousarray(bgr[..., ::-1])


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> Image.Image:
    """Blend a heatmap over a grayscale film at the film's own resolution.

    The colour's opacity grows with the heatmap (``alpha`` at its peak), so the film shows through
    unchanged where nothing drove the answer and only the supporting regions are tinted.

    Args:
        image: ``float`` array ``(H, W)`` in ``[0, 1]`` (the decoded film).
        heatmap: ``float`` array ``(h, w)`` in ``[0, 1]``.
        alpha: heatmap opacity at its peak, in ``[0, 1]``.

    Returns:
        An RGB ``PIL.Image`` of size ``(W, H)`` carrying no metadata.
    """
    import cv2

    # film * (1 - w) + colour * w in one vectorised OpenCV pass over uint8 planes: numpy's
    # (H, W, 3) float temporaries cost 3-4x more on a 1-megapixel film (docs/performance.md).
    alpha = float(np.clip(alpha, 0.0, 1.0))
    height, width = image.shape
    weight = resize_heatmap(heatmap, (width, height))
    colours = colorize_heatmap(weight)
    weight *= alpha
    film = cv2.convertScaleAbs(np.clip(image, 0.0, 1.0), alpha=255.0)  # rounded to uint8
    rgb = cv2.blendLinear(cv2.cvtColor(film, cv2.COLOR_GRAY2RGB), colours, 1.0 - weight, weight)
    return Image.fromarray(rgb, mode="RGB")
