"""Which population's operating point reads a film: from the DICOM age, else from the image; the
probe, the per-population thresholds, and the caution shown where the model is weaker."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from pneumonia.errors import ModelLoadError
from pneumonia.inference import Predictor
from pneumonia.model import METADATA_FILENAME, load_model
from pneumonia.notes import describe_caution
from pneumonia.population import (FROM_AGE, FROM_IMAGE, PopulationProbe, choose_population, fit_population_probe,
                                  population_from_age_group)

from test_formats import make_dicom


@pytest.mark.parametrize("band, population", [
    ("under 1 year", "child"), ("1-5 years", "child"), ("6-17 years", "child"),
    ("18-64 years", "adult"), ("65 years and over", "adult"), (None, None), ("not a band", None),
])
def test_age_band_gives_the_population(band, population):
    assert population_from_age_group(band) == population


@pytest.mark.parametrize("band, p_adult, expected", [
    ("1-5 years", 0.99, ("child", FROM_AGE)),  # the DICOM age wins over the image
    ("18-64 years", 0.01, ("adult", FROM_AGE)),
    (None, 0.51, ("adult", FROM_IMAGE)),
    (None, 0.49, ("child", FROM_IMAGE)),
    (None, None, (None, None)),
])
def test_choose_population(band, p_adult, expected):
    assert choose_population(band, p_adult) == expected


def test_probe_probability_is_the_logistic_of_its_standardised_features(tmp_path):
    rng = np.random.default_rng(0)
    probe = PopulationProbe(rng.normal(size=5), rng.uniform(0.5, 2, 5), rng.normal(size=5), 0.3)
    features = rng.normal(size=(7, 5))
    z = np.array([sum((f[i] - probe.mean[i]) / probe.scale[i] * probe.coef[i] for i in range(5)) + 0.3
                  for f in features])
    assert np.allclose(probe.adult_probability(features), 1 / (1 + np.exp(-z)))
    probe.save(tmp_path)
    again = PopulationProbe.load(tmp_path)
    assert np.allclose(again.adult_probability(features), probe.adult_probability(features))


def test_fitted_probe_separates_two_sources_and_is_recorded(tiny_model_dir, tmp_path):
    shutil.copytree(tiny_model_dir, tmp_path, dirs_exist_ok=True)
    rng = np.random.default_rng(1)
    make = lambda n, shift: rng.normal(shift, 1.0, (n, 8)).astype(np.float32)  # noqa: E731
    train = np.concatenate([make(60, 0.0), make(20, 3.0)])
    val = np.concatenate([make(30, 0.0), make(10, 3.0)])
    is_adult = lambda n0, n1: np.array([False] * n0 + [True] * n1)  # noqa: E731
    record = fit_population_probe(train, is_adult(60, 20), val, is_adult(30, 10), tmp_path)
    assert record["val_accuracy_child"] >= 0.9 and record["val_accuracy_adult"] >= 0.9
    _, metadata = load_model(tmp_path)
    assert metadata.populations["probe"] == record


@pytest.fixture
def two_point_model(tiny_model_dir, tmp_path):
    """The tiny model with a child threshold of 0.01 and an adult threshold of 0.99 (temperature 1),
    so the population alone decides the label of a film the untrained network scores near 0.5."""
    shutil.copytree(tiny_model_dir, tmp_path, dirs_exist_ok=True)
    data = json.loads((tmp_path / METADATA_FILENAME).read_text())
    data["populations"] = {"child": {"temperature": 1.0, "threshold": 0.01},
                           "adult": {"temperature": 1.0, "threshold": 0.99}}
    data["metrics"] = {"test": {"n": 618, "roc_auc": 0.97, "sensitivity": 0.98, "specificity": 0.8},
                       "adult_test": {"n": 97, "roc_auc": 0.85, "sensitivity": 0.6, "specificity": 0.9,
                                      "ci95": {"sensitivity": [0.4, 0.8], "specificity": [0.8, 0.95]},
                                      "by_view": {"sensitivity": {"AP": {"rate": 0.3, "n": 10},
                                                                  "PA": {"rate": 0.8, "n": 10}}}}}
    (tmp_path / METADATA_FILENAME).write_text(json.dumps(data))
    return tmp_path


@pytest.mark.parametrize("age, population, label", [("004Y", "child", "PNEUMONIA"), ("045Y", "adult", "NORMAL")])
def test_the_dicom_age_picks_the_operating_point(two_point_model, film_paths, age, population, label):
    predictor = Predictor.load(two_point_model)
    film = np.asarray(Image.open(film_paths[0]).convert("L"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        upload = make_dicom(film, tags={"PatientAge": age})
    result = predictor.predict(upload)
    assert 0.01 < result.pneumonia_probability < 0.99
    assert (result.population, result.population_source, result.label) == (population, FROM_AGE, label)
    assert result.threshold == {"child": 0.01, "adult": 0.99}[population]
    verdict = result.to_dict()
    assert verdict["population"] == population and verdict["threshold"] == result.threshold
    # The adult figures recorded are below the children's AUC and sensitivity: adults get the caution.
    assert (verdict["caution"] is not None) == (population == "adult")
    if population == "adult":
        adult = json.loads((two_point_model / METADATA_FILENAME).read_text())["metrics"]["adult_test"]
        misses, flags = round((1 - adult["sensitivity"]) * 10), round((1 - adult["specificity"]) * 10)
        assert verdict["caution"].startswith(f"On adults' films it misses about {misses} in 10 pneumonias and flags "
                                             f"about {flags} in 10 normal films (")
        assert f"ROC AUC {adult['roc_auc']:.2f}" in verdict["caution"]
        assert "On AP (often portable) films" in verdict["caution"]  # a JPEG-like film of unknown view: the weak view is named


@pytest.mark.parametrize("view, named", [("AP", True), ("PA", False)])
def test_the_dicom_view_decides_whether_the_weak_view_is_named(two_point_model, film_paths, view, named):
    film = np.asarray(Image.open(film_paths[0]).convert("L"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        upload = make_dicom(film, tags={"PatientAge": "060Y", "ViewPosition": view})
    caution = Predictor.load(two_point_model).predict(upload).caution
    assert caution.startswith("On adults' films") and ("only 3 of 10 pneumonias" in caution) == named


def test_a_model_with_one_operating_point_names_no_population(tiny_model_dir, film_paths):
    result = Predictor.load(tiny_model_dir).predict(film_paths[0])
    assert result.population is None and result.population_source is None and result.caution is None


def test_a_broken_per_population_threshold_is_refused(two_point_model):
    data = json.loads((two_point_model / METADATA_FILENAME).read_text())
    data["populations"]["adult"]["threshold"] = 1.5
    (two_point_model / METADATA_FILENAME).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="adult"):
        load_model(two_point_model)


def test_a_probe_named_in_metadata_but_missing_is_refused(two_point_model):
    data = json.loads((two_point_model / METADATA_FILENAME).read_text())
    data["populations"]["probe"] = {"probe_file": "population.npz"}
    (two_point_model / METADATA_FILENAME).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="population probe"):
        Predictor.load(two_point_model)


@pytest.mark.parametrize("population, metrics, expected", [
    ("child", {"test": {"roc_auc": 0.9}, "adult_test": {"roc_auc": 0.5}}, None),
    ("adult", {"test": {"roc_auc": 0.9, "specificity": 0.8}, "adult_test": {"roc_auc": 0.95, "specificity": 0.9}},
     None),
    ("adult", {"test": {"roc_auc": 0.9, "specificity": 0.8}, "adult_test": {"roc_auc": 0.95, "specificity": 0.7}},
     "specificity 0.70"),
    ("adult", {"test": {"roc_auc": 0.9}}, "never tested on adults"),
    (None, {}, None),
])
def test_caution_only_where_the_measured_figures_are_weaker(population, metrics, expected):
    """Without per-view figures (models evaluated before they were recorded) no view is named."""
    caution = describe_caution(population, metrics)
    assert (caution is None) == (expected is None)
    if expected:
        assert expected in caution


@pytest.mark.parametrize("sensitivity, specificity, words", [
    (0.62, 0.80, "misses about 4 in 10 pneumonias and flags about 2 in 10 normal films"),
    (0.91, 0.97, "misses about 1 in 10 pneumonias and flags fewer than 1 in 10 normal films"),
    (0.35, 0.55, "misses about 6 in 10 pneumonias and flags about 4 in 10 normal films"),
])
def test_the_caution_leads_with_how_many_in_ten_it_misses_and_flags(sensitivity, specificity, words):
    metrics = {"test": {"roc_auc": 0.98, "sensitivity": 0.99, "specificity": 0.99},
               "adult_test": {"n": 40, "roc_auc": 0.8, "sensitivity": sensitivity, "specificity": specificity}}
    caution = describe_caution("adult", metrics)
    assert caution.startswith(f"On adults' films it {words} (")
    assert f"(sensitivity {sensitivity:.2f}, specificity {specificity:.2f}, ROC AUC 0.80; 40 films)." in caution


@pytest.mark.parametrize("sensitivity, specificity, words", [
    (0.55, 0.83, "found about 6 in 10 adult pneumonias and cleared about 8 in 10 normal films"),
    (0.71, 0.64, "found about 7 in 10 adult pneumonias and cleared about 6 in 10 normal films"),
])
def test_figures_from_an_unseen_hospital_lead_the_caution_when_recorded(sensitivity, specificity, words):
    unseen = {"sensitivity": sensitivity, "specificity": specificity, "roc_auc": 0.77, "n": 300,
              "description": "trained without hospital B, tested on it"}
    metrics = {"test": {"roc_auc": 0.98, "sensitivity": 0.99}, "adult_test": {"roc_auc": 0.86, "sensitivity": 0.62},
               "unseen_hospital": unseen}
    caution = describe_caution("adult", metrics)
    assert caution.startswith(f"At hospitals it never saw it {words} (")
    assert f"(sensitivity {sensitivity:.2f}, specificity {specificity:.2f}, ROC AUC 0.77)." in caution
    assert "0.62" not in caution
    assert describe_caution("child", metrics) is None


ADULT = {"n": 97, "sensitivity": 0.62, "specificity": 0.80,
         "ci95": {"sensitivity": [0.41, 0.81], "specificity": [0.71, 0.88]},
         "by_view": {"sensitivity": {"AP": {"rate": 0.4, "n": 10}, "PA": {"rate": 0.818, "n": 11}},
                     "specificity": {"AP": {"rate": 0.807, "n": 57}, "PA": {"rate": 0.5, "n": 20}}}}


@pytest.mark.parametrize("view, expected", [
    ("AP", ["On AP (often portable) films it found only 4 of 10 pneumonias."]),
    ("PA", ["On normal PA films it cleared only 10 of 20."]),
    (None, ["found only 4 of 10", "cleared only 10 of 20"]),  # view unknown: every weak view
    ("LL", []),
])
def test_a_view_is_named_only_below_the_adults_own_lower_bound(view, expected):
    from pneumonia.notes import describe_view_caution

    caution = describe_view_caution(ADULT, view)
    assert (caution is None) == (not expected)
    for phrase in expected:
        assert phrase in caution
    # 0.41 is the bound: a view at 0.42 is inside the adults' own interval and is not named.
    near = {**ADULT, "by_view": {"sensitivity": {"AP": {"rate": 0.42, "n": 50}}}}
    assert describe_view_caution(near, view) is None
