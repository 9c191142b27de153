"""Filter files in Cloud Storage (``filterConfig.resourcePathsGcsUri``): assembling and checking them.

Task helpers for the filtered export; they run in workers, never at DAG parse time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, AirflowSkipException

from dicom_pipelines.validation import ValidationError, parse_filter_file, parse_gcs_uri

MAX_COMPOSE_SOURCES = 32
"""Cloud Storage composes at most 32 source objects in one call."""


def compose_filter_shards(
    gcp_conn_id: str,
    bucket: str,
    shard_prefix: str,
    destination: str,
    impersonation_chain: str | Sequence[str] | None = None,
) -> str:
    """Compose extract shards (``{shard_prefix}*``) into the single filter object the API needs.

    Any number of shards: the first call composes 32 of them, and each further call the file so far plus the
    next 31. The result is checked against the shards' total size before this returns. The shards are not
    deleted here: a retry composes the same file from the same shards (the run's clean-up deletes them once
    the export has succeeded).
    """
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    hook = GCSHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)
    sizes = {blob.name: blob.size for blob in hook.get_conn().list_blobs(bucket, prefix=shard_prefix)}
    shards = sorted(sizes)
    if not shards:
        raise AirflowException(f"the BigQuery extract wrote no shards under gs://{bucket}/{shard_prefix}")
    hook.compose(bucket, shards[:MAX_COMPOSE_SOURCES], destination)
    rest = MAX_COMPOSE_SOURCES - 1
    for start in range(MAX_COMPOSE_SOURCES, len(shards), rest):
        hook.compose(bucket, [destination, *shards[start : start + rest]], destination)
    expected, composed = sum(sizes.values()), hook.get_size(bucket, destination)
    if composed != expected:
        raise AirflowException(
            f"gs://{bucket}/{destination} has {composed} bytes, but its {len(shards)} shards hold {expected}: "
            "not exporting from an incomplete filter file"
        )
    return f"gs://{bucket}/{destination}"


def delete_shards(
    gcp_conn_id: str, bucket: str, shard_prefix: str, impersonation_chain: str | Sequence[str] | None = None
) -> int:
    """Delete a run's extract shards once its export has succeeded; returns how many there were."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    hook = GCSHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)
    shards = hook.list(bucket, prefix=shard_prefix)
    for shard in shards:
        hook.delete(bucket, shard)
    return len(shards)


def check_filter_file(
    gcp_conn_id: str, filter_uri: str, impersonation_chain: str | Sequence[str] | None = None
) -> dict[str, Any]:
    """Validate a filter file before the export: skip when it selects nothing, fail naming bad lines."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    try:
        uri = parse_gcs_uri(filter_uri, "filter_uri")
    except ValidationError as exc:
        raise AirflowFailException(str(exc)) from None
    hook = GCSHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)
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
