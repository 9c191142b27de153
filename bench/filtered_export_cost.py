"""What a filtered export costs: the per-run metadata export against the table the store streams to.

    python bench/filtered_export_cost.py [--studies 1000] [--per-study 10] [--days 100]

Builds a store of studies x per-study instances (10,000 by default) on the local stack, over ``days``
study dates, each with a real CT header (pydicom's CT_small.dcm) on tiny pixels, with a ``streamConfigs``
table filled as the instances are imported (made by the Healthcare API, as ``ensure_store`` leaves it: a change
log, unpartitioned, read for each instance's latest row). Then it exports the
instances of one study date (1 % by default) twice, the way ``dicom_filtered_export`` does, with the same
hook, SQL file and clients:

- per run: export the whole store's metadata to BigQuery, run the filter query on it, extract, export;
- streamed: run the filter query on the streamed table, extract, export.

For each it prints the wall time of each stage and the BigQuery bytes: those the filter query processed, and
those the per-run metadata export wrote (a full copy of the store's metadata, PatientName and PatientID
included). The figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
from _stack import REPO, local_stack
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, storage
from jinja2 import Template
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicom_pipelines.bigquery import check_stream_table
from dicom_pipelines.hooks import CloudHealthcareDicomHook
from dicom_pipelines.polling import PollPlanner

PROJECT, DATASET, BUCKET = "bench", "meta", "bench"
SQL = Path(REPO / "include" / "sql" / "filter_paths.sql").read_text()


def realistic_header() -> pydicom.Dataset:
    """A real CT header (pydicom's bundled CT_small.dcm: its public and private attributes) on 16x16 pixels, so
    the metadata has a CT's width while the store stays small."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.Rows = ds.Columns = 16
    ds.PixelData = bytes(16 * 16 * 2)
    return ds


HEADER = realistic_header()


def wait(hook: CloudHealthcareDicomHook, op: dict) -> dict:
    status = hook.wait_for_operation(name=op["name"], planner=PollPlanner(0.2, 2.0))
    assert status.error_code in (0, 3) and status.done, status
    return {"success": status.success, "failure": status.failure}


def filter_query(bq: bigquery.Client, table: str, day: str, out_table: str = "", streamed: bool = True) -> int:
    """The DAG's filter query (include/sql/filter_paths.sql) on ``table``, a streamed change log or the store's
    metadata export; returns the bytes it processed (a dry run's estimate without ``out_table``)."""
    values = {"study_date_from": day, "study_date_to": day}
    project, dataset, name = table.split(".")
    params = {"granularity": "series", "project_id": project, "bigquery_dataset": dataset, **values}
    if streamed:
        params["metadata_table"] = f"bq://{table}"
    sql = Template(SQL).render(params=params, run_id="bench", store_metadata_table=lambda params: name)
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter(k, "STRING", v) for k, v in values.items()],
        destination=f"{PROJECT}.{DATASET}.{out_table}" if out_table else None,
        write_disposition="WRITE_TRUNCATE" if out_table else None,
        dry_run=not out_table,
    )
    job = bq.query(sql, job_config=config)
    if out_table:
        job.result()
    return int(job.total_bytes_processed or 0)


