"""The Airflow Google provider's own BigQuery operators against the local BigQuery, through dag.test()."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from tests.helpers import PROJECT, new_bucket, unique

pytestmark = pytest.mark.usefixtures("stack", "airflow_db")


def fixture_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(
        dag_folder=str(Path(__file__).resolve().parents[1] / "dag_fixtures" / "bq_provider_chain.py")
    ).get_dag(dag_id)


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_concat_query_and_headerless_extract():
    bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials())
    dataset = unique("prov").replace("-", "_")
    bq.create_dataset(dataset)
    table = bq.create_table(
        bigquery.Table(
            f"{PROJECT}.{dataset}.meta_table",
            schema=[
                bigquery.SchemaField(n, t)
                for n, t in (
                    ("StudyInstanceUID", "STRING"),
                    ("SeriesInstanceUID", "STRING"),
                    ("SOPInstanceUID", "STRING"),
                    ("Modality", "STRING"),
                    ("StudyDate", "DATE"),
                    ("PatientID", "STRING"),
                )
            ],
        )
    )
    bq.insert_rows(
        table,
        [
            {
                "StudyInstanceUID": "1.1",
                "SeriesInstanceUID": "1.1.1",
                "SOPInstanceUID": "1.1.1.1",
                "Modality": "CT",
                "StudyDate": "2026-11-20",
                "PatientID": "A",
            },
            {
                "StudyInstanceUID": "1.1",
                "SeriesInstanceUID": "1.1.1",
                "SOPInstanceUID": "1.1.1.2",
                "Modality": "CT",
                "StudyDate": "2026-11-20",
                "PatientID": "A",
            },
            {
                "StudyInstanceUID": "1.2",
                "SeriesInstanceUID": "1.2.1",
                "SOPInstanceUID": "1.2.1.1",
                "Modality": "MR",
                "StudyDate": "2026-11-21",
                "PatientID": "B",
            },
            {
                "StudyInstanceUID": "1.3",
                "SeriesInstanceUID": "1.3.1",
                "SOPInstanceUID": "1.3.1.1",
                "Modality": "CT",
                "StudyDate": "2026-11-25",
                "PatientID": "C",
            },
        ],
    )
    bucket = new_bucket("prov")
    run = fixture_dag("bq_provider_chain").test(
        run_conf={
            "project_id": PROJECT,
            "bigquery_dataset": dataset,
            "bucket": bucket.name,
            "granularity": "series",
            "modalities": "CT",
            "study_date_from": "2026-11-19",
            "study_date_to": "2026-11-22",
        }
    )
    assert _states(run) == {"query": "success", "extract": "success"}
    assert bucket.blob("filter.txt").download_as_bytes() == b"/studies/1.1/series/1.1.1\n"


def test_query_on_missing_table_fails_the_task():
    run = fixture_dag("bq_provider_missing").test(run_conf={"project_id": PROJECT})
    assert _states(run) == {"query": "failed"}


def test_the_provider_deferrable_trigger_polls_the_local_bigquery():
    """BigQueryInsertJobTrigger, which the provider's deferrable BigQuery operators defer to, sees a local job
    finish: it reads the job through the provider's hook, so BIGQUERY_EMULATOR_HOST reaches it as it is."""
    import asyncio

    from airflow.providers.google.cloud.triggers.bigquery import BigQueryInsertJobTrigger

    bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials())
    job = bq.query("SELECT 1 AS one")
    job.result()
    trigger = BigQueryInsertJobTrigger(
        conn_id="google_cloud_default", job_id=job.job_id, project_id=PROJECT, location=job.location, poll_interval=0.2
    )

    async def first_event():
        return await asyncio.wait_for(anext(trigger.run()), 30)

    event = asyncio.run(first_event())
    assert event.payload["status"] == "success" and event.payload["job_id"] == job.job_id
