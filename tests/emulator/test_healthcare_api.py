"""The local Healthcare API over HTTP only: googleapiclient (bundled discovery), dicomweb-client, requests."""

from __future__ import annotations

import io
import json
import os
import time

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from googleapiclient.errors import HttpError
from PIL import Image

from scripts.dicom_samples import make_instance, make_study, pydicom_test_file
from tests.helpers import (
    LOCATION,
    PROJECT,
    admin,
    export,
    gcs,
    healthcare,
    import_,
    logs,
    new_bucket,
    new_store,
    submit_import,
    unique,
    upload,
    wait,
)

pytestmark = pytest.mark.usefixtures("stack")


def _error(exc: HttpError) -> dict:
    return json.loads(exc.content)["error"]


# --- routes and errors --------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_dataset_and_store_lifecycle(version):
    svc = healthcare(version)
    parent = f"projects/{PROJECT}/locations/{LOCATION}"
    ds_id = unique("life")
    op = wait(svc.projects().locations().datasets().create(parent=parent, datasetId=ds_id, body={}).execute(), svc)
    assert op["done"] and op["response"]["name"] == f"{parent}/datasets/{ds_id}"
    datasets = svc.projects().locations().datasets()
    assert datasets.get(name=f"{parent}/datasets/{ds_id}").execute()["name"].endswith(ds_id)
    assert any(d["name"].endswith(ds_id) for d in datasets.list(parent=parent).execute()["datasets"])
    stores = datasets.dicomStores()
    store = stores.create(
        parent=f"{parent}/datasets/{ds_id}", dicomStoreId="s", body={"labels": {"env": "test"}}
    ).execute()
    assert stores.get(name=store["name"]).execute()["labels"] == {"env": "test"}
    listed = stores.list(parent=f"{parent}/datasets/{ds_id}", filter="labels.env=test").execute()
    assert [s["name"] for s in listed["dicomStores"]] == [store["name"]]
    patched = stores.patch(name=store["name"], updateMask="labels", body={"labels": {"env": "prod"}}).execute()
    assert patched["labels"] == {"env": "prod"}
    metrics = stores.getDICOMStoreMetrics(name=store["name"]).execute()
    assert metrics["name"] == store["name"] and "instanceCount" not in metrics  # zero is omitted (proto3 JSON)
    stores.delete(name=store["name"]).execute()
    with pytest.raises(HttpError) as err:
        stores.get(name=store["name"]).execute()
    assert err.value.resp.status == 404
    datasets.delete(name=f"{parent}/datasets/{ds_id}").execute()


def test_error_shapes():
    svc = healthcare()
    parent = f"projects/{PROJECT}/locations/{LOCATION}"
    with pytest.raises(HttpError) as err:  # missing dataset: 403, as Google answers
        svc.projects().locations().datasets().dicomStores().create(
            parent=f"{parent}/datasets/nope", dicomStoreId="s", body={}
        ).execute()
    assert err.value.resp.status == 403 and _error(err.value)["status"] == "PERMISSION_DENIED"
    store = new_store(svc)
    with pytest.raises(HttpError) as err:  # create of an existing resource
        svc.projects().locations().datasets().dicomStores().create(
            parent=store.rsplit("/dicomStores/", 1)[0], dicomStoreId="store", body={}
        ).execute()
    assert err.value.resp.status == 409 and _error(err.value)["status"] == "ALREADY_EXISTS"
    with pytest.raises(HttpError) as err:  # unknown request field, named
        svc.projects().locations().datasets().dicomStores().import_(
            name=store, body={"gcsSource": {"uri": "gs://b/x.dcm"}, "overwrite": True}
        ).execute()
    e = _error(err.value)
    assert err.value.resp.status == 400 and e["status"] == "INVALID_ARGUMENT" and '"overwrite"' in e["message"]
    assert e["details"][0]["@type"] == "type.googleapis.com/google.rpc.BadRequest"


def test_percent_encoded_colon_and_standard_params():
    store = new_store()
    base = os.environ["HEALTHCARE_API_ENDPOINT"]
    resp = requests.get(
        f"{base}/v1/{store}%3AgetDICOMStoreMetrics",
        params={"alt": "json", "prettyPrint": "false", "$.xgafv": "2"},
        timeout=30,
    )
    assert resp.status_code == 200 and resp.json()["name"] == store


