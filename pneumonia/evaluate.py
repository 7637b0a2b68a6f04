"""Score a trained model on a labelled folder and write a readable report.

``python -m pneumonia evaluate --data ../shared/data/chest_xray/test --model model/ --out reports/``

Writes ``metrics.json``, ``report.md`` and the plots it shows (confusion matrix, ROC,
precision-recall, reliability diagram). Every headline figure carries a bootstrap 95% confidence
interval (films resampled with replacement).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from pneumonia.calibration import expected_calibration_error
from pneumonia.data import list_records


def compute_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    """Classification figures at ``threshold`` plus threshold-free ones, from scikit-learn.

    Args:
        labels: ``(N,)`` 0 NORMAL / 1 PNEUMONIA.
        probabilities: ``(N,)`` calibrated P(PNEUMONIA).
        threshold: PNEUMONIA when ``p >= threshold``.

    Returns:
        dict with n, accuracy, sensitivity, specificity, precision, f1, roc_auc, average_precision,
        ece, brier, confusion_matrix (rows true NORMAL/PNEUMONIA, columns predicted).
    """
    from sklearn.metrics import (accuracy_score, average_precision_score, brier_score_loss, confusion_matrix,
                                 f1_score, precision_score, recall_score, roc_auc_score)

    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predicted = (probabilities >= threshold).astype(int)
    both = len(set(labels.tolist())) == 2
    return {
        "n": int(len(labels)),
        "n_normal": int(np.sum(labels == 0)),
        "n_pneumonia": int(np.sum(labels == 1)),
        "threshold": float(threshold),
        "accuracy": float(accuracy_score(labels, predicted)),
        "sensitivity": float(recall_score(labels, predicted, pos_label=1, zero_division=0)),
        "specificity": float(recall_score(labels, predicted, pos_label=0, zero_division=0)),
        "precision": float(precision_score(labels, predicted, pos_label=1, zero_division=0)),
        "f1": float(f1_score(labels, predicted, pos_label=1, zero_division=0)),
        "roc_auc": float(roc_auc_score(labels, probabilities)) if both else float("nan"),
        "average_precision": float(average_precision_score(labels, probabilities)) if both else float("nan"),
        "ece": expected_calibration_error(probabilities, labels),
        "brier": float(brier_score_loss(labels, probabilities)),
        "confusion_matrix": confusion_matrix(labels, predicted, labels=[0, 1]).tolist(),
    }


def bootstrap_intervals(labels: np.ndarray, probabilities: np.ndarray, threshold: float,
                        n_resamples: int = 2000, seed: int = 0) -> dict[str, list[float]]:
    """Percentile bootstrap 95% intervals for accuracy, sensitivity, specificity, AUC and ECE.

    Returns:
        ``{metric: [low, high]}``.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(int)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    rng = np.random.default_rng(seed)
    keys = ("accuracy", "sensitivity", "specificity", "roc_auc", "ece")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    n = len(labels)
    for _ in range(n_resamples):
        idx = rng.integers(0, n, n)
        y, p = labels[idx], probabilities[idx]
        if y.min() == y.max():
            continue
        pred = p >= threshold
        samples["accuracy"].append(float(np.mean(pred == y)))
        samples["sensitivity"].append(float(np.mean(pred[y == 1])))
        samples["specificity"].append(float(np.mean(~pred[y == 0])))
        samples["roc_auc"].append(float(roc_auc_score(y, p)))
        samples["ece"].append(expected_calibration_error(p, y))
    return {k: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for k, v in samples.items() if v}


