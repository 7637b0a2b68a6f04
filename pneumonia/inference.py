"""The library API: load the shipped model once, then classify films.

    from pneumonia import Predictor
    predictor = Predictor.load()
    result = predictor.predict("film.jpeg", explain=True)
    result.label           # "NORMAL", "PNEUMONIA", or "UNKNOWN" (then result.reason says why)
    result.probabilities   # {"NORMAL": 0.08, "PNEUMONIA": 0.92}, calibrated
    result.heatmap         # float32 (h, w) in [-1, 1]: evidence on the model's fixed scale
    result.overlay         # PIL image: the heatmap over the film (warm: pneumonia, cool: normal)
    result.to_dict()       # the verdict every interface serialises (app API, batch CSV)

Everything the model needs to know (input size, classes, temperature, threshold, Grad-CAM
layer) comes from ``model/metadata.json``. The path from a file to a verdict: decode
(:func:`pneumonia.preprocessing.read_film`), resize, run the network once
(:meth:`Predictor.run_network`, which checks the input convention), calibrate and threshold, then
the UNKNOWN checks (:func:`find_unknown_cause`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence, Union

import numpy as np
from PIL import Image

from pneumonia.calibration import apply_temperature
from pneumonia.dicom import DicomHeader, find_header_refusal
from pneumonia.distribute import run_sharded
from pneumonia.errors import ModelLoadError, PneumoniaError
from pneumonia.gradcam import (
    COLORMAPS,
    NetworkFunctions,
    build_network_functions,
    colormap_table,
    normalise_class_maps,
    overlay_heatmap,
    scale_evidence,
)
from pneumonia.litert import has_litert, load_serving_network
from pneumonia.model import CLASS_NAMES, FEATURE_LAYER, ModelMetadata, load_metadata, load_model, resolve_model_dir
from pneumonia.notes import UNKNOWN_REASONS, describe_caution
from pneumonia.ood import OodGate, describe_inputs, looks_lateral
from pneumonia.population import PopulationProbe, choose_population
from pneumonia.preprocessing import (
    Film,
    ImageSource,
    check_model_input,
    read_film,
    read_image,
    resize_image,
    shrink_to_fit,
    to_batch,
)

UNKNOWN = "UNKNOWN"
# Longest side of the overlay predict(explain=True) returns by default: sharp on a screen, while a
# 3000 x 2500 film would otherwise give a 22 MB RGB image that adds nothing to a 5 x 5 heatmap.
OVERLAY_MAX_SIDE = 1024
# The fields of Prediction.to_dict(), in order: the verdict every interface serialises.
VERDICT_FIELDS = ("label", "pneumonia_probability", "normal_probability", "threshold", "is_chest_xray",
                  "reason", "age_group", "population", "population_source", "caution")


@dataclasses.dataclass
class Prediction:
    """The answer for one film.

    Attributes:
        label: ``"NORMAL"``, ``"PNEUMONIA"`` (the model's class names, from its metadata), or
            ``"UNKNOWN"`` when the upload is not a frontal chest X-ray the model may read (then no
            diagnosis is made and no heatmap is computed).
        probabilities: calibrated ``{"NORMAL": p0, "PNEUMONIA": p1}``, ``p0 + p1 == 1``, the
            class the logit scores second; the format ``gr.Label`` takes. Not a diagnosis when
            the label is UNKNOWN (:meth:`to_dict` leaves them out then).
        threshold: the operating threshold on P(PNEUMONIA) the label was decided with.
        logit: the network's raw output (before temperature scaling).
        image: the decoded film, ``float32 (H, W)`` in ``[0, 1]`` (for re-rendering overlays).
        heatmap: with ``explain=True``, the one signed map shown whatever the verdict: the
            evidence on the model's fixed scale (:func:`pneumonia.gradcam.scale_evidence`),
            ``float32 (h, w)`` in ``[-1, 1]``, positive for PNEUMONIA, negative for NORMAL;
            ``None`` for UNKNOWN, without ``explain``, or when the model records no heatmap scale
            (``metadata.heatmap``).
        evidence: with ``explain=True``, the raw signed evidence ``conv . w`` of each map cell
            (:func:`pneumonia.gradcam.evidence_map`), ``float32 (h, w)``, unscaled: its mean plus
            the logit layer's bias is the logit. Also for UNKNOWN (for evaluation only).
        class_heatmaps: with ``explain=True``, each class's evidence normalised by its own peak on
            this film, ``{class name: float32 (h, w)}`` in ``[0, 1]``: for locating each class's
            evidence peak (the pointing game), not for display (also for UNKNOWN), else ``None``.
        overlay: the heatmap over the film as an RGB ``PIL.Image`` when it is drawn, at most
            ``max_overlay_side`` pixels on its longer side.
        chest_xray_distance: squared Mahalanobis distance from the training films (see
            :mod:`pneumonia.ood`), ``None`` when the model ships no gate.
        colourfulness: mean chroma of the upload in ``[0, 1]`` (0 for a grayscale film).
        is_chest_xray: False when the upload is answered UNKNOWN: a DICOM header naming another
            modality, body part or a lateral view, colour, distance beyond the gate's threshold,
            or no two lung fields side by side (:func:`pneumonia.ood.looks_lateral`).
        reason: why the label is UNKNOWN, in words a person can act on; ``None`` otherwise.
        age_group: the patient's age band from a DICOM header (e.g. ``"1-5 years"``, see
            :data:`pneumonia.dicom.AGE_GROUPS`), ``None`` when unknown. Never the exact age.
        population: ``"child"`` or ``"adult"``: whose operating point (temperature, threshold)
            decided the label (:func:`pneumonia.population.choose_population`); ``None`` for
            UNKNOWN and for a model with one operating point.
        population_source: how the population was known: the DICOM age or the image.
        caution: a sentence when the film belongs to a population the evaluation shows the model
            is weaker on, with the measured figures (:func:`pneumonia.notes.describe_caution`).
    """

    label: str
    probabilities: dict[str, float]
    threshold: float
    logit: float
    image: Optional[np.ndarray] = None
    heatmap: Optional[np.ndarray] = None
    evidence: Optional[np.ndarray] = None
    class_heatmaps: Optional[dict[str, np.ndarray]] = None
    overlay: Optional[Image.Image] = None
    chest_xray_distance: Optional[float] = None
    colourfulness: float = 0.0
    is_chest_xray: bool = True
    reason: Optional[str] = None
    age_group: Optional[str] = None
    population: Optional[str] = None
    population_source: Optional[str] = None
    caution: Optional[str] = None
    positive_class: str = CLASS_NAMES[1]  # the class the logit scores (metadata.class_names[1])

    def to_dict(self) -> dict:
        """The verdict as plain data, the one serialisation every interface uses (app API, CLI, docs).

        Returns:
            The :data:`VERDICT_FIELDS`: ``{"label", "pneumonia_probability",
            "normal_probability", "threshold", "is_chest_xray", "reason", "age_group"}``; the
            probabilities are ``None`` when the label is UNKNOWN (no diagnosis is made then),
            ``threshold`` is ``None`` for UNKNOWN too (no population's operating point applied),
            ``reason`` says why in words (else ``None``), ``age_group`` is the DICOM age band or
            ``None``; ``population``, ``population_source`` and ``caution`` as on the prediction.
        """
        known = self.label != UNKNOWN
        return {
            "label": self.label,
            "pneumonia_probability": round(float(self.pneumonia_probability), 6) if known else None,
            "normal_probability": round(1.0 - float(self.pneumonia_probability), 6) if known else None,
            # No diagnosis, no population: no operating threshold applies to an UNKNOWN verdict.
            "threshold": round(float(self.threshold), 6) if known else None,
            "is_chest_xray": bool(self.is_chest_xray),
            "reason": self.reason,
            "age_group": self.age_group,
            "population": self.population,
            "population_source": self.population_source,
            "caution": self.caution,
        }

    @property
    def pneumonia_probability(self) -> float:
        """Calibrated probability in ``[0, 1]`` of the class the logit scores (PNEUMONIA), by name."""
        return self.probabilities[self.positive_class]


class FilmItem(NamedTuple):
    """One film of a batch, before it is read.

    Attributes:
        name: what its row is called (a path, or ``archive.zip/member.dcm``); its last part's
            extension helps tell the format (``.dcm``) and it names the file in error messages.
        source: a path, the file's bytes, or a callable returning them (an archive member, read
            only when its batch is decoded; it may raise
            :class:`~pneumonia.errors.PneumoniaError` with a sentence).
    """

    name: str
    source: Union[str, Path, bytes, Callable[[], bytes]]


class FileResult(NamedTuple):
    """One file of a batch: its name (the path, or the :class:`FilmItem` name), and either its
    :class:`Prediction` or the reason it could not be read (``error``, a sentence; ``""`` on success)."""

    path: str
    prediction: Optional[Prediction]
    error: str

    def to_row(self) -> dict:
        """A flat row: ``path``, the :data:`VERDICT_FIELDS` from :meth:`Prediction.to_dict`,
        ``chest_xray_distance`` and ``error``; every field but ``path`` and ``error`` is ``None``
        for an unreadable file."""
        if self.prediction is None:
            return {"path": self.path, **dict.fromkeys(VERDICT_FIELDS), "chest_xray_distance": None,
                    "error": self.error}
        distance = self.prediction.chest_xray_distance
        return {"path": self.path, **self.prediction.to_dict(),
                "chest_xray_distance": None if distance is None else round(distance, 2), "error": ""}


class BatchScores(NamedTuple):
    """What one network pass gives for a batch of ``N`` films, ``float64`` arrays.

    Attributes:
        logits: ``(N,)`` the network's outputs.
        distances: ``(N,)`` the gate's distances, ``None`` when the model ships no gate.
        adult_probabilities: ``(N,)`` the population probe's P(adult), ``None`` without a probe.
    """

    logits: np.ndarray
    distances: Optional[np.ndarray]
    adult_probabilities: Optional[np.ndarray]


def find_unknown_cause(header: Optional[DicomHeader], gate: Optional[OodGate], distance: Optional[float],
                       colourfulness: float, model_input: np.ndarray) -> Optional[str]:
    """Why an upload gets no diagnosis, or ``None`` when it is a frontal chest film to read.

    Checked in order: the DICOM header (modality, body part, view), the gate's colour check and
    distance, then whether the film shows two lung fields side by side.

    Args:
        header: from a DICOM file, else ``None``.
        gate: the model's gate, ``None`` when it ships none (colour and distance then pass).
        distance: the gate's squared Mahalanobis distance (``None``: not measured).
        colourfulness: the upload's mean chroma in ``[0, 1]``.
        model_input: the film as the model sees it, ``float32 (S, S)`` in ``[0, 1]``.

    Returns:
        A key of :data:`pneumonia.notes.UNKNOWN_REASONS`, or ``None``.
    """
    if header is not None:
        cause = find_header_refusal(header)
        if cause:
            return cause
    if gate is not None and distance is not None:
        cause = gate.find_refusal(distance, colourfulness)
        if cause:
            return cause
    return "lateral" if looks_lateral(model_input) else None


class Predictor:
    """A loaded model with its metadata; thread-safe for concurrent ``predict`` calls.

    Attributes:
        model: the Keras network, or ``None`` when the exported LiteRT network runs instead
            (:meth:`load` with ``metadata.serving``; see :mod:`pneumonia.litert`).
        metadata: the model's :class:`pneumonia.model.ModelMetadata`.
        gate: the "not a chest X-ray" gate, or ``None``.
        probe: the population probe, or ``None``.
        strategy: the ``tf.distribute`` strategy batches are split under, or ``None``.
    """

    def __init__(self, model, metadata: ModelMetadata, gate: Optional[OodGate] = None, strategy=None,
                 probe: Optional[PopulationProbe] = None, network: Optional[NetworkFunctions] = None):
        self.model = model
        self.metadata = metadata
        self.gate = gate
        self.probe = probe
        # A tf.distribute strategy with several replicas splits batches across them (see
        # run_network); None or a single replica runs everything on the default device.
        self.strategy = strategy
        # The network's passes: the exported LiteRT network (Predictor.load) or the Keras model's
        # traced passes; both are the same traced function (pneumonia.litert).
        self._network = network or build_network_functions(model, metadata.last_conv_layer, FEATURE_LAYER,
                                                           metadata.input_size)

    @classmethod
    def load(cls, model_dir: str | Path | None = None, strategy=None) -> "Predictor":
        """Load the model in ``model_dir`` (default: ``$PNEUMONIA_MODEL_DIR`` or the shipped ``model/``).

        When the metadata names an exported network (``serving``) and LiteRT is installed, that
        network runs and TensorFlow is not imported; otherwise, or under a strategy with several
        replicas, the Keras network is loaded.

        Args:
            model_dir: the model folder.
            strategy: a ``tf.distribute.Strategy`` (see :func:`pneumonia.distribute.choose_strategy`)
                to create the weights under and to split batches across; ``None`` for one device.

        A model whose metadata records no heatmap scale (``metadata.heatmap``) loads, but draws
        no heatmap (:attr:`Prediction.heatmap` stays ``None``; the evidence is still returned):
        ``python -m pneumonia fit-heatmap`` records the scale.

        Raises:
            ModelLoadError: the model or metadata is missing, corrupt or inconsistent.
        """
        model_dir = resolve_model_dir(model_dir)
        metadata = load_metadata(model_dir)
        colormap = metadata.heatmap.get("colormap")
        if metadata.heatmap and colormap not in COLORMAPS:
            raise ModelLoadError(f"The model's heatmap colour map {colormap!r} is not one this code knows "
                                 f"({', '.join(sorted(COLORMAPS))}); rerun python -m pneumonia fit-heatmap.")
        model, network = None, None
        if metadata.serving and has_litert() and (strategy is None or strategy.num_replicas_in_sync == 1):
            # The exported network: no TensorFlow import, a few ms a film (pneumonia.litert).
            network = load_serving_network(model_dir, metadata)
        else:
            with strategy.scope() if strategy is not None else contextlib.nullcontext():
                model, metadata = load_model(model_dir)
        gate = load_part(OodGate, model_dir, "chest X-ray gate") if metadata.ood else None
        probe = load_part(PopulationProbe, model_dir, "population probe") if metadata.populations.get("probe") else None
        return cls(model, metadata, gate, strategy, probe, network)

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
            ``float32 (H, W)`` in ``[0, 1]``, colourfulness, DICOM header) and the model input
            ``float32 (1, S, S, 1)`` in ``[0, 1]``.

        Raises:
            InvalidImageError: unreadable input.
        """
        film = read_film(image)
        return film, to_batch(resize_image(film.gray, self.metadata.input_size))

    def to_prediction(self, logit: float, model_input: np.ndarray, distance: Optional[float] = None,
                      adult_probability: Optional[float] = None, colourfulness: float = 0.0,
                      header: Optional[DicomHeader] = None, gray: Optional[np.ndarray] = None) -> Prediction:
        """Choose the population's operating point, calibrate one logit, apply the threshold, and
        answer UNKNOWN with a reason where the upload is not a frontal chest film
        (:func:`find_unknown_cause`).

        Args:
            logit: the network's output for the film.
            model_input: the film as the model saw it, ``float32 (S, S)`` in ``[0, 1]``.
            distance: the gate's distance, ``None`` without a gate.
            adult_probability: the population probe's P(adult), ``None`` without a probe.
            colourfulness: the upload's mean chroma.
            header: the DICOM header facts, ``None`` for other formats.
            gray: the decoded film to keep on the prediction (for overlays), or ``None``.
        """
        age_group = None if header is None else header.age_group
        population, source = choose_population(age_group, adult_probability)
        if population not in self.metadata.populations:
            population, source = None, None  # a model with one operating point
        # The probability is calibrated for the film's population even when no diagnosis is made,
        # so evaluation ranks every film on one scale per population.
        temperature, threshold = self.metadata.operating_point(population)
        p = float(apply_temperature(np.array([logit]), temperature)[0])
        negative, positive = self.class_names
        cause = find_unknown_cause(header, self.gate, distance, colourfulness, model_input)
        if cause:
            population, source = None, None  # no diagnosis: no population is named
        label = UNKNOWN if cause else positive if p >= threshold else negative
        return Prediction(label=label, probabilities={negative: 1.0 - p, positive: p}, positive_class=positive,
                          threshold=threshold, logit=float(logit), image=gray,
                          chest_xray_distance=distance, colourfulness=colourfulness,
                          is_chest_xray=cause is None, reason=UNKNOWN_REASONS[cause] if cause else None,
                          age_group=age_group, population=population, population_source=source,
                          caution=describe_caution(population, self.metadata.metrics,
                                                   (header.view_position or None) if header else None))

    def run_network(self, batch: np.ndarray, explain: bool = False) -> tuple[np.ndarray, ...]:
        """Run the network on a model-ready batch: the one place it is called.

        The batch is checked against the input convention first
        (:func:`pneumonia.preprocessing.check_model_input`). Under a strategy with several
        replicas the batch is split across them (:func:`pneumonia.distribute.run_sharded`; the
        result is the same); Grad-CAM (``explain``) runs on one device.

        Args:
            batch: ``float32 (N, S, S, 1)`` in ``[0, 1]``.
            explain: also return Grad-CAM maps of both classes.

        Returns:
            ``(logits (N,), features (N, C))``, plus the raw signed ``evidence (N, h, w)``
            (:func:`pneumonia.gradcam.evidence_map`) when ``explain``; numpy arrays.

        Raises:
            ValueError: the batch breaks the input convention.
        """
        check_model_input(batch, self.metadata.input_size)
        if explain:
            return tuple(np.asarray(output) for output in self._network.explain(batch))
        if self.strategy is not None and self.strategy.num_replicas_in_sync > 1:
            return tuple(run_sharded(self.strategy, self._network.forward, batch))
        return tuple(np.asarray(output) for output in self._network.forward(batch))

    def score_batch(self, batch: np.ndarray) -> BatchScores:
        """Logits, gate distances and P(adult) for a model-ready batch, from one network pass.

        Args:
            batch: ``float32 (N, S, S, 1)`` in ``[0, 1]``.
        """
        logits, features = self.run_network(batch)
        return self.read_scores(batch, logits, features)

    def score_and_explain(self, batch: np.ndarray, explain: bool) -> tuple[BatchScores, Optional[np.ndarray]]:
        """:meth:`score_batch`, and with ``explain`` the evidence maps ``(N, h, w)`` of the same pass
        (else ``None``): what :meth:`predict` and the batched path both need."""
        if not explain:
            return self.score_batch(batch), None
        logits, features, evidence = self.run_network(batch, explain=True)
        return self.read_scores(batch, logits, features), evidence

    def read_scores(self, batch: np.ndarray, logits: np.ndarray, features: np.ndarray) -> BatchScores:
        """:class:`BatchScores` from a pass's logits and pooled features ``(N, C)``."""
        distances = None if self.gate is None else self.gate.distances(describe_inputs(batch, features))
        adult = None if self.probe is None else self.probe.adult_probability(features)
        return BatchScores(np.asarray(logits, np.float64), distances, adult)

    def predict(self, image: ImageSource, explain: bool = False, alpha: float = 0.4,
                max_overlay_side: Optional[int] = OVERLAY_MAX_SIDE) -> Prediction:
        """Classify one film (one network pass; with ``explain``, Grad-CAM from the same pass).

        Args:
            image: a path, the file's bytes, a PIL image or a numpy array (see
                :func:`pneumonia.preprocessing.read_image`).
            explain: also compute the evidence map, and (unless UNKNOWN, and when the model
                records a heatmap scale) the signed heatmap on that fixed scale and its overlay.
            alpha: overlay opacity at full-strength evidence.
            max_overlay_side: shrink the overlay so its longer side is at most this many pixels
                (default :data:`OVERLAY_MAX_SIDE`; ``None``: the film's own resolution).

        Returns:
            A :class:`Prediction`.

        Raises:
            InvalidImageError: the input cannot be read as a film.
        """
        film, batch = self.preprocess(image)
        scores, evidence = self.score_and_explain(batch, explain)
        result = self.to_prediction(**scores_of(scores, 0), model_input=batch[0, ..., 0],
                                    colourfulness=film.colourfulness, header=film.header, gray=film.gray)
        if not explain:
            return result
        return self.explain_prediction(result, evidence[0], alpha, max_overlay_side)

    def explain_prediction(self, result: Prediction, evidence: np.ndarray, alpha: float = 0.4,
                           max_overlay_side: Optional[int] = OVERLAY_MAX_SIDE) -> Prediction:
        """Attach a film's evidence map, and for a diagnosis its signed heatmap and overlay.

        Args:
            result: the film's prediction, holding the decoded film (``result.image``).
            evidence: ``float32 (h, w)`` the film's raw evidence map (:func:`pneumonia.gradcam.evidence_map`).
            alpha: overlay opacity at full-strength evidence.
            max_overlay_side: the overlay's longest side, ``None`` for the film's size.

        Returns:
            ``result``, with ``evidence`` and ``class_heatmaps`` set, and ``heatmap`` and ``overlay``
            unless UNKNOWN or the model records no heatmap scale.
        """
        # Evaluation reads the PNEUMONIA evidence peak whatever the label, so these come first.
        result.evidence = np.asarray(evidence, np.float32)
        maps = normalise_class_maps(result.evidence[None])
        result.class_heatmaps = {name: maps[i, 0] for i, name in enumerate(self.class_names)}
        if result.label == UNKNOWN or not self.metadata.heatmap:
            return result
        # One map on the model's fixed scale, the same whatever the verdict.
        result.heatmap = scale_evidence(result.evidence, self.metadata.heatmap["scale"])
        result.overlay = self.draw_overlay(result.image, result.heatmap, alpha, max_overlay_side)
        return result

    def draw_overlay(self, gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4,
                     max_side: Optional[int] = None) -> Image.Image:
        """The heatmap over a film, in the model's colour map (``metadata.heatmap["colormap"]``).

        Args:
            gray: ``float32 (H, W)`` in ``[0, 1]``.
            heatmap: ``float32 (h, w)`` in ``[-1, 1]`` (:attr:`Prediction.heatmap`).
            alpha: opacity at full strength.
            max_side: longest side of the result in pixels, or ``None`` for the film's size.
        """
        return render_overlay(gray, heatmap, colormap_table(self.metadata.heatmap["colormap"]), alpha, max_side)

    def predict_paths(self, paths: Sequence[Path], batch_size: int = 64, workers: int = 2) -> Iterator[FileResult]:
        """:meth:`predict_items` over files: one :class:`FileResult` per path, in order, named by the path."""
        return self.predict_items((FilmItem(str(path), Path(path)) for path in paths), batch_size, workers)

    def predict_items(self, items: Iterable[FilmItem], batch_size: int = 64, workers: int = 2,
                      explain: bool = False, alpha: float = 0.4,
                      max_overlay_side: Optional[int] = OVERLAY_MAX_SIDE) -> Iterator[FileResult]:
        """Classify many films in batches: decoding runs in threads while the network works on the
        last batch, and each batch is one network pass (:meth:`run_network`).

        Every film takes the path of :meth:`predict`: :func:`pneumonia.preprocessing.read_film`,
        :func:`pneumonia.preprocessing.resize_image`, :meth:`to_prediction` and, with ``explain``,
        :meth:`explain_prediction`; so a film gets the same verdict alone or in a batch.

        Args:
            items: the films (:class:`FilmItem`: a path, bytes, or an archive member's reader).
            batch_size: films per network pass.
            workers: decoding threads.
            explain: also compute Grad-CAM and the overlay (the decoded film is kept per film then:
                memory grows with the batch, so keep batches small).
            alpha: overlay opacity, with ``explain``.
            max_overlay_side: the overlay's longest side, with ``explain``.

        Yields:
            One :class:`FileResult` per item, in order (the prediction, or the sentence saying why
            the film could not be read).
        """
        size = self.metadata.input_size

        def load(item: FilmItem):
            try:
                source = item.source() if callable(item.source) else item.source
                if isinstance(source, (bytes, bytearray)):
                    film = read_film(source, name=Path(item.name).name or item.name)
                else:
                    film = read_film(source)
                model_input = resize_image(film.gray, size)
                # Without explain only the model input is kept: memory stays at two batches of
                # S x S films however large the files.
                return (film if explain else film._replace(gray=None)), model_input, ""
            except PneumoniaError as exc:
                return None, None, str(exc)

        # Decode batch k+1 in the pool while the network runs on batch k: memory stays bounded
        # to two batches however large the archive.
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = None
            for chunk in _chunks(items, batch_size):
                futures = [pool.submit(load, item) for item in chunk]
                if pending is not None:
                    yield from self._classify_chunk(*pending, explain, alpha, max_overlay_side)
                pending = (chunk, futures)
            if pending is not None:
                yield from self._classify_chunk(*pending, explain, alpha, max_overlay_side)

    def predict_files(self, paths: Sequence[Path], batch_size: int = 64, workers: int = 2) -> Iterator[dict]:
        """:meth:`predict_paths` as flat rows (:meth:`FileResult.to_row`): what the batch CLI writes.

        The probabilities are ``None`` for UNKNOWN rows (no diagnosis); every field but ``path``
        and ``error`` is ``None`` for an unreadable file.
        """
        for result in self.predict_paths(paths, batch_size, workers):
            yield result.to_row()

    def _classify_chunk(self, items: list, futures: list, explain: bool, alpha: float,
                        max_overlay_side: Optional[int]) -> Iterator[FileResult]:
        loaded = [f.result() for f in futures]
        good = [i for i, (film, _, _) in enumerate(loaded) if film is not None]
        predictions = {}
        if good:
            batch = np.stack([loaded[i][1] for i in good])[..., None].astype(np.float32)
            scores, evidence = self.score_and_explain(batch, explain)
            for j, i in enumerate(good):
                film, model_input, _ = loaded[i]
                result = self.to_prediction(**scores_of(scores, j), model_input=model_input,
                                            colourfulness=film.colourfulness, header=film.header, gray=film.gray)
                predictions[i] = (self.explain_prediction(result, evidence[j], alpha, max_overlay_side)
                                  if explain else result)
        for i, (item, (_, _, error)) in enumerate(zip(items, loaded)):
            yield FileResult(item.name, predictions.get(i), error)


