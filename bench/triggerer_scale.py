"""1,000 concurrent operations polled by 1,000 trigger coroutines in one event loop (one triggerer's worth).

    python bench/triggerer_scale.py [--operations 1000] [--duration 120] [--sessions shared|per-trigger]

The local Healthcare API serves synthetic operations whose counters follow the clock (no thread
per operation). Prints this process's RSS delta, its CPU use (% of one core) while polling, the
number of operations.get calls and how late completions were detected. The triggers log as in a triggerer's
runner process: JSON lines to a channel (here a file), so their progress lines are part of the measured CPU.
``--sessions per-trigger`` gives every trigger its own aiohttp session, to measure what sharing one per event
loop saves.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import psutil
import requests
from _stack import local_stack


def log_as_the_triggerer_runner_does(path: str):
    """Airflow's trigger runner sends each trigger's log lines as JSON to the triggerer over a file descriptor."""
    from airflow.sdk.log import configure_logging

    channel = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by the caller
    configure_logging(json_output=True, output=channel, sending_to_supervisor=True)
    return channel


def use_one_session_per_trigger() -> None:
    """The comparison: what the async hook would do without sharing its session."""
    import aiohttp

    from dicom_pipelines.hooks import CloudHealthcareDicomAsyncHook

    def acquire(self):
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.request_timeout))
        return self._session

    async def close(self):
        if self._session is not None:
            await self._session.close()
            self._session = None

    CloudHealthcareDicomAsyncHook._acquire_session = acquire
    CloudHealthcareDicomAsyncHook.close = close


async def run_all(names: list[str], poll: float, cap: float) -> list[tuple[str, float]]:
    from dicom_pipelines.triggers import HealthcareOperationTrigger

    async def one(name: str) -> tuple[str, float]:
        trigger = HealthcareOperationTrigger(name, poll_interval=poll, max_poll_interval=cap)
        async for event in trigger.run():
            return event.payload["status"], time.time()
        return "none", time.time()

    return await asyncio.gather(*(one(n) for n in names))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--operations", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds each operation runs")
    ap.add_argument("--sessions", choices=["shared", "per-trigger"], default="shared")
    args = ap.parse_args()
    os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = (
        '{"conn_type": "google_cloud_platform", "extra": {"is_anonymous": true}}'
    )
    with local_stack() as stack:
        base = os.environ["HEALTHCARE_API_ENDPOINT"]
        parent = "projects/bench/locations/l"
        created = requests.post(f"{base}/v1/{parent}/datasets", params={"datasetId": "d"}, json={}, timeout=30)
        created.raise_for_status()
        while not created.json().get("done"):  # datasets.create is an operation, as on Google
            time.sleep(0.1)
            created = requests.get(f"{base}/v1/{created.json()['name']}", timeout=30)
        names = requests.post(
            f"{base}/v1/{parent}/datasets/d/admin/syntheticOperations",
            timeout=300,
            json={"count": args.operations, "durationSeconds": args.duration, "instances": 1000},
        ).json()["operations"]
        started = time.time()
        # The import cost of the trigger and its hook is not part of the measured delta.
        import dicom_pipelines.hooks  # noqa: F401
        import dicom_pipelines.triggers  # noqa: F401

        if args.sessions == "per-trigger":
            use_one_session_per_trigger()
        log_path = str(stack.dir / "trigger-logs.jsonl")
        channel = log_as_the_triggerer_runner_does(log_path)

        proc = psutil.Process()
        rss0 = proc.memory_info().rss
        cpu0 = proc.cpu_times()
        calls0 = requests.get(f"{base}/admin/stats", timeout=30).json()["requests"].get("operations.get", 0)
        t0 = time.time()
        results = asyncio.run(run_all(names, 2.0, 60.0))
        wall = time.time() - t0
        cpu = proc.cpu_times()
        rss_peak = proc.memory_info().rss
        calls = requests.get(f"{base}/admin/stats", timeout=30).json()["requests"].get("operations.get", 0) - calls0
        channel.close()
        with open(log_path, "rb") as lines:
            logged = sum(1 for _ in lines)
    done_at = started + args.duration
    lateness = sorted(max(0.0, t - done_at) for _, t in results)
    statuses = {s: sum(1 for x, _ in results if x == s) for s in {x for x, _ in results}}
    cpu_s = (cpu.user - cpu0.user) + (cpu.system - cpu0.system)
    print(f"operations: {args.operations} x {args.duration:.0f}s, sessions: {args.sessions}, events: {statuses}")
    print(
        f"RSS delta: {(rss_peak - rss0) / 1e6:.1f} MB   CPU: {100 * cpu_s / wall:.1f}% of one core "
        f"({cpu_s:.1f}s CPU over {wall:.1f}s)"
    )
    print(f"operations.get calls: {calls} ({calls / args.operations:.1f} per operation), log lines: {logged}")
    print(f"detection delay: median {lateness[len(lateness) // 2]:.1f}s, max {lateness[-1]:.1f}s")


if __name__ == "__main__":
    main()