# --- import ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["gs://b/a/**/x.dcm", "gs://b/**/*.dcm", "gs://b*/x.dcm", "s3://b/x", "gs://b/a/**b/**"]
)
def test_import_bad_pattern_is_400_before_any_operation(bad):
    svc = healthcare()
    store = new_store(svc)
    dataset = store.split("/dicomStores/")[0]
    with pytest.raises(HttpError) as err:
        svc.projects().locations().datasets().dicomStores().import_(
            name=store, body={"gcsSource": {"uri": bad}}
        ).execute()
    assert err.value.resp.status == 400 and "gcsSource.uri" in _error(err.value)["message"]
    ops = (
        svc.projects()
        .locations()
        .datasets()
        .operations()
        .list(name=dataset, filter='metadata.apiMethodName="ImportDicomData"')
        .execute()
    )
    assert ops.get("operations", []) == []


def test_import_wildcards_duplicates_and_failures():
    bucket = new_bucket()
    study = make_study("CT", "20261120", series=1, per_series=3)
    for i, inst in enumerate(study):
        upload(bucket, f"day/{'sub/' if i == 2 else ''}img{i}.dcm", inst.data)
    upload(bucket, "day/readme.txt", b"not dicom")
    upload(bucket, "day/empty.dcm", b"")
    upload(bucket, "day/imgX.dcm", study[0].data)  # identical duplicate
    changed = make_instance(study[1].study, study[1].series, study[1].sop, seed=99)
    upload(bucket, "day/sub/changed.dcm", changed.data)  # same UIDs, different bytes

    store = new_store()
    op = import_(store, f"gs://{bucket.name}/day/img?.dcm")  # one character, not across '/': img0, img1, imgX
    assert op["metadata"]["counter"] == {"success": "3"} and "error" not in op
    op = import_(store, f"gs://{bucket.name}/day/*.dcm")  # * stays in one folder: img0, img1, imgX, empty
    assert op["metadata"]["counter"] == {"success": "3", "failure": "1"}
    op = import_(store, f"gs://{bucket.name}/day/**")
    assert op["metadata"]["counter"] == {"success": "4", "failure": "3"}
    assert op["error"]["code"] == 3 and "metadata.logsUrl" in op["error"]["message"]
    entries = {e["source"].rsplit("/", 1)[1]: e["error"] for e in logs(op)}
    assert entries["changed.dcm"]["code"] == 6 and "checksum mismatch" in entries["changed.dcm"]["message"]
    assert entries["empty.dcm"]["message"] == "empty DICOM instance found"
    assert entries["readme.txt"]["code"] == 3
    assert all(isinstance(v, str) for v in op["metadata"]["counter"].values())
    metrics = healthcare().projects().locations().datasets().dicomStores().getDICOMStoreMetrics(name=store).execute()
    assert metrics["instanceCount"] == "3" and metrics["studyCount"] == "1"


def test_import_suffix_after_double_star_and_empty_match():
    bucket = new_bucket()
    inst = make_instance("1.2.3", "1.2.3.4", "1.2.3.4.5")
    upload(bucket, "a/b/c/one.dcm", inst.data)
    upload(bucket, "a/b/two.DCM", b"x")
    store = new_store()
    op = import_(store, f"gs://{bucket.name}/a/**.dcm")
    assert op["metadata"]["counter"] == {"success": "1"}
    op = import_(store, f"gs://{bucket.name}/nothing/**")
    assert op["error"]["code"] == 5 and "no objects matched" in op["error"]["message"]


def test_import_pydicom_bundled_files():
    bucket = new_bucket()
    names = ["CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm", "rtplan.dcm"]
    for n in names:
        upload(bucket, f"p/{n}", pydicom_test_file(n))
    store = new_store()
    op = import_(store, f"gs://{bucket.name}/p/*")
    assert op["metadata"]["counter"] == {"success": str(len(names))}


