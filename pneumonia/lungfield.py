"""Where the lungs are on a frontal film: a classical estimate used to teach the network to look there.

Training penalises class evidence outside the lung fields (:mod:`pneumonia.train`, ``--lung-weight``),
so the Grad-CAM map has to point into the lungs, not at the neck, the abdomen or the film's corners.
No lung masks come with the data, so they are estimated here, and only where the estimate is
clear: two dark, roughly equal regions, one either side of the midline, neither touching the
film's edge. A film without such a pair gets no mask (``None``) and no penalty; a wrong mask would
push the evidence out of the lungs, a missing one only leaves the film unconstrained.

Training logs how many films of each population and class got a mask and stores it in the model's
metadata (``training.lung_fields``). On the r13 training films at 224 px: about four in five normal
films and three in four adult pneumonia films, but one in four paediatric pneumonia films, whose
consolidation breaks the dark lung up.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from pneumonia.gradcam import resize_heatmap

# Thresholds tried in turn, as percentiles of the film's central region: the first that splits
# off a lung pair wins (exposure varies, so no single cut serves every film).
DARK_PERCENTILES = (45, 35, 55, 25)


def find_lung_pair(smooth: np.ndarray, threshold: float) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The two lung regions among the film's dark regions at one threshold, if they are clear.

    Args:
        smooth: ``float32 (S, S)`` in ``[0, 1]``, the smoothed film.
        threshold: pixels below it are dark.

    Returns:
        ``(labels, (left, right))``: the component label image ``int32 (S, S)`` and the labels of
        the right-of-image and left-of-image lung, or ``None`` when no clear pair is found.
    """
    import cv2

    side = smooth.shape[0]
    dark = (smooth < threshold).astype(np.uint8)
    # Opening cuts the thin bridges that join a lung to the air beside the patient.
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(0.04 * side) | 1,) * 2)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, kernel)
    count, labels, stats, centres = cv2.connectedComponentsWithStats(dark, connectivity=4)
    best: dict[str, int] = {}
    for i in range(1, count):
        x0, y0, width, height, area = stats[i]
        cx, cy = centres[i]
        if not 0.03 * side**2 <= area <= 0.25 * side**2:
            continue
        if x0 == 0 or y0 == 0 or x0 + width == side or y0 + height == side:
            continue  # air outside the body, or a lung cut by the film's edge
        if not (0.25 * side <= height <= 0.8 * side and 0.2 * side < cy < 0.75 * side):
            continue
        half = "left" if 0.1 * side < cx < 0.5 * side else "right" if 0.5 * side <= cx < 0.9 * side else None
        if half and (half not in best or area > stats[best[half]][4]):
            best[half] = i
    if len(best) != 2:
        return None
    areas = stats[best["left"]][4], stats[best["right"]][4]
    if max(areas) > 2.5 * min(areas):
        return None
    return labels, (best["left"], best["right"])


def estimate_lung_field(image: np.ndarray) -> np.ndarray | None:
    """The lung fields of a frontal film, or ``None`` when they are not clear.

    Each lung is the convex hull of its dark region (so opacities inside it stay in), dilated by
    8 % of the side (so the lung edge and a basal consolidation next to it count as lung).

    Args:
        image: ``uint8 (S, S)`` film (``pneumonia.data.load_images``' convention).

    Returns:
        ``uint8 (S, S)``, 1 inside the lung fields and 0 outside, or ``None``.
    """
    import cv2

    side = image.shape[0]
    smooth = cv2.GaussianBlur(np.asarray(image, np.float32) / 255.0, (0, 0), side / 100)
    centre = smooth[int(0.2 * side): int(0.8 * side), int(0.2 * side): int(0.8 * side)]
    for percentile in DARK_PERCENTILES:
        found = find_lung_pair(smooth, float(np.percentile(centre, percentile)))
        if found:
            break
    else:
        return None
    labels, pair = found
    mask = np.zeros((side, side), np.uint8)
    for label in pair:
        points = np.column_stack(np.nonzero(labels == label))[:, ::-1].astype(np.int32)
        cv2.fillConvexPoly(mask, cv2.convexHull(points), 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (int(0.08 * side) | 1,) * 2)
    return cv2.dilate(mask, kernel)


def estimate_outside_weights(images: np.ndarray) -> np.ndarray:
    """Per film, how much each pixel lies outside the lungs: the penalty's spatial weight.

    Args:
        images: ``uint8 (N, S, S)`` films.

    Returns:
        ``uint8 (N, S, S)``: 1 outside the estimated lung fields, 0 inside, and all 0 for a film
        whose lungs were not found (no penalty).
    """
    out = np.zeros(images.shape, np.uint8)
    for i, image in enumerate(images):
        mask = estimate_lung_field(image)
        if mask is not None:
            out[i] = 1 - mask
    return out


def share_peaks_inside(maps: np.ndarray, masks: Sequence[np.ndarray]) -> float:
    """Share of films whose heatmap peaks inside their lung field (a box-free localisation check).

    Args:
        maps: ``float (N, h, w)`` heatmaps in ``[0, 1]``; an all-zero map counts as a miss.
        masks: ``N`` lung fields, ``uint8 (S, S)`` (:func:`estimate_lung_field`).

    Returns:
        The share in ``[0, 1]`` (NaN for no film).
    """
    hits = []
    for heatmap, mask in zip(maps, masks):
        upsampled = resize_heatmap(heatmap, mask.shape[::-1])  # as the overlay and the pointing game do
        hits.append(bool(heatmap.max() > 0 and mask.flat[int(np.argmax(upsampled))]))
    return float(np.mean(hits)) if hits else float("nan")
