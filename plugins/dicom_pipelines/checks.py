"""Checks after an operation: the exported objects against the counters, and what to do without a result.

Task helpers for the DAGs; they run in workers, never at DAG parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowException, AirflowSkipException

from dicom_pipelines.validation import parse_gcs_uri, parse_mime_type


def require_result(result: dict | None, task_id: str) -> None:
    """Skip a check whose operation task left no result: a user marked that task successful while it waited."""
    if result is None:
        raise AirflowSkipException(
            f"{task_id} has no operation result (a user marked it successful before its "
            "operation finished): there are no counters to check"
        )


def count_exported(gcp_conn_id: str, uri_prefix: str, mime_type: str | None, export_result: dict) -> dict[str, Any]:
    """Compare the objects under the export prefix with the operation's success counter."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    prefix_uri = parse_gcs_uri(uri_prefix, "uri_prefix", allow_empty_object=True)
    mime = parse_mime_type(mime_type, "mime_type")
    prefix = prefix_uri.name.rstrip("/") + "/" if prefix_uri.name else ""
    names = GCSHook(gcp_conn_id=gcp_conn_id).list(prefix_uri.bucket, prefix=prefix)
    instances = set()
    for name in names:
        parts = name[len(prefix) :].split("/")
        if len(parts) >= 3:
            instances.add("/".join(parts[:3]).removesuffix(mime.extension) if mime.extension else "/".join(parts[:3]))
    expected = int(export_result.get("success", 0))
    summary = {
        "objects": len(names),
        "instances": len(instances),
        "expected_instances": expected,
        "uri_prefix": uri_prefix,
    }
    if len(instances) != expected:
        raise AirflowException(
            f"export verification failed: {len(instances)} instances found under {uri_prefix}, but the operation "
            f"reported {expected} exported"
        )
    return summary


@task(task_id="verify_export")
def verify_export(result: dict | None, gcp_conn_id: str = "google_cloud_default") -> dict[str, Any]:
    """Task: the objects under the export's prefix match the export operation's counters."""
    require_result(result, "export_dicom")
    assert result is not None
    return count_exported(gcp_conn_id, result["uri_prefix"], result["mime_type"], result)
