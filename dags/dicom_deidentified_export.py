"""De-identified research export: a cohort chosen by criteria, stripped of identifiers, delivered to a bucket.

1. build the cohort's filter file from the criteria, with the same tasks as the filtered export
   (:mod:`dicom_pipelines.filter_chain`);
2. make sure the destination store exists (``deid-<run id>`` unless ``destination_dicom_store_id`` is given);
   it must be empty, since every de-identification draws new UIDs;
3. ``dicomStores.deidentify`` of the cohort into it (profile or keep/remove list, UIDs replaced, burnt-in text
   mode), waited for in the triggerer, under the same failure contract as imports and exports;
4. export the destination store to the research bucket, verify the objects, and check that every
   de-identified instance was exported;
5. drop the work tables (they hold PatientName and PatientID) and the extract shards.
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
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import DAG, Asset, AssetAlias, task

from dicom_pipelines.alerts import failure_callback
from dicom_pipelines.checks import check_params, verify_export
from dicom_pipelines.dag_params import (
    DEID_STORE,
    GOOGLE,
    RESEARCH_PREFIX,
    STORE_FROM_PARAMS,
    TOLERANCE_FROM_PARAMS,
    StoreKwargs,
    deidentify_params,
    export_params,
    filter_params,
    store_params,
    tolerance_params,
)
from dicom_pipelines.filter_chain import DAG_KWARGS, add_cleanup_task, add_filter_file_tasks
from dicom_pipelines.operators import (
    HealthcareDicomDeidentifyOperator,
    HealthcareDicomExportOperator,
    HealthcareEnsureDicomStoreOperator,
)

DESTINATION: StoreKwargs = {**STORE_FROM_PARAMS, "dicom_store_id": DEID_STORE}
DEIDENTIFIED_STORES = AssetAlias("dicom_deidentified_stores")
"""Each checked cohort emits an event for the de-identified store it filled; its export emits one on dicom_exports."""

with DAG(
    dag_id="dicom_deidentified_export",
    description="De-identify a cohort chosen by criteria and export it to a research bucket",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=2,
    tags=["dicom", "healthcare", "deidentify", "research", "bigquery"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30)},
    params={
        **store_params(),
        **filter_params(),
        **{k: v for k, v in export_params().items() if k != "destination_prefix"},
        **deidentify_params(),
        **tolerance_params(),
    },
    doc_md=__doc__,
    on_failure_callback=failure_callback,
    **DAG_KWARGS,
) as dag:
    chain = add_filter_file_tasks()
    ensure_destination = HealthcareEnsureDicomStoreOperator(task_id="ensure_destination_store", **DESTINATION, **GOOGLE)
    deidentify = HealthcareDicomDeidentifyOperator(
        task_id="deidentify",
        **STORE_FROM_PARAMS,
        **GOOGLE,
        destination_dicom_store_id=DEID_STORE,
        filter_profile="{{ params.filter_profile }}",
        keep_tags="{{ (params.keep_tags or []) | join(',') }}",
        remove_tags="{{ (params.remove_tags or []) | join(',') }}",
        skip_id_redaction="{{ params.skip_id_redaction }}",
        text_redaction_mode="{{ params.text_redaction_mode }}",
        filter_uri="{{ ti.xcom_pull(task_ids='check_filter')['filter_uri'] }}",
        deferrable=True,
        **TOLERANCE_FROM_PARAMS,
    )
    export = HealthcareDicomExportOperator(
        task_id="export_research",
        **DESTINATION,
        **GOOGLE,
        uri_prefix=RESEARCH_PREFIX,
        mime_type="{{ params.mime_type or '' }}",
        deferrable=True,
        **TOLERANCE_FROM_PARAMS,
    )

    @task(outlets=[DEIDENTIFIED_STORES])
    def check_cohort(deidentified: dict | None, exported: dict | None, **context) -> dict:
        """Every de-identified instance reached the research bucket: the two operations' counters agree. Then the
        de-identified store's asset event (``healthcare://`` + its name), with counts."""
        from dicom_pipelines.checks import require_result

        require_result(deidentified, "deidentify")
        require_result(exported, "export_research")
        assert deidentified is not None and exported is not None
        if exported["success"] != deidentified["success"]:
            raise AirflowFailException(
                f"{deidentified['success']} instances were de-identified into {deidentified['destination_store']} "
                f"but {exported['success']} were exported to {exported['uri_prefix']}"
            )
        store = deidentified["destination_store"]
        context["outlet_events"][DEIDENTIFIED_STORES].add(
            Asset(uri=f"healthcare://{store}", name=f"dicom_store:{store}"),
            extra={
                "run_id": context["run_id"],
                "instances": exported["success"],
                "operation_name": deidentified.get("operation_name"),
            },
        )
        return {"instances": exported["success"], "destination_store": store, "uri_prefix": exported["uri_prefix"]}

    check_params() >> chain.first
    chain.filter_ready >> ensure_destination >> deidentify >> export
    verified = verify_export(export.output, **GOOGLE)  # type: ignore[arg-type]  # resolved at run time
    cohort = check_cohort(deidentify.output, export.output)  # type: ignore[arg-type]
    verified >> cohort
    add_cleanup_task(cohort)
