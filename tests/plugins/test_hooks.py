"""The Healthcare hooks against the running local stack (plus mocked HTTP for shapes it cannot produce)."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
import requests
from googleapiclient.http import HttpMockSequence

from dicom_pipelines.hooks import CloudHealthcareDicomAsyncHook, CloudHealthcareDicomHook
from dicom_pipelines.polling import PollPlanner
from dicom_pipelines.responses import (
    AmbiguousSubmissionError,
    HealthcareApiError,
    OperationDeadlineExceeded,
    parse_operation,
)
from tests.helpers import LOCATION, PROJECT, admin, new_bucket, seed_import, unique

pytestmark = pytest.mark.usefixtures("stack")


@pytest.fixture()
def hook():
    return CloudHealthcareDicomHook()


def test_both_api_versions_build_from_the_bundled_document():
    for version in ("v1", "v1beta1"):
        conn = CloudHealthcareDicomHook(api_version=version).get_conn()
        request = (
            conn.projects()
            .locations()
            .datasets()
            .dicomStores()
            .import_(name="projects/p/locations/l/datasets/d/dicomStores/s", body={})
        )
        assert (
            request.method == "POST"
            and f"/{version}/projects/p/locations/l/datasets/d/dicomStores/s:import" in request.uri
        )
    with pytest.raises(ValueError, match="api_version"):
        CloudHealthcareDicomHook(api_version="v2")


def test_ensure_store_is_idempotent_and_import_export_metrics(hook):
    ds = unique("hook")
    name = hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=ds, dicom_store_id="s")
    assert hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=ds, dicom_store_id="s") == name
    _, uri = seed_import(3)
    op = hook.import_dicom(store_name=name, gcs_uri=uri)
    status = hook.wait_for_operation(name=op["name"], planner=PollPlanner(0.1, 0.5))
    assert status.succeeded and status.success == 3 and status.failure == 0
    assert hook.get_store_metrics(store_name=name)["instanceCount"] == 3
    out = new_bucket("hookout")
    status = hook.wait_for_operation(
        name=hook.export_dicom_to_gcs(store_name=name, uri_prefix=f"gs://{out.name}/x", mime_type="image/png")["name"],
        planner=PollPlanner(0.1, 0.5),
    )
    assert status.success == 3
    assert len(hook.list_operations(dataset_name=name.split("/dicomStores/")[0], filter="done=true")) >= 2


def test_a_store_streams_its_metadata_to_bigquery_on_import_and_stow(hook):
    """streamConfigs: set on a new store, added to an existing one; every new instance becomes a row."""
    import os

    import requests
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from scripts.dicom_samples import make_study

    bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials())
    bq_dataset = unique("stream").replace("-", "_")
    bq.create_dataset(bq_dataset)
    first, second = f"bq://{PROJECT}.{bq_dataset}.first", f"bq://{PROJECT}.{bq_dataset}.second"
    ds = unique("streamed")
    name = hook.ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=ds, dicom_store_id="s", stream_table_uri=first
    )
    hook.ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=ds, dicom_store_id="s", stream_table_uri=second
    )
    hook.ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=ds, dicom_store_id="s", stream_table_uri=second
    )
    tables = [c["bigqueryDestination"]["tableUri"] for c in hook.get_dicom_store(store_name=name)["streamConfigs"]]
    assert tables == [first, second]
    _, uri = seed_import(3)
    status = hook.wait_for_operation(
        name=hook.import_dicom(store_name=name, gcs_uri=uri)["name"], planner=PollPlanner(0.1, 0.5)
    )
    assert status.success == 3
    stowed = make_study("MR", "20261124", series=1, per_series=1, patient_id="P-STREAM")[0]
    stow = requests.post(
        f"{os.environ['HEALTHCARE_API_ENDPOINT']}/v1/{name}/dicomWeb/studies",
        data=stowed.data,
        headers={"Content-Type": "application/dicom"},
        timeout=30,
    )
    assert stow.status_code == 200
    for table in (first, second):
        rows = bq.query(f"SELECT Modality, StudyInstanceUID FROM `{table[5:]}` ORDER BY Modality").result()
        assert [r.Modality for r in rows] == ["CT", "CT", "CT", "MR"]


def test_errors_carry_http_status_google_status_and_message(hook):
    with pytest.raises(HealthcareApiError) as err:
        hook.get_dicom_store(store_name=f"projects/{PROJECT}/locations/{LOCATION}/datasets/nope/dicomStores/s")
    e = err.value
    assert (e.http_status, e.google_status) == (403, "PERMISSION_DENIED") and "nope" in e.api_message
    assert not e.retryable


def test_retries_429_and_5xx_inside_execute(hook):
    name = hook.ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=unique("retry"), dicom_store_id="s"
    )
    admin("/admin/faults", {"dicomStores.getDICOMStoreMetrics": {"rate": 0.5, "code": 503}})
    try:
        for _ in range(5):
            assert hook.get_store_metrics(store_name=name)["instanceCount"] == 0
    finally:
        admin("/admin/faults", {})


def admin_logging(path: str, body: dict) -> None:
    requests.post(os.environ["LOGGING_API_ENDPOINT"] + path, json=body, timeout=30).raise_for_status()


def test_cancel_and_logs(hook):
    name = hook.ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=unique("cancel"), dicom_store_id="s"
    )
    _, uri = seed_import(6, extra={"bad.txt": b"no"})
    admin("/admin/settings", {"latency_s": 0.3})
    try:
        op = hook.import_dicom(store_name=name, gcs_uri=uri)
        hook.cancel_operation(name=op["name"])
        status = hook.wait_for_operation(name=op["name"], planner=PollPlanner(0.1, 0.5))
        assert status.error_code == 1 and status.cancel_requested
    finally:
        admin("/admin/settings", {"latency_s": 0.0})
    status = hook.wait_for_operation(
        name=hook.import_dicom(store_name=name, gcs_uri=uri)["name"], planner=PollPlanner(0.1, 0.5)
    )
    entries = hook.failed_entries(status=status, limit=10, settle_s=0)
    assert [e["source"].rsplit("/", 1)[1] for e in entries] == ["bad.txt"]
    assert entries[0]["code"] == 3 and entries[0]["message"]


def test_a_logging_read_refused_for_quota_is_named_a_quota_not_a_missing_role(hook, capfd):
    name = hook.ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=unique("quota"), dicom_store_id="s"
    )
    _, uri = seed_import(1, extra={"bad.txt": b"no"})
    status = hook.wait_for_operation(
        name=hook.import_dicom(store_name=name, gcs_uri=uri)["name"], planner=PollPlanner(0.1, 0.5)
    )
    admin_logging("/admin/faults", {"entries.list": {"rate": 1.0, "code": 429}})
    try:
        assert hook.failed_entries(status=status, limit=10, settle_s=0) == []
    finally:
        admin_logging("/admin/faults", {})
    logged = "".join(capfd.readouterr())
    assert "Logging read quota" in logged and "roles/logging.viewer" not in logged


def test_wait_deadline_raises_with_the_last_status(hook):
    name = hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=unique("dl"), dicom_store_id="s")
    _, uri = seed_import(5)
    admin("/admin/settings", {"latency_s": 0.5})
    try:
        op = hook.import_dicom(store_name=name, gcs_uri=uri)
        with pytest.raises(OperationDeadlineExceeded) as exc:
            hook.wait_for_operation(name=op["name"], planner=PollPlanner(0.1, 0.2), deadline=time.time() + 0.5)
        assert exc.value.last is not None and exc.value.last.name == op["name"] and not exc.value.last.done
        hook.cancel_operation(name=op["name"])
    finally:
        admin("/admin/settings", {"latency_s": 0.0})


def test_wait_deadline_holds_during_an_outage(hook):
    """Every poll fails with 503: the wait still ends at the deadline, not never."""
    name = hook.ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=unique("outage"), dicom_store_id="s"
    )
    _, uri = seed_import(3)
    admin("/admin/settings", {"latency_s": 0.5})
    op = hook.import_dicom(store_name=name, gcs_uri=uri)
    admin("/admin/faults", {"operations.get": {"rate": 1.0, "code": 503}})
    try:
        with pytest.raises(OperationDeadlineExceeded) as exc:
            hook.wait_for_operation(
                name=op["name"],
                planner=PollPlanner(0.05, 0.1),
                deadline=time.time() + 1.0,
                sleep=lambda s: None if s <= 0 else time.sleep(min(s, 0.05)),
            )
        assert exc.value.last is None
    finally:
        admin("/admin/faults", {})
        admin("/admin/settings", {"latency_s": 0.0})
        hook.cancel_operation(name=op["name"])


def test_submission_answered_503_after_the_server_acted_is_adopted_not_repeated(hook):
    name = hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=unique("amb"), dicom_store_id="s")
    _, uri = seed_import(2)
    admin("/admin/faults", {"dicomStores.import": {"rate": 1.0, "code": 503, "after": True}})
    try:
        op = hook.import_dicom(store_name=name, gcs_uri=uri)
    finally:
        admin("/admin/faults", {})
    received = admin(f"/admin/operations?store={name}")
    assert received["count"] == 1 and received["operations"][0]["name"] == op["name"]


def test_submission_refused_with_429_or_503_before_acting_is_sent_again(hook):
    name = hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=unique("ref"), dicom_store_id="s")
    _, uri = seed_import(2)
    admin("/admin/faults", {"seed": 3, "dicomStores.import": {"rate": 0.5, "codes": [429, 503]}})
    try:
        ops = []
        for _ in range(4):  # one after the other, as the nightly runs do
            ops.append(hook.import_dicom(store_name=name, gcs_uri=uri)["name"])
            hook.wait_for_operation(name=ops[-1], planner=PollPlanner(0.05, 0.1))
        injected = admin("/admin/stats")["injected"]
    finally:
        admin("/admin/faults", {})
    received = admin(f"/admin/operations?store={name}")
    assert injected > 0 and [o["name"] for o in received["operations"]] == ops


def test_ambiguous_submission_with_another_import_running_refuses_to_guess(hook):
    """Two stores of one dataset import at once and the answer is lost: the one new operation could be the other
    client's (if ours never arrived), so the hook names both and submits nothing more."""
    dataset = unique("two")
    first = hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=dataset, dicom_store_id="a")
    hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=dataset, dicom_store_id="b")
    _, uri = seed_import(4)
    admin("/admin/settings", {"latency_s": 0.5})
    hook.import_dicom(store_name=f"{first.rsplit('/', 1)[0]}/b", gcs_uri=uri)  # the other store's import, running
    admin("/admin/faults", {"dicomStores.import": {"rate": 1.0, "code": 503, "after": True}})
    try:
        with pytest.raises(AmbiguousSubmissionError, match=r"1 ImportDicomData operation\(s\).* 1 more were running"):
            hook.import_dicom(store_name=first, gcs_uri=uri)
    finally:
        admin("/admin/faults", {})
        admin("/admin/settings", {"latency_s": 0.0})
    assert admin(f"/admin/operations?store={first}")["count"] == 1


