"""End to end: files uploaded to the source bucket reach the DICOM store with no manual trigger.

The local stack's Cloud Storage (fake-gcs-server) publishes each finalized object to Google's Pub/Sub emulator, as a
bucket notification does on Google; Airflow's triggerer pulls the subscription (the Google provider's
``PubsubPullTrigger``, through common-messaging's ``MessageQueueTrigger``) and the scheduler starts
``dicom_arrival_import`` runs on the asset events. Files are uploaded with ``google-cloud-storage``, read back through
DICOMweb, and a redelivery is published with ``google-cloud-pubsub``: real clients only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1, storage

from scripts.dicom_samples import make_study
from scripts.stack import DEMO_IDS, PUBSUB_IDS
from tests.e2e.conftest import running_deployment
from tests.listeners import wait_until

ARRIVALS, NIGHTLY = "dicom_arrival_import", "dicom_nightly_import"
BUCKET = DEMO_IDS["SOURCE_BUCKET"]
STORE = (
    f"projects/{DEMO_IDS['GCP_PROJECT']}/locations/{DEMO_IDS['HEALTHCARE_LOCATION']}/datasets/"
    f"{DEMO_IDS['HEALTHCARE_DATASET']}/dicomStores/{DEMO_IDS['DICOM_STORE']}"
)
DAY = dt.date.today().isoformat()


@pytest.fixture(scope="module")
def arrivals(tmp_path_factory):
    """The local stack with Pub/Sub, Airflow on PostgreSQL, the source bucket and the store, and the arrival DAG
    unpaused. Instances import in 10 ms each, so a run's time is Airflow's own."""
    with running_deployment(
        tmp_path_factory.mktemp("arrivals"),
        "postgres",
        latency=0.01,
        pubsub=True,
        extra_env={"DICOM_ARRIVAL_POLL_SECONDS": "1"},
    ) as (stack, client, gcs):
        gcs.create_bucket(BUCKET)
        endpoint = stack.stack_env()["HEALTHCARE_API_ENDPOINT"]
        dataset = STORE.split("/dicomStores/")[0]
        requests.post(
            f"{endpoint}/v1/{dataset.rsplit('/datasets/', 1)[0]}/datasets",
            params={"datasetId": DEMO_IDS["HEALTHCARE_DATASET"]},
            json={},
            timeout=10,
        ).raise_for_status()
        wait_until("the dataset", lambda: requests.get(f"{endpoint}/v1/{dataset}", timeout=10).ok, 30)  # an LRO
        store_id = {"dicomStoreId": DEMO_IDS["DICOM_STORE"]}
        requests.post(f"{endpoint}/v1/{dataset}/dicomStores", params=store_id, json={}, timeout=10).raise_for_status()
        os.environ["PUBSUB_EMULATOR_HOST"] = stack.stack_env()["PUBSUB_EMULATOR_HOST"]  # restored by the deployment
        client.wait_for_dags([ARRIVALS, NIGHTLY])
        client.unpause(ARRIVALS)
        yield stack, client, gcs, endpoint


def upload_study(gcs: storage.Client, folder: str, files: int, seed: int, extra: dict[str, bytes] | None = None):
    """``files`` instances of one synthetic study (plus ``extra`` files) under ``incoming/<today>/<folder>/``,
    uploaded concurrently as a modality's sender would; their object names."""
    study = make_study("CT", DAY.replace("-", ""), series=1, per_series=files, seed=seed, rows=16, cols=16)
    objects = {f"incoming/{DAY}/{folder}/{i:04d}.dcm": inst.data for i, inst in enumerate(study)}
    objects.update({f"incoming/{DAY}/{folder}/{name}": data for name, data in (extra or {}).items()})
    bucket = gcs.bucket(BUCKET)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda item: bucket.blob(item[0]).upload_from_string(item[1]), objects.items()))
    return study, sorted(objects)


def arrival_runs(client) -> list[dict]:
    return sorted(client.runs(ARRIVALS), key=lambda r: r["run_after"])


def settled_runs(client, since: int, done, timeout: float = 180) -> list[dict]:
    """The arrival runs after the first ``since``, once ``done()`` holds and every run has ended."""

    def settled() -> bool:
        runs = arrival_runs(client)
        return len(runs) > since and all(r["state"] in ("success", "failed") for r in runs) and done()

    wait_until("the arrival runs", settled, timeout)
    return arrival_runs(client)[since:]


