"""Sensor for a Healthcare operation started elsewhere ("submit in one task, wait in another")."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any, Sequence

from airflow.configuration import conf
from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from dicom_pipelines.hooks import CloudHealthcareDicomHook, parse_operation
from dicom_pipelines.operators import FailurePolicy, evaluate_operation
from dicom_pipelines.triggers import HealthcareOperationTrigger

_OPERATION_RE = r"^projects/[^/]+/locations/[^/]+/datasets/[^/]+/operations/[^/]+$"


class HealthcareOperationSensor(BaseSensorOperator):
    """Wait for a Cloud Healthcare long-running operation; works in poke, reschedule and deferrable modes.

    :param operation_name: full operation name, typically ``{{ ti.xcom_pull('submit')['operation_name'] }}``.
    :param max_failures: failed instances tolerated (count); see the operators.
    :param max_failure_ratio: failed instances tolerated (fraction).
    :param deferrable: wait in the triggerer; ``poke_interval`` is then the trigger's first poll interval.
    :param max_poll_interval: cap of the trigger's backoff.
    """

    template_fields: Sequence[str] = ("operation_name", "impersonation_chain")

    def __init__(self, *, operation_name: str, gcp_conn_id: str = "google_cloud_default",
                 impersonation_chain: str | Sequence[str] | None = None, api_version: str = "v1",
                 max_failures: int | None = None, max_failure_ratio: float | None = None,
                 deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
                 max_poll_interval: float = 60.0, cancel_on_kill: bool = False, **kwargs: Any):
        super().__init__(**kwargs)
        self.operation_name = operation_name
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = impersonation_chain
        self.api_version = api_version
        self.policy = FailurePolicy.from_values(max_failures, max_failure_ratio)
        self.deferrable = deferrable
        self.max_poll_interval = max_poll_interval
        self.cancel_on_kill = cancel_on_kill

    def _hook(self) -> CloudHealthcareDicomHook:
        return CloudHealthcareDicomHook(self.gcp_conn_id, self.impersonation_chain, self.api_version)

    def _check(self) -> None:
        if not isinstance(self.operation_name, str) or not re.match(_OPERATION_RE, self.operation_name):
            raise AirflowFailException(
                f"operation_name={self.operation_name!r} is invalid: must be "
                "projects/P/locations/L/datasets/D/operations/ID")

    def execute(self, context: Any) -> Any:
        self._check()
        if not self.deferrable:
            return super().execute(context)
        hook = self._hook()
        status = parse_operation(hook.get_operation(self.operation_name))
        if status.done:
            return evaluate_operation(status, self.policy, hook, self.log)
        timeout = self.timeout.total_seconds() if isinstance(self.timeout, dt.timedelta) else float(self.timeout)
        self.defer(
            trigger=HealthcareOperationTrigger(
                operation_name=self.operation_name, gcp_conn_id=self.gcp_conn_id,
                impersonation_chain=self.impersonation_chain, api_version=self.api_version,
                poll_interval=float(self.poke_interval), max_poll_interval=self.max_poll_interval,
                deadline=time.time() + timeout, cancel_on_kill=self.cancel_on_kill),
            method_name="execute_complete",
        )

    def poke(self, context: Any) -> PokeReturnValue | bool:
        hook = self._hook()
        status = parse_operation(hook.get_operation(self.operation_name))
        if not status.done:
            self.log.info("Operation %s: %d succeeded, %d failed, %d pending", status.name, status.success,
                          status.failure, status.pending)
            return False
        return PokeReturnValue(is_done=True, xcom_value=evaluate_operation(status, self.policy, hook, self.log))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if event["status"] != "done":
            raise AirflowException(f"Waiting for operation {event['operation_name']} failed: {event['message']}")
        hook = self._hook()
        return evaluate_operation(parse_operation(hook.get_operation(event["operation_name"])), self.policy, hook,
                                  self.log)
