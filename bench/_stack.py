"""A throwaway local stack for a benchmark run (own folder, free ports on 127.0.0.1)."""

from __future__ import annotations

import contextlib
import os
import random
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


@contextlib.contextmanager
def local_stack(**kwargs):
    with tempfile.TemporaryDirectory(prefix="dicom-bench-") as tmp:
        stack = Stack(Path(tmp), _free_base(), **kwargs)
        stack.start_stack()
        env = stack.stack_env()
        os.environ.update({k: env[k] for k in ENDPOINT_VARS})
        try:
            yield stack
        finally:
            stack.stop_stack()
