"""Cost model: multiply-adds per image, this CPU's matrix throughput, and how much of it we reach.

    python -m benchmarks.cost_model [--rounds 5]

1. Multiply-adds per image, layer by layer, from the Keras model (convolutions and dense layers;
   normalisation, ReLU and additions are listed apart as element-wise work), for our network
   and for the seed-style reference CNN of :mod:`benchmarks.latency`.
2. Matrix throughput of this CPU: float32 ``2048 x 2048`` matmuls with numpy and TensorFlow
   (best of ``--rounds``); 1 multiply-add = 2 FLOP.
3. What the batch path reaches: the network with the gate on pre-decoded batches of 64, and
   ``predict_files`` on the test split (decoding included), in GFLOP/s and as a fraction of the
   measured matmul throughput.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import TEST_DIR, print_header

MATMUL_SIDE = 2048
BATCH_SIZE = 64


def count_macs(model) -> tuple[int, int, list[tuple[str, int]]]:
    """``(multiply-adds, element-wise ops, per-layer multiply-adds)`` for one image."""
    from keras import layers

    total, elementwise, rows = 0, 0, []
    for layer in model.layers:
        out = layer.output.shape
        if isinstance(layer, layers.Conv2D):
            kh, kw = layer.kernel_size
            cin = layer.input.shape[-1]
            macs = out[1] * out[2] * out[3] * kh * kw * cin // layer.groups
        elif isinstance(layer, layers.Dense):
            macs = layer.input.shape[-1] * out[-1]
        else:
            if isinstance(layer, (layers.BatchNormalization, layers.LayerNormalization, layers.ReLU, layers.Add)):
                elementwise += int(np.prod(out[1:]))
            continue
        total += int(macs)
        rows.append((layer.name, int(macs)))
    return total, elementwise, rows


def matmul_gflops(rounds: int) -> dict:
    """Best float32 matmul throughput of numpy and of TensorFlow, in GFLOP/s."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = rng.random((MATMUL_SIDE, MATMUL_SIDE), dtype=np.float32)
    b = rng.random((MATMUL_SIDE, MATMUL_SIDE), dtype=np.float32)
    flop = 2.0 * MATMUL_SIDE ** 3
    ta, tb = tf.constant(a), tf.constant(b)
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    runs = {"numpy": lambda: a @ b, "tensorflow": lambda: matmul(ta, tb).numpy()}
    best = {}
    for name, fn in runs.items():
        fn()
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        best[name] = flop / min(times) / 1e9
    return best


def batch_rates(rounds: int) -> dict:
    """Images/s: network + gate on pre-decoded batches; predict_files on the test split (medians)."""
    from pneumonia import Predictor
    from pneumonia.worklist import collect_files
    from pneumonia.model import load_model

    predictor = Predictor.load()
    size = predictor.metadata.input_size
    rng = np.random.default_rng(0)
    batch = rng.random((BATCH_SIZE, size, size, 1), dtype=np.float32)
    single = batch[:1]
    predictor.score_batch(batch)
    predictor.score_batch(single)
    rates = {"network + gate, batch of 64": [], "network + gate, batch of 1": []}
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(4):
            predictor.score_batch(batch)
        rates["network + gate, batch of 64"].append(4 * BATCH_SIZE / (time.perf_counter() - start))
        start = time.perf_counter()
        for _ in range(32):
            predictor.score_batch(single)
        rates["network + gate, batch of 1"].append(32 / (time.perf_counter() - start))
    files = collect_files([str(TEST_DIR)]) if TEST_DIR.is_dir() else []
    if files:
        list(predictor.predict_files(files[:BATCH_SIZE]))
        key = f"predict_files on {len(files)} test films"
        rates[key] = []
        for _ in range(rounds):
            start = time.perf_counter()
            list(predictor.predict_files(files))
            rates[key].append(len(files) / (time.perf_counter() - start))
    model, _ = load_model()  # the Keras network (the weights of record), for counting its layers' work
    return model, {name: float(np.median(values)) for name, values in rates.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    from benchmarks.latency import build_reference_cnn

    print_header("cost model")
    model, rates = batch_rates(args.rounds)
    macs, elementwise, rows = count_macs(model)
    ref_macs, _, _ = count_macs(build_reference_cnn())
    print(f"our network: {macs / 1e6:.1f} M multiply-adds per image ({2 * macs / 1e9:.3f} GFLOP), "
          f"{elementwise / 1e6:.1f} M element-wise outputs (normalisation, ReLU, additions)")
    for name, layer_macs in sorted(rows, key=lambda row: -row[1])[:6]:
        print(f"  {name:<16} {layer_macs / 1e6:7.1f} M ({layer_macs / macs:.0%})")
    print(f"reference CNN (150 x 150 RGB): {ref_macs / 1e6:.1f} M multiply-adds per image")
    peaks = matmul_gflops(args.rounds)
    best = max(peaks.values())
    print("float32 matmul {0}x{0}: ".format(MATMUL_SIDE) + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peaks.items()))
    figures = {"macs_per_image": macs, "reference_macs": ref_macs, "matmul_gflops": best}
    for name, rate in rates.items():
        gflops = rate * 2 * macs / 1e9
        print(f"  {name:<34} {rate:7.1f} images/s = {gflops:6.1f} GFLOP/s = {gflops / best:5.1%} of matmul")
        figures[f"fraction: {name}"] = gflops / best
        figures[f"rate: {name}"] = rate
    return figures


if __name__ == "__main__":
    main()
