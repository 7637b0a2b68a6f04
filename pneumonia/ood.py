"""The "not a chest X-ray" gate: is this image like the films the network was trained on?

Two checks need no fitting: a colour check, and a frontal-view check (:func:`measure_lung_fields`:
a frontal film shows two lung fields side by side; a lateral one does not). The fitted check is a
distance.

An image is called UNKNOWN when it is in colour (a chest film has no chroma; the limit,
``MAX_COLOURFULNESS``, leaves room for a tinted phone photo of a film), when its description is
far, in Mahalanobis distance, from the training films, or when it lacks two lung fields side by
side (:func:`looks_lateral`). The description joins what the network itself sees (the pooled
activations of its last convolutional stage) with simple intensity statistics of the model input
(a 16-bin histogram of the film stretched to its own min..max, so bit depth and exposure do not
move it, and the left-right symmetry of the film). The mean and a shrunk covariance (Ledoit-Wolf) are
fitted on the training films only; the distance threshold is the ``quantile`` of the validation
films' distances. No non-X-ray image is used to build the gate, so every negative image it is
measured on is unseen.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from pneumonia.model import FEATURE_LAYER, update_metadata

OOD_FILENAME = "ood.npz"
HISTOGRAM_BINS = 16
# Mean chroma (max - min of R, G, B over the full range) above which an upload is not a film.
# Training films have 0; photos, histology and charts 0.1-0.45 (see pneumonia/negatives.py).
MAX_COLOURFULNESS = 0.08


def describe_inputs(batch: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Join the network's pooled features with intensity statistics of its inputs.

    Args:
        batch: model inputs ``float32 (N, S, S, 1)`` in ``[0, 1]``.
        features: pooled activations ``(N, C)`` for the same inputs.

    Returns:
        ``float64 (N, C + 17)``: the features, a 16-bin histogram (fractions) of each image
        stretched to its own min..max, and the mean absolute left-right difference of that.
    """
    images = np.asarray(batch, dtype=np.float32)[..., 0]
    n = images.shape[0]
    low = images.min(axis=(1, 2), keepdims=True)
    high = images.max(axis=(1, 2), keepdims=True)
    images = (images - low) / np.maximum(high - low, 1e-6)
    index = np.minimum((images.reshape(n, -1) * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)
    histogram = np.stack([np.bincount(row, minlength=HISTOGRAM_BINS) for row in index]) / index.shape[1]
    symmetry = np.abs(images - images[:, :, ::-1]).mean(axis=(1, 2))[:, None]
    return np.concatenate([np.asarray(features, np.float64), histogram, symmetry], axis=1)


# The frontal-view check (measure_lung_fields). Rows and columns are fractions of the image
# height and of the body's width; levels and dips are fractions of each row band's own range.
# Four bands of rows from the apices to the bases of the lungs on a frontal film.
LUNG_BANDS = ((0.25, 0.40), (0.35, 0.50), (0.45, 0.60), (0.55, 0.70))
# Columns whose mean profile is above this level are inside the body (air beside it is darker).
BODY_LEVEL = 0.2
# Where the ridge between the two fields (mediastinum and spine) is looked for: the middle of
# the body (on the 1,202 frontal films here it lies at 0.38-0.63, median 0.5).
RIDGE_COLUMNS = (0.35, 0.65)
# Where each lung field is looked for: this far from the ridge, on either side.
FIELD_REACH = (0.05, 0.30)
# A frontal film has a lung field either side of the ridge: over the four bands, the darker
# side's darkest column is on average at least this much darker than the ridge. The mediastinum
# and spine run the whole height of the lungs; a lateral film's only central density (the hila)
# is local, and its long bright band (the spine) is at the back. Measured: real frontal films 0.10
# at the least (median about 0.5); drawn laterals (tests/phantoms.py) 0.08 at the most while their
# hila are darker than soft tissue, but up to 0.12, so missed, with hila as dense as soft tissue.
MIN_MEAN_DIP = 0.09


class LungFields(NamedTuple):
    """What :func:`measure_lung_fields` measured.

    Attributes:
        ridge: column of the central ridge, as a fraction of the body's width (0 = its left edge).
        dips: for each band of :data:`LUNG_BANDS`, how much darker than the ridge the darker
            side's lung field is (the smaller of the two sides' dips; negative when a side is
            brighter than the ridge), in units of the band's range.
    """

    ridge: float
    dips: tuple[float, ...]

    @property
    def is_frontal(self) -> bool:
        """Lung fields either side of the ridge: the mean dip is at least :data:`MIN_MEAN_DIP`."""
        return float(np.mean(self.dips)) >= MIN_MEAN_DIP


def measure_lung_fields(image: np.ndarray) -> LungFields:
    """Measure whether a chest image shows two lung fields side by side, as a frontal film does.

    A frontal (PA/AP) film crossed anywhere from the lung apices to the bases reads, left to
    right: chest wall, lung (dark), mediastinum and spine (a bright ridge in the middle, the whole
    height of the lungs), lung (dark), chest wall. A lateral film reads: anterior chest wall and
    sternum, one dark lung region (the two lungs overlap; the hila are a local density in it),
    then the spine, a bright band at the back. The check averages each band of rows in
    :data:`LUNG_BANDS` into a column profile (smoothed over 5 % of the width, scaled to its own
    range), finds the body (columns whose mean profile is above :data:`BODY_LEVEL`), takes as the
    ridge the column in the middle of the body (:data:`RIDGE_COLUMNS`) that is brightest at every
    height (the largest minimum over the bands), and in each band measures how much darker than
    the ridge the darkest column within :data:`FIELD_REACH` of it is, on each side.

    Args:
        image: ``float (H, W)`` in ``[0, 1]``, 0 = black (the intensity convention), e.g. the
            model input ``(S, S)``.

    Returns:
        :class:`LungFields`; its ``is_frontal`` says whether the film passes.
    """
    image = np.asarray(image, dtype=np.float64)
    height, width = image.shape
    window = max(3, width // 20) | 1  # odd; keeps the fields, drops ribs and noise
    profiles = []
    for top, bottom in LUNG_BANDS:
        rows = image[int(round(top * height)):max(int(round(bottom * height)), int(round(top * height)) + 1)]
        profile = np.convolve(np.pad(rows.mean(axis=0), window // 2, mode="edge"), np.ones(window) / window,
                              mode="valid")
        profiles.append((profile - profile.min()) / max(profile.max() - profile.min(), 1e-6))
    profiles = np.array(profiles)
    body = np.flatnonzero(profiles.mean(axis=0) >= BODY_LEVEL)
    if body.size == 0:  # a flat image: nothing side by side
        return LungFields(0.5, (0.0,) * len(LUNG_BANDS))
    u = (np.arange(width) - body[0]) / (body[-1] - body[0] + 1)  # position across the body
    middle = np.flatnonzero((u >= RIDGE_COLUMNS[0]) & (u <= RIDGE_COLUMNS[1]))
    if middle.size == 0:
        return LungFields(0.5, (0.0,) * len(LUNG_BANDS))
    ridge = int(middle[np.argmax(profiles[:, middle].min(axis=0))])
    near, far = FIELD_REACH
    sides = [(offset >= near) & (offset <= far) for offset in (u[ridge] - u, u - u[ridge])]
    dips = tuple(float(min(profile[ridge] - profile[side].min() if side.any() else 0.0 for side in sides))
                 for profile in profiles)
    return LungFields(float(u[ridge]), dips)


def looks_lateral(image: np.ndarray) -> bool:
    """Whether a chest image lacks the two lung fields side by side of a frontal film.

    Args:
        image: ``float (H, W)`` in ``[0, 1]`` (see :func:`measure_lung_fields`).

    Returns:
        True when it does not look frontal (a lateral view, or no two fields at all).
    """
    return not measure_lung_fields(image).is_frontal


@dataclasses.dataclass(frozen=True)
class OodGate:
    """Mahalanobis gate: ``mean (D,)``, ``precision (D, D)``, a squared-distance ``threshold``
    and the largest colourfulness a film may have."""

    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    max_colourfulness: float = MAX_COLOURFULNESS

    def accepts(self, distance: float, colourfulness: float) -> bool:
        """True when an upload at this distance and colourfulness looks like a chest film."""
        return self.find_refusal(distance, colourfulness) is None

    def find_refusal(self, distance: float, colourfulness: float) -> Optional[str]:
        """Why the gate refuses an upload: ``"colour"``, ``"unlike_training"`` or ``None``.

        The keys index :data:`pneumonia.notes.UNKNOWN_REASONS`; colour is checked first (it
        says more to the person who uploaded the image).
        """
        if colourfulness > self.max_colourfulness:
            return "colour"
        if distance > self.threshold:
            return "unlike_training"
        return None

    def distances(self, descriptions: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distances ``(N,)`` of descriptions ``(N, D)``."""
        centred = np.asarray(descriptions, np.float64) - self.mean
        return np.einsum("nd,de,ne->n", centred, self.precision, centred)

    def save(self, model_dir: str | Path) -> Path:
        path = Path(model_dir) / OOD_FILENAME
        np.savez(path, mean=self.mean.astype(np.float32), precision=self.precision.astype(np.float32),
                 threshold=np.float64(self.threshold), max_colourfulness=np.float64(self.max_colourfulness))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "OodGate":
        with np.load(Path(model_dir) / OOD_FILENAME) as data:
            return cls(data["mean"].astype(np.float64), data["precision"].astype(np.float64),
                       float(data["threshold"]), float(data["max_colourfulness"]))


def fit_gate(train_descriptions: np.ndarray, val_descriptions: np.ndarray, quantile: float = 0.995) -> tuple[OodGate, dict]:
    """Fit the gate on training films and set its threshold on validation films.

    Args:
        train_descriptions: ``(N, D)`` from :func:`describe_inputs` on training films.
        val_descriptions: ``(M, D)`` on validation films (other patients).
        quantile: share of validation films that must pass.

    Returns:
        ``(gate, summary)`` where summary has the threshold and the validation pass rate.
    """
    from sklearn.covariance import LedoitWolf

    estimator = LedoitWolf().fit(train_descriptions)
    mean = estimator.location_
    precision = estimator.precision_
    gate = OodGate(mean, precision, 0.0)
    val_d = gate.distances(val_descriptions)
    threshold = float(np.quantile(val_d, quantile))
    gate = OodGate(mean, precision, threshold)
    summary = {
        "method": "colour check, then Mahalanobis distance (Ledoit-Wolf covariance) on pooled CNN "
                  "features + 16-bin min-max-stretched intensity histogram + left-right symmetry",
        "max_colourfulness": MAX_COLOURFULNESS,
        "file": OOD_FILENAME,
        "feature_layer": FEATURE_LAYER,
        "threshold": round(threshold, 4),
        "quantile": quantile,
        "val_pass_rate": float(np.mean(val_d <= threshold)),
        "fitted_on": f"{len(train_descriptions)} training films; threshold on {len(val_descriptions)} validation films",
    }
    return gate, summary


def describe_images(forward, images_uint8: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, ...]:
    """One pass of the product's forward function over ``uint8 (N, S, S)`` films already at the
    model's size.

    Args:
        forward: the network's forward pass (:attr:`pneumonia.gradcam.NetworkFunctions.forward`).
        images_uint8: the films.
        batch_size: films per forward pass.

    Returns:
        ``(logits (N,), pooled features (N, C), gate descriptions (N, D))``: what calibration, the
        population probe and the gate are each fitted on, computed once.
    """
    logits, features, descriptions = [], [], []
    for start in range(0, len(images_uint8), batch_size):  # the intensity convention, as in training
        batch = images_uint8[start:start + batch_size, ..., None].astype(np.float32) / 255.0
        batch_logits, pooled = (np.asarray(out) for out in forward(batch))
        logits.append(batch_logits.astype(np.float64))
        features.append(pooled)
        descriptions.append(describe_inputs(batch, pooled))
    return tuple(np.concatenate(parts) for parts in (logits, features, descriptions))


def fit_gate_for_model(model_dir: str | Path, train_descriptions: np.ndarray, val_descriptions: np.ndarray,
                       quantile: float = 0.995) -> dict:
    """Fit the gate of the model in ``model_dir``, save ``ood.npz`` and record it in the metadata.

    Args:
        model_dir: folder with the trained model and its metadata.
        train_descriptions: ``(N, D)`` of the training films (:func:`describe_images`).
        val_descriptions: ``(M, D)`` of the validation films (patients not among the training films).
        quantile: share of validation films the gate must pass.

    Returns:
        The gate summary stored under ``metadata.ood``.
    """
    gate, summary = fit_gate(train_descriptions, val_descriptions, quantile)
    gate.save(model_dir)
    update_metadata(model_dir, ood=summary)
    return summary
