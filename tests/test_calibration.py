"""Temperature scaling, threshold choice and calibration error against independent computations."""

import numpy as np
import pytest

import itertools

from pneumonia.calibration import apply_temperature, choose_stable_threshold, choose_threshold, fit_temperature
from pneumonia.metrics import expected_calibration_error


def test_apply_temperature_matches_the_logistic_formula():
    logits = np.array([-800.0, -2.0, 0.0, 1.5, 800.0])
    expected = np.array([0.0, 1 / (1 + np.exp(1.0)), 0.5, 1 / (1 + np.exp(-0.75)), 1.0])
    assert np.allclose(apply_temperature(logits, 2.0), expected, atol=1e-12)


def test_fit_temperature_recovers_the_generating_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 3, 20000)
    labels = rng.random(20000) < 1 / (1 + np.exp(-true_logits))
    # The model is over-confident by a factor 2.5: temperature scaling should find 2.5.
    assert fit_temperature(true_logits * 2.5, labels) == pytest.approx(2.5, rel=0.08)


def test_ece_by_hand():
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    y = np.array([0, 1, 1, 1, 0])
    # bins: [0,.1): mean p .05 vs y .5 -> 2/5*.45; [.9,1]: .95 vs 1 -> 2/5*.05; [.5,.6): .55 vs 0 -> 1/5*.55
    expected = 0.4 * 0.45 + 0.4 * 0.05 + 0.2 * 0.55
    assert expected_calibration_error(p, y) == pytest.approx(expected)


def test_threshold_separates_separable_scores():
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1])
    t = choose_threshold(p, y)
    assert 0.3 < t <= 0.6
    assert np.all((p >= t) == y.astype(bool))


def youden_by_brute_force(p: np.ndarray, y: np.ndarray) -> float:
    """Youden's J maximum over every observed score as a threshold, ties towards 0.5 (no sklearn)."""
    candidates = np.unique(p)
    j = np.array([(p[y == 1] >= t).mean() - (p[y == 0] >= t).mean() for t in candidates])
    best = candidates[j >= j.max() - 1e-12]
    return float(best[np.argmin(np.abs(best - 0.5))])


def exact_bootstrap_median(p: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Every equally likely within-class resample of one-film patients, enumerated: the median of
    the J-optimal threshold, and the distribution's support and CDF."""
    picks = []
    negatives, positives = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    for neg in itertools.product(negatives, repeat=len(negatives)):
        for pos in itertools.product(positives, repeat=len(positives)):
            index = np.array(neg + pos)
            picks.append(youden_by_brute_force(p[index], y[index]))
    values, counts = np.unique(picks, return_counts=True)
    cdf = np.cumsum(counts) / counts.sum()
    return float(values[np.searchsorted(cdf, 0.5)]), values, cdf


def test_brute_force_youden_agrees_with_choose_threshold():
    rng = np.random.default_rng(5)
    for _ in range(50):
        y = np.r_[np.zeros(6, int), np.ones(7, int)]
        p = np.round(rng.random(13), 3)
        assert choose_threshold(p, y) == pytest.approx(youden_by_brute_force(p, y))


def test_stable_threshold_is_the_median_of_the_exact_bootstrap_distribution():
    # 3 normal and 4 pneumonia patients, one film each, overlapping scores: 3^3 x 4^4 = 6912 resamples.
    p = np.array([0.58, 0.19, 0.53, 0.52, 0.09, 0.98, 0.57])
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    expected, values, cdf = exact_bootstrap_median(p, y)
    below = cdf[np.searchsorted(values, expected) - 1] if expected > values[0] else 0.0
    assert below < 0.42 and cdf[values == expected][0] > 0.55  # a clear median, not a coin toss
    got = choose_stable_threshold(p, y, groups=np.arange(7), resamples=4000, seed=1)
    assert got == pytest.approx(expected)
    assert got != choose_threshold(p, y)  # the single maximum sits elsewhere on these films


def test_stable_threshold_moves_a_patients_films_together():
    # One patient per class: every resample is the whole split, so the median is the single maximum.
    p = np.array([0.10, 0.35, 0.60, 0.30, 0.50, 0.70, 0.80])
    y = np.array([0, 0, 0, 1, 1, 1, 1])
    groups = np.array(["a", "a", "a", "b", "b", "b", "b"])
    assert choose_stable_threshold(p, y, groups, resamples=50) == pytest.approx(choose_threshold(p, y))


def test_stable_threshold_is_a_function_of_the_films_and_the_seed():
    rng = np.random.default_rng(7)
    y = (rng.random(300) < 0.6).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, 300) + 2.5 * (2 * y - 1))))
    groups = rng.integers(0, 150, 300) * 2 + y  # patients hold several films of one class
    first = choose_stable_threshold(p, y, groups, resamples=200, seed=3)
    assert first == choose_stable_threshold(p, y, groups, resamples=200, seed=3)
    assert 0 < first < 1
