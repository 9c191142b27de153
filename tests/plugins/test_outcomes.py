"""The failure contract, row by row: pure classification, then each outcome through dag.test().

dag.test() runs the fixture tasks (tests/dag_fixtures/contract_import.py) with Airflow's own
retries (``retries=2``) and its real task state store. Each test checks the task's final state, the
try it ended on (1 means Airflow did not retry), and how many operations the local Healthcare API
received for the store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_pipelines.hooks import CloudHealthcareDicomHook
from dicom_pipelines.outcomes import (
    CANCELLED,
    EMPTY,
    ERROR,
    PARTIAL,
    SUCCESS,
    TRANSIENT,
    FailurePolicy,
    api_failure,
    classify,
    deadline_note,
    failed_source_lines,
    failure_message,
    log_finished,
    operation_result,
    partial_failure_message,
    summary,
)
from dicom_pipelines.responses import parse_operation
from tests.helpers import LOCATION, PROJECT, admin, dag_bag, new_bucket, seed_import, store_parts, unique

FIXTURES = Path(__file__).resolve().parents[1] / "dag_fixtures" / "contract_import.py"


def status(code: int = 0, success: int = 0, failure: int = 0, done: bool = True):
    counter = {k: str(v) for k, v in (("success", success), ("failure", failure)) if v}
    op = {"name": "projects/p/locations/l/datasets/d/operations/1", "done": done, "metadata": {"counter": counter}}
    if code:
        op["error"] = {"code": code, "message": "m"}
    return parse_operation(op)


# --- pure classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op,kind",
    [
        (status(0, 5, 0), SUCCESS),
        (status(3, 4, 1), PARTIAL),
        (status(0, 4, 1), PARTIAL),  # failures reported without an error code still count
        (status(9, 4, 1), PARTIAL),  # whatever code Google uses for a partial failure
        (status(3, 0, 5), PARTIAL),  # total failure: the policy decides, like any partial one
        (status(5, 0, 0), EMPTY),
        (status(0, 0, 0), EMPTY),
        (status(1, 2, 0), CANCELLED),
        (status(10, 2, 1), TRANSIENT),  # a transient end wins over the counters: the retry redoes everything
        (status(13), TRANSIENT),
        (status(14), TRANSIENT),
        (status(7), ERROR),
        (status(3), ERROR),
    ],
)
def test_classify_by_counters_first(op, kind):
    assert classify(op) == kind


def test_classify_refuses_a_running_operation():
    with pytest.raises(ValueError, match="not done"):
        classify(status(done=False))


def test_failure_messages_name_counts_policy_and_permissions():
    assert failure_message(status(0, 5), SUCCESS, FailurePolicy()) is None
    assert failure_message(status(3, 9, 1), PARTIAL, FailurePolicy(max_failures=1)) is None
    assert "1 of 10 instances failed (10.0%), more than allowed (no failures allowed)" in failure_message(
        status(3, 9, 1), PARTIAL, FailurePolicy()
    )
    assert "all 3 instances failed" in failure_message(status(3, 0, 3), PARTIAL, FailurePolicy(max_failures=2))
    assert "roles/storage.objectViewer" in failure_message(status(7), ERROR, FailurePolicy())
    assert "the retry submits the operation again" in failure_message(status(10), TRANSIENT, FailurePolicy())


# --- every row through dag.test() ------------------------------------------------------------------

pytestmark_airflow = pytest.mark.usefixtures("stack", "airflow_db")


@pytest.fixture(autouse=True)
def reset_stack(request):
    yield
    if "stack" in request.fixturenames:
        admin("/admin/settings", {"latency_s": 0.0, "force_failure": 0})
        admin("/admin/faults", {})


def fixture_dag(dag_id: str):
    return dag_bag(FIXTURES).get_dag(dag_id)


def new_store() -> str:
    return CloudHealthcareDicomHook().ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=unique("ct"), dicom_store_id="s"
    )


def operations(store: str) -> list[dict]:
    return admin(f"/admin/operations?store={store}")["operations"]


def run_import(store: str, uri: str, **conf):
    run = fixture_dag("contract_import").test(run_conf={**store_parts(store), "gcs_uri": uri, **conf})
    return next(ti for ti in run.get_task_instances() if ti.task_id == "import_dicom")


def outcome(ti) -> tuple[str, int]:
    return ti.state, ti.try_number


@pytest.mark.usefixtures("stack", "airflow_db")
class TestContractThroughAirflow:
    def test_success(self):
        store = new_store()
        _, uri = seed_import(3)
        assert outcome(run_import(store, uri)) == ("success", 1)
        assert len(operations(store)) == 1

    def test_partial_failure_within_tolerance_succeeds(self):
        store = new_store()
        _, uri = seed_import(3, extra={"junk.dcm": b"junk"})
        assert outcome(run_import(store, uri, max_failures=1)) == ("success", 1)
        assert len(operations(store)) == 1

    def test_partial_failure_over_tolerance_fails_once_without_a_second_import(self):
        store = new_store()
        _, uri = seed_import(3, extra={"junk.dcm": b"junk"})
        assert outcome(run_import(store, uri)) == ("failed", 1)
        assert len(operations(store)) == 1

    def test_total_failure_fails_once(self):
        store = new_store()
        bucket = new_bucket("bad")
        for i in range(3):
            bucket.blob(f"in/{i}.dcm").upload_from_string(b"not dicom")
        assert outcome(run_import(store, f"gs://{bucket.name}/in/**")) == ("failed", 1)
        ops = operations(store)
        assert len(ops) == 1 and ops[0]["counter"] == {"failure": "3"}

    def test_empty_match_skips_when_allowed_and_fails_once_otherwise(self):
        store = new_store()
        bucket = new_bucket("quiet")
        assert outcome(run_import(store, f"gs://{bucket.name}/none/**", allow_empty=True)) == ("skipped", 1)
        assert outcome(run_import(store, f"gs://{bucket.name}/none/**", allow_empty="False")) == ("failed", 1)
        assert len(operations(store)) == 2

    def test_missing_bucket_fails_even_when_empty_is_allowed(self):
        store = new_store()
        assert outcome(run_import(store, f"gs://{unique('nobucket')}/x/**", allow_empty=True)) == ("failed", 1)
        assert len(operations(store)) == 1

    def test_permission_denied_and_missing_store_fail_without_retry(self):
        _, uri = seed_import(1)
        missing_dataset = f"projects/{PROJECT}/locations/{LOCATION}/datasets/{unique('gone')}/dicomStores/s"
        assert outcome(run_import(missing_dataset, uri)) == ("failed", 1)  # the API answers 403
        missing_store = new_store().rsplit("/", 1)[0] + "/nostore"
        assert outcome(run_import(missing_store, uri)) == ("failed", 1)  # 404

    def test_invalid_input_fails_before_any_call(self):
        store = new_store()
        assert outcome(run_import(store, "gs://bucket/a/**/b.dcm")) == ("failed", 1)
        assert outcome(run_import(store, "gs://bucket/a/*.dcm", max_failures=-1)) == ("failed", 1)
        assert outcome(run_import(store, "gs://bucket/a/*.dcm", allow_empty="maybe")) == ("failed", 1)
        assert operations(store) == []

    def test_transient_operation_error_is_retried_and_resubmitted(self):
        store = new_store()
        _, uri = seed_import(2)
        admin("/admin/settings", {"force_failure": 1})
        assert outcome(run_import(store, uri)) == ("success", 2)
        ops = operations(store)
        assert [o["error"]["code"] if o["error"] else 0 for o in ops] == [13, 0]

    def test_deadline_fails_once_and_cancels_only_when_allowed(self):
        store = new_store()
        _, uri = seed_import(20)
        admin("/admin/settings", {"latency_s": 0.3})
        run = fixture_dag("contract_import_deadline").test(run_conf={**store_parts(store), "gcs_uri": uri})
        states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
        assert states == {"import_cancel_true": ("failed", 1), "import_cancel_false": ("failed", 1)}
        ops = operations(store)
        assert len(ops) == 2 and sorted(o["cancelRequested"] for o in ops) == [False, True]

    def test_worker_killed_before_submit_retry_submits_once(self):
        store = new_store()
        _, uri = seed_import(3)
        assert outcome(run_import(store, uri, earlier_try="before_post")) == ("success", 1)
        assert len(operations(store)) == 1

    def test_worker_killed_after_submit_retry_adopts_the_unrecorded_operation(self):
        """The worker died between the POST and recording the name: the next try finds the operation."""
        store = new_store()
        _, uri = seed_import(3)
        assert outcome(run_import(store, uri, earlier_try="unrecorded")) == ("success", 1)
        assert len(operations(store)) == 1

    def test_worker_killed_while_waiting_retry_reattaches(self):
        store = new_store()
        _, uri = seed_import(6)
        admin("/admin/settings", {"latency_s": 0.2})
        assert outcome(run_import(store, uri, earlier_try="recorded")) == ("success", 1)
        assert len(operations(store)) == 1

    def test_an_operation_cancelled_by_another_client_is_final_for_a_retry(self):
        """The retry of the same generation finds its operation cancelled before the deadline: not by this project
        (it cancels only on a user's kill, which leaves no retry), so it fails once and submits nothing."""
        store = new_store()
        _, uri = seed_import(6)
        admin("/admin/settings", {"latency_s": 0.3})
        assert outcome(run_import(store, uri, earlier_try="cancelled_elsewhere")) == ("failed", 1)
        assert [(o["error"] or {}).get("code") for o in operations(store)] == [1]

    def test_a_cleared_task_submits_a_new_operation(self):
        """A user's clear raises max_tries, so the stored operation belongs to an older generation."""
        store = new_store()
        _, uri = seed_import(2)
        assert outcome(run_import(store, uri, earlier_try="cleared")) == ("success", 1)
        assert len(operations(store)) == 2


@pytest.mark.usefixtures("stack", "airflow_db")
def test_sensor_timeout_fails_without_retry_or_skips_with_soft_fail_and_never_cancels():
    from tests.helpers import start_import

    name = start_import(20, latency=0.3)
    run = fixture_dag("contract_sensor").test(run_conf={"operation_name": name})
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert states == {"wait_soft_fail_true": ("skipped", 1), "wait_soft_fail_false": ("failed", 1)}
    assert not parse_operation(CloudHealthcareDicomHook().get_operation(name=name)).cancel_requested


@pytest.mark.usefixtures("stack", "airflow_db")
def test_sensor_in_reschedule_mode_gives_its_slot_back_between_pokes():
    """Airflow reschedules the sensor (a TaskReschedule row per poke that found it running), then it succeeds."""
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from tests.helpers import start_import

    name = start_import(30, latency=0.5)
    run = fixture_dag("contract_sensor_reschedule").test(run_conf={"operation_name": name})
    (ti,) = run.get_task_instances()
    with create_session() as session:
        reschedules = session.scalars(select(TaskReschedule).where(TaskReschedule.ti_id == ti.id)).all()
    assert ti.state == "success" and len(reschedules) >= 1


# --- the pure pieces of the contract (also what `make mutation` runs) ------------------------------------------


class RecordingLog:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def info(self, fmt, *args):
        self.lines.append(("info", fmt % args))

    def warning(self, fmt, *args):
        self.lines.append(("warning", fmt % args))


def full(code=0, success=0, failure=0, logs="https://logs", created="2026-11-01T00:00:00Z", ended=None):
    op = {
        "name": "projects/p/locations/l/datasets/d/operations/1",
        "done": True,
        "metadata": {
            "counter": {k: str(v) for k, v in (("success", success), ("failure", failure)) if v},
            "createTime": created,
            "logsUrl": logs,
        },
    }
    if ended:
        op["metadata"]["endTime"] = ended
    if code:
        op["error"] = {"code": code, "message": "m"}
    return parse_operation(op)


@pytest.mark.parametrize(
    "count,ratio,expected",
    [
        (None, None, FailurePolicy()),
        ("", " None ", FailurePolicy()),
        ("None", "", FailurePolicy()),
        ("3", None, FailurePolicy(3, None)),
        (" 0 ", "0.25", FailurePolicy(0, 0.25)),
        (2, 1, FailurePolicy(2, 1.0)),
        (None, "0", FailurePolicy(None, 0.0)),
    ],
)
def test_policy_from_rendered_values(count, ratio, expected):
    assert FailurePolicy.from_values(count, ratio) == expected


@pytest.mark.parametrize(
    "count,ratio,field,rule",
    [
        ("-1", None, "max_failures", "must be a whole number >= 0"),
        ("x", None, "max_failures", "must be a whole number >= 0"),
        (1.5, None, "max_failures", "must be a whole number >= 0"),
        (True, None, "max_failures", "must be a whole number >= 0"),
        (None, "1.01", "max_failure_ratio", "must be a number between 0 and 1"),
        (None, "-0.1", "max_failure_ratio", "must be a number between 0 and 1"),
        (None, "half", "max_failure_ratio", "must be a number between 0 and 1"),
    ],
)
def test_policy_refuses_bad_values_naming_field_value_and_rule(count, ratio, field, rule):
    from dicom_pipelines.validation import ValidationError

    with pytest.raises(ValidationError) as err:
        FailurePolicy.from_values(count, ratio)
    value = count if field == "max_failures" else ratio
    assert str(err.value) == f"{field}={value!r} is invalid: {rule}"


def test_policy_allows_and_describes():
    assert FailurePolicy().allows(0, 10) and not FailurePolicy().allows(1, 10)
    assert FailurePolicy(2).allows(2, 3) and not FailurePolicy(2).allows(3, 3)
    assert FailurePolicy(None, 0.2).allows(2, 10) and not FailurePolicy(None, 0.2).allows(3, 10)
    assert FailurePolicy(None, 0.5).allows(1, 2) and not FailurePolicy(None, 0.4).allows(1, 2)
    assert FailurePolicy(None, 0.5).allows(1, 0) is False  # no total: the ratio is failure / 1
    assert FailurePolicy(None, 1.0).allows(1, 0)
    assert FailurePolicy(5, 0.1).allows(2, 10) is False and FailurePolicy(1, 0.5).allows(2, 10) is False
    assert FailurePolicy(None, 0.0).allows(0, 0)
    assert FailurePolicy().describe() == "no failures allowed"
    assert FailurePolicy(3).describe() == "max_failures=3"
    assert FailurePolicy(None, 0.5).describe() == "max_failure_ratio=0.5"
    assert FailurePolicy(3, 0.5).describe() == "max_failures=3, max_failure_ratio=0.5"


def test_operation_result_and_summary():
    status = full(0, 4, 1, ended="2026-11-01T00:01:02.5Z")
    assert operation_result(status) == {
        "operation_name": "projects/p/locations/l/datasets/d/operations/1",
        "success": 4,
        "failure": 1,
        "pending": 0,
        "logs_url": "https://logs",
        "duration_s": 62.5,
    }
    assert operation_result(full(created=""))["duration_s"] is None
    assert operation_result(full())["duration_s"] is None
    assert summary(status) == "4 succeeded, 1 failed of 5; logs: https://logs"
    assert summary(full(logs="")) == "0 succeeded, 0 failed of 0; logs: n/a"


def test_partial_failure_messages_in_words():
    name = "projects/p/locations/l/datasets/d/operations/1"
    assert partial_failure_message(full(3, 9, 1), FailurePolicy(1)) is None
    assert partial_failure_message(full(3, 8, 2), FailurePolicy()) == (
        f"Operation {name}: 2 of 10 instances failed (20.0%), more than allowed (no failures allowed). "
        "The per-instance errors are at https://logs."
    )
    assert partial_failure_message(full(3, 0, 2, logs=""), FailurePolicy(1)) == (
        f"Operation {name}: all 2 instances failed (max_failures=1). The per-instance errors are at the operation logs."
    )
    assert partial_failure_message(full(3, 1, 2, logs=""), FailurePolicy(1)).endswith("at the operation logs.")


def test_failure_message_for_each_kind():
    name = "projects/p/locations/l/datasets/d/operations/1"
    assert failure_message(full(0, 0, 0), EMPTY, FailurePolicy()) is None
    assert failure_message(full(5, 0, 0), EMPTY, FailurePolicy()) == (
        f"Operation {name} ended with NOT_FOUND (5): m [0 succeeded, 0 failed of 0; logs: https://logs]"
    )
    assert failure_message(full(10, 1), TRANSIENT, FailurePolicy()) == (
        f"Operation {name} ended with ABORTED (10): m [1 succeeded, 0 failed of 1; logs: https://logs]. "
        "This may pass: the retry submits the operation again."
    )
    assert failure_message(full(10), TRANSIENT, FailurePolicy(), resubmits=False).endswith(
        "This may pass: submit it again to retry; this sensor only waits."
    )
    assert failure_message(full(1), CANCELLED, FailurePolicy()) == (
        f"Operation {name} ended with CANCELLED (1): m It was cancelled by a user or another client. "
        "[0 succeeded, 0 failed of 0; logs: https://logs]"
    )
    assert failure_message(full(7), ERROR, FailurePolicy()) == (
        f"Operation {name} ended with PERMISSION_DENIED (7): m The Healthcare service agent "
        "(service-<PROJECT_NUMBER>@gcp-sa-healthcare.iam.gserviceaccount.com) lacks a permission: "
        "roles/storage.objectViewer on source buckets, roles/storage.objectAdmin on export buckets. "
        "[0 succeeded, 0 failed of 0; logs: https://logs]"
    )
    assert failure_message(full(3), ERROR, FailurePolicy()) == (
        f"Operation {name} ended with INVALID_ARGUMENT (3): m [0 succeeded, 0 failed of 0; logs: https://logs]"
    )
    assert failure_message(full(3, 1, 1), PARTIAL, FailurePolicy(1)) is None
    assert failure_message(full(0, 1), SUCCESS, FailurePolicy()) is None


def test_failed_files_are_named_in_the_log():
    entries = [{"source": "gs://b/x.dcm", "code": 3, "message": "bad"}, {"source": "", "code": 5, "message": "gone"}]
    assert failed_source_lines(entries) == ["Failed: gs://b/x.dcm: code 3: bad", "Failed: ?: code 5: gone"]
    log = RecordingLog()
    log_finished(log, full(3, 1, 3), entries)
    assert log.lines == [
        (
            "info",
            "Operation projects/p/locations/l/datasets/d/operations/1 done: 1 succeeded, 3 failed of 4; logs: "
            "https://logs",
        ),
        ("warning", "Failed: gs://b/x.dcm: code 3: bad"),
        ("warning", "Failed: ?: code 5: gone"),
        (
            "warning",
            "2 of 3 failed instances are named above; Cloud Logging has the rest (Google logs a limited "
            "number when there are many): https://logs",
        ),
    ]
    log = RecordingLog()
    log_finished(log, full(3, 1, 2, logs=""), entries)
    assert len(log.lines) == 3
    log = RecordingLog()
    log_finished(log, full(3, 0, 3, logs=""), entries[:1])
    assert log.lines[-1] == (
        "warning",
        "1 of 3 failed instances are named above; Cloud Logging has the rest (Google logs a limited number when "
        "there are many): n/a",
    )


def test_api_failures_are_retried_only_when_they_may_pass():
    from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

    from dicom_pipelines.responses import AmbiguousSubmissionError, HealthcareApiError

    retried = api_failure(HealthcareApiError(503, "UNAVAILABLE", "down", "operations.get"))
    assert type(retried) is AirflowException
    assert str(retried) == (
        "Healthcare API operations.get failed: HTTP 503 UNAVAILABLE: down (still failing after the hook's own "
        "retries; Airflow retries the task)"
    )
    ambiguous = api_failure(AmbiguousSubmissionError(503, "ABORTED", "two", "dicomStores.import"))
    assert type(ambiguous) is AirflowFailException and str(ambiguous).endswith("ABORTED: two")
    denied = api_failure(HealthcareApiError(403, "PERMISSION_DENIED", "no", "m"))
    assert type(denied) is AirflowFailException
    assert str(denied) == (
        "Healthcare API m failed: HTTP 403 PERMISSION_DENIED: no The dataset may not exist (the API answers 403 for "
        "a missing dataset), or the Airflow identity lacks a Healthcare role such as roles/healthcare.dicomEditor."
    )
    missing = api_failure(HealthcareApiError(404, "NOT_FOUND", "no", "m"))
    assert str(missing).endswith(
        "no The DICOM store does not exist: create it first (the nightly DAG's ensure_store task does)."
    )
    bad = api_failure(HealthcareApiError(400, "INVALID_ARGUMENT", "no", "m"))
    assert type(bad) is AirflowFailException and str(bad) == "Healthcare API m failed: HTTP 400 INVALID_ARGUMENT: no"


def test_deadline_note():
    assert deadline_note(False, None) == "it was left running (cancel_on_kill=False)"
    assert deadline_note(False, ValueError("x")) == "it was left running (cancel_on_kill=False)"
    assert deadline_note(True, None) == "it was cancelled"
    assert deadline_note(True, ValueError("x")) == "cancelling it failed too (x), so it may still be running"


def test_pure_edges_duration_rounding_ratio_policy_and_percent_in_messages():
    assert operation_result(full(0, 1, ended="2026-11-01T00:00:01.00049Z"))["duration_s"] == 1.0
    assert partial_failure_message(full(3, 8, 2), FailurePolicy(None, 0.5)) is None
    log = RecordingLog()
    log_finished(log, full(3, 1, 1), [{"source": "gs://b/100%.dcm", "code": 3, "message": "at 100%"}])
    assert ("warning", "Failed: gs://b/100%.dcm: code 3: at 100%") in log.lines
