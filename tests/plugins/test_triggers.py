"""The trigger: serialize round-trip and every terminal event, against the running local stack."""

from __future__ import annotations

import asyncio
import importlib
import threading
import time

import pytest

from dicom_pipelines.hooks import CloudHealthcareDicomHook
from dicom_pipelines.polling import PollPlanner
from dicom_pipelines.responses import parse_operation
from dicom_pipelines.triggers import _ON_KILL_DECISIONS, EVENT_KEYS, HealthcareOperationTrigger
from tests.helpers import LOCATION, PROJECT, admin, start_import

pytestmark = pytest.mark.usefixtures("stack")


def first_event(trigger: HealthcareOperationTrigger, timeout: float = 60) -> dict:
    async def go():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(asyncio.wait_for(go(), timeout))


@pytest.fixture(autouse=True)
def reset_stack():
    yield
    admin("/admin/settings", {"latency_s": 0.0})
    admin("/admin/faults", {})


def test_serialize_round_trip_primitives_only():
    trigger = HealthcareOperationTrigger(
        "projects/p/locations/l/datasets/d/operations/1",
        "conn",
        ["sa@x"],
        "v1beta1",
        3.0,
        30.0,
        1_900_000_000.0,
        False,
        {"operation": "import", "store": "s"},
    )
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    tags = kwargs.pop("metric_tags")
    assert all(isinstance(v, (str, int, float, bool, list, type(None))) for v in kwargs.values())
    assert tags == {"operation": "import", "store": "s"}
    assert classpath == "dicom_pipelines.triggers.HealthcareOperationTrigger"


def test_done_success_event_has_the_fixed_schema():
    name = start_import(4, latency=0.1)
    event = first_event(HealthcareOperationTrigger(name, poll_interval=0.2, max_poll_interval=1))
    assert tuple(event) == EVENT_KEYS
    assert (event["status"], event["done"], event["success"], event["error_code"]) == ("done", True, 4, 0)
    assert all(isinstance(v, (str, int, bool)) for v in event.values())


def test_done_with_partial_failure_event():
    name = start_import(2, extra={"junk.dcm": b"junk"})
    event = first_event(HealthcareOperationTrigger(name, poll_interval=0.2))
    assert (event["status"], event["success"], event["failure"], event["error_code"]) == ("done", 2, 1, 3)
    assert (
        event["logs_url"].startswith("https://console.cloud.google.com/logs/")
        and name.rsplit("/", 1)[1] in event["logs_url"]
    )


def test_non_retryable_error_event():
    event = first_event(
        HealthcareOperationTrigger(
            f"projects/{PROJECT}/locations/{LOCATION}/datasets/none/operations/1", poll_interval=0.1
        )
    )
    assert event["status"] == "error" and event["http_status"] == 403


def test_transient_errors_are_retried_inside_the_loop():
    name = start_import(3, latency=0.2)
    admin("/admin/faults", {"operations.get": {"rate": 0.6, "code": 503}})
    event = first_event(HealthcareOperationTrigger(name, poll_interval=0.1, max_poll_interval=0.3))
    assert event["status"] == "done" and event["success"] == 3


def test_deadline_cancels_the_operation():
    name = start_import(10, latency=0.5)
    event = first_event(HealthcareOperationTrigger(name, poll_interval=0.1, deadline=time.time() + 1.0))
    assert event["status"] == "timeout" and "deadline" in event["message"] and "cancelled" in event["message"]
    for _ in range(50):
        status = parse_operation(CloudHealthcareDicomHook().get_operation(name=name))
        if status.done:
            break
        time.sleep(0.1)
    assert status.error_code == 1 and status.cancel_requested


def test_user_kill_cancels_but_triggerer_restart_does_not():
    name = start_import(10, latency=0.5)

    async def run_then_cancel():
        trigger = HealthcareOperationTrigger(name, poll_interval=0.1)
        task = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(0.5)
        task.cancel()  # what a triggerer restart does: no cancel of the operation
        try:
            await task
        except (asyncio.CancelledError, StopAsyncIteration):
            pass

    asyncio.run(run_then_cancel())
    assert not parse_operation(CloudHealthcareDicomHook().get_operation(name=name)).cancel_requested
    asyncio.run(HealthcareOperationTrigger(name, cancel_on_kill=False).on_kill())
    assert not parse_operation(CloudHealthcareDicomHook().get_operation(name=name)).cancel_requested
    asyncio.run(HealthcareOperationTrigger(name).on_kill())  # no task instance: its state cannot be read
    assert not parse_operation(CloudHealthcareDicomHook().get_operation(name=name)).cancel_requested


class FakeTI:
    dag_id, task_id, run_id = "d", "import_dicom", "r"

    def __init__(self, map_index: int = -1):
        self.map_index = map_index