def plot_report_figures(labels: np.ndarray, probabilities: np.ndarray, threshold: float, out_dir: Path) -> dict[str, str]:
    """Save the confusion matrix, ROC, precision-recall and reliability plots as PNGs.

    Returns:
        ``{figure: file name}`` relative to ``out_dir``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    files = {}
    predicted = (probabilities >= threshold).astype(int)

    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    ConfusionMatrixDisplay.from_predictions(labels, predicted, display_labels=["NORMAL", "PNEUMONIA"],
                                            cmap="Blues", colorbar=False, ax=ax)
    ax.set_title(f"Confusion matrix (threshold {threshold:.2f})")
    files["confusion_matrix"] = "confusion_matrix.png"
    fig.tight_layout()
    fig.savefig(out_dir / files["confusion_matrix"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    RocCurveDisplay.from_predictions(labels, probabilities, name="CNN", ax=ax)
    fpr_op = 1 - np.mean(predicted[labels == 0] == 0)
    tpr_op = np.mean(predicted[labels == 1] == 1)
    ax.plot([fpr_op], [tpr_op], "o", color="crimson", label="operating point")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.legend(loc="lower right")
    ax.set_title("ROC curve")
    files["roc"] = "roc.png"
    fig.tight_layout()
    fig.savefig(out_dir / files["roc"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    PrecisionRecallDisplay.from_predictions(labels, probabilities, name="CNN", ax=ax)
    ax.set_title("Precision-recall curve")
    files["precision_recall"] = "precision_recall.png"
    fig.tight_layout()
    fig.savefig(out_dir / files["precision_recall"])
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=120)
    observed, predicted_mean = calibration_curve(labels, probabilities, n_bins=10, strategy="uniform")
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    ax.plot(predicted_mean, observed, "o-", label="model")
    ax.set_xlabel("predicted P(pneumonia)")
    ax.set_ylabel("observed fraction with pneumonia")
    ax.set_title("Reliability diagram (10 bins)")
    ax.legend(loc="upper left")
    files["reliability"] = "reliability.png"
    fig.tight_layout()
    fig.savefig(out_dir / files["reliability"])
    plt.close(fig)
    return files


def gate_section(gate: dict | None) -> list[str]:
    """Report lines on the not-a-chest-X-ray gate (empty when it was not measured)."""
    if not gate:
        return []
    return [
        "## Not a chest X-ray (UNKNOWN)",
        "",
        f"- Chest films of this set called UNKNOWN: **{gate['xrays_flagged_unknown']} of {gate['xrays']}** "
        f"({gate['xrays_flagged_rate']:.1%}).",
        f"- Non-chest images (unseen by the gate, see `pneumonia/negatives.py`) given no diagnosis: "
        f"**{gate['negatives_unknown'] + gate['negatives_refused_by_decoder']} of {gate['negatives']}** "
        f"({gate['negatives_no_diagnosis_rate']:.1%}): {gate['negatives_unknown']} UNKNOWN, "
        f"{gate['negatives_refused_by_decoder']} refused by the decoder (shape).",
        f"- Diagnosed although not chest films: {', '.join(gate['negatives_diagnosed']) or 'none'}.",
        "",
    ]


def write_report(metrics: dict, intervals: dict, figures: dict, classification_report: str,
                 metadata: dict, data_dir: str, out_dir: Path, gate: dict | None = None) -> Path:
    """Write ``report.md``: headline table with CIs, operating point, plots and the sklearn report."""

    def row(name: str, key: str) -> str:
        ci = intervals.get(key)
        ci_text = f"{ci[0]:.3f} - {ci[1]:.3f}" if ci else "n/a"
        return f"| {name} | {metrics[key]:.3f} | {ci_text} |"

    cm = metrics["confusion_matrix"]
    lines = [
        "# Evaluation report",
        "",
        f"Model `{metadata.get('version', '?')}` ({metadata.get('architecture', '')}), "
        f"input {metadata.get('input_size')} px, evaluated on `{data_dir}` "
        f"({metrics['n']} films: {metrics['n_normal']} NORMAL, {metrics['n_pneumonia']} PNEUMONIA) "
        f"on {dt.date.today().isoformat()}.",
        "",
        f"Operating point: PNEUMONIA when calibrated P(pneumonia) >= **{metrics['threshold']:.3f}** "
        f"(chosen on the patient-wise validation split; temperature {metadata.get('temperature', 1.0):.3f}).",
        "",
        "| figure | value | bootstrap 95% CI |",
        "|---|---|---|",
        row("accuracy", "accuracy"),
        row("sensitivity (recall, PNEUMONIA)", "sensitivity"),
        row("specificity (recall, NORMAL)", "specificity"),
        row("ROC AUC", "roc_auc"),
        row("expected calibration error (10 bins)", "ece"),
        f"| precision (PPV) | {metrics['precision']:.3f} | |",
        f"| F1 | {metrics['f1']:.3f} | |",
        f"| average precision | {metrics['average_precision']:.3f} | |",
        f"| Brier score | {metrics['brier']:.3f} | |",
        "",
        "Confusion matrix (rows: truth, columns: prediction):",
        "",
        "| | predicted NORMAL | predicted PNEUMONIA |",
        "|---|---|---|",
        f"| NORMAL | {cm[0][0]} | {cm[0][1]} |",
        f"| PNEUMONIA | {cm[1][0]} | {cm[1][1]} |",
        "",
        f"![confusion matrix]({figures['confusion_matrix']}) ![ROC curve]({figures['roc']})",
        "",
        f"![precision-recall curve]({figures['precision_recall']}) ![reliability diagram]({figures['reliability']})",
        "",
        *gate_section(gate),
        "## Classification report (scikit-learn)",
        "",
        "```",
        classification_report.rstrip(),
        "```",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def evaluate_gate(predictor, xray_rows: list[dict], seed: int = 0) -> dict:
    """Measure the not-a-chest-X-ray gate on unseen negatives and on the evaluated films.

    Args:
        predictor: a loaded :class:`pneumonia.Predictor` with its gate.
        xray_rows: ``predict_files`` rows of the evaluated chest films.
        seed: seed of the synthetic negatives.

    Returns:
        dict with the negative set's size, how many came back UNKNOWN, how many the decoder
        refused outright (also no diagnosis), the rates, and the share of chest films flagged.
    """
    from pneumonia.errors import InvalidImageError
    from pneumonia.negatives import make_negative_images

    outcomes = {}
    for name, image in make_negative_images(seed):
        try:
            outcomes[name] = predictor.predict(image).label
        except InvalidImageError:
            outcomes[name] = "REFUSED"
    n = len(outcomes)
    unknown = sum(label == "UNKNOWN" for label in outcomes.values())
    refused = sum(label == "REFUSED" for label in outcomes.values())
    readable = [row for row in xray_rows if not row["error"]]
    flagged = sum(row["label"] == "UNKNOWN" for row in readable)
    return {
        "negatives": n,
        "negatives_unknown": unknown,
        "negatives_refused_by_decoder": refused,
        "negatives_no_diagnosis_rate": (unknown + refused) / n,
        "negatives_unknown_rate": unknown / n,
        "negatives_diagnosed": sorted(name for name, label in outcomes.items() if label in ("NORMAL", "PNEUMONIA")),
        "xrays": len(readable),
        "xrays_flagged_unknown": flagged,
        "xrays_flagged_rate": flagged / max(1, len(readable)),
    }


def evaluate_model(data_dir: str | Path, model_dir: str | Path | None, out_dir: str | Path,
                   n_resamples: int = 2000, gate: bool = True, log=print) -> dict:
    """Predict every film under ``data_dir/{NORMAL,PNEUMONIA}`` and write the report.

    The classification figures use every readable film at the model's threshold, whatever the
    gate says (so they measure the CNN); the gate is measured separately (``gate=True``) on the
    same films and on the negative set of :mod:`pneumonia.negatives`.

    Returns:
        The ``metrics.json`` content.
    """
    from sklearn.metrics import classification_report

    from pneumonia.inference import Predictor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = list_records(data_dir)
    predictor = Predictor.load(model_dir)
    rows = list(predictor.predict_files([r.path for r in records]))
    failed = [row for row in rows if row["error"]]
    if failed:
        log(f"{len(failed)} films could not be read and are left out: {failed[0]['error']}")
    keep = [i for i, row in enumerate(rows) if not row["error"]]
    labels = np.array([records[i].label for i in keep])
    probabilities = np.array([rows[i]["pneumonia_probability"] for i in keep], dtype=np.float64)
    threshold = predictor.metadata.threshold
    metrics = compute_metrics(labels, probabilities, threshold)
    intervals = bootstrap_intervals(labels, probabilities, threshold, n_resamples) if len(set(labels)) == 2 else {}
    figures = plot_report_figures(labels, probabilities, threshold, out_dir) if len(set(labels)) == 2 else {}
    report_text = classification_report(labels, (probabilities >= threshold).astype(int),
                                         labels=[0, 1], target_names=list(predictor.class_names), digits=3,
                                         zero_division=0)
    metadata = json.loads(predictor.metadata.to_json())
    result = {
        "data": str(data_dir),
        "model_version": predictor.metadata.version,
        "date": dt.date.today().isoformat(),
        "metrics": metrics,
        "ci95": intervals,
        "unreadable": len(failed),
    }
    if predictor.gate is not None and gate:
        result["gate"] = evaluate_gate(predictor, rows)
        log("gate: " + json.dumps({k: v for k, v in result["gate"].items() if k != "negatives_diagnosed"}))
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    if figures:
        write_report(metrics, intervals, figures, report_text, metadata, str(data_dir), out_dir,
                     result.get("gate"))
    log(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` command's flags to ``parser``."""
    parser.add_argument("--data", required=True, help="folder with NORMAL/ and PNEUMONIA/ (e.g. the test split)")
    parser.add_argument("--model", default=None, help="model folder (default: $PNEUMONIA_MODEL_DIR or the shipped model/)")
    parser.add_argument("--out", default="reports", help="where metrics.json, report.md and plots go")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% CIs")
    parser.add_argument("--record", action="store_true",
                        help="also store these figures under metrics.test in the model's metadata.json")
    parser.add_argument("--no-gate", dest="gate", action="store_false",
                        help="skip measuring the not-a-chest-X-ray gate (needs scikit-image)")


