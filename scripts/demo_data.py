"""Sample data for the nightly import: three days of synthetic studies in GCS, with known outcomes.

Day 1: a CT study (2 instances), an MR study (1) and a non-DICOM file       -> 3 imported, 1 failed
Day 2: a CT study (2), a US study (1) and an identical copy of a day-1 file  -> 4 imported, 0 failed
Day 3: an MR study (2), a CT study (1), a changed copy of the day-1 MR
       instance (same UIDs, other bytes) and an empty file                 -> 3 imported, 2 failed

UIDs are derived from fixed seeds, so seeding again writes byte-identical files: a re-run of the
demo re-imports them as identical duplicates, with the same counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.cloud import storage

from scripts.dicom_samples import Instance, make_instance, make_study

DAYS = ("2026-11-21", "2026-11-22", "2026-11-23")


@dataclass
class Seeded:
    expected: dict[str, tuple[int, int]] = field(default_factory=dict)  # day -> (success, failure)
    instances: list[Instance] = field(default_factory=list)  # distinct instances that end up in the store

    def matching(self, modality: str, date_from: str, date_to: str) -> list[Instance]:
        lo, hi = date_from.replace("-", ""), date_to.replace("-", "")
        return [i for i in self.instances if i.modality == modality and lo <= i.study_date <= hi]


def seed(client: storage.Client, bucket_name: str, prefix: str = "incoming") -> Seeded:
    bucket = client.bucket(bucket_name)
    if not bucket.exists():
        bucket = client.create_bucket(bucket_name)
    out = Seeded()

    def put(day: str, name: str, data: bytes) -> None:
        bucket.blob(f"{prefix}/{day}/{name}").upload_from_string(data, content_type="application/dicom")

    d1, d2, d3 = DAYS
    ct1 = make_study("CT", d1.replace("-", ""), per_series=2, patient_id="P-001", seed=1, deterministic=True)
    mr1 = make_study("MR", d1.replace("-", ""), per_series=1, patient_id="P-002", seed=2, deterministic=True)
    for i in ct1 + mr1:
        put(d1, f"{i.modality}/{i.sop}.dcm", i.data)
    put(d1, "notes.dcm", b"this is not a DICOM file")
    out.expected[d1] = (3, 1)

    ct2 = make_study("CT", d2.replace("-", ""), per_series=2, patient_id="P-003", seed=3, deterministic=True)
    us2 = make_study("US", d2.replace("-", ""), per_series=1, patient_id="P-004", seed=4, deterministic=True)
    for i in ct2 + us2:
        put(d2, f"{i.modality}/{i.sop}.dcm", i.data)
    put(d2, "resent/duplicate.dcm", ct1[0].data)
    out.expected[d2] = (4, 0)

    mr3 = make_study("MR", d3.replace("-", ""), per_series=2, patient_id="P-005", seed=5, deterministic=True)
    ct3 = make_study("CT", d3.replace("-", ""), per_series=1, patient_id="P-006", seed=6, deterministic=True)
    for i in mr3 + ct3:
        put(d3, f"{i.modality}/{i.sop}.dcm", i.data)
    changed = make_instance(mr1[0].study, mr1[0].series, mr1[0].sop, "MR", mr1[0].study_date, seed=77)
    put(d3, "resent/changed.dcm", changed.data)
    put(d3, "empty.dcm", b"")
    out.expected[d3] = (3, 2)

    out.instances = ct1 + mr1 + ct2 + us2 + mr3 + ct3
    return out
