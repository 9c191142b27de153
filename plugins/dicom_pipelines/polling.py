"""When to poll a long-running operation next: backoff, plus a landing prediction from the counters.

Shared by the trigger (async), the operators' synchronous wait and the sensor, and simulated by
``bench/polling.py``. Pure: it is fed observations and a clock, and does no I/O.

The promise: **no wait is longer than ``max_poll_interval``**, so completion is seen at most that late,
whatever the operation's progress profile (steady, accelerating, a stall then a burst, or counters that
only move at the end). No prediction can keep that promise with longer sleeps: a burst may end the
operation right after a long sleep starts.

Without usable progress it backs off exponentially from ``poll_interval`` to ``max_poll_interval``.
Once ``pending`` goes down, it estimates the end from the recent rate (between the last two observations
that moved) and, when that end falls inside the next wait, polls just after it instead, so a steady
operation is seen done about ``landing_margin`` seconds late rather than up to ``max_poll_interval``.

The operation's creation (its ``metadata.createTime``) counts as the first observation: nothing was processed
then. So the first poll that sees progress already gives a rate, and a trigger that starts a few seconds after
the submission needs no second poll to learn it. An operation that waited in a queue before starting looks
slower than it is at first; that can only make a wait longer, never past ``max_poll_interval``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PollPlanner:
    poll_interval: float = 2.0
    max_poll_interval: float = 60.0
    backoff: float = 2.0
    landing_margin: float = 1.0
    _delay: float = field(default=0.0, init=False)
    _last_move: tuple[float, int] | None = field(default=None, init=False)
    _rate: float | None = field(default=None, init=False)
    remaining: float | None = field(default=None, init=False)
    """Seconds to the predicted end as of the latest :meth:`next_delay`, or None while the rate is unknown."""

    def __post_init__(self) -> None:
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval={self.poll_interval!r} is invalid: must be > 0 seconds")
        if self.max_poll_interval < self.poll_interval:
            raise ValueError(
                f"max_poll_interval={self.max_poll_interval!r} is invalid: "
                f"must be >= poll_interval ({self.poll_interval})"
            )
        self._delay = self.poll_interval

    def predicted_remaining(
        self, now: float, processed: int, pending: int, created_at: float | None = None
    ) -> float | None:
        """Seconds until completion at the most recent rate seen, or None if unknown.

        ``created_at`` (epoch seconds) is when the operation was created, if known: zero processed then.
        """
        if self._last_move is None:
            if created_at is None or created_at >= now:
                self._last_move = (now, processed)
                return None
            self._last_move = (created_at, 0)
        t0, p0 = self._last_move
        if processed > p0 and now > t0:
            self._rate = (processed - p0) / (now - t0)
            self._last_move = (now, processed)
        if self._rate is None or pending <= 0:
            return None
        return max(0.0, pending / self._rate - (now - self._last_move[0]))

    def retry_delay(self) -> float:
        """Wait after a transient error, or while progress is unknown: the backoff step."""
        delay = self._delay
        self._delay = min(self._delay * self.backoff, self.max_poll_interval)
        return delay

    def next_delay(self, now: float, processed: int, pending: int, created_at: float | None = None) -> float:
        """Seconds to wait before the next poll, given the latest counters; never more than ``max_poll_interval``."""
        remaining = self.remaining = self.predicted_remaining(now, processed, pending, created_at)
        if remaining is None:
            return self.retry_delay()
        landing = remaining + self.landing_margin
        if landing <= self.max_poll_interval:
            return max(self.poll_interval, landing)
        return self.max_poll_interval
