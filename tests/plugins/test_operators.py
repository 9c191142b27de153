"""Operators: validation before any call, TaskDeferred, every completion branch, retry re-attach, faults."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    TaskDeferred,
)

from dicom_pipelines.hooks import CloudHealthcareDicomHook
from dicom_pipelines.operators import (
    OPERATION_STATE_KEY,
    HealthcareDicomDeidentifyOperator,
    HealthcareDicomExportOperator,
    HealthcareDicomExportToBigQueryOperator,
    HealthcareDicomImportOperator,
    HealthcareEnsureDicomStoreOperator,
)
from dicom_pipelines.polling import PollPlanner
from dicom_pipelines.triggers import HealthcareOperationTrigger, make_event
from tests.helpers import (
    LOCATION,
    PROJECT,
    FakeStateStore,
    FakeTI,
    admin,
    gcs,
    healthcare,
    import_ops,
    make_context,
    new_bucket,
    seed_import,
    store_parts,
    unique,
)

pytestmark = pytest.mark.usefixtures("stack")


@pytest.fixture(autouse=True)
def reset_stack():
    yield
    admin("/admin/settings", {"latency_s": 0.0})
    admin("/admin/faults", {})


def new_store() -> str:
    return CloudHealthcareDicomHook().ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=unique("op"), dicom_store_id="s"
    )


def importer(store: str, uri: str, **kw) -> HealthcareDicomImportOperator:
    kw.setdefault("deferrable", False)
    kw.setdefault("poll_interval", 0.1)
    kw.setdefault("max_poll_interval", 0.5)
    return HealthcareDicomImportOperator(task_id=unique("imp"), gcs_uri=uri, **store_parts(store), **kw)


# --- validation before any API call ------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"gcs_uri": "gs://bucket/a/**/b.dcm"}, "gcs_uri"),
        ({"gcs_uri": "gs://bucket/x", "max_failures": -1}, "max_failures"),
        ({"gcs_uri": "gs://bucket/x", "max_failure_ratio": "lots"}, "max_failure_ratio"),
        ({"gcs_uri": "gs://bucket/x", "blob_storage_class": "HOT"}, "blob_storage_class"),
        ({"gcs_uri": "gs://bucket/x", "dataset_id": "a/b"}, "dataset_id"),
    ],
)
def test_bad_input_fails_fast_without_calls(kwargs, field, monkeypatch):
    monkeypatch.setattr(CloudHealthcareDicomHook, "get_conn", lambda self: pytest.fail("no API call expected"))
    parts = {"project_id": "p", "location": "l", "dataset_id": "d", "dicom_store_id": "s", **kwargs}
    op = HealthcareDicomImportOperator(task_id="t", **parts)
    with pytest.raises(AirflowFailException, match=f"{field}="):
        op.execute(make_context())


def test_export_operators_validate_mime_prefix_and_table(monkeypatch):
    monkeypatch.setattr(CloudHealthcareDicomHook, "get_conn", lambda self: pytest.fail("no API call expected"))
    parts = {"project_id": "p", "location": "l", "dataset_id": "d", "dicom_store_id": "s"}
    with pytest.raises(AirflowFailException, match="mime_type="):
        HealthcareDicomExportOperator(task_id="t", uri_prefix="gs://bucket/x", mime_type="image/gif", **parts).execute(
            make_context()
        )
    with pytest.raises(AirflowFailException, match="uri_prefix="):
        HealthcareDicomExportOperator(task_id="t", uri_prefix="bucket/x", **parts).execute(make_context())
    with pytest.raises(AirflowFailException, match="table_uri="):
        HealthcareDicomExportToBigQueryOperator(task_id="t", table_uri="bq://p.d", **parts).execute(make_context())
    with pytest.raises(AirflowFailException, match="write_disposition="):
        HealthcareDicomExportToBigQueryOperator(
            task_id="t", table_uri="bq://p.d.t", write_disposition="APPEND", **parts
        ).execute(make_context())


# --- deferral and completion branches ------------------------------------------------------------


def test_defers_after_submit_and_check_once():
    store = new_store()
    _, uri = seed_import(5)
    admin("/admin/settings", {"latency_s": 0.5})
    ctx = make_context()
    op = importer(store, uri, deferrable=True, operation_timeout=600)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    trigger = deferred.value.trigger
    assert isinstance(trigger, HealthcareOperationTrigger) and deferred.value.method_name == "execute_complete"
    assert trigger.operation_name == ctx["task_state_store"].get(OPERATION_STATE_KEY)["name"]
    assert trigger.deadline is not None and trigger.deadline > time.time() + 500
    api = os.environ["HEALTHCARE_API_ENDPOINT"].rstrip("/")
    # the local stack is no Google endpoint: the links open its own views, not the Cloud Console
    assert ctx["ti"].xcom["healthcare_operation_link"] == f"{api}/v1/{trigger.operation_name}"
    assert ctx["ti"].xcom["healthcare_dicom_store_link"] == f"{api}/v1/{store}"
    op_id = trigger.operation_name.rsplit("/", 1)[1]
    # the log link is the operation's Logs Explorer query (its logsUrl), opened on the local Cloud Logging
    log_link = ctx["ti"].xcom["healthcare_operation_log_link"]
    assert log_link.startswith(os.environ["LOGGING_API_ENDPOINT"] + "/logs/query;query=") and op_id in log_link
    view = requests.get(log_link, timeout=30)
    assert view.status_code == 200 and view.json()["entries"] == []


def test_an_operation_that_ends_within_wait_before_defer_is_never_deferred():
    """A short operation finishes in the worker (no hand-over, no Airflow 3.3.2 deferral race); a longer one is
    deferred once the brief wait is over, to the same operation."""
    store = new_store()
    _, uri = seed_import(4)
    admin("/admin/settings", {"latency_s": 0.3})
    result = importer(store, uri, deferrable=True, wait_before_defer=30).execute(make_context())
    assert (result["success"], result["failure"]) == (4, 0)
    ctx = make_context()
    with pytest.raises(TaskDeferred) as deferred:
        importer(store, uri, deferrable=True, wait_before_defer=0.3).execute(ctx)
    assert deferred.value.trigger.operation_name == ctx["task_state_store"].get(OPERATION_STATE_KEY)["name"]
    assert len(import_ops(store)) == 2


def _finished_import(extra: dict | None = None, n: int = 3) -> tuple[str, str]:
    store = new_store()
    _, uri = seed_import(n, extra=extra)
    op = importer(store, uri, max_failure_ratio=1)
    return store, op.execute(make_context())["operation_name"]


def test_execute_complete_success_result_shape():
    store, name = _finished_import()
    result = importer(store, "gs://bucket/x").execute_complete(make_context(), make_event("done", "", name))
    assert set(result) == {
        "operation_name",
        "success",
        "failure",
        "pending",
        "logs_url",
        "duration_s",
        "failed_sources",
        "failure_report_uri",
    }
    assert (result["success"], result["failure"], result["pending"]) == (3, 0, 0) and result["duration_s"] >= 0
    assert (result["failed_sources"], result["failure_report_uri"]) == ([], None)


def test_failed_sources_are_named_reported_and_quarantined(capfd):
    """Each failed file reaches the log, the XCom and an NDJSON report, read through Cloud Logging."""
    store = new_store()
    bucket, uri = seed_import(2, extra={"junk.dcm": b"junk", "empty.dcm": b""})
    reports = new_bucket("reports")
    report_uri = f"gs://{reports.name}/nightly/run-1.ndjson"
    op = importer(
        store,
        uri,
        max_failures=2,
        failed_sources_to_log=1,
        failure_report_uri=report_uri,
        quarantine_prefix=f"gs://{reports.name}/quarantine",
    )
    result = op.execute(make_context())
    assert (result["success"], result["failure"], result["failure_report_uri"]) == (2, 2, report_uri)
    assert len(result["failed_sources"]) == 1 and result["failed_sources"][0]["code"] == 3
    lines = [json.loads(x) for x in reports.blob("nightly/run-1.ndjson").download_as_text().splitlines()]
    assert sorted(x["source"] for x in lines) == [f"gs://{bucket}/in/empty.dcm", f"gs://{bucket}/in/junk.dcm"]
    assert all(set(x) == {"source", "code", "message"} and x["message"] for x in lines)
    quarantined = sorted(b.name for b in gcs().list_blobs(reports.name, prefix="quarantine/"))
    assert quarantined == [f"quarantine/{bucket}/in/empty.dcm", f"quarantine/{bucket}/in/junk.dcm"]
    out = "".join(capfd.readouterr())
    assert "1 of 2 failed instances are named above" in out and out.count("Failed: gs://") == 1
    # beyond the tolerance the task fails, and its message points at the report
    again = importer(store, uri, failure_report_uri=report_uri)
    with pytest.raises(AirflowFailException, match="listed in " + report_uri):
        again.execute(make_context())


def test_execute_complete_partial_failure_default_fails_with_counts(capfd):
    store, name = _finished_import({"junk.dcm": b"junk"})
    with pytest.raises(AirflowFailException, match=r"1 of 4 instances failed .*no failures allowed"):
        importer(store, "gs://bucket/x").execute_complete(make_context(), make_event("done", "", name))
    out = "".join(capfd.readouterr())
    assert "Failed: gs://" in out and "junk.dcm" in out and "Synthetic" not in out


@pytest.mark.parametrize(
    "kw,ok",
    [
        ({"max_failures": 1}, True),
        ({"max_failures": 0}, False),
        ({"max_failure_ratio": 0.25}, True),
        ({"max_failure_ratio": 0.2}, False),
    ],
)
def test_execute_complete_failure_tolerance(kw, ok):
    store, name = _finished_import({"junk.dcm": b"junk"})
    op = importer(store, "gs://bucket/x", **kw)
    if ok:
        assert op.execute_complete(make_context(), make_event("done", "", name))["failure"] == 1
    else:
        with pytest.raises(AirflowFailException, match="more than allowed"):
            op.execute_complete(make_context(), make_event("done", "", name))


def test_execute_complete_error_timeout_and_operation_error_events():
    op = importer(new_store(), "gs://bucket/x")
    with pytest.raises(AirflowFailException, match="HTTP 403"):
        op.execute_complete(make_context(), make_event("error", "HTTP 403 denied", "projects/p/operations/1"))
    with pytest.raises(AirflowFailException, match="deadline"):
        op.execute_complete(
            make_context(), make_event("timeout", "not done by its deadline", "projects/p/operations/1")
        )
    store = new_store()
    admin("/admin/settings", {"force_failure": 1})
    _, uri = seed_import(1)
    with pytest.raises(AirflowException, match=r"INTERNAL \(13\).*the retry submits the operation again") as err:
        importer(store, uri).execute(make_context())
    assert not isinstance(err.value, AirflowFailException)


def test_empty_source_skips_when_allowed():
    store = new_store()
    bucket = new_bucket("empty")
    with pytest.raises(AirflowSkipException, match="No objects matched"):
        importer(store, f"gs://{bucket.name}/nothing/**", allow_empty_source=True).execute(make_context())
    with pytest.raises(AirflowFailException, match="No objects matched.*allow_empty_source"):
        importer(store, f"gs://{bucket.name}/nothing/**").execute(make_context())
    with pytest.raises(AirflowFailException, match="does not exist"):
        importer(store, f"gs://{unique('missing')}/x/**", allow_empty_source=True).execute(make_context())


def test_sync_wait_deadline_cancels_the_operation_unless_told_not_to():
    for cancel in (True, False):
        store = new_store()
        _, uri = seed_import(10)
        admin("/admin/settings", {"latency_s": 0.5})
        with pytest.raises(AirflowFailException, match="cancelled" if cancel else "left running"):
            importer(store, uri, operation_timeout=1, cancel_on_kill=cancel).execute(make_context())
        assert import_ops(store)[0]["metadata"].get("cancelRequested", False) is cancel
        admin("/admin/settings", {"latency_s": 0.0})


def test_twenty_percent_503_still_succeeds_with_one_operation():
    store = new_store()
    _, uri = seed_import(20)
    admin("/admin/settings", {"latency_s": 0.05})
    admin(
        "/admin/faults",
        {
            "seed": 11,
            "*": {"rate": 0.2, "codes": [429, 503]},
            "dicomStores.import": {"rate": 0.5, "code": 503, "after": True},
        },
    )
    result = importer(store, uri, poll_interval=0.03, max_poll_interval=0.05).execute(make_context())
    injected = admin("/admin/stats")["injected"]
    admin("/admin/faults", {})
    assert (result["success"], result["failure"]) == (20, 0)
    assert injected > 0 and len(import_ops(store)) == 1


def test_export_and_bigquery_export_operators():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    store, _ = _finished_import(n=2)
    out = new_bucket("opx")
    result = HealthcareDicomExportOperator(
        task_id="x",
        uri_prefix=f"gs://{out.name}/e",
        mime_type="image/png",
        deferrable=False,
        poll_interval=0.1,
        **store_parts(store),
    ).execute(make_context())
    assert result["success"] == 2 and len(list(gcs().list_blobs(out.name))) == 2
    ds = unique("opbq").replace("-", "_")
    bigquery.Client(project=PROJECT, credentials=AnonymousCredentials()).create_dataset(ds)
    result = HealthcareDicomExportToBigQueryOperator(
        task_id="b",
        table_uri=f"bq://{PROJECT}.{ds}.meta",
        write_disposition="WRITE_TRUNCATE",
        deferrable=False,
        poll_interval=0.1,
        **store_parts(store),
    ).execute(make_context())
    assert result["success"] == 2


def test_export_to_a_missing_bucket_is_refused_before_submitting():
    """Google would fail every instance one by one; the task says the bucket is missing and exports nothing."""
    store, _ = _finished_import(n=2)
    missing = unique("nobucket")
    with pytest.raises(AirflowFailException, match=f"the destination bucket gs://{missing} does not exist"):
        HealthcareDicomExportOperator(
            task_id="x", uri_prefix=f"gs://{missing}/e", deferrable=False, **store_parts(store)
        ).execute(make_context())
    exports = (
        healthcare()
        .projects()
        .locations()
        .datasets()
        .operations()
        .list(name=store.split("/dicomStores/")[0], filter='metadata.apiMethodName="ExportDicomData"')
        .execute()
    )
    assert exports.get("operations", []) == []


def test_ensure_store_operator():
    ds = unique("ens")
    op = HealthcareEnsureDicomStoreOperator(
        task_id="e", project_id=PROJECT, location=LOCATION, dataset_id=ds, dicom_store_id="s"
    )
    assert (
        op.execute(make_context())
        == op.execute(make_context())
        == f"projects/{PROJECT}/locations/{LOCATION}/datasets/{ds}/dicomStores/s"
    )


def test_ensure_store_leaves_the_stream_table_to_the_api_which_streams_every_change():
    """The stream's dataset is made in the Healthcare dataset's region; the table is left to the Healthcare API.
    Every change is a row: a 2010 study arrives (no partition window to fall out of), a deletion is a DELETE
    row, not a removed one, and a storage-class change is a row too."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from scripts.dicom_samples import make_study

    bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials())
    bq_dataset = unique("streams").replace("-", "_")
    table = f"{PROJECT}.{bq_dataset}.stream"
    ds = unique("streamed")
    op = HealthcareEnsureDicomStoreOperator(
        task_id="e",
        project_id=PROJECT,
        location=LOCATION,
        dataset_id=ds,
        dicom_store_id="s",
        stream_table_uri=f"bq://{table}",
    )
    name = op.execute(make_context())
    assert bq.get_dataset(f"{PROJECT}.{bq_dataset}").location == LOCATION
    bucket = new_bucket("streams")
    old = make_study("CT", "20100301", series=1, per_series=1, patient_id="P-OLD")[0]
    new = make_study("CT", "20261101", series=1, per_series=1, patient_id="P-NEW")[0]
    for i, inst in enumerate((old, new)):
        bucket.blob(f"in/{i}.dcm").upload_from_string(inst.data)
    hook = CloudHealthcareDicomHook()
    status = hook.wait_for_operation(
        name=hook.import_dicom(store_name=name, gcs_uri=f"gs://{bucket.name}/in/*.dcm")["name"],
        planner=PollPlanner(0.1, 0.5),
    )
    assert status.success == 2
    assert op.execute(make_context()) == name, "a second run leaves the table and the stream as they are"
    assert bq.get_table(table).time_partitioning is None
    deleted = requests.delete(
        f"{os.environ['HEALTHCARE_API_ENDPOINT']}/v1/{name}/dicomWeb/studies/{new.study}/series/{new.series}/"
        f"instances/{new.sop}",
        timeout=30,
    )
    assert deleted.status_code == 200
    archived = requests.post(
        f"{os.environ['HEALTHCARE_API_ENDPOINT']}/v1/{name}:setBlobStorageSettings",
        json={"blobStorageSettings": {"blobStorageClass": "ARCHIVE"}},
        timeout=30,
    )
    assert hook.wait_for_operation(name=archived.json()["name"], planner=PollPlanner(0.1, 0.5)).success == 1
    rows = bq.query(f"SELECT StudyDate, Type, StorageClass FROM `{table}` ORDER BY LastUpdated, StudyDate").result()
    assert [(str(r.StudyDate), r.Type, r.StorageClass) for r in rows] == [
        ("2010-03-01", "INSERT", "STANDARD"),
        ("2026-11-01", "INSERT", "STANDARD"),
        ("2026-11-01", "DELETE", "STANDARD"),
        ("2010-03-01", "UPDATE", "ARCHIVE"),  # a storage-class change: Type undocumented, a stand-in setting
    ]


