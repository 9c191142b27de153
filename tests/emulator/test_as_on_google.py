"""Where the local Healthcare API must answer as Google does, met with the calls Google's own samples make.

Datasets and stores through the discovery client; DICOMweb read-back through plain HTTP, with the paths and
``Accept`` headers of Google's DICOMweb samples and conformance statement. Real DICOM: pydicom's bundled files.
"""

from __future__ import annotations

import copy
import io
import os
from email.parser import BytesParser
from email.policy import HTTP

import numpy as np
import pydicom
import pytest
import requests
from googleapiclient.errors import HttpError
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from tests.helpers import LOCATION, PROJECT, healthcare, new_store, unique, wait

pytestmark = pytest.mark.usefixtures("stack")


def web(store: str) -> str:
    return f"{os.environ['HEALTHCARE_API_ENDPOINT']}/v1/{store}/dicomWeb"


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def bundled(name: str, study: str, series: str) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def stow(store: str, *datasets: pydicom.Dataset) -> requests.Response:
    boundary = "sample-boundary"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + dicom_bytes(ds) + b"\r\n"
        for ds in datasets
    )
    return requests.post(
        f"{web(store)}/studies",
        data=body + f"--{boundary}--\r\n".encode(),
        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'},
        timeout=30,
    )


def parts(resp: requests.Response) -> list[tuple[str, bytes]]:
    """Each part's transfer syntax and bytes."""
    header = f"Content-Type: {resp.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(header + resp.content)
    return [(p.get_param("transfer-syntax"), p.get_payload(decode=True)) for p in message.iter_parts()]


@pytest.fixture(scope="module")
def study():
    """One study, two series: CT (Explicit VR LE) and MR (two instances, one stored as RLE Lossless)."""
    store = new_store()
    study_uid, ct_series, mr_series = generate_uid(), generate_uid(), generate_uid()
    ct = bundled("CT_small.dcm", study_uid, ct_series)
    mr_rle = bundled("MR_small_RLE.dcm", study_uid, mr_series)
    mr_implicit = bundled("MR_small_implicit.dcm", study_uid, mr_series)
    resp = stow(store, ct, mr_rle, mr_implicit)
    assert resp.status_code == 200, resp.text
    return {"store": store, "resp": resp.json(), "ct": ct, "mr": [mr_rle, mr_implicit]}


# --- datasets ------------------------------------------------------------------------------------


def test_dataset_creation_is_an_operation_to_wait_for():
    svc = healthcare()
    datasets = svc.projects().locations().datasets()
    parent = f"projects/{PROJECT}/locations/{LOCATION}"
    ds_id = unique("ds")
    op = datasets.create(parent=parent, datasetId=ds_id, body={"timeZone": "Europe/Paris"}).execute()
    assert not op.get("done"), "Google's datasets.create takes a moment: its operation is not done at once"
    with pytest.raises(HttpError) as early:
        datasets.dicomStores().create(parent=f"{parent}/datasets/{ds_id}", dicomStoreId="s", body={}).execute()
    assert early.value.resp.status == 403
    done = wait(op, svc)
    assert done["response"]["name"] == f"{parent}/datasets/{ds_id}"
    assert done["response"]["timeZone"] == "Europe/Paris"
    assert done["metadata"]["apiMethodName"].endswith("DatasetService.CreateDataset")
    assert datasets.dicomStores().create(parent=f"{parent}/datasets/{ds_id}", dicomStoreId="s", body={}).execute()
    with pytest.raises(HttpError) as again:
        datasets.create(parent=parent, datasetId=ds_id, body={}).execute()
    assert again.value.resp.status == 409


def test_dataset_patch_updates_the_time_zone_only():
    svc = healthcare()
    datasets = svc.projects().locations().datasets()
    name = new_store(svc).split("/dicomStores/")[0]
    patched = datasets.patch(name=name, updateMask="timeZone", body={"timeZone": "America/Chicago"}).execute()
    assert patched == {"name": name, "timeZone": "America/Chicago"}
    assert datasets.get(name=name).execute()["timeZone"] == "America/Chicago"
    with pytest.raises(HttpError) as bad:
        datasets.patch(name=name, updateMask="name", body={"name": "x"}).execute()
    assert bad.value.resp.status == 400 and b"updateMask" in bad.value.content


# --- DICOMweb read-back ---------------------------------------------------------------------------


def test_a_search_that_matches_nothing_answers_204(study):
    url = f"{web(study['store'])}/studies"
    resp = requests.get(url, params={"PatientID": "nobody"}, headers={"Accept": "application/dicom+json"}, timeout=30)
    assert resp.status_code == 204 and resp.content == b""
    hits = requests.get(url, headers={"Accept": "application/dicom+json"}, timeout=30)
    assert hits.status_code == 200 and len(hits.json()) == 1


