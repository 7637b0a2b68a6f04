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
happen after the network, in numpy: :func:`scale_evidence` puts the map on the model's fixed
scale (:func:`fit_evidence_scale`, recorded in ``metadata.heatmap``), :func:`overlay_heatmap`
colours it through a table of :data:`COLORMAPS`.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import numpy as np
from PIL import Image


class NetworkFunctions(NamedTuple):
    """The network's two traced passes (each a ``tf.function`` over ``float32 (N, S, S, 1)`` batches).

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


# The heatmap's fixed scale (fit_evidence_scale): this percentile of the positive per-cell
# evidence over a model's validation films is drawn at full strength.
EVIDENCE_PERCENTILE = 99.0
# The colour maps a model's metadata.heatmap["colormap"] may name: (signed value, RGB) stops on
# [-1, 1], linearly interpolated into a 256-entry table (colormap_table). The only colour tables of
# the project: the overlay and the page's legend are both drawn from them.
COLORMAPS = {
    # Cool for evidence for NORMAL, warm for evidence for PNEUMONIA; the opacity grows with the
    # strength (overlay_heatmap), so a cell with no evidence either way leaves the film untinted.
    "blue-red": ((-1.0, (29, 78, 216)), (-0.5, (59, 130, 246)), (0.0, (147, 197, 253)), (0.0, (253, 224, 71)),
                 (0.5, (249, 115, 22)), (1.0, (220, 20, 20))),
}
DEFAULT_COLORMAP = "blue-red"


def fit_evidence_scale(evidence: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> dict:
    """A model's fixed heatmap scale, from the evidence maps of its validation films.

    Rule: the :data:`EVIDENCE_PERCENTILE` th percentile of the positive cells of ``evidence``
    (all films, all cells with ``e > 0``). A cell at that evidence is drawn at full strength, on
    every film, whatever its verdict; stronger cells saturate. The same scale is used for the
    negative (NORMAL) side, so both colours mean the same amount of logit per cell.

    Args:
        evidence: ``float32 (N, h, w)`` raw evidence (:func:`evidence_map`) of the model's
            validation films.
        colormap: a key of :data:`COLORMAPS`, recorded with the scale.

    Returns:
        ``{"scale": float > 0, "rule": str, "colormap": str, "films": N}``: what
        ``metadata.heatmap`` holds.

    Raises:
        ValueError: no film, no positive cell, or an unknown colour map.
    """
    evidence = np.asarray(evidence, np.float32)
    if colormap not in COLORMAPS:
        raise ValueError(f"unknown colour map {colormap!r}; known: {sorted(COLORMAPS)}")
    if evidence.ndim != 3 or not len(evidence):
        raise ValueError(f"evidence must be (N, h, w) with N >= 1, got shape {evidence.shape}")
    positive = evidence[np.isfinite(evidence) & (evidence > 0)]
    if not positive.size:
        raise ValueError("no cell of these films carries positive evidence: no scale can be fitted")
    scale = float(np.percentile(positive, EVIDENCE_PERCENTILE))
    rule = (f"percentile {EVIDENCE_PERCENTILE:g} of the positive per-cell evidence (conv . w) over "
            f"{len(evidence)} validation films; drawn at full strength, same scale for both signs")
    return {"scale": scale, "rule": rule, "colormap": colormap, "films": int(len(evidence))}


def scale_evidence(evidence: np.ndarray, scale: float) -> np.ndarray:
    """The signed heatmap shown: evidence on the model's fixed scale, ``clip(e / scale, -1, 1)``.

    Args:
        evidence: ``float (..., h, w)`` raw evidence (:func:`evidence_map`).
        scale: the model's ``metadata.heatmap["scale"]`` (> 0).

    Returns:
        ``float32`` of the same shape in ``[-1, 1]``: ``+1`` full-strength evidence for
        PNEUMONIA, ``-1`` for NORMAL, ``0`` none.
    """
    scaled = np.asarray(evidence, np.float32) / np.float32(scale)
    return np.clip(scaled, -1.0, 1.0, out=scaled)


def normalise_class_maps(evidence: np.ndarray) -> np.ndarray:
    """Per-film max-normalised maps of both classes, ``relu(-e) / max`` and ``relu(e) / max``.

    For locating each class's evidence peak (the pointing game of :mod:`pneumonia.evaluate`),
    not for display: a film's own maximum is not a scale to compare films on.

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


