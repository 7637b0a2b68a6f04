"""Evaluation per population: the figures (pneumonia.metrics), the pointing game and the evaluate command.

Expected values are worked out by hand in the comments, not by calling the code under test.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from pneumonia.data import Record
from pneumonia.evaluate import evaluate_population, heatmap_peak, play_pointing_game, rates_by_group
from pneumonia.metrics import (NO_VERDICT, best_fixed_point, bootstrap, bootstrap_share, compute_metrics,
                               distance_to_box, group_indices, pointing_hits, verdict_codes)

from conftest import SHARED_DATA

ADULT_DATA = SHARED_DATA.parent / "adult_nih"  # beside the chest_xray folder (PNEUMONIA_DATA)


# --- the pointing game's hit rule -------------------------------------------------------------

BOX = (10, 20, 30, 40)  # x 10..40, y 20..60


@pytest.mark.parametrize("point, expected", [
    ((25, 40), 0.0),          # inside
    ((10, 20), 0.0),          # on the corner
    ((40, 60), 0.0),          # on the opposite corner
    ((0, 40), 10.0),          # 10 px left of the left edge
    ((55, 30), 15.0),         # 15 px right of the right edge
    ((25, 75), 15.0),         # 15 px below the bottom edge
    ((7, 16), 5.0),           # 3 left and 4 above the top-left corner: 3-4-5
    ((49, 72), 15.0),         # 9 right and 12 below the bottom-right corner: 9-12-15
    ((50, 72), math.hypot(10, 12)),
])
def test_distance_to_box_by_hand(point, expected):
    assert distance_to_box(np.array([point]), BOX)[0] == pytest.approx(expected)


@pytest.mark.parametrize("point, hit", [
    ((25, 40), True), ((55, 30), True), ((49, 72), True),  # at most 15 px away
    ((55.5, 30), False), ((50, 72), False), ((200, 200), False),
])
def test_pointing_hits_within_15_px(point, hit):
    assert pointing_hits(np.array([point]), [BOX]).tolist() == [hit]


def test_pointing_hits_pairs_each_point_with_its_own_box():
    boxes = [(0, 0, 10, 10), (100, 100, 10, 10)]
    # The first point is inside the second box, the second inside the first: both miss their own.
    assert pointing_hits(np.array([[105, 105], [5, 5]]), boxes).tolist() == [False, False]
    assert pointing_hits(np.array([[5, 5], [105, 105]]), boxes).tolist() == [True, True]


# --- the best fixed point ---------------------------------------------------------------------

def test_best_fixed_point_by_hand():
    # Frame 32 x 32, step 8: candidates at 4, 12, 20, 28 on each axis. Tolerance 0: a candidate
    # hits a box only when inside it. (4, 4) is in box A only; (12, 12) is in B and C; nothing
    # else is in two boxes. Best: (12, 12) with 2 of 3.
    boxes = [(0, 0, 8, 8), (8, 8, 8, 8), (10, 10, 4, 4)]
    assert best_fixed_point(boxes, (32, 32), step=8, tolerance=0) == ((12.0, 12.0), pytest.approx(2 / 3))


def test_best_fixed_point_breaks_ties_in_row_major_order():
    # Two boxes, each holding one candidate: (20, 4) (row y=4) comes before (4, 20) (row y=20).
    boxes = [(2, 18, 4, 4), (18, 2, 4, 4)]
    assert best_fixed_point(boxes, (32, 32), step=8, tolerance=0) == ((20.0, 4.0), 0.5)


def test_best_fixed_point_uses_the_tolerance():
    # A 1 px box at (30, 30): the nearest candidate (28, 28) is hypot(2, 2) = 2.83 px away.
    assert best_fixed_point([(30, 30, 1, 1)], (32, 32), step=8, tolerance=3) == ((28.0, 28.0), 1.0)
    assert best_fixed_point([(30, 30, 1, 1)], (32, 32), step=8, tolerance=2.5)[1] == 0.0


# --- the heatmap's peak -----------------------------------------------------------------------

@pytest.mark.parametrize("grid, cell", [((5, 5), (0, 0)), ((5, 5), (3, 1)), ((5, 5), (4, 4)), ((14, 14), (9, 2)),
                                        ((4, 6), (2, 5))])
def test_heatmap_peak_lies_in_the_hot_cell(grid, cell):
    # One cell at 1, the rest 0: upsampled smoothly to 512 x 512, the peak must fall within that
    # cell's footprint on the film, columns [c * 512 / w, (c + 1) * 512 / w), same for rows.
    heatmap = np.zeros(grid, np.float32)
    heatmap[cell] = 1.0
    x, y = heatmap_peak(heatmap, (512, 512))
    (h, w), (row, column) = grid, cell
    assert column * 512 / w <= x < (column + 1) * 512 / w
    assert row * 512 / h <= y < (row + 1) * 512 / h


def test_heatmap_peak_of_an_empty_map_is_the_first_pixel():
    assert heatmap_peak(np.zeros((5, 5), np.float32), (64, 48)) == (0, 0)


def test_heatmap_peak_uses_the_frame_as_width_and_height():
    heatmap = np.zeros((2, 2), np.float32)
    heatmap[0, 1] = 1.0  # top right
    x, y = heatmap_peak(heatmap, (400, 100))
    assert 200 <= x < 400 and 0 <= y < 50


def test_play_pointing_game_by_hand():
    # Four films, 32 px frame; peaks hit films 0, 1 and 3 (tolerance 0: inside the box).
    boxes = [(0, 0, 8, 8), (0, 0, 8, 8), (24, 24, 8, 8), (8, 8, 8, 8)]
    peaks = np.array([[2, 2], [6, 7], [0, 31], [12, 12]])
    game = play_pointing_game(peaks, boxes, (32, 32), ["a", "b", "c", "d"], tolerance=0, step=8, n_resamples=200)
    assert game["hits"] == 3 and game["hit_rate"] == 0.75
    # The best candidate is (4, 4), in boxes 0 and 1: 2 of 4.
    fixed = game["best_fixed_point"]
    assert (fixed["x"], fixed["y"], fixed["hits"], fixed["hit_rate"]) == (4.0, 4.0, 2, 0.5)
    assert game["margin"] == pytest.approx(0.25)
    low, high = game["ci95"]
    assert 0.0 <= low <= 0.75 <= high <= 1.0 and low < high


# --- bootstrap ---------------------------------------------------------------------------------

def test_group_indices_collects_each_patients_films():
    groups = group_indices(["b", "a", "b", "c", "a"])
    assert [g.tolist() for g in groups] == [[1, 4], [0, 2], [3]]


def test_bootstrap_by_patient_keeps_a_patients_films_together():
    patients = ["p1", "p1", "p1", "p2", "p3", "p3"]
    seen = []

    def statistic(idx):
        counts = np.bincount(idx, minlength=6)
        seen.append(counts)
        return {"n": float(len(idx))}

    bootstrap(statistic, 6, n_resamples=50, seed=1, groups=group_indices(patients))
    for counts in seen:
        assert counts[0] == counts[1] == counts[2] and counts[4] == counts[5]


def test_bootstrap_share_of_a_constant_is_that_constant_and_covers_the_mean_otherwise():
    assert bootstrap_share(np.ones(7, bool), n_resamples=100) == [1.0, 1.0]
    hits = np.array([1, 0] * 20, bool)
    low, high = bootstrap_share(hits, n_resamples=500)
    assert low < 0.5 < high
    assert bootstrap_share(np.array([], bool)) == []


# --- per-population figures on synthetic scores -------------------------------------------------

LABELS = np.array([0, 0, 0, 1, 1, 1])
PROBS = np.array([0.1, 0.6, 0.3, 0.7, 0.4, 0.9])
VERDICTS = np.array([0, 1, NO_VERDICT, 1, 1, NO_VERDICT])  # the product's answers, two UNKNOWN


def test_verdict_codes():
    assert verdict_codes(["NORMAL", "PNEUMONIA", "UNKNOWN", ""]).tolist() == [0, 1, NO_VERDICT, NO_VERDICT]


def test_compute_metrics_counts_unknown_as_neither_found_nor_cleared():
    m = compute_metrics(LABELS, PROBS, 0.5, VERDICTS)
    assert m["accuracy"] == pytest.approx(3 / 6)      # films 0, 3 and 4 right
    assert m["specificity"] == pytest.approx(1 / 3)   # one of three normals called NORMAL
    assert m["sensitivity"] == pytest.approx(2 / 3)   # films 3 and 4 called PNEUMONIA
    assert m["precision"] == pytest.approx(2 / 3)     # PNEUMONIA verdicts: films 1, 3, 4
    assert m["f1"] == pytest.approx(2 / 3)
    # AUC: positive-negative pairs ordered right: 0.7 > 3, 0.4 > 2 (0.1, 0.3), 0.9 > 3 -> 8 of 9.
    assert m["roc_auc"] == pytest.approx(8 / 9)
    # ECE: one film per bin, so the mean |y - p| = (.1 + .6 + .3 + .3 + .6 + .1) / 6.
    assert m["ece"] == pytest.approx(2.0 / 6)
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.09 + 0.09 + 0.36 + 0.01) / 6)
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["unknown"] == [1, 1]


def test_compute_metrics_thresholds_raw_scores_without_verdicts():
    # p >= 0.5: films 1, 3, 5 PNEUMONIA -> normals 0, 2 cleared, positives 3, 5 found.
    m = compute_metrics(LABELS, PROBS, 0.5)
    assert (m["specificity"], m["sensitivity"], m["accuracy"]) == pytest.approx((2 / 3, 2 / 3, 4 / 6))
    assert m["unknown"] == [0, 0]


def test_evaluate_population_resamples_films_or_patients():
    labels = np.tile(LABELS, 5)
    by_film = evaluate_population(labels, np.tile(PROBS, 5), np.tile(VERDICTS, 5), 0.5, n_resamples=300)
    patients = [f"p{i // 2}" for i in range(len(labels))]
    by_patient = evaluate_population(labels, np.tile(PROBS, 5), np.tile(VERDICTS, 5), 0.5, 300, patients)
    assert by_film["resampled"] == "films" and by_patient["resampled"] == "patients"
    for result in (by_film, by_patient):
        assert set(result["ci95"]) == {"accuracy", "sensitivity", "specificity", "roc_auc", "ece"}
        for key, (low, high) in result["ci95"].items():
            assert low <= result["metrics"][key] <= high, key
    one_class = evaluate_population(np.zeros(4), np.full(4, 0.2), np.zeros(4), 0.5, 50)
    assert one_class["ci95"] == {} and one_class["metrics"]["specificity"] == 1.0


def test_rates_by_group_by_hand():
    labels = np.array([0, 0, 0, 0, 0, 1])
    verdicts = np.array([0, 1, NO_VERDICT, 1, 0, 1])
    views = ["AP", "AP", "AP", "PA", "PA", "PA"]
    patients = ["a", "a", "b", "c", "d", "e"]
    by_view = rates_by_group(labels, verdicts, views, patients, label=0, n_resamples=100)
    # AP normals: NORMAL, PNEUMONIA, UNKNOWN -> 1 of 3 cleared; PA normals: PNEUMONIA, NORMAL -> 1 of 2.
    assert by_view["AP"]["rate"] == pytest.approx(1 / 3) and by_view["PA"]["rate"] == 0.5
    assert (by_view["AP"]["NORMAL"], by_view["AP"]["PNEUMONIA"], by_view["AP"]["UNKNOWN"]) == (1, 1, 1)
    assert by_view["PA"]["n"] == 2
    assert rates_by_group(labels, verdicts, views, patients, label=1, n_resamples=10)["PA"]["rate"] == 1.0


# --- the product's PNEUMONIA map ---------------------------------------------------------------

def test_the_pointing_games_map_is_the_products_pneumonia_evidence_from_the_batched_path(predictor, film_paths):
    """Evaluation's batched, explained predictions equal the product's single-film ones; the
    pointing game's map peaks where the pneumonia evidence does, whatever the verdict; the map shown
    is that evidence on the model's fixed scale."""
    from pneumonia.evaluate import predict_records

    records = [Record(path, 0, str(path)) for path in film_paths]
    explained, probabilities, _, unreadable = predict_records(predictor, records, lambda m: None, explain=True)
    assert unreadable == 0 and [r for r, _ in explained] == records
    labels = set()
    for (record, prediction), p in zip(explained, probabilities):
        single = predictor.predict(record.path, explain=True)
        assert prediction.label == single.label and p == pytest.approx(single.pneumonia_probability, abs=1e-6)
        np.testing.assert_allclose(prediction.evidence, single.evidence, atol=1e-5)
        heatmap = prediction.class_heatmaps["PNEUMONIA"]
        labels.add(prediction.label)
        assert heatmap.dtype == np.float32 and 0.0 <= heatmap.min() and heatmap.max() <= 1.0
        evidence = prediction.evidence
        if evidence.max() > 0:
            assert np.argmax(heatmap) == np.argmax(evidence) and heatmap.max() == pytest.approx(1.0)
        np.testing.assert_allclose(heatmap, np.maximum(evidence, 0) / max(evidence.max(), 1e-30), atol=1e-6)
        # The map shown is positive exactly where this one is.
        np.testing.assert_array_equal(heatmap > 0, prediction.heatmap > 0)
    assert labels == {"NORMAL", "PNEUMONIA"}  # both branches exercised


