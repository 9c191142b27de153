"""Task callables shared by the DICOM DAGs: small steps around the operators (GCS checks, metrics).

They run in workers only; nothing here runs at DAG parse time.
"""

from __future__ import annotations

import re
from typing import Any

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from dicom_pipelines.validation import ValidationError, parse_filter_file, parse_gcs_uri, parse_mime_type


def safe_table_suffix(run_id: str) -> str:
    """A BigQuery-safe table suffix for a run (letters, digits and underscores)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", run_id)[:200]


def default_export_prefix(params: dict, run_id: str) -> str:
    """Where an export run writes when the user gave no prefix: ``gs://<export bucket>/exports/<run>``."""
    return params.get("destination_prefix") or f"gs://{params['export_bucket']}/exports/{safe_table_suffix(run_id)}"


def require_result(result: dict | None, task_id: str) -> None:
    """Skip a check whose operation task left no result: a user marked that task successful while it waited."""
    if result is None:
        raise AirflowSkipException(
            f"{task_id} has no operation result (a user marked it successful before its "
            "operation finished): there are no counters to check"
        )


def store_instance_count(gcp_conn_id: str, store_name: str) -> int:
    from dicom_pipelines.hooks import CloudHealthcareDicomHook

    return CloudHealthcareDicomHook(gcp_conn_id).get_store_metrics(store_name)["instanceCount"]


def compose_filter_shards(gcp_conn_id: str, bucket: str, shard_prefix: str, destination: str) -> str:
    """Compose extract shards (``{shard_prefix}*``) into the single filter object the API needs."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    hook = GCSHook(gcp_conn_id=gcp_conn_id)
    shards = sorted(hook.list(bucket, prefix=shard_prefix))
    if not shards:
        raise AirflowException(f"the BigQuery extract wrote no shards under gs://{bucket}/{shard_prefix}")
    for start in range(0, len(shards), 32):  # GCS composes at most 32 sources per call
        batch = shards[start : start + 32]
        sources = batch if start == 0 else [destination, *batch]
        hook.compose(bucket, sources, destination)
    for shard in shards:
        hook.delete(bucket, shard)
    return f"gs://{bucket}/{destination}"


def check_filter_file(gcp_conn_id: str, filter_uri: str) -> dict[str, Any]:
    """Validate a filter file before the export: skip when it selects nothing, fail naming bad lines."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    try:
        uri = parse_gcs_uri(filter_uri, "filter_uri")
    except ValidationError as exc:
        raise AirflowFailException(str(exc)) from None
    hook = GCSHook(gcp_conn_id=gcp_conn_id)
    if not hook.exists(uri.bucket, uri.name):
        raise AirflowFailException(f"filter_uri={filter_uri!r} is invalid: the object does not exist")
    text = hook.download(uri.bucket, uri.name).decode("utf-8", errors="replace")
    try:
        paths = parse_filter_file(text, f"filter file {filter_uri}")
    except ValidationError as exc:
        raise AirflowFailException(str(exc)) from None
    if not paths:
        raise AirflowSkipException(
            f"No DICOM resources matched the criteria ({filter_uri} is empty): nothing to export"
        )
    return {
        "filter_uri": filter_uri,
        "paths": len(paths),
        "levels": {lvl: sum(1 for p in paths if p.level == lvl) for lvl in ("study", "series", "instance")},
    }


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
def verify_export(result: dict, gcp_conn_id: str = "google_cloud_default", **context: Any) -> dict[str, Any]:
    """Task: the objects under the run's export prefix match the export operation's counters."""
    require_result(result, "export_dicom")
    params = context["params"]
    return count_exported(gcp_conn_id, default_export_prefix(params, context["run_id"]), params["mime_type"], result)