def test_ensure_store_refuses_a_stream_table_partitioned_on_a_column_and_a_dataset_in_another_region():
    """BigQuery refuses streamed rows over five years old in a column-partitioned table, and the Healthcare API
    only logs it: such a table is refused up front. A dataset outside the Healthcare region is refused unless
    bigquery_location names it."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials())
    here, elsewhere = unique("here").replace("-", "_"), unique("elsewhere").replace("-", "_")
    made = bigquery.Dataset(f"{PROJECT}.{here}")
    made.location = LOCATION
    bq.create_dataset(made)
    parted = bigquery.Table(f"{PROJECT}.{here}.parted", schema=[bigquery.SchemaField("StudyDate", "DATE")])
    parted.time_partitioning = bigquery.TimePartitioning(type_="MONTH", field="StudyDate")
    bq.create_table(parted)
    bq.create_dataset(elsewhere)  # no location: BigQuery's default, the US multi-region
    kw = {"task_id": "e", "project_id": PROJECT, "location": LOCATION, "dataset_id": unique("refused")}
    with pytest.raises(AirflowFailException, match=r"partitioned on the column StudyDate: .*1825 days"):
        HealthcareEnsureDicomStoreOperator(
            **kw, dicom_store_id="a", stream_table_uri=f"bq://{PROJECT}.{here}.parted"
        ).execute(make_context())
    with pytest.raises(AirflowFailException, match=rf"{elsewhere} is in location US, but .* stay in {LOCATION}"):
        HealthcareEnsureDicomStoreOperator(
            **kw, dicom_store_id="b", stream_table_uri=f"bq://{PROJECT}.{elsewhere}.stream"
        ).execute(make_context())
    accepted = HealthcareEnsureDicomStoreOperator(
        **kw, dicom_store_id="c", stream_table_uri=f"bq://{PROJECT}.{elsewhere}.stream", bigquery_location="US"
    ).execute(make_context())
    assert accepted.endswith("/dicomStores/c")


def _calls(name: str) -> int:
    return admin("/admin/stats")["requests"].get(name, 0)


def test_ensure_store_reads_first_and_creates_only_when_allowed():
    ds = unique("prod")
    kw = {"task_id": "e", "project_id": PROJECT, "location": LOCATION, "dataset_id": ds, "dicom_store_id": "s"}
    with pytest.raises(AirflowFailException, match=r"does not exist.*create_if_missing is off.*datasets\.create"):
        HealthcareEnsureDicomStoreOperator(**kw, create_if_missing="false").execute(make_context())
    name = HealthcareEnsureDicomStoreOperator(**kw).execute(make_context())
    creates = (_calls("datasets.create"), _calls("dicomStores.create"))
    assert HealthcareEnsureDicomStoreOperator(**kw, create_if_missing=False).execute(make_context()) == name
    assert (_calls("datasets.create"), _calls("dicomStores.create")) == creates, "an existing store is only read"
    with pytest.raises(AirflowFailException, match=r"DICOM store .*/dicomStores/other does not exist"):
        HealthcareEnsureDicomStoreOperator(**{**kw, "dicom_store_id": "other"}, create_if_missing=False).execute(
            make_context()
        )


@pytest.mark.parametrize(
    "faults,words",
    [
        (
            {"datasets.create": {"rate": 1.0, "code": 403}},
            r"healthcare\.datasets\.create \(roles/healthcare\.datasetAdmin\)",
        ),
        ({"dicomStores.create": {"rate": 1.0, "code": 403}}, r"healthcare\.dicomStores\.create"),
    ],
)
def test_ensure_store_names_the_missing_permission(faults, words):
    ds = unique("perm")
    if "dicomStores.create" in faults:
        HealthcareEnsureDicomStoreOperator(
            task_id="e", project_id=PROJECT, location=LOCATION, dataset_id=ds, dicom_store_id="first"
        ).execute(make_context())
    admin("/admin/faults", faults)
    op = HealthcareEnsureDicomStoreOperator(
        task_id="e", project_id=PROJECT, location=LOCATION, dataset_id=ds, dicom_store_id="s"
    )
    with pytest.raises(AirflowFailException, match=words):
        op.execute(make_context())


def test_ensure_store_tells_a_missing_read_permission_from_a_missing_dataset():
    ds = unique("read")
    kw = {"task_id": "e", "project_id": PROJECT, "location": LOCATION, "dataset_id": ds, "dicom_store_id": "s"}
    HealthcareEnsureDicomStoreOperator(**kw).execute(make_context())
    admin("/admin/faults", {"dicomStores.get": {"rate": 1.0, "code": 403}})
    with pytest.raises(AirflowFailException, match=r"exists, but this identity may not read.*dicomStores\.get"):
        HealthcareEnsureDicomStoreOperator(**kw).execute(make_context())


# --- retry safety --------------------------------------------------------------------------------

KILLABLE = textwrap.dedent("""
    import json, sys
    from dicom_pipelines.operators import HealthcareDicomImportOperator
    state_file, store_json, uri = sys.argv[1], sys.argv[2], sys.argv[3]

    class FileStateStore:
        def get(self, key, default=None):
            return default
        def set(self, key, value):
            with open(state_file, "w") as fh:
                json.dump({key: value}, fh)

    class TI:
        max_tries = 2
        def xcom_push(self, key, value):
            pass

    op = HealthcareDicomImportOperator(task_id="imp", gcs_uri=uri, deferrable=False, poll_interval=0.1, retries=2,
                                       **json.loads(store_json))
    op.execute({"ti": TI(), "task_state_store": FileStateStore()})