# --- the command, on a small adult folder built here ---------------------------------------------

@pytest.fixture(scope="module")
def adult_folder(tmp_path_factory, films) -> Path:
    """An adult_nih-shaped folder: the 8 test films, each its own patient, boxes on the PNEUMONIA ones.

    Ten normal patients (the 4 NORMAL films, some twice under other patients) so that the fixed
    split holds out a fifth of them.
    """
    root = tmp_path_factory.mktemp("adult_nih")
    rows = []
    normals = sorted(films.glob("NORMAL/*.jpeg"))
    for i in range(10):
        name = f"NORMAL/n{i}.jpeg"
        (root / "NORMAL").mkdir(exist_ok=True)
        shutil.copy(normals[i % len(normals)], root / name)
        rows.append([name, "NORMAL", "NIH report: No Finding", f"{100 + i}", "40", "F", "AP" if i % 2 else "PA",
                     "No Finding", "-", "-"])
    for i, path in enumerate(sorted(films.glob("PNEUMONIA/*.jpeg"))):
        name = f"PNEUMONIA/b{i}.jpeg"
        (root / "PNEUMONIA").mkdir(exist_ok=True)
        shutil.copy(path, root / name)
        rows.append([name, "PNEUMONIA", "radiologist box", f"{200 + i}", "50", "M", "PA", "Pneumonia", "-",
                     f"{20 * i} {30 + i} 60 80"])
    with open(root / "MANIFEST.tsv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["file", "label", "label_source", "patient", "age", "sex", "view", "nih_findings",
                         "rsna_reread", "pneumonia_box_xywh"])
        writer.writerows(rows)
    return root