def resize_heatmap(heatmap: np.ndarray, size: tuple[int, int], signed: bool = False) -> np.ndarray:
    """Resize a heatmap smoothly to ``size = (width, height)``.

    Args:
        heatmap: ``float (h, w)`` in ``[0, 1]``, or in ``[-1, 1]`` when ``signed``.
        size: ``(width, height)``.
        signed: keep negative values (clip to ``[-1, 1]`` instead of ``[0, 1]``).

    Returns:
        ``float32 (height, width)`` in the input's range.
    """
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
    return np.clip(resized, -1.0 if signed else 0.0, 1.0, out=resized)


@functools.lru_cache(maxsize=None)
def colormap_table(name: str = DEFAULT_COLORMAP) -> np.ndarray:
    """A colour map of :data:`COLORMAPS` as a lookup table over signed values.

    Entry ``i`` is the colour of ``s = i / 127.5 - 1`` (so 0 is ``-1``, 255 is ``+1``), linearly
    interpolated between the map's stops; at ``s = 0`` exactly, the warm side's first stop.

    Args:
        name: a key of :data:`COLORMAPS`.

    Returns:
        ``uint8 (256, 3)`` RGB, read-only.

    Raises:
        KeyError: an unknown name.
    """
    stops = COLORMAPS[name]
    values = np.arange(256) / 127.5 - 1.0
    positions = np.array([v for v, _ in stops])
    colours = np.array([c for _, c in stops], np.float64)
    table = np.empty((256, 3))
    for channel in range(3):
        # np.interp takes the last of equal positions, so a jump at 0 belongs to the warm side.
        table[:, channel] = np.interp(values, positions, colours[:, channel])
    table = np.round(table).astype(np.uint8)
    table.setflags(write=False)
    return table


def colorize_heatmap(heatmap: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Colour a signed heatmap through a lookup table.

    Args:
        heatmap: ``float (H, W)`` in ``[-1, 1]``.
        table: ``uint8 (256, 3)`` from :func:`colormap_table`.

    Returns:
        ``uint8`` RGB ``(H, W, 3)``.
    """
    import cv2

    signed = np.clip(np.asarray(heatmap, dtype=np.float32), -1.0, 1.0)
    levels = cv2.convertScaleAbs(signed, alpha=127.5, beta=127.5)  # rounded and saturated
    # cv2.LUT over the three channels is about 10x faster than fancy indexing on a megapixel.
    return cv2.LUT(cv2.cvtColor(levels, cv2.COLOR_GRAY2RGB), np.ascontiguousarray(table.reshape(256, 1, 3)))


def overlay_heatmap(image: np.ndarray, heatmap: np.ndarray, colormap: np.ndarray, alpha: float = 0.4) -> Image.Image:
    """Blend a heatmap over a grayscale film at the film's own resolution.

    The colour's opacity grows with the strength of the evidence (``alpha`` at full strength,
    ``|s| = 1``), so the film shows through unchanged where no cell argues either way:
    ``film * (1 - alpha * |s|) + colormap(s) * alpha * |s|``. On large films the colour and opacity are
    worked out at down to a quarter of the film's side, never coarser than 16 pixels per map cell,
    and upsampled: the map is smooth at that scale, so this stays within a few levels of working
    them out at full size.

    Args:
        image: ``float`` array ``(H, W)`` in ``[0, 1]`` (the decoded film).
        heatmap: ``float`` array ``(h, w)`` in ``[-1, 1]`` (:func:`scale_evidence`).
        colormap: ``uint8 (256, 3)`` lookup table over signed values (:func:`colormap_table`).
        alpha: heatmap opacity at full strength, in ``[0, 1]``.

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
                                     max(-(-height // 4), min(height, 16 * heatmap.shape[0]))), signed=True)
    opacity = cv2.convertScaleAbs(small, alpha=255.0 * alpha)  # uint8 of |s| * alpha, 255 = colour only
    tint = cv2.multiply(colorize_heatmap(small, colormap), cv2.cvtColor(opacity, cv2.COLOR_GRAY2RGB), scale=1 / 255)
    if image.min() < 0.0:  # convertScaleAbs would fold negatives back up
        image = np.clip(image, 0.0, 1.0)
    film = cv2.convertScaleAbs(image, alpha=255.0)  # rounded and saturated to uint8
    cv2.multiply(film, cv2.resize(cv2.bitwise_not(opacity), size, interpolation=cv2.INTER_LINEAR),
                 dst=film, scale=1 / 255)
    rgb = cv2.cvtColor(film, cv2.COLOR_GRAY2RGB)
    cv2.add(rgb, cv2.resize(tint, size, interpolation=cv2.INTER_LINEAR), dst=rgb)
    return Image.frombuffer("RGB", size, rgb, "raw", "RGB", 0, 1)  # shares rgb's memory: no copy
