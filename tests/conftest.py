"""Test setup: an isolated AIRFLOW_HOME, and a local stack (GCS, BigQuery, Healthcare) per session.

Everything is reached over HTTP on 127.0.0.1, on ports picked free for this session, so the
suite runs beside a `make demo` stack.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from scripts.stack import DEMO_IDS, ENDPOINT_VARS, Stack

REPO = Path(__file__).resolve().parent.parent
_HOME = tempfile.mkdtemp(prefix="dicom-airflow-test-")
INSTALLED_PACKAGE = os.environ.get("DICOM_TESTS_ON_INSTALLED_PACKAGE") == "1"
"""Set by tests/package: the tests import the installed wheel (pytest's ``-o pythonpath=.``), and the plugins
folder is empty, so the package's entry point alone registers the plugin."""
os.environ.update(
    {
        "AIRFLOW_HOME": _HOME,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(Path(_HOME, "plugins") if INSTALLED_PACKAGE else REPO / "plugins"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
        # the deployment's settings (dicom_pipelines.settings) as the local stack sets them, but the project
        **{k: v for k, v in DEMO_IDS.items() if k != "GCP_PROJECT"},
        "GCP_PROJECT": "test-project",
        "DICOM_CREATE_IF_MISSING": "true",
        "DICOM_IMPORT_START_DATE": os.environ.get("DICOM_IMPORT_START_DATE", "2026-11-01"),
        # dag.test() looks DAGs up in the configured bundles: the project's DAGs and the test fixtures.
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
            [
                {
                    "name": "dags-folder",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {"path": str(REPO / "dags")},
                },
                {
                    "name": "test-fixtures",
                    "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                    "kwargs": {"path": str(REPO / "tests" / "dag_fixtures")},
                },
            ]
        ),
        "NO_PROXY": "127.0.0.1,localhost",
    }
)


def free_port_base(span: int = 10) -> int:
    for _ in range(200):
        base = random.randrange(20000, 40000, 10)
        ok = True
        for port in range(base, base + span):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port range on 127.0.0.1")


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """The local stack, started once per session; its endpoints are exported to os.environ."""
    st = Stack(tmp_path_factory.mktemp("stack"), free_port_base())
    st.start_stack()
    env = st.stack_env()
    conn = {
        "conn_type": "google_cloud_platform",
        "extra": {
            "project": "test-project",
            "is_anonymous": True,
            "healthcare_endpoint": env["HEALTHCARE_API_ENDPOINT"],
            "logging_endpoint": env["LOGGING_API_ENDPOINT"],
        },
    }
    saved = {k: os.environ.get(k) for k in (*ENDPOINT_VARS, "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT")}
    os.environ.update({k: env[k] for k in ENDPOINT_VARS})
    os.environ["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"] = json.dumps(conn)
    yield st
    st.stop_stack()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated metadata database in this session's AIRFLOW_HOME (needed by dag.test())."""
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    return _HOME


def pytest_collection_modifyitems(items):
    """Tests that use the local stack carry the ``stack`` marker, so ``-m "not stack"`` selects the pure ones."""
    for item in items:
        if "stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.stack)
