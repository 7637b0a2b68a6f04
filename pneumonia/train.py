"""Train the pneumonia CNN from scratch on the dataset's ``train`` split.

``python -m pneumonia train --data ../shared/data/chest_xray --out model/``

What it does, in order: list ``<data>/train``; carve a validation split from it **by patient**;
decode every film once with the inference preprocessing; train with augmentation suited to
frontal films (small rotations, zoom and shifts, no flips; exposure, gamma, sharpness and noise
changes), class weights for the 1:2.9 imbalance, AdamW with a warm-up + cosine schedule, and
the weights averaged over the last 10 epochs with batch-norm statistics recomputed (or, with
``--swa-epochs 0``, early stopping on validation ROC AUC); then fit temperature scaling and the
decision threshold on the validation split, and save the network with its metadata.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from pneumonia import __version__
from pneumonia.data import CLASS_NAMES, iterate_batches, list_records, load_images, split_by_patient


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of one training run (all stored in the metadata)."""

    input_size: int = 160
    widths: tuple[int, ...] = (24, 48, 96, 128, 128)
    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    dropout: float = 0.2
    patience: int = 8
    val_fraction: float = 0.15
    seed: int = 42  # weights, augmentation and shuffling
    split_seed: int = 42  # the patient-wise validation split; kept apart so seeds can vary on one split
    augment: bool = True
    erase_prob: float = 0.0  # chance a film gets one random rectangle (2-12 % of it) erased
    mixup_alpha: float = 0.0  # mix pairs of films and their labels, weight ~ Beta(a, a) (0: off)
    swa_epochs: int = 10  # average the weights of the last N epochs (0: early stopping, keep the best epoch)
    aspect_jitter: float = 0.0  # films were squashed to squares from varying aspect ratios
    clahe_clip: float = 0.0  # CLAHE inside the network before standardisation (0: off)
    balanced_sampling: bool = True  # draw each film's class 50:50 (False: class-weighted loss instead)
    limit: int = 0  # films per class, 0 = all; for smoke tests


def augment_batch(images, seed_generator, erase_prob: float = 0.0):
    """Random intensity changes and random erasing for a batch of training films.

    Args:
        images: ``float32`` tensor ``(B, S, S, 1)`` in ``[0, 1]``.
        seed_generator: a ``keras.random.SeedGenerator`` (keeps runs reproducible).
        erase_prob: probability that a film gets one rectangle (2-12 % of its area, aspect
            1:2 to 2:1) filled with a random grey, so no single region (a marker, a tube, one
            lobe) can decide the label alone.

    Returns:
        Tensor of the same shape, still in ``[0, 1]``.
    """
    import keras
    import tensorflow as tf

    batch = tf.shape(images)[0]

    def uniform(low, high, shape=None):
        shape = (batch, 1, 1, 1) if shape is None else shape
        return keras.random.uniform(shape, low, high, seed=seed_generator)

    # Exposure and processing differ between machines and hospitals: vary the window and gamma.
    low = uniform(0.0, 0.12)
    high = uniform(0.88, 1.0)
    x = tf.clip_by_value((images - low) / (high - low), 0.0, 1.0)
    x = tf.pow(x + 1e-6, tf.exp(uniform(-0.4, 0.4)))
    # Sharpness is a shortcut in this dataset: the training split's NORMAL films are sharper than
    # its PNEUMONIA films (Laplacian s.d. 0.051 vs 0.040 on the 224 px copies). Blur (t > 0) or
    # unsharp-mask (t < 0) each film by a random amount so sharpness carries no label.
    blurred = gaussian_blur(x, sigma=2.0)
    x = x + uniform(-0.6, 1.0) * (blurred - x)
    x = x + uniform(0.0, 0.03) * keras.random.normal(tf.shape(x), seed=seed_generator)
    if erase_prob > 0:
        x = erase_rectangles(x, erase_prob, uniform)
    return tf.clip_by_value(x, 0.0, 1.0)


def mix_pairs(images, labels, alpha: float, seed_generator):
    """Mixup: blend each film and its label with those of another film of the batch.

    Args:
        images: ``float32 (B, S, S, 1)``.
        labels: ``float32 (B, 1)`` in ``[0, 1]``.
        alpha: the Beta distribution's parameter for the blend weight.
        seed_generator: a ``keras.random.SeedGenerator``.

    Returns:
        ``(images, labels)`` blended with weight ``w ~ Beta(alpha, alpha)`` per film.
    """
    import keras
    import tensorflow as tf

    batch = tf.shape(images)[0]
    weight = keras.random.beta((batch, 1), alpha, alpha, seed=seed_generator)
    partner = keras.random.shuffle(tf.range(batch), seed=seed_generator)
    mixed_images = weight[:, :, None, None] * images + (1.0 - weight[:, :, None, None]) * tf.gather(images, partner)
    mixed_labels = weight * labels + (1.0 - weight) * tf.gather(labels, partner)
    return mixed_images, mixed_labels


