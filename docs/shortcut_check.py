"""Shortcut check: what moves the verdict that should not?

Run from the repository root (needs ../shared/data):

    PYTHONPATH=. python docs/shortcut_check.py [--model model/] [--limit 400]

Each test film is changed in one way that carries no pneumonia, and scored again by the product's
own ``Predictor.predict`` (its verdict at the population's operating point, and the calibrated
probability). A change that moves many verdicts is a shortcut the model leans on:

- **marker**: a burnt-in text marker ("PORTATIL", "DCHA", a side letter), drawn in white in a top
  corner, as BIMCV's portable films carry them; on NORMAL films (does a marker make pneumonia?);
- **no border**: the outer 12 % band of each side blanked to the film's median (crops text
  bands, markers and most of the arm and neck): on every film;
- **lines**: a tube or line (bright curve from the neck into the chest) and three ECG electrodes
  (bright rings) drawn on NORMAL films;
- **blur / sharpen**: a Gaussian blur of 2 px at 224 px, or an unsharp mask of the same size
  (sharpness was a label cue in the children's training split).

Portable AP films are measured by view in ``python -m pneumonia evaluate`` (NIH carries the view;
SIIM's manifest does not). A one-off measurement quoted in README and docs/experiments.md, not part
of the package.
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from pneumonia import Predictor
from pneumonia.data import list_adult_records, list_siim_records, split_adult_records, split_siim_records
from pneumonia.preprocessing import read_image


def draw_marker(gray: np.ndarray, text: str) -> np.ndarray:
    """White burnt-in text in the top-left corner, about 6 % of the film's height tall."""
    ink = np.zeros(gray.shape, np.uint8)  # OpenCV draws text on 8-bit planes only
    scale = gray.shape[0] / 420
    cv2.putText(ink, text, (int(0.04 * gray.shape[1]), int(0.09 * gray.shape[0])), cv2.FONT_HERSHEY_SIMPLEX,
                scale, 255, max(1, int(2 * scale)), cv2.LINE_AA)
    return np.maximum(gray, ink / 255.0).astype(np.float32)


def blank_border(gray: np.ndarray, share: float = 0.12) -> np.ndarray:
    """The outer ``share`` of each side set to the film's median."""
    out = np.full_like(gray, np.median(gray))
    h, w = gray.shape
    dy, dx = int(share * h), int(share * w)
    out[dy:h - dy, dx:w - dx] = gray[dy:h - dy, dx:w - dx]
    return out


def draw_lines(gray: np.ndarray) -> np.ndarray:
    """A tube from the neck down the right of the mediastinum and three ECG electrodes, in white."""
    ink = np.zeros(gray.shape, np.uint8)
    h, w = gray.shape
    t = max(1, int(0.008 * w))
    curve = np.array([[0.47 * w, 0.0], [0.46 * w, 0.2 * h], [0.44 * w, 0.45 * h], [0.40 * w, 0.62 * h]], np.int32)
    cv2.polylines(ink, [curve], False, 255, t, cv2.LINE_AA)
    for cx, cy in ((0.2, 0.25), (0.8, 0.25), (0.7, 0.75)):
        cv2.circle(ink, (int(cx * w), int(cy * h)), int(0.025 * w), 255, t, cv2.LINE_AA)
    return np.maximum(gray, ink / 255.0).astype(np.float32)


def blur(gray: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(gray, (0, 0), max(gray.shape) / 224 * 2.0)


def sharpen(gray: np.ndarray) -> np.ndarray:
    return np.clip(gray + 0.6 * (gray - blur(gray)), 0.0, 1.0)


CHANGES = {
    "marker PORTATIL": lambda g: draw_marker(g, "PORTATIL"),
    "marker DCHA": lambda g: draw_marker(g, "DCHA"),
    "marker L": lambda g: draw_marker(g, "L"),
    "no border": blank_border,
    "lines": draw_lines,
    "blur": blur,
    "sharpen": sharpen,
}
# Which films each change is applied to: markers and lines are asked "do they make pneumonia?".
ON_NORMALS_ONLY = {"marker PORTATIL", "marker DCHA", "marker L", "lines"}


def measure(predictor: Predictor, records, limit: int) -> None:
    rng = np.random.default_rng(0)
    chosen = [records[i] for i in sorted(rng.permutation(len(records))[:limit])]
    films = [(r, np.asarray(read_image(r.path), np.float32)) for r in chosen]
    base = {r.path: predictor.predict(g) for r, g in films}
    for name, change in CHANGES.items():
        for label in (0, 1):
            if label == 1 and name in ON_NORMALS_ONLY:
                continue
            subset = [(r, g) for r, g in films if r.label == label]
            moved, flips, diagnosed = [], 0, 0
            for r, g in subset:
                before, after = base[r.path], predictor.predict(change(g))
                moved.append(after.pneumonia_probability - before.pneumonia_probability)
                if before.label != "UNKNOWN" and after.label != "UNKNOWN":
                    diagnosed += 1
                    flips += before.label != after.label
            moved = np.array(moved)
            print(f"  {name:16s} on {['NORMAL', 'PNEUMONIA'][label]:9s} n={len(subset):4d}: mean change in P "
                  f"{moved.mean():+.3f} (|change| 90th percentile {np.quantile(np.abs(moved), 0.9):.3f}); "
                  f"verdicts changed {flips} of {diagnosed} ({flips / max(1, diagnosed):.1%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--limit", type=int, default=400, help="films drawn (seeded) from each test set")
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    print(f"model {predictor.metadata.version}")
    sets = {"SIIM test split": split_siim_records(list_siim_records(f"{args.data}/adult_siim"))[1],
            "NIH adult test set": split_adult_records(list_adult_records(f"{args.data}/adult_nih"))[1]}
    for name, records in sets.items():
        print(name)
        measure(predictor, records, args.limit)


if __name__ == "__main__":
    main()
