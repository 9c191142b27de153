"""The operation sensor in poke, reschedule and deferrable modes."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException, TaskDeferred

from dicom_pipelines.hooks import CloudHealthcareDicomHook
from dicom_pipelines.polling import PollPlanner
from dicom_pipelines.sensors import HealthcareOperationSensor
from dicom_pipelines.triggers import make_event
from tests.helpers import admin, make_context, start_import

pytestmark = pytest.mark.usefixtures("stack")


@pytest.fixture(autouse=True)
def reset_stack():
    yield
    admin("/admin/settings", {"latency_s": 0.0})


def test_poke_until_done():
    """poke() alone; the reschedule mode through Airflow is test_outcomes.py::test_sensor_in_reschedule_mode_*."""
    mode = "poke"
    name = start_import(4, latency=0.2)
    sensor = HealthcareOperationSensor(task_id="s", operation_name=name, mode=mode, poke_interval=0.1, deferrable=False)
    assert sensor.poke(make_context()) is False
    admin("/admin/settings", {"latency_s": 0.0})
    for _ in range(100):
        result = sensor.poke(make_context())
        if result:
            break
    assert result.is_done and result.xcom_value["success"] == 4


def test_deferrable_defers_then_completes():
    name = start_import(6, latency=0.3)
    sensor = HealthcareOperationSensor(
        task_id="s", operation_name=name, poke_interval=0.5, timeout=600, deferrable=True
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context())
    assert deferred.value.trigger.operation_name == name and not deferred.value.trigger.cancel_on_kill
    admin("/admin/settings", {"latency_s": 0.0})
    CloudHealthcareDicomHook().wait_for_operation(name=name, planner=PollPlanner(0.1, 0.2))
    assert sensor.execute_complete(make_context(), make_event("done", "", name))["success"] == 6


def test_partial_failure_policy_and_bad_name():
    name = start_import(2, extra={"x.txt": b"x"})
    CloudHealthcareDicomHook().wait_for_operation(name=name, planner=PollPlanner(0.1, 0.2))
    with pytest.raises(AirflowException, match="more than allowed"):
        HealthcareOperationSensor(task_id="s", operation_name=name, deferrable=False).poke(make_context())
    ok = HealthcareOperationSensor(task_id="s", operation_name=name, max_failures=1, deferrable=False)
    assert ok.poke(make_context()).xcom_value["failure"] == 1
    with pytest.raises(AirflowFailException, match="operation_name="):
        HealthcareOperationSensor(task_id="s", operation_name="ops/1", deferrable=True).execute(make_context())
