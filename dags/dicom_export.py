"""Export a whole DICOM store to Cloud Storage, as stored DICOM or rendered (JPEG / PNG / raw)."""

from __future__ import annotations

import datetime as dt

# The provider modules the package's operators load, named so that the dag-processor imports them once, before
# it parses this file ([dag_processor] parsing_pre_import_modules), not in every parse.
import airflow.providers.common.compat.sdk  # noqa: F401
import airflow.providers.google.cloud.operators.cloud_base  # noqa: F401
import airflow.providers.standard.decorators.python  # noqa: F401
from airflow.sdk import DAG

from dicom_pipelines.alerts import failure_callback
from dicom_pipelines.checks import check_params, verify_export
from dicom_pipelines.dag_params import (
    EXPORT_PREFIX,
    GOOGLE,
    STORE_FROM_PARAMS,
    TOLERANCE_FROM_PARAMS,
    export_params,
    safe_table_suffix,
    store_params,
    tolerance_params,
)
from dicom_pipelines.operators import HealthcareDicomExportOperator

with DAG(
    dag_id="dicom_export",
    description="Export the whole DICOM store to GCS",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["dicom", "healthcare", "export"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    user_defined_filters={"bq_safe": safe_table_suffix},
    params={
        **store_params(),
        **export_params(),
        **tolerance_params(),
    },
    doc_md=__doc__,
    on_failure_callback=failure_callback,
) as dag:
    export = HealthcareDicomExportOperator(
        task_id="export_dicom",
        **STORE_FROM_PARAMS,
        **GOOGLE,
        uri_prefix=EXPORT_PREFIX,
        mime_type="{{ params.mime_type or '' }}",
        deferrable=True,
        **TOLERANCE_FROM_PARAMS,
    )

    check_params() >> export
    verify_export(export.output, **GOOGLE)  # type: ignore[arg-type]  # resolved at run time
