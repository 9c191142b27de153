"""The polling planner: backoff without progress, prediction with it."""

from __future__ import annotations

import pytest

from dicom_pipelines.polling import PollPlanner


def test_backoff_without_progress_reaches_the_cap():
    p = PollPlanner(2.0, 60.0)
    delays = [p.next_delay(t, 0, 0) for t in range(10)]
    assert delays[:6] == [2, 4, 8, 16, 32, 60] and set(delays[5:]) == {60}


def simulate(duration: float, planner: PollPlanner, total: int = 1000) -> tuple[int, float]:
    """Operation processing ``total`` items at a constant rate; returns (calls, detection delay)."""
    t, calls = 0.0, 0
    while True:
        calls += 1
        done = min(total, int(total * t / duration))
        if t >= duration:
            return calls, t - duration
        t += planner.next_delay(t, done, total - done)


@pytest.mark.parametrize("duration", [60, 600, 3600])
def test_prediction_keeps_calls_low_and_detection_prompt(duration):
    calls, late = simulate(duration, PollPlanner(2.0, 60.0))
    assert calls <= 20 and late <= 30


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="poll_interval"):
        PollPlanner(0)
    with pytest.raises(ValueError, match="max_poll_interval"):
        PollPlanner(5, 1)
