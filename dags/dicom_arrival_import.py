"""Import DICOM files within a minute of their arrival in Cloud Storage; the nightly import stays as the safety net.

The source bucket sends a Cloud Storage notification to Pub/Sub for each finalized object. This DAG is scheduled on
that subscription: an ``Asset`` with an ``AssetWatcher`` on common-messaging's ``MessageQueueTrigger``, which the
Google provider serves with its ``PubsubPullTrigger`` in the triggerer. Each pull that returns messages is one asset
event (at most ``DICOM_ARRIVAL_MAX_MESSAGES`` notifications). The trigger does not acknowledge them: the run does,
once its files are imported, marked or refused for good, so a triggerer or worker that dies on the way loses nothing
(Pub/Sub delivers the messages again after the subscription's acknowledgement deadline).

Batching: one run at a time (``max_active_runs=1``). Events that arrive while a run is going wait, and the next run
takes all of them, so a burst of hundreds of files makes a few runs, each one ``dicomStores.import``: the first run
starts with the first pull, the next one carries everything that arrived meanwhile. Airflow 3.3 leaves some of those
waiting events out of the next run (apache/airflow#56050), so each run also takes the asset's recent events that no
run consumed (``dicom_pipelines.arrivals.events_of_run``). A run imports only the files its
events name (copied to a staging folder, see ``HealthcareDicomArrivalImportOperator``), never a whole folder.

Same contract as the nightly import: tolerance, failure report, quarantine, no PHI in logs or XComs. A notification
delivered twice imports nothing twice: within a run the duplicates are dropped; in a later run the file's marker
says it was imported. The nightly import still reads every day's folder and reports how many of those files arrival
runs had imported.

While the DAG is paused its watcher does not run: notifications wait in the subscription (for its retention) and are
imported once it is unpaused. A notification that outlives the retention, or a file that was never notified, is
imported by the nightly. Set ``DICOM_ARRIVAL_SUBSCRIPTION`` to schedule this DAG; unset, it has no schedule.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import airflow.providers.common.compat.sdk  # noqa: F401
import airflow.providers.google.cloud.operators.cloud_base  # noqa: F401
import airflow.providers.standard.decorators.python  # noqa: F401
from airflow.sdk import DAG, Asset, AssetAlias, AssetWatcher, Param, task

from dicom_pipelines.alerts import failure_callback
from dicom_pipelines.arrivals import STAGING_FOLDER
from dicom_pipelines.dag_params import (
    FAILURE_REPORT_URI,
    GOOGLE,
    STORE_FROM_PARAMS,
    TOLERANCE_FROM_PARAMS,
    env,
    import_params,
    store_params,
    tolerance_params,
)
from dicom_pipelines.operators import HealthcareDicomArrivalImportOperator
from dicom_pipelines.settings import arrival_subscription

log = logging.getLogger(__name__)
STORE_IMPORTS = AssetAlias("dicom_store_imports")
"""The nightly import's alias: a run that imported emits an event for the store, so its consumers hear of it too."""
SOURCE_KEYS = ("source_bucket", "source_prefix", "source_pattern", "failure_report_prefix", "quarantine_prefix")


def arrivals_asset(project: str, subscription: str) -> Asset:
    """The source bucket's notifications, watched in the triggerer (no I/O here: the trigger is only described)."""
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    trigger = MessageQueueTrigger(
        scheme="google+pubsub",
        project_id=project,
        subscription=subscription,
        max_messages=int(env("DICOM_ARRIVAL_MAX_MESSAGES") or 500),
        ack_messages=False,
        gcp_conn_id=GOOGLE["gcp_conn_id"],
        impersonation_chain=GOOGLE["impersonation_chain"],
        poke_interval=float(env("DICOM_ARRIVAL_POLL_SECONDS") or 5),
        return_immediately=False,
    )
    return Asset(
        name="dicom_arrivals",
        uri=f"pubsub://{project}/{subscription}",
        watchers=[AssetWatcher(name="dicom_arrivals_notifications", trigger=trigger)],
    )


def arrival_params() -> dict[str, Param]:
    sources = import_params()
    return {
        **store_params(),
        **{name: sources[name] for name in SOURCE_KEYS},
        "staging_prefix": Param(
            None,
            type=["null", "string"],
            maxLength=900,
            description=f"gs://bucket/folder where each run stages copies of its files for one import. Empty: "
            f"gs://<source_bucket>/{STAGING_FOLDER}. Keep it outside the notification's object prefix.",
        ),
        **tolerance_params(),
    }


