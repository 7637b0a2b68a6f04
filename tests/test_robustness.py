"""Stress validation (pneumonia.robustness): the image changes and the figures they are scored with."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pneumonia.robustness import apply_lut, downsample, film_changes, reframe, score_films, stress_validation


@pytest.fixture(scope="module")
def film() -> np.ndarray:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (224, 224)).astype(np.uint8), (0, 0), 3)
    return cv2.normalize(base, None, 10, 245, cv2.NORM_MINMAX)


@pytest.mark.parametrize("name", sorted(film_changes()))
def test_every_change_keeps_shape_and_type_and_changes_the_film(film, name):
    changed = film_changes()[name](film)
    assert changed.shape == film.shape and changed.dtype == np.uint8
    assert not np.array_equal(changed, film)


def test_gamma_lut_matches_the_formula(film):
    expected = np.clip(np.round((film / 255.0) ** 0.6 * 255.0), 0, 255)
    assert np.array_equal(apply_lut(film, lambda v: v ** 0.6), expected.astype(np.uint8))


def test_reframe_crops_the_centre_or_pads_with_black(film):
    tight = reframe(film, 0.85)
    keep = int(round(224 * 0.85))
    start = (224 - keep) // 2
    assert np.array_equal(tight, cv2.resize(film[start:start + keep, start:start + keep], (224, 224)))
    loose = reframe(film, 1 / 0.85)
    assert loose[:10].max() == 0 and loose[:, :10].max() == 0 and loose[112, 112] > 0


def test_downsample_loses_detail_but_keeps_the_mean(film):
    blurred = downsample(film, 40)
    assert abs(float(blurred.mean()) - float(film.mean())) < 2.0
    assert np.abs(cv2.Laplacian(blurred, cv2.CV_32F)).mean() < np.abs(cv2.Laplacian(film, cv2.CV_32F)).mean()


def test_score_films_agrees_with_predict(predictor, film_paths):
    from pneumonia.data import load_images

    labels = np.array([int(p.parent.name == "PNEUMONIA") for p in film_paths])
    predicted = np.array([predictor.predict(p).pneumonia_probability >= predictor.metadata.threshold
                          for p in film_paths])
    figures = score_films(predictor, load_images(film_paths, 224), labels)
    assert figures["sensitivity"] == pytest.approx(predicted[labels == 1].mean())
    assert figures["specificity"] == pytest.approx((~predicted[labels == 0]).mean())
    assert figures["accuracy"] == pytest.approx((predicted == labels).mean())


def test_stress_validation_averages_over_the_changes(predictor, film_paths):
    from pneumonia.data import load_images

    labels = np.array([int(p.parent.name == "PNEUMONIA") for p in film_paths])
    films = load_images(film_paths, 224)
    changes = {"invert": lambda f: 255 - f, "same": lambda f: f}
    result = stress_validation(predictor, films, labels, changes)
    assert set(result["per_change"]) == {"invert", "same"}
    assert result["per_change"]["same"] == result["unchanged"]
    for key in ("auc", "specificity"):
        expected = (result["per_change"]["invert"][key] + result["per_change"]["same"][key]) / 2
        assert result["mean"][key] == pytest.approx(expected)


def test_cli_rebuilds_the_split_from_the_metadata(tmp_path, films, capsys):
    from pneumonia.__main__ import main
    from pneumonia.model import ModelMetadata, build_model, save_model

    model_dir = tmp_path / "model"
    metadata = ModelMetadata(version="test", input_size=64, training={"config": {"val_fraction": 0.5, "seed": 1}})
    save_model(build_model(64, head_width=8, seed=1), metadata, model_dir)
    out = tmp_path / "stress.json"
    assert main(["robustness", "--data", str(films), "--model", str(model_dir), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "validation films" in printed and "pad85" in printed and "mean" in printed
    result = json.loads(out.read_text())
    assert set(result["per_change"]) == set(film_changes())
