"""The criteria query on the Google provider's public hook: criteria sent as parameters and shown nowhere, and a
retry that takes the earlier try's job instead of sending another. Against the local BigQuery."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowException
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from dicom_pipelines.bigquery import BigQueryCriteriaQueryOperator
from tests.helpers import PROJECT, unique

pytestmark = pytest.mark.usefixtures("stack")
PATIENT = "PAT-4711"
CRITERION = "WHERE PatientID IN UNNEST(SPLIT(@patient_ids))"


class TI:
    def __init__(self, try_number: int):
        self.try_number = try_number


def setup_table() -> tuple[bigquery.Client, str]:
    bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials())
    dataset = unique("crit").replace("-", "_")
    bq.create_dataset(dataset)
    table = bigquery.Table(
        f"{PROJECT}.{dataset}.meta",
        schema=[bigquery.SchemaField("StudyInstanceUID", "STRING"), bigquery.SchemaField("PatientID", "STRING")],
    )
    bq.insert_rows(bq.create_table(table), [{"StudyInstanceUID": "1.2", "PatientID": PATIENT}])
    return bq, dataset


def query_operator(dataset: str, sql: str | None = None) -> BigQueryCriteriaQueryOperator:
    query = (
        sql or f"SELECT StudyInstanceUID FROM `{PROJECT}.{dataset}.meta` WHERE PatientID IN UNNEST(SPLIT(@patient_ids))"
    )
    return BigQueryCriteriaQueryOperator(
        task_id="build_filter_table",
        project_id=PROJECT,
        criteria=["patient_ids"],
        deferrable=False,
        configuration={
            "query": {
                "query": query,
                "useLegacySql": False,
                "parameterMode": "NAMED",
                "destinationTable": {"projectId": PROJECT, "datasetId": dataset, "tableId": "filter"},
                "writeDisposition": "WRITE_TRUNCATE",
            }
        },
        expire_tables=[f"{PROJECT}.{dataset}.filter"],
    )


def context(try_number: int, run_id: str) -> dict:
    return {"ti": TI(try_number), "run_id": run_id, "params": {"patient_ids": [PATIENT]}}


def test_criteria_go_to_the_job_as_parameters_and_nowhere_else(capfd):
    bq, dataset = setup_table()
    op = query_operator(dataset)
    run_id = unique("run")
    job_id = op.execute(context(1, run_id))
    job = bq.get_job(job_id)
    assert [p.to_api_repr()["parameterValue"]["value"] for p in job.query_parameters] == [PATIENT]
    assert [tuple(r.values()) for r in bq.list_rows(f"{PROJECT}.{dataset}.filter")] == [("1.2",)]
    assert PATIENT not in repr(op.configuration) and PATIENT not in job_id
    out, err = capfd.readouterr()
    assert PATIENT not in out + err and f"Sending {job_id}" in out + err
    assert bq.get_table(f"{PROJECT}.{dataset}.filter").expires is not None


def test_a_retry_takes_the_earlier_tries_job_instead_of_sending_another():
    bq, dataset = setup_table()
    run_id = unique("run")
    first = query_operator(dataset).execute(context(1, run_id))
    bq.delete_table(f"{PROJECT}.{dataset}.meta")  # a second job would now fail: the retry must not send one
    assert query_operator(dataset).execute(context(2, run_id)) == first


def test_a_retry_after_a_failed_job_sends_a_new_one():
    bq, dataset = setup_table()
    run_id = unique("run")
    broken = (
        f"SELECT StudyInstanceUID FROM `{PROJECT}.{dataset}.missing` WHERE PatientID IN UNNEST(SPLIT(@patient_ids))"
    )
    with pytest.raises(Exception):  # noqa: B017 - the local BigQuery refuses the dry run, Google the job
        query_operator(dataset, broken).execute(context(1, run_id))
    second = query_operator(dataset).execute(context(2, run_id))
    assert second.endswith("_try2")


def test_a_failed_trigger_event_fails_the_task_naming_the_job():
    op = query_operator("d")
    with pytest.raises(AirflowException, match="BigQuery job j1 failed: boom"):
        op.execute_complete({}, {"status": "error", "job_id": "j1", "message": "boom"})
