"""Operators for Cloud Healthcare API DICOM import and export.

Each operator validates its inputs before any API call, submits one long-running operation,
persists its name (task state store) and links, checks it once, then defers to
:class:`~dicom_pipelines.triggers.HealthcareOperationTrigger` (or polls in the worker when
``deferrable=False``). A retried task re-attaches to the operation it already started.

XCom ``return_value``: ``{operation_name, success, failure, pending, logs_url, duration_s}``.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, Sequence

from airflow.configuration import conf
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from dicom_pipelines.hooks import CloudHealthcareDicomHook, HealthcareApiError, OperationStatus, parse_operation
from dicom_pipelines.links import HealthcareDicomStoreLink, HealthcareOperationLink
from dicom_pipelines.polling import PollPlanner
from dicom_pipelines.triggers import HealthcareOperationTrigger
from dicom_pipelines.validation import (
    ValidationError,
    parse_bigquery_table_uri,
    parse_gcs_uri,
    parse_import_uri,
    parse_mime_type,
    resource_name,
)

OPERATION_STATE_KEY = "healthcare_operation_name"
COMPLETED_STATE_KEY = "healthcare_operation_completed"
_WRITE_DISPOSITIONS = ("WRITE_EMPTY", "WRITE_TRUNCATE", "WRITE_APPEND")


def _seconds(value: float | dt.timedelta | None) -> float | None:
    return value.total_seconds() if isinstance(value, dt.timedelta) else (float(value) if value is not None else None)


def _parse_time(value: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class FailurePolicy:
    """How many failed instances a run tolerates. With neither limit set, any failure fails the task."""

    max_failures: int | None = None
    max_failure_ratio: float | None = None

    @classmethod
    def from_values(cls, max_failures: Any, max_failure_ratio: Any) -> "FailurePolicy":
        """Build from rendered template values: ``None``, ``""`` and ``"None"`` mean unset."""

        def unset(v: Any) -> bool:
            return v is None or (isinstance(v, str) and v.strip() in ("", "None"))

        count = ratio = None
        if not unset(max_failures):
            try:
                count = int(str(max_failures).strip())
            except ValueError:
                raise ValidationError("max_failures", max_failures, "must be a whole number >= 0") from None
            if count < 0 or isinstance(max_failures, float):
                raise ValidationError("max_failures", max_failures, "must be a whole number >= 0")
        if not unset(max_failure_ratio):
            try:
                ratio = float(str(max_failure_ratio).strip())
            except ValueError:
                raise ValidationError("max_failure_ratio", max_failure_ratio, "must be a number between 0 and 1") from None
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
        if self.max_failure_ratio is not None and failure / max(total, 1) > self.max_failure_ratio:
            return False
        return True

    def describe(self) -> str:
        parts = [f"max_failures={self.max_failures}"] if self.max_failures is not None else []
        parts += [f"max_failure_ratio={self.max_failure_ratio}"] if self.max_failure_ratio is not None else []
        return ", ".join(parts) or "no failures allowed"


def evaluate_operation(status: OperationStatus, policy: FailurePolicy, hook: CloudHealthcareDicomHook, log: Any,
                       failed_sources_to_log: int = 10) -> dict[str, Any]:
    """Turn a finished operation into the XCom result, or raise a clear failure."""
    created, ended = _parse_time(status.create_time), _parse_time(status.end_time)
    result = {
        "operation_name": status.name,
        "success": status.success,
        "failure": status.failure,
        "pending": status.pending,
        "logs_url": status.logs_url,
        "duration_s": round((ended - created).total_seconds(), 3) if created and ended else None,
    }
    total = status.success + status.failure
    log.info("Operation %s done: %d succeeded, %d failed of %d; logs: %s", status.name, status.success,
             status.failure, total, status.logs_url or "(none)")
    if status.failure and failed_sources_to_log:
        for entry in hook.get_operation_logs(status.logs_url, failed_sources_to_log):
            where = entry.get("source") or entry.get("resourceName") or "?"
            err = entry.get("error", {})
            log.warning("Failed: %s: code %s: %s", where, err.get("code"), err.get("message"))
    partial_failure = status.error_code == 3 and status.failure > 0
    if status.error_code and not partial_failure:
        raise AirflowException(
            f"Operation {status.name} failed with {status.error_name} ({status.error_code}): {status.error_message} "
            f"[{status.success} succeeded, {status.failure} failed; logs: {status.logs_url or 'n/a'}]")
    if not policy.allows(status.failure, total):
        ratio = status.failure / max(total, 1)
        raise AirflowException(
            f"Operation {status.name}: {status.failure} of {total} instances failed ({ratio:.1%}), more than allowed "
            f"({policy.describe()}). The per-instance errors are at {status.logs_url or 'the operation logs'}.")
    if status.failure:
        log.warning("%d failed instances are within the tolerance (%s)", status.failure, policy.describe())
    return result


class HealthcareDicomStoreBaseOperator(BaseOperator):
    """What every DICOM store operator shares: the store's coordinates and how to reach the API.

    :param project_id: Google Cloud project of the dataset.
    :param location: region of the dataset, e.g. ``us-central1``.
    :param dataset_id: Healthcare dataset id.
    :param dicom_store_id: DICOM store id.
    :param gcp_conn_id: Airflow connection for Google Cloud.
    :param impersonation_chain: service account(s) to impersonate.
    :param api_version: ``v1`` (default) or ``v1beta1``.
    """

    template_fields: Sequence[str] = ("project_id", "location", "dataset_id", "dicom_store_id", "impersonation_chain")
    operator_extra_links = (HealthcareDicomStoreLink(),)
    ui_color = "#d4e9f7"

    def __init__(self, *, project_id: str, location: str, dataset_id: str, dicom_store_id: str,
                 gcp_conn_id: str = "google_cloud_default", impersonation_chain: str | Sequence[str] | None = None,
                 api_version: str = "v1", **kwargs: Any):
        super().__init__(**kwargs)
        self.project_id = project_id
        self.location = location
        self.dataset_id = dataset_id
        self.dicom_store_id = dicom_store_id
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.api_version = api_version

    def get_hook(self) -> CloudHealthcareDicomHook:
        return CloudHealthcareDicomHook(self.gcp_conn_id, self.impersonation_chain, self.api_version)

    def store_name(self) -> str:
        """The store's resource name; raises :class:`ValidationError` for a bad id."""
        return resource_name(self.project_id, self.location, self.dataset_id, self.dicom_store_id)

    def persist_store_link(self, context: Any) -> None:
        HealthcareDicomStoreLink.persist(context, project_id=self.project_id, location=self.location,
                                         dataset_id=self.dataset_id, dicom_store_id=self.dicom_store_id)


