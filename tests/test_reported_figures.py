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


@pytest.mark.parametrize("marker, part", [("results", None), ("adult-results", "adult_test"),
                                          ("siim-results", "siim_test")])
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


@pytest.mark.parametrize("part", ["adult_test", "pointing_game", "siim_test", "pointing_game_siim"])
def test_metadata_records_the_same_adult_figures(predictor, part):
    report = json.loads((ROOT / "reports" / "metrics.json").read_text())
    if part not in report:
        pytest.skip(f"reports/metrics.json has no {part} yet: regenerate it with `python -m pneumonia evaluate "
                    "--adult ../shared/data/adult_nih --record`")
    recorded = predictor.metadata.metrics[part]
    tested = part in ("adult_test", "siim_test")
    figures = report[part]["metrics"] if tested else report[part]
    keys = ("roc_auc", "sensitivity", "specificity", "ece") if tested else ("hit_rate", "margin", "margin_lower_lung")
    for key in keys:
        assert recorded[key] == pytest.approx(figures[key], abs=1e-4), key
    if not tested:
        assert recorded["best_fixed_point"]["hit_rate"] == pytest.approx(figures["best_fixed_point"]["hit_rate"])


def test_metadata_records_the_unseen_hospital_figures_the_caution_quotes(predictor):
    """metrics.unseen_hospital is, per figure, the lower of the two leave-one-source-out parts of the report."""
    report = json.loads((ROOT / "reports" / "metrics.json").read_text())
    parts = {k: v for k, v in report["leave_one_source_out"].items() if k != "unseen_hospital"}
    assert parts and set(parts) <= {"siim", "nih"}
    recorded = predictor.metadata.metrics["unseen_hospital"]
    for key in ("sensitivity", "specificity", "roc_auc"):
        assert recorded[key] == pytest.approx(min(p["metrics"][key] for p in parts.values()), abs=1e-6)
    caution = predictor.predict(ROOT / "examples" / "PNEUMONIA" / "adult-nih-00008291_011.jpeg").caution
    found, cleared = round(recorded["sensitivity"] * 10), round(recorded["specificity"] * 10)
    assert f"found about {found} in 10 adult pneumonias and cleared about {cleared} in 10 normal films" in caution