def imports(endpoint: str) -> list[dict]:
    ops = requests.get(f"{endpoint}/v1/{STORE.split('/dicomStores/')[0]}/operations", timeout=10).json()
    return [o for o in ops.get("operations", []) if "Import" in o.get("metadata", {}).get("apiMethodName", "")]


def store_instances(endpoint: str, study_uid: str) -> list[dict]:
    web = DICOMwebClient(f"{endpoint}/v1/{STORE}/dicomWeb")
    return web.search_for_instances(study_instance_uid=study_uid, limit=1000)


def test_uploaded_files_reach_the_store_and_a_bad_one_is_named(arrivals, capsys):
    """Six CT instances and one broken ``.dcm`` uploaded: with no trigger, a run imports the six (read back through
    DICOMweb), fails on the broken file as the nightly would (no tolerance set) and names it by its own path, not
    the staged copy's; a ``.txt`` file is no arrival."""
    stack, client, gcs, endpoint = arrivals
    before = len(arrival_runs(client))
    started = time.time()
    study, _ = upload_study(gcs, "first", 6, seed=1, extra={"broken.dcm": b"not dicom", "notes.txt": b"hello"})
    runs = settled_runs(client, before, lambda: len(store_instances(endpoint, study[0].study)) == 6)
    found = store_instances(endpoint, study[0].study)
    seconds = time.time() - started
    with capsys.disabled():
        print(f"\n[arrivals] 7 files uploaded: {len(runs)} run(s), in the store {seconds:.0f}s after the upload")
    assert len(found) == 6
    assert all(r["run_type"] == "asset_triggered" for r in runs), runs
    assert [r["state"] for r in runs].count("failed") == 1, runs
    failed = next(r for r in runs if r["state"] == "failed")
    report = gcs.bucket(BUCKET).blob(f"import-failures/{ARRIVALS}/{failed['dag_run_id']}.ndjson").download_as_text()
    sources = [json.loads(line)["source"] for line in report.splitlines()]
    assert sources == [f"gs://{BUCKET}/incoming/{DAY}/first/broken.dcm"], sources
    marked = [
        b.name
        for b in gcs.list_blobs(BUCKET, prefix=f"incoming/{DAY}/first/")
        if (b.metadata or {}).get("dicom-imported-crc32c") == b.crc32c
    ]
    assert len(marked) == 6 and "broken.dcm" not in " ".join(marked), marked
    assert not list(gcs.list_blobs(BUCKET, prefix="_dicom_arrivals/")), "the staged copies are deleted"


def test_a_redelivered_notification_imports_nothing_twice(arrivals):
    """The same notification published again (as Pub/Sub may redeliver it): the run that gets it imports nothing,
    starts no operation, and says why."""
    stack, client, gcs, endpoint = arrivals
    study, names = upload_study(gcs, "again", 3, seed=2)
    runs = settled_runs(client, len(arrival_runs(client)), lambda: len(store_instances(endpoint, study[0].study)) == 3)
    assert all(r["state"] == "success" for r in runs), runs
    operations = len(imports(endpoint))
    blob = gcs.bucket(BUCKET).get_blob(names[0])
    publisher = pubsub_v1.PublisherClient(credentials=AnonymousCredentials())
    topic = publisher.topic_path(DEMO_IDS["GCP_PROJECT"], PUBSUB_IDS["topic"])
    attributes = {
        "bucketId": BUCKET,
        "objectId": blob.name,
        "objectGeneration": str(blob.generation),
        "eventType": "OBJECT_FINALIZE",
        "payloadFormat": "NONE",
    }
    before = len(arrival_runs(client))
    publisher.publish(topic, b"", **attributes).result(timeout=30)
    publisher.publish(topic, b"", **attributes).result(timeout=30)
    again = settled_runs(client, before, lambda: True)
    assert [r["state"] for r in again] == ["success"] * len(again), again
    assert len(imports(endpoint)) == operations, "no new import operation"
    assert len(store_instances(endpoint, study[0].study)) == 3
    states = {r["dag_run_id"]: client.task_states(ARRIVALS, r["dag_run_id"]) for r in again}
    assert all(s["import_arrivals"] == "skipped" for s in states.values()), states
    log = (stack.dir / "airflow" / "logs" / f"dag_id={ARRIVALS}" / f"run_id={again[-1]['dag_run_id']}").glob(
        "task_id=import_arrivals/attempt=1.log"
    )
    text = "".join(p.read_text() for p in log)
    assert "were imported by an earlier run (redelivered notifications)" in text, text[-2000:]


