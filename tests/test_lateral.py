"""Lateral films get no diagnosis: the frontal-view check (:func:`pneumonia.ood.measure_lung_fields`).

No lateral film exists in the data here, so the check is tested on chest phantoms drawn from
anatomy (``tests/phantoms.py``: a frontal film has two lung fields either side of the mediastinum
and spine; a lateral one has one lung region between the sternum and the spine), and measured on
every real frontal film available, which must pass:

    python -m pytest -q tests/test_lateral.py -rA   # prints the counts for each set
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumonia.notes import UNKNOWN_REASONS
from pneumonia.ood import looks_lateral, measure_lung_fields
from pneumonia.preprocessing import read_image, resize_image

from phantoms import frontal_phantom, lateral_phantom

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
POSES = [dict(shift=shift, scale=scale, facing=facing)
         for shift in (-0.06, 0.0, 0.06) for scale in (0.85, 1.0, 1.1) for facing in (1, -1)]


@pytest.mark.parametrize("size", [64, 160, 224, 512])
@pytest.mark.parametrize("pose", POSES, ids=lambda p: f"shift{p['shift']}-scale{p['scale']}-facing{p['facing']}")
def test_frontal_phantoms_pass_and_lateral_phantoms_do_not(size, pose):
    assert not looks_lateral(frontal_phantom(size, **pose))
    assert looks_lateral(lateral_phantom(size, **pose))


@pytest.mark.parametrize("hilum", [0.2, 0.35, 0.45])
@pytest.mark.parametrize("scale", [0.85, 1.0, 1.1])
@pytest.mark.parametrize("seed", [0, 1])
def test_a_lateral_is_caught_while_its_hila_are_darker_than_soft_tissue(hilum, scale, seed):
    """Hila from as dark as the lung (0.2) to just below soft tissue (0.55): one lung region.
    (Hila as dense as soft tissue in a large patient are missed: see pneumonia.ood.MIN_MEAN_DIP.)"""
    assert looks_lateral(lateral_phantom(160, hilum=hilum, scale=scale, seed=seed, noise=0.04))


@pytest.mark.parametrize("gamma", [0.6, 1.0, 1.6])
@pytest.mark.parametrize("contrast", [0.4, 1.0])
def test_exposure_does_not_change_the_answer(gamma, contrast):
    for make, lateral in ((frontal_phantom, False), (lateral_phantom, True)):
        film = 0.5 + contrast * (make(160) ** gamma - 0.5)
        assert looks_lateral(np.clip(film, 0, 1)) is lateral


def test_the_measure_says_where_the_ridge_is_and_how_deep_the_fields_are():
    """A frontal phantom's ridge is the spine in the middle of the body, its fields are deep at
    every height; an upside-down-flat or blank image has no two fields."""
    fields = measure_lung_fields(frontal_phantom(160))
    assert 0.45 <= fields.ridge <= 0.55 and min(fields.dips) > 0.5 and fields.is_frontal
    assert not measure_lung_fields(np.full((100, 100), 0.5)).is_frontal
    assert not measure_lung_fields(np.tile(np.linspace(0, 1, 100), (100, 1))).is_frontal  # a ramp


def test_predictor_answers_unknown_for_a_lateral_that_passes_the_gate(predictor, film_paths, monkeypatch):
    """Even where the distance gate lets a film through, one lung field gives UNKNOWN with the
    lateral reason; a frontal film through the same path keeps its label."""
    import dataclasses

    monkeypatch.setattr(predictor, "gate", dataclasses.replace(predictor.gate, threshold=float("inf")))
    lateral = predictor.predict(lateral_phantom(512), explain=True)
    assert lateral.label == "UNKNOWN" and not lateral.is_chest_xray
    assert lateral.reason == UNKNOWN_REASONS["lateral"] and lateral.heatmap is None
    assert lateral.to_dict()["pneumonia_probability"] is None
    assert predictor.predict(film_paths[0]).label in predictor.class_names


def _films(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))


@pytest.mark.parametrize("folder, max_rate", [
    (ROOT / "examples", 0.0),
    (SHARED / "chest_xray" / "test", 0.0),   # 618 paediatric films: none flagged when written
    (SHARED / "adult_nih", 0.01),            # 572 adult films: 2 flagged when written
], ids=["examples", "chest_xray-test", "adult_nih"])
def test_real_frontal_films_are_not_taken_for_laterals(folder, max_rate, predictor):
    """Measured at the model's input size, as the product does; skips where the data is absent."""
    films = _films(folder)
    if not films:
        pytest.skip(f"no films at {folder}")
    size = predictor.metadata.input_size
    flagged = [p.name for p in films if looks_lateral(resize_image(read_image(p), size))]
    print(f"{folder.name}: {len(flagged)} of {len(films)} frontal films look lateral {flagged}")
    assert len(flagged) <= max_rate * len(films), flagged