# --- export ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded_store():
    """A store with pydicom's CT (single frame), rtdose (multi-frame), rtplan (no pixels) and JPEG2000."""
    bucket = new_bucket("src")
    for n in ["CT_small.dcm", "rtdose.dcm", "rtplan.dcm", "JPEG2000.dcm"]:
        upload(bucket, f"x/{n}", pydicom_test_file(n))
    store = new_store()
    assert import_(store, f"gs://{bucket.name}/x/*")["metadata"]["counter"] == {"success": "4"}
    uids = {}
    for n in ["CT_small.dcm", "rtdose.dcm", "rtplan.dcm", "JPEG2000.dcm"]:
        ds = pydicom.dcmread(io.BytesIO(pydicom_test_file(n)), stop_before_pixels=True)
        uids[n] = f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}"
    return store, uids


def _objects(bucket) -> dict[str, bytes]:
    return {b.name: b.download_as_bytes() for b in gcs().list_blobs(bucket.name)}


def test_export_dicom_round_trips_byte_identical(loaded_store):
    store, uids = loaded_store
    for mime in (None, "application/dicom; transfer-syntax=*"):
        out = new_bucket("out")
        body = {"gcsDestination": {"uriPrefix": f"gs://{out.name}/e"}}
        if mime:
            body["gcsDestination"]["mimeType"] = mime
        op = export(store, body)
        assert op["metadata"]["counter"] == {"success": "4"}
        objs = _objects(out)
        assert objs[f"e/{uids['CT_small.dcm']}.dcm"] == pydicom_test_file("CT_small.dcm")
        assert objs[f"e/{uids['rtdose.dcm']}.dcm"] == pydicom_test_file("rtdose.dcm")  # whole multi-frame instance
        assert len(objs) == 4


@pytest.mark.parametrize("mime", ["application/dicom; transfer-syntax=1.2.840.10008.1.2.1", "application/dicom"])
def test_export_transcodes_to_explicit_vr_little_endian(loaded_store, mime):
    """Bare application/dicom is read as the conformance statement (and the local DICOMweb) reads it."""
    store, uids = loaded_store
    out = new_bucket("out")
    op = export(store, {"gcsDestination": {"uriPrefix": f"gs://{out.name}/t", "mimeType": mime}})
    assert op["metadata"]["counter"] == {"success": "4"}
    ds = pydicom.dcmread(io.BytesIO(_objects(out)[f"t/{uids['JPEG2000.dcm']}.dcm"]))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.pixel_array.shape == pydicom.dcmread(io.BytesIO(pydicom_test_file("JPEG2000.dcm"))).pixel_array.shape


@pytest.mark.parametrize(
    "mime,ext,fmt",
    [("image/png", ".png", "PNG"), ("image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50", ".jpg", "JPEG")],
)
def test_export_images_per_frame_and_no_pixel_failure(loaded_store, mime, ext, fmt):
    store, uids = loaded_store
    out = new_bucket("img")
    op = export(store, {"gcsDestination": {"uriPrefix": f"gs://{out.name}/r/", "mimeType": mime}})
    assert op["metadata"]["counter"] == {"success": "3", "failure": "1"} and op["error"]["code"] == 3
    assert [e["resourceName"].endswith(uids["rtplan.dcm"].split("/")[-1]) for e in logs(op)] == [True]
    objs = _objects(out)
    assert Image.open(io.BytesIO(objs[f"r/{uids['CT_small.dcm']}{ext}"])).format == fmt
    frames = [n for n in objs if n.startswith(f"r/{uids['rtdose.dcm']}/")]
    assert sorted(frames, key=lambda n: int(n.rsplit("/", 1)[1].split(".")[0])) == [
        f"r/{uids['rtdose.dcm']}/{i}{ext}" for i in range(1, 16)
    ]


def test_export_raw_pixel_data_has_no_extension(loaded_store):
    store, uids = loaded_store
    out = new_bucket("raw")
    op = export(
        store,
        {
            "gcsDestination": {
                "uriPrefix": f"gs://{out.name}/raw",
                "mimeType": "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
            }
        },
    )
    assert op["metadata"]["counter"]["success"] == "3"
    objs = _objects(out)
    ct = pydicom.dcmread(io.BytesIO(pydicom_test_file("CT_small.dcm")))
    assert objs[f"raw/{uids['CT_small.dcm']}"] == ct.PixelData
    assert f"raw/{uids['rtdose.dcm']}/1" in objs


