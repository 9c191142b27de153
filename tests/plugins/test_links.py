"""Extra links: the Cloud Console on Google, the endpoint's own views anywhere else."""

from __future__ import annotations

import pytest

from dicom_pipelines.links import HealthcareDicomStoreLink, HealthcareOperationLink

DATASET = "projects/p-1/locations/europe-west4/datasets/ds"


@pytest.mark.parametrize("endpoint", [None, "https://healthcare.googleapis.com/"])
def test_on_google_the_links_open_the_console(endpoint):
    store = HealthcareDicomStoreLink.url(endpoint, f"{DATASET}/dicomStores/st")
    assert store == (
        "https://console.cloud.google.com/healthcare/browser/locations/europe-west4/datasets/ds/dicomStores/st"
        "/details/overview?project=p-1"
    )
    operation = HealthcareOperationLink.url(endpoint, f"{DATASET}/operations/123")
    assert operation.endswith("/locations/europe-west4/datasets/ds/operations/123?project=p-1")


def test_elsewhere_the_links_open_the_endpoints_own_views():
    local = "http://127.0.0.1:18402/"
    assert HealthcareDicomStoreLink.url(local, f"{DATASET}/dicomStores/st") == f"{local}v1/{DATASET}/dicomStores/st"
    assert HealthcareOperationLink.url(local, f"{DATASET}/operations/9", "v1beta1") == (
        f"{local}v1beta1/{DATASET}/operations/9"
    )


def test_the_link_is_the_url_the_task_stored(monkeypatch):
    from airflow.sdk.execution_time.xcom import XCom

    stored = {"healthcare_dicom_store_link": "http://127.0.0.1:18402/v1/x", "healthcare_operation_link": None}
    monkeypatch.setattr(XCom, "get_value", staticmethod(lambda key, ti_key: stored.get(key)))
    store_link, operation_link = HealthcareDicomStoreLink(), HealthcareOperationLink()
    assert store_link.xcom_key == "healthcare_dicom_store_link"
    assert store_link.get_link(None, ti_key=None) == "http://127.0.0.1:18402/v1/x"
    assert operation_link.get_link(None, ti_key=None) == ""
