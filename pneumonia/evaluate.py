"""Score a trained model per population and write a readable report.

    python -m pneumonia evaluate --data ../shared/data/chest_xray/test \\
        --adult ../shared/data/adult_nih --model model/ --out reports/

Three parts, each with its own bootstrap 95% confidence intervals:

1. **Children**: the Kermany test split (``--data``); films resampled with replacement.
2. **Adults**: the fixed adult test set of ``--adult`` (:func:`pneumonia.data.split_adult_records`:
   the radiologist-boxed pneumonia films and the held-out normal patients); patients resampled
   (a patient's films go in and out together). Also the shortcut checks that matter for adults:
   specificity by view (AP films are often portable and supine) and UNKNOWN counts.
3. **The pointing game** on the boxed films: is the PNEUMONIA Grad-CAM map's peak within
   :data:`pneumonia.metrics.POINTING_TOLERANCE_PX` of the radiologist's box? Reported beside the
   best single fixed point on the same films, an optimistic baseline.

Verdicts are the product's own: the label :class:`pneumonia.inference.Predictor` returns for each
film (UNKNOWN included, counted as neither found nor cleared), never re-thresholded here. ROC AUC,
ECE and the reliability diagram use the calibrated probability of every readable film (the
network's output, gate set aside). Writes ``metrics.json``, ``report.md`` and the plots it shows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from pneumonia.data import (CLASS_NAMES, Record, list_adult_records, list_records, list_siim_records,
                            split_adult_records, split_siim_records)
from pneumonia.errors import InvalidImageError
from pneumonia.gradcam import resize_heatmap
from pneumonia.inference import UNKNOWN, FilmItem, Prediction, Predictor
from pneumonia.metrics import (HEADLINE_KEYS, NO_VERDICT, POINTING_TOLERANCE_PX, best_fixed_point, bootstrap_intervals,
                               bootstrap_share, box_cover, compute_metrics, group_indices, pointing_hits, share,
                               verdict_codes)
from pneumonia.model import ModelMetadata, load_metadata, resolve_model_dir, update_metadata
from pneumonia.negatives import make_negative_images
from pneumonia.notes import POPULATION_FILMS

FIGURE_SIZE = (4.2, 3.8)
# Candidate points of the best-fixed-point baseline: the centres of 8 x 8 pixel cells of the film.
FIXED_POINT_STEP_PX = 8
# The two fixed points named before any figure (issue 18): the middle of each lower lung zone, as
# shares of the film's (width, height).
LOWER_LUNG_POINTS = {"image_left_lower_zone": (0.25, 0.60), "image_right_lower_zone": (0.75, 0.60)}
# Figures of a population stored in the model's metadata (besides the CIs).
RECORDED_KEYS = ("n", "n_normal", "n_pneumonia", "accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc",
                 "ece", "threshold")


# ---------------------------------------------------------------------------------------------
# Scoring films with the product


def predict_records(predictor: Predictor, records: Sequence[Record], log: Callable[[str], None] = print,
                    explain: bool = False) -> tuple[list[Record], np.ndarray, np.ndarray, int]:
    """The product's verdict and calibrated probability for each film (unreadable films left out).

    Films go through ``Predictor.predict_items``, the batched path of ``Predictor.predict`` that
    the batch CLI and the worklist take, and each :class:`Prediction` gives both: the label as a
    user sees it, and P(PNEUMONIA) (which the prediction holds for UNKNOWN films too, although no
    diagnosis is shown for them).

    Args:
        predictor: the loaded model.
        records: the labelled films.
        log: where a note on unreadable films goes.
        explain: also keep each film's evidence map (``Prediction.class_heatmaps``), in small batches.

    Returns:
        ``(kept, probabilities, verdicts, unreadable)``: the readable records, ``float64 (N,)``
        P(PNEUMONIA), ``int64 (N,)`` verdict codes of the predictions' labels
        (:func:`pneumonia.metrics.verdict_codes`) and the number of films left out. With
        ``explain``, ``kept`` pairs each record with its prediction: ``[(record, prediction)]``.
    """
    items = [FilmItem(str(r.path), r.path) for r in records]
    kept, predictions, failed = [], [], []
    results = predictor.predict_items(items, batch_size=16 if explain else 64, explain=explain, max_overlay_side=64)
    for record, result in zip(records, results):
        if result.prediction is None:
            failed.append(result.error)
            continue
        predictions.append(result.prediction)
        kept.append((record, result.prediction) if explain else record)
    if failed:
        log(f"{len(failed)} films could not be read and are left out: {failed[0]}")
    probabilities = np.array([p.pneumonia_probability for p in predictions], dtype=np.float64)
    return kept, probabilities, verdict_codes([p.label for p in predictions], predictor.class_names), len(failed)


def evaluate_population(labels: np.ndarray, probabilities: np.ndarray, verdicts: np.ndarray, threshold: float,
                        n_resamples: int = 2000, patients: Optional[Sequence[str]] = None, seed: int = 0) -> dict:
    """Figures and bootstrap 95% intervals of one population.

    Args:
        labels: ``(N,)`` 0 NORMAL / 1 PNEUMONIA.
        probabilities: ``(N,)`` calibrated P(PNEUMONIA).
        verdicts: ``(N,)`` the product's verdict codes.
        threshold: the operating threshold the verdicts were decided with.
        n_resamples: bootstrap resamples.
        patients: ``(N,)`` patient ids to resample by patient; ``None`` resamples films.
        seed: the bootstrap's seed.

    Returns:
        ``{"metrics": compute_metrics(...), "ci95": {figure: [low, high]}, "resampled": "films" | "patients"}``;
        no intervals when one class is missing.
    """
    labels = np.asarray(labels).astype(int)
    groups = None if patients is None else group_indices(patients)
    both = len(np.unique(labels)) == 2
    return {
        "metrics": compute_metrics(labels, probabilities, threshold, verdicts),
        "ci95": bootstrap_intervals(labels, probabilities, verdicts, n_resamples, seed, groups) if both else {},
        "resampled": "films" if patients is None else "patients",
    }


def verdict_counts(verdicts: np.ndarray) -> dict[str, int]:
    """How many films got each verdict: ``{"NORMAL": n, "PNEUMONIA": n, "UNKNOWN": n}``."""
    verdicts = np.asarray(verdicts)
    return {CLASS_NAMES[0]: int(np.sum(verdicts == 0)), CLASS_NAMES[1]: int(np.sum(verdicts == 1)),
            UNKNOWN: int(np.sum(verdicts == NO_VERDICT))}


def rates_by_group(labels: np.ndarray, verdicts: np.ndarray, keys: Sequence[str], patients: Sequence[str],
                   label: int, n_resamples: int = 2000, seed: int = 0) -> dict[str, dict]:
    """Share of the films of class ``label`` given the right verdict, per group (e.g. per view).

    For ``label = 0`` that is specificity, for ``label = 1`` sensitivity, each group on its own
    films, with a bootstrap interval over its patients.

    Args:
        labels: ``(N,)`` 0/1 truth.
        verdicts: ``(N,)`` verdict codes.
        keys: ``(N,)`` the group of each film (e.g. ``"AP"``, ``"PA"``).
        patients: ``(N,)`` patient ids.
        label: the class measured.
        n_resamples, seed: the bootstrap's.

    Returns:
        ``{group: {"n", "NORMAL", "PNEUMONIA", "UNKNOWN", "rate", "ci95"}}``, groups sorted.
    """
    labels, verdicts = np.asarray(labels).astype(int), np.asarray(verdicts).astype(int)
    keys, patients = np.asarray(keys), np.asarray(patients)
    out = {}
    for key in sorted(set(keys[labels == label].tolist())):
        mask = (labels == label) & (keys == key)
        right = verdicts[mask] == label
        out[key] = {"n": int(mask.sum()), **verdict_counts(verdicts[mask]), "rate": share(right),
                    "ci95": bootstrap_share(right, n_resamples, seed, group_indices(patients[mask]))}
    return out


# ---------------------------------------------------------------------------------------------
# The pointing game


def heatmap_peak(heatmap: np.ndarray, frame: tuple[int, int]) -> tuple[int, int]:
    """Where a heatmap peaks on the film: upsampled to the film's frame as the overlay is, then argmax.

    Args:
        heatmap: ``float (h, w)`` in ``[0, 1]``.
        frame: ``(width, height)`` of the film in pixels.

    Returns:
        ``(x, y)`` = ``(column, row)`` of the largest upsampled value (the first in row-major
        order on ties, so ``(0, 0)`` for an all-zero map).
    """
    upsampled = resize_heatmap(heatmap, frame)
    row, column = np.unravel_index(int(np.argmax(upsampled)), upsampled.shape)
    return int(column), int(row)


def play_pointing_game(peaks: np.ndarray, boxes: Sequence[Sequence[float]], frame: tuple[int, int],
                       patients: Sequence[str], tolerance: float = POINTING_TOLERANCE_PX,
                       step: int = FIXED_POINT_STEP_PX, n_resamples: int = 2000, seed: int = 0) -> dict:
    """Hit rate of the heatmap peaks and of the best single fixed point, with intervals by patient.

    Args:
        peaks: ``(N, 2)`` ``(x, y)`` per film.
        boxes: ``N`` radiologist's boxes ``(x, y, width, height)``, same pixels.
        frame: ``(width, height)`` of the films.
        patients: ``(N,)`` patient ids (the bootstrap resamples patients).
        tolerance: pixels from the box that still count as a hit.
        step: the fixed-point candidate grid's spacing (:func:`pneumonia.metrics.best_fixed_point`).
        n_resamples, seed: the bootstrap's.

    Returns:
        dict with n, tolerance_px, hits, hit_rate, ci95, ``best_fixed_point`` (x, y, grid_step_px,
        hits, hit_rate and ci95 with the point held where it was found; it was chosen on these
        films, so it is optimistic), ``margin`` (heatmap minus fixed point), ``lower_lung_points``
        (the two fixed points named in advance, :data:`LOWER_LUNG_POINTS`, each with hits, rate
        and ci95), ``margin_lower_lung`` (heatmap minus the better of them) and ``box_cover``
        (mean share of the film inside the film's boxes: how easy a hit is).
    """
    peaks = np.asarray(peaks, dtype=np.float64).reshape(-1, 2)
    groups = group_indices(patients)
    hits = pointing_hits(peaks, boxes, tolerance)
    (x, y), _ = best_fixed_point(boxes, frame, step, tolerance)
    fixed_hits = pointing_hits(np.tile([x, y], (len(boxes), 1)), boxes, tolerance)
    lower = {}
    for name, (fx, fy) in LOWER_LUNG_POINTS.items():
        point = (fx * frame[0], fy * frame[1])
        named_hits = pointing_hits(np.tile(point, (len(boxes), 1)), boxes, tolerance)
        lower[name] = {"x": point[0], "y": point[1], "hits": int(named_hits.sum()), "hit_rate": share(named_hits),
                       "ci95": bootstrap_share(named_hits, n_resamples, seed, groups)}
    return {
        "lower_lung_points": lower,
        "margin_lower_lung": share(hits) - max(v["hit_rate"] for v in lower.values()),
        "box_cover": float(np.mean([box_cover(b, frame) for b in boxes])) if len(boxes) else None,
        "n": int(len(hits)),
        "tolerance_px": float(tolerance),
        "hits": int(hits.sum()),
        "hit_rate": share(hits),
        "ci95": bootstrap_share(hits, n_resamples, seed, groups),
        "best_fixed_point": {"x": x, "y": y, "grid_step_px": int(step), "hits": int(fixed_hits.sum()),
                             "hit_rate": share(fixed_hits),
                             "ci95": bootstrap_share(fixed_hits, n_resamples, seed, groups)},
        "margin": share(hits) - share(fixed_hits),
    }


# ---------------------------------------------------------------------------------------------
# Plots: one helper draws every figure


def save_plot(path: Path, title: str, draw: Callable) -> str:
    """Draw one figure with ``draw(ax)``, title it and save it as a PNG.

    Returns:
        The file's name (relative to its folder, as the report links it).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=FIGURE_SIZE, dpi=120)
    draw(ax)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def draw_confusion(ax, labels: np.ndarray, verdicts: np.ndarray) -> None:
    """Counts of truth (rows) against verdict (columns; an UNKNOWN column when there are any)."""
    columns = [0, 1] + ([NO_VERDICT] if np.any(verdicts == NO_VERDICT) else [])
    counts = np.array([[np.sum((labels == t) & (verdicts == v)) for v in columns] for t in (0, 1)])
    ax.imshow(counts, cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, str(value), ha="center", va="center", color="white" if value > counts.max() / 2 else "black")
    ax.set_xticks(range(len(columns)), [CLASS_NAMES[v] if v != NO_VERDICT else UNKNOWN for v in columns])
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set_xlabel("verdict")
    ax.set_ylabel("truth")


def draw_roc(ax, labels: np.ndarray, probabilities: np.ndarray, verdicts: np.ndarray) -> None:
    """ROC curve of the probabilities with the product's operating point."""
    from sklearn.metrics import RocCurveDisplay

    RocCurveDisplay.from_predictions(labels, probabilities, name="CNN", ax=ax)
    ax.plot([share(verdicts[labels == 0] == 1)], [share(verdicts[labels == 1] == 1)], "o", color="crimson",
            label="operating point")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.legend(loc="lower right")


def draw_precision_recall(ax, labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Precision-recall curve of the probabilities."""
    from sklearn.metrics import PrecisionRecallDisplay

    PrecisionRecallDisplay.from_predictions(labels, probabilities, name="CNN", ax=ax)


def draw_reliability(ax, labels: np.ndarray, probabilities: np.ndarray) -> None:
    """Observed PNEUMONIA share against predicted probability, 10 equal-width bins."""
    from sklearn.calibration import calibration_curve

    observed, predicted_mean = calibration_curve(labels, probabilities, n_bins=10, strategy="uniform")
    ax.plot([0, 1], [0, 1], ":", color="gray", label="perfect calibration")
    ax.plot(predicted_mean, observed, "o-", label="model")
    ax.set_xlabel("predicted P(pneumonia)")
    ax.set_ylabel("observed fraction with pneumonia")
    ax.legend(loc="upper left")


def draw_pointing(ax, peaks: np.ndarray, boxes: Sequence[Sequence[float]], hits: np.ndarray,
                  frame: tuple[int, int], fixed_point: tuple[float, float]) -> None:
    """The boxes, each film's peak (green hit, red miss) and the best fixed point, in the film's frame."""
    from matplotlib.patches import Rectangle

    from pneumonia.metrics import as_box_set

    # Many films: draw the boxes faintly so the peaks stay visible.
    width = 0.8 if len(boxes) < 50 else 0.2
    for film in boxes:
        for x, y, w, h in as_box_set(film):
            ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor="gray", linewidth=width))
    peaks = np.asarray(peaks).reshape(-1, 2)
    ax.scatter(peaks[hits, 0], peaks[hits, 1], s=14, color="green", label="peak, hit")
    ax.scatter(peaks[~hits, 0], peaks[~hits, 1], s=14, color="crimson", label="peak, miss")
    ax.plot(*fixed_point, "*", color="orange", markersize=12, label="best fixed point")
    ax.set_xlim(0, frame[0])
    ax.set_ylim(frame[1], 0)
    ax.set_aspect("equal")
    ax.legend(loc="lower left", fontsize=6)


def plot_population(labels: np.ndarray, probabilities: np.ndarray, verdicts: np.ndarray, threshold: float,
                    out_dir: Path, population: str, prefix: str = "") -> dict[str, str]:
    """Save a population's confusion matrix, ROC, precision-recall and reliability plots.

    Args:
        labels, probabilities, verdicts: as for :func:`pneumonia.metrics.headline_figures`.
        threshold: the operating threshold (named in the confusion matrix's title).
        out_dir: the folder the PNGs go to.
        population: its name, at the start of each title.
        prefix: start of the file names.

    Returns:
        ``{figure: file name}``; files are named ``<prefix><figure>.png``.
    """
    labels, verdicts = np.asarray(labels).astype(int), np.asarray(verdicts).astype(int)
    figures = {
        "confusion_matrix": (f"verdicts (threshold {threshold:.2f})", lambda ax: draw_confusion(ax, labels, verdicts)),
        "roc": ("ROC curve", lambda ax: draw_roc(ax, labels, probabilities, verdicts)),
        "precision_recall": ("precision-recall curve", lambda ax: draw_precision_recall(ax, labels, probabilities)),
        "reliability": ("reliability (10 bins)", lambda ax: draw_reliability(ax, labels, probabilities)),
    }
    return {name: save_plot(out_dir / f"{prefix}{name}.png", f"{population}: {title}", draw)
            for name, (title, draw) in figures.items()}


# ---------------------------------------------------------------------------------------------
# The populations


def evaluate_gate(predictor: Predictor, verdicts: np.ndarray, seed: int = 0) -> dict:
    """Measure the not-a-chest-X-ray gate on unseen negatives and on the evaluated films.

    Args:
        predictor: a loaded :class:`pneumonia.Predictor` with its gate.
        verdicts: verdict codes of the evaluated (readable) chest films.
        seed: seed of the synthetic negatives.

    Returns:
        dict with the negative set's size, how many came back UNKNOWN, how many the decoder
        refused outright (also no diagnosis), the rates, and the share of chest films flagged.
    """
    outcomes = {}
    for name, image in make_negative_images(seed):
        try:
            outcomes[name] = predictor.predict(image).label
        except InvalidImageError:
            outcomes[name] = "REFUSED"
    n = len(outcomes)
    unknown = sum(label == UNKNOWN for label in outcomes.values())
    refused = sum(label == "REFUSED" for label in outcomes.values())
    flagged = int(np.sum(np.asarray(verdicts) == NO_VERDICT))
    return {
        "negatives": n,
        "negatives_unknown": unknown,
        "negatives_refused_by_decoder": refused,
        "negatives_no_diagnosis_rate": (unknown + refused) / n,
        "negatives_unknown_rate": unknown / n,
        "negatives_diagnosed": sorted(name for name, label in outcomes.items() if label in CLASS_NAMES),
        "xrays": len(verdicts),
        "xrays_flagged_unknown": flagged,
        "xrays_flagged_rate": flagged / max(1, len(verdicts)),
    }


def evaluate_children(predictor: Predictor, data_dir: str | Path, out_dir: Path, n_resamples: int = 2000,
                      gate: bool = True, log: Callable[[str], None] = print) -> dict:
    """The Kermany test split (``data_dir/{NORMAL,PNEUMONIA}``): figures, CIs by film, plots, gate.

    Returns:
        ``{"data", "metrics", "ci95", "resampled", "unreadable", "figures", "classification_report"}``
        and ``"gate"`` when measured.
    """
    from sklearn.metrics import classification_report

    records, probabilities, verdicts, unreadable = predict_records(predictor, list_records(data_dir), log)
    labels = np.array([r.label for r in records])
    threshold = predictor.metadata.operating_point("child")[1]
    result = {"data": str(data_dir), **evaluate_population(labels, probabilities, verdicts, threshold, n_resamples),
              "unreadable": unreadable}
    result["figures"] = (plot_population(labels, probabilities, verdicts, threshold, out_dir, "Children")
                         if result["ci95"] else {})
    result["classification_report"] = classification_report(labels, verdicts, labels=[0, 1],
                                                             target_names=list(CLASS_NAMES), digits=3, zero_division=0)
    if predictor.gate is not None and gate:
        result["gate"] = evaluate_gate(predictor, verdicts)
        log("gate: " + json.dumps({k: v for k, v in result["gate"].items() if k != "negatives_diagnosed"}))
    return result


def evaluate_adults(predictor: Predictor, adult_dir: str | Path, out_dir: Path | None, n_resamples: int = 2000,
                    log: Callable[[str], None] = print, pointing: bool = True) -> tuple[dict, dict]:
    """The fixed adult test set of ``adult_dir`` (NIH): figures and CIs by patient, views, pointing game.

    Args:
        predictor: the loaded model (its adult operating point decides the verdicts).
        adult_dir: the ``adult_nih`` folder.
        out_dir: where the plots go (``None``: no plots and no pointing game).
        n_resamples: bootstrap resamples (patients resampled as units).
        log: progress lines.
        pointing: also play the pointing game.

    Returns:
        ``(adult_test, pointing_game)``: ``adult_test`` holds ``evaluate_population``'s figures,
        ``by_view`` (specificity of the normals and sensitivity of the boxed films per view),
        ``unreadable`` and ``figures``; ``pointing_game`` :func:`play_pointing_game`'s, plus the
        heatmap's grid, the boxed films' verdicts and one row per film.
    """
    _, test = split_adult_records(list_adult_records(adult_dir))
    pointing = pointing and out_dir is not None
    explained, probabilities, verdicts, unreadable = predict_records(predictor, test, log, explain=pointing)
    records = [r for r, _ in explained] if pointing else explained
    labels = np.array([r.label for r in records])
    patients = [r.patient for r in records]
    views = [r.view or "?" for r in records]
    threshold = predictor.metadata.operating_point("adult")[1]
    adult = {"data": str(adult_dir), **evaluate_population(labels, probabilities, verdicts, threshold, n_resamples,
                                                           patients), "unreadable": unreadable}
    adult["by_view"] = {"specificity": rates_by_group(labels, verdicts, views, patients, 0, n_resamples),
                        "sensitivity": rates_by_group(labels, verdicts, views, patients, 1, n_resamples)}
    adult["figures"] = (plot_population(labels, probabilities, verdicts, threshold, out_dir, "Adults", "adult_")
                        if adult["ci95"] and out_dir is not None else {})
    game = (score_pointing_game(predictor, [(r, p) for r, p in explained if r.boxes], out_dir / "pointing_game.png",
                                n_resamples) if pointing else {})
    return adult, game


def score_pointing_game(predictor: Predictor, boxed: Sequence[tuple[Record, Prediction]], figure_path: Path,
                        n_resamples: int = 2000) -> dict:
    """The pointing game on boxed films: the PNEUMONIA evidence's peak against the films' boxes.

    The pointing game asks where the evidence *for pneumonia* is, whatever the verdict, so the
    PNEUMONIA map is read from ``Prediction.class_heatmaps`` (the evidence of the same pass that
    ``predict(explain=True)`` makes), also for a film called NORMAL or UNKNOWN.

    Args:
        predictor: the loaded model.
        boxed: films with boxes, all of one size, each with its explained prediction
            (:func:`predict_records` with ``explain``).
        figure_path: where the plot goes.
        n_resamples: bootstrap resamples (by patient, or study).

    Returns:
        :func:`play_pointing_game`'s figures plus the frame, the heatmap's grid, the verdicts, one
        row per film and the figure; ``{}`` when no film is boxed.

    Raises:
        ValueError: the films differ in size (one fixed point cannot serve them all).
    """
    peaks, films, grids, frames = [], [], set(), set()
    for record, prediction in boxed:
        heatmap = prediction.class_heatmaps[predictor.class_names[1]]
        frame = prediction.image.shape[::-1]  # (width, height)
        peak = heatmap_peak(heatmap, frame)
        peaks.append(peak)
        grids.add(heatmap.shape)
        frames.add(frame)
        films.append({"file": record.path.name, "patient": record.patient, "view": record.view,
                      "verdict": prediction.label, "boxes": [list(b) for b in record.boxes], "peak": list(peak)})
    if not boxed:
        return {}
    if len(frames) != 1:
        raise ValueError(f"The boxed films differ in size ({sorted(frames)}); one fixed point cannot serve them all.")
    frame = frames.pop()
    boxes = [r.boxes for r, _ in boxed]
    game = play_pointing_game(np.array(peaks), boxes, frame, [r.patient for r, _ in boxed], n_resamples=n_resamples)
    hits = pointing_hits(np.array(peaks), boxes)
    for row, hit in zip(films, hits):
        row["hit"] = bool(hit)
    fixed = (game["best_fixed_point"]["x"], game["best_fixed_point"]["y"])
    game.update({"frame": list(frame), "heatmap_grid": [list(g) for g in sorted(grids)],
                 "explained_class": CLASS_NAMES[1],
                 "verdicts": verdict_counts(verdict_codes([f["verdict"] for f in films], predictor.class_names)),
                 "films": films,
                 "figure": save_plot(figure_path,
                                     f"Pointing game: {game['hits']}/{game['n']} peaks within "
                                     f"{game['tolerance_px']:.0f} px",
                                     lambda ax: draw_pointing(ax, np.array(peaks), boxes, hits, frame, fixed))})
    return game


def evaluate_siim(predictor: Predictor, siim_dir: str | Path, out_dir: Path | None, n_resamples: int = 2000,
                  log: Callable[[str], None] = print, pointing: bool = True) -> tuple[dict, dict]:
    """The fixed SIIM test split (:func:`pneumonia.data.split_siim_records`): figures and CIs by study,
    UNKNOWN counts, and the pointing game on its boxed films.

    Args:
        predictor: the loaded model (its adult operating point decides the verdicts).
        siim_dir: the ``adult_siim`` folder.
        out_dir: where the plots go (``None``: no plots).
        n_resamples: bootstrap resamples (studies resampled as units).
        log: progress lines.
        pointing: also play the pointing game.

    Returns:
        ``(siim_test, pointing_game)``.
    """
    _, test = split_siim_records(list_siim_records(siim_dir))
    pointing = pointing and out_dir is not None
    explained, probabilities, verdicts, unreadable = predict_records(predictor, test, log, explain=pointing)
    records = [r for r, _ in explained] if pointing else explained
    labels = np.array([r.label for r in records])
    threshold = predictor.metadata.operating_point("adult")[1]
    siim = {"data": str(siim_dir), **evaluate_population(labels, probabilities, verdicts, threshold, n_resamples,
                                                         [r.patient for r in records]), "unreadable": unreadable}
    siim["figures"] = (plot_population(labels, probabilities, verdicts, threshold, out_dir, "SIIM adults", "siim_")
                       if siim["ci95"] and out_dir is not None else {})
    game = (score_pointing_game(predictor, [(r, p) for r, p in explained if r.boxes],
                                out_dir / "siim_pointing_game.png", n_resamples) if pointing else {})
    return siim, game


def evaluate_unseen_hospitals(without_siim: str | Path | None, without_nih: str | Path | None,
                              siim_dir: str | Path | None, adult_dir: str | Path | None, n_resamples: int = 2000,
                              log: Callable[[str], None] = print) -> dict:
    """Leave-one-source-out: models trained without a hospital group, scored on its test set.

    Each model decides at its own adult operating point, fitted on its own validation films (none
    from the left-out source): what a film from a hospital the model never saw gets.

    Args:
        without_siim: a model folder trained without SIIM (scored on the SIIM test split), or ``None``.
        without_nih: a model folder trained without NIH (scored on the NIH adult test set), or ``None``.
        siim_dir, adult_dir: the data folders.

    Returns:
        ``{"siim": {...}, "nih": {...}, "unseen_hospital": {...}}``: each scored part with its model's
        version and figures, and ``unseen_hospital``: for sensitivity and specificity the lower of
        the parts' figures (what the adult caution quotes), ROC AUC likewise, with the films counted.
    """
    parts = {}
    if without_siim is not None and siim_dir is not None:
        predictor = Predictor.load(without_siim)
        siim, _ = evaluate_siim(predictor, siim_dir, None, n_resamples, log, pointing=False)
        parts["siim"] = dict(siim, model_version=predictor.metadata.version)
    if without_nih is not None and adult_dir is not None:
        predictor = Predictor.load(without_nih)
        nih, _ = evaluate_adults(predictor, adult_dir, None, n_resamples, log, pointing=False)
        parts["nih"] = dict(nih, model_version=predictor.metadata.version)
    if not parts:
        return {}
    lowest = {k: min(p["metrics"][k] for p in parts.values()) for k in ("sensitivity", "specificity", "roc_auc")}
    described = ", ".join(f"the {name.upper()} test set scored by a model trained without {name.upper()}"
                          for name in parts)
    parts["unseen_hospital"] = dict(lowest, n=int(sum(p["metrics"]["n"] for p in parts.values())),
                                    description=f"the lower of the leave-one-source-out figures ({described})")
    return parts


# ---------------------------------------------------------------------------------------------
# The report


def format_value(value: float | None) -> str:
    """A figure to 3 decimals, ``n/a`` when there was nothing to measure it on."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def format_interval(interval: Sequence[float] | None) -> str:
    """A ``[low, high]`` interval as ``low - high``, ``n/a`` when there is none."""
    return f"{interval[0]:.3f} - {interval[1]:.3f}" if interval else "n/a"


def population_table(population: dict) -> list[str]:
    """Markdown table of a population's headline figures with their intervals, and its verdicts."""
    metrics, intervals = population["metrics"], population["ci95"]
    names = {"accuracy": "accuracy", "sensitivity": "sensitivity (recall, PNEUMONIA)",
             "specificity": "specificity (recall, NORMAL)", "roc_auc": "ROC AUC",
             "ece": "expected calibration error (10 bins)"}

    rows = ["| figure | value | bootstrap 95% CI |", "|---|---|---|"]
    for key in HEADLINE_KEYS:
        rows.append(f"| {names[key]} | {format_value(metrics[key])} | {format_interval(intervals.get(key))} |")
    for key, name in (("precision", "precision (PPV)"), ("f1", "F1"), ("average_precision", "average precision"),
                      ("brier", "Brier score")):
        rows.append(f"| {name} | {format_value(metrics[key])} | |")
    cm, unknown = metrics["confusion_matrix"], metrics["unknown"]
    return rows + [
        "",
        f"Verdicts (rows: truth, columns: verdict; intervals resample {population['resampled']}):",
        "",
        "| | NORMAL | PNEUMONIA | UNKNOWN |",
        "|---|---|---|---|",
        *(f"| {name} | {cm[t][0]} | {cm[t][1]} | {unknown[t]} |" for t, name in enumerate(CLASS_NAMES)),
        "",
    ]


def figure_links(figures: dict[str, str]) -> list[str]:
    """Markdown image links of a population's plots, two a line."""
    links = [f"![{name.replace('_', ' ')}]({file})" for name, file in figures.items()]
    return [line for i in range(0, len(links), 2) for line in (" ".join(links[i:i + 2]), "")]


def population_section(title: str, intro: str, population: dict) -> list[str]:
    """A report section: its title, one paragraph on the films, the figures table and the plots."""
    return [f"## {title}", "", intro, "", *population_table(population), *figure_links(population["figures"])]


def children_section(children: dict) -> list[str]:
    m = children["metrics"]
    return population_section(
        "Children: Kermany test split",
        f"`{children['data']}`: {m['n']} films ({m['n_normal']} NORMAL, {m['n_pneumonia']} PNEUMONIA), "
        f"{children['unreadable']} unreadable.", children)


def adult_section(adult: dict) -> list[str]:
    m = adult["metrics"]
    lines = [
        "## Adults: NIH test set",
        "",
        f"`{adult['data']}`, the fixed adult test set: {m['n_pneumonia']} films with a radiologist's pneumonia box "
        f"and {m['n_normal']} \"No Finding\" films of held-out patients ({adult['unreadable']} unreadable). "
        "Never trained, selected or calibrated on. Sensitivity is on the boxed films, specificity on the "
        "held-out normals, AUC between the two.",
        "",
        *population_table(adult),
        "By view (adult AP films are often portable or supine; a view the network reads as disease is a shortcut):",
        "",
        "| view | figure | films | NORMAL | PNEUMONIA | UNKNOWN | value | bootstrap 95% CI |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for figure, groups in adult["by_view"].items():
        for view, g in groups.items():
            lines.append(f"| {view} | {figure} | {g['n']} | {g['NORMAL']} | {g['PNEUMONIA']} | {g['UNKNOWN']} | "
                         f"{format_value(g['rate'])} | {format_interval(g['ci95'])} |")
    return lines + ["", *figure_links(adult["figures"])]


def siim_section(siim: dict) -> list[str]:
    m = siim["metrics"]
    return population_section(
        "Adults: SIIM test split",
        f"`{siim['data']}`, the fixed SIIM test split (a seeded fifth of the studies, `data.split_siim_records`): "
        f"{m['n']} films ({m['n_normal']} NORMAL, {m['n_pneumonia']} PNEUMONIA, radiologists' reads; "
        f"{siim['unreadable']} unreadable), from BIMCV (Spain) and MIDRC-RICORD (USA). Never trained, selected or "
        "calibrated on. Intervals resample studies.", siim)


def unseen_section(loso: dict) -> list[str]:
    lines = [
        "## Adults from a hospital the model never saw (leave one source out)",
        "",
        "Models trained with the same recipe but without one source, each scored on that source's test set at its "
        "own adult operating point (fitted on its own validation films, none from the left-out source). These are "
        "the figures to expect for an adult film from an unknown hospital.",
        "",
        "| left out | model | films | ROC AUC | sensitivity | specificity |",
        "|---|---|---|---|---|---|",
    ]
    for name, part in loso.items():
        if name == "unseen_hospital":
            continue
        m, ci = part["metrics"], part["ci95"]
        lines.append(f"| {name.upper()} | `{part['model_version']}` | {m['n']} | {format_value(m['roc_auc'])} "
                     f"{format_interval(ci.get('roc_auc'))} | {format_value(m['sensitivity'])} "
                     f"{format_interval(ci.get('sensitivity'))} | {format_value(m['specificity'])} "
                     f"{format_interval(ci.get('specificity'))} |")
    unseen = loso["unseen_hospital"]
    return lines + ["", f"Quoted by the adult caution ({unseen['description']}): sensitivity "
                        f"{format_value(unseen['sensitivity'])}, specificity {format_value(unseen['specificity'])}.", ""]


def pointing_section(game: dict, title: str = "adult films with a radiologist's box") -> list[str]:
    fixed = game["best_fixed_point"]

    grid = ", ".join(f"{g[0]} x {g[1]}" for g in game["heatmap_grid"])
    named = [f"| fixed point ({v['x']:.0f}, {v['y']:.0f}), {name.replace('_', ' ')}, named in advance | "
             f"{v['hits']} / {game['n']} | {format_value(v['hit_rate'])} | {format_interval(v['ci95'])} |"
             for name, v in game.get("lower_lung_points", {}).items()]
    return [
        f"## Pointing game: {title}",
        "",
        f"The {game['explained_class']} Grad-CAM map (grid {grid} cells; for films not called "
        f"{game['explained_class']} too), upsampled to the {game['frame'][0]} x {game['frame'][1]} px film as the "
        f"overlay is; a hit when its peak is within {game['tolerance_px']:.0f} px of the box. Verdicts on these "
        f"films: {', '.join(f'{k} {v}' for k, v in game['verdicts'].items())}. Intervals resample patients.",
        "",
        "| pointer | hits | hit rate | bootstrap 95% CI |",
        "|---|---|---|---|",
        f"| heatmap peak | {game['hits']} / {game['n']} | {format_value(game['hit_rate'])} | "
        f"{format_interval(game['ci95'])} |",
        f"| best fixed point ({fixed['x']:.0f}, {fixed['y']:.0f}), searched every {fixed['grid_step_px']} px "
        f"on these films (optimistic) | {fixed['hits']} / {game['n']} | {format_value(fixed['hit_rate'])} | "
        f"{format_interval(fixed['ci95'])} |",
        *named,
        "",
        f"Heatmap minus the best fixed point: **{game['margin']:+.3f}**"
        + (f"; minus the better lower-lung point: **{game['margin_lower_lung']:+.3f}**. The boxes cover "
           f"{game['box_cover']:.0%} of the film on average (how easy a hit is)."
           if game.get("lower_lung_points") else "."),
        "",
        f"![pointing game]({game['figure']})",
        "",
    ]


def gate_section(gate: dict | None) -> list[str]:
    """Report lines on the not-a-chest-X-ray gate (empty when it was not measured)."""
    if not gate:
        return []
    return [
        "## Not a chest X-ray (UNKNOWN)",
        "",
        f"- Chest films of the Kermany test split called UNKNOWN: **{gate['xrays_flagged_unknown']} of "
        f"{gate['xrays']}** ({gate['xrays_flagged_rate']:.1%}).",
        f"- Non-chest images (unseen by the gate, see `pneumonia/negatives.py`) given no diagnosis: "
        f"**{gate['negatives_unknown'] + gate['negatives_refused_by_decoder']} of {gate['negatives']}** "
        f"({gate['negatives_no_diagnosis_rate']:.1%}): {gate['negatives_unknown']} UNKNOWN, "
        f"{gate['negatives_refused_by_decoder']} refused by the decoder (shape).",
        f"- Diagnosed although not chest films: {', '.join(gate['negatives_diagnosed']) or 'none'}.",
        "",
    ]


def operating_points(metadata: dict) -> str:
    """The operating point(s) in one sentence: one per population where the model has them."""
    fitted = ModelMetadata.from_dict(metadata).fitted_populations
    if not fitted:
        return (f"Operating point: PNEUMONIA when calibrated P(pneumonia) >= **{metadata.get('threshold', 0.0):.3f}** "
                f"(chosen on the patient-wise validation split; temperature {metadata.get('temperature', 1.0):.3f}).")
    thresholds = "; ".join(f"**{v['threshold']:.3f}** for {POPULATION_FILMS.get(k, k)}" for k, v in fitted.items())
    temperatures = ", ".join(f"{v['temperature']:.3f}" for v in fitted.values())
    return ("Operating points, each chosen on its population's patient-wise validation films: PNEUMONIA when "
            f"calibrated P(pneumonia) >= {thresholds} (temperatures {temperatures}). A film's population comes "
            "from its DICOM age, else from the image (the population probe); the NIH JPEGs here carry no age, so "
            "the probe decides.")


def write_report(result: dict, metadata: dict, out_dir: Path, classification_report: str = "") -> Path:
    """Write ``report.md``: the operating point, then a section per population, the pointing game and the gate."""
    lines = [
        "# Evaluation report",
        "",
        f"Model `{metadata.get('version', '?')}` ({metadata.get('architecture', '')}), "
        f"input {metadata.get('input_size')} px, evaluated on {result['date']}.",
        "",
        operating_points(metadata) + " "
        "Verdicts are the labels the predictor returns; an UNKNOWN verdict (not a chest X-ray, no diagnosis) "
        "counts as neither found nor cleared. AUC, ECE and the curves use every readable film's probability.",
        "",
    ]
    if "metrics" in result:
        lines += children_section(result)
    if "adult_test" in result:
        lines += adult_section(result["adult_test"])
    if result.get("pointing_game"):
        lines += pointing_section(result["pointing_game"], "NIH adult films with a radiologist's box")
    if "siim_test" in result:
        lines += siim_section(result["siim_test"])
    if result.get("pointing_game_siim"):
        lines += pointing_section(result["pointing_game_siim"], "SIIM test films with radiologists' opacity boxes")
    if result.get("leave_one_source_out"):
        lines += unseen_section(result["leave_one_source_out"])
    lines += gate_section(result.get("gate"))
    if classification_report:
        lines += ["## Classification report, children (scikit-learn)", "", "```", classification_report.rstrip(),
                  "```", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path


def finite_or_none(value):
    """``value`` with every non-finite float (NaN: a figure with nothing to measure) as ``None``, for JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def evaluate_model(data_dir: str | Path | None, model_dir: str | Path | None, out_dir: str | Path,
                   n_resamples: int = 2000, gate: bool = True, log: Callable[[str], None] = print,
                   adult_dir: str | Path | None = None, siim_dir: str | Path | None = None,
                   without_siim: str | Path | None = None, without_nih: str | Path | None = None) -> dict:
    """Score the model on the children's test split and/or the adult test sets, and write the report.

    Args:
        data_dir: folder with ``NORMAL/`` and ``PNEUMONIA/`` (the Kermany test split), or ``None``.
        model_dir: the model folder (``None``: the shipped one).
        out_dir: where ``metrics.json``, ``report.md`` and the plots go.
        n_resamples: bootstrap resamples.
        gate: also measure the not-a-chest-X-ray gate (with the children's films).
        log: progress lines.
        adult_dir: the ``adult_nih`` folder, or ``None``.
        siim_dir: the ``adult_siim`` folder, or ``None``.
        without_siim, without_nih: leave-one-source-out model folders
            (:func:`evaluate_unseen_hospitals`), or ``None``.

    Returns:
        The ``metrics.json`` content: the children's figures at the top level (``data``,
        ``metrics``, ``ci95``, ``gate``), ``adult_test`` and ``pointing_game`` when ``adult_dir``
        is given, ``siim_test`` and ``pointing_game_siim`` when ``siim_dir`` is, and
        ``leave_one_source_out`` when a leave-one-source-out model is.

    Raises:
        ValueError: neither folder given.
    """
    if data_dir is None and adult_dir is None and siim_dir is None:
        raise ValueError("Give the children's test folder (--data), an adult folder (--adult, --siim), or several.")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.load(model_dir)
    result: dict = {"model_version": predictor.metadata.version, "date": dt.date.today().isoformat()}
    report_text = ""
    if data_dir is not None:
        children = evaluate_children(predictor, data_dir, out_dir, n_resamples, gate, log)
        report_text = children.pop("classification_report")
        result.update(children)
        log("children: " + json.dumps({k: round(v, 4) for k, v in children["metrics"].items() if isinstance(v, float)}))
    if adult_dir is not None:
        result["adult_test"], result["pointing_game"] = evaluate_adults(predictor, adult_dir, out_dir, n_resamples, log)
        log("adults: " + json.dumps({k: round(v, 4) for k, v in result["adult_test"]["metrics"].items()
                                     if isinstance(v, float)}))
        if result["pointing_game"]:
            game = result["pointing_game"]
            log(f"pointing game: {game['hits']}/{game['n']} "
                f"(best fixed point {game['best_fixed_point']['hits']}/{game['n']})")
    if siim_dir is not None:
        result["siim_test"], result["pointing_game_siim"] = evaluate_siim(predictor, siim_dir, out_dir, n_resamples, log)
        log("SIIM adults: " + json.dumps({k: round(v, 4) for k, v in result["siim_test"]["metrics"].items()
                                          if isinstance(v, float)}))
        game = result["pointing_game_siim"]
        log(f"SIIM pointing game: {game['hits']}/{game['n']} (best fixed point {game['best_fixed_point']['hits']}, "
            f"lower-lung points {[v['hits'] for v in game['lower_lung_points'].values()]})")
    if without_siim is not None or without_nih is not None:
        result["leave_one_source_out"] = evaluate_unseen_hospitals(without_siim, without_nih, siim_dir, adult_dir,
                                                                   n_resamples, log)
        log("unseen hospitals: " + json.dumps(result["leave_one_source_out"].get("unseen_hospital")))
    result = finite_or_none(result)
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    write_report(result, json.loads(predictor.metadata.to_json()), out_dir, report_text)
    return result


def summarise_population(population: dict) -> dict:
    """The figures of a population stored in metadata: :data:`RECORDED_KEYS`, rounded, with CIs and data."""
    metrics = population["metrics"]
    summary = {k: round(metrics[k], 6) if isinstance(metrics[k], float) else metrics[k] for k in RECORDED_KEYS}
    summary["ci95"] = {k: [round(v[0], 4), round(v[1], 4)] for k, v in population["ci95"].items()}
    summary["data"] = population["data"]
    return summary


def record_in_metadata(result: dict, model_dir: str | Path | None) -> None:
    """Store an evaluation's headline figures in ``metadata.json``: ``metrics.test`` (children, with the
    gate), ``metrics.adult_test`` and ``metrics.pointing_game``, for the parts evaluated."""
    model_dir = resolve_model_dir(model_dir)
    metrics = dict(load_metadata(model_dir).metrics)
    if "metrics" in result:
        metrics["test"] = summarise_population(result)
        if "gate" in result:
            metrics["test"]["gate"] = {k: v for k, v in result["gate"].items() if k != "negatives_diagnosed"}
    if "adult_test" in result:
        adult = result["adult_test"]
        # Per view, what a caution needs (pneumonia.notes.describe_view_caution): rate, films, CI.
        by_view = {figure: {view: {"rate": round(g["rate"], 6), "n": g["n"], "ci95": [round(b, 4) for b in g["ci95"]]}
                            for view, g in groups.items()}
                   for figure, groups in adult["by_view"].items()}
        metrics["adult_test"] = dict(summarise_population(adult), unknown=adult["metrics"]["unknown"], by_view=by_view)
    keys = ("n", "hits", "hit_rate", "ci95", "tolerance_px", "heatmap_grid", "margin", "best_fixed_point",
            "lower_lung_points", "margin_lower_lung", "box_cover")
    for name in ("pointing_game", "pointing_game_siim"):
        if result.get(name):
            metrics[name] = {k: result[name][k] for k in keys}
    if "siim_test" in result:
        metrics["siim_test"] = dict(summarise_population(result["siim_test"]),
                                    unknown=result["siim_test"]["metrics"]["unknown"])
    if result.get("leave_one_source_out"):
        loso = result["leave_one_source_out"]
        metrics["leave_one_source_out"] = {name: dict(summarise_population(part), model_version=part["model_version"])
                                           for name, part in loso.items() if name != "unseen_hospital"}
        metrics["unseen_hospital"] = {k: (round(v, 6) if isinstance(v, float) else v)
                                      for k, v in loso["unseen_hospital"].items()}
    update_metadata(model_dir, metrics=metrics)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` command's flags to ``parser``."""
    parser.add_argument("--data", default=None,
                        help="children's test folder with NORMAL/ and PNEUMONIA/ (e.g. ../shared/data/chest_xray/test)")
    parser.add_argument("--adult", default=None,
                        help="the adult_nih folder (MANIFEST.tsv): scores its fixed adult test set and the pointing "
                             "game")
    parser.add_argument("--siim", default=None,
                        help="the adult_siim folder (MANIFEST.tsv): scores its fixed test split (by study) and the "
                             "pointing game on its boxed films")
    parser.add_argument("--without-siim", default=None,
                        help="a model folder trained without SIIM: scored on the SIIM test split (an unseen hospital)")
    parser.add_argument("--without-nih", default=None,
                        help="a model folder trained without NIH: scored on the NIH adult test set (an unseen hospital)")
    parser.add_argument("--model", default=None,
                        help="model folder (default: $PNEUMONIA_MODEL_DIR or the shipped model/)")
    parser.add_argument("--out", default="reports", help="where metrics.json, report.md and plots go")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% CIs")
    parser.add_argument("--record", action="store_true",
                        help="also store the figures in the model's metadata.json (metrics.test, metrics.adult_test, "
                             "metrics.pointing_game)")
    parser.add_argument("--no-gate", dest="gate", action="store_false",
                        help="skip measuring the not-a-chest-X-ray gate (needs scikit-image)")


def run(args: argparse.Namespace) -> int:
    """Run the ``evaluate`` command from parsed arguments."""
    result = evaluate_model(args.data, args.model, args.out, args.bootstrap, args.gate,
                            log=lambda m: print(m, flush=True), adult_dir=args.adult, siim_dir=args.siim,
                            without_siim=args.without_siim, without_nih=args.without_nih)
    if args.record:
        record_in_metadata(result, args.model)
    return 0