SUBSCRIPTION = arrival_subscription()
ARRIVALS = arrivals_asset(*SUBSCRIPTION) if SUBSCRIPTION else None

with DAG(
    dag_id="dicom_arrival_import",
    description="Import DICOM files from GCS into the DICOM store as their Cloud Storage notifications arrive",
    schedule=[ARRIVALS] if ARRIVALS else None,
    max_active_runs=1,
    render_template_as_native_obj=True,
    tags=["dicom", "healthcare", "import", "arrivals"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(seconds=10)},
    params=arrival_params(),
    doc_md=__doc__,
    on_failure_callback=failure_callback,
) as dag:

    @task(retries=0, inlets=[ARRIVALS] if ARRIVALS else [], show_return_value_in_logs=False)
    def collect_arrivals(**context: Any) -> list[dict]:
        """The new files the run's notifications name, and those of recent events no run consumed, after the run's
        params pass their checks; counts only in the log."""
        from dicom_pipelines.arrivals import UNCONSUMED_LOOKBACK, arrivals_from_events, events_of_run
        from dicom_pipelines.checks import refuse
        from dicom_pipelines.dag_params import run_param_problems

        params = context["params"]
        problems = run_param_problems(context["dag"].params, params, context["dag_run"].conf)
        if not params.get("source_bucket"):
            problems.append("source_bucket: not set (SOURCE_BUCKET, or the run's conf): the bucket that is notified")
        refuse(problems)
        triggering = [event for found in context["triggering_asset_events"].values() for event in found]
        recent = context["inlet_events"][ARRIVALS].ascending(False).limit(UNCONSUMED_LOOKBACK) if ARRIVALS else []
        events = events_of_run(triggering, recent)
        batch = arrivals_from_events(
            events,
            bucket=params["source_bucket"],
            prefix=params.get("source_prefix"),
            pattern=params["source_pattern"],
            staging_folder=(params.get("staging_prefix") or "").partition("//")[2].partition("/")[2] or STAGING_FOLDER,
        )
        log.info(
            "%d asset events (%d that triggered the run, %d no run had consumed), %s",
            len(events),
            len(triggering),
            len(events) - len(triggering),
            batch.describe(),
        )
        context["ti"].xcom_push(key="ack_ids", value=batch.ack_ids)
        return [arrived.to_dict() for arrived in batch.objects]

    import_arrivals = HealthcareDicomArrivalImportOperator(
        task_id="import_arrivals",
        **STORE_FROM_PARAMS,
        **GOOGLE,
        arrivals=collect_arrivals(),
        staging_prefix="{{ params.staging_prefix or ('gs://' ~ params.source_bucket ~ '/" + STAGING_FOLDER + "') }}",
        subscription="/".join(("projects", SUBSCRIPTION[0], "subscriptions", SUBSCRIPTION[1])) if SUBSCRIPTION else "",
        ack_ids="{{ ti.xcom_pull(task_ids='collect_arrivals', key='ack_ids') or [] }}",
        failure_report_uri=FAILURE_REPORT_URI,
        quarantine_prefix="{{ params.quarantine_prefix or '' }}",
        deferrable=True,
        wait_before_defer=20.0,
        poll_interval=1.0,
        max_poll_interval=10.0,
        **TOLERANCE_FROM_PARAMS,
    )

    @task(outlets=[STORE_IMPORTS])
    def announce_import(result: dict, **context: Any) -> None:
        """An asset event for the store, with the counts and where the report is: never a file's path."""
        from dicom_pipelines.checks import require_result
        from dicom_pipelines.validation import resource_name

        require_result(result, "import_arrivals")
        params = context["params"]
        store = resource_name(params["project_id"], params["location"], params["dataset_id"], params["dicom_store_id"])
        context["outlet_events"][STORE_IMPORTS].add(
            Asset(uri=f"healthcare://{store}", name=f"dicom_store:{store}"),
            extra={
                "run_id": context["run_id"],
                "trigger": "arrivals",
                "imported": result["success"],
                "failed": result["failure"],
                "operation_name": result["operation_name"],
                "logs_url": result["logs_url"],
                "failure_report_uri": result.get("failure_report_uri"),
            },
        )

    announce_import(import_arrivals.output)  # type: ignore[arg-type]
