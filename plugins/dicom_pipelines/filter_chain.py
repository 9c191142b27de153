"""The filter-file chain, shared by every DAG that selects a cohort by criteria.

Criteria → BigQuery → one header-less filter file in GCS, checked:

1. the metadata to query: the table the store streams to (``metadata_table``), else the store's own metadata
   table, exported again (``WRITE_TRUNCATE``) unless its last refresh is younger than
   ``metadata_max_age_hours``;
2. ``sql/filter_paths.sql`` (package data, linked from the repository's ``include/sql/``) into a per-run table;
   the criteria are query parameters read when the job is sent, so no log line, rendered field or XCom holds
   them; the dry run's bytes are logged and ``maximumBytesBilled`` caps the cost; the work tables get an expiry;
3. extract to GCS (CSV, no header) and compose the shards into one file;
4. check the file; with ``filter_uri`` set, steps 1-3 are skipped and that file is checked instead.

:func:`add_filter_file_tasks` adds these tasks to the DAG being defined and returns the first and the last;
:func:`add_cleanup_task` adds the task that drops the work tables and the shards after a successful run. A DAG
using them passes :data:`DAG_KWARGS` (template path, filter and macros) and the params of
:func:`~dicom_pipelines.dag_params.filter_params`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.providers.google.cloud.transfers.bigquery_to_gcs import BigQueryToGCSOperator
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import BaseOperator, XComArg, task

from dicom_pipelines.bigquery import BigQueryCriteriaQueryOperator
from dicom_pipelines.dag_params import GOOGLE, STORE_FROM_PARAMS, safe_table_suffix
from dicom_pipelines.operators import HealthcareDicomExportToBigQueryOperator

log = logging.getLogger(__name__)

TEMPLATE_DIR = str(Path(__file__).resolve().parent / "include")
"""The package's own templates (``sql/filter_paths.sql``): found wherever the package is, installed as a wheel
or copied in Airflow's plugins folder (Cloud Composer syncs ``plugins/`` but not an ``include/`` beside ``dags/``)."""
CRITERIA = ("modalities", "study_date_from", "study_date_to", "patient_ids", "study_uids")
"""The params the filter query reads as query parameters, never as templates (they may identify patients)."""


def store_metadata_table(params: Any) -> str:
    """The store's own metadata table: one per store, refreshed in place, never one per run."""
    return "meta_" + safe_table_suffix(f"{params['dataset_id']}__{params['dicom_store_id']}")


DAG_KWARGS: dict[str, Any] = {
    "template_searchpath": [TEMPLATE_DIR],
    "user_defined_filters": {"bq_safe": safe_table_suffix},
    "user_defined_macros": {"store_metadata_table": store_metadata_table},
}
RUN = "{{ run_id | bq_safe }}"
FILTER_OBJECT = "filters/" + RUN + ".txt"
SHARD_PREFIX = "filters/" + RUN + "/part-"
WORK_DATASET = "{{ params.project_id }}.{{ params.bigquery_dataset }}."
FILTER_TABLE = WORK_DATASET + "filter_" + RUN
"""This run's table of resource paths."""
METADATA_TABLE = WORK_DATASET + "{{ store_metadata_table(params) }}"
"""The store's metadata table (when no ``metadata_table`` is given); it holds PatientName and PatientID."""
WORK_TABLE_HOURS = "{{ [params.work_table_expiration_hours, params.get('metadata_max_age_hours') or 0] | max }}"


Node = BaseOperator | XComArg
"""A task in a dependency chain: an operator, or a decorated task's output."""


@dataclass
class FilterChain:
    first: Node
    """The task to put after ``check_params``."""
    filter_ready: Node
    """``check_filter``: its XCom holds ``filter_uri`` and the counts of the file."""