def erase_rectangles(images, probability: float, uniform):
    """Fill one random rectangle per film with a random grey, for a ``probability`` share of films.

    Args:
        images: ``float32 (B, H, W, 1)`` tensor in ``[0, 1]``.
        probability: share of films that get a rectangle.
        uniform: ``uniform(low, high)`` drawing a ``(B, 1, 1, 1)`` tensor from the run's seeds.
    """
    import tensorflow as tf

    height = tf.cast(tf.shape(images)[1], tf.float32)
    width = tf.cast(tf.shape(images)[2], tf.float32)
    area = uniform(0.02, 0.12)
    aspect = tf.exp(uniform(-0.69, 0.69))
    h = tf.sqrt(area * aspect) * height
    w = tf.sqrt(area / aspect) * width
    top = uniform(0.0, 1.0) * (height - h)
    left = uniform(0.0, 1.0) * (width - w)
    rows = tf.reshape(tf.range(height), (1, -1, 1, 1))
    cols = tf.reshape(tf.range(width), (1, 1, -1, 1))
    inside = (rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)
    chosen = uniform(0.0, 1.0) < probability
    mask = tf.cast(inside & chosen, tf.float32)
    return images * (1.0 - mask) + uniform(0.0, 1.0) * mask


def gaussian_blur(images, sigma: float):
    """Gaussian blur of a ``(B, H, W, 1)`` tensor with reflected borders (separable kernel)."""
    import tensorflow as tf

    radius = int(3 * sigma + 0.5)
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / tf.reduce_sum(kernel)
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    x = tf.nn.conv2d(padded, tf.reshape(kernel, (-1, 1, 1, 1)), 1, "VALID")
    return tf.nn.conv2d(x, tf.reshape(kernel, (1, -1, 1, 1)), 1, "VALID")


def build_augmenter(seed: int, aspect_jitter: float = 0.0):
    """Geometric augmentation layers: rotation up to ~11 degrees, zoom, shifts; never flips.

    Films are taken in one orientation (heart on the patient's left), so flipping would teach
    the network anatomy it never sees. With ``aspect_jitter`` > 0 width is zoomed independently
    of height (by up to that fraction more or less), because every film was squashed to a
    square from its own aspect ratio, so the same chest appears wider or narrower.
    """
    import keras
    from keras import layers

    return keras.Sequential(
        [
            layers.RandomRotation(0.03, fill_mode="constant", seed=seed),
            layers.RandomZoom((-0.15, 0.1), width_factor=(-0.15 - aspect_jitter, 0.1 + aspect_jitter)
                              if aspect_jitter > 0 else None, fill_mode="constant", seed=seed + 1),
            layers.RandomTranslation(0.06, 0.06, fill_mode="constant", seed=seed + 2),
        ],
        name="augment",
    )


