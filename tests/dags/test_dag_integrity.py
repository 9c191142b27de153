"""DAG integrity: imports, tags, retries, params, and no I/O at import time."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
EXPECTED = {"dicom_nightly_import", "dicom_filtered_export", "dicom_export"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors_and_all_dags_present(dagbag):
    assert dagbag.import_errors == {}
    assert EXPECTED <= set(dagbag.dag_ids)


def test_tags_retries_and_descriptions(dagbag):
    for dag_id in EXPECTED:
        dag = dagbag.dags[dag_id]
        assert dag.tags and dag.description, dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} needs retries >= 1"


def test_params_have_types_descriptions_and_valid_defaults(dagbag):
    for dag_id in EXPECTED:
        dag = dagbag.dags[dag_id]
        dag.params.validate()
        for name, param in dag.params.items():
            param = dag.params.get_param(name)
            assert "type" in param.schema and param.description, f"{dag_id}.{name}"


def test_bad_conf_is_refused():
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    dag = DagBag(dag_folder=str(DAGS / "dicom_filtered_export.py")).dags["dicom_filtered_export"]
    for bad in (
        {"modalities": "CT"},
        {"granularity": "frame"},
        {"study_date_from": "2026/11/01"},
        {"mime_type": "image/gif"},
        {"destination_prefix": "s3://x/y"},
        {"study_uids": ["1.2;DROP"]},
    ):
        params = ParamsDict(dict(dag.params.items()))
        with pytest.raises(ParamValidationError):
            params.update(bad)
            params.validate()


def test_schedules(dagbag):
    nightly = dagbag.dags["dicom_nightly_import"]
    assert nightly.catchup and nightly.start_date is not None and nightly.timetable._expression == "0 0 * * *"
    assert dagbag.dags["dicom_filtered_export"].schedule is None


def test_no_network_or_database_io_at_import_time(monkeypatch):
    """Parse every DAG file with sockets and the metadata database made unusable."""
    import sqlalchemy.engine
    from airflow.dag_processing.dagbag import DagBag

    def refuse(*args, **kwargs):
        raise AssertionError("I/O at DAG import time")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(sqlalchemy.engine.Engine, "connect", refuse)
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {} and EXPECTED <= set(bag.dag_ids)


def test_sql_is_rendered_from_include_not_python(dagbag):
    dag = dagbag.dags["dicom_filtered_export"]
    query = dag.get_task("build_filter_table").configuration["query"]["query"]
    assert query == "{% include 'sql/filter_paths.sql' %}"
    assert any(Path(p, "sql", "filter_paths.sql").exists() for p in dag.template_searchpath)
