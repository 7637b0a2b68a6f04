"""Draw the four bundled adult examples from the adult test sets: seeded, whatever the model says.

    PYTHONPATH=. python docs/pick_adult_examples.py     # needs ../shared/data; writes examples/

The rule (docs/experiments.md, session 7): with ``numpy.random.default_rng(2026)``, one film drawn
uniformly from each of four groups, in this order: the SIIM test split's NORMAL films, its PNEUMONIA
films, the NIH adult test set's held-out normals, and its radiologist-boxed pneumonia films. The
films are copied byte for byte into ``examples/<class>/adult-<source>-<file>`` and described in
``examples/MANIFEST.tsv`` (file, truth, grade, source), which the page shows beside each example.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np

from pneumonia.data import (CLASS_NAMES, list_adult_records, list_siim_records, split_adult_records,
                            split_siim_records)

SEED = 2026
ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    rng = np.random.default_rng(SEED)
    siim_test = split_siim_records(list_siim_records(DATA / "adult_siim"))[1]
    nih_test = split_adult_records(list_adult_records(DATA / "adult_nih"))[1]
    with open(DATA / "adult_siim" / "MANIFEST.tsv", newline="", encoding="utf-8") as handle:
        study_class = {row["file"]: row["study_class"] for row in csv.DictReader(handle, delimiter="\t")}
    groups = [
        ("siim", [r for r in siim_test if r.label == 0]),
        ("siim", [r for r in siim_test if r.label == 1]),
        ("nih", [r for r in nih_test if r.label == 0]),
        ("nih", [r for r in nih_test if r.label == 1 and r.boxes]),
    ]
    rows = []
    for source, records in groups:
        record = records[int(rng.integers(len(records)))]
        truth = CLASS_NAMES[record.label]
        name = f"{truth}/adult-{source}-{record.path.name}"
        shutil.copyfile(record.path, ROOT / "examples" / name)
        if source == "siim":
            relative = f"{record.path.parent.name}/{record.path.name}"
            grade = f"radiologists: {study_class[relative]}" + (f", {len(record.boxes)} opacity box(es)"
                                                                   if record.boxes else "")
            where = "SIIM-FISABIO-RSNA (BIMCV, Spain, or MIDRC-RICORD, USA), adult"
        else:
            grade = ("radiologist's pneumonia box (NIH BBox list)" if record.boxes
                     else "report: No Finding (text-mined, not re-read)")
            where = f"NIH Clinical Center (USA), adult, {record.view or 'view unknown'}"
        rows.append({"file": name, "truth": truth, "grade": grade, "source": where})
        print(name, "|", grade, "|", where)
    with open(ROOT / "examples" / "MANIFEST.tsv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "truth", "grade", "source"], delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
