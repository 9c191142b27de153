"""End to end at realistic size: a nightly import of 10,000 CT-like instances (512x512, 16-bit, about 0.5 MB each,
made with pydicom), then a filtered export of 10 % of them, both run by a real Airflow on the local stack and
started through the REST API as a user's trigger would.

    python bench/end_to_end_scale.py [--instances 10000] [--dates 10] [--executor local|celery]

The instances spread over ``dates`` study dates; the export selects one date (10 % by default) from the table the
store streams its metadata to (``metadata_stream_table`` on the import, ``metadata_table`` on the export). Prints the
time of each task, the instances and bytes per second of the import and the export, and the total from the import's
trigger to the export's end (seeding the bucket is printed apart). Printed, never asserted.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor

import pydicom
from _stack import local_stack
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage
from pydicom.uid import generate_uid

from scripts.airflow_client import AirflowClient
from scripts.dicom_samples import make_instance
from scripts.stack import AIRFLOW_LOCAL_PASSWORD, AIRFLOW_USERNAME, DEMO_IDS, one_night_catchup_start

IMPORT, FILTERED, BUCKET = "dicom_nightly_import", "dicom_filtered_export", "scale-incoming"
DAY = "2026-11-20"
STREAM_TABLE = f"bq://{DEMO_IDS['GCP_PROJECT']}.{DEMO_IDS['BIGQUERY_DATASET']}.scale_stream"


def seconds(later: str | None, earlier: str | None) -> float:
    if not later or not earlier:
        return 0.0
    return (dt.datetime.fromisoformat(later) - dt.datetime.fromisoformat(earlier)).total_seconds()


def task_lines(client: AirflowClient, dag_id: str, run_id: str) -> list[str]:
    tis = client.ok("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    ran = sorted((ti for ti in tis if ti.get("start_date")), key=lambda ti: ti["start_date"])
    return [f"    {ti['task_id']:24} {seconds(ti['end_date'], ti['start_date']):6.1f}s  {ti['state']}" for ti in ran]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=10000)
    ap.add_argument("--dates", type=int, default=10)
    ap.add_argument("--per-study", type=int, default=100)
    ap.add_argument("--executor", default="local")
    args = ap.parse_args()
    template = pydicom.dcmread(io.BytesIO(make_instance("1.2", "1.2.1", "1.2.1.1", rows=512, cols=512, seed=7).data))
    dates = [(dt.date(2026, 10, 1) + dt.timedelta(days=n)).strftime("%Y%m%d") for n in range(args.dates)]
    os.environ["DICOM_IMPORT_START_DATE"] = start = one_night_catchup_start()
    with local_stack(db="postgres", executor=args.executor) as stack:
        stack.start_airflow()
        try:
            gcs = storage.Client(project=DEMO_IDS["GCP_PROJECT"], credentials=AnonymousCredentials())
            bucket = gcs.create_bucket(BUCKET)
            gcs.create_bucket(DEMO_IDS["EXPORT_BUCKET"])
            t0 = time.perf_counter()
            studies = [(generate_uid(), generate_uid()) for _ in range(-(-args.instances // args.per_study))]

            def put(i: int) -> int:
                study, series = studies[i // args.per_study]
                ds = copy.deepcopy(template)
                ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.StudyDate, ds.InstanceNumber = dates[(i // args.per_study) % args.dates], i % args.per_study + 1
                ds.PatientID = f"SCALE-{i // args.per_study:05d}"
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                bucket.blob(f"scale/{DAY}/{study}/{ds.SOPInstanceUID}.dcm").upload_from_string(buf.getvalue())
                return buf.tell()

            with ThreadPoolExecutor(8) as pool:
                total_bytes = sum(pool.map(put, range(args.instances)))
            seed_s = time.perf_counter() - t0
            client = AirflowClient(f"http://127.0.0.1:{stack.ports.airflow}", AIRFLOW_USERNAME, AIRFLOW_LOCAL_PASSWORD)
            client.wait_for_dags([IMPORT, FILTERED])
            client.unpause(IMPORT)
            client.unpause(FILTERED)
            client.wait_runs(IMPORT, 1, run_type="scheduled")
            t_all = time.time()
            night = client.trigger(
                IMPORT,
                {
                    "dicom_store_id": "scale",
                    "source_bucket": BUCKET,
                    "source_prefix": "scale",
                    "day": DAY,
                    "metadata_stream_table": STREAM_TABLE,
                },
                run_id="scale-import",
                logical_date=f"{start}T06:00:00Z",
            )
            imported = client.wait_run(IMPORT, night["dag_run_id"], timeout=3600)
            import_s = time.time() - t_all
            day = dates[0]
            t1 = time.time()
            export = client.trigger(
                FILTERED,
                {
                    "dicom_store_id": "scale",
                    "metadata_table": STREAM_TABLE,
                    "study_date_from": f"{day[:4]}-{day[4:6]}-{day[6:]}",
                    "study_date_to": f"{day[:4]}-{day[4:6]}-{day[6:]}",
                    "destination_prefix": f"gs://{DEMO_IDS['EXPORT_BUCKET']}/scale",
                },
                run_id="scale-export",
            )
            exported = client.wait_run(FILTERED, export["dag_run_id"], timeout=3600)
            export_s, total_s = time.time() - t1, time.time() - t_all
            counts = client.xcom(IMPORT, "scale-import", "import_dicom") if imported["state"] == "success" else {}
            export_counts = (
                client.xcom(FILTERED, "scale-export", "export_dicom") if exported["state"] == "success" else {}
            )
            lines = task_lines(client, IMPORT, "scale-import") + task_lines(client, FILTERED, "scale-export")
        finally:
            stack.stop_airflow()
    mb = total_bytes / 1e6
    n_export = int(export_counts.get("success", 0))
    print(
        f"{args.instances} instances, {mb:.0f} MB ({total_bytes / args.instances / 1e6:.2f} MB each, 512x512 16-bit), "
        f"{args.executor} executor; seeding the bucket took {seed_s:.0f}s"
    )
    print(
        f"nightly import: {imported['state']} in {import_s:.1f}s, {counts.get('success')} imported + "
        f"{counts.get('failure')} failed: {args.instances / import_s:.0f} instances/s, {mb / import_s:.0f} MB/s"
    )
    print(
        f"filtered export of one date: {exported['state']} in {export_s:.1f}s, {n_export} instances "
        f"({n_export / args.instances:.0%}): {n_export / export_s:.0f} instances/s, "
        f"{n_export * total_bytes / args.instances / 1e6 / export_s:.0f} MB/s"
    )
    print(f"end to end (import trigger to export end): {total_s:.1f}s")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
