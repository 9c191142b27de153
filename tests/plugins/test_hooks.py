"""The Healthcare hooks against the running local stack (plus mocked HTTP for shapes it cannot produce)."""

from __future__ import annotations

import asyncio
import time

import pytest
from googleapiclient.http import HttpMockSequence

from dicom_pipelines.hooks import (
    CloudHealthcareDicomAsyncHook,
    CloudHealthcareDicomHook,
    HealthcareApiError,
    parse_operation,
    resolve_endpoint,
)
from dicom_pipelines.polling import PollPlanner
from tests.helpers import PROJECT, LOCATION, admin, new_bucket, seed_import, unique

pytestmark = pytest.mark.usefixtures("stack")


@pytest.fixture()
def hook():
    return CloudHealthcareDicomHook()


def test_endpoint_from_connection_extra_then_env(monkeypatch):
    assert resolve_endpoint({"healthcare_endpoint": "http://127.0.0.1:1"}) == "http://127.0.0.1:1/"
    monkeypatch.setenv("HEALTHCARE_API_ENDPOINT", "http://127.0.0.1:2")
    assert resolve_endpoint({}) == "http://127.0.0.1:2/"
    monkeypatch.delenv("HEALTHCARE_API_ENDPOINT")
    assert resolve_endpoint({}) is None


def test_both_api_versions_build_from_the_bundled_document():
    for version in ("v1", "v1beta1"):
        conn = CloudHealthcareDicomHook(api_version=version).get_conn()
        assert conn.projects().locations().datasets().dicomStores().import_ is not None
    with pytest.raises(ValueError, match="api_version"):
        CloudHealthcareDicomHook(api_version="v2")


def test_ensure_store_is_idempotent_and_import_export_metrics(hook):
    ds = unique("hook")
    name = hook.ensure_dicom_store(PROJECT, LOCATION, ds, "s")
    assert hook.ensure_dicom_store(PROJECT, LOCATION, ds, "s") == name
    _, uri = seed_import(3)
    op = hook.import_dicom(name, uri)
    status = hook.wait_for_operation(op["name"], PollPlanner(0.1, 0.5))
    assert status.succeeded and status.success == 3 and status.failure == 0
    assert hook.get_store_metrics(name)["instanceCount"] == 3
    out = new_bucket("hookout")
    status = hook.wait_for_operation(hook.export_dicom_to_gcs(name, f"gs://{out.name}/x", "image/png")["name"],
                                     PollPlanner(0.1, 0.5))
    assert status.success == 3
    assert len(hook.list_operations(name.split("/dicomStores/")[0], filter="done=true")) >= 2


def test_errors_carry_http_status_google_status_and_message(hook):
    with pytest.raises(HealthcareApiError) as err:
        hook.get_dicom_store(f"projects/{PROJECT}/locations/{LOCATION}/datasets/nope/dicomStores/s")
    e = err.value
    assert (e.http_status, e.google_status) == (403, "PERMISSION_DENIED") and "nope" in e.api_message
    assert not e.retryable


def test_retries_429_and_5xx_inside_execute(hook):
    name = hook.ensure_dicom_store(PROJECT, LOCATION, unique("retry"), "s")
    admin("/admin/faults", {"dicomStores.getDICOMStoreMetrics": {"rate": 0.5, "code": 503}})
    try:
        for _ in range(5):
            assert hook.get_store_metrics(name)["instanceCount"] == 0
    finally:
        admin("/admin/faults", {})


def test_cancel_and_logs(hook):
    name = hook.ensure_dicom_store(PROJECT, LOCATION, unique("cancel"), "s")
    _, uri = seed_import(6, extra={"bad.txt": b"no"})
    admin("/admin/settings", {"latency_s": 0.3})
    try:
        op = hook.import_dicom(name, uri)
        hook.cancel_operation(op["name"])
        status = hook.wait_for_operation(op["name"], PollPlanner(0.1, 0.5))
        assert status.error_code == 1 and status.cancel_requested
    finally:
        admin("/admin/settings", {"latency_s": 0.0})
    status = hook.wait_for_operation(hook.import_dicom(name, uri)["name"], PollPlanner(0.1, 0.5))
    entries = hook.get_operation_logs(status.logs_url)
    assert [e["source"].rsplit("/", 1)[1] for e in entries] == ["bad.txt"]


def test_wait_deadline_raises_timeout(hook):
    name = hook.ensure_dicom_store(PROJECT, LOCATION, unique("dl"), "s")
    _, uri = seed_import(5)
    admin("/admin/settings", {"latency_s": 0.5})
    try:
        op = hook.import_dicom(name, uri)
        with pytest.raises(TimeoutError):
            hook.wait_for_operation(op["name"], PollPlanner(0.1, 0.2), deadline=time.time() + 0.5)
        hook.cancel_operation(op["name"])
    finally:
        admin("/admin/settings", {"latency_s": 0.0})


def test_async_hook_gets_and_cancels(hook):
    name = hook.ensure_dicom_store(PROJECT, LOCATION, unique("async"), "s")
    _, uri = seed_import(2)
    op_name = hook.import_dicom(name, uri)["name"]

    async def go():
        ahook = CloudHealthcareDicomAsyncHook()
        try:
            for _ in range(50):
                status = parse_operation(await ahook.get_operation(op_name))
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
            await ahook.get_operation(op_name.rsplit("/", 1)[0] + "/999")
        finally:
            await ahook.close()

    with pytest.raises(HealthcareApiError) as err:
        asyncio.run(missing())
    assert err.value.http_status == 404


def test_non_json_5xx_error_shape_from_a_proxy(monkeypatch):
    """An HTML 502 from a proxy (the local stack never answers that way) still gives a clear error."""
    hook = CloudHealthcareDicomHook()
    monkeypatch.setattr(type(hook), "num_retries", property(lambda self: 0))
    conn = hook.get_conn()
    http = HttpMockSequence([({"status": "502"}, b"<html>Bad Gateway</html>")])
    monkeypatch.setattr(conn._http, "request", http.request)
    with pytest.raises(HealthcareApiError) as err:
        hook.get_operation(f"projects/{PROJECT}/locations/{LOCATION}/datasets/d/operations/1")
    assert err.value.http_status == 502 and "Bad Gateway" in err.value.api_message and err.value.retryable