class HealthcareDicomOperationOperator(HealthcareDicomStoreBaseOperator):
    """Base class: submit one DICOM store operation and wait for it. Subclasses implement ``validate`` and ``submit``.

    Store and connection parameters: see :class:`HealthcareDicomStoreBaseOperator`.

    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param poll_interval: first and smallest wait between polls, in seconds.
    :param max_poll_interval: cap of the backoff when progress cannot be predicted.
    :param operation_timeout: seconds (or timedelta) after submission when the operation is cancelled and the
        task fails. None waits forever.
    :param cancel_on_kill: cancel the operation when a user kills the task.
    :param max_failures: failed instances tolerated (count).
    :param max_failure_ratio: failed instances tolerated (fraction of the instances processed).
    :param failed_sources_to_log: how many failed sources to name in the task log.
    """

    template_fields: Sequence[str] = (*HealthcareDicomStoreBaseOperator.template_fields, "max_failures",
                                      "max_failure_ratio")
    operator_extra_links = (HealthcareDicomStoreLink(), HealthcareOperationLink())

    def __init__(self, *,
                 deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
                 poll_interval: float = 2.0, max_poll_interval: float = 60.0,
                 operation_timeout: float | dt.timedelta | None = dt.timedelta(hours=24),
                 cancel_on_kill: bool = True, max_failures: int | None = None, max_failure_ratio: float | None = None,
                 failed_sources_to_log: int = 10, **kwargs: Any):
        super().__init__(**kwargs)
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.operation_timeout = operation_timeout
        self.cancel_on_kill = cancel_on_kill
        self.max_failures = max_failures
        self.max_failure_ratio = max_failure_ratio
        self.failed_sources_to_log = failed_sources_to_log
        self._operation_name: str | None = None

    # --- to implement -------------------------------------------------------------------------
    def validate(self) -> None:
        """Check the rendered inputs; raise :class:`ValidationError` naming the field, value and rule."""

    def submit(self, hook: CloudHealthcareDicomHook, store_name: str) -> dict:
        raise NotImplementedError

    # --- shared flow ------------------------------------------------------------------------------
    def get_hook(self) -> CloudHealthcareDicomHook:
        return CloudHealthcareDicomHook(self.gcp_conn_id, self.impersonation_chain, self.api_version)

    @property
    def policy(self) -> FailurePolicy:
        return FailurePolicy.from_values(self.max_failures, self.max_failure_ratio)

    def _check_inputs(self) -> str:
        try:
            store = self.store_name()
            self.policy  # noqa: B018 - validates the tolerance values
            PollPlanner(self.poll_interval, self.max_poll_interval)
            self.validate()
        except ValueError as exc:  # ValidationError included: bad input will not get better on retry
            raise AirflowFailException(str(exc)) from None
        return store

    def _reattach(self, context: Any, hook: CloudHealthcareDicomHook) -> OperationStatus | None:
        """The operation a previous try of this task started, if it is running or succeeded.

        A task that already completed with that operation and runs again was cleared by a user: it
        submits a new operation, as a user who clears a task expects.
        """
        state = context.get("task_state_store")
        name = state.get(OPERATION_STATE_KEY) if state is not None else None
        if not name or name == state.get(COMPLETED_STATE_KEY):
            return None
        try:
            status = parse_operation(hook.get_operation(name))
        except HealthcareApiError as exc:
            if exc.http_status == 404:
                self.log.warning("Operation %s from a previous try no longer exists; submitting a new one", name)
                return None
            raise
        if not status.done:
            self.log.info("Re-attaching to operation %s started by a previous try", name)
            return status
        if status.error_code == 0:
            self.log.info("Operation %s from a previous try already succeeded; not submitting again", name)
            return status
        self.log.warning("Operation %s from a previous try ended with %s; submitting a new one", name, status.error_name)
        return None

    def execute(self, context: Any) -> Any:
        store = self._check_inputs()
        hook = self.get_hook()
        status = self._reattach(context, hook)
        if status is None:
            op = self.submit(hook, store)
            state = context.get("task_state_store")
            if state is not None:
                state.set(OPERATION_STATE_KEY, op["name"])
            status = parse_operation(op)
            self.log.info("Submitted operation %s", status.name)
        name = self._operation_name = status.name
        self.persist_store_link(context)
        HealthcareOperationLink.persist(context, operation_id=name.rsplit("/", 1)[-1], project_id=self.project_id,
                                        location=self.location, dataset_id=self.dataset_id)
        if not status.done:
            status = parse_operation(hook.get_operation(name))
        if status.done:
            return self._finish(context, hook, status)
        timeout = _seconds(self.operation_timeout)
        created = _parse_time(status.create_time)  # absolute from submission, also for a re-attached retry
        deadline = (created.timestamp() if created else time.time()) + timeout if timeout else None
        if self.deferrable:
            self.defer(
                trigger=HealthcareOperationTrigger(
                    operation_name=name, gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain,
                    api_version=self.api_version, poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval, deadline=deadline, cancel_on_kill=self.cancel_on_kill),
                method_name="execute_complete",
            )
        planner = PollPlanner(self.poll_interval, self.max_poll_interval)
        last: list[int] = []

        def progress(s: OperationStatus) -> None:
            if last != [s.pending]:
                self.log.info("Operation %s: %d succeeded, %d failed, %d pending", name, s.success, s.failure, s.pending)
                last[:] = [s.pending]

        try:
            status = hook.wait_for_operation(name, planner, deadline, progress)
        except TimeoutError:
            hook.cancel_operation(name)
            raise AirflowException(f"operation {name} was not done within {timeout:.0f}s; it was cancelled") from None
        return self._finish(context, hook, status)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if event["status"] != "done":
            raise AirflowException(f"Waiting for operation {event['operation_name']} failed: {event['message']}")
        hook = self.get_hook()
        return self._finish(context, hook, parse_operation(hook.get_operation(event["operation_name"])))

    def _finish(self, context: Any, hook: CloudHealthcareDicomHook, status: OperationStatus) -> Any:
        result = evaluate_operation(status, self.policy, hook, self.log, self.failed_sources_to_log)
        state = context.get("task_state_store")
        if state is not None:
            state.set(COMPLETED_STATE_KEY, status.name)
        return result

    def on_kill(self) -> None:
        if self.cancel_on_kill and self._operation_name:
            self.log.info("Cancelling operation %s", self._operation_name)
            self.get_hook().cancel_operation(self._operation_name)


