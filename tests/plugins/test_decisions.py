"""What a try does with its operation, decided without the stack (also what ``make mutation`` runs)."""

from __future__ import annotations

import datetime as dt

import pytest

from dicom_pipelines.decisions import (
    ADOPT,
    ATTACH,
    DONE,
    EVALUATE,
    FAIL,
    GET,
    LOOKUP,
    SUBMIT,
    TIMEOUT,
    UNKNOWN_STATE,
    WAIT,
    Adoption,
    adoption,
    after_cancel,
    ambiguous_message,
    at_deadline,
    cancelled_by_deadline,
    defer_timeout,
    generation,
    resume_step,
    resumed_operation,
    same_method,
    task_state_key,
    trigger_may_cancel,
    worker_kill_may_cancel,
)
from dicom_pipelines.responses import parse_operation

T0 = 1_800_000_000.0


def stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def op(done: bool = True, code: int = 0, success: int = 1, ended: float | None = None):
    raw: dict = {"name": "projects/p/locations/l/datasets/d/operations/1", "done": done, "metadata": {}}
    raw["metadata"]["counter"] = {"success": str(success)} if success else {}
    raw["metadata"]["createTime"] = stamp(T0)
    if ended is not None:
        raw["metadata"]["endTime"] = stamp(ended)
    if code:
        raw["error"] = {"code": code, "message": "m"}
    return parse_operation(raw)


def listed(name: str, created: float, method: str = "ImportDicomData") -> dict:
    return {
        "name": name,
        "metadata": {
            "apiMethodName": f"google.cloud.healthcare.v1.dicom.DicomService.{method}",
            "createTime": stamp(created),
        },
    }


# --- generations and resume ----------------------------------------------------------------------


def test_generation_is_max_tries_itself():
    assert generation(4) == 4
    assert generation(None) == 0
    assert generation(True) == 0
    assert generation("4") == 0


def test_changing_retries_in_a_deploy_keeps_the_generation():
    """max_tries - retries would move from 2 to 0 when a deploy sets retries 0: a second, concurrent import."""
    recorded = {"generation": generation(2), "name": "op"}
    assert resume_step(recorded, generation(2)) == GET


@pytest.mark.parametrize(
    "entry,step",
    [
        (None, SUBMIT),
        ("garbage", SUBMIT),
        ({"generation": 2, "name": "op"}, GET),
        ({"generation": 3, "name": "op"}, SUBMIT),  # a clear: new generation
        ({"generation": 2, "submit_started": T0}, LOOKUP),
        ({"generation": 2, "submit_started": 0.0}, LOOKUP),
        ({"generation": 2}, SUBMIT),
        ({"generation": 2, "name": "", "submit_started": T0}, LOOKUP),
    ],
)
def test_resume_step(entry, step):
    assert resume_step(entry, 2) == step


@pytest.mark.parametrize(
    "status,action",
    [
        (None, SUBMIT),  # 404: gone
        (op(done=False), ATTACH),
        (op(), EVALUATE),
        (op(code=3, success=1), EVALUATE),  # partial: final
        (op(code=5, success=0), EVALUATE),  # empty: final
        (op(code=7, success=0), EVALUATE),  # permission: final
        (op(code=1), EVALUATE),  # cancelled by another client or the deadline: final within a generation
        (op(code=10), SUBMIT),  # transient: resubmitting is the fix
        (op(code=14), SUBMIT),
    ],
)
def test_resumed_operation(status, action):
    assert resumed_operation(status) == action


# --- deadline ------------------------------------------------------------------------------------


def test_at_deadline_a_finished_operation_is_done_whatever_the_clock():
    assert at_deadline(op(), T0, T0 + 100) == DONE
    assert at_deadline(op(done=False), T0, T0) == TIMEOUT
    assert at_deadline(op(done=False), T0, T0 - 0.001) == WAIT
    assert at_deadline(op(done=False), None, T0 + 1e9) == WAIT
    assert at_deadline(None, T0, T0 + 1) == TIMEOUT
    assert at_deadline(None, T0, T0 - 1) == WAIT


def test_after_cancel_an_operation_that_finished_meanwhile_is_done():
    assert after_cancel(op()) == DONE
    assert after_cancel(op(code=3)) == DONE
    assert after_cancel(op(code=1)) == TIMEOUT
    assert after_cancel(op(done=False)) == TIMEOUT
    assert after_cancel(None) == TIMEOUT


