"""The CNN, its metadata, and saving/loading them together.

The network maps a ``float32`` batch ``(N, S, S, 1)`` in ``[0, 1]`` (see
:mod:`pneumonia.preprocessing`) to one **logit** per image: the log-odds of PNEUMONIA before
calibration. Probabilities are ``sigmoid(logit / temperature)`` with the temperature fitted on the
validation split and stored in the metadata; keeping the logit as the output makes Grad-CAM and
temperature scaling exact.

TensorFlow is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from pneumonia.errors import ModelLoadError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "model"
MODEL_DIR_ENV = "PNEUMONIA_MODEL_DIR"
MODEL_FILENAME = "pneumonia_cnn.keras"
METADATA_FILENAME = "metadata.json"
# The classes, in the order of the network's output: index 1 is the class the logit scores.
CLASS_NAMES = ("NORMAL", "PNEUMONIA")
LAST_CONV_LAYER = "last_conv"
# The pooled layer whose activations the "not a chest X-ray" gate and the population probe read.
FEATURE_LAYER = "pool"
# What the network is given (the convention of pneumonia.preprocessing) and what it does to it first.
INPUT_CONVENTION = (
    "float32 (N, S, S, 1) in [0, 1]: grayscale, sample value / max of its type (8-bit /255, "
    "16-bit containers / (2^b - 1), b = 10, 12, 14 or 16 bits by the largest value; DICOM via "
    "modality LUT + VOI window), squashed to S x S with area interpolation"
)
NORMALIZATION = (INPUT_CONVENTION + "; the network standardises each image itself (zero mean, unit variance "
                 "over H, W, C), then halves it to the scale of its ImageNet backbone's [-1, 1] input")
# The backbone's last ImageNet block this project keeps: at a 224 px input it gives a 14 x 14 map,
# fine enough for the heatmap to point at a lobe (blocks 13-16 would halve it to 7 x 7).
BACKBONE_END = "block_12_add"
HEAD_WIDTH = 256  # channels of the head's 1x1 convolution: the pooled features the gate and probe read


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """Everything inference needs to know about a trained network, stored beside its weights.

    Attributes:
        version: this trained model's identity: run name, training date, a hash of its training
            data and one of its weights, e.g. ``"r12-mnv2-20261202-d9a24643b-w1c2d3e4f"``.
        input_size: side ``S`` of the square input in pixels.
        class_names: ``("NORMAL", "PNEUMONIA")``: index 1 is the class the logit scores.
        threshold: decision threshold on the calibrated PNEUMONIA probability.
        temperature: logits are divided by this before the sigmoid (temperature scaling).
        normalization: the input convention, in words.
        last_conv_layer: name of the layer Grad-CAM reads.
        architecture: short description of the network.
        training: data, split, seed, epochs, date and duration of training.
        metrics: validation (and, once evaluated, test) figures.
        ood: the "not a chest X-ray" gate's settings.
        populations: per population (``"child"``, ``"adult"``): its own ``temperature`` and
            ``threshold``, fitted on that population's validation films, and how the population
            is told from the image (see :mod:`pneumonia.population`); empty for a model with one
            operating point.
        created: ISO date the weights were written.
        heatmap: the heatmap's fixed scale (:func:`pneumonia.gradcam.fit_evidence_scale`):
            ``{"scale": float > 0, "rule": str, "colormap": str, "films": int}``; empty when none
            was recorded (then no heatmap is drawn, and ``python -m pneumonia fit-heatmap``
            records one).
        serving: the exported network the app runs (:mod:`pneumonia.litert`): ``file``,
            ``runtime``, ``exported_with``, ``keras_sha256`` (of the weights it was exported from)
            and ``sha256``; empty when there is none (the Keras network is run instead).
    """

    version: str
    input_size: int
    class_names: tuple[str, ...] = CLASS_NAMES
    threshold: float = 0.5
    temperature: float = 1.0
    normalization: str = NORMALIZATION
    last_conv_layer: str = LAST_CONV_LAYER
    architecture: str = ""
    training: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    ood: dict[str, Any] = dataclasses.field(default_factory=dict)
    populations: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = ""
    serving: dict[str, Any] = dataclasses.field(default_factory=dict)
    heatmap: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def fitted_populations(self) -> dict[str, dict]:
        """The ``populations`` entries that are operating points (``{"temperature", "threshold"}``),
        without the probe's record."""
        return {name: fitted for name, fitted in self.populations.items()
                if isinstance(fitted, dict) and "threshold" in fitted}

    def operating_point(self, population: str | None) -> tuple[float, float]:
        """``(temperature, threshold)`` fitted for ``population``, else the model-wide pair."""
        fitted = self.populations.get(population) if population else None
        if not fitted:
            return float(self.temperature), float(self.threshold)
        return float(fitted["temperature"]), float(fitted["threshold"])

    def to_json(self) -> str:
        """Serialise to an indented JSON string."""
        data = dataclasses.asdict(self)
        data["class_names"] = list(self.class_names)
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelMetadata":
        """Build from a parsed ``metadata.json``; unknown keys are an error, missing ones default."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelLoadError(f"metadata.json has unknown fields: {sorted(unknown)}")
        if "version" not in data or "input_size" not in data:
            raise ModelLoadError("metadata.json must give at least 'version' and 'input_size'")
        data = dict(data)
        data["class_names"] = tuple(data.get("class_names", CLASS_NAMES))
        meta = cls(**data)
        meta.validate()
        return meta

    def validate(self) -> None:
        """Raise :class:`ModelLoadError` if a field is out of its valid range."""
        if not isinstance(self.input_size, int) or not 32 <= self.input_size <= 1024:
            raise ModelLoadError(f"metadata input_size {self.input_size!r} is not a valid side")
        if len(self.class_names) != 2:
            raise ModelLoadError(f"metadata must name 2 classes, got {list(self.class_names)}")
        pairs = {"": {"temperature": self.temperature, "threshold": self.threshold}}
        pairs.update({f" ({name})": fitted for name, fitted in self.fitted_populations.items()})
        for where, fitted in pairs.items():
            threshold, temperature = fitted.get("threshold"), fitted.get("temperature")
            if not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0:
                raise ModelLoadError(f"metadata threshold{where} {threshold!r} is not in (0, 1)")
            if not isinstance(temperature, (int, float)) or not (math.isfinite(temperature) and temperature > 0):
                raise ModelLoadError(f"metadata temperature{where} {temperature!r} must be > 0")
        if self.heatmap:
            scale, colormap = self.heatmap.get("scale"), self.heatmap.get("colormap")
            if not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
                raise ModelLoadError(f"metadata heatmap scale {scale!r} must be > 0")
            if not isinstance(colormap, str) or not colormap:
                raise ModelLoadError(f"metadata heatmap colormap {colormap!r} must name a colour map")


def build_model(input_size: int, head_width: int = HEAD_WIDTH, dropout: float = 0.2, seed: int = 0,
                backbone_end: str = BACKBONE_END):
    """Build the pneumonia network (untrained weights).

    The first layer standardises each image (zero mean, unit variance), so exposure and bit depth
    do not change the answer, then halves it to the scale of the backbone's ImageNet input. The
    backbone is Keras' MobileNetV2 (alpha 1.0) up to ``backbone_end``, taking the one grayscale
    channel directly (its first convolution's ImageNet kernel is summed over RGB when the
    weights are copied, :func:`pneumonia.pretrained.copy_weights_by_name`). The head is a 1x1
    convolution with batch norm and ReLU (:data:`LAST_CONV_LAYER`), global average pooling
    (:data:`FEATURE_LAYER`), dropout and one linear logit: with a linear head after average pooling, Grad-CAM
    on ``last_conv`` is exactly the class activation map, a faithful split of the logit over the
    map's cells.

    Args:
        input_size: side ``S`` of the square grayscale input (224 gives a 14 x 14 map).
        head_width: channels of the head's convolution (the pooled features the gate reads).
        dropout: dropout rate before the logit.
        seed: seed for weight initialisation.
        backbone_end: the last MobileNetV2 layer kept.

    Returns:
        A ``keras.Model`` mapping ``(N, S, S, 1)`` float32 in ``[0, 1]`` to ``(N, 1)`` logits.
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((input_size, input_size, 1), name="image")
    x = layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False, epsilon=1e-3,
                                  name="standardize")(inputs)
    x = layers.Rescaling(0.5, name="to_backbone_scale")(x)
    backbone = keras.applications.MobileNetV2(input_tensor=x, include_top=False, weights=None, alpha=1.0)
    x = backbone.get_layer(backbone_end).output
    x = layers.Conv2D(head_width, 1, use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(name=LAST_CONV_LAYER)(x)
    x = layers.GlobalAveragePooling2D(name=FEATURE_LAYER)(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs, name="pneumonia_mobilenetv2")


def backbone_layer_names(model, backbone_end: str = BACKBONE_END) -> list[str]:
    """Names of the MobileNetV2 layers of ``model``, in order, from ``Conv1`` to ``backbone_end``."""
    names = [layer.name for layer in model.layers]
    return names[names.index("Conv1"): names.index(backbone_end) + 1]


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_model_dir(model_dir: str | Path | None = None) -> Path:
    """The model folder to use: ``model_dir`` if given, else ``$PNEUMONIA_MODEL_DIR``, else ``model/``."""
    if model_dir is not None:
        return Path(model_dir)
    return Path(os.environ.get(MODEL_DIR_ENV) or DEFAULT_MODEL_DIR)


def save_model(model, metadata: ModelMetadata, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/pneumonia_cnn.keras`` and ``<out_dir>/metadata.json``.

    Args:
        model: the trained Keras model.
        metadata: its metadata; validated before anything is written.
        out_dir: destination folder, created if needed.

    Returns:
        The path of the ``.keras`` file.
    """
    metadata.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILENAME
    model.save(model_path)
    (out_dir / METADATA_FILENAME).write_text(metadata.to_json())
    return model_path


def update_metadata(model_dir: str | Path, **changes: Any) -> ModelMetadata:
    """Replace fields of a model folder's ``metadata.json`` (e.g. ``ood=...``, ``metrics=...``).

    Returns:
        The validated metadata as written.

    Raises:
        ModelLoadError: the current metadata is missing or invalid, or the result is invalid.
    """
    metadata = dataclasses.replace(load_metadata(model_dir), **changes)
    metadata.validate()
    (Path(model_dir) / METADATA_FILENAME).write_text(metadata.to_json())
    return metadata


def load_metadata(model_dir: str | Path) -> ModelMetadata:
    """Read and validate ``metadata.json`` from a model folder.

    Raises:
        ModelLoadError: missing, not JSON, or with invalid fields.
    """
    path = Path(model_dir) / METADATA_FILENAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"No model metadata at {path}: train a model or restore model/.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"Model metadata {path} is unreadable or not JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"Model metadata {path} must be a JSON object.")
    try:
        return ModelMetadata.from_dict(data)
    except TypeError as exc:
        raise ModelLoadError(f"Model metadata {path} is malformed ({exc}).") from None


def load_model(model_dir: str | Path | None = None):
    """Load a trained network and its metadata, and check they agree.

    Args:
        model_dir: folder holding ``pneumonia_cnn.keras`` and ``metadata.json``; ``None`` means
            :func:`resolve_model_dir` (``$PNEUMONIA_MODEL_DIR`` or the shipped ``model/``).

    Returns:
        ``(model, metadata)``.

    Raises:
        ModelLoadError: a file is missing or corrupt, or the network's input shape, output
            shape or Grad-CAM layer disagree with the metadata.
    """
    model_dir = resolve_model_dir(model_dir)
    metadata = load_metadata(model_dir)
    path = model_dir / MODEL_FILENAME
    if not path.is_file():
        raise ModelLoadError(f"No model file at {path}: train a model or restore model/.")
    import keras

    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a corrupt archive
        raise ModelLoadError(f"Model file {path} is corrupt or not a Keras model ({type(exc).__name__}).") from None
    expected_in = (None, metadata.input_size, metadata.input_size, 1)
    if tuple(model.input_shape) != expected_in:
        raise ModelLoadError(
            f"Model input shape {tuple(model.input_shape)} does not match metadata {expected_in}."
        )
    if tuple(model.output_shape) != (None, 1):
        raise ModelLoadError(
            f"Model output shape {tuple(model.output_shape)} does not give one logit for "
            f"{len(metadata.class_names)} classes."
        )
    try:
        model.get_layer(metadata.last_conv_layer)
    except ValueError:
        raise ModelLoadError(f"Model has no layer {metadata.last_conv_layer!r} named in metadata.") from None
    return model, metadata
