"""Metrics and progress lines: what the operators send through Airflow's Stats, and the log line of a running
operation. The operators run against the local Healthcare API; Stats is replaced by a recorder (the end-to-end test
receives the real StatsD datagrams)."""

from __future__ import annotations

import datetime as dt

import pytest

from dicom_pipelines import metrics
from dicom_pipelines.hooks import CloudHealthcareDicomHook
from dicom_pipelines.metrics import METRICS, operation_tags, progress_line
from dicom_pipelines.operators import HealthcareDicomImportOperator
from dicom_pipelines.responses import OperationStatus
from tests.helpers import LOCATION, PROJECT, FakeStateStore, FakeTI, seed_import, store_parts, unique


def status(success: int, failure: int, pending: int, done: bool = False) -> OperationStatus:
    return OperationStatus(
        name="projects/p/locations/l/datasets/d/operations/7",
        done=done,
        success=success,
        failure=failure,
        pending=pending,
        logs_url="",
        error_code=0,
        error_message="",
        cancel_requested=False,
        create_time="2026-12-05T10:00:00Z",
        end_time="2026-12-05T10:02:30.500Z" if done else "",
    )


class Recorder:
    """Stands in for ``Stats``: what would have been sent, as (kind, name, value, tags)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float, dict]] = []

    def incr(self, stat, count=None, rate=None, *, tags=None):
        self.sent.append(("incr", stat, 1 if count is None else count, tags or {}))

    def timing(self, stat, dt, *, tags=None):
        self.sent.append(("timing", stat, dt.total_seconds(), tags or {}))


@pytest.fixture
def recorder(monkeypatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(metrics, "Stats", rec)
    return rec


def test_progress_line_says_share_done_and_predicted_end():
    now = dt.datetime(2026, 12, 5, 10, 1, tzinfo=dt.UTC).timestamp()
    line = progress_line("ops/7", status(390, 10, 600), 185.0, now)
    assert line == (
        "Operation ops/7: 40% done (390 succeeded, 10 failed, 600 pending); "
        "predicted end 2026-12-05 10:04:05 UTC (in 3 min)"
    )
    assert progress_line("ops/7", status(0, 0, 0), None, now) == (
        "Operation ops/7: progress not reported yet (0 succeeded, 0 failed, 0 pending); end not predicted yet"
    )
    assert progress_line("ops/7", status(5, 0, 5), 7200.0, now).endswith("(in 2.0 h)")


def test_finished_operation_sends_counts_duration_and_polls_with_its_tags(recorder):
    tags = operation_tags("import", "projects/p/locations/l/datasets/d/dicomStores/s1")
    assert tags == {"operation": "import", "store": "s1"}
    metrics.record_finished(tags, status(3, 1, 0, done=True), polls=4)
    assert recorder.sent == [
        ("incr", "dicom.operation.finished", 1, tags),
        ("incr", "dicom.operation.instances_succeeded", 3, tags),
        ("incr", "dicom.operation.instances_failed", 1, tags),
        ("incr", "dicom.operation.polls", 4, tags),
        ("timing", "dicom.operation.duration", 150.5, tags),
    ]
    metrics.record_cancel(tags, "user")
    assert recorder.sent[-1] == ("incr", "dicom.operation.cancels", 1, {**tags, "reason": "user"})
    assert {name for _, name, _, _ in recorder.sent} <= set(METRICS)


def importer(instances: int, **kwargs) -> HealthcareDicomImportOperator:
    """A synchronous import of ``instances`` new instances into a new store ``s``, polling often."""
    store = CloudHealthcareDicomHook().ensure_dicom_store(
        project_id=PROJECT, location=LOCATION, dataset_id=unique("met"), dicom_store_id="s"
    )
    _, uri = seed_import(instances)
    return HealthcareDicomImportOperator(
        task_id=unique("imp"),
        gcs_uri=uri,
        deferrable=False,
        poll_interval=0.1,
        max_poll_interval=0.5,
        **store_parts(store),
        **kwargs,
    )


@pytest.mark.usefixtures("stack")
def test_an_operation_evaluated_again_by_a_retry_is_counted_once(recorder):
    """A retry that finds its earlier try's operation finished evaluates it again: its instances were counted."""
    op = importer(3)
    state = FakeStateStore()
    first = op.execute({"ti": FakeTI(), "task_state_store": state})
    again = op.execute({"ti": FakeTI(), "task_state_store": state})
    assert first["operation_name"] == again["operation_name"]
    succeeded = [(v, t) for kind, name, v, t in recorder.sent if name == "dicom.operation.instances_succeeded"]
    assert succeeded == [(3, {"operation": "import", "store": "s"})]
    polls = [v for _, name, v, _ in recorder.sent if name == "dicom.operation.polls"]
    assert len(polls) == 1 and polls[0] >= 1


@pytest.mark.usefixtures("stack")
@pytest.mark.parametrize("cancel", [True, False])
def test_an_operation_past_its_deadline_counts_a_timeout_and_the_cancel_sent(recorder, cancel):
    from airflow.providers.common.compat.sdk import AirflowFailException

    from tests.helpers import admin, make_context

    op = importer(10, operation_timeout=1, cancel_on_kill=cancel)
    admin("/admin/settings", {"latency_s": 0.5})
    try:
        with pytest.raises(AirflowFailException):
            op.execute(make_context())
    finally:
        admin("/admin/settings", {"latency_s": 0.0})
    tags = {"operation": "import", "store": "s"}
    sent = [
        (name, t) for _, name, _, t in recorder.sent if name in ("dicom.operation.timeouts", "dicom.operation.cancels")
    ]
    expected = [("dicom.operation.cancels", {**tags, "reason": "deadline"})] if cancel else []
    assert sent == [*expected, ("dicom.operation.timeouts", tags)]