@pytest.mark.parametrize("mime", ["image/gif", "application/dicom; transfer-syntax=1.2.3", "image/png; q=1"])
def test_export_unknown_mime_is_400_naming_it(loaded_store, mime):
    store, _ = loaded_store
    with pytest.raises(HttpError) as err:
        healthcare().projects().locations().datasets().dicomStores().export(
            name=store, body={"gcsDestination": {"uriPrefix": "gs://bucket-x/p", "mimeType": mime}}
        ).execute()
    assert err.value.resp.status == 400 and mime in _error(err.value)["message"]


def test_filtered_export(loaded_store):
    store, uids = loaded_store
    out = new_bucket("flt")
    ct_study, ct_series, ct_sop = uids["CT_small.dcm"].split("/")
    dose_study = uids["rtdose.dcm"].split("/")[0]
    plan_study, plan_series, plan_sop = uids["rtplan.dcm"].split("/")
    text = (
        f"/studies/{ct_study}/series/{ct_series}\r\n\r\n/studies/{dose_study}\n"
        f"/studies/{plan_study}/series/{plan_series}/instances/{plan_sop}\n\n"
    )
    out.blob("filter.txt").upload_from_string(text)
    op = export(
        store,
        {
            "gcsDestination": {"uriPrefix": f"gs://{out.name}/f"},
            "filterConfig": {"resourcePathsGcsUri": f"gs://{out.name}/filter.txt"},
        },
    )
    assert op["metadata"]["counter"] == {"success": "3"}
    assert sorted(n for n in _objects(out) if n.startswith("f/")) == sorted(
        f"f/{uids[n]}.dcm" for n in ("CT_small.dcm", "rtdose.dcm", "rtplan.dcm")
    )


def test_filter_malformed_line_fails_before_writing(loaded_store):
    store, uids = loaded_store
    out = new_bucket("bad")
    out.blob("filter.txt").upload_from_string(f"/studies/{uids['CT_small.dcm'].split('/')[0]}\n/series/1.2.3\n")
    op = export(
        store,
        {
            "gcsDestination": {"uriPrefix": f"gs://{out.name}/f"},
            "filterConfig": {"resourcePathsGcsUri": f"gs://{out.name}/filter.txt"},
        },
    )
    assert op["error"]["code"] == 3 and "line 2" in op["error"]["message"]
    assert [b.name for b in gcs().list_blobs(out.name)] == ["filter.txt"]
    op = export(
        store,
        {
            "gcsDestination": {"uriPrefix": f"gs://{out.name}/f"},
            "filterConfig": {"resourcePathsGcsUri": f"gs://{out.name}/missing.txt"},
        },
    )
    assert op["error"]["code"] == 5


def test_export_to_bigquery_flattened_and_write_disposition(loaded_store):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    store, uids = loaded_store
    bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials())
    dataset = unique("hc").replace("-", "_")
    bq.create_dataset(dataset)
    table = f"bq://{PROJECT}.{dataset}.meta"
    body = {"bigqueryDestination": {"tableUri": table, "writeDisposition": "WRITE_EMPTY"}}
    op = export(store, body)
    assert op["metadata"]["counter"] == {"success": "4"}, op
    t = bq.get_table(f"{PROJECT}.{dataset}.meta")
    fields = {f.name: f for f in t.schema}
    assert fields["StudyDate"].field_type == "DATE" and fields["PatientName"].field_type == "RECORD"
    assert fields["Rows"].field_type == "INTEGER" and fields["StudyInstanceUID"].field_type == "STRING"
    rows = list(bq.query(f"SELECT SOPInstanceUID FROM `{PROJECT}.{dataset}.meta` ORDER BY 1").result())
    assert sorted(r[0] for r in rows) == sorted(u.split("/")[2] for u in uids.values())
    op = export(store, body)  # WRITE_EMPTY on a non-empty table fails
    assert op["error"]["code"] == 9 and "WRITE_EMPTY" in op["error"]["message"]
    op = export(store, {"bigqueryDestination": {"tableUri": table, "writeDisposition": "WRITE_APPEND"}})
    assert "error" not in op and bq.get_table(f"{PROJECT}.{dataset}.meta").num_rows == 8
    op = export(store, {"bigqueryDestination": {"tableUri": table, "writeDisposition": "WRITE_TRUNCATE"}})
    assert bq.get_table(f"{PROJECT}.{dataset}.meta").num_rows == 4


