"""The "not a chest X-ray" gate: is this image like the films the network was trained on?

An image is called UNKNOWN when it is in colour (a chest film has no chroma; the limit,
``MAX_COLOURFULNESS``, leaves room for a tinted phone photo of a film), or when its description is
far, in Mahalanobis distance, from the training films. The description joins what the network itself sees (the pooled activations of its
last convolutional stage) with simple intensity statistics of the model input (a 16-bin histogram of
the film stretched to its own min..max, so bit depth and exposure do not move it, and the
left-right symmetry of the film). The mean and a shrunk covariance (Ledoit-Wolf) are
fitted on the training films only; the distance threshold is the ``quantile`` of the validation
films' distances. No non-X-ray image is used to build the gate, so every negative image it is
measured on is unseen.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

OOD_FILENAME = "ood.npz"
FEATURE_LAYER = "pool"
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
        return distance <= self.threshold and colourfulness <= self.max_colourfulness

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


def describe_images(predictor, images_uint8: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Gate descriptions ``(N, D)`` for ``uint8 (N, S, S)`` films already at the model's size."""
    from pneumonia.data import iterate_batches

    return np.concatenate([predictor.describe_batch(batch)[1] for batch in iterate_batches(images_uint8, batch_size)])


def fit_gate_for_model(model_dir: str | Path, train_images: np.ndarray, val_images: np.ndarray,
                       quantile: float = 0.995) -> dict:
    """Fit the gate for the model in ``model_dir``, save ``ood.npz`` and record it in the metadata.

    Args:
        model_dir: folder with the trained model and its metadata.
        train_images: ``uint8 (N, S, S)`` training films at the model's input size.
        val_images: ``uint8 (M, S, S)`` validation films (patients not in ``train_images``).
        quantile: share of validation films the gate must pass.

    Returns:
        The gate summary stored under ``metadata.ood``.
    """
    from pneumonia.inference import Predictor
    from pneumonia.model import load_model, update_metadata

    model, metadata = load_model(model_dir)
    predictor = Predictor(model, metadata)
    gate, summary = fit_gate(describe_images(predictor, train_images), describe_images(predictor, val_images),
                             quantile)
    gate.save(model_dir)
    update_metadata(model_dir, ood=summary)
    return summary
