"""What the DICOM operators tell a dashboard: counters, durations and progress, through Airflow's own ``Stats``.

A platform team already collects Airflow's StatsD (or Datadog, or OpenTelemetry) metrics; these join them under
the same prefix (``[metrics] statsd_prefix``) and the same switches (``statsd_on``, ``metrics_allow_list``).
Tags name the operation kind and the store, never a file, a patient or a UID. Plain StatsD drops tags: turn on
``[metrics] statsd_influxdb_enabled`` (or use the Datadog or OpenTelemetry backend) to see them.

A finished operation is counted once per task: a retry that evaluates the same operation again (after a
transient end, or a worker that died while evaluating) does not count its instances a second time.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.common.compat.sdk import Stats

from dicom_pipelines.responses import OperationStatus, parse_time

METRICS: dict[str, str] = {
    "dicom.operation.instances_succeeded": "counter: instances the operation processed without error",
    "dicom.operation.instances_failed": "counter: instances the operation could not process",
    "dicom.operation.finished": "counter: operations evaluated as finished (any outcome)",
    "dicom.operation.duration": "timer (ms): from the operation's creation to its end, as the API reports them",
    "dicom.operation.polls": "counter: status reads of the operation made by the task and its trigger",
    "dicom.operation.timeouts": "counter: operations not done by their deadline (operation_timeout)",
    "dicom.operation.cancels": (
        "counter: cancels sent; tag reason=deadline, or reason=user (mark failed, mark success, clear)"
    ),
}
"""Every metric the package emits, under Airflow's prefix; tags ``operation`` and ``store`` (and ``reason``)."""


def operation_tags(kind: str, store_name: str) -> dict[str, str]:
    """The metric tags of an operation on ``projects/…/datasets/D/dicomStores/S``: its kind and the store's id."""
    return {"operation": kind or "unknown", "store": store_name.split("/")[-1]}


def record_finished(tags: dict[str, str], status: OperationStatus, polls: int) -> None:
    created, ended = parse_time(status.create_time), parse_time(status.end_time)
    Stats.incr("dicom.operation.finished", tags=tags)
    Stats.incr("dicom.operation.instances_succeeded", count=status.success, tags=tags)
    Stats.incr("dicom.operation.instances_failed", count=status.failure, tags=tags)
    if polls:
        Stats.incr("dicom.operation.polls", count=polls, tags=tags)
    if created and ended:
        Stats.timing("dicom.operation.duration", ended - created, tags=tags)


def record_timeout(tags: dict[str, str]) -> None:
    Stats.incr("dicom.operation.timeouts", tags=tags)


def record_cancel(tags: dict[str, str], reason: str) -> None:
    Stats.incr("dicom.operation.cancels", tags={**tags, "reason": reason})


def progress_line(name: str, status: OperationStatus, remaining_s: float | None, now: float) -> str:
    """The log line of a running operation: counters, share done and the predicted end, when the rate is known.

    The share is of the instances known so far (processed + pending): an import's ``pending`` grows while the
    API is still listing the source, so early percentages can fall back.
    """
    known = status.processed + status.pending
    share = f"{100 * status.processed / known:.0f}% done" if known else "progress not reported yet"
    line = f"Operation {name}: {share} ({status.success} succeeded, {status.failure} failed, {status.pending} pending)"
    if remaining_s is None or not status.pending:
        return line + "; end not predicted yet"
    end = dt.datetime.fromtimestamp(now + remaining_s, tz=dt.UTC)
    return line + f"; predicted end {end:%Y-%m-%d %H:%M:%S} UTC (in {_duration(remaining_s)})"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"
