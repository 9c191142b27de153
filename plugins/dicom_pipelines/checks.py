"""Checks around an operation: a run's params before any API call, the exported objects against the counters
after it, and what to do without a result.

Task helpers for the DAGs; they run in workers, never at DAG parse time.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, AirflowSkipException
from airflow.sdk import Asset, AssetAlias, BaseOperator, task

from dicom_pipelines.dag_params import run_param_problems
from dicom_pipelines.responses import parse_time
from dicom_pipelines.settings import GCP_CONN_ID, IMPERSONATION_CHAIN
from dicom_pipelines.validation import parse_gcs_uri, parse_mime_type


@task(task_id="check_params", retries=0)
def check_params(**context: Any) -> None:
    """Task: refuse the run's params in words, all problems at once, before any API call; never retried.

    The Trigger form and the REST API already refuse what the JSON schema can say (types, dates, lengths,
    choices). This catches the rest: ids, bucket names and ``gs://`` URIs by their rules, a backwards date
    range, and keys that are no param of the DAG, which Airflow would otherwise ignore silently.
    """
    refuse(run_param_problems(context["dag"].params, context["params"], context["dag_run"].conf))


def refuse(problems: list[str]) -> None:
    """Fail the task without retry, listing every problem with the run's params, when there is any."""
    if problems:
        raise AirflowFailException(
            f"{len(problems)} problem(s) with this run's parameters; nothing was sent to any API:\n"
            + "\n".join(f"- {p}" for p in problems)
        )


log = logging.getLogger(__name__)
FINISHED_RUN_STATES = ("success", "failed")


def previous_run_to_wait_for(ti: Any) -> Any | None:
    """The run of the previous logical date that this night must wait for, or None when it may go on.

    Runs of one DAG share a store, and what a night imports can depend on what came before it (the same
    instance sent again, or changed). A backfill started from the UI runs up to ten nights at once, so the nights
    keep their date order however they were started. A finished night, failed or not, does not hold the next one
    back; a run with no logical date (started by hand) does not wait. Imports themselves never overlap either:
    the import task has ``max_active_tis_per_dag=1``.

    One case goes out of order: an earlier night created after this one started, outside a backfill (a run
    triggered for a past logical date, say). The DAG runs one such run at a time, so that night stays queued
    until this one ends; waiting for it would hold both until the wait's timeout. This night goes first, and a
    warning names the other.
    """
    previous = ti.get_previous_dagrun()
    if previous is None or _value(previous.state) in FINISHED_RUN_STATES:
        return None
    if _value(previous.state) == "queued" and _value(previous.run_type) != "backfill":
        log.warning(
            "Run %s (logical date %s) is queued behind this run: the DAG runs one scheduled or manual run at a "
            "time, so waiting for it would hold both until this wait's timeout. This night imports first, out "
            "of date order",
            previous.run_id,
            previous.logical_date,
        )
        return None
    return previous


