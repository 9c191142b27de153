"""Parsing what the APIs answer: no server needed, and no Google client loaded."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

from dicom_pipelines.responses import (
    HealthcareApiError,
    operation_log_filter,
    parse_log_entry,
    parse_operation,
    parse_time,
    resolve_endpoint,
)


def test_endpoint_from_connection_extra_then_env(monkeypatch):
    assert resolve_endpoint({"healthcare_endpoint": "http://127.0.0.1:1"}) == "http://127.0.0.1:1/"
    monkeypatch.setenv("HEALTHCARE_API_ENDPOINT", "http://127.0.0.1:2")
    assert resolve_endpoint({}) == "http://127.0.0.1:2/"
    monkeypatch.delenv("HEALTHCARE_API_ENDPOINT")
    assert resolve_endpoint({}) is None


def test_absent_counters_are_zero_as_proto3_omits_them():
    status = parse_operation({"name": "projects/p/locations/l/datasets/d/operations/1", "metadata": {}})
    assert (status.done, status.success, status.failure, status.pending, status.error_code) == (False, 0, 0, 0, 0)
    finished = parse_operation(
        {
            "name": "op",
            "done": True,
            "metadata": {"counter": {"success": "7", "failure": "2"}, "logsUrl": "https://x/logs"},
            "error": {"code": 3, "message": "2 files failed"},
        }
    )
    assert (finished.processed, finished.succeeded, finished.error_name) == (9, False, "INVALID_ARGUMENT")
    assert finished.logs_url == "https://x/logs"


def test_log_entries_keep_only_the_documented_fields():
    entry = {
        "jsonPayload": {
            "source": "gs://b/a.dcm",
            "error": {"code": 3, "message": "not DICOM"},
            "PatientName": "Doe^Jane",
        },
        "labels": {"PatientID": "12345"},
    }
    assert parse_log_entry(entry) == {"source": "gs://b/a.dcm", "code": 3, "message": "not DICOM"}


def test_an_error_body_that_is_not_json_keeps_its_text():
    error = HealthcareApiError.from_body(502, b"<html>Bad Gateway</html>", "import")
    assert (error.http_status, error.google_status, error.retryable, error.maybe_accepted) == (502, "", True, True)
    assert "Bad Gateway" in str(error)
    refused = HealthcareApiError.from_body(400, b'{"error": {"status": "INVALID_ARGUMENT", "message": "m"}}', "x")
    assert (refused.google_status, refused.retryable, refused.maybe_accepted) == ("INVALID_ARGUMENT", False, False)


def test_times_and_log_filters():
    assert parse_time("2026-11-26T01:02:03Z") == dt.datetime(2026, 11, 26, 1, 2, 3, tzinfo=dt.UTC)
    assert parse_time("yesterday") is None
    query = operation_log_filter("projects/p/locations/l/datasets/d/operations/42", since="2026-11-26T00:00:00Z")
    assert 'operation.id="projects/p/locations/l/datasets/d/operations/42"' in query
    assert 'timestamp>="2026-11-26T00:00:00Z"' in query


def test_the_parsing_loads_no_google_client():
    probe = (
        "import sys, dicom_pipelines.responses; "
        "print(sorted(m for m in ('googleapiclient', 'aiohttp', 'google.auth') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_creation_time_in_epoch_seconds():
    status = parse_operation({"name": "op", "metadata": {"createTime": "2026-11-26T00:00:01.500Z"}})
    assert status.created_at == dt.datetime(2026, 11, 26, 0, 0, 1, 500000, tzinfo=dt.UTC).timestamp()
    assert parse_operation({"name": "op"}).created_at is None
