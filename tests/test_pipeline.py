"""Evaluation on a tiny folder, the batch CLI, and library/CLI agreement (training: test_train.py)."""

import csv
import json
import shutil

import numpy as np
import pytest

from pneumonia.__main__ import main as cli_main


def test_evaluate_writes_metrics_report_and_plots(films, tmp_path, predictor):
    code = cli_main(["evaluate", "--data", str(films), "--out", str(tmp_path), "--bootstrap", "50"])
    assert code == 0
    result = json.loads((tmp_path / "metrics.json").read_text())
    m = result["metrics"]
    assert m["n"] == 8 and sum(map(sum, m["confusion_matrix"])) == 8
    # Recompute accuracy independently from the library's own answers.
    labels = [0] * 4 + [1] * 4
    preds = [predictor.predict(p).label == "PNEUMONIA" for p in sorted(films.glob("*/*.jpeg"))]
    assert m["accuracy"] == pytest.approx(np.mean(np.array(preds) == np.array(labels)))
    for name in ("report.md", "confusion_matrix.png", "roc.png", "precision_recall.png", "reliability.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_batch_cli_reports_broken_files_and_goes_on(films, tmp_path, predictor):
    folder = tmp_path / "in"
    shutil.copytree(films, folder)
    (folder / "broken.jpeg").write_bytes(b"this is not a jpeg")
    (folder / "nested").mkdir()
    shutil.copy(next(films.glob("PNEUMONIA/*.jpeg")), folder / "nested" / "copy.jpeg")
    out = tmp_path / "out.csv"
    assert cli_main(["predict", str(folder), "--csv", str(out), "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 10
    assert {"path", "label", "pneumonia_probability", "error"} <= set(rows[0])
    broken = [r for r in rows if r["path"].endswith("broken.jpeg")][0]
    assert broken["error"] and broken["label"] == "" and broken["pneumonia_probability"] == ""
    for row in rows:
        if not row["error"]:
            expected = predictor.predict(row["path"])
            assert row["label"] == expected.label
            assert float(row["pneumonia_probability"]) == pytest.approx(expected.pneumonia_probability, abs=1e-4)


def test_prediction_fields(predictor, example_paths):
    result = predictor.predict(example_paths[0], explain=True, max_overlay_side=512)
    assert result.label in ("NORMAL", "PNEUMONIA")
    assert set(result.probabilities) == {"NORMAL", "PNEUMONIA"}
    assert sum(result.probabilities.values()) == pytest.approx(1.0)
    assert max(result.overlay.size) == 512


@pytest.mark.parametrize("kind", ["path", "bytes", "pil", "array"])
def test_predict_accepts_every_input_kind(predictor, film_paths, kind):
    from PIL import Image

    path = film_paths[-1]
    source = {"path": lambda: path, "bytes": path.read_bytes, "pil": lambda: Image.open(path),
              "array": lambda: np.asarray(Image.open(path))}[kind]()
    assert predictor.predict(source).pneumonia_probability == pytest.approx(
        predictor.predict(path).pneumonia_probability, abs=1e-6)
