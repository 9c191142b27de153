"""`make demo`: start the local stack and Airflow, run the main job through the REST API, print a summary.

1. seed three days of synthetic DICOM files into the local GCS (scripts/demo_data.py);
2. backfill those three nights of `dicom_nightly_import` through the REST API;
3. trigger `dicom_filtered_export` for the CT studies of the first two days;
4. print what was imported, what failed and what was exported, and where to look;
5. keep Airflow running until Ctrl-C (or `make stop` from another terminal).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import sys
import time
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from scripts.airflow_client import AirflowClient
from scripts.demo_data import DAYS, seed
from scripts.stack import AIRFLOW_LOCAL_PASSWORD, AIRFLOW_USERNAME, DEMO_IDS, REPO, Stack, one_night_catchup_start

IMPORT, FILTERED, EXPORT = "dicom_nightly_import", "dicom_filtered_export", "dicom_export"
DEID = "dicom_deidentified_export"


def main() -> int:
    os.environ.setdefault("DICOM_IMPORT_START_DATE", one_night_catchup_start())
    stack = Stack(
        Path(os.environ.get("STACK_DIR", REPO / ".stack")),
        int(os.environ.get("STACK_PORT_BASE", "18400")),
        os.environ.get("STACK_DB", "postgres"),
        executor=os.environ.get("STACK_EXECUTOR", "local"),
        code=os.environ.get("STACK_CODE", "package"),
    )
    print("Starting the local stack (GCS, BigQuery, Healthcare API) and Airflow on 127.0.0.1 ...", flush=True)
    stack.start_stack()
    stack.start_airflow()
    env = stack.stack_env()
    os.environ["STORAGE_EMULATOR_HOST"] = env["STORAGE_EMULATOR_HOST"]
    gcs = storage.Client(project=DEMO_IDS["GCP_PROJECT"], credentials=AnonymousCredentials())
    seeded = seed(gcs, DEMO_IDS["SOURCE_BUCKET"])
    for bucket in (DEMO_IDS["EXPORT_BUCKET"], DEMO_IDS["RESEARCH_BUCKET"]):
        if not gcs.bucket(bucket).exists():
            gcs.create_bucket(bucket)
    print(f"Seeded gs://{DEMO_IDS['SOURCE_BUCKET']}/incoming/{{{','.join(DAYS)}}}/", flush=True)

    ui = f"http://127.0.0.1:{stack.ports.airflow}"
    client = AirflowClient(ui, AIRFLOW_USERNAME, AIRFLOW_LOCAL_PASSWORD)
    client.wait_for_dags([IMPORT, FILTERED, EXPORT, DEID])
    for dag_id in (IMPORT, FILTERED, EXPORT, DEID):
        client.unpause(dag_id)

    print("Backfilling the nightly import for the three sample days (REST API) ...", flush=True)
    started = dt.datetime.now(dt.UTC).isoformat()
    client.ok(
        "POST",
        "/backfills",
        json={
            "dag_id": IMPORT,
            "from_date": f"{DAYS[0]}T00:00:00Z",
            "to_date": f"{DAYS[-1]}T00:00:00Z",
            "max_active_runs": 1,
            "dag_run_conf": {"max_failure_ratio": 0.5},
            "reprocess_behavior": "completed",
        },
    )
    runs = wait_backfill(client, started)

    print("Triggering the filtered export: CT studies of the first two days (REST API, conf) ...", flush=True)
    prefix = f"gs://{DEMO_IDS['EXPORT_BUCKET']}/exports/demo-ct-{int(time.time())}"
    run = client.trigger(
        FILTERED,
        {
            "modalities": ["CT"],
            "study_date_from": DAYS[0],
            "study_date_to": DAYS[1],
            "granularity": "series",
            "destination_prefix": prefix,
        },
    )
    export_run = client.wait_run(FILTERED, run["dag_run_id"], timeout=600)

    print("Triggering the de-identified research export of the same cohort (REST API, conf) ...", flush=True)
    deid = client.trigger(DEID, {"modalities": ["CT"], "study_date_from": DAYS[0], "study_date_to": DAYS[1]})
    deid_run = client.wait_run(DEID, deid["dag_run_id"], timeout=600)
    if deid_run["state"] == "success":
        cohort = client.xcom(DEID, deid["dag_run_id"], "check_cohort")
        print(f"  de-identified export: {cohort['instances']} instances in {cohort['uri_prefix']}/", flush=True)

    print_summary(client, runs, export_run, prefix, seeded, stack, ui)
    if deid_run["state"] != "success" or export_run["state"] != "success" or any(r["state"] != "success" for r in runs):
        print("Some runs failed: open the UI above for their task logs.")
    return wait_for_stop(stack)


def wait_backfill(client: AirflowClient, started: str, timeout: float = 600) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = [
            r
            for r in client.runs(IMPORT, run_type="backfill")
            if r["data_interval_start"][:10] in DAYS and (r.get("end_date") or "") >= started
        ]
        if len(runs) == len(DAYS) and all(r["state"] in ("success", "failed") for r in runs):
            return sorted(runs, key=lambda r: r["data_interval_start"])
        time.sleep(2)
    raise TimeoutError("the backfill did not finish in time; see the Airflow UI")


def print_summary(client, runs, export_run, prefix, seeded, stack, ui) -> None:
    print("\n================ DICOM pipelines: summary ================")
    total_ok = total_failed = 0
    for run in runs:
        day = run["data_interval_start"][:10]
        try:
            result = client.xcom(IMPORT, run["dag_run_id"], "import_dicom")
            total_ok += result["success"]
            total_failed += result["failure"]
            print(
                f"  nightly import {day}: {result['success']} instances imported, {result['failure']} failed "
                f"({run['state']})"
            )
            for failed in result.get("failed_sources", []):
                print(f"      failed: {failed['source']}: {failed['message']}")
            if result.get("failure_report_uri"):
                print(f"      failure report: {result['failure_report_uri']}")
        except RuntimeError:
            print(f"  nightly import {day}: {run['state']} (no result)")
    print(f"  total: {total_ok} imported, {total_failed} failed")
    try:
        verify = client.xcom(FILTERED, export_run["dag_run_id"], "verify_export")
        print(
            f"  filtered export (CT, {DAYS[0]}..{DAYS[1]}): {verify['objects']} objects in {prefix}/ "
            f"({verify['instances']} instances, {export_run['state']})"
        )
    except RuntimeError:
        print(f"  filtered export: {export_run['state']}")
    print(f"\n  Airflow UI:  {ui}   user {AIRFLOW_USERNAME} / password {AIRFLOW_LOCAL_PASSWORD}")
    print(
        f"  Local APIs:  source {stack.dir / 'env'} (STORAGE_EMULATOR_HOST, BIGQUERY_EMULATOR_HOST, "
        "HEALTHCARE_API_ENDPOINT)"
    )
    print(f"  Logs:        {stack.dir / 'logs'} and {stack.dir / 'airflow' / 'logs'}")
    print("===========================================================\n", flush=True)


def wait_for_stop(stack: Stack) -> int:
    if os.environ.get("DEMO_WAIT", "1") == "0" or not sys.stdin.isatty():
        print("Airflow and the local stack keep running; `make stop` stops them.")
        return 0
    print("Press Ctrl-C to stop everything (or run `make stop` in another terminal).", flush=True)
    try:
        while stack.pid("api-server"):
            time.sleep(2)
    except KeyboardInterrupt:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("\nStopping ...", flush=True)
    stack.stop_airflow()
    stack.stop_stack()
    return 0


if __name__ == "__main__":
    sys.exit(main())