def test_a_burst_of_300_files_makes_a_handful_of_runs(arrivals, capsys):
    """A CT study of 300 instances uploaded at once: every one in the store, in a few runs, one import each."""
    stack, client, gcs, endpoint = arrivals
    before, operations = len(arrival_runs(client)), len(imports(endpoint))
    started = time.time()
    study, _ = upload_study(gcs, "burst", 300, seed=3)
    runs = settled_runs(client, before, lambda: len(store_instances(endpoint, study[0].study)) == 300, timeout=300)
    seconds = time.time() - started
    new_ops = imports(endpoint)[operations:]
    counters = [o.get("metadata", {}).get("counter", {}) for o in new_ops]
    with capsys.disabled():
        print(
            f"\n[arrivals] burst of 300 files: {len(runs)} runs, {len(new_ops)} import operations, all in the store "
            f"{seconds:.0f}s after the upload began"
        )
    assert all(r["state"] == "success" for r in runs), runs
    assert len(runs) <= 5, runs
    assert len(new_ops) == len(runs)
    assert sum(int(c.get("success", 0)) for c in counters) == 300, counters
    assert len(store_instances(endpoint, study[0].study)) == 300
    # each run that imported told the store's consumers, with counts and never a path
    events = client.ok("GET", "/assets/events", params={"source_dag_id": ARRIVALS, "limit": 100})["asset_events"]
    announced = [e for e in events if e["source_run_id"] in {r["dag_run_id"] for r in runs}]
    assert sum(e["extra"]["imported"] for e in announced) == 300, announced
    assert all(e["uri"] == f"healthcare://{STORE}" and "incoming/" not in json.dumps(e["extra"]) for e in announced)


def test_the_nightly_import_reports_what_arrival_runs_imported(arrivals):
    """The night's import still reads the whole day's folder (the safety net) and says how many of its files the
    arrival runs had imported: all but the broken one."""
    stack, client, gcs, endpoint = arrivals
    client.unpause(NIGHTLY)
    run = client.trigger(NIGHTLY, {"day": DAY, "max_failures": 1}, run_id=f"safety-net-{DAY}")
    run = client.wait_run(NIGHTLY, run["dag_run_id"], timeout=300)
    assert run["state"] == "success", run
    summary = client.xcom(NIGHTLY, run["dag_run_id"], "verify")
    assert summary["files_matched"] == 310, summary
    assert summary["already_imported_by_arrival"] == 309, summary


@pytest.mark.drills
def test_drill_triggerer_killed_while_notifications_are_pending(arrivals, capsys):
    """The triggerer dies (SIGKILL) and files arrive while it is down: their notifications wait in the subscription.
    After it is back, every file is imported, once."""
    stack, client, gcs, endpoint = arrivals
    before, operations = len(arrival_runs(client)), len(imports(endpoint))
    stack.stop("triggerer", signal.SIGKILL)
    study, _ = upload_study(gcs, "while-down", 20, seed=4)  # each upload publishes its notification
    assert len(arrival_runs(client)) == before, "no triggerer, no run"
    stack.start_airflow()
    runs = settled_runs(client, before, lambda: len(store_instances(endpoint, study[0].study)) == 20, timeout=300)
    new_ops = imports(endpoint)[operations:]
    imported = sum(int(o.get("metadata", {}).get("counter", {}).get("success", 0)) for o in new_ops)
    with capsys.disabled():
        print(f"\n[drill arrivals] triggerer killed, 20 files uploaded, back: {len(runs)} run(s), {imported} imported")
    assert all(r["state"] == "success" for r in runs), runs
    assert imported == 20, new_ops
    assert len(store_instances(endpoint, study[0].study)) == 20


def test_every_notification_is_acknowledged_once_its_files_are_settled(arrivals):
    """The runs acknowledge what the trigger pulled (it does not): were any left, Pub/Sub would deliver it again
    after the subscription's 60 s acknowledgement deadline, and a run would follow."""
    stack, client, gcs, endpoint = arrivals
    runs = settled_runs(client, 0, lambda: True)
    deadline = time.time() + 75
    while time.time() < deadline:
        assert len(arrival_runs(client)) == len(runs), "a notification came again: it was not acknowledged"
        time.sleep(5)