""")


def test_killed_worker_retry_reattaches_without_a_duplicate(tmp_path):
    """A real process is killed with SIGKILL while it waits; the next try finds what it recorded."""
    store = new_store()
    _, uri = seed_import(8)
    admin("/admin/settings", {"latency_s": 0.3})
    state_file = tmp_path / "state.json"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path.cwd() / "plugins"), str(Path.cwd())]))
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, str(state_file), json.dumps(store_parts(store)), uri],
        env=env,
        start_new_session=True,
    )
    for _ in range(300):
        if state_file.exists() and "name" in state_file.read_text():
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    entry = json.loads(state_file.read_text())[OPERATION_STATE_KEY]

    class TI(FakeTI):
        max_tries = 2

    ctx = {"ti": TI(), "task_state_store": FakeStateStore({OPERATION_STATE_KEY: entry})}
    result = importer(store, uri, retries=2).execute(ctx)
    assert result["operation_name"] == entry["name"] and result["success"] == 8
    assert [o["name"] for o in import_ops(store)] == [entry["name"]]


def deferred_importer() -> tuple[str, HealthcareDicomImportOperator]:
    """A store and an import operator that submitted a slow import into it and deferred."""
    store = new_store()
    _, uri = seed_import(10)
    admin("/admin/settings", {"latency_s": 0.5})
    op = importer(store, uri, deferrable=True)
    with pytest.raises(TaskDeferred):
        op.execute(make_context())
    return store, op


@pytest.mark.parametrize(
    "state,cancelled",
    [
        ("failed", True),  # a user marked the running task failed: Airflow SIGTERMs it
        ("restarting", True),  # a user cleared it while it ran
        ("running", False),  # a graceful worker SIGTERM, or execution_timeout: the next try re-attaches
        ("success", False),
        (None, False),
    ],
)
def test_on_kill_cancels_only_when_a_user_ended_the_task(monkeypatch, state, cancelled):
    """Airflow's task-states lookup is replaced by its answer: the state the task is in when on_kill runs."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(lambda **kw: {"run": {"task": state}}))
    store, op = deferred_importer()
    op.on_kill()  # the cancel call returns once the API has recorded it
    assert bool(import_ops(store)[0]["metadata"].get("cancelRequested")) is cancelled


