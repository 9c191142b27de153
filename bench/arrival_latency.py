"""Arrival to store: a steady stream of files uploaded to the source bucket, imported by ``dicom_arrival_import``
(Cloud Storage notifications through Google's Pub/Sub emulator, a real Airflow on PostgreSQL, the local stack).

    python bench/arrival_latency.py [--per-minute 100] [--minutes 10] [--latency 0.05]

Each file is a small CT instance of its own study, uploaded with ``google-cloud-storage`` at an even pace; its
arrival is the end of its upload, and it is in the store when a DICOMweb search (QIDO-RS, polled every second) first
finds its study. Prints the latency's p50, p95 and maximum, how many files were imported, failed or are missing, and
how many runs and import operations it took. ``--latency``: the local Healthcare API's seconds per instance. Printed,
never asserted; the goal is p95 within 60 s with nothing lost.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import threading
import time

import requests
from _stack import local_stack
from dicomweb_client.api import DICOMwebClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from scripts.airflow_client import AirflowClient
from scripts.dicom_samples import make_study
from scripts.stack import AIRFLOW_LOCAL_PASSWORD, AIRFLOW_USERNAME, DEMO_IDS

ARRIVALS = "dicom_arrival_import"
STORE = (
    f"projects/{DEMO_IDS['GCP_PROJECT']}/locations/{DEMO_IDS['HEALTHCARE_LOCATION']}/datasets/"
    f"{DEMO_IDS['HEALTHCARE_DATASET']}/dicomStores/{DEMO_IDS['DICOM_STORE']}"
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def all_runs(client: AirflowClient) -> list[dict]:
    """Every run of the arrival DAG: the REST API returns at most 100 a page ([api] maximum_page_limit)."""
    runs: list[dict] = []
    while True:
        page = client.runs(ARRIVALS, limit=100, offset=len(runs))
        runs += page
        if len(page) < 100:
            return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-minute", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    total = int(args.per_minute * args.minutes)
    day = dt.date.today().isoformat()
    with local_stack(db="postgres", pubsub=True, latency=args.latency) as stack:
        stack.start_airflow()
        try:
            env = stack.stack_env()
            os.environ["STORAGE_EMULATOR_HOST"] = env["STORAGE_EMULATOR_HOST"]
            gcs = storage.Client(project=DEMO_IDS["GCP_PROJECT"], credentials=AnonymousCredentials())
            bucket = gcs.create_bucket(DEMO_IDS["SOURCE_BUCKET"])
            endpoint = env["HEALTHCARE_API_ENDPOINT"]
            stack_parent = STORE.split("/datasets/")[0]
            requests.post(
                f"{endpoint}/v1/{stack_parent}/datasets",
                params={"datasetId": DEMO_IDS["HEALTHCARE_DATASET"]},
                timeout=10,
            ).raise_for_status()
            dataset = STORE.split("/dicomStores/")[0]
            while not requests.get(f"{endpoint}/v1/{dataset}", timeout=10).ok:
                time.sleep(0.2)
            requests.post(
                f"{endpoint}/v1/{dataset}/dicomStores", params={"dicomStoreId": DEMO_IDS["DICOM_STORE"]}, timeout=10
            ).raise_for_status()
            client = AirflowClient(f"http://127.0.0.1:{stack.ports.airflow}", AIRFLOW_USERNAME, AIRFLOW_LOCAL_PASSWORD)
            client.wait_for_dags([ARRIVALS])
            client.unpause(ARRIVALS)
            files = [
                make_study("CT", day.replace("-", ""), per_series=1, seed=i, rows=32, cols=32)[0] for i in range(total)
            ]
            uploaded: dict[str, float] = {}
            seen: dict[str, float] = {}
            web = DICOMwebClient(f"{endpoint}/v1/{STORE}/dicomWeb")
            done = threading.Event()

            def watch() -> None:
                while not done.is_set():
                    now = time.time()
                    for study in web.search_for_studies(limit=100000) or []:
                        uid = study["0020000D"]["Value"][0]
                        seen.setdefault(uid, now)
                    time.sleep(1.0)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            pace = 60.0 / args.per_minute
            start = time.time()
            print(f"uploading {total} files, {args.per_minute} a minute, for {args.minutes:g} minutes")
            for i, instance in enumerate(files):
                time.sleep(max(0.0, start + i * pace - time.time()))
                bucket.blob(f"incoming/{day}/{instance.study}/{instance.sop}.dcm").upload_from_string(instance.data)
                uploaded[instance.study] = time.time()
            deadline = time.time() + 300
            while len(seen.keys() & uploaded.keys()) < total and time.time() < deadline:
                time.sleep(1.0)
            done.set()
            watcher.join()
            runs = all_runs(client)
            while any(r["state"] not in ("success", "failed") for r in runs) and time.time() < deadline:
                time.sleep(1.0)
                runs = all_runs(client)
            ops = requests.get(f"{endpoint}/v1/{dataset}/operations", params={"pageSize": 1000}, timeout=10).json()
            imports = [o for o in ops.get("operations", []) if "Import" in o["metadata"].get("apiMethodName", "")]
            succeeded = sum(int(o["metadata"].get("counter", {}).get("success", 0)) for o in imports)
            failed = sum(int(o["metadata"].get("counter", {}).get("failure", 0)) for o in imports)
            latencies = [seen[s] - uploaded[s] for s in uploaded if s in seen]
            print(
                f"arrival to store (DICOMweb): p50 {percentile(latencies, 0.5):.1f} s, p95 "
                f"{percentile(latencies, 0.95):.1f} s, max {max(latencies, default=float('nan')):.1f} s, "
                f"mean {statistics.fmean(latencies) if latencies else float('nan'):.1f} s"
            )
            print(
                f"files: {total} uploaded, {len(latencies)} in the store, {succeeded} imported and {failed} failed by "
                f"the operations, {total - len(latencies)} missing"
            )
            states = [r["state"] for r in runs]
            print(
                f"runs: {len(runs)} ({states.count('success')} succeeded, {states.count('failed')} failed), "
                f"{len(imports)} import operations, {total / max(len(imports), 1):.1f} files per operation"
            )
        finally:
            stack.stop_airflow()


if __name__ == "__main__":
    main()
