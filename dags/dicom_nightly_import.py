"""Nightly import of the previous day's DICOM files from Cloud Storage into a DICOM store.

Each run imports ``gs://{source_bucket}/{source_prefix}/{day}/{source_pattern}`` (default
``**.dcm``), where ``day`` is the start of the run's data interval (YYYY-MM-DD): the run at 00:00 on 11-25
imports the files of 11-24. Backfills from the UI or the REST API replay any range of days. A run
started by hand imports the ``day`` param, or, with no logical date, yesterday (UTC).

Nights import in date order: each run first waits for the run of the previous logical date to finish, whatever
its outcome, and no two import tasks run at once (``max_active_tis_per_dag=1``), however the runs were started.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import DAG, Asset, AssetAlias, task

from dicom_pipelines.checks import check_params, wait_for_previous_run
from dicom_pipelines.dag_params import (
    FAILURE_REPORT_URI,
    GCP_CONN_ID,
    STORE_FROM_PARAMS,
    TOLERANCE_FROM_PARAMS,
    env,
    import_params,
    store_params,
    tolerance_params,
)
from dicom_pipelines.operators import HealthcareDicomImportOperator, HealthcareEnsureDicomStoreOperator
from dicom_pipelines.timetables import EARLIEST_NIGHT, NightlyImportTimetable

log = logging.getLogger(__name__)
STORE_IMPORTS = AssetAlias("dicom_store_imports")
"""Each successful night emits an event for the store it really imported into (``healthcare://`` + its name)."""

IMPORT_DAY = (
    "(params.day or (data_interval_start.strftime('%Y-%m-%d') if data_interval_start is defined and "
    "data_interval_start else macros.ds_add(dag_run.run_after.strftime('%Y-%m-%d'), -1)))"
)
"""The day whose folder a run imports: the ``day`` param, else the data interval's start, else (a manual run
with no logical date) the day before the run, UTC. A template that cannot fail on a missing logical date."""

with DAG(
    dag_id="dicom_nightly_import",
    description="Import the previous day's DICOM files from GCS into the DICOM store",
    schedule=NightlyImportTimetable(
        env("DICOM_IMPORT_CRON", "0 0 * * *"),
        timezone="UTC",
        first_night=dt.datetime.fromisoformat(env("DICOM_IMPORT_START_DATE", "2026-11-01")).replace(tzinfo=dt.UTC),
    ),
    start_date=EARLIEST_NIGHT,
    catchup=True,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["dicom", "healthcare", "import"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    params={
        **store_params(),
        **import_params(),
        **tolerance_params(),
    },
    doc_md=__doc__,
) as dag:
    ensure_store = HealthcareEnsureDicomStoreOperator(
        task_id="ensure_store",
        **STORE_FROM_PARAMS,
        gcp_conn_id=GCP_CONN_ID,
        stream_table_uri="{{ params.metadata_stream_table or '' }}",
        create_if_missing="{{ params.create_if_missing }}",
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
        failure_report_uri=FAILURE_REPORT_URI,
        quarantine_prefix="{{ params.quarantine_prefix or '' }}",
        max_active_tis_per_dag=1,
        **TOLERANCE_FROM_PARAMS,
    )

    @task(outlets=[STORE_IMPORTS])
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
            "failed_sources": result.get("failed_sources", []),
            "failure_report_uri": result.get("failure_report_uri"),
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
        context["outlet_events"][STORE_IMPORTS].add(
            Asset(uri=f"healthcare://{store_name}", name=f"dicom_store:{store_name}"),
            # counts and where the report is, never the failed paths or their errors: every consumer of the asset
            # reads this
            extra={"run_id": context["run_id"], **{k: v for k, v in summary.items() if k != "failed_sources"}},
        )
        return summary

    check_params() >> wait_for_previous_run() >> ensure_store
    # XComArgs resolve to the upstream values at run time; the decorator's signature cannot say so
    before = count_before(ensure_store.output)  # type: ignore[arg-type]
    before >> import_dicom
    verify(ensure_store.output, before, import_dicom.output)  # type: ignore[arg-type]
