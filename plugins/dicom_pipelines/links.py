"""Extra links on Healthcare tasks: the DICOM store, the operation and its per-instance log.

On Google they open the Cloud Console (the operation's log is its ``metadata.logsUrl``, a Logs Explorer link).
Against another endpoint, such as the local stack, the Console knows nothing of the store, so the links open
the endpoint's own views: the store's and the operation's JSON, and the operation's log query on the local
Cloud Logging.

The operator persists the finished URL under the link's XCom key, and ``get_link`` returns it as it is: the
provider's ``BaseGoogleLink`` does the same with a URL it stored before a deferral. They build on Airflow's own
``BaseOperatorLink`` rather than ``BaseGoogleLink``, whose module loads the Google auth libraries and would add
about 0.4 s to every parse of every DAG file that uses these operators.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

CONSOLE_ROOT = "https://console.cloud.google.com/"
CONSOLE = CONSOLE_ROOT + "healthcare/browser"
GOOGLE_ENDPOINT = "https://healthcare.googleapis.com/"


def _on_google(endpoint: str | None) -> bool:
    return endpoint is None or endpoint.rstrip("/") == GOOGLE_ENDPOINT.rstrip("/")


def _parts(resource_name: str) -> dict[str, str]:
    """``projects/p/locations/l/datasets/d/...`` as ``{project_id, location, dataset_id, ...}``."""
    keys = {"projects": "project_id", "locations": "location", "datasets": "dataset_id"}
    keys |= {"dicomStores": "dicom_store_id", "operations": "operation_id"}
    bits = resource_name.split("/")
    return {keys[bits[i]]: bits[i + 1] for i in range(0, len(bits) - 1, 2) if bits[i] in keys}


class UrlLink(BaseOperatorLink):
    """A link whose whole URL the task stores in XCom under ``key``; no URL until the task has stored one."""

    name: ClassVar[str]
    key: ClassVar[str]
    format_str: ClassVar[str]

    @property
    def xcom_key(self) -> str:
        return self.key

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        value = XCom.get_value(key=self.key, ti_key=ti_key)
        return value if isinstance(value, str) and value.startswith(("http://", "https://")) else ""

    @classmethod
    def persist_url(cls, context: Any, url: str) -> None:
        if url:
            context["ti"].xcom_push(key=cls.key, value=url)

    @classmethod
    def url(cls, endpoint: str | None, resource_name: str, api_version: str = "v1") -> str:
        """The Console page of a store or an operation on Google; its JSON on any other endpoint."""
        if _on_google(endpoint):
            return cls.format_str.format(**_parts(resource_name))
        return f"{endpoint}{api_version}/{resource_name}"


class HealthcareDicomStoreLink(UrlLink):
    name = "DICOM store"
    key = "healthcare_dicom_store_link"
    format_str = (
        CONSOLE + "/locations/{location}/datasets/{dataset_id}/dicomStores/{dicom_store_id}/details/overview"
        "?project={project_id}"
    )


class HealthcareOperationLink(UrlLink):
    name = "Healthcare operation"
    key = "healthcare_operation_link"
    format_str = CONSOLE + "/locations/{location}/datasets/{dataset_id}/operations/{operation_id}?project={project_id}"


class HealthcareOperationLogLink(UrlLink):
    """The operation's per-instance errors: ``metadata.logsUrl``, a Logs Explorer query.

    On Google it opens as it is. With another Cloud Logging endpoint (the local stack's), the same query opens
    on that endpoint's view of it, since the Console knows nothing of local entries.
    """

    name = "Operation log"
    key = "healthcare_operation_log_link"
    format_str = "{logs_url}"

    @staticmethod
    def view(logs_url: str, logging_endpoint: str | None) -> str:
        if logging_endpoint and logs_url.startswith(CONSOLE_ROOT):
            return logging_endpoint.rstrip("/") + "/" + logs_url[len(CONSOLE_ROOT) :]
        return logs_url
