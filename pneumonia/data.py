"""Find the dataset's films, split them by patient, and load them as arrays.

Two populations, from three sources (``Record.source``), each with its own fixed test set:

- ``child``: Kermany et al. 2018 (paediatric, one hospital). The layout is ``<root>/<CLASS>/<file>`` with ``CLASS`` in ``NORMAL`` / ``PNEUMONIA``
(Kermany et al. 2018). File names carry the patient: ``person123_bacteria_456.jpeg`` is
pneumonia patient 123; ``IM-0115-0001.jpeg`` and ``NORMAL2-IM-0115-0001.jpeg`` are normal
patients ``0115`` and ``NORMAL2-0115``.
- ``adult``: NIH ChestX-ray14 films listed in ``adult_nih/MANIFEST.tsv`` (patient, age, view,
  label source, pneumonia box). Its fixed test set is every film of the patients with a
  radiologist's pneumonia box plus the normal films of a seeded fifth of the normal-only patients
  (:func:`split_adult_records`); nothing is ever trained, selected or calibrated on it.
- ``adult`` too: SIIM-FISABIO-RSNA films listed in ``adult_siim/MANIFEST.tsv`` (BIMCV, Spain, and
  MIDRC-RICORD, USA; radiologists' labels and opacity boxes; study ids, no patient ids). Its fixed
  test set is a seeded fifth of the studies (:func:`split_siim_records`), by study.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from pneumonia.preprocessing import read_image, resize_image

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
POPULATIONS = ("child", "adult")
SOURCES = ("kermany", "nih", "siim")  # the hospitals' data sets, in Record.source
ADULT_MANIFEST = "MANIFEST.tsv"
# The adult test set is fixed once for every model: a seed and a share of its own, never a flag.
ADULT_TEST_SEED = 2026
ADULT_TEST_NORMAL_FRACTION = 0.2
# The SIIM test split: a fifth of the studies, by a seed of its own that depends on nothing but the
# manifest (never a flag), so every model is scored on the same studies.
SIIM_TEST_SEED = 2027
SIIM_TEST_FRACTION = 0.2
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png", ".tif", ".tiff", ".bmp", ".webp", ".dcm", ".dicom", ".gif"}

_PERSON = re.compile(r"^(person\d+)_")
_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)-")


@dataclasses.dataclass(frozen=True)
class Record:
    """One labelled film.

    Attributes:
        path: the image file.
        label: class index, 0 NORMAL, 1 PNEUMONIA.
        patient: patient id, unique across classes and populations.
        population: ``"child"`` (Kermany) or ``"adult"`` (NIH, SIIM): which operating point reads it.
        verified: False for labels text-mined from reports and never checked by a radiologist.
        boxes: the radiologists' pneumonia / opacity boxes ``(x, y, w, h)`` in the file's pixels
            (empty when none was drawn).
        view: ``"PA"``, ``"AP"`` or ``""`` when not known.
        source: the data set (hospital group) the film comes from, one of :data:`SOURCES`.
    """

    path: Path
    label: int
    patient: str
    population: str = "child"
    verified: bool = True
    boxes: tuple[tuple[int, int, int, int], ...] = ()
    view: str = ""
    source: str = "kermany"


def patient_id(filename: str, class_name: str) -> str:
    """Return the patient a dataset file belongs to.

    Args:
        filename: base name such as ``person12_virus_34.jpeg`` or ``NORMAL2-IM-0115-0001.jpeg``.
        class_name: folder the file is in; keeps ids of the two classes apart.

    Returns:
        A string unique per patient, e.g. ``PNEUMONIA/person12`` or ``NORMAL/NORMAL2-IM-0115``.
        Files that match neither pattern are their own patient.
    """
    for pattern in (_PERSON, _NORMAL):
        match = pattern.match(filename)
        if match:
            return f"{class_name}/{match.group(1)}"
    return f"{class_name}/{Path(filename).stem}"


def list_records(root: str | Path) -> list[Record]:
    """List the labelled films under ``root/NORMAL`` and ``root/PNEUMONIA``, sorted by path.

    Raises:
        FileNotFoundError: neither class folder exists under ``root``.
    """
    root = Path(root)
    records = []
    for label, name in enumerate(CLASS_NAMES):
        folder = root / name
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                records.append(Record(path, label, patient_id(path.name, name)))
    if not records:
        raise FileNotFoundError(f"No NORMAL/ or PNEUMONIA/ images under {root}")
    return records


def list_adult_records(root: str | Path) -> list[Record]:
    """List the adult films of ``root/MANIFEST.tsv`` (NIH ChestX-ray14), sorted by path.

    Args:
        root: the ``adult_nih`` folder.

    Returns:
        Records with ``population="adult"``, patient ids ``adult/<NIH patient>``, ``verified``
        False for text-mined pneumonia labels, and the pneumonia box where a radiologist drew one.

    Raises:
        FileNotFoundError: no manifest under ``root``.
    """
    root = Path(root)
    records = [Record(path=root / row["file"], label=CLASS_NAMES.index(row["label"]), patient=f"adult/{row['patient']}",
                      population="adult", verified="unverified" not in row["label_source"],
                      boxes=parse_boxes(row["pneumonia_box_xywh"]), view=row["view"], source="nih")
               for row in read_manifest(root)]
    return sorted(records, key=lambda r: r.path)


def read_manifest(root: Path) -> list[dict[str, str]]:
    """The rows of ``root/MANIFEST.tsv`` (tab-separated, UTF-8), as dicts.

    Raises:
        FileNotFoundError: no manifest under ``root``.
    """
    manifest = root / ADULT_MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"No {ADULT_MANIFEST} under {root}")
    with open(manifest, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def parse_boxes(text: str) -> tuple[tuple[int, int, int, int], ...]:
    """Boxes from a manifest cell: ``"x y w h"`` groups separated by ``;``, ``"-"`` for none.

    Returns:
        ``((x, y, w, h), ...)`` rounded to whole pixels; boxes of no area are left out.
    """
    if text.strip() in ("", "-"):
        return ()
    boxes = []
    for group in text.split(";"):
        x, y, w, h = (int(round(float(v))) for v in group.split())
        if w > 0 and h > 0:
            boxes.append((x, y, w, h))
    return tuple(boxes)


def list_siim_records(root: str | Path) -> list[Record]:
    """List the SIIM-FISABIO-RSNA films of ``root/MANIFEST.tsv``, sorted by path.

    Args:
        root: the ``adult_siim`` folder.

    Returns:
        Records with ``population="adult"``, ``source="siim"``, patient ids ``siim/<study>``
        (there are no patient ids; a study is the unit kept on one side of every split), every
        label verified (radiologists' reads) and each PNEUMONIA film's opacity boxes.

    Raises:
        FileNotFoundError: no manifest under ``root``.
    """
    root = Path(root)
    records = [Record(path=root / row["file"], label=CLASS_NAMES.index(row["label"]), patient=f"siim/{row['study']}",
                      population="adult", boxes=parse_boxes(row["opacity_boxes_xywh"]), source="siim")
               for row in read_manifest(root)]
    return sorted(records, key=lambda r: r.path)


def split_siim_records(records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """Set the SIIM test split apart: a seeded :data:`SIIM_TEST_FRACTION` of the studies of each class.

    It depends on the manifest alone (:data:`SIIM_TEST_SEED`), so every model is scored on the
    same studies.

    Returns:
        ``(development, test)``; no study is on both sides.
    """
    return split_by_patient(records, SIIM_TEST_FRACTION, SIIM_TEST_SEED)


def split_adult_records(records: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """Set the adult test set apart, by patient.

    The test set is every patient with a radiologist's pneumonia box (their boxed films are the
    test positives; their other films, text-mined, are used nowhere) and a seeded
    :data:`ADULT_TEST_NORMAL_FRACTION` of the films of the patients who have only normal films.
    It depends on the manifest alone, so every model is scored on the same films.

    Args:
        records: from :func:`list_adult_records`.

    Returns:
        ``(development, test)``: the records training, validation and calibration may use, and
        the test records; no patient is on both sides.
    """
    boxed = {r.patient for r in records if r.boxes}
    labels_of: dict[str, set[int]] = {}
    for r in records:
        labels_of.setdefault(r.patient, set()).add(r.label)
    normal_only = [r for r in records if r.patient not in boxed and labels_of[r.patient] == {0}]
    _, held_out = split_by_patient(normal_only, ADULT_TEST_NORMAL_FRACTION, ADULT_TEST_SEED)
    test_patients = boxed | {r.patient for r in held_out}
    test = [r for r in records if (r.patient in boxed and r.boxes) or
            (r.patient in test_patients and r.patient not in boxed)]
    development = [r for r in records if r.patient not in test_patients]
    return development, test


def split_by_patient(records: Sequence[Record], val_fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Split records so that every patient is entirely on one side.

    Patients are shuffled with ``seed`` within each class and taken into validation until it holds
    ``val_fraction`` of that class's films, which keeps the class ratio of both sides close to the
    whole.

    Args:
        records: the labelled films.
        val_fraction: share of films for validation, in ``(0, 1)``.
        seed: shuffling seed.


    Returns:
        ``(train_records, val_records)``, both in the order of ``records``.
    """
    rng = np.random.default_rng(seed)
    val_patients: set[str] = set()
    for label in range(len(CLASS_NAMES)):
        by_patient: dict[str, int] = {}
        for r in records:
            if r.label == label:
                by_patient[r.patient] = by_patient.get(r.patient, 0) + 1
        patients = sorted(by_patient)
        rng.shuffle(patients)
        target = val_fraction * sum(by_patient.values())
        taken = 0
        for p in patients:
            if taken >= target:
                break
            val_patients.add(p)
            taken += by_patient[p]
    train = [r for r in records if r.patient not in val_patients]
    val = [r for r in records if r.patient in val_patients]
    return train, val


