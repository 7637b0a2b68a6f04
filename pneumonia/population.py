"""Which population a film looks like it comes from: a child's (Kermany) or an adult's (NIH).

The network's operating point and its measured figures differ between children and adults, so
inference needs the population. A DICOM's ``PatientAge`` gives it; otherwise this linear probe on
the network's pooled features (``pool``) estimates it from the image. It is a logistic regression
fitted on the training films (child 0, adult 1), stored as ``population.npz`` beside the network,
and checked on the validation films. It tells the two training sources apart; on a film from
another hospital it is a guess, which is why the verdict says which population was used and how.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from pneumonia.dicom import AGE_GROUPS
from pneumonia.model import load_metadata, update_metadata

PROBE_FILENAME = "population.npz"
ADULT_AGE = 18.0
# Where the population of a verdict came from, in words shown beside it.
FROM_AGE = "DICOM patient age"
FROM_IMAGE = "estimated from the image"


def population_from_age_group(age_group: str | None) -> str | None:
    """``"adult"`` for an age band starting at 18 years or more, ``"child"`` below, ``None`` unknown.

    Args:
        age_group: a label of :data:`pneumonia.dicom.AGE_GROUPS`, or ``None``.
    """
    lower = {label: low for low, label in AGE_GROUPS}.get(age_group)
    if lower is None:
        return None
    return "adult" if lower >= ADULT_AGE else "child"


def choose_population(age_group: str | None, adult_probability: float | None) -> tuple[str | None, str | None]:
    """The population whose operating point reads a film, and how it was known.

    Args:
        age_group: the DICOM age band, or ``None``.
        adult_probability: the probe's P(adult) for the film in ``[0, 1]``, or ``None`` when the
            model has no probe.

    Returns:
        ``(population, source)``: the DICOM age decides when given (:data:`FROM_AGE`), else the
        probe at 0.5 (:data:`FROM_IMAGE`); ``(None, None)`` when neither is known.
    """
    population = population_from_age_group(age_group)
    if population is not None:
        return population, FROM_AGE
    if adult_probability is None:
        return None, None
    return ("adult" if adult_probability >= 0.5 else "child"), FROM_IMAGE


@dataclasses.dataclass(frozen=True)
class PopulationProbe:
    """``P(adult | pooled features) = sigmoid(((features - mean) / scale) @ coef + intercept)``.

    Attributes:
        mean: ``float64 (C,)`` feature means of the training films.
        scale: ``float64 (C,)`` feature standard deviations (1 where a feature is constant).
        coef: ``float64 (C,)`` weights on the standardised features.
        intercept: the bias.
    """

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def adult_probability(self, features: np.ndarray) -> np.ndarray:
        """``float64 (N,)`` in ``[0, 1]`` for pooled features ``(N, C)``."""
        z = ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))

    def save(self, model_dir: str | Path) -> Path:
        """Write ``<model_dir>/population.npz``."""
        path = Path(model_dir) / PROBE_FILENAME
        np.savez(path, mean=self.mean, scale=self.scale, coef=self.coef, intercept=np.array(self.intercept))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> "PopulationProbe":
        """Read ``<model_dir>/population.npz``.

        Raises:
            OSError, KeyError, ValueError: the file is missing or malformed.
        """
        with np.load(Path(model_dir) / PROBE_FILENAME) as data:
            return cls(data["mean"], data["scale"], data["coef"], float(data["intercept"]))


def fit_population_probe(train_features: np.ndarray, train_is_adult: np.ndarray, val_features: np.ndarray,
                         val_is_adult: np.ndarray, model_dir: str | Path) -> dict:
    """Fit the probe on training films, check it on validation films, save it and record it.

    Args:
        train_features: ``float32 (N, C)`` pooled features of the training films.
        train_is_adult: ``bool (N,)``.
        val_features: ``float32 (M, C)`` of the validation films.
        val_is_adult: ``bool (M,)``.
        model_dir: the model folder: ``population.npz`` is written there and
            ``metadata.populations["probe"]`` records the file and its validation accuracy.

    Returns:
        The record stored in the metadata.
    """
    from sklearn.linear_model import LogisticRegression

    mean = train_features.mean(axis=0).astype(np.float64)
    scale = train_features.std(axis=0).astype(np.float64)
    scale[scale == 0] = 1.0
    # Adults are the smaller class: weigh both equally so the probe is not biased towards children.
    fitted = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000)
    fitted.fit((train_features - mean) / scale, train_is_adult.astype(int))
    probe = PopulationProbe(mean, scale, fitted.coef_[0].astype(np.float64), float(fitted.intercept_[0]))
    probe.save(model_dir)
    said_adult = probe.adult_probability(val_features) >= 0.5
    record = {
        "probe_file": PROBE_FILENAME,
        "method": "logistic regression on the pooled features, child 0 / adult 1, fitted on the training films",
        "val_accuracy_child": round(float(np.mean(~said_adult[~val_is_adult])), 4) if (~val_is_adult).any() else None,
        "val_accuracy_adult": round(float(np.mean(said_adult[val_is_adult])), 4) if val_is_adult.any() else None,
    }
    populations = dict(load_metadata(model_dir).populations)
    populations["probe"] = record
    update_metadata(model_dir, populations=populations)
    return record