def make_datasets(train_x, train_y, val_x, val_y, config: TrainConfig):
    """``tf.data`` pipelines: shuffled, augmented training batches and plain validation batches."""
    import keras
    import tensorflow as tf

    def to_float(x, y):
        return tf.cast(x[..., tf.newaxis], tf.float32) / 255.0, y

    augmenter = build_augmenter(config.seed, config.aspect_jitter)
    seed_generator = keras.random.SeedGenerator(config.seed)

    def augment(x, y):
        x = augmenter(x, training=True)
        x = augment_batch(tf.clip_by_value(x, 0.0, 1.0), seed_generator, config.erase_prob)
        if config.mixup_alpha > 0:
            x, y = mix_pairs(x, y, config.mixup_alpha, seed_generator)
        return x, y

    labels = train_y.astype("float32")[:, None]
    if config.balanced_sampling:
        # Each film's class is drawn 50:50, then a film of that class from its own endless shuffled
        # stream; an epoch keeps the plain run's number of batches, so schedules compare.
        streams = [
            tf.data.Dataset.from_tensor_slices((train_x[train_y == c], labels[train_y == c]))
            .shuffle(int((train_y == c).sum()), seed=config.seed + c, reshuffle_each_iteration=True)
            .repeat()
            for c in (0, 1)
        ]
        films = tf.data.Dataset.sample_from_datasets(streams, weights=[0.5, 0.5], seed=config.seed,
                                                     rerandomize_each_iteration=True)
        train = films.batch(config.batch_size, drop_remainder=True).take(len(train_x) // config.batch_size)
    else:
        train = (
            tf.data.Dataset.from_tensor_slices((train_x, labels))
            .shuffle(len(train_x), seed=config.seed, reshuffle_each_iteration=True)
            .batch(config.batch_size, drop_remainder=True)
        )
    train = train.map(to_float)
    if config.augment:
        train = train.map(augment)
    train = train.prefetch(2)
    val = (
        tf.data.Dataset.from_tensor_slices((val_x, val_y.astype("float32")[:, None]))
        .batch(64)
        .map(to_float)
        .prefetch(2)
    )
    return train, val


def build_compiled_model(config: TrainConfig, steps_per_epoch: int, strategy=None):
    """The network with its optimiser, loss and metrics, created under ``strategy.scope()``.

    Args:
        config: hyper-parameters (widths, dropout, learning-rate schedule, ...).
        steps_per_epoch: optimiser steps per epoch, for the warm-up + cosine schedule.
        strategy: the ``tf.distribute.Strategy`` to train under (see
            :func:`pneumonia.distribute.choose_strategy`); ``None`` for the default one.
            ``config.batch_size`` is the global batch, split across its replicas.

    Returns:
        A compiled ``keras.Model``.
    """
    import keras
    import tensorflow as tf

    from pneumonia.model import build_model

    strategy = strategy or tf.distribute.get_strategy()
    total = max(1, steps_per_epoch * config.epochs)
    warmup = min(total - 1, steps_per_epoch * config.warmup_epochs)
    with strategy.scope():
        model = build_model(config.input_size, config.widths, config.dropout, config.seed, config.clahe_clip)
        schedule = keras.optimizers.schedules.CosineDecay(
            config.learning_rate / 10, decay_steps=max(1, total - warmup), alpha=0.01,
            warmup_target=config.learning_rate, warmup_steps=warmup,
        )
        model.compile(
            optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay),
            loss=keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=config.label_smoothing),
            metrics=[keras.metrics.AUC(name="auc", from_logits=True),
                     keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)],
        )
    return model


