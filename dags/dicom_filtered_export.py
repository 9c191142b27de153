"""Export only the DICOM instances that match criteria, via BigQuery (the guide's filtered export).

1. export the store's metadata to a run-scoped BigQuery table (WRITE_TRUNCATE);
2. run ``include/sql/filter_paths.sql`` (CONCAT of the UIDs, DISTINCT at the chosen granularity)
   into a table; the criteria reach the SQL only as query parameters, read when the job is sent, so no
   log line or rendered field holds them; the dry run's bytes are logged and ``maximumBytesBilled`` caps
   the cost; both work tables get an expiry;
3. extract that table to GCS as a header-less CSV and compose the shards into one filter file;
4. validate the filter file (nothing matched: the export is skipped; a bad line: the run fails);
5. export with ``filterConfig.resourcePathsGcsUri``; 6. verify the exported objects;
7. drop the work tables (they hold PatientName and PatientID) and the extract shards.

With ``filter_uri`` set, steps 1-3 are skipped and that hand-written file is used instead.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.providers.google.cloud.operators.bigquery import BigQueryCreateEmptyDatasetOperator
from airflow.providers.google.cloud.transfers.bigquery_to_gcs import BigQueryToGCSOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, task

from dicom_pipelines.bigquery import BigQueryCriteriaQueryOperator
from dicom_pipelines.checks import check_params, verify_export
from dicom_pipelines.dag_params import (
    EXPORT_PREFIX,
    GCP_CONN_ID,
    STORE_FROM_PARAMS,
    TOLERANCE_FROM_PARAMS,
    export_params,
    filter_params,
    safe_table_suffix,
    store_params,
    tolerance_params,
)
from dicom_pipelines.operators import HealthcareDicomExportOperator, HealthcareDicomExportToBigQueryOperator

INCLUDE_DIR = str(Path(__file__).resolve().parent.parent / "include")
RUN = "{{ run_id | bq_safe }}"
META_TABLE = "meta_" + RUN
FILTER_TABLE = "filter_" + RUN
FILTER_OBJECT = "filters/" + RUN + ".txt"
SHARD_PREFIX = "filters/" + RUN + "/part-"


CRITERIA = ("modalities", "study_date_from", "study_date_to", "patient_ids", "study_uids")
"""The params the filter query reads as query parameters, never as templates (they may identify patients)."""
WORK_DATASET = "{{ params.project_id }}.{{ params.bigquery_dataset }}."
WORK_TABLES = [WORK_DATASET + META_TABLE, WORK_DATASET + FILTER_TABLE]
"""This run's BigQuery work tables; they hold PatientName and PatientID."""


