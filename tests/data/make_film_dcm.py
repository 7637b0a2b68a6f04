"""Write ``tests/data/film.dcm``: a bundled example film in a DICOM file with made-up tags.

README's client example sends it (``handle_file("tests/data/film.dcm")``). Run from the repository
root: ``python tests/data/make_film_dcm.py``. ``tests/test_readme.py`` checks the file holds the
film's pixels.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

ROOT = Path(__file__).resolve().parent.parent.parent
SOURCE = ROOT / "examples" / "PNEUMONIA" / "person1251_bacteria_3208.jpeg"
TARGET = ROOT / "tests" / "data" / "film.dcm"
# Made up: no real patient, date or institution.
TAGS = {"PatientName": "Example^Film", "PatientID": "EXAMPLE-0001", "PatientAge": "004Y", "PatientSex": "O",
        "StudyDate": "20000101", "InstitutionName": "Example Hospital", "BodyPartExamined": "CHEST",
        "Modality": "DX"}


def main() -> None:
    pixels = np.asarray(Image.open(SOURCE).convert("L"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = uid.generate_uid(entropy_srcs=[SOURCE.name])  # the same file every run
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    for keyword, value in TAGS.items():
        setattr(ds, keyword, value)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(TARGET, enforce_file_format=True)
    print(f"{TARGET.relative_to(ROOT)}: {pixels.shape[1]} x {pixels.shape[0]}, {TARGET.stat().st_size} bytes")


if __name__ == "__main__":
    main()
