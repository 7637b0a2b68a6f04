"""How much of the film the heatmap paints in warm colours, through the public ``/predict`` endpoint.

    python -m benchmarks.warm_share [--films 60] [--alpha 0.5]

Starts the app (``python app.py``, the shipped model) on a free loopback port, sends ``--films``
Kermany test films (half NORMAL, half PNEUMONIA, spread evenly over each folder's sorted list)
to ``/predict`` at overlay opacity ``--alpha``, and counts the overlay's warm pixels (red to
yellow: ``R - B > 60``). Prints each verdict's median warm share against issue 19's targets:
films called NORMAL at most 1 %, films called PNEUMONIA at least 3 %. Needs the dataset
(``$PNEUMONIA_DATA``, default ``../shared/data/chest_xray``).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks._common import TEST_DIR, AppServer

WARM = 60  # a pixel is warm when its red exceeds its blue by more than this (0-255)
TARGETS = {"NORMAL": ("<=", 0.01), "PNEUMONIA": (">=", 0.03)}


def measure_warm_share(rgb: np.ndarray) -> float:
    """Share of an overlay's pixels in warm colours.

    Args:
        rgb: ``uint8 (H, W, 3)``.

    Returns:
        The fraction in ``[0, 1]`` with ``R - B > WARM``.
    """
    rgb = np.asarray(rgb, np.int16)
    return float(np.mean(rgb[..., 0] - rgb[..., 2] > WARM))


def pick_films(count: int) -> list:
    """``count`` test films, half from each class folder, evenly spread over its sorted files."""
    films = []
    for folder in ("NORMAL", "PNEUMONIA"):
        paths = sorted((TEST_DIR / folder).glob("*.jpeg"))
        if not paths:
            raise SystemExit(f"no films in {TEST_DIR / folder} (set PNEUMONIA_DATA)")
        take = count // 2 if folder == "NORMAL" else count - count // 2
        films += [paths[int(i)] for i in np.linspace(0, len(paths) - 1, take).round()]
    return films


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=60)
    parser.add_argument("--alpha", type=float, default=0.5)
    args = parser.parse_args(argv)
    from gradio_client import handle_file
    from PIL import Image

    shares: dict[str, list[float]] = {}
    with AppServer() as server:
        client = server.client()
        for path in pick_films(args.films):
            _, overlay, verdict = client.predict(handle_file(str(path)), args.alpha, api_name="/predict")
            share = measure_warm_share(np.asarray(Image.open(overlay).convert("RGB"))) if overlay else 0.0
            shares.setdefault(verdict["label"], []).append(share)
    met = True
    print(f"warm share (R - B > {WARM}) of the /predict overlay at opacity {args.alpha}, {args.films} Kermany test films:")
    for label, values in sorted(shares.items()):
        values = np.asarray(values)
        line = (f"  called {label:9s} n={len(values):3d}  median {np.median(values):6.2%}  "
                f"p90 {np.percentile(values, 90):6.2%}  max {values.max():6.2%}")
        if label in TARGETS:
            sign, bound = TARGETS[label]
            ok = np.median(values) <= bound if sign == "<=" else np.median(values) >= bound
            met &= bool(ok)
            line += f"  target median {sign} {bound:.0%}: {'met' if ok else 'NOT met'}"
        print(line)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