def extract_and_export(
    bq: bigquery.Client, hook: CloudHealthcareDicomHook, store: str, out_table: str, name: str
) -> tuple[dict, float, float]:
    t0 = time.perf_counter()
    bq.extract_table(
        f"{PROJECT}.{DATASET}.{out_table}",
        f"gs://{BUCKET}/filters/{name}.txt",
        job_config=bigquery.ExtractJobConfig(destination_format="CSV", print_header=False),
    ).result()
    extract_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    op = hook.export_dicom_to_gcs(
        store_name=store, uri_prefix=f"gs://{BUCKET}/out/{name}", filter_uri=f"gs://{BUCKET}/filters/{name}.txt"
    )
    counts = wait(hook, op)
    return counts, extract_s, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--per-study", type=int, default=10)
    ap.add_argument("--days", type=int, default=100)
    args = ap.parse_args()
    total = args.studies * args.per_study
    days = [f"2026{(i // 28) % 12 + 1:02d}{i % 28 + 1:02d}" for i in range(args.days)]  # DICOM DA
    with local_stack():
        os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = (
            '{"conn_type": "google_cloud_platform", "extra": {"project": "bench", "is_anonymous": true, '
            f'"healthcare_endpoint": "{os.environ["HEALTHCARE_API_ENDPOINT"]}", '
            f'"logging_endpoint": "{os.environ["LOGGING_API_ENDPOINT"]}"}}}}'
        )
        gcs = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
        bucket = gcs.create_bucket(BUCKET)
        bq = bigquery.Client(project=PROJECT, credentials=AnonymousCredentials())
        hook = CloudHealthcareDicomHook()
        stream_table = f"{PROJECT}.{DATASET}.stream"
        check_stream_table("google_cloud_default", stream_table, location="l", create_dataset=True)  # as ensure_store
        store = hook.ensure_dicom_store(
            project_id=PROJECT,
            location="l",
            dataset_id="d",
            dicom_store_id="s",
            stream_table_uri=f"bq://{stream_table}",
        )

        t0 = time.perf_counter()

        def put(i: int) -> int:
            study, series, size = generate_uid(), generate_uid(), 0
            for n in range(args.per_study):
                ds = copy.deepcopy(HEADER)
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, n + 1
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
                ds.Modality, ds.StudyDate = ("CT", "MR", "US", "CR")[i % 4], days[i % args.days]
                ds.PatientID, ds.PatientName = f"P-{i:05d}", f"Bench^Patient{i}"
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                bucket.blob(f"in/{study}/{ds.SOPInstanceUID}.dcm").upload_from_string(buf.getvalue())
                size += buf.tell()
            return size

        with ThreadPoolExecutor(8) as pool:
            size = sum(pool.map(put, range(args.studies)))
        seed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        imported = wait(hook, hook.import_dicom(store_name=store, gcs_uri=f"gs://{BUCKET}/in/**"))
        import_s = time.perf_counter() - t0
        assert imported["success"] == total, imported
        deadline = time.time() + 120
        while time.time() < deadline and bq.get_table(stream_table).num_rows < total:
            time.sleep(0.5)
        print(
            f"store: {total} instances ({len(HEADER)} attributes each, CT_small's header) in {args.studies} studies "
            f"over {args.days} days, {size / 1e6:.1f} MB; "
            f"seeded in {seed_s:.1f}s, imported (and streamed) in {import_s:.1f}s"
        )
        day = f"{days[0][:4]}-{days[0][4:6]}-{days[0][6:]}"  # the DAG's date params are ISO dates

        # per run: the whole store's metadata is exported first
        t_all = time.perf_counter()
        t0 = time.perf_counter()
        per_run_table = f"{PROJECT}.{DATASET}.meta_run"
        try:
            bq.delete_table(per_run_table)
        except NotFound:
            pass
        op = hook.export_dicom_to_bigquery(
            store_name=store, table_uri=f"bq://{per_run_table}", write_disposition="WRITE_TRUNCATE"
        )
        wait(hook, op)
        export_meta_s = time.perf_counter() - t0
        written = int(bq.get_table(per_run_table).num_bytes or 0)
        t0 = time.perf_counter()
        per_run_query = filter_query(bq, per_run_table, day, "filter_per_run", streamed=False)
        query_s = time.perf_counter() - t0
        counts, extract_s, export_s = extract_and_export(bq, hook, store, "filter_per_run", "per_run")
        per_run_s = time.perf_counter() - t_all
        print(
            f"per-run metadata export: {per_run_s:6.1f}s wall (metadata export {export_meta_s:.1f}s, query "
            f"{query_s:.1f}s, extract {extract_s:.1f}s, DICOM export {export_s:.1f}s); exported {counts['success']} "
            f"instances ({counts['success'] / total:.1%}); BigQuery bytes: {written:,} written + {per_run_query:,} "
            f"processed = {written + per_run_query:,}"
        )

        # streamed: the table is current already
        t_all = time.perf_counter()
        t0 = time.perf_counter()
        streamed_query = filter_query(bq, stream_table, day, "filter_streamed")
        query_s = time.perf_counter() - t0
        counts_b, extract_s, export_s = extract_and_export(bq, hook, store, "filter_streamed", "streamed")
        streamed_s = time.perf_counter() - t_all
        print(
            f"streamed metadata table: {streamed_s:6.1f}s wall (query {query_s:.1f}s, extract {extract_s:.1f}s, "
            f"DICOM export {export_s:.1f}s); exported {counts_b['success']} instances; BigQuery bytes: "
            f"{streamed_query:,} processed (the change log's current rows, unpartitioned)"
        )
        assert counts_b == counts, (counts, counts_b)
        print(
            f"streamed vs per run: {(written + per_run_query) / max(streamed_query, 1):.1f}x fewer BigQuery bytes, "
            f"{per_run_s / streamed_s:.1f}x faster"
        )


if __name__ == "__main__":
    main()
