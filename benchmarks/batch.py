"""Batch throughput: `python -m pneumonia predict` on the test split's 618 films, and its parts.

    python -m benchmarks.batch [--runs 3] [--folder ../shared/data/chest_xray/test]

1. The command as a user runs it (progress bar on, CSV written), in a fresh process: images per
   second over the whole run, start-up included; and while classifying, as the progress bar
   itself reports it (``TQDM_SMOOTHING=0``: films done over the time since the bar appeared,
   which is after the model is loaded).
2. In this process, with the model loaded and warm: ``Predictor.predict_files`` (the command's
   engine), and its two halves alone: decoding + resizing in the thread pool, and the network
   with the gate on pre-decoded batches. The slower half bounds the pipeline.

Target (issue 5): >= 150 images/s on the 224 x 224 test films.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks._common import QUIET_ENV, ROOT, TEST_DIR, check, print_header, summarize

BATCH_SIZE = 64


def run_cli(inputs: list[str], out_csv: Path) -> dict:
    """Time ``python -m pneumonia predict INPUTS --csv OUT`` end to end; read the progress bar's rate."""
    start = time.perf_counter()
    env = {**os.environ, **QUIET_ENV, "TQDM_SMOOTHING": "0"}  # the bar shows its average, not a moving one
    proc = subprocess.run([sys.executable, "-m", "pneumonia", "predict", *inputs, "--csv", str(out_csv)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    rates = re.findall(r"([\d.]+)img/s\]", proc.stderr)
    return {"wall": wall, "rows": len(rows), "errors": sum(bool(r["error"]) for r in rows),
            "bar_rate": float(rates[-1]) if rates else float("nan")}


def measure_in_process(files: list[Path], rounds: int) -> dict:
    """Images/s of predict_files, of decoding alone and of the network alone (medians of rounds)."""
    from pneumonia import Predictor
    from pneumonia.preprocessing import read_image, resize_image

    predictor = Predictor.load()
    size = predictor.metadata.input_size
    list(predictor.predict_files(files[:BATCH_SIZE]))  # trace and warm up

    def decode_all():
        with ThreadPoolExecutor(max_workers=2) as pool:
            return np.stack(list(pool.map(lambda p: resize_image(read_image(p), size), files)))[..., None]

    decoded = decode_all()
    batches = [decoded[i:i + BATCH_SIZE] for i in range(0, len(decoded), BATCH_SIZE)]
    parts = {
        "predict_files (decode + network + gate)": lambda: list(predictor.predict_files(files)),
        "decode + resize only (2 threads)": decode_all,
        "network + gate only (pre-decoded)": lambda: [predictor.score_batch(b) for b in batches],
    }
    rates = {name: [] for name in parts}
    for _ in range(rounds):
        for name, fn in parts.items():
            start = time.perf_counter()
            fn()
            rates[name].append(len(files) / (time.perf_counter() - start))
    return {name: float(np.median(values)) for name, values in rates.items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", type=Path, default=TEST_DIR, help="folder of films (recursively)")
    parser.add_argument("--runs", type=int, default=3, help="CLI runs and in-process rounds")
    args = parser.parse_args(argv)
    from pneumonia.worklist import collect_files

    files = collect_files([str(args.folder)]) if args.folder.is_dir() else []
    if not files:
        raise SystemExit(f"no films under {args.folder} (set PNEUMONIA_DATA to the dataset root)")
    print_header(f"batch CLI on {len(files)} films in {args.folder}")
    walls, bar_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            run = run_cli([str(args.folder)], Path(tmp) / "out.csv")
            walls.append(run["wall"])
            bar_rates.append(run["bar_rate"])
            print(f"  CLI run {i + 1}: {run['wall']:.2f} s for {run['rows']} rows ({run['errors']} errors): "
                  f"{run['rows'] / run['wall']:.1f} images/s end to end, progress bar {run['bar_rate']:.1f} images/s")
    wall = summarize(walls).median
    end_to_end = len(files) / wall
    classifying = float(np.median(bar_rates))
    print(f"start-up before the progress bar appears: about {wall - len(files) / classifying:.1f} s")
    print("in this process, model loaded and warm (images/s, median of rounds):")
    parts = measure_in_process(files, args.runs)
    for name, rate in parts.items():
        print(f"  {name:<42} {rate:7.1f}")
    print(check("CLI images/s while classifying (progress bar)", classifying, 150, "/s", higher_is_better=True))
    print(check("CLI images/s end to end (start-up included)", end_to_end, 150, "/s", higher_is_better=True))
    return {"cli_wall_s": wall, "cli_end_to_end_rate": end_to_end,
            "cli_classifying_rate": classifying, **{f"rate: {k}": v for k, v in parts.items()}}


if __name__ == "__main__":
    main()
