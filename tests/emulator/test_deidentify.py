"""dicomStores.deidentify on the local Healthcare API, on real DICOM (pydicom's bundled CT and MR files).

Through the discovery client, as a caller on Google would; read back through DICOMweb.
"""

from __future__ import annotations

import hashlib
import io
import os

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from googleapiclient.errors import HttpError
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from tests.helpers import healthcare, new_bucket, new_store, wait

pytestmark = pytest.mark.usefixtures("stack")
GONE_OR_EMPTY = ("PatientName", "PatientID", "PatientBirthDate")


def sample(name: str, study: str, series: str) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientBirthDate = "19700101"
    ds.StudyDescription = "Knee, left, Dr Who"
    return ds


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def source():
    """A store with one study: a CT series of two instances (with private tags) and an MR series of one."""
    store = new_store()
    study, ct_series, mr_series = generate_uid(), generate_uid(), generate_uid()
    ct2 = sample("CT_small.dcm", study, ct_series)
    ct2.InstanceNumber = 2
    datasets = [sample("CT_small.dcm", study, ct_series), ct2, sample("MR_small.dcm", study, mr_series)]
    url = f"{os.environ['HEALTHCARE_API_ENDPOINT']}/v1/{store}/dicomWeb/studies"
    for ds in datasets:
        resp = requests.post(url, data=dicom_bytes(ds), headers={"Content-Type": "application/dicom"}, timeout=30)
        assert resp.status_code == 200, resp.text
    return store, datasets


def deidentify(source_store: str, config: dict | None = None, **body) -> tuple[str, dict]:
    svc = healthcare()
    dest = new_store(svc)
    request = {"destinationStore": dest, **({"config": config} if config is not None else {}), **body}
    op = svc.projects().locations().datasets().dicomStores().deidentify(sourceStore=source_store, body=request)
    return dest, wait(op.execute(), svc)


def instances(store: str) -> list[pydicom.Dataset]:
    """Every instance of a store as stored, read back through DICOMweb with a third-party client."""
    client = DICOMwebClient(url=f"{os.environ['HEALTHCARE_API_ENDPOINT']}/v1/{store}/dicomWeb")
    out = []
    for study in client.search_for_studies():
        out += client.retrieve_study(study["0020000D"]["Value"][0], media_types=(("application/dicom", "*"),))
    return out


def pixels(datasets) -> set[str]:
    return {hashlib.sha256(ds.PixelData).hexdigest() + f"/{ds.get('InstanceNumber')}" for ds in datasets}


@pytest.mark.parametrize(
    "profile,gone,emptied,kept",
    [
        (
            "MINIMAL_KEEP_LIST_PROFILE",
            ("InstitutionName", "StudyDescription", "Manufacturer", "FrameOfReferenceUID", "OperatorsName"),
            GONE_OR_EMPTY + ("PatientSex", "StudyDate"),
            ("Modality", "Rows", "Columns", "SOPClassUID"),
        ),
        (
            "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
            ("InstitutionName", "StudyDescription", "OperatorsName"),
            GONE_OR_EMPTY + ("PatientSex", "StudyDate"),
            ("Modality", "Manufacturer", "Rows", "FrameOfReferenceUID"),
        ),
        ("KEEP_ALL_PROFILE", (), (), ("PatientName", "InstitutionName", "StudyDescription", "Manufacturer")),
    ],
)
def test_each_profile_removes_what_it_documents_and_keeps_the_pixels(source, profile, gone, emptied, kept):
    store, originals = source
    dest, op = deidentify(store, {"dicom": {"filterProfile": profile}})
    assert op["metadata"]["counter"] == {"success": "3"} and "error" not in op
    assert op["metadata"]["apiMethodName"].endswith("DicomService.DeidentifyDicomStore")
    result = instances(dest)
    assert len(result) == 3
    assert pixels(result) == pixels(originals), "pixel data must be unchanged"
    for ds in result:
        for keyword in gone:
            assert keyword not in ds, (profile, keyword)
        for keyword in emptied:
            assert keyword not in ds or ds[keyword].value in ("", None), (profile, keyword, ds.get(keyword))
        for keyword in kept:
            assert keyword in ds and ds[keyword].value not in ("", None), (profile, keyword)
        private = [e for e in ds if e.tag.is_private]
        assert bool(private) == (profile == "KEEP_ALL_PROFILE" and ds.Modality == "CT"), (profile, len(private))
    if profile == "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE":
        assert {ds.FrameOfReferenceUID for ds in result}.isdisjoint({ds.FrameOfReferenceUID for ds in originals})