def test_evaluate_command_reports_adults_and_the_pointing_game(adult_folder, tiny_model_dir, tmp_path):
    from pneumonia.__main__ import main
    from pneumonia.data import list_adult_records, split_adult_records
    from pneumonia.inference import Predictor

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    out = tmp_path / "out"
    assert main(["evaluate", "--adult", str(adult_folder), "--model", str(model_dir), "--out", str(out),
                 "--bootstrap", "50", "--record"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert "metrics" not in result  # no children's folder given

    _, test = split_adult_records(list_adult_records(adult_folder))
    predictor = Predictor.load(model_dir)
    labels = np.array([r.label for r in test])
    said = np.array([predictor.predict(r.path).label for r in test])
    adult = result["adult_test"]
    assert adult["metrics"]["n"] == len(test) == 4 + 2  # the boxed films and 2 of 10 normal patients
    assert adult["metrics"]["specificity"] == pytest.approx(np.mean(said[labels == 0] == "NORMAL"))
    assert adult["metrics"]["sensitivity"] == pytest.approx(np.mean(said[labels == 1] == "PNEUMONIA"))
    assert adult["resampled"] == "patients"
    assert sum(g["n"] for g in adult["by_view"]["specificity"].values()) == 2

    game = result["pointing_game"]
    assert game["n"] == 4 and game["frame"] == [224, 224] and game["explained_class"] == "PNEUMONIA"
    assert len(game["heatmap_grid"]) == 1
    for film in game["films"]:
        x, y = film["peak"]
        near = any(math.hypot(max(bx - x, 0, x - bx - bw), max(by - y, 0, y - by - bh)) <= 15
                   for bx, by, bw, bh in film["boxes"])
        assert film["hit"] == near
    assert game["hits"] == sum(f["hit"] for f in game["films"])
    report = (out / "report.md").read_text()
    assert "## Adults: NIH test set" in report and "## Pointing game" in report and "## Children" not in report
    for name in ("adult_roc.png", "adult_confusion_matrix.png", "pointing_game.png"):
        assert (out / name).stat().st_size > 0

    recorded = json.loads((model_dir / "metadata.json").read_text())["metrics"]
    assert recorded["adult_test"]["specificity"] == pytest.approx(adult["metrics"]["specificity"], abs=1e-6)
    assert recorded["pointing_game"]["hits"] == game["hits"]
    assert "test" not in recorded


def test_evaluate_command_needs_a_folder(tiny_model_dir, tmp_path, capsys):
    from pneumonia.__main__ import main

    assert main(["evaluate", "--model", str(tiny_model_dir), "--out", str(tmp_path)]) == 1
    assert "--adult" in capsys.readouterr().err


# --- the real adult test set (skips without the data) --------------------------------------------

@pytest.fixture(scope="module")
def adult_data() -> Path:
    if not (ADULT_DATA / "MANIFEST.tsv").is_file():
        pytest.skip(f"adult NIH films not found at {ADULT_DATA}; CI provides them")
    return ADULT_DATA


def test_adult_figures_agree_with_the_batch_csv_scored_independently(adult_data, predictor, tmp_path):
    """The batch CLI's CSV, scored here with scikit-learn, gives the adult figures evaluate reports."""
    from sklearn.metrics import roc_auc_score

    from pneumonia.__main__ import main
    from pneumonia.evaluate import evaluate_adults

    manifest = list(csv.DictReader(open(adult_data / "MANIFEST.tsv"), delimiter="\t"))
    boxed = {r["file"] for r in manifest if r["pneumonia_box_xywh"] != "-"}
    adult, game = evaluate_adults(predictor, adult_data, tmp_path, n_resamples=20, log=lambda m: None)
    assert adult["metrics"]["n_pneumonia"] == len(boxed) == 21 and game["n"] == 21

    csv_path = tmp_path / "adult.csv"
    assert main(["predict", str(adult_data), "--csv", str(csv_path), "--quiet"]) == 0
    rows = {str(Path(r["path"]).relative_to(adult_data)): r for r in csv.DictReader(open(csv_path))}
    from pneumonia.data import list_adult_records, split_adult_records

    test_files = {str(r.path.relative_to(adult_data)) for r in split_adult_records(list_adult_records(adult_data))[1]}
    normals = [rows[f] for f in test_files if f.startswith("NORMAL/")]
    positives = [rows[f] for f in sorted(boxed)]
    assert len(normals) == adult["metrics"]["n_normal"]
    # UNKNOWN rows carry no probability (no diagnosis is made); evaluate's AUC ranks the network's
    # output on every readable film, so the two agree exactly where no test film is UNKNOWN, and on
    # the diagnosed films the CSV's probabilities are the predictor's.
    diagnosed = [(label, r) for label, group in ((0, normals), (1, positives)) for r in group if r["label"] != "UNKNOWN"]
    y = [label for label, _ in diagnosed]
    p = [float(r["pneumonia_probability"]) for _, r in diagnosed]
    assert p == pytest.approx([predictor.predict(r["path"]).pneumonia_probability for _, r in diagnosed], abs=1e-6)
    if len(diagnosed) == len(normals) + len(positives):
        assert adult["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert all(r["pneumonia_probability"] == "" for r in normals + positives if r["label"] == "UNKNOWN")
    assert adult["metrics"]["specificity"] == pytest.approx(np.mean([r["label"] == "NORMAL" for r in normals]))
    assert adult["metrics"]["sensitivity"] == pytest.approx(np.mean([r["label"] == "PNEUMONIA" for r in positives]))
    assert adult["metrics"]["unknown"] == [sum(r["label"] == "UNKNOWN" for r in normals),
                                           sum(r["label"] == "UNKNOWN" for r in positives)]


def test_a_film_with_several_boxes_is_hit_near_any_of_them():
    boxes = [[(0, 0, 10, 10), (50, 50, 10, 10)], [(0, 0, 10, 10), (50, 50, 10, 10)], (0, 0, 10, 10)]
    points = np.array([[55, 55], [30, 30], [12, 5]])
    assert pointing_hits(points, boxes, tolerance=3).tolist() == [True, False, True]


def test_box_cover_is_the_union_of_a_films_boxes_over_the_frame():
    from pneumonia.metrics import box_cover

    # Two 10 x 10 boxes overlapping in a 5 x 10 strip, on a 20 x 20 frame: (100 + 100 - 50) / 400.
    assert box_cover([(0, 0, 10, 10), (5, 0, 10, 10)], (20, 20)) == pytest.approx(150 / 400)
    assert box_cover((0, 0, 20, 20), (20, 20)) == 1.0


def test_pointing_game_scores_the_two_lower_lung_points_named_in_advance():
    frame = (100, 100)
    # Film a: box around (25, 60); film b: around (75, 60); film c: top left; film d: both lower zones.
    boxes = [[(20, 55, 10, 10)], [(70, 55, 10, 10)], [(0, 0, 5, 5)], [(20, 55, 10, 10), (70, 55, 10, 10)]]
    peaks = np.array([[25, 60], [10, 10], [2, 2], [75, 60]])
    game = play_pointing_game(peaks, boxes, frame, ["a", "b", "c", "d"], tolerance=0, step=10, n_resamples=50)
    left, right = game["lower_lung_points"]["image_left_lower_zone"], game["lower_lung_points"]["image_right_lower_zone"]
    assert (left["x"], left["y"], left["hits"]) == (25.0, 60.0, 2)  # films a and d
    assert (right["x"], right["y"], right["hits"]) == (75.0, 60.0, 2)  # films b and d
    assert game["hits"] == 3 and game["margin_lower_lung"] == pytest.approx(0.75 - 0.5)
    expected_cover = np.mean([100 / 1e4, 100 / 1e4, 25 / 1e4, 200 / 1e4])
    assert game["box_cover"] == pytest.approx(expected_cover)


def test_siim_figures_agree_with_the_batch_csv_scored_independently(shared_data, predictor, tmp_path):
    """The batch CLI's CSV on the SIIM test split's files, scored here with scikit-learn, gives the
    figures evaluate reports (verdicts, and AUC where every film is diagnosed)."""
    from sklearn.metrics import roc_auc_score

    from pneumonia.__main__ import main
    from pneumonia.data import list_siim_records, split_siim_records
    from pneumonia.evaluate import evaluate_siim

    siim = shared_data.parent / "adult_siim"
    if not (siim / "MANIFEST.tsv").is_file():
        pytest.skip(f"SIIM films not found at {siim}; CI provides them")
    test = split_siim_records(list_siim_records(siim))[1]
    result, _ = evaluate_siim(predictor, siim, None, n_resamples=20, log=lambda m: None, pointing=False)
    csv_path = tmp_path / "siim.csv"
    assert main(["predict", *[str(r.path) for r in test], "--csv", str(csv_path), "--quiet"]) == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(open(csv_path))}
    truth = {r.path.name: r.label for r in test}
    assert len(rows) == len(truth) == result["metrics"]["n"]
    normals = [r for name, r in rows.items() if truth[name] == 0]
    positives = [r for name, r in rows.items() if truth[name] == 1]
    assert result["metrics"]["specificity"] == pytest.approx(np.mean([r["label"] == "NORMAL" for r in normals]))
    assert result["metrics"]["sensitivity"] == pytest.approx(np.mean([r["label"] == "PNEUMONIA" for r in positives]))
    assert result["metrics"]["unknown"] == [sum(r["label"] == "UNKNOWN" for r in normals),
                                            sum(r["label"] == "UNKNOWN" for r in positives)]
    diagnosed = [(truth[name], float(r["pneumonia_probability"])) for name, r in rows.items() if r["label"] != "UNKNOWN"]
    if len(diagnosed) == len(rows):
        assert result["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(*zip(*diagnosed)), abs=1e-9)
