"""Single-image latency: our `Predictor` against a seed-style reference CNN, interleaved.

    python -m benchmarks.latency [--rounds 200] [--example examples/NORMAL/....jpeg]

The reference is the design most public pneumonia demos ship: three 3x3 conv + max-pool layers
and a dense layer on 150 x 150 RGB, fed by ``keras.utils.load_img(path, target_size=(150, 150))``
and ``/ 255``. Untrained weights time the same as trained ones. It runs the same steps ours does
(decode the file, preprocess, forward pass, a probability out) and is timed both as
``model(x)`` and as ``model.predict(x)``; the faster of the two is the reference figure.

Each round times all four variants back to back in a rotating order, so background load hits
them alike. Targets (issue 5): ``predict`` median <= 0.4x the reference; ``predict(explain=True)``
(Grad-CAM and the overlay at the film's resolution included) <= 1.0x.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks._common import EXAMPLE, check, print_header, summarize, time_call

REFERENCE_SIZE = 150


def build_reference_cnn():
    """The seed-style reference: 3 conv layers + dense at 150 x 150 RGB, sigmoid output (untrained)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((REFERENCE_SIZE, REFERENCE_SIZE, 3)),
        layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(128, 3, activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(128, activation="relu"), layers.Dense(1, activation="sigmoid"),
    ], name="reference_cnn")


def reference_input(path: Path) -> np.ndarray:
    """What the seed demos do: ``load_img`` at 150 x 150 RGB, ``img_to_array``, ``/ 255``, batch axis."""
    import keras

    image = keras.utils.load_img(path, target_size=(REFERENCE_SIZE, REFERENCE_SIZE))
    return keras.utils.img_to_array(image)[np.newaxis] / 255.0


def measure(rounds: int, example: Path, warmup: int = 5) -> dict:
    """Interleaved timings (seconds) of the four variants, plus a breakdown of ours."""
    from pneumonia import Predictor, serving
    from pneumonia.preprocessing import read_image, resize_image, to_batch

    serving.limit_allocator_growth()  # the app's process settings (app.main), for both contestants
    predictor = Predictor.load()
    reference = build_reference_cnn()
    variants = {
        "ours: predict(path)": lambda: predictor.predict(example),
        "ours: predict(path, explain=True)": lambda: predictor.predict(example, explain=True).overlay,
        "reference: model(x)": lambda: float(reference(reference_input(example))[0, 0]),
        "reference: model.predict(x)": lambda: float(reference.predict(reference_input(example), verbose=0)[0, 0]),
    }
    names = list(variants)
    samples = {name: [] for name in names}
    for i in range(warmup + rounds):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            elapsed = time_call(variants[name])
            if i >= warmup:
                samples[name].append(elapsed)

    # Where our time goes, stage by stage (not interleaved; for the record in docs/performance.md).
    gray = read_image(example)
    batch = to_batch(resize_image(gray, predictor.metadata.input_size))
    heatmap = predictor.predict(example, explain=True).heatmap
    stages = {
        "decode (read_image)": lambda: read_image(example),
        "resize to the input size": lambda: resize_image(gray, predictor.metadata.input_size),
        "network + gate (score_batch)": lambda: predictor.score_batch(batch),
        f"overlay at {gray.shape[1]}x{gray.shape[0]} (draw_overlay)": lambda: predictor.draw_overlay(gray, heatmap, 0.4),
    }
    breakdown = {name: [time_call(fn) for _ in range(max(20, rounds // 4))] for name, fn in stages.items()}
    return {"samples": samples, "breakdown": breakdown, "film": gray.shape}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="timed rounds (each runs all four variants)")
    parser.add_argument("--example", type=Path, default=EXAMPLE, help="film to classify")
    args = parser.parse_args(argv)

    print_header("single-image latency")
    result = measure(args.rounds, args.example)
    height, width = result["film"]
    print(f"film: {args.example.name} ({width}x{height}); {args.rounds} interleaved rounds")
    stats = {name: summarize(values) for name, values in result["samples"].items()}
    for name, s in stats.items():
        print(f"  {name:<36} {s.ms()}")
    call, fit = stats["reference: model(x)"], stats["reference: model.predict(x)"]
    reference = call if call.median <= fit.median else fit
    ours, explained = stats["ours: predict(path)"], stats["ours: predict(path, explain=True)"]
    print("our stages (medians):")
    for name, values in result["breakdown"].items():
        print(f"  {name:<36} {summarize(values).median * 1e3:7.2f} ms")
    figures = {
        "predict_median_ms": ours.median * 1e3, "predict_p95_ms": ours.p95 * 1e3,
        "explain_median_ms": explained.median * 1e3, "explain_p95_ms": explained.p95 * 1e3,
        "reference_median_ms": reference.median * 1e3, "reference_p95_ms": reference.p95 * 1e3,
        "predict_ratio": ours.median / reference.median, "explain_ratio": explained.median / reference.median,
    }
    print(f"reference kept: {'model(x)' if reference is call else 'model.predict(x)'}")
    print(check("predict median / reference median", figures["predict_ratio"], 0.4, "x"))
    print(check("predict(explain=True) median / reference", figures["explain_ratio"], 1.0, "x"))
    print(f"p95 ratios: predict {ours.p95 / reference.p95:.3f}x, explain {explained.p95 / reference.p95:.3f}x")
    return figures


if __name__ == "__main__":
    main()
