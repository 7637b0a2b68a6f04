"""The network the app runs: the traced Keras pass exported to TensorFlow Lite, run without TensorFlow.

Training writes the Keras network (``pneumonia_cnn.keras``, the weights of record) and exports the
product's own traced pass, :attr:`pneumonia.gradcam.NetworkFunctions.explain` (logit, pooled
features and the raw signed evidence map, in one forward pass), to ``pneumonia_cnn.tflite``. Its
outputs are named (:data:`OUTPUT_NAMES`) and ``metadata.serving.output_contract`` records their
version, so an export from another contract is refused instead of misread.
``metadata.serving`` names that file and the sha256 of the ``.keras`` it came from, so a stale
export is refused. :class:`pneumonia.inference.Predictor` runs it with Google's LiteRT interpreter
(``ai-edge-litert``), which imports in about 0.1 s where TensorFlow takes about 6 s, and runs a 224
px film in a few milliseconds with XNNPACK. Outputs agree with Keras' within float32 round-off
(``tests/test_litert.py``).

    python -m pneumonia export --model model/    # (re)export an existing model
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from pneumonia.errors import ModelLoadError
from pneumonia.gradcam import NetworkFunctions, build_network_functions
from pneumonia.model import FEATURE_LAYER, MODEL_FILENAME, ModelMetadata, load_model, sha256_of, update_metadata

SERVING_FILENAME = "pneumonia_cnn.tflite"
RUNTIME = "ai-edge-litert (TensorFlow Lite, XNNPACK)"
# The exported signature's outputs, in NetworkFunctions.explain's order. Version 2: the raw signed
# evidence map (N, h, w); version 1 (unnamed, told apart by rank) gave max-normalised class maps.
SIGNATURE = "explain"
OUTPUT_NAMES = ("logits", "features", "evidence")
OUTPUT_CONTRACT = 2


def has_litert() -> bool:
    """Whether the LiteRT interpreter is installed (``ai-edge-litert`` has no wheel for every
    platform; without it the app runs the Keras network, as before the export existed)."""
    import importlib.util

    return importlib.util.find_spec("ai_edge_litert") is not None


def export_network(model, last_conv_layer: str, feature_layer: str, input_size: int) -> bytes:
    """Convert the product's traced explain pass to a TensorFlow Lite flatbuffer (needs TensorFlow).

    Args:
        model: the Keras network.
        last_conv_layer, feature_layer, input_size: as for
            :func:`pneumonia.gradcam.build_network_functions`.

    Returns:
        The flatbuffer: input ``float32 (N, S, S, 1)`` in ``[0, 1]`` (any ``N``), outputs named
        :data:`OUTPUT_NAMES`: the logits ``(N,)``, pooled features ``(N, C)`` and the evidence
        map ``(N, h, w)``.
    """
    import tempfile

    import keras
    import tensorflow as tf

    # Through a Keras export archive (a SavedModel): it tracks the Keras 3 weights the traced
    # function reads, which a converter given the bare concrete function leaves out.
    explain = build_network_functions(model, last_conv_layer, feature_layer, input_size).explain

    @tf.function(input_signature=explain.input_signature)
    def named(batch):
        return dict(zip(OUTPUT_NAMES, explain(batch)))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, named)
    with tempfile.TemporaryDirectory() as saved:
        archive.write_out(saved, verbose=False)
        return tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=[SIGNATURE]).convert()


def export_model_dir(model_dir: str | Path) -> dict:
    """Export a model folder's Keras network to :data:`SERVING_FILENAME` and record it in its metadata.

    Returns:
        The ``metadata.serving`` record written: file, runtime, ``keras_sha256``, ``sha256``.
    """
    import tensorflow as tf

    model_dir = Path(model_dir)
    model, metadata = load_model(model_dir)
    flatbuffer = export_network(model, metadata.last_conv_layer, FEATURE_LAYER, metadata.input_size)
    path = model_dir / SERVING_FILENAME
    path.write_bytes(flatbuffer)
    serving = {"file": SERVING_FILENAME, "runtime": RUNTIME, "exported_with": f"tensorflow {tf.__version__}",
               "keras_sha256": sha256_of(model_dir / MODEL_FILENAME), "sha256": sha256_of(path),
               "signature": SIGNATURE, "outputs": list(OUTPUT_NAMES), "output_contract": OUTPUT_CONTRACT}
    update_metadata(model_dir, serving=serving)
    return serving


def load_serving_network(model_dir: str | Path, metadata: ModelMetadata) -> NetworkFunctions:
    """The exported network of a model folder as :class:`pneumonia.gradcam.NetworkFunctions`.

    Args:
        model_dir: the model folder.
        metadata: its metadata, whose ``serving`` names the file.

    Returns:
        ``forward`` and ``explain`` over ``float32 (N, S, S, 1)`` numpy batches, giving numpy
        arrays as the traced Keras passes do. One interpreter serves every thread, one call at a
        time (a LiteRT interpreter is not thread-safe; a call takes a few milliseconds).

    Raises:
        ModelLoadError: the file is missing, corrupt, exported from other weights than the
            ``.keras`` beside it or under another output contract, or its input is not
            ``(N, S, S, 1)``.
    """
    model_dir = Path(model_dir)
    path = model_dir / metadata.serving.get("file", SERVING_FILENAME)
    if not path.is_file():
        raise ModelLoadError(f"No exported network at {path}: run `python -m pneumonia export --model {model_dir}`.")
    weights = model_dir / MODEL_FILENAME
    if not weights.is_file():
        raise ModelLoadError(f"No model file at {weights}: the exported network needs its weights of record beside it.")
    if sha256_of(weights) != metadata.serving.get("keras_sha256"):
        raise ModelLoadError(f"{path.name} was exported from other weights than {weights.name}: "
                             f"run `python -m pneumonia export --model {model_dir}`.")
    if metadata.serving.get("output_contract") != OUTPUT_CONTRACT:
        raise ModelLoadError(f"{path.name} was exported under another output contract "
                             f"({metadata.serving.get('output_contract', 1)}, this code reads {OUTPUT_CONTRACT}): "
                             f"run `python -m pneumonia export --model {model_dir}`.")
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=str(path), num_threads=os.cpu_count() or 1)
        interpreter.allocate_tensors()
    except Exception as exc:  # the interpreter raises ValueError or RuntimeError for a bad flatbuffer
        raise ModelLoadError(f"Exported network {path} is corrupt ({type(exc).__name__}).") from None
    (source,) = interpreter.get_input_details()
    size = metadata.input_size
    if tuple(source["shape_signature"][1:]) != (size, size, 1):
        raise ModelLoadError(f"Exported network input {tuple(source['shape_signature'])} does not match "
                             f"metadata ({size}, {size}, 1).")
    try:
        named = interpreter.get_signature_runner(SIGNATURE).get_output_details()
        outputs = [named[name]["index"] for name in OUTPUT_NAMES]
    except (ValueError, KeyError):
        raise ModelLoadError(f"Exported network {path} lacks the outputs {list(OUTPUT_NAMES)} of signature "
                             f"{SIGNATURE!r}: run `python -m pneumonia export --model {model_dir}`.") from None
    lock = threading.Lock()

    def explain(batch: np.ndarray):
        batch = np.ascontiguousarray(batch, np.float32)
        with lock:
            # The interpreter keeps the last batch size it was given; another size needs a resize.
            if interpreter.get_input_details()[0]["shape"][0] != len(batch):
                interpreter.resize_tensor_input(source["index"], batch.shape)
                interpreter.allocate_tensors()
            interpreter.set_tensor(source["index"], batch)
            interpreter.invoke()
            return tuple(interpreter.get_tensor(index).copy() for index in outputs)

    def forward(batch: np.ndarray):
        logits, pooled, _ = explain(batch)
        return logits, pooled

    return NetworkFunctions(forward, explain)
