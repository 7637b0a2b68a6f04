"""Threshold rules on validation: Youden's J once (J) against its bootstrap median (BJ).

Run from the repository root: ``PYTHONPATH=. python docs/threshold_study.py`` (needs ../shared/data;
about 10 minutes). Uses only the shipped model's validation films (its split is rebuilt from the
metadata); the test sets are not read. The rule and criterion are in docs/experiments.md, session 6.
"""
import numpy as np
from pneumonia import Predictor
from pneumonia.calibration import apply_temperature, choose_stable_threshold, choose_threshold, fit_temperature
from pneumonia.data import load_images
from pneumonia.train import config_from_metadata, split_records

predictor = Predictor.load()
meta = predictor.metadata
_, val = split_records("../shared/data/chest_xray", config_from_metadata(meta), "../shared/data/adult_nih")
RULES = {"J": lambda p, y, g: choose_threshold(p, y), "BJ": lambda p, y, g: choose_stable_threshold(p, y, g)}


def j_at(logits, labels, temperature, threshold):
    called = apply_temperature(logits, temperature) >= threshold
    return called[labels == 1].mean() + (~called[labels == 0]).mean() - 1


for population in ("child", "adult"):
    records = [r for r in val if r.population == population]
    images = load_images([r.path for r in records], meta.input_size).astype(np.float32)[..., None] / 255.0
    z = np.concatenate([predictor.score_batch(images[i:i + 64]).logits for i in range(0, len(images), 64)])
    y = np.array([r.label for r in records])
    g = np.array([r.patient for r in records])
    t = fit_temperature(z, y)
    p = apply_temperature(z, t)
    stored = meta.operating_point(population)
    print(f"{population}: {len(y)} films, {len(set(g))} patients, {y.sum()} pneumonia; temperature {t:.4f} "
          f"(stored {stored[0]:.4f}); J {choose_threshold(p, y):.4f} (stored {stored[1]:.4f}); "
          f"BJ {choose_stable_threshold(p, y, g):.4f}")
    patients = {c: np.unique(g[y == c]) for c in (0, 1)}
    rng = np.random.default_rng(2026)
    crossed = {name: [] for name in RULES}
    thresholds = {name: [] for name in RULES}
    for _ in range(200):
        half = np.zeros(len(y), bool)
        for c in (0, 1):
            chosen = rng.permutation(patients[c])[: len(patients[c]) // 2]
            half |= np.isin(g, chosen)
        for fit, held in ((half, ~half), (~half, half)):
            tf = fit_temperature(z[fit], y[fit])
            pf = apply_temperature(z[fit], tf)
            for name, rule in RULES.items():
                threshold = rule(pf, y[fit], g[fit])
                thresholds[name].append(threshold)
                crossed[name].append(j_at(z[held], y[held], tf, threshold))
    for name in RULES:
        q1, q3 = np.percentile(thresholds[name], [25, 75])
        print(f"  {name:2s}: cross-fitted J {np.mean(crossed[name]):.4f} (sd {np.std(crossed[name]):.4f}); "
              f"thresholds median {np.median(thresholds[name]):.3f}, IQR {q3 - q1:.3f} ({q1:.3f}-{q3:.3f})")
