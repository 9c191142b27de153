"""Filter files: composing any number of extract shards into one file, safely across retries; checking one."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowException
from airflow.providers.google.cloud.hooks.gcs import GCSHook

from dicom_pipelines.filter_files import compose_filter_shards
from tests.helpers import new_bucket

SHARDS = 70  # more than two rounds of 32
pytestmark = pytest.mark.usefixtures("stack")


def seed_shards(n: int = SHARDS) -> tuple[str, bytes]:
    """``n`` header-less CSV shards as a BigQuery extract names them; returns the bucket and their concatenation."""
    bucket = new_bucket("shards")
    whole = b""
    for i in range(n):
        data = f"/studies/1.2.{i}/series/1.2.{i}.1\n/studies/1.2.{i}/series/1.2.{i}.2\n".encode()
        bucket.blob(f"filters/run/part-{i:012d}.csv").upload_from_string(data)
        whole += data
    return bucket.name, whole


def test_more_than_64_shards_compose_into_one_complete_file_in_order():
    bucket, whole = seed_shards()
    uri = compose_filter_shards("google_cloud_default", bucket, "filters/run/part-", "filters/run.txt")
    assert uri == f"gs://{bucket}/filters/run.txt"
    assert GCSHook().download(bucket, "filters/run.txt") == whole
    assert len(GCSHook().list(bucket, prefix="filters/run/part-")) == SHARDS  # kept for a retry


def test_a_retry_after_a_failure_mid_compose_builds_the_same_file(monkeypatch):
    bucket, whole = seed_shards()
    real_compose, calls = GCSHook.compose, []

    def compose_then_fail(self, bucket_name, source_objects, destination_object):
        calls.append(len(source_objects))
        if len(calls) == 2:
            raise ConnectionError("worker lost its connection mid-compose")
        return real_compose(self, bucket_name, source_objects, destination_object)

    monkeypatch.setattr(GCSHook, "compose", compose_then_fail)
    with pytest.raises(ConnectionError):
        compose_filter_shards("google_cloud_default", bucket, "filters/run/part-", "filters/run.txt")
    monkeypatch.setattr(GCSHook, "compose", real_compose)
    compose_filter_shards("google_cloud_default", bucket, "filters/run/part-", "filters/run.txt")
    assert calls == [32, 32] and GCSHook().download(bucket, "filters/run.txt") == whole


def test_a_composed_file_shorter_than_its_shards_is_refused(monkeypatch):
    bucket, _ = seed_shards(40)
    monkeypatch.setattr(GCSHook, "get_size", lambda self, bucket_name, object_name: 1)
    with pytest.raises(AirflowException, match="not exporting from an incomplete filter file"):
        compose_filter_shards("google_cloud_default", bucket, "filters/run/part-", "filters/run.txt")


def test_no_shards_is_an_error():
    bucket = new_bucket("noshards").name
    with pytest.raises(AirflowException, match="wrote no shards"):
        compose_filter_shards("google_cloud_default", bucket, "filters/run/part-", "filters/run.txt")