def test_cancelled_by_deadline():
    assert cancelled_by_deadline(op(code=1, ended=T0 + 10), T0 + 10, T0) is True
    assert cancelled_by_deadline(op(code=1, ended=T0 + 9), T0 + 10, T0 + 100) is False
    assert cancelled_by_deadline(op(code=1), T0 + 10, T0 + 10) is True  # no endTime: now
    assert cancelled_by_deadline(op(code=1), T0 + 10, T0 + 9) is False
    assert cancelled_by_deadline(op(code=1, ended=T0 + 20), None, T0) is False
    assert cancelled_by_deadline(op(code=0, ended=T0 + 20), T0 + 10, T0) is False
    assert cancelled_by_deadline(op(done=False), T0 + 10, T0 + 20) is False


def test_defer_timeout_bounds_the_deferral_by_the_nearer_of_deadline_and_execution_timeout():
    assert defer_timeout(None, T0, None, 300) is None
    assert defer_timeout(T0 + 100, T0, None, 300) == 400  # the trigger's deadline first, Airflow's 5 min later
    assert defer_timeout(None, T0, T0 + 50, 300) == 50  # execution_timeout, as for a try waiting in the worker
    assert defer_timeout(T0 + 100, T0, T0 + 50, 10) == 50
    assert defer_timeout(T0 + 30, T0, T0 + 100, 10) == 40
    assert defer_timeout(T0 - 50, T0, None, 10) == 0
    assert defer_timeout(None, T0, T0 - 1, 10) == 0


# --- kills ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "state,cancels",
    [
        ("deferred", False),  # handed over to another triggerer: the task still waits
        ("success", False),  # marked success: the user declared the work done
        (UNKNOWN_STATE, False),  # cannot tell: leave it running
        ("failed", True),  # marked failed
        (None, True),  # cleared
        ("scheduled", True),
        ("queued", True),
        ("running", True),  # cleared, and the next try already runs
        ("up_for_retry", True),
    ],
)
def test_trigger_may_cancel(state, cancels):
    assert trigger_may_cancel(True, state, "op-1") is cancels
    assert trigger_may_cancel(True, state, "op-1", "op-1") is cancels
    assert trigger_may_cancel(False, state, "op-1", "op-2") is False


def test_a_cleared_task_deferred_again_on_a_new_operation_cancels_the_old_one():
    """The clear's new try already deferred on its own operation: this trigger's operation is orphaned."""
    assert trigger_may_cancel(True, "deferred", "op-1", "op-2") is True
    assert trigger_may_cancel(True, "deferred", "op-1", "op-1") is False  # a handover: the task still waits for it
    assert trigger_may_cancel(True, "deferred", "op-1", None) is False  # unknown: never a reason to cancel


@pytest.mark.parametrize(
    "state,cancels",
    [
        ("running", False),  # graceful SIGTERM, execution_timeout
        ("success", False),
        ("deferred", False),
        (UNKNOWN_STATE, False),
        (None, False),
        ("queued", False),
        ("failed", True),
        ("restarting", True),  # cleared while running
        ("removed", True),
        ("up_for_retry", True),
        ("upstream_failed", True),
        ("skipped", True),
    ],
)
def test_worker_kill_may_cancel(state, cancels):
    assert worker_kill_may_cancel(True, state) is cancels
    assert worker_kill_may_cancel(False, state) is False


def test_task_state_key_of_a_mapped_task():
    assert task_state_key("import_dicom", -1) == "import_dicom"
    assert task_state_key("import_dicom", None) == "import_dicom"
    assert task_state_key("import_dicom", 0) == "import_dicom_0"
    assert task_state_key("import_dicom", 3) == "import_dicom_3"


# --- ambiguous submissions -----------------------------------------------------------------------


def decide(ops, since=T0, until=T0 + 5, skew=30.0, quiet=30.0, before=None):
    return adoption(ops, api_method="ImportDicomData", since=since, until=until, skew=skew, quiet=quiet, before=before)


def test_adoption_of_the_only_operation_in_a_quiet_window():
    assert decide([listed("a", T0 + 2)]) == Adoption(ADOPT, "a", ("a",))


def test_adoption_tolerates_a_server_clock_behind_ours_and_a_late_creation():
    assert decide([listed("a", T0 - 29)]).action == ADOPT
    assert decide([listed("a", T0 + 5 + 29)]).action == ADOPT
    assert decide([listed("a", T0 - 31)]).action == SUBMIT
    assert decide([listed("a", T0 + 5 + 31)]).action == SUBMIT


