"""What a try does with its operation: on resume, at the deadline, on a kill, and after an ambiguous submission.

Pure functions, no I/O: the operators, the trigger, the sensor and the hook gather the facts (the task state
store's entry, the operation, the task instance's state, the dataset's operations) and carry out what these
functions decide. Fast tests and mutation testing (``make mutation``) reach every branch without the stack.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dicom_pipelines.outcomes import CANCELLED, TRANSIENT, classify
from dicom_pipelines.responses import OperationStatus, parse_time

SUBMIT, LOOKUP, GET = "submit", "lookup", "get"
ATTACH, EVALUATE = "attach", "evaluate"
DONE, TIMEOUT, WAIT = "done", "timeout", "wait"
ADOPT, FAIL = "adopt", "fail"

UNKNOWN_STATE = "<unknown>"
"""The task instance's state could not be read: never a reason to cancel."""

USER_ENDED_STATES = frozenset({"failed", "restarting", "removed", "upstream_failed", "skipped", "up_for_retry"})
"""States a user (or Airflow on a user's behalf) puts a running task in before its process is stopped: mark
failed, clear (``restarting``), a removed task. ``running`` is absent on purpose: a graceful worker SIGTERM and
``execution_timeout`` stop a task that is still running, and neither is a user's kill."""

KEEP_RUNNING_TRIGGER_STATES = frozenset({"deferred", "success", UNKNOWN_STATE})
"""A trigger's ``on_kill`` in these states leaves the operation running: ``deferred`` means another triggerer
took the trigger over (the task still waits for it), ``success`` means a user declared the work done."""


def generation(max_tries: Any) -> int:
    """Which clear of the task a try belongs to: Airflow raises ``max_tries`` on a clear, never on a retry.

    ``max_tries`` itself is recorded, not ``max_tries - retries``: ``retries`` comes from the DAG as parsed now,
    so a deploy that changes it would make a running operation look like another generation's.
    """
    return max_tries if isinstance(max_tries, int) and not isinstance(max_tries, bool) else 0


def resume_step(entry: Any, current_generation: int) -> str:
    """From the task state store's entry: ``submit`` (nothing of this generation), ``lookup`` (an earlier try
    started submitting but recorded no name) or ``get`` (an earlier try's operation is named)."""
    if not isinstance(entry, Mapping) or entry.get("generation") != current_generation:
        return SUBMIT
    if entry.get("name"):
        return GET
    if entry.get("submit_started") is None:
        return SUBMIT
    return LOOKUP


def resumed_operation(status: OperationStatus | None) -> str:
    """What to do with an earlier try's operation: ``submit`` (gone, or a transient end, where resubmitting is the
    fix), ``attach`` (still running) or ``evaluate`` (finished: its outcome is final).

    A cancel found by a try of the same generation is final too. A clear starts a new generation, and this
    project cancels only on a user's kill, which leaves no retry: the cancel came from the deadline or from
    another client, and submitting again would undo what that client did.
    """
    if status is None:
        return SUBMIT
    if not status.done:
        return ATTACH
    return SUBMIT if classify(status) == TRANSIENT else EVALUATE


def cancelled_by_deadline(status: OperationStatus, deadline: float | None, now: float) -> bool:
    """Whether a cancelled operation was cancelled by its deadline (ended at or after it)."""
    if deadline is None or not status.done or classify(status) != CANCELLED:
        return False
    ended = parse_time(status.end_time)
    return (ended.timestamp() if ended else now) >= deadline


def at_deadline(status: OperationStatus | None, deadline: float | None, now: float) -> str:
    """After a poll: ``done`` (whatever the clock says, a finished operation is evaluated as finished),
    ``timeout`` (the deadline passed and the operation, as last seen, is not done) or ``wait``."""
    if status is not None and status.done:
        return DONE
    if deadline is not None and now >= deadline:
        return TIMEOUT
    return WAIT


def after_cancel(status: OperationStatus | None) -> str:
    """The operation read again after cancelling it at the deadline: it may have finished meanwhile.

    ``done`` when it finished on its own (any end but CANCELLED), else ``timeout``.
    """
    if status is not None and status.done and classify(status) != CANCELLED:
        return DONE
    return TIMEOUT


def trigger_may_cancel(
    cancel_on_kill: bool, task_state: str | None, operation: str, current_operation: str | None = None
) -> bool:
    """Whether a trigger's ``on_kill`` cancels its ``operation``.

    Airflow 3.3 calls ``on_kill`` for a user's action (mark failed, mark success, clear) and also when this
    triggerer finds that the trigger was handed over to another triggerer (its loop stalled, or its heartbeat
    failed). The task's state tells them apart, as the Google provider's triggers do (``safe_to_cancel``): still
    ``deferred`` is a handover. ``None`` (no state) is a cleared task. A cleared task can be ``deferred`` again
    by then, waiting for the operation its new try submitted: ``current_operation`` (the one the task waits for
    now, None when unknown) differing from this trigger's ``operation`` shows that.
    """
    if not cancel_on_kill:
        return False
    if task_state == "deferred":
        return current_operation is not None and current_operation != operation
    return task_state not in KEEP_RUNNING_TRIGGER_STATES