with DAG(
    dag_id="dicom_filtered_export",
    description="Export the DICOM instances matching criteria, using BigQuery to build the filter file",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=4,
    tags=["dicom", "healthcare", "export", "bigquery"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    template_searchpath=[INCLUDE_DIR],
    user_defined_filters={"bq_safe": safe_table_suffix},
    user_defined_macros={"run_metadata_table": lambda run_id: "meta_" + safe_table_suffix(run_id)},
    params={
        **store_params(),
        **filter_params(),
        **export_params(),
        **tolerance_params(),
    },
    doc_md=__doc__,
) as dag:

    @task.branch
    def choose_filter_source(**context) -> str:
        return "use_given_filter" if context["params"].get("filter_uri") else "ensure_work_dataset"

    @task.branch
    def choose_metadata_source(**context) -> str:
        """A table the store streams to is current already; otherwise this run exports the metadata."""
        return "use_metadata_table" if context["params"].get("metadata_table") else "export_metadata"

    use_metadata_table = EmptyOperator(task_id="use_metadata_table")

    use_given_filter = EmptyOperator(task_id="use_given_filter")

    ensure_work_dataset = BigQueryCreateEmptyDatasetOperator(
        task_id="ensure_work_dataset",
        gcp_conn_id=GCP_CONN_ID,
        project_id="{{ params.project_id }}",
        dataset_id="{{ params.bigquery_dataset }}",
        if_exists="ignore",
    )

    export_metadata = HealthcareDicomExportToBigQueryOperator(
        task_id="export_metadata",
        **STORE_FROM_PARAMS,
        gcp_conn_id=GCP_CONN_ID,
        write_disposition="WRITE_TRUNCATE",
        table_uri="bq://{{ params.project_id }}.{{ params.bigquery_dataset }}." + META_TABLE,
    )

    build_filter_table = BigQueryCriteriaQueryOperator(
        task_id="build_filter_table",
        trigger_rule="none_failed_min_one_success",
        gcp_conn_id=GCP_CONN_ID,
        project_id="{{ params.project_id }}",
        deferrable=False,
        criteria=CRITERIA,
        maximum_bytes_billed="{{ params.maximum_bytes_billed }}",
        expire_tables=WORK_TABLES,
        expiration_hours="{{ params.work_table_expiration_hours }}",
        configuration={
            "query": {
                "query": "{% include 'sql/filter_paths.sql' %}",
                "useLegacySql": False,
                "parameterMode": "NAMED",
                "destinationTable": {
                    "projectId": "{{ params.project_id }}",
                    "datasetId": "{{ params.bigquery_dataset }}",
                    "tableId": FILTER_TABLE,
                },
                "writeDisposition": "WRITE_TRUNCATE",
                "createDisposition": "CREATE_IF_NEEDED",
            }
        },
    )

    extract_filter = BigQueryToGCSOperator(
        task_id="extract_filter",
        gcp_conn_id=GCP_CONN_ID,
        project_id="{{ params.project_id }}",
        source_project_dataset_table="{{ params.project_id }}.{{ params.bigquery_dataset }}." + FILTER_TABLE,
        destination_cloud_storage_uris=["gs://{{ params.export_bucket }}/" + SHARD_PREFIX + "*.csv"],
        export_format="CSV",
        print_header=False,
        deferrable=False,
    )

    @task
    def compose_filter(bucket: str, shard_prefix: str, destination: str) -> str:
        from dicom_pipelines.filter_files import compose_filter_shards

        return compose_filter_shards(GCP_CONN_ID, bucket, shard_prefix, destination)

    @task(trigger_rule="none_failed_min_one_success")
    def check_filter(**context) -> dict:
        from dicom_pipelines.filter_files import check_filter_file

        params = context["params"]
        uri = params.get("filter_uri") or context["ti"].xcom_pull(task_ids="compose_filter")
        return check_filter_file(GCP_CONN_ID, uri)

    export = HealthcareDicomExportOperator(
        task_id="export_dicom",
        **STORE_FROM_PARAMS,
        gcp_conn_id=GCP_CONN_ID,
        uri_prefix=EXPORT_PREFIX,
        mime_type="{{ params.mime_type or '' }}",
        filter_uri="{{ ti.xcom_pull(task_ids='check_filter')['filter_uri'] }}",
        **TOLERANCE_FROM_PARAMS,
    )

    @task(trigger_rule="none_failed")
    def drop_work_tables(tables: list[str], bucket: str, shard_prefix: str) -> dict:
        """The work tables hold PatientName and PatientID, and the shards are no longer needed: both go."""
        from dicom_pipelines.bigquery import drop_work_tables
        from dicom_pipelines.filter_files import delete_shards

        return {
            "dropped_tables": drop_work_tables(GCP_CONN_ID, tables),
            "deleted_shards": delete_shards(GCP_CONN_ID, bucket, shard_prefix),
        }

    checked = check_filter()
    check_params() >> choose_filter_source() >> [ensure_work_dataset, use_given_filter]
    ensure_work_dataset >> choose_metadata_source() >> [export_metadata, use_metadata_table]
    use_metadata_table >> build_filter_table
    use_given_filter >> checked
    (
        export_metadata
        >> build_filter_table
        >> extract_filter
        >> compose_filter("{{ params.export_bucket }}", SHARD_PREFIX, FILTER_OBJECT)
        >> checked
    )
    checked >> export
    verified = verify_export(export.output, gcp_conn_id=GCP_CONN_ID)  # type: ignore[arg-type]  # resolved at run time
    verified >> drop_work_tables(WORK_TABLES, "{{ params.export_bucket }}", SHARD_PREFIX)
