"""Filter files in Cloud Storage (``filterConfig.resourcePathsGcsUri``): assembling and checking them.

Task helpers for the filtered export; they run in workers, never at DAG parse time.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from dicom_pipelines.validation import ValidationError, parse_filter_file, parse_gcs_uri


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