def load_images(paths: Sequence[Path], size: int, workers: int = 2) -> np.ndarray:
    """Decode and resize films with the inference preprocessing, in a thread pool.

    Args:
        paths: image files.
        size: output side.
        workers: decoding threads (Pillow and OpenCV release the GIL).

    Returns:
        ``uint8`` array ``(N, size, size)``: the ``[0, 1]`` floats of
        :func:`pneumonia.preprocessing.resize_image` times 255, rounded (4x less memory; the
        training pipeline divides by 255 again).
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda path: resize_to_uint8(read_image(path), size), paths))
    return np.stack(images) if images else np.zeros((0, size, size), np.uint8)


def resize_to_uint8(gray: np.ndarray, size: int) -> np.ndarray:
    """Resize a ``[0, 1]`` film with :func:`pneumonia.preprocessing.resize_image` and store it as
    ``uint8 (size, size)``: the values times 255, rounded (the form training films are kept in)."""
    return np.round(resize_image(gray, size) * 255.0).astype(np.uint8)


def iterate_batches(images_uint8: np.ndarray, batch_size: int = 64):
    """Model-ready batches of decoded films.

    Args:
        images_uint8: ``uint8 (N, S, S)`` films from :func:`load_images`.
        batch_size: films per batch.

    Yields:
        ``float32 (B, S, S, 1)`` in ``[0, 1]`` (the intensity convention), in order.
    """
    for start in range(0, len(images_uint8), batch_size):
        yield images_uint8[start:start + batch_size, ..., None].astype(np.float32) / 255.0
