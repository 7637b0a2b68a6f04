"""Command line: ``python -m pneumonia train|evaluate|predict|fit-gate|fit-heatmap|calibrate|export|robustness``.

    python -m pneumonia train    --data ../shared/data/chest_xray --adult ../shared/data/adult_nih --out model/
    python -m pneumonia evaluate --data ../shared/data/chest_xray/test --adult ../shared/data/adult_nih --model model/ --out reports/
    python -m pneumonia predict  film.jpeg folder/ --csv out.csv
    python -m pneumonia fit-gate --data ../shared/data/chest_xray --adult ../shared/data/adult_nih --model model/
    python -m pneumonia fit-heatmap --data ../shared/data/chest_xray --adult ../shared/data/adult_nih --model model/
    python -m pneumonia calibrate --data ../shared/data/chest_xray --adult ../shared/data/adult_nih --model model/ --run-name r12s
    python -m pneumonia export   --model model/
    python -m pneumonia robustness --data ../shared/data/chest_xray --model model/
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from pneumonia import evaluate, heatmap, robustness, train
from pneumonia.distribute import asks_for_distribution, choose_strategy, describe_strategy, is_chief, needs_distribution
from pneumonia.litert import export_model_dir, has_litert
from pneumonia.errors import PneumoniaError
from pneumonia.inference import Predictor
from pneumonia.model import resolve_model_dir
from pneumonia.worklist import CLI_LIMITS, collect_files, expand_inputs, run_entries, write_csv

def run_predict(args: argparse.Namespace) -> int:
    """Classify files and folders, writing one CSV row per file (to ``--csv`` or stdout).

    Returns 0 when at least one file was classified, 1 when none could be read, 2 when no file
    was found. Batches run under the ``tf.distribute`` strategy the environment calls for (see
    :mod:`pneumonia.distribute`); under a multi-worker strategy only the chief writes. When the
    environment calls for none and LiteRT is installed, TensorFlow is not imported at all.
    """
    files = collect_files(args.paths)
    if not files:
        print("No files found.", file=sys.stderr)
        return 2
    # Folders are expanded here, ZIP archives by the worklist (within its archive limits).
    entries = expand_inputs([(str(path), path) for path in files], CLI_LIMITS)
    strategy = choose_strategy() if asks_for_distribution() or not has_litert() else None
    if needs_distribution(strategy):
        print(f"strategy: {describe_strategy(strategy)}", file=sys.stderr)
    predictor = Predictor.load(args.model, strategy=strategy)
    if not is_chief(strategy):
        args.csv, args.quiet = os.devnull, True
    out = open(args.csv, "w", newline="") if args.csv else sys.stdout
    progress = None
    if args.csv and not args.quiet:
        from tqdm import tqdm

        progress = tqdm(total=len(entries), unit="img", file=sys.stderr)
    failures = 0

    def counted(results):
        nonlocal failures
        for result in results:
            failures += result.prediction is None
            if progress is not None:
                progress.update(1)
            yield result

    try:
        write_csv(counted(run_entries(predictor, entries, batch_size=args.batch_size)), out)
    finally:
        if progress is not None:
            progress.close()
        if args.csv:
            out.close()
    if args.csv and args.csv != os.devnull:
        print(f"{len(entries) - failures} classified, {failures} unreadable -> {args.csv}", file=sys.stderr)
    if failures == len(entries):
        print(f"error: none of the {len(entries)} files could be read as a film (see the error column).",
              file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m pneumonia`` argument parser with its sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m pneumonia", description="Chest X-ray pneumonia screening CNN.")
    commands = parser.add_subparsers(dest="command", required=True)
    train.add_arguments(commands.add_parser("train", help="train the CNN from scratch"))
    evaluate.add_arguments(commands.add_parser("evaluate", help="score a model on a labelled folder"))
    gate = commands.add_parser("fit-gate", help="refit the not-a-chest-X-ray gate of a trained model")
    gate.add_argument("--data", required=True, help="dataset root holding train/ (the model's training data)")
    gate.add_argument("--adult", default=None, help="the adult_nih folder, for a model trained on adults too")
    gate.add_argument("--siim", default=None, help="the adult_siim folder, for a model trained on SIIM films too")
    gate.add_argument("--model", default=None, help="model folder (default: $PNEUMONIA_MODEL_DIR or model/)")
    scale = commands.add_parser("fit-heatmap", help="record a trained model's fixed heatmap scale (metadata.heatmap)")
    scale.add_argument("--data", required=True, help="dataset root holding train/ (the model's training data)")
    scale.add_argument("--adult", default=None, help="the adult_nih folder, for a model trained on adults too")
    scale.add_argument("--siim", default=None, help="the adult_siim folder, for a model trained on SIIM films too")
    scale.add_argument("--model", default=None, help="model folder (default: $PNEUMONIA_MODEL_DIR or model/)")
    calibrate = commands.add_parser("calibrate", help="refit a trained model's operating points (temperature, threshold)")
    calibrate.add_argument("--data", required=True, help="dataset root holding train/ (the model's training data)")
    calibrate.add_argument("--adult", default=None, help="the adult_nih folder, for a model trained on adults too")
    calibrate.add_argument("--siim", default=None, help="the adult_siim folder, for a model trained on SIIM films too")
    calibrate.add_argument("--model", default=None, help="model folder (default: $PNEUMONIA_MODEL_DIR or model/)")
    calibrate.add_argument("--run-name", required=True, help="the new first part of the model's version")
    export = commands.add_parser("export", help="export a trained model's network for the app (TensorFlow Lite)")
    export.add_argument("--model", default=None, help="model folder (default: $PNEUMONIA_MODEL_DIR or model/)")
    robustness.add_arguments(commands.add_parser(
        "robustness", help="score a model's validation split under image changes (stress validation)"))
    predict = commands.add_parser("predict", help="classify files and folders into a CSV")
    predict.add_argument("paths", nargs="+", help="image files, ZIP archives or folders (searched recursively)")
    predict.add_argument("--csv", help="output CSV (default: standard output)")
    predict.add_argument("--model", default=None, help="model folder (default: $PNEUMONIA_MODEL_DIR or the shipped model/)")
    predict.add_argument("--batch-size", type=int, default=64)
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; user errors print one line and return 1."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            run = train.run
        elif args.command == "evaluate":
            run = evaluate.run
        elif args.command == "robustness":
            run = robustness.run
        elif args.command == "fit-gate":
            train.refit_gate(args.data, resolve_model_dir(args.model), args.adult, args.siim)
            return 0
        elif args.command == "fit-heatmap":
            heatmap.refit_heatmap(args.data, resolve_model_dir(args.model), args.adult, siim_dir=args.siim)
            return 0
        elif args.command == "calibrate":
            train.recalibrate_model(args.data, resolve_model_dir(args.model), args.adult, args.run_name,
                                    siim_dir=args.siim)
            return 0
        elif args.command == "export":
            serving = export_model_dir(resolve_model_dir(args.model))
            print(f"exported {serving['file']} (sha256 {serving['sha256'][:12]}) from weights {serving['keras_sha256'][:12]}")
            return 0
        else:
            run = run_predict
        return run(args)
    except (PneumoniaError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
