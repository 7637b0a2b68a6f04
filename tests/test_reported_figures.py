"""The figures README and the model metadata quote are the ones the evaluate command wrote."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROWS = {"accuracy": "accuracy", "sensitivity": "sensitivity", "specificity": "specificity",
        "ROC AUC": "roc_auc", "calibration error (ECE, 10 bins)": "ece"}


def readme_results(marker: str = "results") -> dict[str, tuple[float, float, float]]:
    text = (ROOT / "README.md").read_text()
    block = text.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    out = {}
    for name, value, low, high in re.findall(r"\| ([^|]+?) \| ([\d.]+) \| ([\d.]+) - ([\d.]+) \|", block):
        out[ROWS[name]] = (float(value), float(low), float(high))
    return out


@pytest.mark.parametrize("marker, part", [("results", None), ("adult-results", "adult_test")])
def test_readme_results_match_the_committed_report(marker, part):
    report = json.loads((ROOT / "reports" / "metrics.json").read_text())
    report = report[part] if part else report
    quoted = readme_results(marker)
    assert set(quoted) == set(ROWS.values())
    for key, (value, low, high) in quoted.items():
        assert value == pytest.approx(report["metrics"][key], abs=6e-4), key
        assert (low, high) == pytest.approx(tuple(report["ci95"][key]), abs=6e-4), key


def test_metadata_records_the_same_test_figures(predictor):
    report = json.loads((ROOT / "reports" / "metrics.json").read_text())
    test = predictor.metadata.metrics["test"]
    for key in ROWS.values():
        assert test[key] == pytest.approx(report["metrics"][key], abs=1e-4)
    assert test["threshold"] == pytest.approx(predictor.metadata.operating_point("child")[1])


@pytest.mark.parametrize("part", ["adult_test", "pointing_game"])
def test_metadata_records_the_same_adult_figures(predictor, part):
    report = json.loads((ROOT / "reports" / "metrics.json").read_text())
    if part not in report:
        pytest.skip(f"reports/metrics.json has no {part} yet: regenerate it with `python -m pneumonia evaluate "
                    "--adult ../shared/data/adult_nih --record`")
    recorded = predictor.metadata.metrics[part]
    figures = report[part]["metrics"] if part == "adult_test" else report[part]
    keys = ("roc_auc", "sensitivity", "specificity", "ece") if part == "adult_test" else ("hit_rate", "margin")
    for key in keys:
        assert recorded[key] == pytest.approx(figures[key], abs=1e-4), key
    if part == "pointing_game":
        assert recorded["best_fixed_point"]["hit_rate"] == pytest.approx(figures["best_fixed_point"]["hit_rate"])