class WaitForPreviousRunOperator(BaseOperator):
    """Wait until the run of the previous logical date has finished (:func:`previous_run_to_wait_for`).

    The wait holds no worker slot and starts no process per check: it defers to the standard provider's
    ``DagStateTrigger``, which asks for the run's state from the triggerer every ``poll_interval`` seconds, up to
    ``wait_timeout``.
    """

    def __init__(
        self, *, poll_interval: float = 10.0, wait_timeout: dt.timedelta = dt.timedelta(hours=24), **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout

    def execute(self, context: Any) -> None:
        from airflow.providers.standard.triggers.external_task import DagStateTrigger
        from airflow.utils.state import DagRunState

        previous = previous_run_to_wait_for(context["ti"])
        if previous is None:
            return
        log.info(
            "Waiting for run %s (logical date %s, %s) to finish: nights import in date order",
            previous.run_id,
            previous.logical_date,
            _value(previous.state),
        )
        self.defer(
            trigger=DagStateTrigger(
                dag_id=context["dag"].dag_id,
                states=[DagRunState(state) for state in FINISHED_RUN_STATES],
                run_ids=[previous.run_id],
                poll_interval=self.poll_interval,
            ),
            method_name="execute_complete",
            timeout=self.wait_timeout,
        )

    def execute_complete(self, context: Any, event: Any = None) -> None:
        log.info("The previous night's run has finished: this night goes on")


def wait_for_previous_run() -> WaitForPreviousRunOperator:
    """The nightly import's first wait, as a task of the DAG being defined."""
    return WaitForPreviousRunOperator(task_id="wait_for_previous_run")


def _value(member: Any) -> Any:
    """An enum member's value (the Task SDK returns states and run types as enums, whose ``str()`` differs)."""
    return getattr(member, "value", member)


def require_result(result: dict | None, task_id: str) -> None:
    """Skip a check whose operation task left no result: a user marked that task successful while it waited."""
    if result is None:
        raise AirflowSkipException(
            f"{task_id} has no operation result (a user marked it successful before its "
            "operation finished): there are no counters to check"
        )


CLOCK_SKEW = dt.timedelta(seconds=5)
"""How much earlier than the operation's creation an object it wrote may be stamped (two services' clocks)."""


def count_exported(
    gcp_conn_id: str,
    uri_prefix: str,
    mime_type: str | None,
    export_result: dict,
    impersonation_chain: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Compare the objects this export wrote under its prefix with the operation's success counter and paths.

    Only objects written since the operation was created count, so a prefix that already holds an earlier
    export's objects is checked for this export alone (an export overwrites, which stamps the object anew).
    Each must sit at ``<prefix><study>/<series>/<instance>``; with a filter file (``filter_uri`` in the
    result), each must also belong to a study, series or instance that the file lists.
    """
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    prefix_uri = parse_gcs_uri(uri_prefix, "uri_prefix", allow_empty_object=True)
    mime = parse_mime_type(mime_type, "mime_type")
    prefix = prefix_uri.name.rstrip("/") + "/" if prefix_uri.name else ""
    since = _since(export_result.get("create_time"))
    blobs = (
        GCSHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)
        .get_conn()
        .list_blobs(prefix_uri.bucket, prefix=prefix)
    )
    names = [b.name for b in blobs if since is None or b.updated is None or b.updated >= since]
    instances = set()
    for name in names:
        parts = name[len(prefix) :].split("/")
        if len(parts) >= 3:
            instances.add("/".join(parts[:3]).removesuffix(mime.extension) if mime.extension else "/".join(parts[:3]))
    expected = int(export_result.get("success", 0))
    if export_result.get("filter_uri"):
        outside = _outside_filter(gcp_conn_id, export_result["filter_uri"], instances, impersonation_chain)
        if outside:
            raise AirflowException(
                f"export verification failed: {len(outside)} instances written under {uri_prefix} since the "
                f"operation started are not in the filter file {export_result['filter_uri']}, e.g. {outside[0]}"
            )
    summary = {
        "objects": len(names),
        "instances": len(instances),
        "expected_instances": expected,
        "uri_prefix": uri_prefix,
    }
    if len(instances) != expected:
        raise AirflowException(
            f"export verification failed: {len(instances)} instances written under {uri_prefix} since the "
            f"operation started, but the operation reported {expected} exported"
        )
    return summary


def _outside_filter(
    gcp_conn_id: str, filter_uri: str, instances: set[str], impersonation_chain: str | Sequence[str] | None = None
) -> list[str]:
    """The ``study/series/instance`` paths that no line of the filter file selects, sorted."""
    from airflow.providers.google.cloud.hooks.gcs import GCSHook

    from dicom_pipelines.validation import parse_filter_file

    uri = parse_gcs_uri(filter_uri, "filter_uri")
    gcs = GCSHook(gcp_conn_id=gcp_conn_id, impersonation_chain=impersonation_chain)
    paths = parse_filter_file(gcs.download(uri.bucket, uri.name).decode("utf-8"))
    return sorted(i for i in instances if not any(p.matches(*i.split("/")) for p in paths))


def _since(create_time: str | None) -> dt.datetime | None:
    created = parse_time(create_time or "")
    return created - CLOCK_SKEW if created else None


EXPORTS = AssetAlias("dicom_exports")
"""Each verified export emits an event for the ``gs://`` prefix it wrote (the Google provider's ``gs`` asset
scheme), so a downstream DAG can be scheduled on ``AssetAlias("dicom_exports")``."""


def export_event_extra(run_id: str, result: dict, summary: dict) -> dict[str, Any]:
    """What every consumer of an export's asset event reads: counts, the format and the operation, never a path
    under the prefix, a filter file's content or an identifier."""
    return {
        "run_id": run_id,
        "instances": summary["instances"],
        "objects": summary["objects"],
        "failed": int(result.get("failure", 0)),
        "mime_type": result.get("mime_type"),
        "operation_name": result.get("operation_name"),
    }


@task(task_id="verify_export", outlets=[EXPORTS])
def verify_export(
    result: dict | None,
    gcp_conn_id: str = GCP_CONN_ID,
    impersonation_chain: list[str] | None = IMPERSONATION_CHAIN,
    **context: Any,
) -> dict[str, Any]:
    """Task: the objects under the export's prefix match the export operation's counters; then the prefix's asset
    event."""
    require_result(result, "export_dicom")
    assert result is not None
    summary = count_exported(gcp_conn_id, result["uri_prefix"], result["mime_type"], result, impersonation_chain)
    prefix = result["uri_prefix"].rstrip("/")
    context["outlet_events"][EXPORTS].add(
        Asset(uri=prefix), extra=export_event_extra(context["run_id"], result, summary)
    )
    return summary
