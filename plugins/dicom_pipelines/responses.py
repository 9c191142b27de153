"""What the Cloud Healthcare and Cloud Logging APIs answer, parsed: errors, operations and log entries.

No I/O and no Google client here. The sync and async hooks share this parsing, and operators, sensors and DAG
files use it too: importing it costs almost nothing, while importing the hooks loads the Google client libraries.
Airflow's best practices ask DAG files to keep such imports out of parse time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass

from airflow.providers.common.compat.sdk import AirflowException

DEFAULT_ENDPOINT = "https://healthcare.googleapis.com/"
SUBMIT_CLOCK_SKEW_S = 30.0
"""How far the server's clock may differ from ours when looking up an operation we may have started."""
SUBMIT_QUIET_S = 30.0
"""An operation is adopted after an ambiguous submission only when no other of its method was created this close
to the submission's window (:func:`dicom_pipelines.decisions.adoption`)."""
SUBMIT_SETTLE_S = 7.0
"""How long the dataset's operations are listed again before concluding that a submission started none."""
SUBMIT_TIMEOUT_S = 60.0
"""The longest a submission request can take: what an operation started by an unrecorded submission allows."""
ENDPOINT_ENV = "HEALTHCARE_API_ENDPOINT"
LOGGING_ENDPOINT_ENV = "LOGGING_API_ENDPOINT"
RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_CODE_NAMES = {
    0: "OK",
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    16: "UNAUTHENTICATED",
}


class HealthcareApiError(AirflowException):
    """A failed API call: carries the HTTP status, Google's status name and the message."""

    def __init__(self, http_status: int, google_status: str, message: str, method: str = ""):
        self.http_status = http_status
        self.google_status = google_status
        self.api_message = message
        self.method = method
        super().__init__(f"Healthcare API {method} failed: HTTP {http_status} {google_status}: {message}")

    @property
    def retryable(self) -> bool:
        return self.http_status in RETRYABLE_HTTP

    @property
    def maybe_accepted(self) -> bool:
        """A POST that got this answer may still have been carried out: 5xx and lost connections, not 429."""
        return self.http_status >= 500 or self.http_status == 408

    @classmethod
    def from_body(cls, http_status: int, body: bytes | str, method: str) -> HealthcareApiError:
        try:
            err = json.loads(body)["error"]
            return cls(http_status, err.get("status", ""), err.get("message", ""), method)
        except (ValueError, KeyError, TypeError):
            text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
            return cls(http_status, "", text[:500], method)


class AmbiguousSubmissionError(HealthcareApiError):
    """A submission failed ambiguously and several operations could be ours: we refuse to guess."""


class OperationDeadlineExceeded(Exception):
    """The operation was not done by its deadline (sync wait)."""

    def __init__(self, name: str, last: OperationStatus | None):
        super().__init__(name)
        self.name = name
        self.last = last


def parse_time(value: str) -> dt.datetime | None:
    """An RFC 3339 timestamp from the API, or None when absent or unreadable."""
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class OperationStatus:
    """The parts of a long-running operation the pipelines act on. Zero counters may be absent (proto3)."""

    name: str
    done: bool
    success: int
    failure: int
    pending: int
    logs_url: str
    error_code: int
    error_message: str
    cancel_requested: bool
    create_time: str
    end_time: str

    @property
    def processed(self) -> int:
        return self.success + self.failure

    @property
    def succeeded(self) -> bool:
        return self.done and self.error_code == 0

    @property
    def created_at(self) -> float | None:
        """``metadata.createTime`` in epoch seconds, or None when absent or unreadable."""
        created = parse_time(self.create_time)
        return created.timestamp() if created else None

    @property
    def error_name(self) -> str:
        return _CODE_NAMES.get(self.error_code, str(self.error_code))


def parse_operation(op: dict) -> OperationStatus:
    meta = op.get("metadata") or {}
    counter = meta.get("counter") or {}
    error = op.get("error") or {}
    return OperationStatus(
        name=op.get("name", ""),
        done=bool(op.get("done", False)),
        success=int(counter.get("success", 0) or 0),
        failure=int(counter.get("failure", 0) or 0),
        pending=int(counter.get("pending", 0) or 0),
        logs_url=meta.get("logsUrl", "") or "",
        error_code=int(error.get("code", 0) or 0),
        error_message=error.get("message", "") or "",
        cancel_requested=bool(meta.get("cancelRequested", False)),
        create_time=meta.get("createTime", "") or "",
        end_time=meta.get("endTime", "") or "",
    )


def resolve_logging_endpoint(extras: dict) -> str | None:
    """The Cloud Logging API root: the connection extra ``logging_endpoint``, ``$LOGGING_API_ENDPOINT``, or
    None for Google's (``https://logging.googleapis.com``)."""
    value = extras.get("logging_endpoint") or os.environ.get(LOGGING_ENDPOINT_ENV)
    return value.rstrip("/") if value else None


def operation_log_filter(operation_name: str, since: str = "") -> str:
    """The Logging query for an operation's error entries: its resource type and its ``operation.id`` (Google
    writes the operation's full name there), from its creation on (the client would otherwise look back only 24
    hours)."""
    query = f'resource.type="healthcare_dicom_store" AND operation.id="{operation_name}"'
    return query + (f' AND timestamp>="{since}"' if since else "")


def logging_read_advice(exc: BaseException) -> str:
    """What a failed Cloud Logging read means for the user: a used-up read quota (429) is not a missing role."""
    code = getattr(exc, "code", None)
    code = getattr(code, "value", code)
    if code == 429:
        return (
            "Cloud Logging answered 429: the project's Logging read quota (entries.list requests per minute) is used "
            "up, so the failed files are not named this time; the counters are exact."
        )
    if code == 403:
        return "Reading them needs roles/logging.viewer on the project."
    return "The failed files are not named this time; the counters are exact."


def parse_log_entry(entry: dict) -> dict:
    """A Cloud Logging entry of an import or export error as ``{source, code, message}``.

    ``source`` is the file (import) or the resource (export) the error is about. Only the payload's
    documented fields are kept, never anything else the entry may carry.
    """
    payload = entry.get("jsonPayload") or {}
    error = payload.get("error") or {}
    return {
        "source": payload.get("source") or payload.get("resourceName") or "",
        "code": int(error.get("code", 0) or 0),
        "message": str(error.get("message", "")),
    }


def resolve_endpoint(extras: dict) -> str | None:
    """The API root to use, or None for Google's default."""
    value = extras.get("healthcare_endpoint") or extras.get("extra__google_cloud_platform__healthcare_endpoint")
    value = value or os.environ.get(ENDPOINT_ENV)
    return value.rstrip("/") + "/" if value else None
