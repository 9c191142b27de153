"""Entry point: ``python -m emulator.healthcare``."""

from __future__ import annotations

import argparse
import logging

from emulator.gcs import GcsClient
from emulator.healthcare.operations import OperationEngine, Settings
from emulator.healthcare.server import HealthcareApi
from emulator.healthcare.storage import Storage
from emulator.httpbase import serve


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Local Cloud Healthcare API (DICOM), loopback only")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1", help="only inside a container may this be other than 127.0.0.1")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--gcs-endpoint", help="GCS emulator URL (default: $STORAGE_EMULATOR_HOST)")
    ap.add_argument("--bigquery-endpoint", default="", help="local BigQuery URL, for metadata export")
    ap.add_argument("--logging-endpoint", default="", help="local Cloud Logging URL, for per-instance errors")
    ap.add_argument("--latency", type=float, default=0.0, help="seconds of delay per instance in operations")
    ap.add_argument("--io-threads", type=int, default=8)
    ap.add_argument("--faults", default="", help="route=rate[:code],... e.g. operations.get=0.2:503 or *=0.1")
    ap.add_argument("--empty-import", choices=["error", "success"], default="error")
    ap.add_argument("--unmatched-filter", choices=["failure", "ignore"], default="failure")
    ap.add_argument("--question-crosses-slash", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings(
        base_url=f"http://127.0.0.1:{args.port}",
        latency_s=args.latency,
        io_threads=args.io_threads,
        question_crosses_slash=args.question_crosses_slash,
        empty_import=args.empty_import,
        unmatched_filter=args.unmatched_filter,
        bigquery_endpoint=args.bigquery_endpoint,
        logging_endpoint=args.logging_endpoint,
    )
    storage = Storage(args.state_dir)
    engine = OperationEngine(storage, settings, GcsClient(args.gcs_endpoint))
    api = HealthcareApi(storage, settings, engine)
    serve(api.app, args, "local Healthcare API")


if __name__ == "__main__":
    main()