def test_on_kill_never_raises_from_the_signal_handler(monkeypatch):
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(lambda **kw: {"run": {"task": "failed"}}))
    store, op = deferred_importer()
    admin("/admin/faults", {"operations.cancel": {"rate": 1.0, "code": 403}})
    try:
        op.on_kill()
    finally:
        admin("/admin/faults", {})


# --- de-identification ---------------------------------------------------------------------------


def deidentifier(store: str, dest_id: str, **kw) -> HealthcareDicomDeidentifyOperator:
    kw.setdefault("deferrable", False)
    kw.setdefault("poll_interval", 0.1)
    return HealthcareDicomDeidentifyOperator(
        task_id="deid", **store_parts(store), destination_dicom_store_id=dest_id, **kw
    )


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"filter_profile": "EVERYTHING"}, "filter_profile"),
        ({"keep_tags": ["Modality"], "remove_tags": ["PatientID"]}, "cannot be combined with keep_tags"),
        ({"keep_tags": "Modality,NotATag"}, "must be a DICOM keyword"),
        ({"text_redaction_mode": "BLUR"}, "text_redaction_mode"),
        ({"destination_dicom_store_id": "s"}, "must differ from the source store"),
        ({"filter_uri": "s3://b/f.txt"}, "filter_uri"),
    ],
)
def test_deidentify_refuses_bad_config_before_any_call(kw, words):
    store = f"projects/{PROJECT}/locations/{LOCATION}/datasets/never-called/dicomStores/s"
    op = deidentifier(store, kw.pop("destination_dicom_store_id", "d"), **kw)
    with pytest.raises(AirflowFailException, match=words):
        op.execute(make_context())


