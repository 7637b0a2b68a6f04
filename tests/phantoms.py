"""Chest-like phantoms drawn from anatomy, for the frontal-view check (no real lateral film exists here).

Both are built as X-ray attenuation would show them, 0 = black (air), 1 = white (bone), from
ellipses and bands sized as fractions of the film:

- frontal (PA/AP): a wide body outline, two dark lung fields side by side, the mediastinum and
  spine as a bright vertical band between them, the heart low and to the patient's left, ribs
  across the lungs.
- lateral: a narrower body outline (the chest's front-to-back depth), one dark lung region (the
  two lungs overlap), the spine as a bright band at the back, the sternum as a thin band at the
  front, the heart in front and low, a hilum of moderate density in the middle, and the same ribs.

``facing`` mirrors a film (a lateral taken from either side; a frontal film flipped);
``shift`` moves the patient sideways, ``scale`` changes the patient's size.
"""

from __future__ import annotations

import numpy as np

AIR, SOFT_TISSUE, LUNG, BONE = 0.05, 0.55, 0.2, 0.85


def _grid(size: int, shift: float, scale: float):
    y, x = np.mgrid[0:size, 0:size] / size
    return (x - 0.5 - shift) / scale + 0.5, (y - 0.5) / scale + 0.5


def _ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _finish(image, x, y, inside_lungs, rng, noise, blur):
    ribs = 0.08 * (0.5 + 0.5 * np.sin(2 * np.pi * y * 14)) * inside_lungs  # ribs across the lungs
    image = image + ribs
    if blur:
        kernel = np.ones(blur) / blur
        image = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, image)
        image = np.apply_along_axis(lambda c: np.convolve(c, kernel, mode="same"), 0, image)
    image = image + rng.normal(0, noise, image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def frontal_phantom(size: int = 160, shift: float = 0.0, scale: float = 1.0, facing: int = 1,
                    noise: float = 0.02, blur: int = 3, seed: int = 0) -> np.ndarray:
    """A frontal chest film: ``float32 (size, size)`` in ``[0, 1]``."""
    rng = np.random.default_rng(seed)
    x, y = _grid(size, shift, scale)
    image = np.full((size, size), AIR)
    image[_ellipse(x, y, 0.5, 0.6, 0.44, 0.55)] = SOFT_TISSUE  # body outline
    lungs = _ellipse(x, y, 0.29, 0.45, 0.14, 0.28) | _ellipse(x, y, 0.71, 0.45, 0.14, 0.28)
    image[lungs] = LUNG
    image[(np.abs(x - 0.5) < 0.06) & (y > 0.08)] = BONE * 0.95  # mediastinum and spine
    image[_ellipse(x, y, 0.57, 0.68, 0.15, 0.12)] = 0.7  # heart, to the patient's left
    image = _finish(image, x, y, lungs, rng, noise, blur)
    return image if facing > 0 else image[:, ::-1].copy()


def lateral_phantom(size: int = 160, shift: float = 0.0, scale: float = 1.0, facing: int = 1,
                    hilum: float = 0.45, noise: float = 0.02, blur: int = 3, seed: int = 0) -> np.ndarray:
    """A lateral chest film facing left (``facing=1``) or right: ``float32 (size, size)`` in ``[0, 1]``.

    ``hilum`` is the density of the hilar shadow in the middle of the lung region.
    """
    rng = np.random.default_rng(seed)
    x, y = _grid(size, shift, scale)
    image = np.full((size, size), AIR)
    image[_ellipse(x, y, 0.5, 0.6, 0.34, 0.55)] = SOFT_TISSUE  # body: front (left) to back (right)
    lung = _ellipse(x, y, 0.47, 0.48, 0.23, 0.32)
    image[lung] = LUNG
    image[_ellipse(x, y, 0.50, 0.45, 0.05, 0.07)] = hilum  # hila, overlapping, mid-chest
    image[_ellipse(x, y, 0.36, 0.72, 0.14, 0.14)] = 0.65  # heart, front and low
    image[(np.abs(x - 0.73) < 0.05) & (y > 0.1)] = BONE  # vertebral bodies at the back
    image[(np.abs(x - 0.19) < 0.015) & (y > 0.2) & (y < 0.75)] = 0.75  # sternum at the front
    image = _finish(image, x, y, lung, rng, noise, blur)
    return image if facing > 0 else image[:, ::-1].copy()