def test_async_hook_gets_and_cancels(hook):
    name = hook.ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=unique("async"), dicom_store_id="s"
    )
    _, uri = seed_import(2)
    op_name = hook.import_dicom(store_name=name, gcs_uri=uri)["name"]

    async def go():
        ahook = CloudHealthcareDicomAsyncHook()
        try:
            for _ in range(50):
                status = parse_operation(await ahook.get_operation(name=op_name))
                if status.done:
                    return status
                await asyncio.sleep(0.1)
        finally:
            await ahook.close()

    status = asyncio.run(go())
    assert status.succeeded and status.success == 2

    async def missing():
        ahook = CloudHealthcareDicomAsyncHook()
        try:
            await ahook.get_operation(name=op_name.rsplit("/", 1)[0] + "/999")
        finally:
            await ahook.close()

    with pytest.raises(HealthcareApiError) as err:
        asyncio.run(missing())
    assert err.value.http_status == 404


def test_many_triggers_starting_at_once_resolve_the_connection_once(hook, monkeypatch):
    """A triggerer restarting with many deferred tasks: 200 first polls at once build the sync hook once."""
    name = hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=unique("herd"), dicom_store_id="s")
    _, uri = seed_import(1)
    op_name = hook.import_dicom(store_name=name, gcs_uri=uri)["name"]
    built = []
    original = CloudHealthcareDicomAsyncHook.get_sync_hook

    async def counting(self):
        built.append(1)
        return await original(self)

    monkeypatch.setattr(CloudHealthcareDicomAsyncHook, "get_sync_hook", counting)
    monkeypatch.setattr(CloudHealthcareDicomAsyncHook, "_setups", {})
    monkeypatch.setattr(CloudHealthcareDicomAsyncHook, "_setup_locks", {}, raising=False)

    async def poll_all():
        hooks = [CloudHealthcareDicomAsyncHook() for _ in range(200)]
        try:
            return await asyncio.gather(*(h.get_operation(name=op_name) for h in hooks))
        finally:
            await asyncio.gather(*(h.close() for h in hooks))

    answers = asyncio.run(poll_all())
    assert len(answers) == 200 and all(a["name"] == op_name for a in answers)
    assert len(built) == 1


