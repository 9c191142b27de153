"""Operators for Cloud Healthcare API DICOM import and export.

Each operator validates its inputs before any API call, submits one long-running operation,
persists its name (task state store) and links, checks it once, then defers to
:class:`~dicom_pipelines.triggers.HealthcareOperationTrigger` (or polls in the worker when
``deferrable=False``). How a finished operation becomes a task result is
:mod:`dicom_pipelines.outcomes`; the README's failure contract lists every case.

Retry safety. The task state store keeps ``{generation, submit_started, name}`` under
:data:`OPERATION_STATE_KEY`. The generation is ``max_tries``, which only a user's clear changes. A
try of the same generation re-attaches to a running operation and evaluates a finished one (never
submitting again), except after a transient end. A try that finds the submission started but no
name (the worker died in between) looks the operation up. A new generation (a user cleared the
task) submits a new operation. :mod:`dicom_pipelines.decisions` decides each of these steps.

XCom ``return_value``: ``{operation_name, success, failure, pending, logs_url, duration_s}``; the GCS
export adds ``uri_prefix`` and ``mime_type``.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, AirflowSkipException, conf
from airflow.providers.google.cloud.operators.cloud_base import GoogleCloudBaseOperator

from dicom_pipelines.arrivals import ArrivedObject, original_uri, run_key
from dicom_pipelines.decisions import (
    ATTACH,
    DONE,
    FAIL,
    LOOKUP,
    SUBMIT,
    TIMEOUT,
    after_cancel,
    ambiguous_message,
    at_deadline,
    cancelled_by_deadline,
    defer_timeout,
    generation,
    resume_step,
    resumed_operation,
    worker_kill_may_cancel,
)
from dicom_pipelines.lineage import DicomDataset, bigquery_dataset, gcs_dataset, store_dataset
from dicom_pipelines.links import HealthcareDicomStoreLink, HealthcareOperationLink, HealthcareOperationLogLink, UrlLink
from dicom_pipelines.metrics import operation_tags, progress_line, record_cancel, record_finished, record_timeout
from dicom_pipelines.outcomes import (
    CANCELLED,
    EMPTY,
    TRANSIENT,
    FailurePolicy,
    api_failure,
    classify,
    deadline_note,
    failure_message,
    log_finished,
    operation_result,
    summary,
)
from dicom_pipelines.polling import PollPlanner
from dicom_pipelines.responses import (
    SUBMIT_TIMEOUT_S,
    HealthcareApiError,
    OperationDeadlineExceeded,
    OperationStatus,
    parse_operation,
    parse_time,
)
from dicom_pipelines.settings import GCP_CONN_ID
from dicom_pipelines.triggers import OPERATION_XCOM_KEY, HealthcareOperationTrigger, task_instance_state
from dicom_pipelines.validation import (
    ValidationError,
    deidentify_config,
    parse_bigquery_table_uri,
    parse_bool,
    parse_gcs_uri,
    parse_import_uri,
    parse_mime_type,
    resource_name,
)

if TYPE_CHECKING:
    from dicom_pipelines.hooks import CloudHealthcareDicomHook

OPERATION_STATE_KEY = "healthcare_operation"
COUNTED_STATE_KEY = "healthcare_operation_counted"
"""The task state store's key naming the operation whose instances this task's metrics have counted."""
DEFER_GRACE_S = 300.0
"""How long after the trigger's own deadline Airflow's deferral timeout ends a trigger that could not run."""
WRITE_DISPOSITIONS = ("WRITE_EMPTY", "WRITE_TRUNCATE", "WRITE_APPEND")


_UID = re.compile(r"\b[0-9]+(?:\.[0-9]+){2,}\b")


def mask_uids(text: str) -> str:
    """``text`` with every DICOM UID (dotted digits, e.g. ``1.2.840.113619.2.55``) replaced by ``<UID>``."""
    return _UID.sub("<UID>", text)


def _seconds(value: float | dt.timedelta | None) -> float | None:
    return value.total_seconds() if isinstance(value, dt.timedelta) else (float(value) if value is not None else None)


class HealthcareDicomStoreBaseOperator(GoogleCloudBaseOperator):
    """What every DICOM store operator shares: the store's coordinates and how to reach the API.

    :param project_id: Google Cloud project of the dataset.
    :param location: region of the dataset, e.g. ``us-central1``.
    :param dataset_id: Healthcare dataset id.
    :param dicom_store_id: DICOM store id.
    :param gcp_conn_id: Airflow connection for Google Cloud.
    :param impersonation_chain: service account(s) to impersonate.
    :param api_version: ``v1`` (default) or ``v1beta1``.
    """

    template_fields: Sequence[str] = (
        "project_id",
        "location",
        "dataset_id",
        "dicom_store_id",
        "gcp_conn_id",
        "impersonation_chain",
    )
    operator_extra_links: tuple[UrlLink, ...] = (HealthcareDicomStoreLink(),)
    ui_color = "#d4e9f7"

    def __init__(
        self,
        *,
        project_id: str,
        location: str,
        dataset_id: str,
        dicom_store_id: str,
        gcp_conn_id: str = GCP_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        api_version: str = "v1",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.project_id = project_id
        self.location = location
        self.dataset_id = dataset_id
        self.dicom_store_id = dicom_store_id
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.api_version = api_version

    def get_hook(self) -> CloudHealthcareDicomHook:
        from dicom_pipelines.hooks import CloudHealthcareDicomHook

        return CloudHealthcareDicomHook(self.gcp_conn_id, self.impersonation_chain, self.api_version)

    def store_name(self) -> str:
        """The store's resource name; raises :class:`ValidationError` for a bad id."""
        return resource_name(self.project_id, self.location, self.dataset_id, self.dicom_store_id)

    def persist_store_link(self, context: Any, hook: CloudHealthcareDicomHook, store_name: str) -> None:
        HealthcareDicomStoreLink.persist_url(context, HealthcareDicomStoreLink.url(hook.endpoint, store_name))


