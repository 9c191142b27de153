"""The failure contract: how a finished Healthcare operation becomes exactly one task result.

Pure decisions, shared by the operators and the sensor. The counters decide first (``success`` and
``failure`` are what the API documents), the error code second: Google's code for a partial import
failure is not documented, so no rule here depends on it being ``INVALID_ARGUMENT``.

===================  ===========================================  ============================
kind                 when                                         task result
===================  ===========================================  ============================
``success``          done, no error, nothing failed               success
``partial``          some instances failed (any error code)       success within tolerance,
                                                                  else failed, not retried
``empty``            done with nothing processed, no error or     import: skipped (allowed) or
                     NOT_FOUND                                    failed, not retried
``cancelled``        CANCELLED                                    failed, not retried
``transient``        ABORTED, UNAVAILABLE, INTERNAL,              failed and retried; the retry
                     DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED        submits the operation again
``error``            any other error code                         failed, not retried
===================  ===========================================  ============================

A finished outcome other than ``transient`` is final: a retry evaluates the same operation again
and never submits a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from dicom_pipelines.responses import AmbiguousSubmissionError, HealthcareApiError, OperationStatus, parse_time
from dicom_pipelines.validation import ValidationError

SUCCESS, PARTIAL, EMPTY, CANCELLED, TRANSIENT, ERROR = "success", "partial", "empty", "cancelled", "transient", "error"
TRANSIENT_CODES = frozenset({4, 8, 10, 13, 14})
"""google.rpc codes after which the same request may well succeed: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
ABORTED (the local API's restart), INTERNAL and UNAVAILABLE."""


def classify(status: OperationStatus) -> str:
    """The contract's kind of a finished operation (see the module table)."""
    if not status.done:
        raise ValueError(f"operation {status.name} is not done")
    code = status.error_code
    if code == 1:
        return CANCELLED
    if code in TRANSIENT_CODES:
        return TRANSIENT
    if status.failure > 0:
        return PARTIAL
    if status.processed == 0 and code in (0, 5):
        return EMPTY
    return SUCCESS if code == 0 else ERROR


@dataclass(frozen=True)
class FailurePolicy:
    """How many failed instances a run tolerates. With neither limit set, any failure fails the task."""

    max_failures: int | None = None
    max_failure_ratio: float | None = None

    @classmethod
    def from_values(cls, max_failures: Any, max_failure_ratio: Any) -> FailurePolicy:
        """Build from rendered template values: ``None``, ``""`` and ``"None"`` mean unset."""

        def unset(v: Any) -> bool:
            return v is None or (isinstance(v, str) and v.strip() in ("", "None"))

        count = ratio = None
        if not unset(max_failures):
            try:
                count = int(str(max_failures).strip())
            except ValueError:
                raise ValidationError("max_failures", max_failures, "must be a whole number >= 0") from None
            if count < 0 or isinstance(max_failures, float) or isinstance(max_failures, bool):
                raise ValidationError("max_failures", max_failures, "must be a whole number >= 0")
        if not unset(max_failure_ratio):
            try:
                ratio = float(str(max_failure_ratio).strip())
            except ValueError:
                raise ValidationError(
                    "max_failure_ratio", max_failure_ratio, "must be a number between 0 and 1"
                ) from None
            if not 0 <= ratio <= 1:
                raise ValidationError("max_failure_ratio", max_failure_ratio, "must be a number between 0 and 1")
        return cls(count, ratio)

    def allows(self, failure: int, total: int) -> bool:
        if failure == 0:
            return True
        if self.max_failures is None and self.max_failure_ratio is None:
            return False
        if self.max_failures is not None and failure > self.max_failures:
            return False
        return not (self.max_failure_ratio is not None and failure / max(total, 1) > self.max_failure_ratio)

    def describe(self) -> str:
        parts = [f"max_failures={self.max_failures}"] if self.max_failures is not None else []
        parts += [f"max_failure_ratio={self.max_failure_ratio}"] if self.max_failure_ratio is not None else []
        return ", ".join(parts) or "no failures allowed"


def operation_result(status: OperationStatus) -> dict[str, Any]:
    """The XCom result of a finished operation: primitives only, never DICOM contents."""
    created, ended = parse_time(status.create_time), parse_time(status.end_time)
    return {
        "operation_name": status.name,
        "success": status.success,
        "failure": status.failure,
        "pending": status.pending,
        "logs_url": status.logs_url,
        "duration_s": round((ended - created).total_seconds(), 3) if created and ended else None,
    }


def summary(status: OperationStatus) -> str:
    return (
        f"{status.success} succeeded, {status.failure} failed of {status.processed}; logs: {status.logs_url or 'n/a'}"
    )


def partial_failure_message(status: OperationStatus, policy: FailurePolicy) -> str | None:
    """None when the failed instances are within the tolerance, else why the task fails."""
    total = status.processed
    if policy.allows(status.failure, total):
        return None
    if status.success == 0:
        return (
            f"Operation {status.name}: all {total} instances failed ({policy.describe()}). "
            f"The per-instance errors are at {status.logs_url or 'the operation logs'}."
        )
    return (
        f"Operation {status.name}: {status.failure} of {total} instances failed "
        f"({status.failure / max(total, 1):.1%}), more than allowed ({policy.describe()}). "
        f"The per-instance errors are at {status.logs_url or 'the operation logs'}."
    )


def failure_message(status: OperationStatus, kind: str, policy: FailurePolicy, resubmits: bool = True) -> str | None:
    """Why a finished operation fails its task, in words; None when the task succeeds.

    ``resubmits``: whether the task's retry submits the operation again (an operator's does; a sensor's only looks).
    """
    if kind == SUCCESS or (kind == EMPTY and status.error_code == 0):
        return None
    if kind == PARTIAL:
        return partial_failure_message(status, policy)
    what = f"Operation {status.name} ended with {status.error_name} ({status.error_code}): {status.error_message}"
    if kind == TRANSIENT:
        then = (
            "the retry submits the operation again" if resubmits else "submit it again to retry; this sensor only waits"
        )
        return f"{what} [{summary(status)}]. This may pass: {then}."
    if kind == CANCELLED:
        return f"{what} It was cancelled by a user or another client. [{summary(status)}]"
    if status.error_code == 7:
        return (
            f"{what} The Healthcare service agent (service-<PROJECT_NUMBER>@gcp-sa-healthcare.iam.gserviceaccount"
            ".com) lacks a permission: roles/storage.objectViewer on source buckets, roles/storage.objectAdmin on "
            f"export buckets. [{summary(status)}]"
        )
    return f"{what} [{summary(status)}]"


def failed_source_lines(entries: list[dict]) -> list[str]:
    """One line per error (:func:`~dicom_pipelines.responses.parse_log_entry`): the file or resource and its error."""
    return [f"Failed: {e['source'] or '?'}: code {e['code']}: {e['message']}" for e in entries]


def log_finished(log: Any, status: OperationStatus, failed_entries: list[dict]) -> None:
    """The task log of a finished operation: its counters, then each failed file named with its error."""
    log.info("Operation %s done: %s", status.name, summary(status))
    for line in failed_source_lines(failed_entries):
        log.warning("%s", line)
    if status.failure > len(failed_entries):
        log.warning(
            "%d of %d failed instances are named above; Cloud Logging has the rest (Google logs a limited number "
            "when there are many): %s",
            len(failed_entries),
            status.failure,
            status.logs_url or "n/a",
        )


def api_failure(exc: HealthcareApiError) -> AirflowException:
    """A failed API call as a task failure: retried for 429/5xx, final for other 4xx (they will not pass)."""
    if isinstance(exc, AmbiguousSubmissionError):
        return AirflowFailException(str(exc))
    if exc.retryable:
        return AirflowException(f"{exc} (still failing after the hook's own retries; Airflow retries the task)")
    hints = {
        403: " The dataset may not exist (the API answers 403 for a missing dataset), or the Airflow identity lacks "
        "a Healthcare role such as roles/healthcare.dicomEditor.",
        404: " The DICOM store does not exist: create it first (the nightly DAG's ensure_store task does).",
    }
    return AirflowFailException(f"{exc}{hints.get(exc.http_status, '')}")


def deadline_note(cancel_on_kill: bool, cancel_error: Exception | None) -> str:
    """What became of an operation whose deadline passed, for the failure message."""
    if not cancel_on_kill:
        return "it was left running (cancel_on_kill=False)"
    if cancel_error is not None:
        return f"cancelling it failed too ({cancel_error}), so it may still be running"
    return "it was cancelled"
