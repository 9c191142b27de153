"""DAG integrity: imports, tags, retries, params, and no I/O at import time."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dicom_pipelines
from dicom_pipelines.timetables import EARLIEST_NIGHT
from tests.helpers import dag_bag

DAGS = Path(__file__).resolve().parents[2] / "dags"
EXPECTED = {"dicom_nightly_import", "dicom_filtered_export", "dicom_export", "dicom_arrival_import"}


@pytest.fixture(scope="module")
def dagbag():
    return dag_bag(DAGS)


def test_no_import_errors_and_all_dags_present(dagbag):
    assert dagbag.import_errors == {}
    assert EXPECTED <= set(dagbag.dag_ids)


NO_IO_TASKS = ("check_params", "collect_arrivals")
"""Tasks that only check params or read the run's asset events: a retry could not change their outcome."""


def test_tags_retries_and_descriptions(dagbag):
    for dag_id in EXPECTED:
        dag = dagbag.dags[dag_id]
        assert dag.tags and dag.description, dag_id
        for task in dag.tasks:
            if task.task_id not in NO_IO_TASKS:
                assert task.retries >= 1, f"{dag_id}.{task.task_id} needs retries >= 1"


def test_params_have_types_descriptions_and_valid_defaults(dagbag):
    for dag_id in EXPECTED:
        dag = dagbag.dags[dag_id]
        dag.params.validate()
        for name, param in dag.params.items():
            param = dag.params.get_param(name)
            assert "type" in param.schema and param.description, f"{dag_id}.{name}"


def test_params_are_checked_first_and_never_retried(dagbag):
    """Bad input is refused before any API call: ``check_params`` is every DAG's only root, and a retry of it
    could only say the same thing again. The arrival import's root checks the params too, before it reads the
    events: one task less between a file's arrival and its import."""
    for dag_id in EXPECTED:
        dag = dagbag.dags[dag_id]
        root = "collect_arrivals" if dag_id == "dicom_arrival_import" else "check_params"
        assert [t.task_id for t in dag.roots] == [root], dag_id
        assert dag.get_task(root).retries == 0


def test_nightly_imports_never_overlap(dagbag):
    nightly = dagbag.dags["dicom_nightly_import"]
    assert nightly.get_task("import_dicom").max_active_tis_per_dag == 1
    assert nightly.get_task("ensure_store").upstream_task_ids == {"wait_for_previous_run"}


def test_schedules(dagbag):
    nightly = dagbag.dags["dicom_nightly_import"]
    assert nightly.catchup and nightly.timetable.summary == "0 0 * * *, from 2026-11-01"
    assert nightly.timetable.first_night == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert nightly.start_date == EARLIEST_NIGHT  # a run of any older night started by hand still gets its tasks
    assert dagbag.dags["dicom_filtered_export"].schedule is None


NO_IO_PARSE = """
import json, socket, sys
import sqlalchemy.engine

def refuse(*args, **kwargs):
    raise AssertionError("I/O at DAG import time")

socket.socket.connect = socket.create_connection = sqlalchemy.engine.Engine.connect = refuse
try:
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 3.1
    from airflow.models.dagbag import DagBag

assert "dicom_pipelines" not in sys.modules
bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dag_ids": sorted(bag.dag_ids)}))
"""


def test_no_network_or_database_io_at_import_time():
    """Parse every DAG file in a fresh interpreter whose sockets and metadata database refuse to be used.

    Fresh, so the plugins are imported under the block too: in this test process they were imported earlier.
    """
    out = subprocess.run(
        [sys.executable, "-c", NO_IO_PARSE, str(DAGS)],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    parsed = json.loads(out.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {} and EXPECTED <= set(parsed["dag_ids"])


def fresh_interpreter(script: str, *args: str) -> object:
    """Run ``script`` in a fresh interpreter on this test's path; its last line of output, as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


CLIENT_MODULES = ("googleapiclient", "aiohttp", "httplib2", "airflow.providers.google.common.hooks.base_google")
LOADED_AT_PARSE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(m for m in sys.argv[2:] if m in sys.modules)))
"""


@pytest.mark.parametrize("dag_file", ["dicom_nightly_import.py", "dicom_export.py"])
def test_parsing_the_healthcare_dags_loads_no_google_client(dag_file):
    """The dag-processor parses every file again and again: the hooks and their client libraries load only in
    the tasks that call the API."""
    assert fresh_interpreter(LOADED_AT_PARSE, str(DAGS / dag_file), *CLIENT_MODULES) == []


def test_sql_is_rendered_from_include_not_python(dagbag):
    dag = dagbag.dags["dicom_filtered_export"]
    query = dag.get_task("build_filter_table").configuration["query"]["query"]
    assert query == "{% include 'sql/filter_paths.sql' %}"
    assert any(Path(p, "sql", "filter_paths.sql").exists() for p in dag.template_searchpath)


def test_nightly_day_must_be_a_real_calendar_date():
    from airflow.providers.common.compat.sdk import ParamValidationError
    from airflow.sdk.definitions.param import ParamsDict

    dag = dag_bag(DAGS / "dicom_nightly_import.py").dags["dicom_nightly_import"]
    for good in (None, "2026-11-21"):
        params = ParamsDict(dict(dag.params.items()))
        params.update({"day": good})
        params.validate()
    for bad in ("2026-13-45", "2026-02-30", "21/11/2026"):
        params = ParamsDict(dict(dag.params.items()))
        with pytest.raises(ParamValidationError, match="day"):
            params.update({"day": bad})
            params.validate()


def test_every_dag_survives_airflows_serialization(dagbag):
    """The dag-processor stores each DAG serialized; a custom timetable must be registered to be stored and read."""
    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization  # type: ignore

    for dag_id in EXPECTED:
        stored = DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dagbag.dags[dag_id]))))
        assert stored.timetable == dagbag.dags[dag_id].timetable, dag_id


