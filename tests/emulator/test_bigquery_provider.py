"""The Airflow Google provider's own BigQuery operators against the local BigQuery, through dag.test()."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from tests.helpers import PROJECT, dag_bag, new_bucket, unique

pytestmark = pytest.mark.usefixtures("stack", "airflow_db")


def fixture_dag(dag_id: str):
    return dag_bag(Path(__file__).resolve().parents[1] / "dag_fixtures" / "bq_provider_chain.py").get_dag(dag_id)


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def metadata_table(prefix: str, name: str, *extra: tuple[str, str]) -> tuple[bigquery.Client, str, bigquery.Table]:
    """A new dataset with one metadata table: the UIDs, Modality, StudyDate and the ``extra`` columns."""
    bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials())
    dataset = unique(prefix).replace("-", "_")
    bq.create_dataset(dataset)
    columns = [("StudyInstanceUID", "STRING"), ("SeriesInstanceUID", "STRING"), ("SOPInstanceUID", "STRING")]
    columns += [("Modality", "STRING"), ("StudyDate", "DATE"), *extra]
    table = bigquery.Table(f"{PROJECT}.{dataset}.{name}", schema=[bigquery.SchemaField(n, t) for n, t in columns])
    return bq, dataset, bq.create_table(table)


def run_chain(dataset: str, **conf: str) -> bytes:
    """Run the provider's query and extract on the project's filter SQL; returns the filter file written."""
    bucket = new_bucket("prov")
    run = fixture_dag("bq_provider_chain").test(
        run_conf={"project_id": PROJECT, "bigquery_dataset": dataset, "bucket": bucket.name, **conf}
    )
    assert _states(run) == {"query": "success", "extract": "success"}
    return bucket.blob("filter.txt").download_as_bytes()


def test_concat_query_and_headerless_extract():
    bq, dataset, table = metadata_table("prov", "meta_table", ("PatientID", "STRING"))
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
    filter_file = run_chain(
        dataset, granularity="series", modalities="CT", study_date_from="2026-11-19", study_date_to="2026-11-22"
    )
    assert filter_file == b"/studies/1.1/series/1.1.1\n"


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


def test_a_streamed_table_is_read_as_a_change_log():
    """The stream appends a row per change and never removes one: an instance whose latest row is a DELETE is not
    selected; one deleted and stored again is; criteria apply to the latest row. A 2010 study is selected."""
    bq, dataset, table = metadata_table("change", "stream", ("LastUpdated", "TIMESTAMP"), ("Type", "STRING"))

    def row(study: str, modality: str, day: str, at: str, change: str) -> dict:
        return {
            "StudyInstanceUID": study,
            "SeriesInstanceUID": study + ".1",
            "SOPInstanceUID": study + ".1.1",
            "Modality": modality,
            "StudyDate": day,
            "LastUpdated": f"2026-12-01T0{at}:00:00Z",
            "Type": change,
        }

    bq.insert_rows(
        table,
        [
            row("1.1", "CT", "2026-11-20", "1", "INSERT"),
            row("1.1", "CT", "2026-11-20", "2", "DELETE"),  # withdrawn: not exported
            row("1.2", "CT", "2026-11-20", "1", "INSERT"),
            row("1.2", "CT", "2026-11-20", "2", "DELETE"),
            row("1.2", "CT", "2026-11-20", "3", "INSERT"),  # stored again: exported
            row("1.3", "CT", "2010-03-01", "1", "INSERT"),  # a prior from 2010
            row("1.3", "CT", "2010-03-01", "2", "UPDATE"),  # a storage-class change (its Type is undocumented)
            row("1.4", "MR", "2026-11-20", "1", "INSERT"),
        ],
    )
    filter_file = run_chain(
        dataset, granularity="instance", modalities="CT", metadata_table=f"bq://{PROJECT}.{dataset}.stream"
    )
    assert filter_file.decode().splitlines() == [
        "/studies/1.2/series/1.2.1/instances/1.2.1.1",
        "/studies/1.3/series/1.3.1/instances/1.3.1.1",
    ]