class HealthcareDicomImportOperator(HealthcareDicomOperationOperator):
    """Import DICOM objects from Cloud Storage into a DICOM store (``dicomStores.import``).

    :param gcs_uri: ``gs://bucket/path`` with the API's wildcards: ``*`` (one level), ``?`` (one character),
        or ``**`` at the end, alone, optionally followed by a suffix (``gs://b/incoming/2026-11-24/**.dcm``).
    :param blob_storage_class: optional storage class for the imported blobs (``STANDARD``, ``NEARLINE``, ...).
    :param allow_empty_source: skip the task (instead of failing) when no object matches ``gcs_uri``,
        e.g. for a night with no new studies.
    """

    template_fields = (*HealthcareDicomOperationOperator.template_fields, "gcs_uri", "allow_empty_source")
    template_fields_renderers = {"gcs_uri": "py"}

    def __init__(self, *, gcs_uri: str, blob_storage_class: str | None = None, allow_empty_source: bool = False,
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.gcs_uri = gcs_uri
        self.blob_storage_class = blob_storage_class
        self.allow_empty_source = allow_empty_source

    def _finish(self, context: Any, hook: CloudHealthcareDicomHook, status: OperationStatus) -> Any:
        if self.allow_empty_source and status.error_code == 5 and status.processed == 0:
            raise AirflowSkipException(f"No objects matched {self.gcs_uri}: nothing to import ({status.error_message})")
        return super()._finish(context, hook, status)

    def validate(self) -> None:
        parse_import_uri(self.gcs_uri, "gcs_uri")
        allowed = ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")
        if self.blob_storage_class is not None and self.blob_storage_class not in allowed:
            raise ValidationError("blob_storage_class", self.blob_storage_class, f"must be one of {allowed}")

    def submit(self, hook: CloudHealthcareDicomHook, store_name: str) -> dict:
        return hook.import_dicom(store_name, self.gcs_uri, self.blob_storage_class)


class HealthcareDicomExportOperator(HealthcareDicomOperationOperator):
    """Export a DICOM store (or the part a filter file names) to Cloud Storage (``dicomStores.export``).

    :param uri_prefix: ``gs://bucket/prefix``; objects are written as ``{prefix}/{study}/{series}/{instance}.ext``.
    :param mime_type: one of the 24 documented export types, e.g. ``image/png`` or
        ``application/dicom; transfer-syntax=*``. Empty keeps the stored DICOM.
    :param filter_uri: optional ``gs://`` filter file of ``/studies/UID[/series/UID[/instances/UID]]`` lines.
    """

    template_fields = (*HealthcareDicomOperationOperator.template_fields, "uri_prefix", "mime_type", "filter_uri")
    template_fields_renderers = {"uri_prefix": "py", "filter_uri": "py"}

    def __init__(self, *, uri_prefix: str, mime_type: str | None = None, filter_uri: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.uri_prefix = uri_prefix
        self.mime_type = mime_type
        self.filter_uri = filter_uri

    def validate(self) -> None:
        parse_gcs_uri(self.uri_prefix, "uri_prefix", allow_empty_object=True)
        parse_mime_type(self.mime_type, "mime_type")
        if self.filter_uri:
            parse_gcs_uri(self.filter_uri, "filter_uri")

    def submit(self, hook: CloudHealthcareDicomHook, store_name: str) -> dict:
        return hook.export_dicom_to_gcs(store_name, self.uri_prefix, self.mime_type or None, self.filter_uri or None)


class HealthcareDicomExportToBigQueryOperator(HealthcareDicomOperationOperator):
    """Export the store's metadata to a BigQuery table (flattened schema: one column per DICOM keyword).

    :param table_uri: ``bq://project.dataset.table``; the dataset must exist, the table is created if absent.
    :param write_disposition: ``WRITE_EMPTY`` (the API's default), ``WRITE_TRUNCATE`` or ``WRITE_APPEND``.
    :param filter_uri: optional ``gs://`` filter file restricting the export.
    :param include_source_store: add a ``SourceDicomStore`` column.
    """

    template_fields = (*HealthcareDicomOperationOperator.template_fields, "table_uri", "write_disposition", "filter_uri")
    template_fields_renderers = {"table_uri": "py"}

    def __init__(self, *, table_uri: str, write_disposition: str = "WRITE_EMPTY", filter_uri: str | None = None,
                 include_source_store: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.table_uri = table_uri
        self.write_disposition = write_disposition
        self.filter_uri = filter_uri
        self.include_source_store = include_source_store

    def validate(self) -> None:
        parse_bigquery_table_uri(self.table_uri, "table_uri")
        if self.write_disposition not in _WRITE_DISPOSITIONS:
            raise ValidationError("write_disposition", self.write_disposition, f"must be one of {_WRITE_DISPOSITIONS}")
        if self.filter_uri:
            parse_gcs_uri(self.filter_uri, "filter_uri")

    def submit(self, hook: CloudHealthcareDicomHook, store_name: str) -> dict:
        return hook.export_dicom_to_bigquery(store_name, self.table_uri, self.write_disposition,
                                             self.filter_uri or None, self.include_source_store)


class HealthcareEnsureDicomStoreOperator(HealthcareDicomStoreBaseOperator):
    """Create the dataset and the DICOM store if missing (idempotent). Returns the store's resource name."""

    def execute(self, context: Any) -> str:
        try:
            self.store_name()
        except ValidationError as exc:
            raise AirflowFailException(str(exc)) from None
        name = self.get_hook().ensure_dicom_store(self.project_id, self.location, self.dataset_id, self.dicom_store_id)
        self.persist_store_link(context)
        return name
