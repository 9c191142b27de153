"""Sensor for a Healthcare operation started elsewhere ("submit in one task, wait in another").

The sensor does not own the operation: it never submits one, and by default never cancels one,
not even at its timeout. Every finished outcome is final for it (a retry would see the same
operation), so a failure is raised without retry; a timeout raises ``AirflowSensorTimeout``, which
``soft_fail`` turns into a skip.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout, conf
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from dicom_pipelines.decisions import worker_kill_may_cancel
from dicom_pipelines.outcomes import (
    FailurePolicy,
    api_failure,
    classify,
    failure_message,
    log_finished,
    operation_result,
)
from dicom_pipelines.responses import HealthcareApiError, OperationStatus, parse_operation
from dicom_pipelines.settings import GCP_CONN_ID
from dicom_pipelines.triggers import HealthcareOperationTrigger, task_instance_state

if TYPE_CHECKING:
    from dicom_pipelines.hooks import CloudHealthcareDicomHook

_OPERATION_RE = r"^projects/[^/]+/locations/[^/]+/datasets/[^/]+/operations/[^/]+\Z"


class HealthcareOperationSensor(BaseSensorOperator):
    """Wait for a Cloud Healthcare long-running operation; works in poke, reschedule and deferrable modes.

    :param operation_name: full operation name, typically ``{{ ti.xcom_pull('submit')['operation_name'] }}``.
    :param max_failures: failed instances tolerated (count); see the operators.
    :param max_failure_ratio: failed instances tolerated (fraction).
    :param deferrable: wait in the triggerer; ``poke_interval`` is then the trigger's first poll interval.
    :param max_poll_interval: cap of the trigger's backoff.
    :param cancel_on_kill: cancel the operation on a user kill and at the timeout (default False: it is
        not this task's operation).
    """

    template_fields: Sequence[str] = ("operation_name", "gcp_conn_id", "impersonation_chain")

    def __init__(
        self,
        *,
        operation_name: str,
        gcp_conn_id: str = GCP_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        api_version: str = "v1",
        max_failures: int | str | None = None,
        max_failure_ratio: float | str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_poll_interval: float = 60.0,
        cancel_on_kill: bool = False,
        failed_sources_to_log: int = 10,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.operation_name = operation_name
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.api_version = api_version
        self.policy = FailurePolicy.from_values(max_failures, max_failure_ratio)
        self.deferrable = deferrable
        self.max_poll_interval = max_poll_interval
        self.cancel_on_kill = cancel_on_kill
        self.failed_sources_to_log = failed_sources_to_log
        self._ti: Any = None

    def _hook(self) -> CloudHealthcareDicomHook:
        from dicom_pipelines.hooks import CloudHealthcareDicomHook

        return CloudHealthcareDicomHook(self.gcp_conn_id, self.impersonation_chain, self.api_version)

    def _check(self) -> None:
        if not isinstance(self.operation_name, str) or not re.match(_OPERATION_RE, self.operation_name):
            raise AirflowFailException(
                f"operation_name={self.operation_name!r} is invalid: must be "
                "projects/P/locations/L/datasets/D/operations/ID"
            )

    def _status(self, hook: CloudHealthcareDicomHook) -> OperationStatus:
        """The operation now; 429/5xx were retried by the hook, other API errors are final."""
        try:
            return parse_operation(hook.get_operation(name=self.operation_name))
        except HealthcareApiError as exc:
            raise api_failure(exc) from None

    def _evaluate(self, hook: CloudHealthcareDicomHook, status: OperationStatus) -> dict[str, Any]:
        log_finished(self.log, status, hook.failed_entries(status=status, limit=self.failed_sources_to_log))
        message = failure_message(status, classify(status), self.policy, resubmits=False)
        if message:
            raise AirflowFailException(message)
        return operation_result(status)

    def execute(self, context: Any) -> Any:
        self._check()
        self._ti = context.get("ti")
        if not self.deferrable:
            return super().execute(context)
        hook = self._hook()
        status = self._status(hook)
        if status.done:
            return self._evaluate(hook, status)
        timeout = self.timeout.total_seconds() if isinstance(self.timeout, dt.timedelta) else float(self.timeout)
        self.defer(
            trigger=HealthcareOperationTrigger(
                operation_name=self.operation_name,
                gcp_conn_id=self.gcp_conn_id,
                impersonation_chain=self.impersonation_chain,
                api_version=self.api_version,
                poll_interval=float(self.poke_interval),
                max_poll_interval=self.max_poll_interval,
                deadline=time.time() + timeout,
                cancel_on_kill=self.cancel_on_kill,
            ),
            method_name="execute_complete",
        )

    def poke(self, context: Any) -> PokeReturnValue | bool:
        hook = self._hook()
        status = self._status(hook)
        if not status.done:
            self.log.info(
                "Operation %s: %d succeeded, %d failed, %d pending",
                status.name,
                status.success,
                status.failure,
                status.pending,
            )
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._evaluate(hook, status))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if event["status"] == "timeout":
            raise AirflowSensorTimeout(event["message"])
        if event["status"] != "done":
            raise AirflowFailException(f"Waiting for operation {event['operation_name']} failed: {event['message']}")
        hook = self._hook()
        return self._evaluate(hook, self._status(hook))

    def on_kill(self) -> None:
        """Cancel only with ``cancel_on_kill`` and after a user ended the task; never raises (a signal handler)."""
        if not self.cancel_on_kill:
            return
        try:
            state = task_instance_state(self)
            if worker_kill_may_cancel(self.cancel_on_kill, state):
                self._hook().cancel_operation(name=self.operation_name)
                self.log.info("Cancelled operation %s because a user ended the task (%s)", self.operation_name, state)
        except Exception as exc:  # noqa: BLE001 - on_kill runs inside a signal handler
            self.log.error("Could not cancel operation %s: %s: %s", self.operation_name, type(exc).__name__, exc)
