"""A 30-night backfill through the REST API, on the CeleryExecutor (two workers, two triggerers) and on the
LocalExecutor, each with a real Airflow on PostgreSQL and the local stack.

    python bench/backfill_executors.py [--nights 30] [--per-night 3] [--executors local,celery]

Each night's folder holds ``per-night`` small DICOM files. The backfill is created as the UI's dialog creates it
(max active runs 10); nights still import in date order (``wait_for_previous_run``). Prints, per executor, the wall
time from the backfill request to the last night's end, the median run time, and the scheduler delay: how long a
task waited between being queued and starting (median and 95th percentile over every task instance). Printed,
never asserted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import time

from _stack import local_stack
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from scripts.airflow_client import AirflowClient
from scripts.dicom_samples import make_study
from scripts.stack import AIRFLOW_LOCAL_PASSWORD, AIRFLOW_USERNAME, DEMO_IDS, one_night_catchup_start

IMPORT, BUCKET = "dicom_nightly_import", "bench-nights"


def seconds(later: str | None, earlier: str | None) -> float | None:
    if not later or not earlier:
        return None
    return (dt.datetime.fromisoformat(later) - dt.datetime.fromisoformat(earlier)).total_seconds()


def one_backfill(executor: str, days: list[str], per_night: int) -> str:
    os.environ["DICOM_IMPORT_START_DATE"] = one_night_catchup_start()  # the DAG files read it when parsed
    with local_stack(db="postgres", executor=executor) as stack:
        stack.start_airflow()
        try:
            gcs = storage.Client(project=DEMO_IDS["GCP_PROJECT"], credentials=AnonymousCredentials())
            bucket = gcs.create_bucket(BUCKET)
            for day in days:
                for inst in make_study("CT", day.replace("-", ""), per_series=per_night, patient_id=f"B-{day}"):
                    bucket.blob(f"nights/{day}/{inst.sop}.dcm").upload_from_string(inst.data)
            client = AirflowClient(f"http://127.0.0.1:{stack.ports.airflow}", AIRFLOW_USERNAME, AIRFLOW_LOCAL_PASSWORD)
            client.wait_for_dags([IMPORT])
            client.unpause(IMPORT)
            client.wait_runs(IMPORT, 1, run_type="scheduled")
            conf = {"dicom_store_id": f"bench-{executor}", "source_bucket": BUCKET, "source_prefix": "nights"}
            t0 = time.time()
            client.backfill(IMPORT, f"{days[0]}T00:00:00Z", f"{days[-1]}T00:00:00Z", conf, max_active_runs=10)
            runs = client.wait_runs(IMPORT, len(days), timeout=3600, run_type="backfill")
            wall = time.time() - t0
            delays, durations = [], []
            for run in runs:
                durations.append(seconds(run["end_date"], run["start_date"]) or 0.0)
                tis = client.ok("GET", f"/dags/{IMPORT}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
                delays += [d for ti in tis if (d := seconds(ti.get("start_date"), ti.get("queued_when"))) is not None]
            states = {s: sum(1 for r in runs if r["state"] == s) for s in {r["state"] for r in runs}}
        finally:
            stack.stop_airflow()
    delays.sort()
    return (
        f"{executor:6}: {len(days)} nights {states} in {wall:6.1f}s wall ({wall / len(days):.1f}s per night); "
        f"run median {statistics.median(durations):.1f}s; scheduler delay (queued to started) median "
        f"{statistics.median(delays):.2f}s, p95 {delays[int(len(delays) * 0.95) - 1]:.2f}s over {len(delays)} tasks"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nights", type=int, default=30)
    ap.add_argument("--per-night", type=int, default=3)
    ap.add_argument("--executors", default="local,celery")
    args = ap.parse_args()
    first = dt.date(2026, 10, 1)
    days = [(first + dt.timedelta(days=n)).isoformat() for n in range(args.nights)]
    lines = [one_backfill(executor, days, args.per_night) for executor in args.executors.split(",")]
    print(f"backfill of {args.nights} nights x {args.per_night} instances, max active runs 10, PostgreSQL:")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
