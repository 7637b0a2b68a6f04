"""The network the app runs: the traced Keras pass exported to TensorFlow Lite (:mod:`pneumonia.litert`).

Expected values come from the Keras network itself, run through
:func:`pneumonia.gradcam.build_network_functions` (whose maps ``tests/test_gradcam.py`` checks
against numpy and TensorFlow's gradients): the export must give the same logits, features and
maps, for any batch size, from any thread, and refuse an export that does not belong to the weights
beside it.
"""

import json
import shutil
import threading

import numpy as np
import pytest

from pneumonia.errors import ModelLoadError
from pneumonia.gradcam import build_network_functions
from pneumonia.inference import Predictor
from pneumonia.litert import SERVING_FILENAME, export_model_dir, load_serving_network
from pneumonia.model import METADATA_FILENAME, load_metadata, load_model
from pneumonia.ood import FEATURE_LAYER


@pytest.fixture(scope="module")
def exported_dir(tiny_model_dir, tmp_path_factory):
    """The tiny untrained model (64 px) with its network exported."""
    folder = tmp_path_factory.mktemp("exported")
    shutil.copytree(tiny_model_dir, folder, dirs_exist_ok=True)
    export_model_dir(folder)
    return folder


@pytest.mark.parametrize("sizes", [(1,), (4,), (3, 1, 5)], ids=["1", "4", "3-1-5"])
def test_export_gives_the_keras_pass_for_any_batch_size(exported_dir, sizes):
    model, metadata = load_model(exported_dir)
    keras_pass = build_network_functions(model, metadata.last_conv_layer, FEATURE_LAYER, metadata.input_size)
    exported = load_serving_network(exported_dir, metadata)
    rng = np.random.default_rng(len(sizes))
    for n in sizes:  # the interpreter is resized between calls
        batch = rng.random((n, 64, 64, 1)).astype(np.float32)
        got = exported.explain(batch)
        expected = [np.asarray(t) for t in keras_pass.explain(batch)]
        assert [g.shape for g in got] == [e.shape for e in expected]
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, atol=1e-4)
        np.testing.assert_allclose(exported.forward(batch)[0], expected[0], atol=1e-4)


def test_export_is_recorded_with_the_weights_it_came_from(exported_dir):
    serving = load_metadata(exported_dir).serving
    assert serving["file"] == SERVING_FILENAME and (exported_dir / SERVING_FILENAME).is_file()
    import hashlib

    assert serving["keras_sha256"] == hashlib.sha256((exported_dir / "pneumonia_cnn.keras").read_bytes()).hexdigest()
    assert serving["sha256"] == hashlib.sha256((exported_dir / SERVING_FILENAME).read_bytes()).hexdigest()
    assert Predictor.load(exported_dir).model is None  # the app runs the export, not Keras


@pytest.mark.parametrize("broken, message", [
    ("stale", "exported from other weights"),
    ("corrupt", "corrupt"),
    ("missing export", "No exported network"),
    ("missing weights", "No model file"),
])
def test_a_broken_export_is_refused_with_a_clear_message(exported_dir, tmp_path, broken, message):
    shutil.copytree(exported_dir, tmp_path, dirs_exist_ok=True)
    if broken == "stale":
        data = json.loads((tmp_path / METADATA_FILENAME).read_text())
        data["serving"]["keras_sha256"] = "0" * 64
        (tmp_path / METADATA_FILENAME).write_text(json.dumps(data))
    elif broken == "corrupt":
        (tmp_path / SERVING_FILENAME).write_bytes(b"not a flatbuffer" * 100)
    elif broken == "missing export":
        (tmp_path / SERVING_FILENAME).unlink()
    else:
        (tmp_path / "pneumonia_cnn.keras").unlink()
    with pytest.raises(ModelLoadError, match=message):
        Predictor.load(tmp_path)


def test_threads_share_the_interpreter_safely(exported_dir):
    metadata = load_metadata(exported_dir)
    exported = load_serving_network(exported_dir, metadata)
    rng = np.random.default_rng(0)
    batches = [rng.random((n, 64, 64, 1)).astype(np.float32) for n in (1, 2, 3, 1, 4, 2, 1, 3)]
    expected = [exported.explain(b) for b in batches]
    results = [None] * len(batches)

    def run(i):
        for _ in range(5):
            results[i] = exported.explain(batches[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_shipped_model_runs_its_export_and_agrees_with_keras_on_every_example(predictor, example_paths):
    """The shipped model's export against its weights of record, through the whole product path."""
    assert predictor.model is None and predictor.metadata.serving
    model, metadata = load_model()
    keras_predictor = Predictor(model, metadata, predictor.gate, None, predictor.probe)
    for path in example_paths:
        got, want = predictor.predict(path, explain=True), keras_predictor.predict(path, explain=True)
        assert got.label == want.label and got.population == want.population
        assert got.probabilities["PNEUMONIA"] == pytest.approx(want.probabilities["PNEUMONIA"], abs=1e-4)
        np.testing.assert_allclose(got.heatmap, want.heatmap, atol=1e-4)
        assert got.chest_xray_distance == pytest.approx(want.chest_xray_distance, rel=1e-4)


def test_without_litert_the_keras_network_runs(exported_dir, monkeypatch):
    import pneumonia.inference

    monkeypatch.setattr(pneumonia.inference, "has_litert", lambda: False)
    predictor = Predictor.load(exported_dir)
    assert predictor.model is not None
    assert predictor.predict(np.full((80, 80), 0.5, np.float32)).label in ("NORMAL", "PNEUMONIA", "UNKNOWN")
