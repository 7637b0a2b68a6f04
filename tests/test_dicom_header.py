"""A DICOM upload says what the film is: modality, body part, view and the patient's age band.

Each case is a small DICOM written here (``make_dicom`` of ``test_formats.py``) around a real
frontal film that the model otherwise labels: only the header differs, so an UNKNOWN comes from
the header. The expected age bands are written out by hand from the documented bands
(``pneumonia.dicom.AGE_GROUPS``: under 1, 1-5, 6-17, 18-64, 65 and over).
"""

from __future__ import annotations

import csv
import logging
import warnings

import numpy as np
import pytest
from PIL import Image

from pneumonia.dicom import DicomHeader, age_group, decode_dicom, find_header_refusal
from pneumonia.notes import UNKNOWN_REASONS
from pneumonia.population import FROM_AGE
from pneumonia.preprocessing import read_film

from test_formats import make_dicom


@pytest.fixture(scope="module")
def film(film_paths) -> np.ndarray:
    return np.asarray(Image.open(film_paths[-1]).convert("L"))


def write(film: np.ndarray, **tags) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns (quoting it) about a malformed age
        return make_dicom(film, tags=tags)


@pytest.mark.parametrize("tags, cause", [
    ({"ViewPosition": "LL"}, "side_view"),
    ({"ViewPosition": "RL"}, "side_view"),
    ({"ViewPosition": "LATERAL"}, "side_view"),
    ({"ViewPosition": "lateral "}, "side_view"),
    ({"ViewPosition": "LAO"}, "side_view"),
    ({"BodyPartExamined": "KNEE"}, "body_part"),
    ({"BodyPartExamined": "HAND"}, "body_part"),
    ({"BodyPartExamined": "ABDOMEN"}, "body_part"),
    ({"BodyPartExamined": "HEAD"}, "body_part"),
    ({"Modality": "CT"}, "modality"),
    ({"Modality": "MR"}, "modality"),
    ({"Modality": "US"}, "modality"),
    ({"Modality": "CT", "BodyPartExamined": "CHEST", "ViewPosition": "PA"}, "modality"),
])
def test_header_naming_another_film_gives_unknown_with_its_reason(predictor, film, tags, cause):
    result = predictor.predict(write(film, **tags), explain=True)
    assert result.label == "UNKNOWN" and not result.is_chest_xray
    assert result.reason == UNKNOWN_REASONS[cause]
    assert result.heatmap is None and result.overlay is None
    verdict = result.to_dict()
    assert verdict["pneumonia_probability"] is None and verdict["reason"] == UNKNOWN_REASONS[cause]


@pytest.mark.parametrize("tags", [
    {"ViewPosition": "PA", "BodyPartExamined": "CHEST", "Modality": "DX"},
    {"ViewPosition": "AP", "BodyPartExamined": "THORAX", "Modality": "CR"},
    {"ViewPosition": "", "BodyPartExamined": "", "Modality": ""},
    {},  # only what make_dicom writes: Modality DX, no body part, view or age
])
def test_a_frontal_chest_header_keeps_the_label_of_the_film(predictor, film, film_paths, tags):
    expected = predictor.predict(film_paths[-1])
    result = predictor.predict(write(film, **tags))
    assert result.label == expected.label and result.reason is None and result.is_chest_xray
    assert result.pneumonia_probability == pytest.approx(expected.pneumonia_probability, abs=0.02)


@pytest.mark.parametrize("age, group", [
    ("045Y", "18-64 years"), ("004Y", "1-5 years"), ("001Y", "1-5 years"), ("017Y", "6-17 years"),
    ("018Y", "18-64 years"), ("064Y", "18-64 years"), ("065Y", "65 years and over"),
    ("110Y", "65 years and over"), ("006M", "under 1 year"), ("011M", "under 1 year"),
    ("071M", "1-5 years"), ("072M", "6-17 years"), ("010D", "under 1 year"), ("002W", "under 1 year"),
    ("060W", "1-5 years"),
    # A bare number is years (real files often leave the unit out).
    ("062", "18-64 years"), ("62", "18-64 years"), ("4", "1-5 years"), ("017", "6-17 years"), ("70", "65 years and over"),
])
def test_age_is_given_as_its_band_only(predictor, film, age, group):
    data = write(film, PatientAge=age)
    assert read_film(data).header.age_group == group
    result = predictor.predict(data)
    assert result.age_group == group
    # The band decides whose operating point reads the film (written out by hand: adults from 18 on).
    adult = group in ("18-64 years", "65 years and over")
    assert (result.population, result.population_source) == ("adult" if adult else "child", FROM_AGE)
    # Nothing else: the network's output is that of the same film without an age, and where the
    # image alone gives the same population the verdict is the same but for the band and its source.
    ageless = predictor.predict(write(film))
    assert result.logit == ageless.logit
    if ageless.population == result.population:
        assert dict(result.to_dict(), population_source=None) == \
            dict(ageless.to_dict(), age_group=group, population_source=None)


@pytest.mark.parametrize("age", ["SECRET-age", "0045", "Y045", "0045Y", "45 Y", "-01Y", "", "045X", "4.5"])
def test_malformed_or_missing_age_gives_no_age_group(predictor, film, age):
    result = predictor.predict(write(film, PatientAge=age))
    assert result.age_group is None and result.to_dict()["age_group"] is None
    assert result.label in predictor.class_names


def test_missing_descriptive_tags_read_as_blank(film):
    header = read_film(write(film)).header
    assert header == DicomHeader(modality="DX", body_part="", view_position="", age_group=None)
    assert find_header_refusal(header) is None


def test_non_dicom_films_have_no_header(film_paths):
    assert read_film(film_paths[0]).header is None


@pytest.mark.parametrize("view", ["PA", "LL"])
def test_the_exact_age_appears_in_no_field_message_or_log(predictor, film, caplog, tmp_path, view):
    """A 73-year-old: '65 years and over' is all that leaves the decoder, in the library, the CSV
    and the logs; the row is the one of the same film at another age in the same band (70)."""
    from pneumonia.__main__ import main as cli_main

    caplog.set_level(logging.DEBUG)
    caplog.clear()
    rows = {}
    for name, tags in (("aged", {"PatientAge": "073Y"}), ("other", {"PatientAge": "070Y"})):
        path = tmp_path / name / "film.dcm"
        path.parent.mkdir()
        path.write_bytes(write(film, ViewPosition=view, **tags))
        out = tmp_path / f"{name}.csv"
        assert cli_main(["predict", str(path), "--csv", str(out), "--quiet"]) == 0
        (rows[name],) = list(csv.DictReader(out.open()))
    assert rows["aged"]["age_group"] == rows["other"]["age_group"] == "65 years and over"
    assert {k: v for k, v in rows["aged"].items() if k != "path"} == \
           {k: v for k, v in rows["other"].items() if k != "path"}
    image = decode_dicom(write(film, PatientAge="073Y"))
    assert image.header.age_group == "65 years and over" and "073" not in repr(image.header)
    texts = [r.getMessage() for r in caplog.records] + [str(v) for v in image.header if v]
    assert not any("073" in text for text in texts)


@pytest.mark.parametrize("age, expected", [("000D", "under 1 year"), ("999Y", "65 years and over"), (" 030Y ", "18-64 years")])
def test_age_group_edges(age, expected):
    assert age_group(age) == expected