def test_deidentify_into_an_empty_store_only():
    hook = CloudHealthcareDicomHook()
    store = new_store()
    _, uri = seed_import(3)
    importer(store, uri).execute(make_context())
    parts = store_parts(store)
    dest = hook.ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=parts["dataset_id"], dicom_store_id="research"
    )
    result = deidentifier(store, "research", keep_tags="Modality, PixelData").execute(make_context())
    assert (result["success"], result["failure"], result["destination_store"]) == (3, 0, dest)
    assert hook.get_store_metrics(store_name=dest)["instanceCount"] == 3
    admin("/admin/settings", {"metrics_lag_s": 600.0})  # Google's metrics may not show recent changes yet
    try:
        assert hook.get_store_metrics(store_name=dest)["instanceCount"] == 0
        with pytest.raises(AirflowFailException, match="already holds instances"):
            deidentifier(store, "research").execute(make_context())
    finally:
        admin("/admin/settings", {"metrics_lag_s": 0.0})
    with pytest.raises(AirflowFailException, match="must exist before de-identifying"):
        deidentifier(store, "nowhere").execute(make_context())


def test_deidentify_modes_the_local_stack_cannot_do_fail_once_with_its_words():
    store = new_store()
    CloudHealthcareDicomHook().ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=store_parts(store)["dataset_id"], dicom_store_id="r"
    )
    with pytest.raises(AirflowFailException, match="not supported by the local stack"):
        deidentifier(store, "r", text_redaction_mode="REDACT_ALL_TEXT").execute(make_context())