def worker_kill_may_cancel(cancel_on_kill: bool, task_state: str | None) -> bool:
    """Whether the operator's ``on_kill`` (in the worker) cancels the operation: only after a user ended the task.

    Airflow calls it on any SIGTERM (a graceful worker shutdown too) and at ``execution_timeout``; the task is
    still ``running`` then, and the next try re-attaches to the operation.
    """
    return cancel_on_kill and task_state in USER_ENDED_STATES


def task_state_key(task_id: str, map_index: int | None) -> str:
    """How Airflow's task-states lookup keys a task instance: mapped ones as ``<task_id>_<map_index>``."""
    return f"{task_id}_{map_index}" if map_index is not None and map_index >= 0 else task_id


def defer_timeout(deadline: float | None, now: float, execution_deadline: float | None, grace: float) -> float | None:
    """Seconds Airflow lets the deferral last, since Airflow 3.3 does not apply ``execution_timeout`` to a deferral.

    ``execution_deadline`` (the try's start plus ``execution_timeout``) ends it as it would end a try that waits in
    the worker: the task fails with a timeout, Airflow retries it as configured, and the retry re-attaches (no
    cancel, as for a non-deferrable try). Otherwise the trigger's own ``deadline`` ends the wait (it cancels as
    configured and reports a timeout), and Airflow's timeout, ``grace`` later, is only the backstop for a trigger
    that cannot run.
    """
    ends = [t for t in (deadline + grace if deadline is not None else None, execution_deadline) if t is not None]
    if not ends:
        return None
    return max(0.0, min(ends) - now)


@dataclass(frozen=True)
class Adoption:
    action: str
    """``adopt`` (``name`` is ours), ``submit`` (the request never started an operation) or ``fail``."""
    name: str = ""
    candidates: tuple[str, ...] = ()
    neighbours: tuple[str, ...] = ()


def _created(op: Mapping[str, Any]) -> float | None:
    created = parse_time((op.get("metadata") or {}).get("createTime", ""))
    return created.timestamp() if created else None


def same_method(ops: Iterable[Mapping[str, Any]], api_method: str) -> list[Mapping[str, Any]]:
    return [op for op in ops if (op.get("metadata") or {}).get("apiMethodName", "").endswith("." + api_method)]


def adoption(
    ops: Iterable[Mapping[str, Any]],
    *,
    api_method: str,
    since: float,
    until: float,
    skew: float,
    quiet: float,
    before: Iterable[Mapping[str, Any]] | None = None,
) -> Adoption:
    """Decide, from the dataset's operations, whether an ambiguous submission started an operation, and which.

    Operations name neither their store nor their request, so nothing proves one is ours; what can be shown is
    that no other client could have started it. ``before`` is the dataset's listing taken just before the request:
    its operations are not ours, whatever the clocks say. Candidates are the other operations of ``api_method``
    created between ``since`` and ``until`` (our clock), widened by ``skew`` for a server clock that differs from
    ours. One candidate is adopted only when nothing else of the method was going on: no other new operation, and
    none still running when the request was sent (or, without ``before``, none created within ``quiet`` seconds
    of the window). Otherwise the task fails and names them all: in a dataset where several clients, or this
    project's own concurrent runs, submit the same method at once, the candidate could be another's. No candidate:
    the request never started an operation, and it may be sent again.
    """
    lo, hi = since - skew, until + skew
    known: set[str] = set()
    neighbours: list[str] = []
    if before is not None:
        for op in same_method(before, api_method):
            known.add(str(op.get("name")))
            if not op.get("done"):
                neighbours.append(str(op.get("name")))
    candidates = []
    for op in same_method(ops, api_method):
        name, created = str(op.get("name")), _created(op)
        if name in known or created is None:
            continue
        if lo <= created <= hi:
            candidates.append(name)
        elif before is not None or lo - quiet <= created <= hi + quiet:
            neighbours.append(name)
    if not candidates:
        return Adoption(SUBMIT)
    if len(candidates) == 1 and not neighbours:
        return Adoption(ADOPT, candidates[0], tuple(candidates))
    return Adoption(FAIL, "", tuple(candidates), tuple(neighbours))


def ambiguous_message(found: Adoption, api_method: str, what: str) -> str:
    """Why the task refuses to adopt or resubmit, naming every operation that could be its own."""
    others = (
        f" and {len(found.neighbours)} more were running or started around it ({', '.join(found.neighbours)})"
        if found.neighbours
        else ""
    )
    return (
        f"{what}, and {len(found.candidates)} {api_method} operation(s) started in that window could be ours "
        f"({', '.join(found.candidates)}){others}. Operations do not name their request, so none can be shown to be "
        "ours: not submitting again, to avoid a duplicate. Check them (gcloud healthcare operations describe), then "
        "mark this task success if one did the work, or clear it to submit anew."
    )
