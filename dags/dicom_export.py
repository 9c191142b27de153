"""Export a whole DICOM store to Cloud Storage, as stored DICOM or rendered (JPEG / PNG / raw)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from dicom_pipelines.dag_params import BUCKET_PATTERN, env, export_prefix_param, mime_param, store_params, tolerance_params
from dicom_pipelines.operators import HealthcareDicomExportOperator
from dicom_pipelines.pipeline_tasks import default_export_prefix, safe_table_suffix

GCP_CONN_ID = "google_cloud_default"

with DAG(
    dag_id="dicom_export",
    description="Export the whole DICOM store to GCS",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["dicom", "healthcare", "export"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    user_defined_filters={"bq_safe": safe_table_suffix},
    params={
        **store_params(),
        "export_bucket": Param(env("EXPORT_BUCKET", "dicom-exports"), type="string", pattern=BUCKET_PATTERN,
                               description="Bucket for the exported objects when no prefix is given."),
        "destination_prefix": export_prefix_param(),
        "mime_type": mime_param(),
        **tolerance_params(),
    },
    doc_md=__doc__,
) as dag:
    export = HealthcareDicomExportOperator(
        task_id="export_dicom",
        project_id="{{ params.project_id }}", location="{{ params.location }}", dataset_id="{{ params.dataset_id }}",
        dicom_store_id="{{ params.dicom_store_id }}", gcp_conn_id=GCP_CONN_ID,
        uri_prefix="{{ params.destination_prefix or ('gs://' ~ params.export_bucket ~ '/exports/' ~ (run_id | bq_safe)) }}",
        mime_type="{{ params.mime_type }}",
        max_failures="{{ params.max_failures }}",
        max_failure_ratio="{{ params.max_failure_ratio }}",
    )

    @task
    def verify_export(result: dict, **context) -> dict:
        from dicom_pipelines.pipeline_tasks import count_exported

        prefix = default_export_prefix(context["params"], context["run_id"])
        return count_exported(GCP_CONN_ID, prefix, context["params"]["mime_type"], result)

    verify_export(export.output)
