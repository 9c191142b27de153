"""Test fixture: the provider's BigQuery operators running the project's filter SQL (see test_bigquery_provider)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.providers.google.cloud.operators.bigquery import BigQueryInsertJobOperator
from airflow.providers.google.cloud.transfers.bigquery_to_gcs import BigQueryToGCSOperator
from airflow.sdk import DAG

INCLUDE = str(Path(__file__).resolve().parents[2] / "include")
CRITERIA = ("modalities", "study_date_from", "study_date_to", "patient_ids", "study_uids")

with DAG(
    "bq_provider_chain",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    template_searchpath=[INCLUDE],
    tags=["test"],
    params={
        "project_id": "p",
        "bigquery_dataset": "d",
        "granularity": "series",
        "bucket": "b",
        "metadata_table": "",
        **{k: "" for k in CRITERIA},
    },
    user_defined_macros={"store_metadata_table": lambda params: "meta_table"},
) as chain:
    query = BigQueryInsertJobOperator(
        task_id="query",
        project_id="{{ params.project_id }}",
        deferrable=False,
        retries=0,
        configuration={
            "query": {
                "query": "{% include 'sql/filter_paths.sql' %}",
                "useLegacySql": False,
                "parameterMode": "NAMED",
                "queryParameters": [
                    {
                        "name": k,
                        "parameterType": {"type": "STRING"},
                        "parameterValue": {"value": f"{{{{ params.{k} }}}}"},
                    }
                    for k in CRITERIA
                ],
                "destinationTable": {
                    "projectId": "{{ params.project_id }}",
                    "datasetId": "{{ params.bigquery_dataset }}",
                    "tableId": "paths",
                },
                "writeDisposition": "WRITE_TRUNCATE",
            }
        },
    )
    extract = BigQueryToGCSOperator(
        task_id="extract",
        project_id="{{ params.project_id }}",
        deferrable=False,
        export_format="CSV",
        print_header=False,
        retries=0,
        source_project_dataset_table="{{ params.project_id }}.{{ params.bigquery_dataset }}.paths",
        destination_cloud_storage_uris=["gs://{{ params.bucket }}/filter.txt"],
    )
    query >> extract

with DAG(
    "bq_provider_missing",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    tags=["test"],
    params={"project_id": "p"},
) as missing:
    BigQueryInsertJobOperator(
        task_id="query",
        project_id="{{ params.project_id }}",
        deferrable=False,
        retries=0,
        configuration={
            "query": {"query": "SELECT * FROM `{{ params.project_id }}.nope.missing`", "useLegacySql": False}
        },
    )
