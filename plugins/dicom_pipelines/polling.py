"""When to poll a long-running operation next: backoff, plus a prediction from the progress counters.

Shared by the trigger (async), the operators' synchronous wait and the sensor, and simulated by
``bench/polling.py``. Pure: it is fed observations and a clock, and does no I/O.

Without usable progress it backs off exponentially from ``poll_interval`` to ``max_poll_interval``.
Once ``pending`` has gone down between two observations, it estimates the completion time from the
average rate since the first observation and sleeps most of the predicted remainder (at most
``max_predicted_sleep``), then lands just after the predicted end. A one-hour operation is then
detected with about ten calls, a second or two late, instead of the sixty calls of a fixed 60 s poll.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PollPlanner:
    poll_interval: float = 2.0
    max_poll_interval: float = 60.0
    backoff: float = 2.0
    max_predicted_sleep: float = 900.0
    approach_fraction: float = 0.75
    landing_margin: float = 1.0
    _delay: float = field(default=0.0, init=False)
    _first: tuple[float, int] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval={self.poll_interval!r} is invalid: must be > 0 seconds")
        if self.max_poll_interval < self.poll_interval:
            raise ValueError(
                f"max_poll_interval={self.max_poll_interval!r} is invalid: must be >= poll_interval ({self.poll_interval})"
            )
        self._delay = self.poll_interval

    def predicted_remaining(self, now: float, processed: int, pending: int) -> float | None:
        """Seconds until completion at the average rate seen so far, or None if unknown."""
        if self._first is None:
            self._first = (now, processed)
            return None
        t0, p0 = self._first
        if pending <= 0 or processed <= p0 or now <= t0:
            return None
        rate = (processed - p0) / (now - t0)
        return pending / rate

    def retry_delay(self) -> float:
        """Wait after a transient error: the backoff step, leaving the progress estimate alone."""
        delay = self._delay
        self._delay = min(self._delay * self.backoff, self.max_poll_interval)
        return delay

    def next_delay(self, now: float, processed: int, pending: int) -> float:
        """Seconds to wait before the next poll, given the latest counters."""
        remaining = self.predicted_remaining(now, processed, pending)
        if remaining is None:
            return self.retry_delay()
        if remaining * (1 - self.approach_fraction) > 10 * self.landing_margin:
            delay = remaining * self.approach_fraction
        else:
            delay = remaining + self.landing_margin
        return max(self.poll_interval, min(delay, max(self.max_predicted_sleep, self.max_poll_interval)))