def test_non_json_5xx_error_shape_from_a_proxy(monkeypatch):
    """An HTML 502 from a proxy (the local stack never answers that way) still gives a clear error."""
    hook = CloudHealthcareDicomHook()
    monkeypatch.setattr(type(hook), "num_retries", property(lambda self: 0))
    conn = hook.get_conn()
    http = HttpMockSequence([({"status": "502"}, b"<html>Bad Gateway</html>")])
    monkeypatch.setattr(conn._http, "request", http.request)
    with pytest.raises(HealthcareApiError) as err:
        hook.get_operation(name=f"projects/{PROJECT}/locations/{LOCATION}/datasets/d/operations/1")
    assert err.value.http_status == 502 and "Bad Gateway" in err.value.api_message and err.value.retryable


def test_a_connection_dropped_after_the_server_acted_sends_the_post_once(hook):
    """The local API imports, then closes the socket without answering. httplib2 resent the POST by itself (two
    imports, found as two candidates); the submission now goes over a transport that never resends, is looked up,
    and the one operation is adopted."""
    name = hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=unique("drop"), dicom_store_id="s")
    _, uri = seed_import(2)
    admin("/admin/faults", {"dicomStores.import": {"rate": 1.0, "drop": True}})
    try:
        op = hook.import_dicom(store_name=name, gcs_uri=uri)
    finally:
        admin("/admin/faults", {})
    received = admin(f"/admin/operations?store={name}")
    assert received["count"] == 1 and received["operations"][0]["name"] == op["name"]


