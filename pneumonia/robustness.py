"""Stress validation: the patient-wise validation split under image changes a model never trained on.

    python -m pneumonia robustness --data ../shared/data/chest_xray --model model/

The ordinary validation split is saturated (every candidate scores AUC 0.999 there), so it cannot
rank candidates, while the test split must not be used to choose. This module re-scores the same
validation films after changes that films from another department or machine plausibly show
(histogram equalisation, CLAHE, lower resolution, heavy JPEG compression, gamma, low contrast,
tighter or looser framing) and reports AUC and, at the model's own threshold, sensitivity,
specificity and accuracy for each change and their mean. Only training data is used.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

import numpy as np

from pneumonia.calibration import apply_temperature
from pneumonia.data import iterate_batches, load_images, resize_to_uint8
from pneumonia.inference import Predictor
from pneumonia.metrics import headline_figures, threshold_verdicts
from pneumonia.train import config_from_metadata, split_records

ChangeFn = Callable[[np.ndarray], np.ndarray]


def apply_lut(film: np.ndarray, curve: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Map a ``uint8 (H, W)`` film through ``curve`` (on ``[0, 1]``), returning ``uint8``."""
    table = np.clip(np.round(curve(np.arange(256) / 255.0) * 255.0), 0, 255).astype(np.uint8)
    return table[film]


def reencode_jpeg(film: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip a ``uint8 (H, W)`` film through JPEG at ``quality``."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", film, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(encoded, cv2.IMREAD_GRAYSCALE)


def reframe(film: np.ndarray, scale: float) -> np.ndarray:
    """Zoom a square ``uint8`` film about its centre: ``scale < 1`` crops tighter, ``> 1`` pads
    with black (the film shrunk to ``1 / scale`` of the side)."""
    import cv2

    side = film.shape[0]
    if scale < 1:
        keep = int(round(side * scale))
        start = (side - keep) // 2
        return cv2.resize(film[start:start + keep, start:start + keep], (side, side), interpolation=cv2.INTER_LINEAR)
    inner = int(round(side / scale))
    start = (side - inner) // 2
    out = np.zeros_like(film)
    out[start:start + inner, start:start + inner] = cv2.resize(film, (inner, inner), interpolation=cv2.INTER_AREA)
    return out


def downsample(film: np.ndarray, side: int) -> np.ndarray:
    """Lose resolution: shrink a square ``uint8`` film to ``side`` pixels and enlarge it back."""
    import cv2

    small = cv2.resize(film, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, film.shape[::-1], interpolation=cv2.INTER_LINEAR)


def film_changes() -> dict[str, ChangeFn]:
    """The changes scored, by name; each maps a ``uint8 (S, S)`` film to another."""
    import cv2

    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    return {
        "equalize": cv2.equalizeHist,
        "clahe": clahe.apply,
        "lowres80": lambda f: downsample(f, 80),
        "jpeg15": lambda f: reencode_jpeg(f, 15),
        "gamma0.6": lambda f: apply_lut(f, lambda v: v ** 0.6),
        "gamma1.6": lambda f: apply_lut(f, lambda v: v ** 1.6),
        "lowcontrast": lambda f: apply_lut(f, lambda v: 0.15 + 0.7 * v),
        "crop85": lambda f: reframe(f, 0.85),
        "pad85": lambda f: reframe(f, 1 / 0.85),
    }


def score_films(predictor, films_uint8: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC and, at the predictor's threshold, sensitivity, specificity and accuracy.

    Args:
        predictor: a :class:`pneumonia.inference.Predictor`.
        films_uint8: ``uint8 (N, H, W)`` films (any side; resized to the model's input).
        labels: ``(N,)`` 0 = NORMAL, 1 = PNEUMONIA.
    """
    size = predictor.metadata.input_size
    resized = np.stack([resize_to_uint8(f.astype(np.float32) / 255.0, size) for f in films_uint8])
    logits = np.concatenate([predictor.run_network(b)[0] for b in iterate_batches(resized)])
    probability = apply_temperature(logits.astype(np.float64), predictor.metadata.temperature)
    figures = headline_figures(labels, probability, threshold_verdicts(probability, predictor.metadata.threshold))
    return {"auc": figures["roc_auc"], **{k: figures[k] for k in ("sensitivity", "specificity", "accuracy")}}


def stress_validation(predictor, films_uint8: np.ndarray, labels: np.ndarray,
                      changes: dict[str, ChangeFn] | None = None) -> dict:
    """Score the films as they are and under each change.

    Returns:
        ``{"per_change": {name: figures}, "unchanged": figures, "mean": figures}`` where figures
        are :func:`score_films`'s and ``mean`` averages over the changes (not the unchanged films).
    """
    changes = film_changes() if changes is None else changes
    per_change = {name: score_films(predictor, np.stack([change(f) for f in films_uint8]), labels)
                  for name, change in changes.items()}
    keys = ("auc", "sensitivity", "specificity", "accuracy")
    return {
        "unchanged": score_films(predictor, films_uint8, labels),
        "per_change": per_change,
        "mean": {k: float(np.mean([figures[k] for figures in per_change.values()])) for k in keys},
    }


def format_table(result: dict) -> str:
    """A plain-text table of :func:`stress_validation`'s result."""
    lines = [f"{'change':12s} {'AUC':>6s} {'sens':>6s} {'spec':>6s} {'acc':>6s}"]
    rows = [("unchanged", result["unchanged"]), *result["per_change"].items(), ("mean", result["mean"])]
    for name, f in rows:
        lines.append(f"{name:12s} {f['auc']:6.3f} {f['sensitivity']:6.3f} {f['specificity']:6.3f} {f['accuracy']:6.3f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``robustness`` command's flags to ``parser``."""
    parser.add_argument("--data", required=True, help="dataset root holding train/ (the model's training data)")
    parser.add_argument("--model", default=None, help="model folder (default: $PNEUMONIA_MODEL_DIR or model/)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    """Rebuild the model's validation split from its metadata and print the stress table."""
    predictor = Predictor.load(args.model)
    _, val_records = split_records(args.data, config_from_metadata(predictor.metadata))
    # The changes act on the films as the dataset stores them (224 px), before the model's resize.
    films = load_images([r.path for r in val_records], 224)
    labels = np.array([r.label for r in val_records])
    result = stress_validation(predictor, films, labels)
    print(f"{len(labels)} validation films ({int(labels.sum())} PNEUMONIA)")
    print(format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0
