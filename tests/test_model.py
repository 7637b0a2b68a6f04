"""Model building, metadata round trip, and refusal of broken or mismatched model folders."""

import json
import shutil

import numpy as np
import pytest

from pneumonia.errors import ModelLoadError
from pneumonia.model import METADATA_FILENAME, MODEL_FILENAME, ModelMetadata, build_model, load_metadata, load_model


def test_build_model_maps_batch_to_one_logit():
    model = build_model(64, head_width=8)
    out = model(np.random.default_rng(0).random((2, 64, 64, 1), dtype=np.float32))
    assert tuple(out.shape) == (2, 1)
    assert model.get_layer("last_conv") is not None


def test_model_is_invariant_to_linear_intensity_changes():
    """Per-image standardisation: a film at half the brightness gives the same logit."""
    model = build_model(64, head_width=8)
    x = np.random.default_rng(1).random((1, 64, 64, 1), dtype=np.float32)
    a = float(model(x, training=False)[0, 0])
    b = float(model(x * 0.5 + 0.25, training=False)[0, 0])
    assert a == pytest.approx(b, abs=1e-3)


def test_metadata_round_trip(tiny_model_dir):
    meta = load_metadata(tiny_model_dir)
    again = ModelMetadata.from_dict(json.loads(meta.to_json()))
    assert again == meta
    assert again.class_names == ("NORMAL", "PNEUMONIA")


def test_shipped_metadata_describes_the_network(predictor):
    meta = predictor.metadata
    model, _ = load_model()  # the weights of record (the app runs their export, tests/test_litert.py)
    assert model.input_shape == (None, meta.input_size, meta.input_size, 1)
    assert 0 < meta.threshold < 1 and meta.temperature > 0
    films = meta.training["train_films"]  # per population since r12
    assert (sum(films.values()) if isinstance(films, dict) else films) > 1000
    assert "validation" in meta.metrics


def test_shipped_model_file_is_small():
    from pneumonia.model import resolve_model_dir

    # Hugging Face Spaces refuse plain-git files over 10 MB.
    assert (resolve_model_dir() / MODEL_FILENAME).stat().st_size < 10_000_000


@pytest.mark.parametrize(
    "field, value, message",
    [("input_size", 96, "input shape"), ("input_size", 5, "input_size"), ("threshold", 1.5, "threshold"),
     ("class_names", ["A", "B", "C"], "2 classes"), ("last_conv_layer", "nope", "no layer"),
     ("heatmap", {"scale": 0, "colormap": "blue-red"}, "heatmap scale"),
     ("heatmap", {"scale": float("nan"), "colormap": "blue-red"}, "heatmap scale"),
     ("heatmap", {"scale": 3.0}, "colormap")],
)
def test_mismatched_metadata_is_refused(tiny_model_dir, tmp_path, field, value, message):
    shutil.copytree(tiny_model_dir, tmp_path, dirs_exist_ok=True)
    data = json.loads((tmp_path / METADATA_FILENAME).read_text())
    data[field] = value
    (tmp_path / METADATA_FILENAME).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match=message):
        load_model(tmp_path)


def test_a_heatmap_colour_map_this_code_does_not_know_is_refused_at_load(tiny_model_dir, tmp_path):
    from pneumonia import Predictor

    shutil.copytree(tiny_model_dir, tmp_path, dirs_exist_ok=True)
    data = json.loads((tmp_path / METADATA_FILENAME).read_text())
    data["heatmap"] = {"scale": 3.0, "colormap": "rainbow"}
    (tmp_path / METADATA_FILENAME).write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="fit-heatmap"):
        Predictor.load(tmp_path)


def test_the_shipped_model_records_its_heatmap_scale(predictor):
    heatmap = predictor.metadata.heatmap
    assert heatmap["scale"] > 0 and heatmap["colormap"] == "blue-red" and "percentile" in heatmap["rule"]


def test_class_names_agree_between_the_model_and_the_data_modules():
    from pneumonia import data, model

    assert tuple(data.CLASS_NAMES) == model.CLASS_NAMES


@pytest.mark.parametrize("broken", ["missing_model", "missing_metadata", "corrupt_model", "corrupt_metadata"])
def test_broken_model_folder_is_refused(tiny_model_dir, tmp_path, broken):
    shutil.copytree(tiny_model_dir, tmp_path, dirs_exist_ok=True)
    target = tmp_path / (MODEL_FILENAME if "model" in broken.split("_")[1] else METADATA_FILENAME)
    if broken.startswith("missing"):
        target.unlink()
    else:
        target.write_bytes(b"\x00not a real file\xff" * 10)
    with pytest.raises(ModelLoadError):
        load_model(tmp_path)
