"""Temperature scaling, threshold choice and calibration error against independent computations."""

import numpy as np
import pytest

from pneumonia.calibration import apply_temperature, choose_threshold, fit_temperature
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
