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


def test_the_polling_promise_as_restated():
    """A steady 1 h operation is seen at most 2 s late, with at most 3600 / max_poll_interval + 10 calls an hour."""
    calls, late, longest = simulate(3600.7, PollPlanner(2.0, 60.0), PROFILES["steady"])
    assert late <= 2.0 and calls <= 3600 / 60 + 10 and longest <= 60
    for profile in PROFILES.values():
        calls, late, longest = simulate(3600.7, PollPlanner(2.0, 60.0), profile)
        assert calls <= 3600 / 60 + 10 and longest <= 60


def test_prediction_from_two_observations_exactly():
    p = PollPlanner(1.0, 100.0, landing_margin=0.5)
    assert p.predicted_remaining(10.0, 0, 100) is None
    assert p.predicted_remaining(20.0, 50, 50) == 10.0  # 5 per second, 50 left
    assert p.predicted_remaining(22.0, 50, 50) == 8.0  # no move: the same rate, 2 s already spent
    assert p.predicted_remaining(30.0, 50, 0) is None  # nothing pending
    assert p.predicted_remaining(31.0, 60, 1) == pytest.approx(1 / (10 / 11))


def test_next_delay_lands_just_after_the_predicted_end_within_the_cap():
    p = PollPlanner(1.0, 10.0, landing_margin=0.5)
    p.next_delay(0.0, 0, 100)
    assert p.next_delay(10.0, 10, 90) == 10.0  # 90 s left: capped
    p = PollPlanner(1.0, 10.0, landing_margin=0.5)
    p.next_delay(0.0, 0, 100)
    assert p.next_delay(10.0, 95, 5) == pytest.approx(5 / 9.5 + 0.5, rel=1e-9)
    p = PollPlanner(1.0, 10.0, landing_margin=0.5)
    p.next_delay(0.0, 0, 100)
    assert p.next_delay(10.0, 99, 1) == 1.0  # never below poll_interval
    p = PollPlanner(1.0, 10.0, landing_margin=1.0)
    p.next_delay(0.0, 0, 100)
    assert p.next_delay(10.0, 10, 9) == 10.0  # lands exactly at the cap: 9 + 1


def test_the_creation_time_at_now_counts_as_no_observation():
    p = PollPlanner(1.0, 100.0)
    assert p.predicted_remaining(10.0, 5, 95, created_at=10.0) is None
    assert p.predicted_remaining(20.0, 15, 85) == pytest.approx(85.0)  # rate from (10, 5): 1 per second


def test_retry_delay_backs_off_and_caps():
    p = PollPlanner(1.5, 5.0, backoff=3.0)
    assert [p.retry_delay() for _ in range(4)] == [1.5, 4.5, 5.0, 5.0]


def test_settings_at_their_limits():
    PollPlanner(0.001, 0.001)
    with pytest.raises(ValueError, match="poll_interval=0 is invalid: must be > 0 seconds"):
        PollPlanner(0, 1)
    with pytest.raises(ValueError, match=r"max_poll_interval=0.5 is invalid: must be >= poll_interval \(1.0\)"):
        PollPlanner(1.0, 0.5)