def test_every_wait_is_deferrable_whatever_the_deployments_default(dagbag):
    """Cloud Composer and the Helm chart leave [operators] default_deferrable off: the DAGs ask for it themselves,
    or every import would hold a worker slot for as long as it runs."""
    for dag_id in EXPECTED | {"dicom_deidentified_export"}:
        for t in dagbag.dags[dag_id].tasks:
            if hasattr(t, "deferrable"):
                assert t.deferrable is True, (dag_id, t.task_id)


def test_the_example_dag_shipped_with_the_package_parses():
    example = Path(dicom_pipelines.__file__).parent / "example_dags"
    bag = dag_bag(example)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {"example_dicom_import_export", "example_dicom_export_consumer"}
    for task in bag.dags["example_dicom_import_export"].tasks:
        assert task.deferrable is True and task.impersonation_chain, task.task_id


AFTER_PRE_IMPORT = """
import importlib, importlib.util, json, sys
import airflow.sdk
from airflow.utils.file import iter_airflow_imports
for name in iter_airflow_imports(sys.argv[1]):
    importlib.import_module(name)
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
loaded = {m for m in set(sys.modules) - before if m.startswith(("airflow.providers", "google."))}
# Airflow 3.1 reads each provider's get_provider_info (a dict, no client) when a DAG first asks the providers manager
discovery = {m for m in loaded if m.endswith(".get_provider_info")}
print(json.dumps(sorted(loaded - discovery - {m.rsplit(".", 1)[0] for m in discovery})))
"""


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS.glob("*.py")))
def test_the_dag_processor_pre_imports_every_provider_module_a_dag_loads(dag_file):
    """The dag-processor imports the ``airflow.*`` modules a DAG file names once, in its long-lived manager, before
    parsing the file in a child ([dag_processor] parsing_pre_import_modules). Each DAG file names the provider
    modules the package's operators load, so no parse pays for the Google provider or its clients again."""
    assert fresh_interpreter(AFTER_PRE_IMPORT, str(DAGS / dag_file)) == []


def test_every_dag_alerts_on_failure_and_the_night_has_a_deadline_when_set(dagbag, monkeypatch):
    """A failed run of any DAG is mailed (dicom_pipelines.alerts); DICOM_IMPORT_DEADLINE gives the nightly import a
    DeadlineAlert that survives serialization, with the interval from the cron (midnight, UTC here)."""
    from dicom_pipelines.alerts import failure_callback

    for dag_id in EXPECTED | {"dicom_deidentified_export"}:
        callbacks = dagbag.dags[dag_id].on_failure_callback
        assert failure_callback in (callbacks if isinstance(callbacks, list) else [callbacks]), dag_id
    assert not dagbag.dags["dicom_nightly_import"].deadline
    monkeypatch.setenv("DICOM_IMPORT_DEADLINE", "06:30")
    nightly = dag_bag(DAGS).dags["dicom_nightly_import"]
    [alert] = nightly.deadline if isinstance(nightly.deadline, list) else [nightly.deadline]
    assert alert.interval == dt.timedelta(days=1, hours=6, minutes=30)
    assert alert.callback.kwargs == {"timezone": "UTC", "deadline": "06:30"}
    try:
        from airflow.serialization.serialized_objects import DagSerialization
    except ImportError:  # Airflow 3.1
        from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization  # type: ignore
    stored = json.dumps(DagSerialization.to_dict(nightly))
    assert "dicom_pipelines.alerts.missed_deadline_callback" in stored