def reporting_settings():
    """A bucket for reports and quarantined copies, and the importer settings that use it (two failures allowed)."""
    reports = new_bucket("reports")
    return reports, {
        "failure_report_uri": f"gs://{reports.name}/nightly/run-1.ndjson",
        "quarantine_prefix": f"gs://{reports.name}/quarantine",
        "max_failures": 2,
    }


def test_a_clean_attempt_removes_an_earlier_attempts_report_and_quarantined_copies():
    """The first attempt failed two files (reported, quarantined); they were fixed and the run's next attempt
    imports cleanly: the report and the copies are gone, so nothing names a file that was imported after all."""
    store = new_store()
    bucket, uri = seed_import(2, extra={"junk.dcm": b"junk", "empty.dcm": b""})
    reports, settings = reporting_settings()
    importer(store, uri, **settings).execute(make_context())
    assert len(list(gcs().list_blobs(reports.name, prefix="quarantine/"))) == 2
    gcs().bucket(bucket).blob("in/junk.dcm").delete()
    gcs().bucket(bucket).blob("in/empty.dcm").delete()
    result = importer(store, uri, **settings).execute(make_context())
    assert (result["failure"], result["failure_report_uri"]) == (0, None)
    assert [b.name for b in gcs().list_blobs(reports.name)] == []