# --- operations ------------------------------------------------------------------------------------


def _slow_store(n: int = 12) -> tuple[str, str]:
    bucket = new_bucket("slow")
    for inst in make_study("MR", "20261121", series=1, per_series=n):
        upload(bucket, f"s/{inst.sop}.dcm", inst.data)
    return new_store(), f"gs://{bucket.name}/s/**"


def test_operations_run_in_background_pending_counts_down_and_cancel():
    store, uri = _slow_store()
    svc = healthcare()
    admin("/admin/settings", {"latency_s": 0.25})
    try:
        op = submit_import(store, uri, svc)
        assert not op.get("done")
        seen = []
        for _ in range(40):
            cur = svc.projects().locations().datasets().operations().get(name=op["name"]).execute()
            seen.append(int(cur["metadata"]["counter"].get("pending", 0)))
            if seen[-1] and seen[-1] < 10:
                break
            time.sleep(0.1)
        assert any(0 < p < 12 for p in seen)
        svc.projects().locations().datasets().operations().cancel(name=op["name"], body={}).execute()
        done = wait(op, svc)
        assert done["error"]["code"] == 1 and done["metadata"]["cancelRequested"] is True
        listed = (
            svc.projects()
            .locations()
            .datasets()
            .operations()
            .list(name=store.split("/dicomStores/")[0], filter="done=true")
            .execute()
        )
        assert op["name"] in [o["name"] for o in listed["operations"]]
    finally:
        admin("/admin/settings", {"latency_s": 0.0})


def test_many_operations_at_once():
    bucket = new_bucket("many")
    for i, inst in enumerate(make_study("CT", "20261122", series=2, per_series=5)):
        upload(bucket, f"m/{i}.dcm", inst.data)
    svc = healthcare()
    stores = [new_store(svc) for _ in range(6)]
    ops = [
        svc.projects()
        .locations()
        .datasets()
        .dicomStores()
        .import_(name=s, body={"gcsSource": {"uri": f"gs://{bucket.name}/m/*"}})
        .execute()
        for s in stores
    ]
    assert all(wait(op, svc)["metadata"]["counter"] == {"success": "10"} for op in ops)


def test_fault_injection_and_forced_failure():
    svc = healthcare()
    store = new_store(svc)
    base = os.environ["HEALTHCARE_API_ENDPOINT"]
    admin("/admin/faults", {"dicomStores.getDICOMStoreMetrics": {"rate": 1.0, "code": 503}})
    try:
        resp = requests.get(f"{base}/v1/{store}:getDICOMStoreMetrics", timeout=30)
        assert resp.status_code == 503 and resp.json()["error"]["status"] == "UNAVAILABLE"
    finally:
        admin("/admin/faults", {})
    bucket = new_bucket("ff")
    upload(bucket, "a.dcm", make_instance("1.9", "1.9.1", "1.9.1.1").data)
    admin("/admin/settings", {"force_failure": 1})
    op = import_(store, f"gs://{bucket.name}/a.dcm")
    assert op["error"]["code"] == 13
    assert import_(store, f"gs://{bucket.name}/a.dcm")["metadata"]["counter"] == {"success": "1"}


# --- DICOMweb ------------------------------------------------------------------------------------


def test_a_chunked_stow_of_a_multi_frame_file_is_stored_and_read_back_byte_for_byte():
    """dicomweb-client sends an upload over 1 MB with Transfer-Encoding: chunked: every byte must be stored."""
    store = new_store()
    url = f"{os.environ['HEALTHCARE_API_ENDPOINT']}/v1/{store}/dicomWeb"
    study, series, sop = (pydicom.uid.generate_uid() for _ in range(3))
    ds = pydicom.dcmread(io.BytesIO(make_instance(study, series, sop, rows=256, cols=256, frames=12).data))
    sent = io.BytesIO()
    pydicom.dcmwrite(sent, ds)  # what dicomweb-client sends for a dataset
    assert len(sent.getvalue()) > 1_500_000
    DICOMwebClient(url=url).store_instances([ds])
    back = requests.get(
        f"{url}/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": "application/dicom; transfer-syntax=*"},
        timeout=60,
    )
    assert back.status_code == 200 and back.content == sent.getvalue()


