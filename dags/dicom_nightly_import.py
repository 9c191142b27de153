"""Nightly import of the previous day's DICOM files from Cloud Storage into a DICOM store.

Each run imports ``gs://{source_bucket}/{source_prefix}/{day}/{source_pattern}`` (default
``**.dcm``), where ``day`` is the start of the run's data interval (YYYY-MM-DD): the run at 00:00 on 11-25
imports the files of 11-24. Backfills from the UI or the REST API replay any range of days. A run
started by hand imports the ``day`` param, or, with no logical date, yesterday. Days are those of
``DICOM_IMPORT_TIMEZONE`` (UTC unless set), the cron's time zone.

Nights import in date order: each run first waits for the run of the previous logical date to finish, whatever
its outcome, and no two import tasks run at once (``max_active_tis_per_dag=1``), however the runs were started.

Several sites: ``DICOM_IMPORT_SITES`` (a JSON list, one object per site) makes one DAG per site from this file,
``dicom_nightly_import__<site>``, each with the site's values as its params' defaults and its own cron, time zone
and first night.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import Any

# The provider modules the package's operators load, named so that the dag-processor imports them once, before
# it parses this file ([dag_processor] parsing_pre_import_modules), not in every parse.
import airflow.providers.common.compat.sdk  # noqa: F401
import airflow.providers.google.cloud.operators.cloud_base  # noqa: F401
import airflow.providers.standard.decorators.python  # noqa: F401
import airflow.timetables.interval  # noqa: F401
from airflow.sdk import DAG, Asset, AssetAlias, Param, task

from dicom_pipelines.alerts import failure_callback, nightly_deadline
from dicom_pipelines.checks import check_params, wait_for_previous_run
from dicom_pipelines.dag_params import (
    FAILURE_REPORT_URI,
    GOOGLE,
    IMPORT_TIMEZONE,
    STORE_FROM_PARAMS,
    TOLERANCE_FROM_PARAMS,
    env,
    import_params,
    night_day,
    store_params,
    tolerance_params,
)
from dicom_pipelines.operators import HealthcareDicomImportOperator, HealthcareEnsureDicomStoreOperator
from dicom_pipelines.settings import import_first_night, import_sites
from dicom_pipelines.timetables import EARLIEST_NIGHT, NightlyImportTimetable

log = logging.getLogger(__name__)
STORE_IMPORTS = AssetAlias("dicom_store_imports")
"""Each successful night emits an event for the store it really imported into (``healthcare://`` + its name)."""

IMPORT_DAY = (
    "(params.day or ((data_interval_start | night_day) if data_interval_start is defined and "
    "data_interval_start else macros.ds_add(dag_run.run_after | night_day, -1)))"
)
"""The day whose folder a run imports: the ``day`` param, else the data interval's start, else (a manual run
with no logical date) the day before the run; days in ``DICOM_IMPORT_TIMEZONE``. A template that cannot fail on a
missing logical date."""
NIGHT_URI = (
    "{{ params.gcs_uri or ('gs://' ~ params.source_bucket ~ '/' ~ (params.source_prefix ~ '/' if params.source_prefix "
    "else '') ~ " + IMPORT_DAY + " ~ '/' ~ params.source_pattern) }}"
)
"""What a night imports."""
SITE_KEYS = ("site", "cron", "timezone", "start_date", "deadline")
"""What a site entry may set besides the DAG's params."""


def site_defaults(params: dict[str, Param], site: dict[str, Any]) -> dict[str, Param]:
    """The DAG's params with a site's values as their defaults; a key that is neither a param nor a site key is
    refused, naming the site and the key (the DAG file's import error says it in the UI)."""
    unknown = sorted(set(site) - set(params) - set(SITE_KEYS))
    if unknown:
        raise ValueError(
            f"DICOM_IMPORT_SITES, site {site.get('site')!r}: {', '.join(unknown)} is not a param of the nightly "
            f"import nor one of {', '.join(SITE_KEYS)} (params: {', '.join(sorted(params))})"
        )
    given = {name: value for name, value in site.items() if name in params}
    return {
        name: Param(given[name], description=param.description, **param.schema) if name in given else param
        for name, param in params.items()
    }


def nightly_import_dag(dag_id: str, site: dict[str, Any]) -> DAG:
    """The nightly import, for the deployment's store (``site`` empty) or for one entry of DICOM_IMPORT_SITES."""
    timezone = site.get("timezone") or IMPORT_TIMEZONE
    first_night = import_first_night(site.get("start_date"), timezone)
    cron = str(site.get("cron") or env("DICOM_IMPORT_CRON"))
    with DAG(
        dag_id=dag_id,
        description="Import the previous day's DICOM files from GCS into the DICOM store"
        + (f" (site {site['site']})" if site else ""),
        schedule=NightlyImportTimetable(cron, timezone=timezone, first_night=first_night),
        start_date=EARLIEST_NIGHT,
        catchup=first_night is not None,
        user_defined_filters={"night_day": functools.partial(night_day, timezone=timezone)},
        max_active_runs=1,
        render_template_as_native_obj=True,
        tags=["dicom", "healthcare", "import", *([f"site:{site['site']}"] if site else [])],
        default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=30)},
        params=site_defaults({**store_params(), **import_params(), **tolerance_params()}, site),
        doc_md=__doc__,
        on_failure_callback=failure_callback,
        deadline=nightly_deadline(cron, timezone, site.get("deadline") or env("DICOM_IMPORT_DEADLINE")),
    ) as dag:
        ensure_store = HealthcareEnsureDicomStoreOperator(
            task_id="ensure_store",
            **STORE_FROM_PARAMS,
            **GOOGLE,
            stream_table_uri="{{ params.metadata_stream_table or '' }}",
            bigquery_location="{{ params.bigquery_location or '' }}",
            create_if_missing="{{ params.create_if_missing }}",
        )

        import_dicom = HealthcareDicomImportOperator(
            task_id="import_dicom",
            **STORE_FROM_PARAMS,
            **GOOGLE,
            gcs_uri=NIGHT_URI,
            allow_empty_source="{{ params.allow_empty }}",
            failure_report_uri=FAILURE_REPORT_URI,
            quarantine_prefix="{{ params.quarantine_prefix or '' }}",
            max_active_tis_per_dag=1,
            deferrable=True,
            **TOLERANCE_FROM_PARAMS,
        )

        @task(outlets=[STORE_IMPORTS])
        def verify(store_name: str, result: dict, gcs_uri: str, **context) -> dict:
            """The night's figures come from the operation's counters, which are exact. The store's size comes from its
            metrics, which Google says may lag behind recent changes: it is reported as what the metrics say, and
            never compared with the counters. How many of the night's files ``dicom_arrival_import`` had imported
            already comes from their markers: the night is the safety net of the arrival imports."""
            from dicom_pipelines.checks import require_result
            from dicom_pipelines.hooks import CloudHealthcareDicomHook

            require_result(result, "import_dicom")
            hook = CloudHealthcareDicomHook(**GOOGLE)
            reported = hook.get_store_metrics(store_name=store_name)["instanceCount"]
            matched: int | None
            by_arrival: int | None
            try:
                matched, by_arrival = hook.count_imported_by_arrival(gcs_uri=gcs_uri)
            except Exception as exc:  # noqa: BLE001 - a figure of the report, never the night's outcome
                log.warning("Could not count the night's files (%s: %s)", type(exc).__name__, exc)
                matched = by_arrival = None
            summary = {
                "imported": result["success"],
                "failed": result["failure"],
                "operation_name": result["operation_name"],
                "logs_url": result["logs_url"],
                "failed_sources": result.get("failed_sources", []),
                "failure_report_uri": result.get("failure_report_uri"),
                "store_instance_count_per_metrics": reported,
                "files_matched": matched,
                "already_imported_by_arrival": by_arrival,
            }
            log.info(
                "Imported %d, failed %d (the operation's counters). The store's metrics report %d instances; they may "
                "not show this night's import yet",
                result["success"],
                result["failure"],
                reported,
            )
            log.info(
                "%s of the night's %s files had been imported by dicom_arrival_import as they arrived; the night "
                "imported the others (and re-read those, which the store ignores as identical)",
                by_arrival,
                matched,
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
        ensure_store >> import_dicom
        verify(ensure_store.output, import_dicom.output, NIGHT_URI)  # type: ignore[arg-type]
    return dag


SITES = import_sites()
if SITES:
    for entry in SITES:
        globals()[f"dicom_nightly_import__{entry['site']}"] = nightly_import_dag(
            f"dicom_nightly_import__{entry['site']}", entry
        )
else:
    dag = nightly_import_dag("dicom_nightly_import", {})
