"""The stack runner: starts, answers on loopback only, serves the official clients, stops cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

from scripts.stack import STACK_SERVICES, Stack
from tests.conftest import free_port_base

REPO = Path(__file__).resolve().parents[2]


def test_stack_starts_answers_on_loopback_only_and_stops(tmp_path):
    stack = Stack(tmp_path / "s", free_port_base())
    stack.start_stack()
    try:
        pids = {pid for pid in stack.status().values() if pid}
        assert len(pids) == len(STACK_SERVICES)
        for port in (stack.ports.bigquery, stack.ports.healthcare):
            assert requests.get(f"http://127.0.0.1:{port}/admin/health", timeout=10).json()["status"] == "ok"
        addresses = stack.listening_addresses()
        assert addresses and all(a.startswith("127.0.0.1:") for a in addresses), addresses
        env_file = (tmp_path / "s" / "env").read_text()
        for key in (
            "STORAGE_EMULATOR_HOST",
            "BIGQUERY_EMULATOR_HOST",
            "HEALTHCARE_API_ENDPOINT",
            "GCP_PROJECT",
            "HEALTHCARE_LOCATION",
            "HEALTHCARE_DATASET",
            "DICOM_STORE",
        ):
            assert f"export {key}=" in env_file
    finally:
        stack.stop_stack()
    assert all(pid is None for pid in stack.status().values())
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_official_storage_client_works_with_only_the_env_file(stack):
    script = textwrap.dedent("""
        from google.cloud import storage
        client = storage.Client()
        bucket = client.create_bucket("env-only-bucket")
        bucket.blob("dir/a.txt").upload_from_string(b"hello")
        assert [b.name for b in client.list_blobs("env-only-bucket", prefix="dir/")] == ["dir/a.txt"]
        assert bucket.blob("dir/a.txt").download_as_bytes() == b"hello"
        print("ok")
    """)
    clean = {k: v for k, v in os.environ.items() if "EMULATOR" not in k and "GOOGLE" not in k}
    cmd = f"set -a; . {stack.dir / 'env'}; set +a; {sys.executable} -c '{script}'"
    out = subprocess.run(["bash", "-c", cmd], env=clean, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_celery_mode_adds_a_local_broker_two_workers_and_a_second_triggerer(tmp_path):
    stack = Stack(tmp_path / "c", free_port_base(), executor="celery")
    env = stack.airflow_environment()
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://127.0.0.1:{stack.ports.redis}/0"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://airflow:airflow@127.0.0.1:")
    assert stack.airflow_services()[-4:] == ("redis", "worker-1", "worker-2", "triggerer-2")
    assert Stack(tmp_path / "l", free_port_base()).airflow_services() == (
        "api-server",
        "scheduler",
        "dag-processor",
        "triggerer",
    )


def test_the_celery_mode_refuses_sqlite(tmp_path):
    with pytest.raises(SystemExit, match="needs PostgreSQL"):
        Stack(tmp_path / "c", free_port_base(), db="sqlite", executor="celery")


def test_the_local_gcs_publishes_cloud_storage_notifications_to_googles_pubsub_emulator(tmp_path, monkeypatch):
    """What an arrival import reads: the source bucket's OBJECT_FINALIZE notifications, JSON_API_V1 payload, as
    Cloud Storage sends them (https://cloud.google.com/storage/docs/pubsub-notifications, "Attributes" and
    "Payload"), pulled with the official client from Google's own emulator. Where the local GCS differs from
    Google, the test says so, so the code that reads them uses only what both send."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import pubsub_v1, storage

    from scripts.stack import DEMO_IDS, PUBSUB_IDS

    stack = Stack(tmp_path / "p", free_port_base(), pubsub=True)
    stack.start_stack()
    try:
        env = stack.stack_env()
        for key in ("STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"):
            monkeypatch.setenv(key, env[key])
        gcs = storage.Client(project=DEMO_IDS["GCP_PROJECT"], credentials=AnonymousCredentials())
        source = gcs.create_bucket(DEMO_IDS["SOURCE_BUCKET"])
        gcs.create_bucket(DEMO_IDS["EXPORT_BUCKET"]).blob("elsewhere.txt").upload_from_string(b"x")
        source.blob("_dicom_arrivals/run/a.dcm").upload_from_string(b"x")  # outside the notified prefix: none
        first = source.blob("incoming/2026-12-05/study-1/a.dcm")
        first.upload_from_string(b"DICM")
        first.upload_from_string(b"DICM again")  # the same name again: a new generation

        subscriber = pubsub_v1.SubscriberClient()
        path = subscriber.subscription_path(DEMO_IDS["GCP_PROJECT"], PUBSUB_IDS["subscription"])
        received: list = []
        deadline = time.time() + 60
        while time.time() < deadline and len(received) < 2:
            answer = subscriber.pull(request={"subscription": path, "max_messages": 10}, timeout=30)
            received += answer.received_messages
        subscriber.acknowledge(request={"subscription": path, "ack_ids": [m.ack_id for m in received]})
        subscriber.close()
        # where the local GCS differs from Google in what the arrival import writes: a metadata patch gives the
        # object a new generation (Cloud Storage moves only the metageneration); the import's marker is therefore
        # the content's CRC32C, which both keep
        live = source.get_blob(first.name)
        generation, crc32c = live.generation, live.crc32c
        live.metadata = {"dicom-imported-crc32c": crc32c}
        live.patch()
        assert live.generation != generation and live.crc32c == crc32c
    finally:
        stack.stop_stack()

    # the other bucket's object, and the one outside incoming/: none
    assert len(received) == 2, [dict(m.message.attributes) for m in received]
    by_generation = {}
    for message in (m.message for m in received):
        attributes = dict(message.attributes)
        assert attributes["eventType"] == "OBJECT_FINALIZE" and attributes["payloadFormat"] == "JSON_API_V1"
        assert attributes["bucketId"] == DEMO_IDS["SOURCE_BUCKET"]
        assert attributes["objectId"] == "incoming/2026-12-05/study-1/a.dcm"
        assert attributes["objectGeneration"].isdigit() and attributes["eventTime"].endswith("Z")
        payload = json.loads(message.data)
        assert payload["kind"] == "storage#object" and payload["bucket"] == attributes["bucketId"]
        assert (payload["name"], payload["generation"]) == (attributes["objectId"], attributes["objectGeneration"])
        # where the local GCS differs from Google: no notificationConfig attribute, and a payload without
        # metageneration, selfLink, mediaLink or etag
        assert "notificationConfig" not in attributes
        assert not {"metageneration", "selfLink", "mediaLink", "etag"} & set(payload)
        by_generation[attributes["objectGeneration"]] = attributes.get("overwroteGeneration")
    # the second upload says which generation it replaced, as Google's overwroteGeneration does (Pub/Sub may
    # deliver the two in either order)
    first, second = sorted(by_generation, key=lambda g: by_generation[g] is not None)
    assert by_generation == {first: None, second: first}