def make_weight_averager(start: int):
    """A Keras callback keeping the running mean of the weights from epoch ``start`` (0-based) on.

    Returns:
        The callback; its ``average()`` gives the mean weights, in ``model.get_weights()`` order.
    """
    import keras

    class WeightAverager(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.count, self.total = 0, None

        def on_epoch_end(self, epoch, logs=None):
            if epoch < start:
                return
            weights = [np.asarray(w, np.float64) for w in self.model.get_weights()]
            self.total = weights if self.total is None else [t + w for t, w in zip(self.total, weights)]
            self.count += 1

        def average(self) -> list:
            if not self.count:
                raise ValueError("No epoch reached the averaging window; lower --swa-epochs.")
            return [(t / self.count).astype(np.float32) for t in self.total]

    return WeightAverager()


def recompute_batch_statistics(model, dataset) -> None:
    """Set every batch-norm layer's moving mean and variance to their exact average over one pass
    of ``dataset`` (averaged weights need statistics of their own; those of the last weights no
    longer fit them)."""
    from keras import layers

    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
    for step, (x, _) in enumerate(dataset, start=1):
        for layer in norms:
            layer.momentum = 1.0 - 1.0 / step  # a cumulative mean over the batches seen so far
        model(x, training=True)
    for layer, momentum in zip(norms, saved):
        layer.momentum = momentum


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Balanced weights ``N / (2 * N_c)`` so both classes count equally in the loss."""
    counts = np.bincount(labels, minlength=2).astype(float)
    return {c: float(len(labels) / (2.0 * counts[c])) for c in range(2) if counts[c] > 0}


def predict_logits(model, images_uint8: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits for a ``uint8 (N, S, S)`` array of films, in batches, as ``float64 (N,)``."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def forward(x):
        return model(x, training=False)

    out = [forward(tf.constant(x)).numpy()[:, 0] for x in iterate_batches(images_uint8, batch_size)]
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def split_records(data_dir: str | Path, config: TrainConfig):
    """List ``<data_dir>/train`` (or ``data_dir`` itself) and split it by patient.

    Returns:
        ``(train_root, train_records, val_records)``.

    Raises:
        ValueError: a side of the split lacks one of the classes.
    """
    data_dir = Path(data_dir)
    train_root = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
    records = list_records(train_root)
    if config.limit:
        records = [r for c in range(2) for r in [r for r in records if r.label == c][: config.limit]]
    train_records, val_records = split_by_patient(records, config.val_fraction, config.split_seed)
    if len({r.label for r in val_records}) < 2 or len({r.label for r in train_records}) < 2:
        raise ValueError("Both splits need films of both classes; use more data or a larger --val-fraction.")
    return train_root, train_records, val_records


def config_from_metadata(metadata) -> TrainConfig:
    """The :class:`TrainConfig` a model was trained with, from its :class:`ModelMetadata`.

    Fields added since the model was trained take the value that reproduces what training did
    then (the split followed ``seed``; the loss was class-weighted), else their defaults.
    """
    stored = dict(metadata.training.get("config", {}))
    stored.setdefault("split_seed", stored.get("seed", TrainConfig.seed))
    stored.setdefault("balanced_sampling", False)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items() if k in known})


def refit_gate(data_dir: str | Path, model_dir: str | Path, log=print) -> dict:
    """Fit the chest X-ray gate of an already trained model on the split it was trained with.

    The split is rebuilt from the split seed and validation fraction stored in the model's metadata.
    """
    from pneumonia.model import load_metadata
    from pneumonia.ood import fit_gate_for_model

    metadata = load_metadata(model_dir)
    _, train_records, val_records = split_records(data_dir, config_from_metadata(metadata))
    train_x = load_images([r.path for r in train_records], metadata.input_size)
    val_x = load_images([r.path for r in val_records], metadata.input_size)
    summary = fit_gate_for_model(model_dir, train_x, val_x)
    log(json.dumps(summary, indent=2))
    return summary


def train_model(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, log=print) -> dict:
    """Train, calibrate and save a model. Returns the metadata written, as a dict.

    Training runs under the ``tf.distribute`` strategy the environment calls for
    (:func:`pneumonia.distribute.choose_strategy`). Under a multi-worker strategy every worker
    trains; only the chief calibrates and saves, and the other workers return ``{}``.

    Args:
        data_dir: dataset root holding ``train/NORMAL`` and ``train/PNEUMONIA`` (or the class
            folders directly).
        out_dir: where ``pneumonia_cnn.keras`` and ``metadata.json`` go.
        config: hyper-parameters.
        log: where progress lines go.
    """
    from pneumonia.distribute import choose_strategy, describe_strategy, is_chief

    # First, before any other TensorFlow work: a multi-worker strategy must be created then.
    strategy = choose_strategy()
    import keras

    from pneumonia.calibration import apply_temperature, choose_threshold, expected_calibration_error, fit_temperature
    from pneumonia.evaluate import compute_metrics
    from pneumonia.model import ModelMetadata, build_model, describe_normalization, load_metadata, save_model
    from pneumonia.ood import fit_gate_for_model

    started = time.time()
    log(f"strategy: {describe_strategy(strategy)}")
    train_root, train_records, val_records = split_records(data_dir, config)
    log(f"train: {len(train_records)} films, val: {len(val_records)} films "
        f"({len({r.patient for r in val_records})} patients, none in train)")

    t0 = time.time()
    train_x = load_images([r.path for r in train_records], config.input_size)
    val_x = load_images([r.path for r in val_records], config.input_size)
    train_y = np.array([r.label for r in train_records])
    val_y = np.array([r.label for r in val_records])
    log(f"decoded {len(train_x) + len(val_x)} films at {config.input_size}px in {time.time() - t0:.0f}s")

    keras.utils.set_random_seed(config.seed)
    train_ds, val_ds = make_datasets(train_x, train_y, val_x, val_y, config)
    model = build_compiled_model(config, len(train_x) // config.batch_size, strategy)
    if config.swa_epochs:
        # Stochastic weight averaging replaces early stopping: the run goes to its last epoch.
        averager = make_weight_averager(config.epochs - config.swa_epochs)
        callbacks = [averager]
    else:
        callbacks = [keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=config.patience,
                                                   restore_best_weights=True)]
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=config.epochs,
        class_weight=None if config.balanced_sampling else class_weights(train_y),
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles, reproducibly
        verbose=2,
    )
    if config.swa_epochs:
        model.set_weights(averager.average())
        recompute_batch_statistics(model, train_ds)
        log(f"weights averaged over epochs {config.epochs - config.swa_epochs + 1}-{config.epochs}; "
            "batch-norm statistics recomputed")
    if not is_chief(strategy):
        log("training done on this worker; the chief calibrates and saves the model")
        return {}
    epochs_run = len(history.history["loss"])
    best_epoch = int(np.argmax(history.history["val_auc"])) + 1

    val_logits = predict_logits(model, val_x)
    temperature = fit_temperature(val_logits, val_y)
    val_prob = apply_temperature(val_logits, temperature)
    threshold = choose_threshold(val_prob, val_y)
    figures = compute_metrics(val_y, val_prob, threshold)
    val_metrics = {k: figures[k] for k in ("n", "roc_auc", "accuracy", "sensitivity", "specificity", "ece")}
    val_metrics["ece_uncalibrated"] = expected_calibration_error(apply_temperature(val_logits, 1.0), val_y)
    log("validation: " + json.dumps({k: round(v, 4) for k, v in val_metrics.items()}))
    log(f"temperature {temperature:.3f}, threshold {threshold:.3f}")

    # Save a copy without optimiser state: it halves the file and inference never needs it.
    clean = build_model(config.input_size, config.widths, config.dropout, config.seed, config.clahe_clip)
    clean.set_weights(model.get_weights())
    duration = time.time() - started
    metadata = ModelMetadata(
        version=__version__,
        input_size=config.input_size,
        class_names=CLASS_NAMES,
        threshold=round(threshold, 6),
        temperature=round(temperature, 6),
        normalization=describe_normalization(config.clahe_clip),
        architecture=(f"residual CNN, widths {list(config.widths)}, "
                      f"{'CLAHE + ' if config.clahe_clip > 0 else ''}per-image standardisation, "
                      f"{clean.count_params():,} parameters, logit output"),
        training={
            "data": str(train_root),
            "dataset": "Kermany et al. 2018, Mendeley v2 (CC BY 4.0), official train split",
            "train_films": len(train_records),
            "val_films": len(val_records),
            "val_split": f"{config.val_fraction:.0%} of train, by patient, seed {config.split_seed}",
            "epochs_run": epochs_run,
            "best_epoch": best_epoch,
            "duration_s": round(duration, 1),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "config": dataclasses.asdict(config),
        },
        metrics={"validation": {k: round(v, 4) for k, v in val_metrics.items()}},
        created=dt.date.today().isoformat(),
    )
    path = save_model(clean, metadata, out_dir)
    gate = fit_gate_for_model(out_dir, train_x, val_x)
    log(f"chest X-ray gate: distance threshold {gate['threshold']:.1f}, "
        f"passes {gate['val_pass_rate']:.1%} of validation films")
    log(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB) after {(time.time() - started) / 60:.1f} min")
    return json.loads(load_metadata(out_dir).to_json())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` command's flags to ``parser``."""
    d = TrainConfig()
    parser.add_argument("--data", required=True, help="dataset root (holding train/) or a folder with NORMAL/ and PNEUMONIA/")
    parser.add_argument("--out", default="model", help="output folder for the model and metadata.json")
    parser.add_argument("--input-size", type=int, default=d.input_size)
    parser.add_argument("--widths", type=lambda s: tuple(int(v) for v in s.split(",")), default=d.widths,
                        help="comma-separated channel widths, stem first")
    parser.add_argument("--epochs", type=int, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
    parser.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    parser.add_argument("--patience", type=int, default=d.patience)
    parser.add_argument("--val-fraction", type=float, default=d.val_fraction)
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the weights, augmentation and shuffling")
    parser.add_argument("--split-seed", type=int, default=d.split_seed,
                        help="seed of the patient-wise validation split (separate, so runs with other seeds share it)")
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument("--erase-prob", type=float, default=d.erase_prob,
                        help="share of training films with one random rectangle erased")
    parser.add_argument("--mixup-alpha", type=float, default=d.mixup_alpha,
                        help="mixup of film pairs with weight ~ Beta(a, a); 0 = off")
    parser.add_argument("--swa-epochs", type=int, default=d.swa_epochs,
                        help="average the weights of the last N epochs instead of early stopping (0: off)")
    parser.add_argument("--aspect-jitter", type=float, default=d.aspect_jitter,
                        help="extra independent zoom of the width, as a fraction")
    parser.add_argument("--clahe-clip", type=float, default=d.clahe_clip,
                        help="equalise local contrast (CLAHE, this clip limit) inside the network; 0 = off")
    parser.add_argument("--balanced-sampling", action=argparse.BooleanOptionalAction, default=d.balanced_sampling,
                        help="draw each film's class 50:50 (default); --no-balanced-sampling weights the loss by class instead")
    parser.add_argument("--limit", type=int, default=0, help="films per class (smoke tests); 0 = all")


def run(args: argparse.Namespace) -> int:
    """Run the ``train`` command from parsed arguments."""
    # Every flag is named after the TrainConfig field it sets, so the config is read off the flags.
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                            if hasattr(args, f.name)})
    train_model(args.data, args.out, config, log=lambda m: print(m, flush=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m pneumonia.train``."""
    parser = argparse.ArgumentParser(prog="python -m pneumonia train", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