class HealthcareDicomOperationOperator(HealthcareDicomStoreBaseOperator):
    """Base class: submit one DICOM store operation and wait for it. Subclasses implement ``validate`` and ``submit``.

    Store and connection parameters: see :class:`HealthcareDicomStoreBaseOperator`.

    :param deferrable: wait in the triggerer (default: ``[operators] default_deferrable``).
    :param poll_interval: first and smallest wait between polls, in seconds.
    :param max_poll_interval: longest wait between polls: completion is seen at most this late.
    :param operation_timeout: seconds (or timedelta) after the operation's creation when the task fails
        without retry, and the operation is cancelled if ``cancel_on_kill``. None waits forever.
    :param cancel_on_kill: this task may cancel its operation: when a user kills or clears it, and at the
        deadline. False leaves the operation running in every case.
    :param max_failures: failed instances tolerated (count).
    :param max_failure_ratio: failed instances tolerated (fraction of the instances processed).
    :param failed_sources_to_log: how many failed sources to name in the task log and the XCom.
    :param failure_report_uri: ``gs://bucket/object``: when instances failed, one JSON object per failed
        source (``source``, ``code``, ``message``), newline-delimited, read from Cloud Logging, is written
        there before the outcome is decided. A retry writes the same object again.
    :param failure_report_limit: at most this many failures are read for the report.
    :param quarantine_prefix: ``gs://bucket/folder``: each failed source named in the report is copied
        under it, keeping its path (``gs://src/a/b.dcm`` → ``<prefix>/src/a/b.dcm``). Off when empty.
    :param wait_before_defer: seconds to keep polling in the worker before deferring (0: check once, then defer).
        For operations that usually take seconds: they end without the hand-over to the triggerer, and without
        Airflow 3.3.2's race when a trigger fires within the worker's heartbeat of the deferral.
    """

    template_fields: Sequence[str] = (
        *HealthcareDicomStoreBaseOperator.template_fields,
        "max_failures",
        "max_failure_ratio",
        "failure_report_uri",
        "quarantine_prefix",
    )
    operator_extra_links = (HealthcareDicomStoreLink(), HealthcareOperationLink(), HealthcareOperationLogLink())
    api_method = ""
    """The operation's ``metadata.apiMethodName`` suffix, used to find it after an ambiguous submission."""
    operation_kind = ""
    """What the operation does, as the metrics' ``operation`` tag and the lineage facet name it."""

    def __init__(
        self,
        *,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 2.0,
        max_poll_interval: float = 60.0,
        operation_timeout: float | dt.timedelta | None = dt.timedelta(hours=24),
        cancel_on_kill: bool = True,
        max_failures: int | str | None = None,
        max_failure_ratio: float | str | None = None,
        failed_sources_to_log: int = 10,
        failure_report_uri: str | None = None,
        failure_report_limit: int = 10_000,
        quarantine_prefix: str | None = None,
        wait_before_defer: float = 0.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.wait_before_defer = wait_before_defer
        self.failure_report_uri = failure_report_uri
        self.failure_report_limit = failure_report_limit
        self.quarantine_prefix = quarantine_prefix
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.operation_timeout = operation_timeout
        self.cancel_on_kill = cancel_on_kill
        self.max_failures = max_failures
        self.max_failure_ratio = max_failure_ratio
        self.failed_sources_to_log = failed_sources_to_log
        self._operation_name: str | None = None
        self._ti: Any = None
        self._polls = 0
        self._result: dict[str, Any] | None = None

    # --- to implement -------------------------------------------------------------------------
    def validate(self) -> None:
        """Check the rendered inputs; raise :class:`ValidationError` naming the field, value and rule."""

    def submit(self, hook: CloudHealthcareDicomHook, store_name: str) -> dict:
        raise NotImplementedError

    def lineage_datasets(self) -> tuple[list[DicomDataset], list[DicomDataset]]:
        """The OpenLineage inputs and outputs (:mod:`dicom_pipelines.lineage`), from the rendered fields."""
        raise NotImplementedError

    # --- lineage (the OpenLineage provider's listener calls these when the task ends) ---------------------------
    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        from dicom_pipelines.lineage import operator_lineage

        try:
            inputs, outputs = self.lineage_datasets()
        except ValueError:  # refused input: the task's error names it; there is no dataset to report
            inputs, outputs = [], []
        return operator_lineage(inputs, outputs, self.operation_kind, self._result)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self.get_openlineage_facets_on_complete(task_instance)

    # --- shared flow ------------------------------------------------------------------------------
    @property
    def policy(self) -> FailurePolicy:
        return FailurePolicy.from_values(self.max_failures, self.max_failure_ratio)

    def _check_inputs(self) -> str:
        try:
            store = self.store_name()
            self.policy  # noqa: B018 - validates the tolerance values
            PollPlanner(self.poll_interval, self.max_poll_interval)
            if self.failure_report_uri:
                parse_gcs_uri(self.failure_report_uri, "failure_report_uri")
            if self.quarantine_prefix:
                parse_gcs_uri(self.quarantine_prefix, "quarantine_prefix", allow_empty_object=True)
            self.validate()
        except ValueError as exc:  # ValidationError included: bad input will not get better on retry
            raise AirflowFailException(str(exc)) from None
        return store

    def _generation(self, context: Any) -> int:
        """Which clear of the task this try belongs to (:func:`~dicom_pipelines.decisions.generation`)."""
        return generation(getattr(context.get("ti"), "max_tries", None))

    def _deadline(self, status: OperationStatus) -> float | None:
        """Epoch seconds: the operation's creation plus ``operation_timeout``, whichever try is waiting."""
        timeout = _seconds(self.operation_timeout)
        if not timeout:
            return None
        created = parse_time(status.create_time)
        return (created.timestamp() if created else time.time()) + timeout

    def _cancelled_by_deadline(self, status: OperationStatus) -> bool:
        return cancelled_by_deadline(status, self._deadline(status), time.time())

    def _resume(self, context: Any, hook: CloudHealthcareDicomHook, store: str) -> OperationStatus | None:
        """The operation an earlier try of this generation started, when it is to be waited for or evaluated."""
        state = context.get("task_state_store")
        entry = state.get(OPERATION_STATE_KEY) if state is not None else None
        step = resume_step(entry, self._generation(context))
        if step == SUBMIT or not isinstance(entry, dict) or state is None:
            return None
        name = str(entry.get("name") or "")
        if step == LOOKUP:
            since = float(entry["submit_started"])
            found = hook.locate_submission(
                dataset_name=store.split("/dicomStores/")[0],
                api_method=self.api_method,
                since=since,
                until=since + SUBMIT_TIMEOUT_S,
            )
            if found.action == FAIL:
                raise AirflowFailException(
                    ambiguous_message(
                        found, self.api_method, "An earlier try started submitting but did not record the operation"
                    )
                )
            if found.action == SUBMIT:
                self.log.info("An earlier try did not get to start an operation; submitting it")
                return None
            name = found.name
            self.log.warning("An earlier try started operation %s but died before recording it; adopting it", name)
            state.set(OPERATION_STATE_KEY, {**entry, "name": name})
        try:
            self._polls += 1
            status: OperationStatus | None = parse_operation(hook.get_operation(name=name))
        except HealthcareApiError as exc:
            if exc.http_status != 404:
                raise
            status = None
        action = resumed_operation(status)
        if status is None:
            self.log.warning("Operation %s from an earlier try no longer exists; submitting a new one", name)
        elif action == ATTACH:
            self.log.info("Re-attaching to operation %s, started by an earlier try", name)
        elif action == SUBMIT:
            self.log.warning(
                "Operation %s from an earlier try ended with %s (%s), which may pass: submitting it again",
                name,
                status.error_name,
                status.error_message,
            )
        else:
            self.log.info("Operation %s from an earlier try is finished: evaluating it, not submitting again", name)
        return status if action != SUBMIT else None

    def _submit(self, context: Any, hook: CloudHealthcareDicomHook, store: str) -> OperationStatus:
        state = context.get("task_state_store")
        entry = {"generation": self._generation(context), "submit_started": time.time()}
        if state is not None:
            state.set(OPERATION_STATE_KEY, entry)
        op = self.submit(hook, store)
        if state is not None:
            state.set(OPERATION_STATE_KEY, {**entry, "name": op["name"]})
        self.log.info("Submitted operation %s", op["name"])
        return parse_operation(op)

    def execute(self, context: Any) -> Any:
        store = self._check_inputs()
        self._ti = context.get("ti")
        hook = self.get_hook()
        try:
            status = self._resume(context, hook, store) or self._submit(context, hook, store)
            name = self._operation_name = status.name
            if self._ti is not None:  # what a trigger's on_kill compares with its own operation
                self._ti.xcom_push(key=OPERATION_XCOM_KEY, value=name)
            self.persist_store_link(context, hook, store)
            HealthcareOperationLink.persist_url(context, HealthcareOperationLink.url(hook.endpoint, name))
            HealthcareOperationLogLink.persist_url(
                context, HealthcareOperationLogLink.view(status.logs_url, hook.logging_endpoint)
            )
            if not status.done:
                self._polls += 1
                status = parse_operation(hook.get_operation(name=name))
            deadline = self._deadline(status)
            if not status.done and self.deferrable and self.wait_before_defer > 0:
                status = self._wait_briefly(hook, status, deadline)
        except HealthcareApiError as exc:
            raise api_failure(exc) from None
        if status.done:
            return self._finish(context, hook, status)
        if at_deadline(status, deadline, time.time()) == TIMEOUT:
            return self._at_deadline(context, hook, status)
        if self.deferrable:
            timeout = defer_timeout(deadline, time.time(), self._execution_deadline(context), DEFER_GRACE_S)
            self.defer(
                timeout=dt.timedelta(seconds=timeout) if timeout is not None else None,
                trigger=HealthcareOperationTrigger(
                    operation_name=name,
                    gcp_conn_id=self.gcp_conn_id,
                    impersonation_chain=self.impersonation_chain,
                    api_version=self.api_version,
                    poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval,
                    deadline=deadline,
                    cancel_on_kill=self.cancel_on_kill,
                    metric_tags=self.metric_tags(store),
                ),
                method_name="execute_complete",
            )
        last: list[int] = []
        planner = PollPlanner(self.poll_interval, self.max_poll_interval)

        def progress(s: OperationStatus) -> None:
            self._polls += 1
            if last != [s.pending]:
                self.log.info("%s", progress_line(name, s, planner.remaining, time.time()))
                last[:] = [s.pending]

        try:
            status = hook.wait_for_operation(name=name, planner=planner, deadline=deadline, on_progress=progress)
        except OperationDeadlineExceeded as exc:
            return self._at_deadline(context, hook, exc.last or status)
        except HealthcareApiError as exc:
            raise api_failure(exc) from None
        self._polls += 1
        return self._finish(context, hook, status)

    def _wait_briefly(
        self, hook: CloudHealthcareDicomHook, status: OperationStatus, deadline: float | None
    ) -> OperationStatus:
        """Poll in the worker for up to ``wait_before_defer`` seconds (never past the deadline); the last status."""
        until = time.time() + self.wait_before_defer
        if deadline is not None:
            until = min(until, deadline)

        def counted(_: OperationStatus) -> None:
            self._polls += 1

        try:
            return hook.wait_for_operation(
                name=status.name,
                planner=PollPlanner(self.poll_interval, self.max_poll_interval),
                deadline=until,
                on_progress=counted,
            )
        except OperationDeadlineExceeded as exc:
            return exc.last or status

    def metric_tags(self, store_name: str | None = None) -> dict[str, str]:
        """The tags of this task's metrics (:mod:`dicom_pipelines.metrics`): the operation kind and the store."""
        return operation_tags(self.operation_kind, store_name or self.store_name())

    def _count_once(self, context: Any, status: OperationStatus) -> None:
        """Record a finished operation's metrics, unless an earlier try of this task recorded this operation."""
        state = context.get("task_state_store")
        try:
            if state is not None and state.get(COUNTED_STATE_KEY) == status.name:
                return
            record_finished(self.metric_tags(), status, self._polls)
            if state is not None:
                state.set(COUNTED_STATE_KEY, status.name)
        except Exception as exc:  # noqa: BLE001 - a metric is never a reason to lose the operation's outcome
            self.log.warning("Could not record the metrics of %s (%s: %s)", status.name, type(exc).__name__, exc)

    def _execution_deadline(self, context: Any) -> float | None:
        """Epoch seconds when ``execution_timeout`` ends this try, which Airflow 3.3 does not apply to a deferral."""
        limit = _seconds(self.execution_timeout)
        start = getattr(context.get("ti"), "start_date", None)
        if not limit or not isinstance(start, dt.datetime):
            return None
        return start.timestamp() + limit

    def _at_deadline(self, context: Any, hook: CloudHealthcareDicomHook, status: OperationStatus) -> Any:
        """The deadline passed with the operation last seen running: look once more, then cancel as allowed.

        It may have finished since the last poll (then it is evaluated as finished), or while being cancelled.
        """
        try:
            status = parse_operation(hook.get_operation(name=status.name))
        except HealthcareApiError as exc:
            self.log.warning("Could not read operation %s at its deadline (%s)", status.name, exc)
        if at_deadline(status, None, time.time()) == DONE:
            return self._finish(context, hook, status)
        error: HealthcareApiError | None = None
        if self.cancel_on_kill:
            try:
                hook.cancel_operation(name=status.name)
                record_cancel(self.metric_tags(), "deadline")
                status = parse_operation(hook.get_operation(name=status.name))
            except HealthcareApiError as exc:
                error = exc
            if after_cancel(status) == DONE:
                return self._finish(context, hook, status)
        raise self._timeout(status, error)

    def _timeout(self, status: OperationStatus, error: Exception | None) -> AirflowFailException:
        """The deadline passed with the operation not done: final, since a retry would find it passed too."""
        note = deadline_note(self.cancel_on_kill, error)
        record_timeout(self.metric_tags())
        return AirflowFailException(
            f"Operation {status.name} was not done {_seconds(self.operation_timeout):.0f}s after its creation "
            f"({status.create_time or 'unknown'}); {note}. Last counters: {summary(status)}"
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        self._polls = int(event.get("polls") or 0)
        if event["status"] == "timeout":
            record_timeout(self.metric_tags())
            message = event["message"]
            raise AirflowFailException(
                f"{message[:1].upper()}{message[1:]} (operation_timeout={_seconds(self.operation_timeout):.0f}s after "
                f"its creation). Last counters: {event['success']} succeeded, {event['failure']} failed, "
                f"{event['pending']} pending"
            )
        if event["status"] != "done":
            raise AirflowFailException(f"Waiting for operation {event['operation_name']} failed: {event['message']}")
        hook = self.get_hook()
        try:
            self._polls += 1
            status = parse_operation(hook.get_operation(name=event["operation_name"]))
        except HealthcareApiError as exc:
            raise api_failure(exc) from None
        return self._finish(context, hook, status)

    def _finish(self, context: Any, hook: CloudHealthcareDicomHook, status: OperationStatus) -> Any:
        """Evaluate a finished operation by the contract (:mod:`dicom_pipelines.outcomes`)."""
        kind = classify(status)
        self._result = operation_result(status)
        self._count_once(context, status)
        reporting = bool(self.failure_report_uri or self.quarantine_prefix)
        limit = max(self.failed_sources_to_log, self.failure_report_limit if reporting else 0)
        failed = self.shareable_failures(hook.failed_entries(status=status, limit=limit))
        log_finished(self.log, status, failed[: self.failed_sources_to_log])
        report = self._report_failures(hook, status, failed)
        if kind == EMPTY:
            return self._on_empty(status)
        if kind == CANCELLED and self._cancelled_by_deadline(status):
            record_timeout(self.metric_tags())
            raise AirflowFailException(
                f"Operation {status.name} was cancelled at its deadline ({_seconds(self.operation_timeout):.0f}s after "
                f"its creation). [{summary(status)}]"
            )
        message = failure_message(status, kind, self.policy)
        if message and report:
            message += f" The failed sources are listed in {report}."
        if message and kind == TRANSIENT:
            raise AirflowException(message)
        if message:
            raise AirflowFailException(message)
        if status.failure:
            self.log.warning(
                "%d failed instances are within the tolerance (%s)", status.failure, self.policy.describe()
            )
        return {
            **operation_result(status),
            "failed_sources": failed[: self.failed_sources_to_log],
            "failure_report_uri": report,
        }

    def shareable_failures(self, entries: list[dict]) -> list[dict]:
        """The per-instance errors as they may go to the task log, the XCom and the report."""
        return entries

    def _report_failures(
        self, hook: CloudHealthcareDicomHook, status: OperationStatus, failed: list[dict]
    ) -> str | None:
        """Write the failure report and quarantine the failed sources, as configured; the report's URI or None.

        An earlier attempt of the same run (a transient end, then a retry) may have left a report and quarantined
        copies: a source that this attempt did not fail has its copy removed, and a clean attempt removes the
        report, so neither names a file that was imported after all.
        """
        if status.failure and not failed:  # failures that Cloud Logging did not name: nothing to compare with
            return None
        if not (self.failure_report_uri or self.quarantine_prefix):
            return None
        report = None
        try:
            earlier = hook.read_failure_report(uri=self.failure_report_uri) if self.failure_report_uri else []
            stale = {e.get("source", "") for e in earlier} - {e["source"] for e in failed}
            if self.quarantine_prefix and stale:
                released = hook.release_quarantined(sources=stale, prefix=self.quarantine_prefix)
                self.log.info("Removed %d quarantined copies of an earlier attempt's failures", released)
            if self.failure_report_uri and failed:
                hook.write_failure_report(uri=self.failure_report_uri, entries=failed)
                report = self.failure_report_uri
                self.log.info("Wrote %d failed sources of %s to %s", len(failed), status.name, report)
            elif earlier:
                hook.delete_failure_report(uri=self.failure_report_uri or "")
                self.log.info("Removed an earlier attempt's failure report %s: nothing failed", self.failure_report_uri)
            if self.quarantine_prefix and failed:
                copied = hook.quarantine_sources(entries=failed, prefix=self.quarantine_prefix)
                self.log.info("Copied %d failed sources under %s", copied, self.quarantine_prefix)
        except Exception as exc:  # noqa: BLE001 - a report is never a reason to lose the operation's outcome
            self.log.warning("Could not write the failure report or quarantine (%s: %s)", type(exc).__name__, exc)
        return report

    def _on_empty(self, status: OperationStatus) -> Any:
        """Nothing was processed. For an export that is a valid (empty) result unless the API said otherwise."""
        message = failure_message(status, EMPTY, self.policy)
        if message:
            raise AirflowFailException(message)
        return operation_result(status)

    def _bucket_exists(self, bucket: str) -> bool | None:
        """True or False, or None when the Airflow identity may not look (then the API's own answer is trusted)."""
        from airflow.providers.google.cloud.hooks.gcs import GCSHook
        from google.api_core.exceptions import GoogleAPICallError

        try:
            return (
                GCSHook(gcp_conn_id=self.gcp_conn_id, impersonation_chain=self.impersonation_chain)
                .get_conn()
                .bucket(bucket)
                .exists()
            )
        except GoogleAPICallError as exc:
            self.log.warning("Could not check whether gs://%s exists (%s); trusting the API's answer", bucket, exc)
            return None

    def on_kill(self) -> None:
        """Cancel the operation only when a user ended the task (see ``decisions.worker_kill_may_cancel``).

        Airflow calls this from its SIGTERM handler and at ``execution_timeout``; it never raises from there.
        """
        name = self._operation_name
        if not (self.cancel_on_kill and name):
            return
        try:
            state = task_instance_state(self)
            if not worker_kill_may_cancel(self.cancel_on_kill, state):
                self.log.info("Task stopped while %s (not a user's kill): operation %s is left running", state, name)
                return
            self.get_hook().cancel_operation(name=name)
            self.log.info("Cancelled operation %s because a user ended the task (%s)", name, state)
            record_cancel(self.metric_tags(), "user")
        except Exception as exc:  # noqa: BLE001 - on_kill runs inside a signal handler
            self.log.error("Could not cancel operation %s: %s: %s", name, type(exc).__name__, exc)


class HealthcareDicomImportOperator(HealthcareDicomOperationOperator):
    """Import DICOM objects from Cloud Storage into a DICOM store (``dicomStores.import``).

    :param gcs_uri: ``gs://bucket/path`` with the API's wildcards: ``*`` (one level), ``?`` (one character),
        or ``**`` at the end, alone, optionally followed by a suffix (``gs://b/incoming/2026-11-24/**.dcm``).
    :param blob_storage_class: optional storage class for the imported blobs (``STANDARD``, ``NEARLINE``, ...).
    :param allow_empty_source: skip the task (instead of failing) when no object matches ``gcs_uri``,
        e.g. for a night with no new studies. A source bucket that does not exist fails the task either way.
    """

    template_fields = (*HealthcareDicomOperationOperator.template_fields, "gcs_uri", "allow_empty_source")
    template_fields_renderers = {"gcs_uri": "py"}

    def __init__(
        self,
        *,
        gcs_uri: str,
        blob_storage_class: str | None = None,
        allow_empty_source: bool | str = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.gcs_uri = gcs_uri
        self.blob_storage_class = blob_storage_class
        self.allow_empty_source = allow_empty_source

    api_method = "ImportDicomData"
    operation_kind = "import"

    def lineage_datasets(self) -> tuple[list[DicomDataset], list[DicomDataset]]:
        return [gcs_dataset(self.gcs_uri, "gcs_uri")], [store_dataset(self.store_name())]

    def _on_empty(self, status: OperationStatus) -> Any:
        """No object matched: a quiet night, or a misconfiguration; the bucket's existence tells them apart."""
        bucket = parse_gcs_uri(self.gcs_uri, "gcs_uri").bucket
        exists = self._bucket_exists(bucket)
        if exists is False:
            raise AirflowFailException(
                f"gcs_uri={self.gcs_uri!r}: the bucket gs://{bucket} does not exist, so nothing was imported "
                f"({status.error_name}: {status.error_message})"
            )
        if not parse_bool(self.allow_empty_source, "allow_empty_source"):
            raise AirflowFailException(
                f"No objects matched gcs_uri={self.gcs_uri!r}: nothing was imported "
                f"({status.error_message or status.error_name}). Set allow_empty_source to skip such runs instead."
            )
        raise AirflowSkipException(f"No objects matched {self.gcs_uri}: nothing to import")

    def validate(self) -> None:
        parse_import_uri(self.gcs_uri, "gcs_uri")
        parse_bool(self.allow_empty_source, "allow_empty_source")
        allowed = ("STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE")
        if self.blob_storage_class is not None and self.blob_storage_class not in allowed:
            raise ValidationError("blob_storage_class", self.blob_storage_class, f"must be one of {allowed}")

    def submit(self, hook: CloudHealthcareDicomHook, store_name: str) -> dict:
        return hook.import_dicom(
            store_name=store_name, gcs_uri=self.gcs_uri, blob_storage_class=self.blob_storage_class
        )


class HealthcareDicomArrivalImportOperator(HealthcareDicomImportOperator):
    """Import the files that Cloud Storage notifications named (:mod:`dicom_pipelines.arrivals`), in one operation.

    ``dicomStores.import`` takes one URI, so the files are first copied, server-side, to
    ``<staging_prefix>/<run>/<bucket>/<path>``, and that folder is imported. Errors name the original files (the
    failure report and the quarantine too). Each imported source generation is then marked
    (:data:`~dicom_pipelines.arrivals.IMPORTED_MARKER`): a redelivered notification imports nothing, and the nightly
    import counts what arrival runs imported. The staged copies are deleted once the operation is evaluated.

    A retry re-attaches to the operation like any import; one that must submit again (after a transient end)
    stages again, skipping the files the earlier operation imported.

    The run's notifications are acknowledged (``subscription``, ``ack_ids``) once the operation is evaluated, or
    when there is nothing to import; never after a transient end or a failure to reach the API, whose retry (or
    the redelivery) imports the files still unmarked.

    :param arrivals: the files, as :meth:`ArrivedObject.to_dict` (an upstream task's XCom).
    :param staging_prefix: ``gs://bucket/folder`` of the staged copies; the Healthcare service agent must read it.
        Keep it out of the notification's scope (or in another bucket): its copies are not arrivals.
    :param subscription: ``projects/P/subscriptions/S`` the notifications were pulled from; empty: none to
        acknowledge.
    :param ack_ids: the pulled messages' ack ids.
    """

    template_fields = (*HealthcareDicomImportOperator.template_fields, "arrivals", "staging_prefix", "ack_ids")

    def __init__(
        self, *, arrivals: Any, staging_prefix: str, subscription: str = "", ack_ids: Any = None, **kwargs: Any
    ):
        super().__init__(gcs_uri="", **kwargs)
        self.arrivals = arrivals
        self.staging_prefix = staging_prefix
        self.subscription = subscription
        self.ack_ids = ack_ids
        self._staging: tuple[str, str, str] = ("", "", "")
        self._files: list[ArrivedObject] = []
        self._failed_sources: set[str] = set()

    def _arrived(self) -> list[ArrivedObject]:
        try:
            return [ArrivedObject.from_dict(a) for a in list(self.arrivals or [])]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ValidationError(
                "arrivals", "(a list)", "must be a list of {bucket, name, generation}, as the collect task returns"
            ) from None

    def _prepare(self, context: Any) -> list[ArrivedObject]:
        """The run's files and staging folder; the same in ``execute`` and, after a deferral, ``execute_complete``."""
        try:
            staging = parse_gcs_uri(self.staging_prefix, "staging_prefix", allow_empty_object=True)
            arrived = self._arrived()
        except ValidationError as exc:
            raise AirflowFailException(str(exc)) from None
        key = run_key(context["run_id"])
        self._staging = (staging.bucket, staging.name.strip("/"), key)
        folder = "/".join(p for p in (staging.name.strip("/"), key) if p)
        self.gcs_uri = f"gs://{staging.bucket}/{folder}/**"
        self._files = arrived
        return arrived

    def execute(self, context: Any) -> Any:
        if not self._prepare(context):
            self._acknowledge(self.get_hook())
            raise AirflowSkipException("The run's notifications name no new file: nothing to import")
        return super().execute(context)

    def _acknowledge(self, hook: CloudHealthcareDicomHook) -> None:
        """Acknowledge the run's notifications: its files are imported, marked, or refused for good."""
        ids = list(self.ack_ids or []) if not isinstance(self.ack_ids, str) else []
        if not (self.subscription and ids):
            return
        try:
            self.log.info(
                "Acknowledged %d notifications",
                hook.acknowledge_notifications(subscription=self.subscription, ack_ids=ids),
            )
        except Exception as exc:  # noqa: BLE001 - unacknowledged, they come again and find their files marked
            self.log.warning(
                "Could not acknowledge the notifications (%s: %s); they will be delivered again",
                type(exc).__name__,
                exc,
            )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        self._prepare(context)
        return super().execute_complete(context, event)

    def _submit(self, context: Any, hook: CloudHealthcareDicomHook, store: str) -> OperationStatus:
        bucket, folder, key = self._staging
        staged = hook.stage_arrivals(objects=self._files, staging_bucket=bucket, staging_folder=folder, run_key=key)
        self.log.info(
            "Staged %d files under %s; not staged: %d already imported by an earlier run (a redelivered "
            "notification), %d overwritten since (their newer version has its own notification), %d deleted since",
            len(staged.staged),
            self.gcs_uri,
            len(staged.already_imported),
            len(staged.superseded),
            len(staged.missing),
        )
        if not staged.staged:
            self._acknowledge(hook)
            raise AirflowSkipException(
                f"Nothing to import: of {len(self._files)} files, {len(staged.already_imported)} were imported by "
                f"an earlier run (redelivered notifications), {len(staged.superseded)} were overwritten and "
                f"{len(staged.missing)} deleted since"
            )
        return super()._submit(context, hook, store)

    def shareable_failures(self, entries: list[dict]) -> list[dict]:
        """The errors name the original files, never the staged copies."""
        bucket, folder, key = self._staging
        named = [{**e, "source": original_uri(e.get("source", ""), bucket, folder, key)} for e in entries]
        self._failed_sources = {e["source"] for e in named}
        return named

    def _finish(self, context: Any, hook: CloudHealthcareDicomHook, status: OperationStatus) -> Any:
        try:
            result = super()._finish(context, hook, status)
        except (AirflowFailException, AirflowSkipException):
            self._settle(hook, status, acknowledge=True)
            raise
        except AirflowException:  # a transient end: the retry submits again, the notifications wait for it
            self._settle(hook, status, acknowledge=False)
            raise
        self._settle(hook, status, acknowledge=True)
        return result

    def _settle(self, hook: CloudHealthcareDicomHook, status: OperationStatus, acknowledge: bool) -> None:
        """Mark what was imported, when that is known for each file, delete the staged copies, and acknowledge the
        notifications when the outcome is final."""
        bucket, folder, key = self._staging
        try:
            if status.pending == 0 and len(self._failed_sources) >= status.failure:
                imported = [a for a in self._files if a.uri not in self._failed_sources]
                marked = hook.mark_imported(objects=imported)
                self.log.info("Marked %d imported files, so a redelivered notification imports nothing", marked)
            else:
                self.log.warning(
                    "Not marking the imported files: which of them failed is not known (%d failed, %d named, %d "
                    "pending). A redelivered notification imports them again, which the store ignores",
                    status.failure,
                    len(self._failed_sources),
                    status.pending,
                )
            removed = hook.delete_staged(staging_bucket=bucket, folder="/".join(p for p in (folder, key) if p))
            self.log.info("Deleted %d staged copies", removed)
        except Exception as exc:  # noqa: BLE001 - housekeeping never changes the operation's outcome
            self.log.warning("Could not mark the files or delete the staged copies (%s: %s)", type(exc).__name__, exc)
        if acknowledge:
            self._acknowledge(hook)


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

    api_method = "ExportDicomData"
    operation_kind = "export"

    def lineage_datasets(self) -> tuple[list[DicomDataset], list[DicomDataset]]:
        inputs = [store_dataset(self.store_name())]
        inputs += [gcs_dataset(self.filter_uri, "filter_uri")] if self.filter_uri else []
        return inputs, [gcs_dataset(self.uri_prefix, "uri_prefix")]

    def validate(self) -> None:
        parse_gcs_uri(self.uri_prefix, "uri_prefix", allow_empty_object=True)
        parse_mime_type(self.mime_type, "mime_type")
        if self.filter_uri:
            parse_gcs_uri(self.filter_uri, "filter_uri")

    def _submit(self, context: Any, hook: CloudHealthcareDicomHook, store: str) -> OperationStatus:
        """A missing destination bucket would fail every instance one by one: say so instead, and export nothing."""
        bucket = parse_gcs_uri(self.uri_prefix, "uri_prefix", allow_empty_object=True).bucket
        if self._bucket_exists(bucket) is False:
            raise AirflowFailException(
                f"uri_prefix={self.uri_prefix!r}: the destination bucket gs://{bucket} does not exist. Create it, "
                "or fix the name; nothing was exported."
            )
        return super()._submit(context, hook, store)

    def _finish(self, context: Any, hook: CloudHealthcareDicomHook, status: OperationStatus) -> Any:
        """The result names where the objects went, so a check downstream needs no rule of its own."""
        return {
            **super()._finish(context, hook, status),
            "uri_prefix": self.uri_prefix,
            "mime_type": self.mime_type,
            "create_time": status.create_time,
            "filter_uri": self.filter_uri or None,
        }

    def submit(self, hook: CloudHealthcareDicomHook, store_name: str) -> dict:
        return hook.export_dicom_to_gcs(
            store_name=store_name,
            uri_prefix=self.uri_prefix,
            mime_type=self.mime_type or None,
            filter_uri=self.filter_uri or None,
        )


class HealthcareDicomExportToBigQueryOperator(HealthcareDicomOperationOperator):
    """Export the store's metadata to a BigQuery table (flattened schema: one column per DICOM keyword).

    :param table_uri: ``bq://project.dataset.table``; the dataset must exist, the table is created if absent.
    :param write_disposition: ``WRITE_EMPTY`` (the API's default), ``WRITE_TRUNCATE`` or ``WRITE_APPEND``.
    :param filter_uri: optional ``gs://`` filter file restricting the export.
    :param include_source_store: add a ``SourceDicomStore`` column.
    """

    template_fields = (
        *HealthcareDicomOperationOperator.template_fields,
        "table_uri",
        "write_disposition",
        "filter_uri",
    )
    template_fields_renderers = {"table_uri": "py"}

    def __init__(
        self,
        *,
        table_uri: str,
        write_disposition: str = "WRITE_EMPTY",
        filter_uri: str | None = None,
        include_source_store: bool = False,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.table_uri = table_uri
        self.write_disposition = write_disposition
        self.filter_uri = filter_uri
        self.include_source_store = include_source_store

    api_method = "ExportDicomData"
    operation_kind = "export_bigquery"

    def lineage_datasets(self) -> tuple[list[DicomDataset], list[DicomDataset]]:
        inputs = [store_dataset(self.store_name())]
        inputs += [gcs_dataset(self.filter_uri, "filter_uri")] if self.filter_uri else []
        return inputs, [bigquery_dataset(self.table_uri)]

    def validate(self) -> None:
        parse_bigquery_table_uri(self.table_uri, "table_uri")
        if self.write_disposition not in WRITE_DISPOSITIONS:
            raise ValidationError("write_disposition", self.write_disposition, f"must be one of {WRITE_DISPOSITIONS}")
        if self.filter_uri:
            parse_gcs_uri(self.filter_uri, "filter_uri")

    def submit(self, hook: CloudHealthcareDicomHook, store_name: str) -> dict:
        return hook.export_dicom_to_bigquery(
            store_name=store_name,
            table_uri=self.table_uri,
            write_disposition=self.write_disposition,
            filter_uri=self.filter_uri or None,
            include_source_store=self.include_source_store,
        )


class HealthcareDicomDeidentifyOperator(HealthcareDicomOperationOperator):
    """De-identify a DICOM store, or the cohort a filter file names, into another store (``dicomStores.deidentify``).

    The destination must exist (create it with :class:`HealthcareEnsureDicomStoreOperator`) and be empty when
    the operation is submitted: each de-identification draws new UIDs, so a second one into the same store would
    add a second copy of every instance. A retry therefore re-attaches to its operation or evaluates it, and
    after a transient end it submits again only into a store that is still empty.

    :param destination_dicom_store_id: the store that receives the de-identified copies.
    :param destination_dataset_id: its dataset (default: the source's; the same project and location).
    :param filter_profile: ``ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE`` (default; DICOM PS3.15 Annex E),
        ``MINIMAL_KEEP_LIST_PROFILE``, ``KEEP_ALL_PROFILE`` or ``DEIDENTIFY_TAG_CONTENTS``.
    :param keep_tags: keep only these tags (keywords or 8-hex tags) instead of a profile.
    :param remove_tags: remove these tags instead of a profile.
    :param skip_id_redaction: keep the Study, Series and SOP Instance UIDs (default: replaced).
    :param text_redaction_mode: burnt-in text: ``REDACT_NO_TEXT`` (default), ``REDACT_SENSITIVE_TEXT``,
        ``REDACT_ALL_TEXT``.
    :param filter_uri: ``gs://`` filter file: only the studies, series or instances it lists.
    """

    template_fields = (
        *HealthcareDicomOperationOperator.template_fields,
        "destination_dataset_id",
        "destination_dicom_store_id",
        "filter_profile",
        "keep_tags",
        "remove_tags",
        "skip_id_redaction",
        "text_redaction_mode",
        "filter_uri",
    )
    api_method = "DeidentifyDicomStore"
    operation_kind = "deidentify"

    def lineage_datasets(self) -> tuple[list[DicomDataset], list[DicomDataset]]:
        inputs = [store_dataset(self.store_name())]
        inputs += [gcs_dataset(self.filter_uri, "filter_uri")] if self.filter_uri else []
        return inputs, [store_dataset(self.destination_store())]

    def __init__(
        self,
        *,
        destination_dicom_store_id: str,
        destination_dataset_id: str | None = None,
        filter_profile: str = "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
        keep_tags: Sequence[str] | str | None = None,
        remove_tags: Sequence[str] | str | None = None,
        skip_id_redaction: bool | str = False,
        text_redaction_mode: str = "REDACT_NO_TEXT",
        filter_uri: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.destination_dataset_id = destination_dataset_id
        self.destination_dicom_store_id = destination_dicom_store_id
        self.filter_profile = filter_profile
        self.keep_tags = keep_tags
        self.remove_tags = remove_tags
        self.skip_id_redaction = skip_id_redaction
        self.text_redaction_mode = text_redaction_mode
        self.filter_uri = filter_uri

    def destination_store(self) -> str:
        return resource_name(
            self.project_id,
            self.location,
            self.destination_dataset_id or self.dataset_id,
            self.destination_dicom_store_id,
        )

    @staticmethod
    def _tags(value: Sequence[str] | str | None) -> list[str] | None:
        """A list, or a rendered template's comma- or line-separated text."""
        if isinstance(value, str):
            return [t for t in re.split(r"[,\s]+", value) if t] or None
        return list(value) if value else None

    def config(self) -> dict:
        return deidentify_config(
            self.filter_profile,
            self._tags(self.keep_tags),
            self._tags(self.remove_tags),
            self.skip_id_redaction,
            self.text_redaction_mode,
        )

    def validate(self) -> None:
        if self.destination_store() == self.store_name():
            raise ValidationError(
                "destination_dicom_store_id", self.destination_dicom_store_id, "must differ from the source store"
            )
        self.config()
        if self.filter_uri:
            parse_gcs_uri(self.filter_uri, "filter_uri")

    def _submit(self, context: Any, hook: CloudHealthcareDicomHook, store: str) -> OperationStatus:
        destination = self.destination_store()
        try:
            held = hook.store_has_instances(store_name=destination)
        except HealthcareApiError as exc:
            if exc.http_status in (403, 404):
                raise AirflowFailException(
                    f"destination_dicom_store_id={self.destination_dicom_store_id!r}: the store {destination} must "
                    f"exist before de-identifying into it (the API does not create it): {exc.api_message}"
                ) from None
            raise
        if held:
            raise AirflowFailException(
                f"The destination store {destination} already holds instances. De-identification draws new "
                "UIDs, so sending the cohort again would add a second copy of each instance: empty it or name "
                "another destination."
            )
        return super()._submit(context, hook, store)

    def submit(self, hook: CloudHealthcareDicomHook, store_name: str) -> dict:
        return hook.deidentify_dicom_store(
            store_name=store_name,
            destination_store=self.destination_store(),
            config=self.config(),
            filter_uri=self.filter_uri or None,
        )

    def shareable_failures(self, entries: list[dict]) -> list[dict]:
        """A de-identification's errors name the source instances by their original UIDs, which are identifiers:
        they stay in Cloud Logging (the operation's ``logs_url``). The task log, the XCom and the report get the
        error code and its message with every UID masked."""
        return [
            {
                "source": f"instance #{n} (UIDs withheld; see the operation's logs)",
                "code": e["code"],
                "message": mask_uids(e["message"]),
            }
            for n, e in enumerate(entries, 1)
        ]

    def _finish(self, context: Any, hook: CloudHealthcareDicomHook, status: OperationStatus) -> Any:
        return {**super()._finish(context, hook, status), "destination_store": self.destination_store()}


class HealthcareEnsureDicomStoreOperator(HealthcareDicomStoreBaseOperator):
    """Make sure the DICOM store exists (``get`` first); create it, and its dataset, only if allowed.

    Returns the store's resource name. Each 403 names the permission missing and the role that grants it
    (:meth:`~dicom_pipelines.hooks.CloudHealthcareDicomHook.ensure_dicom_store`).

    :param stream_table_uri: ``bq://PROJECT.DATASET.TABLE`` to stream the store's metadata to (``streamConfigs``),
        so a filtered export can query it instead of exporting the whole store's metadata on every run.
    :param create_if_missing: create a missing dataset or store (True), or fail naming what is missing (False,
        for deployments whose identity holds only ``roles/healthcare.dicomStoreAdmin`` or less).
    :param bigquery_location: where the stream table's BigQuery dataset must be (created there when missing).
        Empty: the Healthcare dataset's region (:func:`~dicom_pipelines.bigquery.bigquery_location`), so PHI stays
        in it; another location must be named here to be accepted. The table itself is left to the Healthcare API
        (:func:`~dicom_pipelines.bigquery.check_stream_table`).
    """

    template_fields = (
        *HealthcareDicomStoreBaseOperator.template_fields,
        "stream_table_uri",
        "create_if_missing",
        "bigquery_location",
    )

    def __init__(
        self,
        *,
        stream_table_uri: str | None = None,
        create_if_missing: bool | str = True,
        bigquery_location: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.stream_table_uri = stream_table_uri
        self.create_if_missing = create_if_missing
        self.bigquery_location = bigquery_location

    def execute(self, context: Any) -> str:
        try:
            self.store_name()
            stream_table = (
                parse_bigquery_table_uri(self.stream_table_uri, "stream_table_uri") if self.stream_table_uri else None
            )
            create = parse_bool(self.create_if_missing, "create_if_missing")
        except ValidationError as exc:
            raise AirflowFailException(str(exc)) from None
        hook = self.get_hook()
        if stream_table:
            from dicom_pipelines.bigquery import bigquery_location, check_stream_table

            try:
                check_stream_table(
                    self.gcp_conn_id,
                    f"{stream_table.project}.{stream_table.dataset}.{stream_table.table}",
                    location=self.bigquery_location or bigquery_location(self.location),
                    create_dataset=create,
                    impersonation_chain=self.impersonation_chain,
                )
            except ValueError as exc:
                raise AirflowFailException(f"stream_table_uri={self.stream_table_uri!r}: {exc}") from None
        try:
            name = hook.ensure_dicom_store(
                project_id=self.project_id,
                location=self.location,
                dataset_id=self.dataset_id,
                dicom_store_id=self.dicom_store_id,
                stream_table_uri=self.stream_table_uri or None,
                create_if_missing=create,
            )
        except HealthcareApiError as exc:
            raise api_failure(exc) from None
        self.persist_store_link(context, hook, name)
        return name
