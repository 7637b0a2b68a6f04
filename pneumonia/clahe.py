"""Contrast-limited adaptive histogram equalisation (CLAHE) as TensorFlow ops and a Keras layer.

Films from different machines and departments differ in their processing: global windowing,
but also local contrast enhancement. Equalising each film's local histograms inside the network
removes much of that variation from what the convolutions see, while the input convention of
:mod:`pneumonia.preprocessing` stays as it is (``float32`` in ``[0, 1]``): callers never apply it
themselves, so the app, the library, the CLI and training cannot disagree about it.

The computation follows OpenCV's ``cv2.createCLAHE(clipLimit, tileGridSize)`` on 8-bit images
(histograms of 256 bins per tile, clipped at ``max(int(clip_limit * tile_area / 256), 1)``, the
excess spread evenly with the remainder stepped over the bins, look-up tables rounded to 8 bits,
bilinear interpolation between the four nearest tiles' tables), so the tests can check it against
OpenCV as an independent implementation. Importing this module imports Keras.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

BINS = 256


def _interpolation_weights(side: int, tile: int, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each pixel index along one axis: the two neighbouring tiles and the weight of the second."""
    position = np.arange(side, dtype=np.float32) * np.float32(1.0 / tile) - np.float32(0.5)
    first = np.floor(position)
    weight = (position - first).astype(np.float32)
    first = first.astype(np.int32)
    return np.maximum(first, 0), np.minimum(first + 1, tiles - 1), weight


def equalize_local_contrast(images, clip_limit: float = 2.0, tiles: int = 8):
    """CLAHE of a batch of grayscale films.

    Args:
        images: ``float32`` tensor ``(B, H, W, 1)`` in ``[0, 1]``; ``H`` and ``W`` must be known
            statically and divisible by ``tiles``. Values are quantised to 256 levels first
            (``round(x * 255)``), as OpenCV sees an 8-bit film.
        clip_limit: OpenCV's ``clipLimit`` (contrast limit relative to a flat histogram).
        tiles: tiles per side (OpenCV's ``tileGridSize = (tiles, tiles)``).

    Returns:
        ``float32`` tensor of the same shape with values ``k / 255``, ``k`` an integer in
        ``[0, 255]``: ``cv2.createCLAHE(clip_limit, (tiles, tiles)).apply`` of the 8-bit film,
        divided by 255.
    """
    height, width = int(images.shape[1]), int(images.shape[2])
    if height % tiles or width % tiles:
        raise ValueError(f"CLAHE needs sides divisible by {tiles} tiles, got {height} x {width}")
    tile_h, tile_w = height // tiles, width // tiles
    area = tile_h * tile_w
    clip = max(int(clip_limit * area / BINS), 1)

    levels = tf.cast(tf.round(tf.clip_by_value(images[..., 0], 0.0, 1.0) * (BINS - 1)), tf.int32)
    batch = tf.shape(levels)[0]
    # One histogram per (film, tile): segment id = (film * tiles^2 + tile) * 256 + level.
    tile_of = (np.arange(height)[:, None] // tile_h) * tiles + np.arange(width)[None, :] // tile_w
    films = tf.range(batch)[:, None, None]
    segment = (films * tiles * tiles + tf.constant(tile_of, tf.int32)[None]) * BINS + levels
    counts = tf.math.unsorted_segment_sum(tf.ones_like(segment), segment, batch * tiles * tiles * BINS)
    hist = tf.reshape(counts, (batch, tiles * tiles, BINS))

    # Clip, spread the excess evenly, then one more count on every step-th bin for the remainder.
    excess = tf.reduce_sum(tf.nn.relu(hist - clip), axis=-1, keepdims=True)
    hist = tf.minimum(hist, clip)
    spread = excess // BINS
    remainder = excess - spread * BINS
    step = tf.maximum(BINS // tf.maximum(remainder, 1), 1)
    bins = tf.range(BINS)[None, None, :]
    hist = hist + spread + tf.cast((bins % step == 0) & (bins // step < remainder), tf.int32)

    # Look-up tables, rounded half to even like OpenCV's saturate_cast.
    scale = np.float32((BINS - 1) / area)
    lut = tf.round(tf.cast(tf.cumsum(hist, axis=-1), tf.float32) * scale)
    flat_lut = tf.reshape(lut, (-1,))

    row1, row2, row_w = _interpolation_weights(height, tile_h, tiles)
    col1, col2, col_w = _interpolation_weights(width, tile_w, tiles)

    def lookup(rows, cols):
        tile = tf.constant((rows[:, None] * tiles + cols[None, :]).astype(np.int32))
        return tf.gather(flat_lut, (films * tiles * tiles + tile[None]) * BINS + levels)

    col_w = tf.constant(col_w[None, None, :])
    row_w = tf.constant(row_w[None, :, None])
    top = lookup(row1, col1) * (1.0 - col_w) + lookup(row1, col2) * col_w
    bottom = lookup(row2, col1) * (1.0 - col_w) + lookup(row2, col2) * col_w
    out = tf.round(top * (1.0 - row_w) + bottom * row_w)
    return (tf.clip_by_value(out, 0.0, BINS - 1.0) / (BINS - 1))[..., tf.newaxis]


@keras.saving.register_keras_serializable(package="pneumonia")
class LocalContrastEqualization(keras.layers.Layer):
    """Keras layer applying :func:`equalize_local_contrast`; no weights, same shape out."""

    def __init__(self, clip_limit: float = 2.0, tiles: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.clip_limit = float(clip_limit)
        self.tiles = int(tiles)

    def call(self, inputs):
        return equalize_local_contrast(inputs, self.clip_limit, self.tiles)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "clip_limit": self.clip_limit, "tiles": self.tiles}
