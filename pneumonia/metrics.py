"""The figures a model is judged by, each defined once: classification at an operating point,
calibration error, bootstrap intervals (by film or by patient) and the pointing game.

Everything here is a pure function of arrays: no model, no files. ``evaluate``, ``robustness``,
``calibration`` and ``train`` import these definitions instead of writing their own.

Verdicts are coded as integers: ``0`` NORMAL, ``1`` PNEUMONIA and :data:`NO_VERDICT` (``-1``) for
an UNKNOWN answer (the product gave no diagnosis). A film with no verdict is neither found nor
cleared: it counts against sensitivity, specificity and accuracy alike, and is counted apart.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from pneumonia.data import CLASS_NAMES

NO_VERDICT = -1
# The figures every evaluated population reports with a bootstrap interval.
HEADLINE_KEYS = ("accuracy", "sensitivity", "specificity", "roc_auc", "ece")
# A heatmap's peak "points at" a box when it is at most this far from it (pixels of the 512 px film).
POINTING_TOLERANCE_PX = 15.0


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of P(PNEUMONIA) with equal-width bins.

    ``sum_b (n_b / N) * |mean(y in b) - mean(p in b)|`` over ``bins`` bins of ``[0, 1]``.

    Args:
        probabilities: ``(N,)`` predicted PNEUMONIA probabilities in ``[0, 1]``.
        labels: ``(N,)`` 0/1 ground truth.
        bins: number of equal-width bins.

    Returns:
        ECE in ``[0, 1]``.
    """
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    index = np.minimum((p * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            ece += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(ece)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (scikit-learn), NaN with one class only.

    Args:
        labels: ``(N,)`` 0/1 ground truth.
        scores: ``(N,)`` higher means more likely PNEUMONIA.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def verdict_codes(verdicts: Sequence[str], class_names: Sequence[str] = CLASS_NAMES) -> np.ndarray:
    """Integer codes of the product's labels: the class index, :data:`NO_VERDICT` for any other label.

    Args:
        verdicts: labels as a :class:`pneumonia.inference.Prediction` gives them
            (``"NORMAL"``, ``"PNEUMONIA"``, ``"UNKNOWN"``).
        class_names: the model's class names, index 0 NORMAL and 1 PNEUMONIA.

    Returns:
        ``int64 (N,)`` in ``{-1, 0, 1}``.
    """
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index.get(v, NO_VERDICT) for v in verdicts], dtype=np.int64)