@pytest.mark.parametrize(
    "settings",
    [
        {"operations_list_lag_s": 3.0},  # operations.list shows the new operation only 3 s after its creation
        {"clock_offset_s": -20.0},  # the worker's clock is 20 s ahead of the server's
        {"clock_offset_s": 20.0},
    ],
)
def test_the_lookup_after_an_ambiguous_submission_finds_its_operation_despite_lag_and_skew(hook, settings):
    name = hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=unique("lag"), dicom_store_id="s")
    _, uri = seed_import(2)
    admin("/admin/settings", settings)
    admin("/admin/faults", {"dicomStores.import": {"rate": 1.0, "code": 503, "after": True}})
    try:
        op = hook.import_dicom(store_name=name, gcs_uri=uri)
    finally:
        admin("/admin/faults", {})
        admin("/admin/settings", {k: 0.0 for k in settings})
    received = admin(f"/admin/operations?store={name}")
    assert received["count"] == 1 and received["operations"][0]["name"] == op["name"]


def test_an_ambiguous_deidentification_is_not_resent_into_a_store_that_is_no_longer_empty(hook):
    """No operation found (listing lags past the settle period), but the destination now holds instances."""
    dataset = unique("deid")
    source = hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=dataset, dicom_store_id="src")
    dest = hook.ensure_dicom_store(project_id=PROJECT, location=LOCATION, dataset_id=dataset, dicom_store_id="dst")
    _, uri = seed_import(2)
    hook.wait_for_operation(
        name=hook.import_dicom(store_name=source, gcs_uri=uri)["name"], planner=PollPlanner(0.05, 0.1)
    )
    admin("/admin/settings", {"operations_list_lag_s": 600.0})
    admin("/admin/faults", {"dicomStores.deidentify": {"rate": 1.0, "code": 503, "after": True}})
    try:
        with pytest.raises(AmbiguousSubmissionError, match="no longer empty"):
            config = {"dicom": {"filterProfile": "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE"}}
            hook.deidentify_dicom_store(store_name=source, destination_store=dest, config=config)
    finally:
        admin("/admin/faults", {})
        admin("/admin/settings", {"operations_list_lag_s": 0.0})
    assert [o["method"] for o in admin(f"/admin/operations?store={source}")["operations"]].count(
        "DeidentifyDicomStore"
    ) == 1


