"""Patient ids and the patient-wise validation split."""

from pathlib import Path

import pytest

from pneumonia.data import Record, list_records, patient_id, split_by_patient


@pytest.mark.parametrize(
    "name, cls, expected",
    [("person123_bacteria_456.jpeg", "PNEUMONIA", "PNEUMONIA/person123"),
     ("person7_virus_12.jpeg", "PNEUMONIA", "PNEUMONIA/person7"),
     ("IM-0115-0001.jpeg", "NORMAL", "NORMAL/IM-0115"),
     ("NORMAL2-IM-0115-0001.jpeg", "NORMAL", "NORMAL/NORMAL2-IM-0115"),
     ("odd.png", "NORMAL", "NORMAL/odd")],
)
def test_patient_id(name, cls, expected):
    assert patient_id(name, cls) == expected


def test_split_keeps_patients_on_one_side_and_classes_on_both():
    records = [Record(Path(f"p{p}_{i}"), p % 2, f"c/{p}") for p in range(60) for i in range(1 + p % 4)]
    train, val = split_by_patient(records, 0.2, seed=3)
    assert {r.patient for r in train}.isdisjoint({r.patient for r in val})
    assert len(train) + len(val) == len(records)
    assert {r.label for r in val} == {0, 1}
    assert 0.1 < len(val) / len(records) < 0.3


def test_real_train_split_is_patient_disjoint(shared_data):
    records = list_records(shared_data / "train")
    train, val = split_by_patient(records, 0.15, seed=42)
    assert {r.patient for r in train}.isdisjoint({r.patient for r in val})
    assert len(records) == 5178


def test_list_records_reads_class_folders(films):
    records = list_records(films)
    assert [r.label for r in records] == [0] * 4 + [1] * 4
