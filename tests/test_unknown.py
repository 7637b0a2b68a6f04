"""The UNKNOWN outcome: images that are not frontal chest X-rays get no diagnosis."""

import numpy as np
import pytest

from pneumonia.negatives import make_negative_images

NEGATIVES = dict(make_negative_images())


# One of each kind; the page of text was in this list until model r11, whose gate lets it through
# (README lists the 12 of 146 that get a label). The rate over all of them is checked below.
@pytest.mark.parametrize("name", ["skimage:astronaut", "skimage:chelsea", "skimage:shepp_logan_phantom", "skimage:coins",
                                  "skimage:immunohistochemistry", "synthetic:uniform_noise",
                                  "synthetic:document", "synthetic:bar_chart_screenshot", "sklearn:sample_0"])
def test_non_chest_images_come_back_unknown(predictor, name):
    result = predictor.predict(NEGATIVES[name], explain=True)
    assert result.label == "UNKNOWN"
    gate = predictor.gate
    assert not result.is_chest_xray
    assert result.chest_xray_distance > gate.threshold or result.colourfulness > gate.max_colourfulness
    assert result.heatmap is None and result.overlay is None  # nothing to explain


def test_gate_catches_most_non_chest_images(predictor):
    """Nearly 90 % of the 146 non-chest images (with rotations and crops) come back UNKNOWN with
    the shipped gate; a broken gate would pass most of them."""
    from pneumonia.errors import InvalidImageError

    def outcome(image):
        try:
            return predictor.predict(image).label
        except InvalidImageError:  # refused outright (e.g. a 542 x 130 logo): no diagnosis either
            return "REFUSED"

    results = [outcome(image) for _, image in make_negative_images()]
    assert len(results) > 100 and results.count("REFUSED") < 10
    assert np.mean([label == "UNKNOWN" for label in results]) >= 0.85


def test_chest_films_pass_the_gate(predictor, film_paths, example_paths):
    for path in list(film_paths) + list(example_paths):
        result = predictor.predict(path)
        assert result.label in ("NORMAL", "PNEUMONIA"), path.name
        assert result.chest_xray_distance <= predictor.gate.threshold and result.colourfulness == 0.0


def test_a_tinted_film_passes_but_a_colour_photo_does_not(predictor, film_paths):
    """A faint colour cast (a phone photo of a film on a monitor) is still a film; colour is not."""
    from PIL import Image

    gray = np.asarray(Image.open(film_paths[-1]).convert("L"), dtype=np.float64)
    tint = np.stack([gray * 0.97, gray, np.minimum(gray * 1.03 + 4, 255)], axis=2).astype(np.uint8)
    assert predictor.predict(tint).label != "UNKNOWN"
    assert predictor.predict(NEGATIVES["skimage:chelsea"]).colourfulness > predictor.gate.max_colourfulness


def test_gate_is_described_in_metadata(predictor):
    ood = predictor.metadata.ood
    assert ood["file"] == "ood.npz" and ood["threshold"] == pytest.approx(predictor.gate.threshold, rel=1e-3)
    assert 0.98 <= ood["val_pass_rate"] <= 1.0


def test_batch_cli_labels_unknown(predictor, tmp_path):
    from PIL import Image

    from pneumonia.__main__ import main

    Image.fromarray(NEGATIVES["skimage:astronaut"]).save(tmp_path / "astronaut.png")
    out = tmp_path / "out.csv"
    assert main(["predict", str(tmp_path / "astronaut.png"), "--csv", str(out), "--quiet"]) == 0
    import csv

    (row,) = list(csv.DictReader(out.open()))
    assert row["label"] == "UNKNOWN"


def test_gate_distance_matches_an_independent_mahalanobis(predictor, film_paths):
    """Recompute the distance with numpy's solver from the gate's mean and precision."""
    from pneumonia.ood import describe_inputs

    _, batch = predictor.preprocess(film_paths[0])
    logits, features = predictor._forward(batch)
    d = describe_inputs(batch, features.numpy())[0] - predictor.gate.mean
    covariance = np.linalg.inv(predictor.gate.precision)
    expected = float(d @ np.linalg.solve(covariance, d))
    assert predictor.predict(film_paths[0]).chest_xray_distance == pytest.approx(expected, rel=1e-3)
