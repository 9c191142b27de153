"""Entry point: ``python -m emulator.bigquery``."""

from __future__ import annotations

import argparse
import logging

from emulator.bigquery.engine import Engine
from emulator.bigquery.server import BigQueryApi
from emulator.gcs import GcsClient
from emulator.httpbase import serve


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Local BigQuery (REST subset on DuckDB), loopback only")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1", help="only inside a container may this be other than 127.0.0.1")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--gcs-endpoint", help="GCS emulator URL (default: $STORAGE_EMULATOR_HOST)")
    ap.add_argument(
        "--extract-shard-rows", type=int, default=1_000_000, help="rows per file when an extract URI contains '*'"
    )
    ap.add_argument("--faults", default="", help="route=rate[:code],...")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = BigQueryApi(Engine(args.state_dir, GcsClient(args.gcs_endpoint), args.extract_shard_rows))
    serve(api.app, args, "local BigQuery")


if __name__ == "__main__":
    main()
