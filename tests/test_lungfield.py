"""The lung-field estimate training uses to keep the evidence in the lungs (:mod:`pneumonia.lungfield`).

Checked on drawn frontal phantoms (:mod:`phantoms`), whose lungs are known ellipses: the field must
cover them and stay off the neck, the abdomen and the air beside the body; films without two clear
lungs (a lateral view, a blank film, noise) get no field, and so no penalty.
"""

import numpy as np
import pytest

from pneumonia.lungfield import estimate_lung_field, estimate_outside_weights, share_peaks_inside

from phantoms import frontal_phantom, lateral_phantom


def phantom_lungs(size: int, shift: float, scale: float) -> np.ndarray:
    """The phantom's aerated lungs, ``bool (size, size)``: its two lung ellipses less the heart
    drawn over the left one (the geometry of ``frontal_phantom``)."""
    y, x = np.mgrid[0:size, 0:size] / size
    x, y = (x - 0.5 - shift) / scale + 0.5, (y - 0.5) / scale + 0.5

    def ellipse(cx, cy, rx, ry):
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1

    return (ellipse(0.29, 0.45, 0.14, 0.28) | ellipse(0.71, 0.45, 0.14, 0.28)) & ~ellipse(0.57, 0.68, 0.15, 0.12)


def to_uint8(film: np.ndarray) -> np.ndarray:
    return np.round(film * 255).astype(np.uint8)


@pytest.mark.parametrize("size", [128, 224, 320])
@pytest.mark.parametrize("shift, scale", [(0.0, 1.0), (0.05, 0.9), (-0.04, 0.95)])
def test_field_covers_the_lungs_and_stays_off_the_neck_abdomen_and_air(size, shift, scale):
    mask = estimate_lung_field(to_uint8(frontal_phantom(size, shift=shift, scale=scale)))
    assert mask is not None and mask.shape == (size, size) and mask.dtype == np.uint8
    lungs = phantom_lungs(size, shift, scale)
    assert mask[lungs].mean() > 0.95  # the lungs are in the field
    assert mask[~lungs].mean() < 0.25  # and little else is
    assert not mask[: int(0.08 * size)].any()  # not the neck
    assert not mask[int(0.85 * size):].any()  # nor the abdomen
    assert not mask[:, : int(0.04 * size)].any() and not mask[:, -int(0.04 * size):].any()  # nor the air beside


@pytest.mark.parametrize("film", [lateral_phantom(224), np.full((224, 224), 0.5, np.float32),
                                  np.random.default_rng(0).random((224, 224)).astype(np.float32)],
                         ids=["lateral", "blank", "noise"])
def test_no_field_without_two_clear_lungs(film):
    assert estimate_lung_field(to_uint8(film)) is None


def test_outside_weights_are_the_fields_complement_and_zero_without_a_field():
    films = np.stack([to_uint8(frontal_phantom(160)), np.full((160, 160), 128, np.uint8)])
    weights = estimate_outside_weights(films)
    assert weights.dtype == np.uint8 and weights.shape == films.shape
    np.testing.assert_array_equal(weights[0], 1 - estimate_lung_field(films[0]))
    assert not weights[1].any()


def test_share_of_peaks_inside_counts_hits_and_empty_maps_as_misses():
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 8:24] = 1  # the field: rows 16-47, columns 8-23
    inside, outside, empty = (np.zeros((8, 8), np.float32) for _ in range(3))
    inside[3, 2] = 1.0  # cell centre at pixel (row 28, column 20): in the field
    outside[3, 6] = 1.0  # column 52: outside it
    assert share_peaks_inside(np.stack([inside, outside, empty]), [mask] * 3) == pytest.approx(1 / 3)
    assert share_peaks_inside(np.stack([inside, inside]), [mask] * 2) == 1.0
    assert np.isnan(share_peaks_inside(np.zeros((0, 8, 8)), []))
