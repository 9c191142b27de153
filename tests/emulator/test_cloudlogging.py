"""The local Cloud Logging: what Google's client writes comes back through entries.list, filtered as on Google."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud.logging_v2 import Client
from google.cloud.logging_v2.resource import Resource

from tests.helpers import LOCATION, PROJECT, admin, import_, logs, new_store, seed_import, unique

pytestmark = pytest.mark.usefixtures("stack")


def client() -> Client:
    return Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),
        _use_grpc=False,
        client_options={"api_endpoint": os.environ["LOGGING_API_ENDPOINT"]},
    )


def call(verb: str, body: dict) -> requests.Response:
    return requests.post(f"{os.environ['LOGGING_API_ENDPOINT']}/v2/entries:{verb}", json=body, timeout=30)


def entry(op_id: str, source: str, severity: str = "ERROR") -> dict:
    return {
        "logName": f"projects/{PROJECT}/logs/healthcare.googleapis.com%2Fimport_dicom",
        "resource": {"type": "healthcare_dicom_store", "labels": {"dicom_store_id": "s"}},
        "severity": severity,
        "operation": {"id": op_id, "producer": "healthcare.googleapis.com"},
        "jsonPayload": {"source": source, "error": {"code": 3, "message": "not DICOM"}},
    }


def test_the_official_client_writes_and_reads_back_a_struct_entry():
    log_id = unique("app")
    logger = client().logger(log_id)
    logger.log_struct({"source": "gs://b/x.dcm", "n": 1}, severity="WARNING", resource=Resource("global", {}))
    # the client adds an instrumentation entry of its own to the first write; the filter leaves it out
    query = f'logName="projects/{PROJECT}/logs/{log_id}" AND severity="WARNING" AND jsonPayload.source:"X.DCM"'
    found = list(client().list_entries(filter_=query))
    assert len(found) == 1
    assert found[0].payload == {"source": "gs://b/x.dcm", "n": 1} and found[0].severity == "WARNING"
    assert found[0].timestamp is not None and found[0].insert_id


def test_filter_by_resource_operation_and_time_pages_in_order():
    op_id = unique("op")
    start = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert call("write", {"entries": [entry(op_id, f"gs://b/{i}.dcm") for i in range(5)]}).status_code == 200
    assert call("write", {"entries": [entry(unique("other"), "gs://b/other.dcm")]}).status_code == 200
    query = f'resource.type="healthcare_dicom_store" AND operation.id:"{op_id}" AND timestamp>="{start}"'
    sources, token = [], None
    while True:
        body = {"resourceNames": [f"projects/{PROJECT}"], "filter": query, "pageSize": 2}
        page = call("list", {**body, **({"pageToken": token} if token else {})}).json()
        sources += [e["jsonPayload"]["source"] for e in page["entries"]]
        token = page.get("nextPageToken")
        if not token:
            break
    assert sources == [f"gs://b/{i}.dcm" for i in range(5)]
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)).isoformat()
    body = {"resourceNames": [f"projects/{PROJECT}"], "filter": f'operation.id="{op_id}" AND timestamp>="{later}"'}
    assert call("list", body).json()["entries"] == []
    other_project = {"resourceNames": ["projects/elsewhere"], "filter": f'operation.id="{op_id}"'}
    assert call("list", other_project).json()["entries"] == []


@pytest.mark.parametrize(
    "body,field",
    [
        ({"entries": [{"jsonPayload": {}, "resource": {"type": "global"}}]}, "logName"),
        ({"entries": [{**entry("x", "s"), "severity": "LOUD"}]}, "severity"),
        ({"entries": [{**entry("x", "s"), "textPayload": "t"}]}, "only one of"),
        ({"entries": [{**entry("x", "s"), "colour": "red"}]}, "colour"),
        ({"entries": []}, "entries"),
    ],
)
def test_write_refuses_malformed_entries(body, field):
    resp = call("write", body)
    assert resp.status_code == 400 and field in resp.json()["error"]["message"]


@pytest.mark.parametrize(
    "body,words",
    [
        ({"filter": 'operation.id="1"'}, "resourceNames"),
        ({"resourceNames": ["folders/1"]}, "only projects/"),
        ({"resourceNames": [f"projects/{PROJECT}"], "filter": 'a="1" OR b="2"'}, "OR and NOT"),
        ({"resourceNames": [f"projects/{PROJECT}"], "filter": "(a=1)"}, "cannot read"),
        ({"resourceNames": [f"projects/{PROJECT}"], "pageSize": 5000}, "pageSize"),
        ({"resourceNames": [f"projects/{PROJECT}"], "orderBy": "severity"}, "orderBy"),
    ],
)
def test_list_refuses_what_it_does_not_implement(body, words):
    resp = call("list", body)
    assert resp.status_code == 400 and words in resp.json()["error"]["message"]


def test_the_local_healthcare_api_logs_each_failed_file_as_google_documents():
    store = new_store()
    bucket, uri = seed_import(1, extra={"empty.dcm": b"", "notes.txt": b"not dicom"})
    op = import_(store, uri)
    assert op["metadata"]["counter"]["failure"] == "2"
    op_id = op["name"].rsplit("/", 1)[1]
    assert op["metadata"]["logsUrl"].startswith("https://console.cloud.google.com/logs/query;query=")
    assert op_id in op["metadata"]["logsUrl"] and f"project={PROJECT}" in op["metadata"]["logsUrl"]
    query = f'resource.type="healthcare_dicom_store" AND operation.id="{op["name"]}"'  # Google's: the full name
    found = list(client().list_entries(filter_=query))
    assert len(found) == 2 and all(e.operation["id"] == op["name"] for e in found)
    for e in found:
        assert e.severity == "ERROR" and e.log_name.endswith("/logs/healthcare.googleapis.com%2Fimport_dicom")
        assert e.payload["@type"] == "type.googleapis.com/google.cloud.healthcare.logging.ImportDicomLogEntry"
        assert e.payload["error"]["code"] == 3 and e.payload["error"]["message"]
        assert e.resource.labels["dicom_store_id"] == store.rsplit("/", 1)[1]
        assert e.resource.labels["location"] == LOCATION
    assert sorted(p["source"] for p in logs(op)) == [f"gs://{bucket}/in/empty.dcm", f"gs://{bucket}/in/notes.txt"]
    assert admin("/admin/health")["status"] == "ok"