def test_an_attempt_that_fails_fewer_files_keeps_only_their_copies():
    store = new_store()
    bucket, uri = seed_import(2, extra={"junk.dcm": b"junk", "empty.dcm": b""})
    reports, settings = reporting_settings()
    importer(store, uri, **settings).execute(make_context())
    gcs().bucket(bucket).blob("in/junk.dcm").delete()
    result = importer(store, uri, **settings).execute(make_context())
    assert result["failure"] == 1
    assert sorted(b.name for b in gcs().list_blobs(reports.name)) == [
        "nightly/run-1.ndjson",
        f"quarantine/{bucket}/in/empty.dcm",
    ]


def test_a_deidentification_failure_names_no_original_uid(capfd):
    """A filter line the store does not hold fails one instance; its original UID reaches neither the task log nor
    the XCom (Cloud Logging, behind the operation's logs_url, keeps it)."""
    hook = CloudHealthcareDicomHook()
    store = new_store()
    _, uri = seed_import(2)
    importer(store, uri).execute(make_context())
    hook.ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=store_parts(store)["dataset_id"], dicom_store_id="cohort"
    )
    missing = "1.2.826.0.1.3680043.8.498.99999"
    filters = new_bucket("filters")
    filters.blob("f.txt").upload_from_string(f"/studies/{missing}\n")
    result = deidentifier(store, "cohort", filter_uri=f"gs://{filters.name}/f.txt", max_failures=1).execute(
        make_context()
    )
    out = "".join(capfd.readouterr())
    assert result["failure"] == 1 and len(result["failed_sources"]) == 1
    assert missing not in json.dumps(result) and missing not in out
    assert result["failed_sources"][0]["source"].startswith("instance #1 (UIDs withheld")


def test_mask_uids():
    from dicom_pipelines.operators import mask_uids

    assert mask_uids("studies/1.2.840.10008/series/1.2.3 not found") == "studies/<UID>/series/<UID> not found"
    assert mask_uids("code 5 at 10.5 s") == "code 5 at 10.5 s"


