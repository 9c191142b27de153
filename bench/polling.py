"""Polling cost and detection delay of our trigger on four progress profiles, against fixed 5 s polling.

    python bench/polling.py

The real ``HealthcareOperationTrigger.run()`` is driven on a virtual clock (its ``time.time`` and
``asyncio.sleep`` are replaced), against an operation whose counters follow a profile and that is
done after 1 min, 10 min and 1 h. The first poll comes 3 s after the operation's ``createTime``. Prints API
calls and how late completion was detected; the trigger promises at most ``max_poll_interval`` (60 s) late on
every profile.

Profiles (fraction done at fraction ``x`` of the duration):
- steady: ``x``;
- accelerating: ``x**2``;
- stall then burst: 1 % over the first 90 %, then the other 99 % in the last 10 %;
- counters only at the end: nothing moves until the operation is done.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from unittest import mock

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "plugins")]

from dicom_pipelines import triggers  # noqa: E402
from dicom_pipelines.triggers import HealthcareOperationTrigger  # noqa: E402

EPOCH = 1_800_000_000.0
TOTAL = 10_000
MAX_POLL_INTERVAL = 60.0
PROFILES = {
    "steady": lambda x: x,
    "accelerating": lambda x: x * x,
    "stall then burst": lambda x: 0.01 * x / 0.9 if x < 0.9 else 0.01 + 0.99 * (x - 0.9) / 0.1,
    "counters at end": lambda x: 0.0,
}


TRIGGER_START_S = 3.0
"""When the first poll comes, after the submission: the operator checks once, defers, and a triggerer picks it up."""
CREATE_TIME = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EPOCH))


class Clock:
    def __init__(self) -> None:
        self.now = TRIGGER_START_S

    def time(self) -> float:
        return EPOCH + self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class FakeOperationHook:
    """Answers operations.get like the API: counters follow the virtual clock."""

    def __init__(self, clock: Clock, duration: float, profile=PROFILES["steady"]):
        self.clock, self.duration, self.profile, self.calls = clock, duration, profile, 0

    async def get_operation(self, name: str) -> dict:
        self.calls += 1
        t = self.clock.now
        done = t >= self.duration
        processed = TOTAL if done else int(TOTAL * self.profile(t / self.duration))
        counter = {"success": str(processed), "pending": str(TOTAL - processed)}
        op = {"name": name, "metadata": {"createTime": CREATE_TIME, "counter": counter}}
        if done:
            op["done"] = True
        return op

    async def cancel_operation(self, name: str) -> None:
        pass

    async def close(self) -> None:
        pass


def run_trigger(duration: float, profile) -> tuple[int, float]:
    clock = Clock()
    hook = FakeOperationHook(clock, duration, profile)
    trigger = HealthcareOperationTrigger(
        "projects/p/locations/l/datasets/d/operations/1", poll_interval=2.0, max_poll_interval=MAX_POLL_INTERVAL
    )
    trigger._hook = hook

    async def go() -> None:
        async for _ in trigger.run():
            return

    with (
        mock.patch.object(triggers.time, "time", clock.time),
        mock.patch.object(triggers.asyncio, "sleep", clock.sleep),
        mock.patch.object(triggers.HealthcareOperationTrigger, "log"),
    ):
        asyncio.run(go())
    return hook.calls, clock.now - duration


def run_fixed(duration: float, interval: float) -> tuple[int, float]:
    clock = Clock()
    hook = FakeOperationHook(clock, duration)

    async def go() -> None:
        while not (await hook.get_operation(name="op")).get("done"):
            await clock.sleep(interval)

    asyncio.run(go())
    return hook.calls, clock.now - duration


def main() -> None:
    durations = (("1 min", 60.7), ("10 min", 600.7), ("1 h", 3600.7))  # +0.7 s: no lucky round numbers
    print(f"our trigger (poll_interval 2 s, max_poll_interval {MAX_POLL_INTERVAL:.0f} s) vs fixed 5 s polling")
    print(
        f"{'profile':>17} {'operation':>9} | {'ours: calls':>11} {'late (s)':>9} | {'fixed 5 s: calls':>16} "
        f"{'late (s)':>9}"
    )
    worst, most_calls_per_hour, steady_hour_late = 0.0, 0, 0.0
    for name, profile in PROFILES.items():
        for label, duration in durations:
            calls, late = run_trigger(duration, profile)
            worst = max(worst, late)
            if label == "1 h":
                most_calls_per_hour = max(most_calls_per_hour, calls)
                steady_hour_late = late if name == "steady" else steady_hour_late
            five = run_fixed(duration, 5.0)
            print(f"{name:>17} {label:>9} | {calls:>11} {late:>9.1f} | {five[0]:>16} {five[1]:>9.1f}")
    print(
        f"latest detection on any profile: {worst:.1f} s after completion "
        f"(promise: at most max_poll_interval = {MAX_POLL_INTERVAL:.0f} s)"
    )
    print(f"a steady 1 h operation is seen {steady_hour_late:.1f} s late (promise: at most 2 s)")
    print(
        f"most calls in an hour on any profile: {most_calls_per_hour} "
        f"(promise: at most 3600 / max_poll_interval + 10 = {3600 / MAX_POLL_INTERVAL + 10:.0f})"
    )


if __name__ == "__main__":
    main()