def add_filter_file_tasks() -> FilterChain:
    """Add the chain to the DAG being defined (inside ``with DAG(...)``)."""

    @task.branch
    def choose_filter_source(**context) -> str:
        return "use_given_filter" if context["params"].get("filter_uri") else "ensure_work_dataset"

    @task.branch
    def choose_metadata_source(**context) -> str:
        """The streamed table is current already; the store's own table is reused while fresh enough."""
        from dicom_pipelines.bigquery import table_age_hours

        params = context["params"]
        if params.get("metadata_table"):
            return "use_metadata_table"
        max_age = float(params.get("metadata_max_age_hours") or 0)
        if max_age > 0:
            table = f"{params['project_id']}.{params['bigquery_dataset']}.{store_metadata_table(params)}"
            age = table_age_hours(**GOOGLE, table=table)
            if age is not None and age < max_age:
                log.info("Reusing %s, refreshed %.2f h ago (limit %s h)", table, age, max_age)
                return "reuse_store_metadata"
        return "export_metadata"

    use_given_filter = EmptyOperator(task_id="use_given_filter")
    use_metadata_table = EmptyOperator(task_id="use_metadata_table")
    reuse_store_metadata = EmptyOperator(task_id="reuse_store_metadata")

    @task
    def ensure_work_dataset(**context) -> str:
        """The work dataset holds PatientName and PatientID: it is made, or must already be, in the Healthcare
        dataset's region (or in ``bigquery_location``, when the user names one)."""
        from airflow.providers.common.compat.sdk import AirflowFailException
        from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

        from dicom_pipelines.bigquery import bigquery_location, ensure_dataset_in

        params = context["params"]
        location = params.get("bigquery_location") or bigquery_location(params["location"])
        dataset = f"{params['project_id']}.{params['bigquery_dataset']}"
        client = BigQueryHook(**GOOGLE).get_client(project_id=params["project_id"])
        try:
            created = ensure_dataset_in(client, dataset, location, create=True, purpose="the work tables")
        except ValueError as exc:
            raise AirflowFailException(f"bigquery_dataset={params['bigquery_dataset']!r}: {exc}") from None
        log.info("Work dataset %s %s in %s", dataset, "created" if created else "found", location)
        return location

    export_metadata = HealthcareDicomExportToBigQueryOperator(
        task_id="export_metadata",
        **STORE_FROM_PARAMS,
        **GOOGLE,
        write_disposition="WRITE_TRUNCATE",
        table_uri="bq://" + METADATA_TABLE,
        deferrable=True,
    )
    build_filter_table = BigQueryCriteriaQueryOperator(
        task_id="build_filter_table",
        trigger_rule="none_failed_min_one_success",
        **GOOGLE,
        project_id="{{ params.project_id }}",
        criteria=CRITERIA,
        maximum_bytes_billed="{{ params.maximum_bytes_billed }}",
        expire_tables=[METADATA_TABLE, FILTER_TABLE],
        expiration_hours=WORK_TABLE_HOURS,
        deferrable=True,
        configuration={
            "query": {
                "query": "{% include 'sql/filter_paths.sql' %}",
                "useLegacySql": False,
                "parameterMode": "NAMED",
                "destinationTable": {
                    "projectId": "{{ params.project_id }}",
                    "datasetId": "{{ params.bigquery_dataset }}",
                    "tableId": "filter_" + RUN,
                },
                "writeDisposition": "WRITE_TRUNCATE",
                "createDisposition": "CREATE_IF_NEEDED",
            }
        },
    )
    extract_filter = BigQueryToGCSOperator(
        task_id="extract_filter",
        **GOOGLE,
        project_id="{{ params.project_id }}",
        source_project_dataset_table=FILTER_TABLE,
        destination_cloud_storage_uris=["gs://{{ params.export_bucket }}/" + SHARD_PREFIX + "*.csv"],
        export_format="CSV",
        print_header=False,
        deferrable=True,
    )

    @task
    def compose_filter(bucket: str, shard_prefix: str, destination: str) -> str:
        from dicom_pipelines.filter_files import compose_filter_shards

        return compose_filter_shards(**GOOGLE, bucket=bucket, shard_prefix=shard_prefix, destination=destination)

    @task(trigger_rule="none_failed_min_one_success")
    def check_filter(**context) -> dict:
        from dicom_pipelines.filter_files import check_filter_file

        uri = context["params"].get("filter_uri") or context["ti"].xcom_pull(task_ids="compose_filter")
        return check_filter_file(**GOOGLE, filter_uri=uri)

    first = choose_filter_source()
    checked = check_filter()
    work_dataset = ensure_work_dataset()
    first >> [work_dataset, use_given_filter]
    work_dataset >> choose_metadata_source() >> [export_metadata, use_metadata_table, reuse_store_metadata]
    [export_metadata, use_metadata_table, reuse_store_metadata] >> build_filter_table
    use_given_filter >> checked
    (
        build_filter_table
        >> extract_filter
        >> compose_filter("{{ params.export_bucket }}", SHARD_PREFIX, FILTER_OBJECT)
        >> checked
    )
    return FilterChain(first=first, filter_ready=checked)


def add_cleanup_task(after: Node) -> Node:
    """Drop this run's filter table, the store's metadata table unless it is kept for reuse, and the shards."""

    @task(trigger_rule="none_failed")
    def drop_work_tables(filter_table: str, metadata_table: str, bucket: str, shard_prefix: str, **context) -> dict:
        """The work tables hold PatientName and PatientID, and the shards are no longer needed: both go."""
        from dicom_pipelines.bigquery import drop_work_tables
        from dicom_pipelines.filter_files import delete_shards

        reuse = float(context["params"].get("metadata_max_age_hours") or 0) > 0
        tables = [filter_table] + ([] if reuse or context["params"].get("metadata_table") else [metadata_table])
        return {
            "dropped_tables": drop_work_tables(**GOOGLE, tables=tables),
            "deleted_shards": delete_shards(**GOOGLE, bucket=bucket, shard_prefix=shard_prefix),
        }

    cleanup = drop_work_tables(FILTER_TABLE, METADATA_TABLE, "{{ params.export_bucket }}", SHARD_PREFIX)
    after >> cleanup
    return cleanup
