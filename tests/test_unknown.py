"""The UNKNOWN outcome: images that are not frontal chest X-rays get no diagnosis."""

from pathlib import Path

import numpy as np
import pytest

from pneumonia.negatives import make_negative_images
from pneumonia.notes import UNKNOWN_REASONS

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
    cause = "colour" if result.colourfulness > gate.max_colourfulness else "unlike_training"
    assert result.reason == UNKNOWN_REASONS[cause]
    verdict = result.to_dict()
    assert verdict["pneumonia_probability"] is None and verdict["normal_probability"] is None
    assert verdict["threshold"] is None and verdict["population"] is None  # no operating point applied
    assert verdict["reason"] == result.reason and verdict["is_chest_xray"] is False


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
        assert result.reason is None and result.to_dict()["pneumonia_probability"] == pytest.approx(
            result.pneumonia_probability, abs=1e-6)


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


def test_batch_cli_rows_are_the_verdicts_of_to_dict(predictor, film_paths, tmp_path):
    """A flower-like colour photo, a grayscale non-film, a film and a lateral phantom: each CSV row
    holds what Prediction.to_dict() gives for the same file, UNKNOWN rows without probabilities."""
    import csv

    from pneumonia.__main__ import main
    from pneumonia.worklist import CSV_COLUMNS
    from phantoms import lateral_phantom

    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(NEGATIVES["skimage:astronaut"]).save(folder / "astronaut.png")
    Image.fromarray(NEGATIVES["skimage:coins"]).save(folder / "coins.png")
    Image.fromarray((lateral_phantom(512) * 255).astype(np.uint8)).save(folder / "lateral.png")
    (folder / "film.jpeg").write_bytes(film_paths[-1].read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out.csv"
    assert main(["predict", str(folder), "--csv", str(out), "--quiet"]) == 0
    with out.open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == CSV_COLUMNS
        rows = {Path(row["path"]).name: row for row in reader}
    assert set(rows) == {"astronaut.png", "coins.png", "lateral.png", "film.jpeg", "broken.png"}
    broken = rows["broken.png"]
    assert broken["error"] and all(broken[field] == "" for field in CSV_COLUMNS if field not in ("path", "error"))
    for name in ("astronaut.png", "coins.png", "lateral.png", "film.jpeg"):
        verdict = predictor.predict(folder / name).to_dict()
        row = rows[name]
        assert row["error"] == ""
        for field, value in verdict.items():
            if isinstance(value, float):
                assert float(row[field]) == pytest.approx(value, abs=1e-6), (name, field)
            else:
                assert row[field] == ("" if value is None else str(value)), (name, field)
    assert rows["astronaut.png"]["label"] == "UNKNOWN" and rows["astronaut.png"]["pneumonia_probability"] == ""
    assert rows["astronaut.png"]["reason"] == UNKNOWN_REASONS["colour"]
    assert rows["film.jpeg"]["label"] in predictor.class_names and float(rows["film.jpeg"]["threshold"]) > 0


def test_batch_cli_fails_when_no_file_can_be_read(tmp_path, capsys):
    from pneumonia.__main__ import main

    (tmp_path / "a.jpeg").write_bytes(b"not a jpeg")
    (tmp_path / "b.png").write_bytes(b"")
    out = tmp_path / "out.csv"
    assert main(["predict", str(tmp_path / "a.jpeg"), str(tmp_path / "b.png"), "--csv", str(out), "--quiet"]) == 1
    assert "none of the 2 files could be read" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 3  # the header and a row with its error for each


def test_gate_distance_matches_an_independent_mahalanobis(predictor, film_paths):
    """Recompute the distance with numpy's solver from the gate's mean and precision."""
    from pneumonia.ood import describe_inputs

    _, batch = predictor.preprocess(film_paths[0])
    logits, features = predictor.run_network(batch)
    d = describe_inputs(batch, features)[0] - predictor.gate.mean
    covariance = np.linalg.inv(predictor.gate.precision)
    expected = float(d @ np.linalg.solve(covariance, d))
    assert predictor.predict(film_paths[0]).chest_xray_distance == pytest.approx(expected, rel=1e-3)
