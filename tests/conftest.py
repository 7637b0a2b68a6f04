"""Shared fixtures: the shipped model, a tiny untrained model, small films and the dataset path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
FILMS = DATA / "films"  # 4 NORMAL + 4 PNEUMONIA 224x224 films from the dataset's val split
SHARED_DATA = Path(os.environ.get("PNEUMONIA_DATA", ROOT.parent / "shared" / "data" / "chest_xray"))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def films() -> Path:
    """Folder with NORMAL/ and PNEUMONIA/ holding 4 small films each."""
    return FILMS


@pytest.fixture(scope="session")
def film_paths() -> list[Path]:
    return sorted(FILMS.glob("*/*.jpeg"))


@pytest.fixture(scope="session")
def example_paths() -> list[Path]:
    """The bundled full-resolution children's example films shown in the app (graded, all right)."""
    return sorted(p for p in (ROOT / "examples").glob("*/*.jpeg") if not p.name.startswith("adult-"))


@pytest.fixture(scope="session")
def adult_example_paths() -> list[Path]:
    """The bundled adult example films, drawn from the adult test sets (examples/MANIFEST.tsv)."""
    return sorted((ROOT / "examples").glob("*/adult-*"))


@pytest.fixture(scope="session")
def predictor():
    """The shipped model in model/ (or PNEUMONIA_MODEL_DIR), loaded once per test session."""
    from pneumonia import Predictor

    return Predictor.load()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained, small model saved with valid metadata (fast to build and load)."""
    from pneumonia.model import ModelMetadata, build_model, save_model

    out = tmp_path_factory.mktemp("tiny_model")
    model = build_model(64, head_width=8, seed=1)
    # As every trained model does, it records a heatmap scale (any positive one for an untrained network).
    heatmap = {"scale": 1.0, "rule": "test fixture", "colormap": "blue-red", "films": 0}
    save_model(model, ModelMetadata(version="test", input_size=64, threshold=0.5, temperature=1.0, heatmap=heatmap), out)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The full dataset beside the repo; tests using it skip where it is absent (e.g. on a Space)."""
    if not (SHARED_DATA / "test").is_dir():
        pytest.skip(f"dataset not found at {SHARED_DATA} (set PNEUMONIA_DATA); CI provides it")
    return SHARED_DATA


@pytest.fixture
def siim_folder(films, tmp_path) -> Path:
    """A tiny ``adult_siim``-like folder: the 8 small films as 8 studies (4 NORMAL, 4 PNEUMONIA, each
    PNEUMONIA film with one or two opacity boxes), with a manifest in the real one's columns."""
    import csv
    import shutil

    root = tmp_path / "siim"
    rows = []
    for i, source in enumerate(sorted(films.glob("NORMAL/*.jpeg")) + sorted(films.glob("PNEUMONIA/*.jpeg"))):
        label = source.parent.name
        boxes = "-" if label == "NORMAL" else ("20 30 60 120" if i % 2 else "20 30 60 120;130 40 70 110")
        name = f"{label}/siim{i:03d}.jpg"
        (root / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(source, root / name)
        rows.append({"file": name, "label": label, "study": f"study{i}",
                     "study_class": "Negative for Pneumonia" if label == "NORMAL" else "Typical Appearance",
                     "opacity_boxes": str(0 if boxes == "-" else boxes.count(";") + 1),
                     "opacity_boxes_xywh": boxes, "sha256": "-"})
    with open(root / "MANIFEST.tsv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return root
