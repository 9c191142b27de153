"""A running deployment for the end-to-end tests: the local stack and a real Airflow, driven over HTTP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from scripts.airflow_client import AirflowClient
from scripts.stack import AIRFLOW_LOCAL_PASSWORD, AIRFLOW_USERNAME, DEMO_IDS, Stack, one_night_catchup_start
from tests.conftest import free_port_base


@contextmanager
def running_deployment(
    folder: Path,
    db: str,
    latency: float = 0.3,
    code: str = "package",
    extra_env: dict[str, str] | None = None,
    pubsub: bool = False,
) -> Iterator[tuple[Stack, AirflowClient, storage.Client]]:
    """Start the stack and Airflow with a short catchup; stop both and restore the environment afterwards.

    0.3 s per instance by default: operations outlast the operators' first check, so tasks defer to the triggerer.
    ``code``: the installed wheel, or the repository's ``plugins/`` as the plugins folder (see :class:`Stack`).
    ``extra_env``: more settings of the Airflow processes (also set here while the deployment runs, since the test
    process parses the DAG files too). ``pubsub``: the stack's Pub/Sub emulator, fed by the source bucket's
    notifications (:class:`Stack`).
    """
    saved = dict(os.environ)
    os.environ["DICOM_IMPORT_START_DATE"] = one_night_catchup_start()  # DAG files read it when parsed
    os.environ.update({k: v for k, v in (extra_env or {}).items() if not k.startswith("AIRFLOW")})
    stack = Stack(folder, free_port_base(), db=db, latency=latency, code=code, extra_env=extra_env, pubsub=pubsub)
    try:
        stack.start_stack()
        stack.start_airflow()
        os.environ["STORAGE_EMULATOR_HOST"] = stack.stack_env()["STORAGE_EMULATOR_HOST"]
        gcs = storage.Client(project=DEMO_IDS["GCP_PROJECT"], credentials=AnonymousCredentials())
        client = AirflowClient(f"http://127.0.0.1:{stack.ports.airflow}", AIRFLOW_USERNAME, AIRFLOW_LOCAL_PASSWORD)
        yield stack, client, gcs
    finally:
        stack.stop_airflow()
        stack.stop_stack()
        os.environ.clear()
        os.environ.update(saved)
