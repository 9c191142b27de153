"""Clients for the local stack used by the tests: all over HTTP, as a user's code would be."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from googleapiclient.discovery import build

from dicom_pipelines.responses import operation_log_filter

PROJECT = "test-project"
LOCATION = "us-central1"


def dag_bag(dag_folder: str | Path):
    """Airflow's DagBag over ``dag_folder``, imported from where the installed Airflow keeps it (3.3:
    ``airflow.dag_processing.dagbag``; 3.1, the oldest the package supports: ``airflow.models.dagbag``)."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag(dag_folder=str(dag_folder))


def healthcare(version: str = "v1"):
    return build(
        "healthcare",
        version,
        static_discovery=True,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": os.environ["HEALTHCARE_API_ENDPOINT"]},
        cache_discovery=False,
    )


def gcs() -> storage.Client:
    return storage.Client(project=PROJECT, credentials=AnonymousCredentials())


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_bucket(prefix: str = "b") -> storage.Bucket:
    return gcs().create_bucket(unique(prefix))


def new_store(svc=None, version: str = "v1") -> str:
    svc = svc or healthcare(version)
    parent = f"projects/{PROJECT}/locations/{LOCATION}"
    ds_id = unique("ds")
    wait(svc.projects().locations().datasets().create(parent=parent, datasetId=ds_id, body={}).execute(), svc)
    store = (
        svc.projects()
        .locations()
        .datasets()
        .dicomStores()
        .create(parent=f"{parent}/datasets/{ds_id}", dicomStoreId="store", body={})
        .execute()
    )
    return store["name"]


def wait(op: dict, svc=None, timeout: float = 120) -> dict:
    svc = svc or healthcare()
    deadline = time.time() + timeout
    while time.time() < deadline:
        cur = svc.projects().locations().datasets().operations().get(name=op["name"]).execute()
        if cur.get("done"):
            return cur
        time.sleep(0.1)
    raise TimeoutError(op["name"])


def upload(bucket: storage.Bucket, name: str, data: bytes) -> None:
    bucket.blob(name).upload_from_string(data, content_type="application/dicom")


def submit_import(store: str, uri: str, svc=None) -> dict:
    """Start an import through the discovery client; returns the operation as first answered."""
    svc = svc or healthcare()
    return (
        svc.projects()
        .locations()
        .datasets()
        .dicomStores()
        .import_(name=store, body={"gcsSource": {"uri": uri}})
        .execute()
    )


def import_(store: str, uri: str, svc=None) -> dict:
    svc = svc or healthcare()
    return wait(submit_import(store, uri, svc), svc)


def export(store: str, body: dict, svc=None) -> dict:
    svc = svc or healthcare()
    return wait(svc.projects().locations().datasets().dicomStores().export(name=store, body=body).execute(), svc)


def logs(op: dict) -> list[dict]:
    """The payloads of an operation's error entries, read from the local Cloud Logging over plain REST, filtered
    as the product filters them (``operation.id`` is the operation's full name)."""
    project = op["name"].split("/")[1]
    resp = requests.post(
        os.environ["LOGGING_API_ENDPOINT"] + "/v2/entries:list",
        json={"resourceNames": [f"projects/{project}"], "filter": operation_log_filter(op["name"]), "pageSize": 1000},
        timeout=30,
    )
    resp.raise_for_status()
    return [e["jsonPayload"] for e in resp.json().get("entries", [])]


def admin(path: str, body: dict | None = None) -> dict:
    url = os.environ["HEALTHCARE_API_ENDPOINT"] + path
    resp = requests.post(url, json=body, timeout=30) if body is not None else requests.get(url, timeout=30)
    resp.raise_for_status()
    return resp.json()


class FakeStateStore:
    """Stands in for ``context["task_state_store"]`` (kept across tries of the same task)."""

    def __init__(self, data: dict | None = None):
        self.data = data if data is not None else {}

    def get(self, key, default=None):
        return self.data.get(key, default)

    def set(self, key, value):
        self.data[key] = value


class FakeTI:
    dag_id, task_id, run_id, map_index, max_tries = "dag", "task", "run", -1, 0

    def __init__(self):
        self.xcom = {}

    def xcom_push(self, key, value):
        self.xcom[key] = value


def make_context(state: FakeStateStore | None = None) -> dict:
    return {"ti": FakeTI(), "task_state_store": state if state is not None else FakeStateStore()}


def seed_import(n: int = 3, modality: str = "CT", extra: dict[str, bytes] | None = None) -> tuple[str, str]:
    """A bucket holding ``n`` generated instances (plus ``extra`` objects); returns (bucket, uri)."""
    from scripts.dicom_samples import make_study

    bucket = new_bucket("seed")
    for inst in make_study(modality, "20261120", series=1, per_series=n):
        upload(bucket, f"in/{inst.sop}.dcm", inst.data)
    for name, data in (extra or {}).items():
        upload(bucket, f"in/{name}", data)
    return bucket.name, f"gs://{bucket.name}/in/**"


def store_parts(store: str) -> dict:
    parts = store.split("/")
    return {"project_id": parts[1], "location": parts[3], "dataset_id": parts[5], "dicom_store_id": parts[7]}


def import_ops(store: str) -> list[dict]:
    svc = healthcare()
    ops = (
        svc.projects()
        .locations()
        .datasets()
        .operations()
        .list(name=store.split("/dicomStores/")[0], filter='metadata.apiMethodName="ImportDicomData"')
        .execute()
    )
    return ops.get("operations", [])


def start_import(n: int = 3, latency: float = 0.0, extra: dict | None = None, prefix: str = "op") -> str:
    """Submit an import of ``n`` generated instances into a new store; returns the operation name."""
    from dicom_pipelines.hooks import CloudHealthcareDicomHook

    hook = CloudHealthcareDicomHook()
    store = hook.ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=unique(prefix), dicom_store_id="s"
    )
    _, uri = seed_import(n, extra=extra)
    admin("/admin/settings", {"latency_s": latency})
    return hook.import_dicom(store_name=store, gcs_uri=uri)["name"]
