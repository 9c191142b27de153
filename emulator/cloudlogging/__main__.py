"""Entry point: ``python -m emulator.cloudlogging``."""

from __future__ import annotations

import argparse
import logging

from emulator.cloudlogging.server import LoggingApi, LogStore
from emulator.httpbase import serve


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Local Cloud Logging API (entries.write, entries.list), loopback only")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1", help="only inside a container may this be other than 127.0.0.1")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--faults", default="", help="route=rate[:code],...")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(LoggingApi(LogStore(args.state_dir)).app, args, "local Cloud Logging")


if __name__ == "__main__":
    main()