@pytest.mark.parametrize(
    "map_index,state,cancelled",
    [
        (-1, "deferred", False),  # another triggerer took the trigger over: the task still waits for it
        (-1, "success", False),
        (-1, "failed", True),
        (-1, None, True),  # cleared
        (2, "deferred", False),  # a mapped task: Airflow keys it import_dicom_2
        (2, "failed", True),
    ],
)
def test_on_kill_cancels_only_when_the_task_is_no_longer_deferred(monkeypatch, map_index, state, cancelled):
    """Airflow's task-states lookup is replaced by its answer: the state a user's action or a handover leaves."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    key = "import_dicom" if map_index < 0 else f"import_dicom_{map_index}"
    asked = []

    def states(**kwargs):
        asked.append(kwargs)
        return {"r": {key: state}}

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(states))
    name = start_import(10, latency=0.5)
    trigger = HealthcareOperationTrigger(name)
    trigger.task_instance = FakeTI(map_index)  # type: ignore[assignment]
    asyncio.run(trigger.on_kill())
    assert parse_operation(CloudHealthcareDicomHook().get_operation(name=name)).cancel_requested is cancelled
    assert asked[0]["map_index"] == map_index


def test_an_operation_done_before_the_deadline_check_is_reported_done():
    """The triggerer was down past the deadline while the operation succeeded: that is a success, not a timeout."""
    name = start_import(2)
    CloudHealthcareDicomHook().wait_for_operation(name=name, planner=PollPlanner(0.05, 0.1))
    event = first_event(HealthcareOperationTrigger(name, poll_interval=0.1, deadline=time.time() - 60))
    assert (event["status"], event["success"]) == ("done", 2)


def test_deadline_leaves_the_operation_running_without_cancel_on_kill():
    name = start_import(10, latency=0.5)
    event = first_event(
        HealthcareOperationTrigger(name, poll_interval=0.1, deadline=time.time() + 0.5, cancel_on_kill=False)
    )
    assert event["status"] == "timeout" and "left running" in event["message"]
    assert not parse_operation(CloudHealthcareDicomHook().get_operation(name=name)).cancel_requested


def test_an_outage_longer_than_the_deadline_ends_in_timeout():
    name = start_import(5, latency=0.5)
    admin("/admin/faults", {"*": {"rate": 1.0, "code": 503}})
    event = first_event(
        HealthcareOperationTrigger(name, poll_interval=0.1, max_poll_interval=0.2, deadline=time.time() + 1.0)
    )
    admin("/admin/faults", {})
    assert event["status"] == "timeout" and "cancelling it failed too" in event["message"]
    assert event["polls"] >= 3


def test_on_kill_of_a_trigger_whose_cleared_task_deferred_again_cancels_its_operation(monkeypatch):
    """After a clear, the new try can defer on its own operation before this trigger's on_kill runs: the state is
    deferred again, but the operation the task waits for (its XCom) is another one."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    from airflow.sdk.execution_time.xcom import XCom

    monkeypatch.setattr(
        RuntimeTaskInstance, "get_task_states", staticmethod(lambda **kw: {"r": {"import_dicom": "deferred"}})
    )
    name = start_import(10, latency=0.5)
    for current, cancelled in ((name, False), ("projects/p/locations/l/datasets/d/operations/new", True)):
        asked = []

        def get_one(current=current, asked=asked, **kwargs):
            asked.append(kwargs)
            return current

        monkeypatch.setattr(XCom, "get_one", staticmethod(get_one))
        trigger = HealthcareOperationTrigger(name)
        trigger.task_instance = FakeTI()  # type: ignore[assignment]
        asyncio.run(trigger.on_kill())
        assert parse_operation(CloudHealthcareDicomHook().get_operation(name=name)).cancel_requested is cancelled
        assert asked[0]["key"] == "healthcare_operation_name" and asked[0]["task_id"] == "import_dicom"


def test_on_kill_cancelled_by_airflow_mid_lookup_still_cancels_a_failed_tasks_operation(monkeypatch):
    """Airflow cancels on_kill when it drops the trigger while the state lookup is still under way (two mapped
    instances marked at once, their lookups queued in one thread): the decision goes on, shielded."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    looked_up = threading.Event()

    def slow_states(**kwargs):
        looked_up.set()
        time.sleep(1.0)
        return {"r": {"import_dicom": "failed"}}

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(slow_states))
    name = start_import(10, latency=0.5)
    trigger = HealthcareOperationTrigger(name)
    trigger.task_instance = FakeTI()  # type: ignore[assignment]

    async def kill_then_drop():
        on_kill = asyncio.ensure_future(trigger.on_kill())
        await asyncio.to_thread(looked_up.wait, 10)
        on_kill.cancel()  # as the triggerer does when the trigger leaves it
        with pytest.raises(asyncio.CancelledError):
            await on_kill
        while _ON_KILL_DECISIONS:  # the shielded decision runs on in the loop
            await asyncio.sleep(0.05)

    asyncio.run(kill_then_drop())
    assert parse_operation(CloudHealthcareDicomHook().get_operation(name=name)).cancel_requested