def threshold_verdicts(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Verdict codes of raw network scores with no gate: PNEUMONIA (1) when ``p >= threshold``, else 0."""
    return (np.asarray(probabilities, dtype=np.float64) >= threshold).astype(np.int64)


def share(hits: np.ndarray) -> float:
    """Mean of a boolean array, NaN when it is empty (a rate with no films to measure it on)."""
    hits = np.asarray(hits, dtype=bool)
    return float(hits.mean()) if hits.size else float("nan")


def headline_figures(labels: np.ndarray, probabilities: np.ndarray, verdicts: np.ndarray) -> dict[str, float]:
    """Accuracy, sensitivity, specificity (from the verdicts), ROC AUC and ECE (from the probabilities).

    Args:
        labels: ``(N,)`` 0 NORMAL / 1 PNEUMONIA.
        probabilities: ``(N,)`` calibrated P(PNEUMONIA) in ``[0, 1]``, for every film (also those
            with no verdict: the network's output, gate set aside).
        verdicts: ``(N,)`` codes from :func:`verdict_codes` or :func:`threshold_verdicts`.

    Returns:
        ``{key: value}`` for :data:`HEADLINE_KEYS`; a rate over no films and the AUC of one
        class are NaN.
    """
    labels = np.asarray(labels).astype(int)
    verdicts = np.asarray(verdicts).astype(int)
    return {
        "accuracy": share(verdicts == labels),
        "sensitivity": share(verdicts[labels == 1] == 1),
        "specificity": share(verdicts[labels == 0] == 0),
        "roc_auc": roc_auc(labels, probabilities),
        "ece": expected_calibration_error(probabilities, labels),
    }


def compute_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float,
                    verdicts: Optional[np.ndarray] = None) -> dict:
    """Every figure of one population at one operating point.

    Args:
        labels: ``(N,)`` 0 NORMAL / 1 PNEUMONIA.
        probabilities: ``(N,)`` calibrated P(PNEUMONIA).
        threshold: the operating threshold the verdicts were decided with (PNEUMONIA when
            ``p >= threshold``).
        verdicts: ``(N,)`` the product's verdict codes (:func:`verdict_codes`); ``None`` thresholds
            ``probabilities`` (for raw network scores, with no gate).

    Returns:
        dict with n, n_normal, n_pneumonia, threshold, the :data:`HEADLINE_KEYS`, precision, f1,
        average_precision, brier, ``confusion_matrix`` (rows true NORMAL/PNEUMONIA, columns
        verdict NORMAL/PNEUMONIA, films with a verdict) and ``unknown`` (films with no verdict,
        ``[NORMAL, PNEUMONIA]``).
    """
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    verdicts = threshold_verdicts(probabilities, threshold) if verdicts is None else np.asarray(verdicts).astype(int)
    figures = headline_figures(labels, probabilities, verdicts)
    true_positives = int(np.sum((verdicts == 1) & (labels == 1)))
    called = int(np.sum(verdicts == 1))
    precision = true_positives / called if called else 0.0
    recall = figures["sensitivity"] if np.isfinite(figures["sensitivity"]) else 0.0
    return {
        "n": int(len(labels)),
        "n_normal": int(np.sum(labels == 0)),
        "n_pneumonia": int(np.sum(labels == 1)),
        "threshold": float(threshold),
        **figures,
        "precision": float(precision),
        "f1": float(2 * precision * recall / (precision + recall)) if precision + recall else 0.0,
        "average_precision": (float(average_precision_score(labels, probabilities))
                              if len(np.unique(labels)) == 2 else float("nan")),
        "brier": float(np.mean((probabilities - labels) ** 2)),
        "confusion_matrix": [[int(np.sum((labels == t) & (verdicts == v))) for v in (0, 1)] for t in (0, 1)],
        "unknown": [int(np.sum((labels == t) & (verdicts == NO_VERDICT))) for t in (0, 1)],
    }


def group_indices(keys: Sequence) -> list[np.ndarray]:
    """Indices of the items of each distinct key (e.g. the films of each patient), keys sorted.

    Args:
        keys: ``(N,)`` one key per item.

    Returns:
        One ``int64`` index array per distinct key.
    """
    _, inverse = np.unique(np.asarray(keys), return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)] if len(keys) else []


def bootstrap(statistic: Callable[[np.ndarray], Optional[dict[str, float]]], n: int, n_resamples: int = 2000,
              seed: int = 0, groups: Optional[Sequence[np.ndarray]] = None) -> dict[str, list[float]]:
    """Percentile bootstrap 95% intervals of the figures ``statistic`` computes on each resample.

    Args:
        statistic: maps the indices of one resample to ``{figure: value}``, or ``None`` to leave
            that resample out (e.g. one class only); non-finite values are left out too.
        n: number of items (films).
        n_resamples: resamples drawn.
        seed: the generator's seed.
        groups: ``None`` resamples items; else the items of each group (e.g. each patient, from
            :func:`group_indices`), resampled whole: a cluster bootstrap for correlated films.

    Returns:
        ``{figure: [low, high]}``, the 2.5th and 97.5th percentiles; figures never finite are left out.
    """
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        if groups is None:
            idx = rng.integers(0, n, n)
        else:
            idx = np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])
        values = statistic(idx)
        for key, value in (values or {}).items():
            if np.isfinite(value):
                samples.setdefault(key, []).append(float(value))
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items()}


def bootstrap_intervals(labels: np.ndarray, probabilities: np.ndarray, verdicts: np.ndarray,
                        n_resamples: int = 2000, seed: int = 0,
                        groups: Optional[Sequence[np.ndarray]] = None) -> dict[str, list[float]]:
    """Bootstrap 95% intervals of :func:`headline_figures`; resamples holding one class only are left out.

    Args:
        labels, probabilities, verdicts: as for :func:`headline_figures`.
        n_resamples, seed, groups: as for :func:`bootstrap`.

    Returns:
        ``{figure: [low, high]}`` for :data:`HEADLINE_KEYS`.
    """
    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    verdicts = np.asarray(verdicts).astype(int)

    def statistic(idx: np.ndarray) -> Optional[dict[str, float]]:
        y = labels[idx]
        if y.min() == y.max():
            return None
        return headline_figures(y, probabilities[idx], verdicts[idx])

    return bootstrap(statistic, len(labels), n_resamples, seed, groups)


def bootstrap_share(hits: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                    groups: Optional[Sequence[np.ndarray]] = None) -> list[float]:
    """Bootstrap 95% interval ``[low, high]`` of a rate (the mean of ``hits``, boolean ``(N,)``)."""
    hits = np.asarray(hits, dtype=bool)
    if not hits.size:
        return []
    return bootstrap(lambda idx: {"share": share(hits[idx])}, len(hits), n_resamples, seed, groups)["share"]


def distance_to_box(points: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Euclidean distance from points to a rectangle (0 inside or on it).

    Args:
        points: ``(N, 2)`` ``(x, y)`` pixel coordinates (x = column, y = row).
        box: ``(x, y, width, height)``: the rectangle ``[x, x + width] x [y, y + height]``.

    Returns:
        ``float64 (N,)`` distances in pixels.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x0, y0, width, height = (float(v) for v in box)
    dx = np.maximum.reduce([x0 - points[:, 0], np.zeros(len(points)), points[:, 0] - (x0 + width)])
    dy = np.maximum.reduce([y0 - points[:, 1], np.zeros(len(points)), points[:, 1] - (y0 + height)])
    return np.hypot(dx, dy)


def as_box_set(boxes) -> list[tuple[float, float, float, float]]:
    """One film's boxes as a list: a single ``(x, y, w, h)`` or a sequence of them."""
    array = np.asarray(boxes, dtype=np.float64)
    return [tuple(array)] if array.ndim == 1 else [tuple(b) for b in array.reshape(-1, 4)]


def distance_to_boxes(points: np.ndarray, boxes) -> np.ndarray:
    """Distance from points to the nearest of one film's boxes (:func:`distance_to_box`; 0 inside any).

    Args:
        points: ``(N, 2)`` ``(x, y)``.
        boxes: one box ``(x, y, w, h)`` or a sequence of them.

    Returns:
        ``float64 (N,)``.
    """
    return np.min([distance_to_box(points, box) for box in as_box_set(boxes)], axis=0)


def pointing_hits(points: np.ndarray, boxes: Sequence, tolerance: float = POINTING_TOLERANCE_PX) -> np.ndarray:
    """The pointing game: is each film's point within ``tolerance`` pixels of one of its own boxes?

    Args:
        points: ``(N, 2)`` one ``(x, y)`` per film (e.g. its heatmap's peak).
        boxes: per film, its box ``(x, y, width, height)`` or a sequence of its boxes, same pixels.
        tolerance: largest distance that still counts as a hit.

    Returns:
        ``bool (N,)``.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return np.array([distance_to_boxes(p, film)[0] <= tolerance for p, film in zip(points, boxes)], dtype=bool)


def box_cover(boxes, frame: tuple[int, int]) -> float:
    """Share of a ``(width, height)`` frame inside the union of one film's boxes (pixel centres counted)."""
    width, height = frame
    inside = np.zeros((height, width), bool)
    for x, y, w, h in as_box_set(boxes):
        cols = (np.arange(width) + 0.5 >= x) & (np.arange(width) + 0.5 < x + w)
        rows = (np.arange(height) + 0.5 >= y) & (np.arange(height) + 0.5 < y + h)
        inside[np.ix_(rows, cols)] = True
    return float(inside.mean())


def best_fixed_point(boxes: Sequence, frame: tuple[int, int], step: int = 8,
                     tolerance: float = POINTING_TOLERANCE_PX) -> tuple[tuple[float, float], float]:
    """The single point that, named for every film, hits the most films: a baseline a heatmap must beat.

    It is chosen on the very films it is scored on, so its rate is optimistic.

    Args:
        boxes: per film, its box ``(x, y, width, height)`` or a sequence of its boxes.
        frame: ``(width, height)`` of the films in pixels.
        step: spacing of the candidate grid; candidates are the centres of ``step``-pixel cells,
            ``step / 2, 3 step / 2, ...`` on each axis.
        tolerance: as for :func:`pointing_hits`.

    Returns:
        ``((x, y), hit_rate)``; of equally good points, the first in row-major order (smallest y,
        then smallest x).
    """
    width, height = frame
    xs = np.arange(step / 2, width, step, dtype=np.float64)
    ys = np.arange(step / 2, height, step, dtype=np.float64)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)  # row-major: y outer, x inner
    hits = np.zeros(len(grid))
    for film in boxes:
        hits += distance_to_boxes(grid, film) <= tolerance
    best = int(np.argmax(hits))
    return (float(grid[best, 0]), float(grid[best, 1])), float(hits[best] / max(1, len(boxes)))
