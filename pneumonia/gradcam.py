"""Grad-CAM (Selvaraju et al. 2017): where in the film the network's answer came from.

The explained layer feeds global average pooling and one linear logit (:func:`pneumonia.model.build_model`).
For such a head the gradient of the logit with respect to each activation is the logit's weight
divided by the map's ``h * w``, the same at every cell, so Grad-CAM is the class activation map
(Zhou et al. 2016). Its raw, signed form is the one primitive here, :func:`evidence_map`: per cell
``e = conv . w``, and the logit is **exactly** the mean of ``e`` over the cells plus the bias, so
the map splits the answer over the film (positive cells argue for PNEUMONIA, negative ones for
NORMAL). It is computed from the forward pass alone, no backward pass, and the same function
serves the traced explain pass, its TensorFlow Lite export and the training loss that teaches
the map where the radiologists' boxes are (:mod:`pneumonia.recipe`). Scaling and colouring
happen after the network, in numpy.
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
        explain: ``batch -> (logits (N,), features (N, C), evidence (N, h, w))``: the same, plus
            the raw signed evidence map of :func:`evidence_map` (``float32``, positive for
            PNEUMONIA, negative for NORMAL, unscaled), from the same forward pass.
    """

    forward: Callable
    explain: Callable


def build_network_functions(model, last_conv_layer: str, feature_layer: str, input_size: int) -> NetworkFunctions:
    """Trace the network's forward pass and its forward + Grad-CAM pass, once per model.

    The explain pass returns the raw signed evidence; how it is scaled and coloured for a person
    is decided after the network, in numpy, never compiled into the graph.

    Args:
        model: the pneumonia network (one logit output): ``last_conv_layer`` -> global average
            pooling -> (dropout) -> a ``Dense(1)`` output layer.
        last_conv_layer: name of the layer Grad-CAM explains (``metadata.last_conv_layer``).
        feature_layer: name of the pooled layer the gate reads (:data:`pneumonia.ood.FEATURE_LAYER`).
        input_size: side ``S`` of the model input (``metadata.input_size``).

    Returns:
        :class:`NetworkFunctions`.

    Raises:
        ValueError: the output layer has no weights matching the explained layer's channels.
    """
    import keras
    import tensorflow as tf

    spec = tf.TensorSpec((None, input_size, input_size, 1), tf.float32)
    features = model.get_layer(feature_layer).output
    explained = keras.Model(model.inputs, [model.output, features, model.get_layer(last_conv_layer).output])
    head = model.layers[-1]  # the layer whose output is the logit
    kernel = getattr(head, "kernel", None)  # (C, 1): each channel's weight in the logit
    channels = explained.outputs[2].shape[-1]
    if kernel is None or tuple(kernel.shape) != (channels, 1):
        raise ValueError(f"the output layer {head.name!r} is not one linear unit over the {channels} channels of "
                         f"{last_conv_layer!r}: Grad-CAM here needs average pooling and one linear logit")

    # Calling the model directly in a traced graph avoids model.predict's per-call overhead.
    @tf.function(input_signature=[spec])
    def forward(batch):
        logits, pooled, _ = explained(batch, training=False)
        return logits[:, 0], pooled

    @tf.function(input_signature=[spec])
    def explain(batch):
        logits, pooled, conv = explained(batch, training=False)
        return logits[:, 0], pooled, evidence_map(conv, kernel[:, 0])

    return NetworkFunctions(forward, explain)


def evidence_map(conv, weights):
    """Each map cell's evidence for PNEUMONIA: ``e[n, y, x] = sum_c conv[n, y, x, c] * w[c]``.

    The one primitive of the heatmap, shared by the traced explain pass, its export and the
    training loss (written with ``keras.ops`` so it runs in all three). With average pooling and
    one linear unit, ``logit = mean(e over the cells) + bias`` exactly.

    Args:
        conv: ``float32 (N, h, w, C)`` activations of the explained layer.
        weights: ``float32 (C,)`` the logit layer's weight of each channel.

    Returns:
        ``float32 (N, h, w)``, signed and unscaled: positive for PNEUMONIA, negative for NORMAL.
    """
    from keras import ops

    return ops.einsum("nhwc,c->nhw", conv, weights)


def normalise_class_maps(evidence: np.ndarray) -> np.ndarray:
    """Per-film max-normalised maps of both classes, ``relu(-e) / max`` and ``relu(e) / max``.

    Args:
        evidence: ``float (N, h, w)`` from :func:`evidence_map`.

    Returns:
        ``float32 (2, N, h, w)`` in ``[0, 1]``, index 0 NORMAL, 1 PNEUMONIA (all zero where no
        cell supports the class).
    """
    evidence = np.asarray(evidence, np.float32)
    maps = np.stack([np.maximum(-evidence, 0.0), np.maximum(evidence, 0.0)])
    peak = maps.max(axis=(2, 3), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


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
    unchanged where nothing drove the answer and only the supporting regions are tinted:
    ``film * (1 - alpha * w) + jet(w) * alpha * w``. On large films the colour and opacity are
    worked out at down to a quarter of the film's side, never coarser than 16 pixels per map cell,
    and upsampled: the map is smooth at that scale, so this stays within a few levels of working
    them out at full size.

    Args:
        image: ``float`` array ``(H, W)`` in ``[0, 1]`` (the decoded film).
        heatmap: ``float`` array ``(h, w)`` in ``[0, 1]``.
        alpha: heatmap opacity at its peak, in ``[0, 1]``.

    Returns:
        An RGB ``PIL.Image`` of size ``(W, H)`` carrying no metadata.
    """
    import cv2

    # Every full-size temporary costs more than the arithmetic on it: the app hands multi-MB
    # buffers back to the OS (serving.limit_allocator_growth), so each is page-faulted in afresh.
    # Hence uint8 planes only, colour and opacity at a quarter of the side, and in-place
    # operations: about 8 fresh bytes per pixel instead of 25 (docs/performance.md).
    alpha = float(np.clip(alpha, 0.0, 1.0))
    height, width = image.shape
    size = (width, height)
    small = resize_heatmap(heatmap, (max(-(-width // 4), min(width, 16 * heatmap.shape[1])),
                                     max(-(-height // 4), min(height, 16 * heatmap.shape[0]))))
    opacity = cv2.convertScaleAbs(small, alpha=255.0 * alpha)  # uint8, 255 = colour only
    tint = cv2.multiply(colorize_heatmap(small), cv2.cvtColor(opacity, cv2.COLOR_GRAY2RGB), scale=1 / 255)
    if image.min() < 0.0:  # convertScaleAbs would fold negatives back up
        image = np.clip(image, 0.0, 1.0)
    film = cv2.convertScaleAbs(image, alpha=255.0)  # rounded and saturated to uint8
    cv2.multiply(film, cv2.resize(cv2.bitwise_not(opacity), size, interpolation=cv2.INTER_LINEAR),
                 dst=film, scale=1 / 255)
    rgb = cv2.cvtColor(film, cv2.COLOR_GRAY2RGB)
    cv2.add(rgb, cv2.resize(tint, size, interpolation=cv2.INTER_LINEAR), dst=rgb)
    return Image.frombuffer("RGB", size, rgb, "raw", "RGB", 0, 1)  # shares rgb's memory: no copy
