"""Polling cost and detection delay: our trigger against fixed 5 s and fixed 0.5 s polling.

    python bench/polling.py

The real ``HealthcareOperationTrigger.run()`` is driven on a virtual clock (its ``time.time`` and
``asyncio.sleep`` are replaced), against an operation whose ``pending`` counter falls steadily and
that is done after 1 min, 10 min and 1 h. Prints API calls and how late completion was detected.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from unittest import mock

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "plugins")]

from dicom_pipelines import triggers  # noqa: E402
from dicom_pipelines.triggers import HealthcareOperationTrigger  # noqa: E402

EPOCH = 1_800_000_000.0
TOTAL = 10_000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return EPOCH + self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class FakeOperationHook:
    """Answers operations.get like the API: counters follow the virtual clock."""

    def __init__(self, clock: Clock, duration: float):
        self.clock, self.duration, self.calls = clock, duration, 0

    async def get_operation(self, name: str) -> dict:
        self.calls += 1
        t = self.clock.now
        done = t >= self.duration
        processed = TOTAL if done else int(TOTAL * t / self.duration)
        op = {"name": name, "metadata": {"counter": {"success": str(processed), "pending": str(TOTAL - processed)}}}
        if done:
            op["done"] = True
        return op

    async def cancel_operation(self, name: str) -> None:
        pass

    async def close(self) -> None:
        pass


def run_trigger(duration: float) -> tuple[int, float]:
    clock = Clock()
    hook = FakeOperationHook(clock, duration)
    trigger = HealthcareOperationTrigger("projects/p/locations/l/datasets/d/operations/1", poll_interval=2.0,
                                         max_poll_interval=60.0)
    trigger._hook = hook

    async def go() -> None:
        async for _ in trigger.run():
            return

    with mock.patch.object(triggers.time, "time", clock.time), mock.patch.object(triggers.asyncio, "sleep", clock.sleep), \
            mock.patch.object(triggers.HealthcareOperationTrigger, "log"):
        asyncio.run(go())
    return hook.calls, clock.now - duration


def run_fixed(duration: float, interval: float) -> tuple[int, float]:
    clock = Clock()
    hook = FakeOperationHook(clock, duration)

    async def go() -> None:
        while not (await hook.get_operation("op")).get("done"):
            await clock.sleep(interval)

    asyncio.run(go())
    return hook.calls, clock.now - duration


def main() -> None:
    print(f"{'operation':>10} | {'our trigger':>22} | {'fixed 5 s':>22} | {'fixed 0.5 s':>22}")
    print(f"{'':>10} | {'calls':>8} {'late (s)':>13} | {'calls':>8} {'late (s)':>13} | {'calls':>8} {'late (s)':>13}")
    # +0.7 s so that no strategy lands exactly on the end by the luck of round numbers
    for label, duration in (("1 min", 60.7), ("10 min", 600.7), ("1 h", 3600.7)):
        ours, five, half = run_trigger(duration), run_fixed(duration, 5.0), run_fixed(duration, 0.5)
        print(f"{label:>10} | " + " | ".join(f"{c:>8} {late:>13.1f}" for c, late in (ours, five, half)))


if __name__ == "__main__":
    main()