def run(args: argparse.Namespace) -> int:
    """Run the ``evaluate`` command from parsed arguments."""
    result = evaluate_model(args.data, args.model, args.out, args.bootstrap, args.gate,
                            log=lambda m: print(m, flush=True))
    if args.record:
        record_in_metadata(result, args.model)
    return 0


def record_in_metadata(result: dict, model_dir: str | Path | None) -> None:
    """Store an evaluation's headline figures and CIs under ``metrics.test`` in ``metadata.json``."""
    from pneumonia.model import load_metadata, resolve_model_dir, update_metadata

    model_dir = resolve_model_dir(model_dir)
    metadata = load_metadata(model_dir)
    keys = ("n", "accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "ece", "threshold")
    test = {k: round(result["metrics"][k], 6) if isinstance(result["metrics"][k], float) else result["metrics"][k]
            for k in keys}
    test["ci95"] = {k: [round(v[0], 4), round(v[1], 4)] for k, v in result["ci95"].items()}
    test["data"] = result["data"]
    if "gate" in result:
        test["gate"] = {k: v for k, v in result["gate"].items() if k != "negatives_diagnosed"}
    metrics = dict(metadata.metrics, test=test)
    update_metadata(model_dir, metrics=metrics)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m pneumonia.evaluate``."""
    parser = argparse.ArgumentParser(prog="python -m pneumonia evaluate", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
