"""The library API: load the shipped model once, then classify films.

    from pneumonia import Predictor
    predictor = Predictor.load()
    result = predictor.predict("film.jpeg", explain=True)
    result.label           # "NORMAL" or "PNEUMONIA"
    result.probabilities   # {"NORMAL": 0.08, "PNEUMONIA": 0.92}, calibrated
    result.overlay         # PIL image: Grad-CAM over the film

Everything the model needs to know (input size, classes, temperature, threshold, Grad-CAM
layer) comes from ``model/metadata.json``.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from pneumonia.calibration import apply_temperature
from pneumonia.errors import ModelLoadError, PneumoniaError
from pneumonia.gradcam import overlay_heatmap
from pneumonia.model import ModelMetadata, load_model
from pneumonia.preprocessing import Film, ImageSource, read_film, read_image, resize_image, shrink_to_fit, to_batch

UNKNOWN = "UNKNOWN"
# Longest side of the overlay predict(explain=True) returns by default: sharp on a screen, while a
# 3000 x 2500 film would otherwise give a 22 MB RGB image that adds nothing to a 5 x 5 heatmap.
OVERLAY_MAX_SIDE = 1024


@dataclasses.dataclass
class Prediction:
    """The answer for one film.

    Attributes:
        label: ``"NORMAL"``, ``"PNEUMONIA"``, or ``"UNKNOWN"`` when the image does not look like a
            frontal chest X-ray (then no diagnosis is made and no heatmap is computed).
        probabilities: calibrated ``{"NORMAL": p0, "PNEUMONIA": p1}``, ``p0 + p1 == 1``; the
            format ``gr.Label`` takes.
        threshold: the operating threshold on P(PNEUMONIA) the label was decided with.
        logit: the network's raw output (before temperature scaling).
        image: the decoded film, ``float32 (H, W)`` in ``[0, 1]`` (for re-rendering overlays).
        heatmap: Grad-CAM ``float32 (h, w)`` in ``[0, 1]`` when ``explain=True``, else ``None``.
        overlay: the heatmap over the film as an RGB ``PIL.Image`` when ``explain=True``, at most
            ``max_overlay_side`` pixels on its longer side.
        chest_xray_distance: squared Mahalanobis distance from the training films (see
            :mod:`pneumonia.ood`), ``None`` when the model ships no gate.
        colourfulness: mean chroma of the upload in ``[0, 1]`` (0 for a grayscale film).
        is_chest_xray: False when the distance is beyond the gate's threshold or the upload is
            in colour (see :class:`pneumonia.ood.OodGate`).
        reason: why the label is UNKNOWN, in words a person can act on; ``None`` otherwise.
    """

    label: str
    probabilities: dict[str, float]
    threshold: float
    logit: float
    image: Optional[np.ndarray] = None
    heatmap: Optional[np.ndarray] = None
    overlay: Optional[Image.Image] = None
    chest_xray_distance: Optional[float] = None
    colourfulness: float = 0.0
    is_chest_xray: bool = True
    reason: Optional[str] = None

    def to_dict(self) -> dict:
        """The verdict as plain data, the one serialisation every interface uses (app API, CLI, docs).

        Returns:
            ``{"label", "pneumonia_probability", "normal_probability", "threshold",
            "is_chest_xray", "reason"}``; the probabilities are ``None`` when the label is
            UNKNOWN (no diagnosis is made then), and ``reason`` says why in words (else ``None``).
        """
        known = self.label != UNKNOWN
        return {
            "label": self.label,
            "pneumonia_probability": round(float(self.pneumonia_probability), 6) if known else None,
            "normal_probability": round(1.0 - float(self.pneumonia_probability), 6) if known else None,
            "threshold": round(float(self.threshold), 6),
            "is_chest_xray": bool(self.is_chest_xray),
            "reason": self.reason,
        }

    @property
    def pneumonia_probability(self) -> float:
        """Calibrated P(PNEUMONIA) in ``[0, 1]``."""
        return self.probabilities["PNEUMONIA"]


class Predictor:
    """A loaded model with its metadata; thread-safe for concurrent ``predict`` calls."""

    def __init__(self, model, metadata: ModelMetadata, gate=None, strategy=None):
        import keras
        import tensorflow as tf

        from pneumonia.gradcam import class_activation_maps
        from pneumonia.ood import FEATURE_LAYER

        self.model = model
        self.metadata = metadata
        self.gate = gate
        # A tf.distribute strategy with several replicas splits batches across them (see
        # run_network); None or a single replica runs everything on the default device.
        self.strategy = strategy
        size = metadata.input_size
        spec = tf.TensorSpec((None, size, size, 1), tf.float32)
        feature_model = keras.Model(model.inputs, [model.output, model.get_layer(FEATURE_LAYER).output])
        explain_model = keras.Model(model.inputs, [model.output, model.get_layer(FEATURE_LAYER).output,
                                                   model.get_layer(metadata.last_conv_layer).output])

        # Traced once per process: calling the model directly in a graph avoids the per-call
        # overhead of model.predict. One pass gives the logit and the pooled features the
        # "not a chest X-ray" gate reads.
        @tf.function(input_signature=[spec])
        def forward(batch):
            logits, features = feature_model(batch, training=False)
            return logits[:, 0], features

        # predict(explain=True) in one forward and backward pass: the logit, the gate's features
        # and Grad-CAM for both classes (cams: (2, N, h, w)), so the label, which needs the
        # calibrated threshold, can be decided after the pass instead of before a second one.
        @tf.function(input_signature=[spec])
        def forward_explain(batch):
            with tf.GradientTape() as tape:
                logits, features, conv = explain_model(batch, training=False)
                score = tf.reduce_sum(logits)
            return logits[:, 0], features, class_activation_maps(conv, tape.gradient(score, conv))

        self._forward = forward
        self._forward_explain = forward_explain

    @classmethod
    def load(cls, model_dir: str | Path | None = None, strategy=None) -> "Predictor":
        """Load the model in ``model_dir`` (default: ``$PNEUMONIA_MODEL_DIR`` or the shipped ``model/``).

        Args:
            model_dir: the model folder.
            strategy: a ``tf.distribute.Strategy`` (see :func:`pneumonia.distribute.choose_strategy`)
                to create the weights under and to split batches across; ``None`` for one device.

        Raises:
            ModelLoadError: the model or metadata is missing, corrupt or inconsistent.
        """
        import contextlib

        from pneumonia.model import resolve_model_dir
        from pneumonia.ood import OodGate

        model_dir = resolve_model_dir(model_dir)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model, metadata = load_model(model_dir)
        gate = None
        if metadata.ood:
            try:
                gate = OodGate.load(model_dir)
            except (OSError, KeyError, ValueError) as exc:
                raise ModelLoadError(f"The chest X-ray gate file in {model_dir} is missing or corrupt ({exc}).") from None
        return cls(model, metadata, gate, strategy)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.metadata.class_names

    def warm_up(self) -> None:
        """Do now what would make the first ``predict(explain=True)`` slow: trace the network's graph
        and import the image libraries (about 0.6 s on two cores). Thread-safe; ``app.py`` runs it
        in the background while the server starts."""
        size = self.metadata.input_size
        self.predict(np.full((2 * size, 2 * size), 0.5, np.float32), explain=True)

    def preprocess(self, image: ImageSource) -> tuple[Film, np.ndarray]:
        """Decode a film and make the model input.

        Returns:
            ``(film, batch)``: the decoded :class:`pneumonia.preprocessing.Film` (grayscale
            ``float32 (H, W)`` in ``[0, 1]`` and colourfulness) and the model input
            ``float32 (1, S, S, 1)`` in ``[0, 1]``.

        Raises:
            InvalidImageError: unreadable input.
        """
        film = read_film(image)
        return film, to_batch(resize_image(film.gray, self.metadata.input_size))

    def to_prediction(self, logit: float, gray: Optional[np.ndarray] = None,
                      distance: Optional[float] = None, colourfulness: float = 0.0) -> Prediction:
        """Calibrate one logit, apply the threshold and the chest X-ray gate."""
        p = float(apply_temperature(np.array([logit]), self.metadata.temperature)[0])
        normal, pneumonia = self.class_names
        is_chest_xray = self.gate is None or distance is None or self.gate.accepts(distance, colourfulness)
        if not is_chest_xray:
            label = UNKNOWN
        else:
            label = pneumonia if p >= self.metadata.threshold else normal
        return Prediction(label=label, probabilities={normal: 1.0 - p, pneumonia: p},
                          threshold=float(self.metadata.threshold), logit=float(logit), image=gray,
                          chest_xray_distance=distance, colourfulness=colourfulness,
                          is_chest_xray=is_chest_xray)

    def describe_batch(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and gate descriptions for a model-ready batch.

        Args:
            batch: ``float32 (N, S, S, 1)`` in ``[0, 1]``.

        Returns:
            ``(logits (N,), descriptions (N, D))``, ``float64`` (see :func:`pneumonia.ood.describe_inputs`).
        """
        from pneumonia.ood import describe_inputs

        logits, features = self.run_network(batch)
        return logits.astype(np.float64), describe_inputs(batch, features)

    def run_network(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The network's logits ``(N,)`` and pooled gate features ``(N, C)`` for a model-ready batch.

        Under a strategy with several replicas the batch is split across them
        (:func:`pneumonia.distribute.run_sharded`); the result is the same.
        """
        if self.strategy is not None and self.strategy.num_replicas_in_sync > 1:
            from pneumonia.distribute import run_sharded

            logits, features = run_sharded(self.strategy, self._forward, batch)
            return logits, features
        logits, features = self._forward(batch)
        return logits.numpy(), features.numpy()

    def score_batch(self, batch: np.ndarray) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Logits and gate distances for a model-ready batch.

        Args:
            batch: ``float32 (N, S, S, 1)`` in ``[0, 1]``.

        Returns:
            ``(logits (N,), distances (N,) or None when no gate ships)``, ``float64``.
        """
        if self.gate is None:
            return self.run_network(batch)[0].astype(np.float64), None
        logits, descriptions = self.describe_batch(batch)
        return logits, self.gate.distances(descriptions)

    def predict(self, image: ImageSource, explain: bool = False, alpha: float = 0.4,
                max_overlay_side: Optional[int] = OVERLAY_MAX_SIDE) -> Prediction:
        """Classify one film.

        Args:
            image: a path, the file's bytes, a PIL image or a numpy array (see
                :func:`pneumonia.preprocessing.read_image`).
            explain: also compute Grad-CAM for the predicted class and the overlay.
            alpha: overlay opacity at the heatmap's peak.
            max_overlay_side: shrink the overlay so its longer side is at most this many pixels
                (default :data:`OVERLAY_MAX_SIDE`; ``None``: the film's own resolution).

        Returns:
            A :class:`Prediction`.

        Raises:
            InvalidImageError: the input cannot be read as a film.
        """
        film, batch = self.preprocess(image)
        gray = film.gray
        if explain:
            from pneumonia.ood import describe_inputs

            logits, features, cams = (output.numpy() for output in self._forward_explain(batch))
            logits = logits.astype(np.float64)
            distances = None if self.gate is None else self.gate.distances(describe_inputs(batch, features))
        else:
            logits, distances = self.score_batch(batch)
        result = self.to_prediction(logits[0], gray, None if distances is None else float(distances[0]),
                                    film.colourfulness)
        if not explain or result.label == UNKNOWN:
            return result
        # The class to explain depends on the calibrated threshold, which is not at logit 0 in
        # general: the label, decided after the pass, picks one of the two maps.
        result.heatmap = cams[self.class_names.index(result.label), 0].astype(np.float32)
        result.overlay = render_overlay(gray, result.heatmap, alpha, max_overlay_side)
        return result

    def predict_files(self, paths: Sequence[Path], batch_size: int = 64, workers: int = 2) -> Iterator[dict]:
        """Classify many files: decoding runs in threads while the network works on the last batch.

        Args:
            paths: image files.
            batch_size: films per forward pass.
            workers: decoding threads.

        Yields:
            One dict per path, in order: ``path``, ``label`` (NORMAL, PNEUMONIA or UNKNOWN),
            ``pneumonia_probability``, ``normal_probability`` (the CNN's calibrated output, given
            for UNKNOWN rows too but not a diagnosis there), ``chest_xray_distance`` and
            ``error`` (empty on success; every other field empty on failure).
        """
        size = self.metadata.input_size

        def load(path: Path):
            try:
                film = read_film(path)
                return resize_image(film.gray, size), film.colourfulness, ""
            except PneumoniaError as exc:
                return None, 0.0, str(exc)

        # Decode batch k+1 in the pool while the network runs on batch k: memory stays bounded
        # to two batches however large the archive.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = None
            for chunk in _chunks(paths, batch_size):
                futures = [pool.submit(load, path) for path in chunk]
                if pending is not None:
                    yield from self._classify_chunk(*pending)
                pending = (chunk, futures)
            if pending is not None:
                yield from self._classify_chunk(*pending)

    def _classify_chunk(self, paths: list, futures: list) -> Iterator[dict]:
        loaded = [f.result() for f in futures]
        good = [i for i, (image, _, _) in enumerate(loaded) if image is not None]
        scores = {}
        if good:
            batch = np.stack([loaded[i][0] for i in good])[..., None].astype(np.float32)
            logits, distances = self.score_batch(batch)
            for j, i in enumerate(good):
                scores[i] = (logits[j], None, None if distances is None else float(distances[j]), loaded[i][1])
        for i, (path, (_, _, error)) in enumerate(zip(paths, loaded)):
            if i in scores:
                r = self.to_prediction(*scores[i])
                yield {"path": str(path), "label": r.label,
                       "pneumonia_probability": round(r.pneumonia_probability, 6),
                       "normal_probability": round(1.0 - r.pneumonia_probability, 6),
                       "chest_xray_distance": "" if r.chest_xray_distance is None else round(r.chest_xray_distance, 2),
                       "error": ""}
            else:
                yield {"path": str(path), "label": "", "pneumonia_probability": "",
                       "normal_probability": "", "chest_xray_distance": "", "error": error}


def render_overlay(gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4,
                   max_side: Optional[int] = None) -> Image.Image:
    """Grad-CAM overlay of ``heatmap`` on film ``gray``, optionally shrunk for display.

    Args:
        gray: ``float32 (H, W)`` in ``[0, 1]``.
        heatmap: ``float32 (h, w)`` in ``[0, 1]``.
        alpha: opacity at the heatmap's peak.
        max_side: longest side of the result in pixels, or ``None`` for the film's size.

    Returns:
        RGB ``PIL.Image``.
    """
    if max_side:
        gray = shrink_to_fit(gray, max_side)
    return overlay_heatmap(gray, heatmap, alpha)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def make_preview(image: ImageSource, max_side: int = 768) -> Image.Image:
    """Decode an upload the way the model sees it and return a grayscale preview.

    Args:
        image: anything :func:`pneumonia.preprocessing.read_image` accepts (so DICOM and 16-bit
            films preview the same way they are classified).
        max_side: longest side of the preview.

    Returns:
        An ``L`` mode ``PIL.Image`` with no metadata.

    Raises:
        InvalidImageError: unreadable input.
    """
    gray = shrink_to_fit(read_image(image), max_side)
    return Image.fromarray(np.round(np.clip(gray, 0.0, 1.0) * 255).astype(np.uint8), mode="L")