def test_frames_bulk_data_and_fuzzy_matching_through_dicomweb_client():
    """Google's conformance behaviours a viewer relies on: frames by number, bulk data by its metadata's
    BulkDataURI, and fuzzymatching=true on PatientName (each word a case-blind prefix of a word of the name)."""
    store = new_store()
    client = DICOMwebClient(url=f"{os.environ['HEALTHCARE_API_ENDPOINT']}/v1/{store}/dicomWeb")
    study, series, sop = (pydicom.uid.generate_uid() for _ in range(3))
    ds = pydicom.dcmread(io.BytesIO(make_instance(study, series, sop, rows=8, cols=8, frames=3).data))
    ds.PatientName = "Doe^Jane"
    client.store_instances([ds])
    frame = len(ds.PixelData) // 3
    assert client.retrieve_instance_frames(study, series, sop, frame_numbers=[2]) == [ds.PixelData[frame : 2 * frame]]
    meta = client.retrieve_instance_metadata(study, series, sop)
    assert client.retrieve_bulkdata(meta["7FE00010"]["BulkDataURI"]) == [ds.PixelData]
    assert len(client.search_for_studies(search_filters={"PatientName": "jA do"}, fuzzymatching=True)) == 1
    assert client.search_for_studies(search_filters={"PatientName": "jA do"}) == []
    assert client.search_for_studies(search_filters={"PatientName": "ane"}, fuzzymatching=True) == []


def test_dicomweb_stow_qido_wado_delete():
    store = new_store()
    url = f"{os.environ['HEALTHCARE_API_ENDPOINT']}/v1/{store}/dicomWeb"
    client = DICOMwebClient(url=url)
    ct = make_study("CT", "20261120", series=1, per_series=2, patient_id="P1")
    mr = make_study("MR", "20261123", series=1, per_series=1, patient_id="P2")
    datasets = [pydicom.dcmread(io.BytesIO(i.data)) for i in ct + mr]
    client.store_instances(datasets[:2])  # multipart
    resp = requests.post(f"{url}/studies", data=mr[0].data, headers={"Content-Type": "application/dicom"}, timeout=30)
    assert resp.status_code == 200
    again = requests.post(f"{url}/studies", data=mr[0].data, headers={"Content-Type": "application/dicom"}, timeout=30)
    assert again.status_code == 409 and "SOP Instance UIDs exists" in again.text  # same UIDs, same bytes: 409
    changed = make_instance(mr[0].study, mr[0].series, mr[0].sop, seed=7)
    resp = requests.post(f"{url}/studies", data=changed.data, headers={"Content-Type": "application/dicom"}, timeout=30)
    assert resp.status_code == 409 and "different content" in resp.text
    empty = requests.post(
        f"{url}/studies", data=b"--x--\r\n", headers={"Content-Type": "multipart/related; boundary=x"}, timeout=30
    )
    assert empty.status_code == 400
    assert len(client.search_for_studies()) == 2
    assert [s["0020000D"]["Value"][0] for s in client.search_for_studies(search_filters={"PatientID": "P2"})] == [
        mr[0].study
    ]
    assert len(client.search_for_series(search_filters={"Modality": "CT"})) == 1
    hits = client.search_for_studies(search_filters={"StudyDate": "20261121-20261130"})
    assert [h["0020000D"]["Value"][0] for h in hits] == [mr[0].study]
    assert len(client.search_for_instances(study_instance_uid=ct[0].study, limit=1, offset=1)) == 1
    inst = client.retrieve_instance(ct[0].study, ct[0].series, ct[0].sop)
    assert inst.SOPInstanceUID == ct[0].sop
    meta = client.retrieve_instance_metadata(ct[0].study, ct[0].series, ct[0].sop)
    assert meta["00080060"]["Value"] == ["CT"]
    single = requests.get(
        f"{url}/studies/{ct[0].study}/series/{ct[0].series}/instances/{ct[0].sop}",
        headers={"Accept": "application/dicom; transfer-syntax=*"},
        timeout=30,
    )
    assert single.content == ct[0].data
    client.delete_instance(ct[1].study, ct[1].series, ct[1].sop)
    op = requests.delete(f"{url}/studies/{mr[0].study}", timeout=30).json()
    assert wait(op)["done"]
    assert len(client.search_for_instances()) == 1


