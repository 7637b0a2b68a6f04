"""Turn logits into calibrated probabilities and pick the operating threshold.

Both are fitted on the patient-wise validation split only, never on the test split.
"""

from __future__ import annotations

import numpy as np

# Defined in pneumonia.metrics; importable from here as well, for train.py.


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated PNEUMONIA probabilities ``sigmoid(logits / temperature)``.

    Args:
        logits: float array of any shape.
        temperature: positive scalar.

    Returns:
        ``float64`` array of the same shape in ``(0, 1)``.
    """
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    # Split by sign so exp never overflows.
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fit the temperature that minimises the negative log-likelihood (Guo et al. 2017).

    Args:
        logits: ``(N,)`` uncalibrated logits.
        labels: ``(N,)`` 0/1 ground truth.

    Returns:
        The temperature, in ``[0.05, 20]``.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        # log(1 + exp(-z)) for y=1 and log(1 + exp(z)) for y=0, computed stably.
        return float(np.mean(np.logaddexp(0.0, -z) * labels + np.logaddexp(0.0, z) * (1 - labels)))

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def choose_threshold(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Pick the threshold that maximises Youden's J (sensitivity + specificity - 1).

    J does not depend on the class ratio, which differs between the training split (1:2.9) and
    the clinic; ties are broken towards the threshold nearest 0.5.

    Args:
        probabilities: ``(N,)`` calibrated PNEUMONIA probabilities.
        labels: ``(N,)`` 0/1 ground truth; both classes must be present.

    Returns:
        A threshold strictly inside ``(0, 1)``: a film is PNEUMONIA when ``p >= threshold``.
    """
    from sklearn.metrics import roc_curve

    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    j = tpr - fpr
    finite = np.isfinite(thresholds) & (thresholds > 0) & (thresholds < 1)
    if not finite.any():
        return 0.5
    j = np.where(finite, j, -np.inf)
    best = np.flatnonzero(j >= j.max() - 1e-12)
    pick = best[np.argmin(np.abs(thresholds[best] - 0.5))]
    return float(np.clip(thresholds[pick], 1e-3, 1 - 1e-3))


# choose_stable_threshold's defaults, which training uses and records (pneumonia.train.THRESHOLD_RULE).
STABLE_RESAMPLES = 1000
STABLE_SEED = 0


def choose_stable_threshold(probabilities: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                            resamples: int = STABLE_RESAMPLES, seed: int = STABLE_SEED) -> float:
    """The median, over bootstrap resamples of the patients, of :func:`choose_threshold`.

    On a validation split that separates the classes almost perfectly, Youden's J is flat over a
    wide range of thresholds and its single maximum lands anywhere on that plateau; the median over
    resamples sits where the maximum usually falls, and moves far less with the films drawn
    (docs/experiments.md, session 6). Patients are drawn within each class, so every resample has
    both classes; all films of a drawn patient come along.

    Args:
        probabilities: ``(N,)`` calibrated PNEUMONIA probabilities.
        labels: ``(N,)`` 0/1 ground truth; both classes must be present.
        groups: ``(N,)`` patient ids (any hashable values); a patient's films share one label.
        resamples: number of bootstrap resamples.
        seed: seed of the resampling (the result is a function of the films and the seed).

    Returns:
        A threshold strictly inside ``(0, 1)``: a film is PNEUMONIA when ``p >= threshold``.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    _, patient = np.unique(np.asarray(groups).ravel(), return_inverse=True)
    films_of = [np.flatnonzero(patient == p) for p in range(patient.max() + 1)]
    by_class = [[p for p in range(len(films_of)) if labels[films_of[p][0]] == c] for c in (0, 1)]
    rng = np.random.default_rng(seed)
    picks = []
    for _ in range(resamples):
        drawn = [p for members in by_class for p in rng.choice(members, size=len(members), replace=True)]
        index = np.concatenate([films_of[p] for p in drawn])
        picks.append(choose_threshold(probabilities[index], labels[index]))
    return float(np.median(picks))
