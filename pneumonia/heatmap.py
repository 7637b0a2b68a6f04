"""Record a trained model's fixed heatmap scale: ``python -m pneumonia fit-heatmap``.

The heatmap shows each map cell's evidence on one scale per model, never rescaled to a film's own
maximum (:func:`pneumonia.gradcam.fit_evidence_scale` states the rule). Training records it; this
command records it for a model trained before that, on the validation films the model was
trained with (the split rebuilt from its metadata, :func:`pneumonia.train.rebuild_split`), through
the network the app runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pneumonia.data import iterate_batches, load_images
from pneumonia.gradcam import fit_evidence_scale
from pneumonia.inference import Predictor
from pneumonia.model import update_metadata
from pneumonia.train import rebuild_split


def collect_evidence(predictor: Predictor, paths: list[Path], batch_size: int = 64) -> np.ndarray:
    """The raw evidence maps of films, through the predictor's network.

    Args:
        predictor: a loaded :class:`pneumonia.inference.Predictor`.
        paths: image files.
        batch_size: films per pass.

    Returns:
        ``float32 (N, h, w)`` (:func:`pneumonia.gradcam.evidence_map`).
    """
    size = predictor.metadata.input_size
    maps = []
    for start in range(0, len(paths), batch_size):
        films = load_images(paths[start:start + batch_size], size)
        for batch in iterate_batches(films, batch_size):
            maps.append(predictor.run_network(batch, explain=True)[2].astype(np.float32))
    return np.concatenate(maps) if maps else np.zeros((0, 1, 1), np.float32)


def refit_heatmap(data_dir: str | Path, model_dir: str | Path, adult_dir: str | Path | None = None,
                  log=print, siim_dir: str | Path | None = None) -> dict:
    """Fit and record ``metadata.heatmap`` of a trained model from its validation films.

    Args:
        data_dir: the Kermany ``chest_xray`` folder the model was trained on.
        model_dir: the model folder; its ``metadata.json`` gets the ``heatmap`` entry.
        adult_dir: the ``adult_nih`` folder, for a model trained on NIH adults too.
        siim_dir: the ``adult_siim`` folder, for a model trained on SIIM adults too.
        log: where the summary line goes.

    Returns:
        The recorded ``heatmap`` dict.
    """
    _, _, _, val_records = rebuild_split(data_dir, model_dir, adult_dir, siim_dir)
    evidence = collect_evidence(Predictor.load(model_dir), [record.path for record in val_records])
    heatmap = fit_evidence_scale(evidence)
    update_metadata(model_dir, heatmap=heatmap)
    log(json.dumps(heatmap, indent=2))
    return heatmap
