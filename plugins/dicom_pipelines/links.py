"""Extra links on Healthcare tasks: the DICOM store and the operation in the Cloud Console."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

CONSOLE = "https://console.cloud.google.com/healthcare/browser"


class _PersistedLink(BaseOperatorLink):
    """A link whose parts the operator pushes to XCom (``persist``) and ``get_link`` formats."""

    name = ""
    key = ""
    template = ""

    @property
    def xcom_key(self) -> str:
        return self.key

    @classmethod
    def persist(cls, context: Any, **parts: str) -> None:
        context["ti"].xcom_push(key=cls.key, value=parts)

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        parts = XCom.get_value(key=self.key, ti_key=ti_key)
        return self.template.format(**parts) if parts else ""


class HealthcareDicomStoreLink(_PersistedLink):
    name = "DICOM store"
    key = "healthcare_dicom_store_link"
    template = (CONSOLE + "/locations/{location}/datasets/{dataset_id}/dicomStores/{dicom_store_id}/details/overview"
                "?project={project_id}")


class HealthcareOperationLink(_PersistedLink):
    name = "Healthcare operation"
    key = "healthcare_operation_link"
    template = CONSOLE + "/locations/{location}/datasets/{dataset_id}/operations/{operation_id}?project={project_id}"