def test_execution_timeout_is_not_swallowed_by_the_failure_report(monkeypatch):
    """Airflow raises AirflowTaskTimeout inside execute at execution_timeout; reading the failures for the report is
    best effort, but must let it through so that Airflow ends the try."""
    from airflow.providers.common.compat.sdk import AirflowTaskTimeout

    store, name = _finished_import({"junk.dcm": b"junk"})

    def timed_out(self, **kwargs):
        raise AirflowTaskTimeout()

    monkeypatch.setattr(CloudHealthcareDicomHook, "list_operation_errors", timed_out)
    op = importer(store, "gs://bucket/x", max_failures=1, failure_report_uri="gs://nowhere/r.ndjson")
    with pytest.raises(AirflowTaskTimeout):
        op.execute_complete(make_context(), make_event("done", "", name))


def test_a_deploy_that_changes_retries_re_attaches_to_the_running_operation():
    """The try recorded its operation under max_tries=2; a deploy then set retries=5. max_tries - retries would call
    that another generation and start a second import; max_tries itself does not change."""
    store = new_store()
    _, uri = seed_import(4)
    admin("/admin/settings", {"latency_s": 0.2})
    running = CloudHealthcareDicomHook().import_dicom(store_name=store, gcs_uri=uri)["name"]

    class TI(FakeTI):
        max_tries = 2

    state = FakeStateStore({OPERATION_STATE_KEY: {"generation": 2, "submit_started": time.time(), "name": running}})
    result = importer(store, uri, retries=5).execute({"ti": TI(), "task_state_store": state})
    assert result["operation_name"] == running and [o["name"] for o in import_ops(store)] == [running]


# --- imports as files arrive --------------------------------------------------------------------


def test_an_arrival_import_after_its_deferral_names_the_original_files_and_a_redelivery_imports_nothing():
    """The notified files are staged, imported in one deferred operation and evaluated by a fresh operator (as
    after a deferral): the failed file is named by its own path, the others are marked, the copies are gone; the
    same files notified again start no operation."""
    from dicom_pipelines.operators import HealthcareDicomArrivalImportOperator
    from dicom_pipelines.triggers import OPERATION_XCOM_KEY

    store = new_store()
    bucket, _ = seed_import(3, extra={"junk.dcm": b"junk"})
    arrivals = [{"bucket": b.bucket.name, "name": b.name, "generation": b.generation} for b in gcs().list_blobs(bucket)]

    def arrival_import() -> HealthcareDicomArrivalImportOperator:
        return HealthcareDicomArrivalImportOperator(
            task_id="import_arrivals",
            arrivals=arrivals,
            staging_prefix=f"gs://{bucket}/_dicom_arrivals",
            failure_report_uri=f"gs://{bucket}/import-failures/run-1.ndjson",
            max_failures=1,
            deferrable=True,
            poll_interval=0.1,
            **store_parts(store),
        )

    admin("/admin/settings", {"latency_s": 0.3})
    ctx = {**make_context(), "run_id": "asset_triggered__2026-12-05T10:00:00+00:00_x"}
    with pytest.raises(TaskDeferred) as deferred:
        arrival_import().execute(ctx)
    name = deferred.value.trigger.operation_name
    assert ctx["ti"].xcom[OPERATION_XCOM_KEY] == name
    folder = f"_dicom_arrivals/asset_triggered__2026-12-05T10_00_00_00_00_x/{bucket}/in/"
    assert len(list(gcs().list_blobs(bucket, prefix=folder))) == 4
    CloudHealthcareDicomHook().wait_for_operation(name=name, planner=PollPlanner(0.1, 0.5))

    result = arrival_import().execute_complete(ctx, make_event("done", "", name))
    assert (result["success"], result["failure"]) == (3, 1)
    assert [s["source"] for s in result["failed_sources"]] == [f"gs://{bucket}/in/junk.dcm"]
    assert not list(gcs().list_blobs(bucket, prefix="_dicom_arrivals/"))
    marked = {b.name for b in gcs().list_blobs(bucket) if (b.metadata or {}).get("dicom-imported-crc32c") == b.crc32c}
    assert marked == {a["name"] for a in arrivals} - {"in/junk.dcm"}

    operations = len(import_ops(store))
    again = {**make_context(), "run_id": "asset_triggered__2026-12-05T10:05:00+00:00_y"}
    arrivals[:] = [a for a in arrivals if a["name"] != "in/junk.dcm"]
    with pytest.raises(AirflowSkipException, match="3 were imported by an earlier run"):
        arrival_import().execute(again)
    assert len(import_ops(store)) == operations