def test_arrivals_are_staged_marked_counted_and_cleaned_up(hook):
    """The arrival import's Cloud Storage steps on the local GCS: a file overwritten since its notification and one
    deleted since are not staged; after marking, a redelivery of the same notification stages nothing, and the
    nightly's count finds the marked files among the day's."""
    from dicom_pipelines.arrivals import ArrivedObject

    bucket = new_bucket("arrivals")
    for name in ("day/a.dcm", "day/b.dcm", "day/c.dcm", "day/gone.dcm"):
        bucket.blob(name).upload_from_string(name.encode())
    live = {b.name: b.generation for b in bucket.list_blobs()}
    arrived = [ArrivedObject(bucket.name, name, generation) for name, generation in sorted(live.items())]
    old_c = arrived[2]
    bucket.blob("day/c.dcm").upload_from_string(b"overwritten")
    bucket.blob("day/gone.dcm").delete()

    staged = hook.stage_arrivals(objects=arrived, staging_bucket=bucket.name, staging_folder="stage", run_key="r1")
    assert [o.name for o in staged.staged] == ["day/a.dcm", "day/b.dcm"]
    assert (staged.superseded, staged.missing) == ([old_c], [arrived[3]])
    copies = sorted(b.name for b in bucket.list_blobs(prefix="stage/r1/"))
    assert copies == [f"stage/r1/{bucket.name}/day/a.dcm", f"stage/r1/{bucket.name}/day/b.dcm"]
    assert bucket.get_blob(copies[0]).download_as_bytes() == b"day/a.dcm"

    assert hook.mark_imported(objects=arrived) == 2  # the overwritten and the deleted one are not marked
    again = hook.stage_arrivals(objects=arrived[:2], staging_bucket=bucket.name, staging_folder="stage", run_key="r2")
    assert (again.staged, again.already_imported) == ([], arrived[:2])
    assert hook.count_imported_by_arrival(gcs_uri=f"gs://{bucket.name}/day/**.dcm") == (3, 2)
    assert hook.delete_staged(staging_bucket=bucket.name, folder="stage/r1") == 2
    assert not list(bucket.list_blobs(prefix="stage/"))
