"""Trigger that polls one Cloud Healthcare long-running operation until it is done.

It only polls: no submission, no result interpretation (the operator does that). Every event has
the same flat schema of primitives, see :data:`EVENT_KEYS`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from dicom_pipelines.decisions import (
    DONE,
    UNKNOWN_STATE,
    after_cancel,
    at_deadline,
    task_state_key,
    trigger_may_cancel,
)
from dicom_pipelines.metrics import progress_line, record_cancel
from dicom_pipelines.outcomes import deadline_note
from dicom_pipelines.polling import PollPlanner
from dicom_pipelines.responses import HealthcareApiError, OperationStatus, parse_operation
from dicom_pipelines.settings import GCP_CONN_ID

if TYPE_CHECKING:
    from dicom_pipelines.hooks import CloudHealthcareDicomAsyncHook

EVENT_KEYS = (
    "status",
    "message",
    "operation_name",
    "done",
    "success",
    "failure",
    "pending",
    "logs_url",
    "error_code",
    "error_message",
    "http_status",
    "polls",
)
"""``status`` is one of: ``done`` (the operation finished, successfully or not: read ``error_code``),
``timeout`` (the deadline passed with the operation not done; cancelled if ``cancel_on_kill``),
``error`` (a non-retryable API error while polling)."""


def make_event(
    status: str,
    message: str,
    operation_name: str,
    op: OperationStatus | None = None,
    http_status: int = 0,
    polls: int = 0,
) -> dict[str, Any]:
    return {
        "status": status,
        "message": message,
        "operation_name": operation_name,
        "done": bool(op.done) if op else False,
        "success": op.success if op else 0,
        "failure": op.failure if op else 0,
        "pending": op.pending if op else 0,
        "logs_url": op.logs_url if op else "",
        "error_code": op.error_code if op else 0,
        "error_message": op.error_message if op else "",
        "http_status": http_status,
        "polls": polls,
    }


class HealthcareOperationTrigger(BaseTrigger):
    """Poll ``operations.get`` with backoff and progress prediction until the operation is done.

    :param operation_name: full operation resource name.
    :param gcp_conn_id: Airflow connection for Google Cloud.
    :param impersonation_chain: service account(s) to impersonate.
    :param api_version: ``v1`` or ``v1beta1``; use the version that started the operation.
    :param poll_interval: first and smallest wait between polls, in seconds.
    :param max_poll_interval: cap of the backoff when no progress prediction is possible.
    :param deadline: absolute epoch seconds. The first poll after it that does not find the operation
        done sends a ``timeout`` event. None means no deadline.
    :param cancel_on_kill: whether this trigger may cancel the operation: at the deadline, and when a user
        kills or clears the deferred task (never on a triggerer restart). False leaves it running always.
    :param metric_tags: the tags of the cancels it counts (:mod:`dicom_pipelines.metrics`): operation kind, store.
    """

    def __init__(
        self,
        operation_name: str,
        gcp_conn_id: str = GCP_CONN_ID,
        impersonation_chain: str | Sequence[str] | None = None,
        api_version: str = "v1",
        poll_interval: float = 2.0,
        max_poll_interval: float = 60.0,
        deadline: float | None = None,
        cancel_on_kill: bool = True,
        metric_tags: dict[str, str] | None = None,
    ):
        super().__init__()
        self.operation_name = operation_name
        self.gcp_conn_id = gcp_conn_id
        self.impersonation_chain = (
            list(impersonation_chain) if isinstance(impersonation_chain, (list, tuple)) else impersonation_chain
        )
        self.api_version = api_version
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.deadline = float(deadline) if deadline is not None else None
        self.cancel_on_kill = bool(cancel_on_kill)
        self.metric_tags = {str(k): str(v) for k, v in (metric_tags or {}).items()}
        self._hook: CloudHealthcareDicomAsyncHook | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "operation_name": self.operation_name,
                "gcp_conn_id": self.gcp_conn_id,
                "impersonation_chain": self.impersonation_chain,
                "api_version": self.api_version,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "deadline": self.deadline,
                "cancel_on_kill": self.cancel_on_kill,
                "metric_tags": self.metric_tags,
            },
        )

    def get_hook(self) -> CloudHealthcareDicomAsyncHook:
        if self._hook is None:
            from dicom_pipelines.hooks import CloudHealthcareDicomAsyncHook

            self._hook = CloudHealthcareDicomAsyncHook(self.gcp_conn_id, self.impersonation_chain, self.api_version)
        return self._hook

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = self.get_hook()
        planner = PollPlanner(self.poll_interval, self.max_poll_interval)
        polls = 0
        last_pending: int | None = None
        name = self.operation_name
        try:
            while True:
                polls += 1
                try:
                    status = parse_operation(await hook.get_operation(name=name))
                except HealthcareApiError as exc:
                    if not exc.retryable:
                        yield TriggerEvent(make_event("error", str(exc), name, None, exc.http_status, polls))
                        return
                    delay = planner.retry_delay()
                    self.log.warning("Transient error polling %s: %s; retrying in %.1fs", name, exc, delay)
                else:
                    if status.done:
                        yield TriggerEvent(make_event("done", f"operation {name} is done", name, status, 200, polls))
                        return
                    delay = planner.next_delay(time.time(), status.processed, status.pending, status.created_at)
                    if status.pending != last_pending:
                        self.log.info("%s", progress_line(name, status, planner.remaining, time.time()))
                        last_pending = status.pending
                if self.deadline is not None and time.time() >= self.deadline:
                    yield TriggerEvent(await self._deadline_event(hook, polls))
                    return
                await asyncio.sleep(self._clip(delay))
        finally:
            await hook.close()

    def _clip(self, delay: float) -> float:
        if self.deadline is None:
            return delay
        return max(0.0, min(delay, self.deadline - time.time()))

    async def _deadline_event(self, hook: CloudHealthcareDicomAsyncHook, polls: int) -> dict[str, Any]:
        """The deadline passed after a poll that found the operation running (or the API unreachable).

        One more look first: an operation that finished since the last poll is reported done, not timed out.
        After a cancel, it is read again, since it may have finished on its own meanwhile.
        """
        name = self.operation_name
        status = await self._read(hook)
        if at_deadline(status, None, time.time()) == DONE:
            return make_event("done", f"operation {name} is done", name, status, 200, polls)
        error: HealthcareApiError | None = None
        if self.cancel_on_kill:
            try:
                await hook.cancel_operation(name=name)
                record_cancel(self.metric_tags, "deadline")
            except HealthcareApiError as exc:
                error = exc
            status = await self._read(hook) or status
            if after_cancel(status) == DONE:
                return make_event("done", f"operation {name} is done", name, status, 200, polls)
        note = deadline_note(self.cancel_on_kill, error)
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.deadline or 0))
        return make_event(
            "timeout", f"operation {name} was not done by its deadline {when}; {note}", name, status, 0, polls
        )

    async def _read(self, hook: CloudHealthcareDicomAsyncHook) -> OperationStatus | None:
        try:
            return parse_operation(await hook.get_operation(name=self.operation_name))
        except HealthcareApiError:
            return None

    async def on_kill(self) -> None:
        """Cancel the operation when a user ended the task, never when the trigger moved to another triggerer.

        Airflow 3.3 calls this for a user's action (mark failed, mark success, clear) and also on a triggerer
        whose triggers were handed over to another (its event loop stalled, or its heartbeat failed). The task
        instance's state tells them apart (:func:`~dicom_pipelines.decisions.trigger_may_cancel`); when it cannot
        be read, the operation is left running.

        The decision runs shielded: Airflow cancels ``on_kill`` itself when it drops the trigger while the lookup
        is still under way (two mapped instances marked at once, a slow API server), and a half-made decision
        would leave a failed task's operation running. (The lookups run one after another in asgiref's shared
        thread, as the Google provider's triggers make theirs: the triggerer's channel to the API server is one.)
        """
        if not self.cancel_on_kill:
            return
        decision = asyncio.ensure_future(self._cancel_if_user_ended())
        _ON_KILL_DECISIONS.add(decision)
        decision.add_done_callback(_ON_KILL_DECISIONS.discard)
        await asyncio.shield(decision)

    async def _cancel_if_user_ended(self) -> None:
        from asgiref.sync import sync_to_async

        state = await sync_to_async(task_instance_state)(self)
        current = await sync_to_async(task_operation)(self) if state == "deferred" else None
        if not trigger_may_cancel(self.cancel_on_kill, state, self.operation_name, current):
            self.log.info("Task is %s: operation %s is left running", state, self.operation_name)
            return
        from dicom_pipelines.hooks import CloudHealthcareDicomAsyncHook

        hook = CloudHealthcareDicomAsyncHook(self.gcp_conn_id, self.impersonation_chain, self.api_version)
        try:
            await hook.cancel_operation(name=self.operation_name)
            self.log.info("Cancelled operation %s because a user ended the task (%s)", self.operation_name, state)
            record_cancel(self.metric_tags, "user")
        except HealthcareApiError as exc:
            self.log.error("Could not cancel operation %s: %s", self.operation_name, exc)
        finally:
            await hook.close()


_ON_KILL_DECISIONS: set[asyncio.Future] = set()
"""The shielded on_kill decisions still running: the event loop keeps only weak references to tasks."""


def task_instance_state(holder: Any) -> str | None:
    """The state of the task instance ``holder`` runs for (a trigger's ``task_instance``, an operator's ``_ti``).

    :data:`~dicom_pipelines.decisions.UNKNOWN_STATE` when it cannot be read. The SDK exposes only the TaskInstance
    protocol; the runtime class is what the Google provider's own triggers use for this lookup.
    """
    ti = getattr(holder, "task_instance", None) or getattr(holder, "_ti", None)
    if ti is None:
        return UNKNOWN_STATE
    try:
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        map_index = getattr(ti, "map_index", None)
        states = RuntimeTaskInstance.get_task_states(
            dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=map_index
        )
        state = states[ti.run_id][task_state_key(ti.task_id, map_index)]
    except Exception as exc:  # noqa: BLE001 - without the state, nothing is cancelled
        logging.getLogger(__name__).warning("Could not read the task's state (%s: %s)", type(exc).__name__, exc)
        return UNKNOWN_STATE
    return getattr(state, "value", state)


OPERATION_XCOM_KEY = "healthcare_operation_name"
"""The operation the task instance waits for now: each try pushes it before deferring."""


def task_operation(holder: Any) -> str | None:
    """The operation the task instance of ``holder`` (a trigger) waits for now, from XCom; None when unknown."""
    ti = getattr(holder, "task_instance", None)
    if ti is None:
        return None
    try:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_one(
            key=OPERATION_XCOM_KEY,
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            run_id=ti.run_id,
            map_index=getattr(ti, "map_index", None),
        )
    except Exception as exc:  # noqa: BLE001 - without it, a deferred task is taken for a handover
        logging.getLogger(__name__).warning("Could not read the task's operation (%s: %s)", type(exc).__name__, exc)
        return None
    return value if isinstance(value, str) else None
