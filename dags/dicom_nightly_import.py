"""Nightly import of the previous day's DICOM files from Cloud Storage into a DICOM store.

Each run imports ``gs://{source_bucket}/{source_prefix}/{day}/{source_pattern}`` (default
``**.dcm``), where ``day`` is the start of the run's data interval (YYYY-MM-DD): the run at 00:00 on 11-25
imports the files of 11-24. Backfills from the UI or the REST API replay any range of days. A run
started by hand imports the ``day`` param, or, with no logical date, yesterday (UTC).
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, task

from dicom_pipelines.dag_params import (
    BUCKET_PATTERN,
    GCP_CONN_ID,
    GCS_URI_PATTERN,
    STORE_FROM_PARAMS,
    TOLERANCE_FROM_PARAMS,
    env,
    store_params,
    tolerance_params,
)
from dicom_pipelines.operators import HealthcareDicomImportOperator, HealthcareEnsureDicomStoreOperator

log = logging.getLogger(__name__)
STORE_ASSET = Asset(
    name="dicom_store",
    uri="healthcare://{}/{}/{}/{}".format(
        env("GCP_PROJECT", "demo-project"),
        env("HEALTHCARE_LOCATION", "us-central1"),
        env("HEALTHCARE_DATASET", "demo-dataset"),
        env("DICOM_STORE", "demo-store"),
    ),
)

IMPORT_DAY = (
    "(params.day or (data_interval_start.strftime('%Y-%m-%d') if data_interval_start is defined and "
    "data_interval_start else macros.ds_add(dag_run.run_after.strftime('%Y-%m-%d'), -1)))"
)
"""The day whose folder a run imports: the ``day`` param, else the data interval's start, else (a manual run
with no logical date) the day before the run, UTC. A template that cannot fail on a missing logical date."""

with DAG(
    dag_id="dicom_nightly_import",
    description="Import the previous day's DICOM files from GCS into the DICOM store",
    schedule=CronDataIntervalTimetable(env("DICOM_IMPORT_CRON", "0 0 * * *"), timezone="UTC"),
    start_date=dt.datetime.fromisoformat(env("DICOM_IMPORT_START_DATE", "2026-11-01")).replace(tzinfo=dt.UTC),
    catchup=True,
    max_active_runs=1,  # one import at a time per store keeps the instance-count delta exact
    render_template_as_native_obj=True,
    tags=["dicom", "healthcare", "import"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    params={
        **store_params(),
        "source_bucket": Param(
            env("SOURCE_BUCKET", "dicom-incoming"),
            type="string",
            pattern=BUCKET_PATTERN,
            description="Bucket that receives the DICOM files.",
        ),
        "source_prefix": Param(
            "incoming",
            type="string",
            pattern=r"^[^*?]*[^/*?]$|^$",
            description="Folder in the bucket; each day's files are under <prefix>/<YYYY-MM-DD>/.",
        ),
        "source_pattern": Param(
            "**.dcm",
            type="string",
            pattern=r"^(\*\*[^*?/]*|[^*]*)$",
            description="Pattern under the day's folder: '**.dcm' (recursive), '*.dcm', '**'.",
        ),
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Day to import (YYYY-MM-DD, a real calendar date). Empty: the run's data interval, or "
            "yesterday (UTC) for a run started without a logical date.",
        ),
        "gcs_uri": Param(
            None,
            type=["null", "string"],
            pattern=GCS_URI_PATTERN,
            description="Override: import exactly this gs:// URI or pattern instead of the day's folder.",
        ),
        "allow_empty": Param(
            True, type="boolean", description="Skip (rather than fail) a night with no files to import."
        ),
        **tolerance_params(),
    },
    doc_md=__doc__,
) as dag:
    ensure_store = HealthcareEnsureDicomStoreOperator(
        task_id="ensure_store", **STORE_FROM_PARAMS, gcp_conn_id=GCP_CONN_ID
    )

    @task
    def count_before(store_name: str) -> int:
        from dicom_pipelines.hooks import CloudHealthcareDicomHook

        return CloudHealthcareDicomHook(GCP_CONN_ID).get_store_metrics(store_name=store_name)["instanceCount"]

    import_dicom = HealthcareDicomImportOperator(
        task_id="import_dicom",
        **STORE_FROM_PARAMS,
        gcp_conn_id=GCP_CONN_ID,
        gcs_uri="{{ params.gcs_uri or ('gs://' ~ params.source_bucket ~ '/' ~ (params.source_prefix ~ '/' "
        "if params.source_prefix else '') ~ " + IMPORT_DAY + " ~ '/' ~ params.source_pattern) }}",
        allow_empty_source="{{ params.allow_empty }}",
        **TOLERANCE_FROM_PARAMS,
    )

    @task(outlets=[STORE_ASSET])
    def verify(store_name: str, before: int, result: dict, **context) -> dict:
        """Instance-count delta from the store metrics, next to the operation's counters."""
        from dicom_pipelines.checks import require_result
        from dicom_pipelines.hooks import CloudHealthcareDicomHook

        require_result(result, "import_dicom")

        after = CloudHealthcareDicomHook(GCP_CONN_ID).get_store_metrics(store_name=store_name)["instanceCount"]
        summary = {
            "instances_before": before,
            "instances_after": after,
            "new_instances": after - before,
            "imported": result["success"],
            "failed": result["failure"],
            "operation_name": result["operation_name"],
            "logs_url": result["logs_url"],
        }
        if after - before > result["success"]:
            log.warning(
                "The store grew by %d instances but this import added at most %d: another writer was active",
                after - before,
                result["success"],
            )
        elif after - before < result["success"]:
            log.info(
                "%d imported instances were already in the store (identical re-sends)",
                result["success"] - (after - before),
            )
        context["outlet_events"][STORE_ASSET].extra = {"run_id": context["run_id"], **summary}
        return summary

    # XComArgs resolve to the upstream values at run time; the decorator's signature cannot say so
    before = count_before(ensure_store.output)  # type: ignore[arg-type]
    before >> import_dicom
    verify(ensure_store.output, before, import_dicom.output)  # type: ignore[arg-type]