def test_adoption_edges_are_inclusive():
    assert decide([listed("a", T0 - 30)]).action == ADOPT
    assert decide([listed("a", T0 + 35)]).action == ADOPT
    assert decide([listed("a", T0 - 30)], skew=0.0).action == SUBMIT


def test_no_candidate_means_submit():
    assert decide([]) == Adoption(SUBMIT)
    assert decide([listed("x", T0 + 1, "ExportDicomData")]).action == SUBMIT
    assert decide([{"name": "n", "metadata": {"apiMethodName": "x.ImportDicomData"}}]).action == SUBMIT


def test_two_candidates_fail_and_are_named():
    found = decide([listed("a", T0 + 1), listed("b", T0 + 3)])
    assert found.action == FAIL and found.candidates == ("a", "b") and found.name == ""


def test_a_neighbour_just_outside_the_window_prevents_adoption():
    """Another run of the same method started a minute earlier: the one candidate may be that run's, not ours."""
    found = decide([listed("other", T0 - 50), listed("a", T0 + 2)])
    assert found == Adoption(FAIL, "", ("a",), ("other",))
    assert decide([listed("other", T0 + 5 + 59), listed("a", T0 + 2)]).action == FAIL
    assert decide([listed("other", T0 - 61), listed("a", T0 + 2)]).action == ADOPT
    assert decide([listed("other", T0 + 5 + 61), listed("a", T0 + 2)]).action == ADOPT
    assert decide([listed("other", T0 - 60), listed("a", T0 + 2)]).action == FAIL
    assert decide([listed("other", T0 - 61), listed("a", T0 + 2)], quiet=31).action == FAIL


def test_same_method_needs_the_method_suffix():
    ops = [listed("a", T0), listed("b", T0, "ExportDicomData"), {"name": "c", "metadata": {}}, {"name": "d"}]
    assert [o["name"] for o in same_method(ops, "ImportDicomData")] == ["a"]
    assert [o["name"] for o in same_method([listed("e", T0, "XImportDicomData")], "ImportDicomData")] == []


def test_ambiguous_message_names_candidates_neighbours_and_what_to_do():
    text = ambiguous_message(Adoption(FAIL, "", ("a", "b"), ("c",)), "ImportDicomData", "the request failed")
    assert text.startswith("the request failed, and 2 ImportDicomData operation(s)")
    assert "(a, b)" in text and "1 more were running or started around it (c)" in text
    assert "not submitting again" in text and "mark this task success" in text
    assert "more were" not in ambiguous_message(Adoption(FAIL, "", ("a",)), "ImportDicomData", "x")


def running(name: str, created: float) -> dict:
    return {**listed(name, created), "done": False}


def finished(name: str, created: float) -> dict:
    return {**listed(name, created), "done": True}


def test_with_a_listing_from_before_the_request_earlier_operations_are_never_ours():
    """The previous night's import, finished a second before the request, is not a candidate, whatever the skew."""
    earlier = finished("earlier", T0 - 1)
    assert decide([earlier, listed("a", T0 + 2)], before=[earlier]) == Adoption(ADOPT, "a", ("a",))
    assert decide([earlier], before=[earlier]).action == SUBMIT
    assert decide([earlier, listed("a", T0 + 2)]).action == FAIL  # without the listing, it could be ours


def test_with_a_listing_an_operation_running_before_the_request_prevents_adoption():
    busy = running("busy", T0 - 1000)
    found = decide([busy, listed("a", T0 + 2)], before=[busy])
    assert found == Adoption(FAIL, "", ("a",), ("busy",))
    other = running("other", T0 - 1000)
    other_method = {**other, "metadata": {**other["metadata"], "apiMethodName": "x.ExportDicomData"}}
    assert decide([other_method, listed("a", T0 + 2)], before=[other_method]).action == ADOPT


def test_with_a_listing_any_other_new_operation_prevents_adoption():
    assert decide([listed("a", T0 + 2), listed("late", T0 + 5000)], before=[]).action == FAIL
    assert decide([listed("a", T0 + 2), listed("late", T0 + 5000)]).action == ADOPT  # outside the quiet window
    assert decide([listed("late", T0 + 5000)], before=[]).action == SUBMIT


def test_an_operation_created_at_the_neighbour_edge_counts():
    assert decide([listed("other", T0 + 5 + 60), listed("a", T0 + 2)]).action == FAIL
