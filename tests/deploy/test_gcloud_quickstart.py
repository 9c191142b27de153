"""The Quick start script's Healthcare and BigQuery steps, run by the real Google Cloud CLI (gcloud and bq) against
the local stack through their endpoint overrides: the same commands a user runs against Google."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import googleapiclient
import requests

from tests.helpers import LOCATION, PROJECT, healthcare, unique

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "gcloud-quickstart.sh"
BIGQUERY_DISCOVERY = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "bigquery.v2.json"


def quickstart(tmp_path: Path, stack, **variables: str) -> subprocess.CompletedProcess:
    env = stack.stack_env()
    token = tmp_path / "token"
    token.write_text("local-stack\n")
    cli = {
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "CLOUDSDK_CORE_PROJECT": PROJECT,
        "CLOUDSDK_AUTH_ACCESS_TOKEN_FILE": str(token),
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_HEALTHCARE": env["HEALTHCARE_API_ENDPOINT"] + "/",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "BQ_FLAGS": f"--api {env['BIGQUERY_EMULATOR_HOST']} --discovery_file {BIGQUERY_DISCOVERY}",
        "STEPS": "healthcare,bigquery",
        "PROJECT": PROJECT,
        "LOCATION": LOCATION,
    }
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**os.environ, **cli, **variables},
        capture_output=True,
        text=True,
        timeout=300,
    )


def bigquery_dataset(stack, dataset: str) -> dict:
    base = stack.stack_env()["BIGQUERY_EMULATOR_HOST"]
    resp = requests.get(f"{base}/bigquery/v2/projects/{PROJECT}/datasets/{dataset}", timeout=30)
    resp.raise_for_status()
    return resp.json()


def test_the_healthcare_and_bigquery_steps_make_what_the_dags_need_and_run_again_harmlessly(stack, tmp_path):
    dataset, store, bq_dataset = unique("qs-ds"), unique("qs-store"), unique("qs_meta").replace("-", "_")
    names = {"DATASET": dataset, "STORE": store, "BQ_DATASET": bq_dataset}
    first = quickstart(tmp_path, stack, **names)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"creating the Healthcare dataset {dataset} in {LOCATION}" in first.stdout
    svc = healthcare()
    store_name = f"projects/{PROJECT}/locations/{LOCATION}/datasets/{dataset}/dicomStores/{store}"
    assert svc.projects().locations().datasets().dicomStores().get(name=store_name).execute()["name"] == store_name
    assert bigquery_dataset(stack, bq_dataset)["location"] == LOCATION
    assert f"HEALTHCARE_DATASET={dataset}" in first.stdout and f"DICOM_STORE={store}" in first.stdout

    again = quickstart(tmp_path, stack, **names)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Healthcare dataset {dataset} exists" in again.stdout and f"DICOM store {store} exists" in again.stdout
    assert f"BigQuery dataset {bq_dataset} exists in {LOCATION}" in again.stdout


def test_a_bigquery_dataset_in_another_region_is_refused(stack, tmp_path):
    """It would hold PatientName outside the Healthcare dataset's region."""
    bq_dataset = unique("qs_elsewhere").replace("-", "_")
    base = stack.stack_env()["BIGQUERY_EMULATOR_HOST"]
    requests.post(
        f"{base}/bigquery/v2/projects/{PROJECT}/datasets",
        json={"datasetReference": {"projectId": PROJECT, "datasetId": bq_dataset}, "location": "US"},
        timeout=30,
    ).raise_for_status()
    out = quickstart(tmp_path, stack, DATASET=unique("qs-ds"), STORE=unique("qs-store"), BQ_DATASET=bq_dataset)
    assert out.returncode == 1
    assert f"{PROJECT}:{bq_dataset} is in US, not {LOCATION}" in out.stderr
