"""The checks around an operation: params before any API call, the order of nights, the exported objects."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunType

from dicom_pipelines.checks import WaitForPreviousRunOperator, check_params, previous_run_to_wait_for


class PreviousRunTI:
    def __init__(self, previous):
        self.previous = previous

    def get_previous_dagrun(self):
        return self.previous


def previous(state: str, run_type: str = "backfill") -> SimpleNamespace:
    """A previous run as the Task SDK returns it: state and type are enums, whose ``str()`` is not their value."""
    return SimpleNamespace(
        run_id=f"{run_type}__2026-11-21",
        logical_date="2026-11-21T00:00:00Z",
        state=DagRunState(state),
        run_type=DagRunType(run_type),
    )


@pytest.mark.parametrize(
    "earlier,proceeds",
    [(None, True), (previous("success"), True), (previous("failed"), True)]
    + [(previous(state), False) for state in ("queued", "running")]
    + [(previous("running", run_type), False) for run_type in ("manual", "scheduled")],
)
def test_a_night_waits_only_for_an_unfinished_previous_run(earlier, proceeds):
    assert (previous_run_to_wait_for(PreviousRunTI(earlier)) is None) is proceeds


@pytest.mark.parametrize("run_type", ["manual", "scheduled"])
def test_an_earlier_night_queued_behind_this_run_does_not_hold_it(run_type, caplog):
    """One scheduled or manual run at a time: the queued earlier night can only start when this one ends."""
    caplog.set_level("WARNING", logger="dicom_pipelines.checks")
    assert previous_run_to_wait_for(PreviousRunTI(previous("queued", run_type))) is None
    assert f"Run {run_type}__2026-11-21 (logical date 2026-11-21T00:00:00Z) is queued behind this run" in caplog.text


def test_the_wait_defers_to_the_triggerer_on_the_previous_runs_state():
    """No worker slot and no process per check: the run's state is asked for by the standard DagStateTrigger."""
    from airflow.providers.common.compat.sdk import TaskDeferred

    waiting = previous("running")
    op = WaitForPreviousRunOperator(task_id="wait_for_previous_run", poll_interval=5)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": PreviousRunTI(waiting), "dag": SimpleNamespace(dag_id="dicom_nightly_import")})
    trigger = deferred.value.trigger
    assert type(trigger).__name__ == "DagStateTrigger" and deferred.value.method_name == "execute_complete"
    assert (trigger.dag_id, trigger.run_ids, trigger.states, trigger.poll_interval) == (
        "dicom_nightly_import",
        [waiting.run_id],
        ["success", "failed"],
        5,
    )
    assert op.execute({"ti": PreviousRunTI(previous("success")), "dag": None}) is None


def params_context(values: dict, conf: dict, declared: dict | None = None) -> dict:
    return {"dag": SimpleNamespace(params=declared or values), "params": values, "dag_run": SimpleNamespace(conf=conf)}


def test_check_params_lists_every_problem_at_once_without_a_retry():
    values = {"dicom_store_id": "demo store", "modalities": ["ct"], "study_date_from": "2026-11-20"}
    conf = {**values, "mimetype": "image/png"}
    with pytest.raises(AirflowFailException) as failed:
        check_params.function(**params_context({**values, "mimetype": "image/png"}, conf, declared=values))
    message = str(failed.value)
    assert message.startswith("3 problem(s) with this run's parameters; nothing was sent to any API")
    assert "'mimetype' is not a parameter" in message and "dicom_store_id='demo store'" in message
    assert "modalities[0]='ct' is invalid: modality codes are upper case, as DICOM writes them: 'CT'" in message


def test_check_params_passes_good_params():
    values = {"dicom_store_id": "demo-store", "modalities": ["CT"], "study_date_from": None}
    assert check_params.function(**params_context(values, {"modalities": ["CT"]})) is None


@pytest.mark.usefixtures("stack")
def test_verify_counts_only_what_the_export_wrote_since_it_started():
    """A reused prefix holds earlier exports' objects: only those written since the operation started count."""
    from dicom_pipelines.checks import count_exported
    from tests.helpers import new_bucket

    bucket = new_bucket("verify")
    for n in range(3):
        bucket.blob(f"out/1.2/1.2.3/1.2.3.{n}.dcm").upload_from_string(b"DICM")
    result = {"success": 3, "uri_prefix": f"gs://{bucket.name}/out", "mime_type": ""}
    in_the_past = {**result, "create_time": "2026-01-01T00:00:00Z"}
    assert count_exported("google_cloud_default", result["uri_prefix"], "", in_the_past)["instances"] == 3
    in_the_future = {**result, "create_time": "2099-01-01T00:00:00.123456789Z"}
    with pytest.raises(AirflowException, match="0 instances written under .* since the operation started"):
        count_exported("google_cloud_default", result["uri_prefix"], "", in_the_future)


@pytest.mark.usefixtures("stack")
def test_verify_checks_the_paths_against_the_filter_file():
    """Objects must belong to what the filter file listed, not merely count right."""
    from dicom_pipelines.checks import count_exported
    from tests.helpers import new_bucket

    bucket = new_bucket("paths")
    for path in ("1.2/1.2.3/1.2.3.1", "1.2/1.2.3/1.2.3.2", "1.9/1.9.1/1.9.1.1"):
        bucket.blob(f"out/{path}.dcm").upload_from_string(b"DICM")
    bucket.blob("filters/f.txt").upload_from_string("/studies/1.2/series/1.2.3\n/studies/1.9\n")
    result = {
        "success": 3,
        "uri_prefix": f"gs://{bucket.name}/out",
        "mime_type": "",
        "create_time": "2026-01-01T00:00:00Z",
        "filter_uri": f"gs://{bucket.name}/filters/f.txt",
    }
    assert count_exported("google_cloud_default", result["uri_prefix"], "", result)["instances"] == 3
    bucket.blob("filters/f.txt").upload_from_string("/studies/1.2/series/1.2.3\n")
    with pytest.raises(
        AirflowException, match=r"1 instances .* not in the filter file .* e\.g\. 1\.9/1\.9\.1/1\.9\.1\.1"
    ):
        count_exported("google_cloud_default", result["uri_prefix"], "", {**result, "success": 2})


def test_an_export_event_carries_counts_and_the_operation_never_paths_or_identifiers():
    from dicom_pipelines.checks import export_event_extra

    result = {
        "uri_prefix": "gs://b/exports/r1",
        "mime_type": "image/png",
        "operation_name": "projects/p/locations/l/datasets/d/operations/42",
        "success": 3,
        "failure": 1,
        "failed_sources": [{"source": "gs://b/in/PAT-1.dcm"}],
        "filter_uri": "gs://b/filters/r1.txt",
    }
    extra = export_event_extra("r1", result, {"instances": 3, "objects": 3})
    assert extra == {
        "run_id": "r1",
        "instances": 3,
        "objects": 3,
        "failed": 1,
        "mime_type": "image/png",
        "operation_name": "projects/p/locations/l/datasets/d/operations/42",
    }