# --- persistence -----------------------------------------------------------------------------------


def test_restart_keeps_state_and_aborts_running_operation(stack):
    store, uri = _slow_store(20)
    svc = healthcare()
    bucket = new_bucket("keep")
    upload(bucket, "k.dcm", make_instance("1.8", "1.8.1", "1.8.1.1").data)
    assert import_(store, f"gs://{bucket.name}/k.dcm", svc)["metadata"]["counter"] == {"success": "1"}
    admin("/admin/settings", {"latency_s": 0.5})
    op = submit_import(store, uri, svc)
    for _ in range(100):  # stop it while the operation is under way: some instances done, some pending
        if (
            svc.projects()
            .locations()
            .datasets()
            .operations()
            .get(name=op["name"])
            .execute()["metadata"]
            .get("counter", {})
            .get("success")
        ):
            break
        time.sleep(0.1)
    stack.stop("healthcare")
    stack.start_stack()  # restarts only what is not running
    done = svc.projects().locations().datasets().operations().get(name=op["name"]).execute()
    assert done["done"] and done["error"]["code"] == 10 and "restarted" in done["error"]["message"]
    metrics = svc.projects().locations().datasets().dicomStores().getDICOMStoreMetrics(name=store).execute()
    assert int(metrics["instanceCount"]) >= 1
    assert admin("/admin/settings")["latency_s"] == 0.0


def test_import_of_ten_thousand_small_instances():
    from concurrent.futures import ThreadPoolExecutor

    from emulator.gcs import GcsClient

    bucket = new_bucket("tenk")
    gcs_api = GcsClient(pool_size=8)

    def put(i: int) -> None:
        inst = make_instance("1.2.826.1", f"1.2.826.1.{i // 1000}", f"1.2.826.1.1.{i}", rows=2, cols=2, seed=i)
        gcs_api.upload(bucket.name, f"many/{i:05d}.dcm", inst.data)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(10_000)))
    store = new_store()
    op = import_(store, f"gs://{bucket.name}/many/*.dcm")
    assert op["metadata"]["counter"] == {"success": "10000"}
    metrics = healthcare().projects().locations().datasets().dicomStores().getDICOMStoreMetrics(name=store).execute()
    assert (metrics["instanceCount"], metrics["seriesCount"], metrics["studyCount"]) == ("10000", "10", "1")


def test_faults_after_acting_and_seeded_draws_and_operations_per_store():
    base = os.environ["HEALTHCARE_API_ENDPOINT"]
    store = new_store()
    bucket = new_bucket("fa")
    upload(bucket, "a.dcm", make_instance("1.8", "1.8.1", "1.8.1.1").data)
    body = {"gcsSource": {"uri": f"gs://{bucket.name}/a.dcm"}}
    admin("/admin/faults", {"dicomStores.import": {"rate": 1.0, "code": 503, "after": True}})
    try:
        resp = requests.post(f"{base}/v1/{store}:import", json=body, timeout=30)
    finally:
        admin("/admin/faults", {})
    assert resp.status_code == 503
    received = admin(f"/admin/operations?store={store}")
    assert received["count"] == 1 and received["operations"][0]["method"] == "ImportDicomData"
    assert received["operations"][0]["request"] == body

    def draws(seed: int) -> list[int]:
        admin("/admin/faults", {"seed": seed, "dicomStores.getDICOMStoreMetrics": {"rate": 0.5, "codes": [429, 503]}})
        try:
            return [requests.get(f"{base}/v1/{store}:getDICOMStoreMetrics", timeout=30).status_code for _ in range(12)]
        finally:
            admin("/admin/faults", {})

    first = draws(5)
    assert first == draws(5) and {429, 503, 200} == set(first)
