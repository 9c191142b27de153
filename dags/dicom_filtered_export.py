"""Export only the DICOM instances that match criteria, via BigQuery (the guide's filtered export).

1. build the filter file from the criteria (:mod:`dicom_pipelines.filter_chain`): the store's metadata in
   BigQuery (the table the store streams to, or the store's own metadata table, refreshed unless fresh enough),
   the filter query with the criteria as query parameters, an extract, one composed file, checked;
2. export with ``filterConfig.resourcePathsGcsUri``; 3. verify the exported objects;
4. drop this run's work tables (they hold PatientName and PatientID) and the extract shards.

With ``filter_uri`` set, step 1 uses that hand-written file instead.
"""

from __future__ import annotations

import datetime as dt

# The provider modules the package's operators load, named so that the dag-processor imports them once, before
# it parses this file ([dag_processor] parsing_pre_import_modules), not in every parse.
import airflow.providers.common.compat.sdk  # noqa: F401
import airflow.providers.google.cloud.hooks.bigquery  # noqa: F401
import airflow.providers.google.cloud.operators.cloud_base  # noqa: F401
import airflow.providers.google.cloud.transfers.bigquery_to_gcs  # noqa: F401
import airflow.providers.google.cloud.triggers.bigquery  # noqa: F401
import airflow.providers.standard.decorators.branch_python  # noqa: F401
import airflow.providers.standard.decorators.python  # noqa: F401
import airflow.providers.standard.operators.empty  # noqa: F401
from airflow.sdk import DAG

from dicom_pipelines.alerts import failure_callback
from dicom_pipelines.checks import check_params, verify_export
from dicom_pipelines.dag_params import (
    EXPORT_PREFIX,
    GOOGLE,
    STORE_FROM_PARAMS,
    TOLERANCE_FROM_PARAMS,
    export_params,
    filter_params,
    store_params,
    tolerance_params,
)
from dicom_pipelines.filter_chain import DAG_KWARGS, add_cleanup_task, add_filter_file_tasks
from dicom_pipelines.operators import HealthcareDicomExportOperator

with DAG(
    dag_id="dicom_filtered_export",
    description="Export the DICOM instances matching criteria, using BigQuery to build the filter file",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=4,
    tags=["dicom", "healthcare", "export", "bigquery"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    params={
        **store_params(),
        **filter_params(),
        **export_params(),
        **tolerance_params(),
    },
    doc_md=__doc__,
    on_failure_callback=failure_callback,
    **DAG_KWARGS,
) as dag:
    chain = add_filter_file_tasks()
    export = HealthcareDicomExportOperator(
        task_id="export_dicom",
        **STORE_FROM_PARAMS,
        **GOOGLE,
        uri_prefix=EXPORT_PREFIX,
        mime_type="{{ params.mime_type or '' }}",
        filter_uri="{{ ti.xcom_pull(task_ids='check_filter')['filter_uri'] }}",
        deferrable=True,
        **TOLERANCE_FROM_PARAMS,
    )
    check_params() >> chain.first
    chain.filter_ready >> export
    verified = verify_export(export.output, **GOOGLE)  # type: ignore[arg-type]  # resolved at run time
    add_cleanup_task(verified)
