"""Synthetic DICOM studies for the demo, the tests and the benchmarks (pydicom, no patient data)."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

_SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "OT": "1.2.840.10008.5.1.4.1.1.7",
}
PYDICOM_TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")


@dataclass(frozen=True)
class Instance:
    study: str
    series: str
    sop: str
    modality: str
    study_date: str  # YYYYMMDD
    data: bytes

    @property
    def path(self) -> str:
        return f"{self.study}/{self.series}/{self.sop}"


def make_instance(
    study: str,
    series: str,
    sop: str,
    modality: str = "CT",
    study_date: str = "20261120",
    patient_id: str = "PAT-0001",
    rows: int = 16,
    cols: int = 16,
    frames: int = 1,
    seed: int = 0,
    description: str = "synthetic",
) -> Instance:
    """One Part-10 instance with 16-bit monochrome pixel data (``frames`` > 1 makes it multi-frame)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = _SOP_CLASSES.get(modality, _SOP_CLASSES["OT"])
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.PatientID = patient_id
    ds.PatientName = "Synthetic^Patient"
    ds.StudyDescription = description
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    rng = np.random.default_rng(seed)
    shape = (frames, rows, cols) if frames > 1 else (rows, cols)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = rng.integers(0, 4096, size=shape, dtype=np.uint16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return Instance(study, series, sop, modality, study_date, buf.getvalue())


def make_study(
    modality: str,
    study_date: str,
    series: int = 1,
    per_series: int = 2,
    patient_id: str = "PAT-0001",
    seed: int = 0,
    deterministic: bool = False,
    **kwargs,
) -> list[Instance]:
    """A study of ``series`` x ``per_series`` instances. ``deterministic`` derives the UIDs from the
    arguments, so that seeding the same data twice gives byte-identical files."""
    key = f"{modality}/{study_date}/{patient_id}/{seed}"

    def uid(*parts: object) -> str:
        return generate_uid(entropy_srcs=[key, *map(str, parts)]) if deterministic else generate_uid()

    study = uid("study")
    out = []
    for s in range(series):
        series_uid = uid("series", s)
        for i in range(per_series):
            out.append(
                make_instance(
                    study,
                    series_uid,
                    uid("instance", s, i),
                    modality,
                    study_date,
                    patient_id,
                    seed=seed + s * 100 + i,
                    **kwargs,
                )
            )
    return out


def pydicom_test_file(name: str) -> bytes:
    with open(os.path.join(PYDICOM_TEST_FILES, name), "rb") as fh:
        return fh.read()
