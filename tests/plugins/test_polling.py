"""The polling planner: backoff without progress, prediction with it."""

from __future__ import annotations

import pytest

from dicom_pipelines.polling import PollPlanner


def test_backoff_without_progress_reaches_the_cap():
    p = PollPlanner(2.0, 60.0)
    delays = [p.next_delay(t, 0, 0) for t in range(10)]
    assert delays[:6] == [2, 4, 8, 16, 32, 60] and set(delays[5:]) == {60}


PROFILES = {
    "steady": lambda x: x,
    "accelerating": lambda x: x * x,
    "stall then burst": lambda x: 0.01 * x / 0.9 if x < 0.9 else 0.01 + 0.99 * (x - 0.9) / 0.1,
    "counters at end": lambda x: 0.0,
}


def simulate(duration: float, planner: PollPlanner, profile, total: int = 10_000) -> tuple[int, float, float]:
    """An operation whose counters follow ``profile``; returns (calls, detection delay, longest wait)."""
    t, calls, longest = 0.0, 0, 0.0
    while True:
        calls += 1
        if t >= duration:
            return calls, t - duration, longest
        done = min(total, int(total * profile(t / duration)))
        delay = planner.next_delay(t, done, total - done)
        longest = max(longest, delay)
        t += delay


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("duration", [60.7, 600.7, 3600.7])
def test_completion_is_seen_within_max_poll_interval_on_every_profile(duration, profile):
    calls, late, longest = simulate(duration, PollPlanner(2.0, 60.0), PROFILES[profile])
    assert longest <= 60.0 and late <= 60.0
    assert calls <= duration / 60 + 10


def test_a_steady_operation_is_seen_done_just_after_it_ends():
    for duration in (60.7, 600.7, 3600.7):
        _, late, _ = simulate(duration, PollPlanner(2.0, 60.0), PROFILES["steady"])
        assert late <= 2.0


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="poll_interval"):
        PollPlanner(0)
    with pytest.raises(ValueError, match="max_poll_interval"):
        PollPlanner(5, 1)


def test_the_creation_time_lets_the_first_moving_poll_predict_the_end():
    """Created at 0, a quarter done at 3 s: the end is due at 12 s, polled just after it (no second poll to learn
    the rate). Without the creation time the planner can only back off."""
    assert PollPlanner(2.0, 60.0).next_delay(3.0, 250, 750, created_at=0.0) == pytest.approx(10.0)
    assert PollPlanner(2.0, 60.0).next_delay(3.0, 250, 750) == 2.0


def test_a_creation_time_ahead_of_our_clock_is_ignored():
    assert PollPlanner(2.0, 60.0).next_delay(3.0, 250, 750, created_at=5.0) == 2.0


def test_an_operation_that_queued_before_starting_is_still_seen_within_max_poll_interval():
    """Queued 50 s, then steady for 60.7 s: the creation time makes it look slow at first."""

    def queued(x: float) -> float:
        start = 50 / 110.7
        return 0.0 if x < start else (x - start) / (1 - start)

    planner, t, calls, longest, total, duration = PollPlanner(2.0, 60.0), 3.0, 0, 0.0, 10_000, 110.7
    while True:
        calls += 1
        if t >= duration:
            break
        done = int(total * queued(t / duration))
        delay = planner.next_delay(t, done, total - done, created_at=0.0)
        longest, t = max(longest, delay), t + delay
    assert longest <= 60.0 and t - duration <= 60.0