def test_uids_are_replaced_consistently_and_anew_each_time(source):
    store, originals = source
    dest, _ = deidentify(store, {"dicom": {"filterProfile": "KEEP_ALL_PROFILE"}})
    first = instances(dest)
    assert len({ds.StudyInstanceUID for ds in first}) == 1
    ct = [ds for ds in first if ds.Modality == "CT"]
    assert len({ds.SeriesInstanceUID for ds in ct}) == 1 and len({ds.SOPInstanceUID for ds in ct}) == 2
    assert len({ds.SeriesInstanceUID for ds in first}) == 2
    old = {u for ds in originals for u in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)}
    new = {u for ds in first for u in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)}
    assert old.isdisjoint(new)
    assert all(ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID for ds in first)
    again = instances(deidentify(store, {"dicom": {"filterProfile": "KEEP_ALL_PROFILE"}})[0])
    assert {ds.StudyInstanceUID for ds in again}.isdisjoint({ds.StudyInstanceUID for ds in first})
    kept = instances(deidentify(store, {"dicom": {"filterProfile": "KEEP_ALL_PROFILE", "skipIdRedaction": True}})[0])
    assert {ds.SOPInstanceUID for ds in kept} == {ds.SOPInstanceUID for ds in originals}


def test_keep_and_remove_lists(source):
    store, _ = source
    kept = instances(deidentify(store, {"dicom": {"keepList": {"tags": ["Modality", "00280010", "PixelData"]}}})[0])
    for ds in kept:
        assert "PatientName" not in ds and "InstitutionName" not in ds and ds.Modality and ds.Rows
    removed = instances(deidentify(store, {"dicom": {"removeList": {"tags": ["PatientName", "00100020"]}}})[0])
    for ds in removed:
        assert "PatientName" not in ds and "PatientID" not in ds and ds.InstitutionName


def test_a_filter_file_chooses_the_cohort(source):
    store, originals = source
    bucket = new_bucket("deid")
    ct = originals[0]
    bucket.blob("f.txt").upload_from_string(f"/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}\n")
    dest, op = deidentify(
        store,
        {"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}},
        filterConfig={"resourcePathsGcsUri": f"gs://{bucket.name}/f.txt"},
    )
    assert op["metadata"]["counter"] == {"success": "2"}
    assert {ds.Modality for ds in instances(dest)} == {"CT"}


@pytest.mark.parametrize(
    "config,status,words",
    [
        ({"dicom": {"filterProfile": "DEIDENTIFY_TAG_CONTENTS"}}, 501, "not supported by the local stack"),
        ({"image": {"textRedactionMode": "REDACT_ALL_TEXT"}}, 501, "needs OCR"),
        ({"dicom": {"filterProfile": "KEEP_ALL_PROFILE", "keepList": {"tags": ["Modality"]}}}, 400, "only one of"),
        ({"dicom": {"removeList": {"tags": ["NotAKeyword"]}}}, 400, "neither a DICOM keyword"),
        ({"dicom": {"filterProfile": "EVERYTHING"}}, 400, "filterProfile"),
    ],
)
def test_refused_configs(source, config, status, words):
    with pytest.raises(HttpError) as err:
        deidentify(source[0], config)
    assert err.value.resp.status == status and words.encode() in err.value.content


def test_the_destination_store_must_exist(source):
    svc = healthcare()
    missing = new_store(svc).replace("/dicomStores/store", "/dicomStores/missing")
    request = {"destinationStore": missing, "config": {}}
    with pytest.raises(HttpError) as err:
        svc.projects().locations().datasets().dicomStores().deidentify(sourceStore=source[0], body=request).execute()
    assert err.value.resp.status == 404