def test_stow_answers_with_the_study_retrieve_url(study):
    url = study["resp"]["00081190"]["Value"][0]
    assert url.endswith(f"/dicomWeb/studies/{study['ct'].StudyInstanceUID}")
    assert len(study["resp"]["00081199"]["Value"]) == 3


def test_retrieve_a_study_and_a_series_as_multipart(study):
    store, ct, mr = study["store"], study["ct"], study["mr"]
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    whole = requests.get(f"{web(store)}/studies/{ct.StudyInstanceUID}", headers=accept, timeout=30)
    assert whole.status_code == 200 and whole.headers["Content-Type"].startswith("multipart/related")
    got = {pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID for _, data in parts(whole)}
    assert got == {ct.SOPInstanceUID, mr[0].SOPInstanceUID, mr[1].SOPInstanceUID}
    series = requests.get(
        f"{web(store)}/studies/{ct.StudyInstanceUID}/series/{mr[0].SeriesInstanceUID}", headers=accept, timeout=30
    )
    assert sorted(pydicom.dcmread(io.BytesIO(d)).SOPInstanceUID for _, d in parts(series)) == sorted(
        m.SOPInstanceUID for m in mr
    )
    missing = requests.get(f"{web(store)}/studies/{generate_uid()}", headers=accept, timeout=30)
    assert missing.status_code == 404


def test_instances_come_as_explicit_vr_little_endian_unless_asked_otherwise(study):
    store, rle = study["store"], study["mr"][0]
    path = f"{web(store)}/studies/{rle.StudyInstanceUID}/series/{rle.SeriesInstanceUID}/instances/{rle.SOPInstanceUID}"
    default = requests.get(path, headers={"Accept": 'multipart/related; type="application/dicom"'}, timeout=30)
    [(syntax, data)] = parts(default)
    assert syntax == ExplicitVRLittleEndian
    got = pydicom.dcmread(io.BytesIO(data))
    assert got.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(got.pixel_array, rle.pixel_array), "transcoding must not change a pixel"
    assert "PatientName" in got and got.PatientName == rle.PatientName
    stored = requests.get(path, headers={"Accept": "application/dicom; transfer-syntax=*"}, timeout=30)
    assert pydicom.dcmread(io.BytesIO(stored.content)).file_meta.TransferSyntaxUID == RLELossless
    implicit = study["mr"][1]
    single = requests.get(
        path.replace(rle.SOPInstanceUID, implicit.SOPInstanceUID), headers={"Accept": "application/dicom"}, timeout=30
    )
    assert single.headers["Content-Type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    assert pydicom.dcmread(io.BytesIO(single.content)).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian


@pytest.mark.parametrize("accept,fmt", [("image/jpeg", "JPEG"), ("image/png", "PNG"), (None, "JPEG")])
def test_rendered_instance(study, accept, fmt):
    ct = study["ct"]
    path = f"{web(study['store'])}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
    headers = {"Accept": accept} if accept else {}
    resp = requests.get(f"{path}/instances/{ct.SOPInstanceUID}/rendered", headers=headers, timeout=30)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == f"image/{fmt.lower()}"
    image = Image.open(io.BytesIO(resp.content))
    assert image.format == fmt and image.size == (ct.Columns, ct.Rows)


def test_rendered_frames_of_a_multiframe_instance():
    store = new_store()
    ds = bundled("CT_small.dcm", generate_uid(), generate_uid())
    two = copy.deepcopy(ds)
    two.NumberOfFrames = 2
    inverted = (ds.pixel_array.max() - ds.pixel_array).astype(ds.pixel_array.dtype)
    two.PixelData = ds.pixel_array.tobytes() + inverted.tobytes()
    assert stow(store, two).status_code == 200
    path = f"{web(store)}/studies/{two.StudyInstanceUID}/series/{two.SeriesInstanceUID}/instances/{two.SOPInstanceUID}"
    first = requests.get(f"{path}/frames/1/rendered", headers={"Accept": "image/png"}, timeout=30)
    second = requests.get(f"{path}/frames/2/rendered", headers={"Accept": "image/png"}, timeout=30)
    assert first.status_code == second.status_code == 200
    a = np.asarray(Image.open(io.BytesIO(first.content)), dtype=int)
    b = np.asarray(Image.open(io.BytesIO(second.content)), dtype=int)
    assert a.shape == (two.Rows, two.Columns) and np.allclose(a + b, 255, atol=1), "frame 2 is frame 1 inverted"
    assert requests.get(f"{path}/frames/3/rendered", timeout=30).status_code == 400
