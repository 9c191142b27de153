"""A throwaway local stack for a benchmark run (own folder, free ports on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from scripts.stack import ENDPOINT_VARS, Stack  # noqa: E402


def _free_base() -> int:
    while True:
        base = random.randrange(41000, 60000, 10)
        try:
            for port in range(base, base + 9):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue


def _stop_on_sigterm() -> None:
    """``timeout`` and ``kill`` send SIGTERM: turn it into SystemExit, so the ``finally`` below stops the stack.

    Only the first one: a second SIGTERM during that cleanup would cut it short and leave services running.
    """

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


@contextlib.contextmanager
def local_stack(**kwargs):
    _stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="dicom-bench-") as tmp:
        stack = Stack(Path(tmp), _free_base(), **kwargs)
        stack.start_stack()
        env = stack.stack_env()
        os.environ.update({k: env[k] for k in ENDPOINT_VARS})
        try:
            yield stack
        finally:
            stack.stop_stack()
