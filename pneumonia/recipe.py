"""The training recipe: what a batch holds, how films (and their boxes) are augmented, the losses.

Batches draw films from (source, class) cells in fixed shares (:func:`cell_shares`): classes 50:50
within every source (Kermany children, NIH adults, SIIM adults), so no source, and no population,
can stand for a class; the sources' shares are a setting (``TrainConfig.*_share``).

Each film travels with a mask of its radiologists' boxes, augmented with the same geometric
transform, and pooled to the evidence map's grid. A second loss (:func:`box_loss`) asks the
network's evidence map (:func:`pneumonia.gradcam.evidence_map`, the per-cell ``conv . w`` whose
mean is the logit) to put its pneumonia evidence inside the boxes: a softmax over the cells gives
each cell a share of the evidence, and the loss is ``-log`` of the share inside the boxes (cells
weighted by how much of them the boxes cover), averaged over the boxed films of the batch. The
map stays the faithful closed-form split of the logit; the loss only decides where evidence goes.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pneumonia.data import SOURCES, Record
from pneumonia.gradcam import evidence_map

MASK_SIDE = 56  # boxes are rasterised at 56 x 56 (4 px per cell at 224), upsampled in the pipeline


def augment_batch(images, seed_generator):
    """Random intensity changes for a batch of training films (:func:`adjust_intensity` with
    parameters drawn per film).

    Args:
        images: ``float32`` tensor ``(B, S, S, 1)`` in ``[0, 1]``.
        seed_generator: a ``keras.random.SeedGenerator`` (keeps runs reproducible).

    Returns:
        Tensor of the same shape, still in ``[0, 1]``.
    """
    import keras
    import tensorflow as tf

    batch = tf.shape(images)[0]

    def uniform(low, high):
        return keras.random.uniform((batch, 1, 1, 1), low, high, seed=seed_generator)

    return adjust_intensity(images, low=uniform(0.0, 0.12), high=uniform(0.88, 1.0), log_gamma=uniform(-0.4, 0.4),
                            blur=uniform(-0.6, 1.0), noise=uniform(0.0, 0.03) * keras.random.normal(
                                tf.shape(images), seed=seed_generator))


def adjust_intensity(images, low, high, log_gamma, blur, noise):
    """Change a batch's exposure, gamma, sharpness and noise.

    Args:
        images: ``float32 (B, S, S, 1)`` in ``[0, 1]``.
        low, high: ``(B, 1, 1, 1)``: the window ``[low, high]`` is stretched to ``[0, 1]``.
        log_gamma: ``(B, 1, 1, 1)``: the result is raised to ``exp(log_gamma)``.
        blur: ``(B, 1, 1, 1)``: ``t`` in ``x + t * (gaussian_blur(x, 2) - x)``: a blur for
            ``t > 0``, an unsharp mask for ``t < 0``.
        noise: ``(B, S, S, 1)``: added last.

    Returns:
        ``float32 (B, S, S, 1)`` clipped to ``[0, 1]``.
    """
    import tensorflow as tf

    # Exposure and processing differ between machines and hospitals: vary the window and gamma.
    x = tf.clip_by_value((images - low) / (high - low), 0.0, 1.0)
    x = tf.pow(x + 1e-6, tf.exp(log_gamma))
    # Sharpness is a shortcut in this dataset: the training split's NORMAL films are sharper than
    # its PNEUMONIA films (Laplacian s.d. 0.051 vs 0.040 on the 224 px copies). Blurring or
    # unsharp-masking each film by a random amount makes sharpness carry no label.
    x = x + blur * (gaussian_blur(x, sigma=2.0) - x)
    return tf.clip_by_value(x + noise, 0.0, 1.0)


def gaussian_blur(images, sigma: float):
    """Gaussian blur of a ``(B, H, W, 1)`` tensor with reflected borders (separable kernel of
    radius ``round(3 sigma)``, normalised to sum 1)."""
    import tensorflow as tf

    radius = int(3 * sigma + 0.5)
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / tf.reduce_sum(kernel)
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    x = tf.nn.conv2d(padded, tf.reshape(kernel, (-1, 1, 1, 1)), 1, "VALID")
    return tf.nn.conv2d(x, tf.reshape(kernel, (1, -1, 1, 1)), 1, "VALID")


def build_augmenter(seed: int):
    """Geometric augmentation layers: rotation up to ~11 degrees, zoom, shifts up to 10 %; never flips.

    Films are taken in one orientation (heart on the patient's left), so flipping would teach
    the network anatomy it never sees. The shifts and zooms move the chest within the frame, so
    where the lungs sit in the film (which differs between hospitals and ages) carries no label.
    """
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomRotation(0.03, fill_mode="constant", seed=seed),
            layers.RandomZoom((-0.2, 0.15), fill_mode="constant", seed=seed + 1),
            layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 2),
        ],
        name="augment",
    )


def cell_shares(shares: dict[str, float]) -> dict[tuple[str, int], float]:
    """Share of each batch drawn from each (source, class) cell: classes 50:50 within each source.

    Args:
        shares: ``{source: share of the batch}``; normalised to sum 1.

    Returns:
        ``{(source, class index): share}`` summing to 1.
    """
    total = sum(shares.values())
    return {(source, label): share / total / 2 for source, share in shares.items() for label in (0, 1)}


def training_targets(records: Sequence[Record], unverified_target: float) -> np.ndarray:
    """Training target per film, ``float32 (N,)``: its class index, except ``unverified_target``
    for a pneumonia label that no radiologist checked."""
    return np.array([unverified_target if (r.label == 1 and not r.verified) else float(r.label)
                     for r in records], np.float32)


def rasterise_boxes(boxes, frame: tuple[int, int], side: int = MASK_SIDE) -> np.ndarray:
    """A film's boxes as a mask on the squashed square the network sees.

    Args:
        boxes: ``((x, y, w, h), ...)`` in the file's pixels.
        frame: the file's ``(width, height)`` (the film is squashed to a square, as boxes are).
        side: the mask's side.

    Returns:
        ``uint8 (side, side)``: 1 inside any box (a pixel counts when its centre is inside), else 0.
    """
    mask = np.zeros((side, side), np.uint8)
    width, height = frame
    centres = np.arange(side) + 0.5
    for x, y, w, h in boxes:
        cols = (centres * width / side >= x) & (centres * width / side < x + w)
        rows = (centres * height / side >= y) & (centres * height / side < y + h)
        mask[np.ix_(rows, cols)] = 1
    return mask


def pool_mask(mask, cells: int):
    """Fraction of each evidence-map cell the boxes cover (a TensorFlow function body).

    Args:
        mask: ``float32 (B, S, S, 1)`` in ``[0, 1]``.
        cells: the map's side ``h = w`` (``S`` must be a multiple of it).

    Returns:
        ``float32 (B, cells, cells)`` in ``[0, 1]``.
    """
    import tensorflow as tf

    size = mask.shape[1]
    return tf.nn.avg_pool2d(mask, size // cells, size // cells, "VALID")[..., 0]


def box_loss(cover, evidence):
    """``-log`` of the share of the evidence inside the boxes, averaged over the boxed films.

    Args:
        cover: ``float32 (B, h, w)``: fraction of each cell inside a box (all 0: no box, no loss).
        evidence: ``float32 (B, h, w)``: the evidence map (:func:`pneumonia.gradcam.evidence_map`).

    Returns:
        ``float32 (B,)`` per-film terms, scaled so that their mean over the batch is the mean over
        the boxed films (Keras averages a loss over the batch).
    """
    from keras import ops

    batch = ops.shape(evidence)[0]
    logits = ops.reshape(evidence, (batch, -1))
    weights = ops.reshape(ops.cast(cover, logits.dtype), (batch, -1))
    boxed = ops.cast(ops.max(weights, axis=1) > 0, logits.dtype)
    # log(sum_i softmax(e)_i * cover_i) = logsumexp(e + log cover) - logsumexp(e); cells outside
    # every box get log(0) -> a large negative number instead of -inf.
    inside = ops.logsumexp(logits + ops.log(ops.maximum(weights, 1e-12)), axis=1)
    share = inside - ops.logsumexp(logits, axis=1)
    count = ops.maximum(ops.sum(boxed), 1.0)
    return -share * boxed * ops.cast(batch, logits.dtype) / count


def build_training_model(model, last_conv_layer: str):
    """The network with a second output, its evidence map, for the box loss.

    Args:
        model: the pneumonia network (``last_conv_layer`` -> pooling -> dropout -> ``Dense(1)``).
        last_conv_layer: the explained layer's name (``metadata.last_conv_layer``).

    Returns:
        A ``keras.Model`` sharing ``model``'s layers and weights, with outputs
        ``{"logit": (N, 1), "evidence": (N, h, w)}``; the evidence is computed from the output
        layer's own kernel, so the map trained is the map shown.
    """
    import keras

    head = model.layers[-1]

    class EvidenceMap(keras.layers.Layer):
        """``conv . w`` with ``w`` the output layer's kernel (read, not owned: no second copy)."""

        def call(self, conv):
            return evidence_map(conv, head.kernel[:, 0])

    evidence = EvidenceMap(name="evidence")(model.get_layer(last_conv_layer).output)
    return keras.Model(model.inputs, {"logit": model.output, "evidence": evidence}, name="training")


def make_datasets(train_x, train_masks, train_records, val_x, val_masks, val_y, config, cells: int):
    """``tf.data`` pipelines: cell-balanced, augmented training batches and plain validation batches.

    Each film of a batch comes from a (source, class) cell drawn with :func:`cell_shares`, then
    from that cell's own endless shuffled stream. An epoch is ``config.films_per_epoch`` films (all
    training films when 0). Cells with no film are left out and the others' shares renormalised.

    Args:
        train_x, val_x: ``uint8 (N, S, S)`` films (:func:`pneumonia.data.load_images`).
        train_masks, val_masks: ``uint8 (N, m, m)`` box masks (:func:`rasterise_boxes`).
        train_records: the training films' records (source, label, verified).
        val_y: ``(N,)`` validation labels.
        config: a :class:`pneumonia.train.TrainConfig`.
        cells: the evidence map's side.

    Returns:
        ``(train, val)`` yielding ``(float32 (B, S, S, 1) in [0, 1], {"logit": (B, 1), "evidence": (B, h, w)})``.
    """
    import keras
    import tensorflow as tf

    size = train_x.shape[1]

    def to_float(x, mask):
        x = tf.cast(x[..., tf.newaxis], tf.float32) / 255.0
        mask = tf.image.resize(tf.cast(mask[..., tf.newaxis], tf.float32), (size, size), method="nearest")
        return x, mask

    augmenter = build_augmenter(config.seed)
    seed_generator = keras.random.SeedGenerator(config.seed)

    def prepare(x, mask, y, augment):
        x, mask = to_float(x, mask)
        if augment:
            # One geometric transform for the film and its boxes: stacked as two channels.
            moved = augmenter(tf.concat([x, mask], axis=-1), training=True)
            x, mask = tf.clip_by_value(moved[..., :1], 0.0, 1.0), moved[..., 1:]
            x = augment_batch(x, seed_generator)
        return x, {"logit": y, "evidence": pool_mask(mask, cells)}

    shares = {source: getattr(config, f"{source}_share") for source in SOURCES}
    targets = training_targets(train_records, config.unverified_target)[:, None]
    sources = np.array([r.source for r in train_records])
    labels = np.array([r.label for r in train_records])
    streams, weights = [], []
    for i, ((source, label), share) in enumerate(cell_shares(shares).items()):
        chosen = (sources == source) & (labels == label)
        if not chosen.any() or share <= 0:
            continue
        streams.append(tf.data.Dataset.from_tensor_slices((train_x[chosen], train_masks[chosen], targets[chosen]))
                       .shuffle(int(chosen.sum()), seed=config.seed + i, reshuffle_each_iteration=True)
                       .repeat())
        weights.append(share)
    films = tf.data.Dataset.sample_from_datasets(streams, weights=list(np.array(weights) / sum(weights)),
                                                 seed=config.seed, rerandomize_each_iteration=True)
    per_epoch = config.films_per_epoch or len(train_x)
    train = films.batch(config.batch_size, drop_remainder=True).take(per_epoch // config.batch_size)
    train = train.map(lambda x, m, y: prepare(x, m, y, config.augment)).prefetch(2)
    val = (
        tf.data.Dataset.from_tensor_slices((val_x, val_masks, val_y.astype("float32")[:, None]))
        .batch(64)
        .map(lambda x, m, y: prepare(x, m, y, False))
        .prefetch(2)
    )
    return train, val