def load_part(kind, model_dir: Path, what: str):
    """``kind.load(model_dir)`` for a file the metadata names beside the weights.

    Raises:
        ModelLoadError: the file is missing or corrupt, in a sentence naming ``what``.
    """
    try:
        return kind.load(model_dir)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"The {what} file in {model_dir} is missing or corrupt ({exc}).") from None


def scores_of(scores: BatchScores, index: int) -> dict:
    """Film ``index``'s ``logit``, ``distance`` and ``adult_probability`` as floats (``None`` where
    the model has no gate or probe), keyed as :meth:`Predictor.to_prediction` takes them."""
    def pick(values):
        return None if values is None else float(values[index])

    return {"logit": float(scores.logits[index]), "distance": pick(scores.distances),
            "adult_probability": pick(scores.adult_probabilities)}


def render_overlay(gray: np.ndarray, heatmap: np.ndarray, colormap: np.ndarray, alpha: float = 0.4,
                   max_side: Optional[int] = None) -> Image.Image:
    """Overlay of the signed ``heatmap`` on film ``gray``, optionally shrunk for display.

    Args:
        gray: ``float32 (H, W)`` in ``[0, 1]``.
        heatmap: ``float32 (h, w)`` in ``[-1, 1]``.
        colormap: ``uint8 (256, 3)`` (:func:`pneumonia.gradcam.colormap_table`).
        alpha: opacity at full-strength evidence.
        max_side: longest side of the result in pixels, or ``None`` for the film's size.

    Returns:
        RGB ``PIL.Image``.
    """
    if max_side:
        gray = shrink_to_fit(gray, max_side)
    return overlay_heatmap(gray, heatmap, colormap, alpha)


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
