"""Test fixtures: one Healthcare import task, one operation sensor, each with retries, for dag.test().

dag.test() runs them with Airflow's own retries and its real task state store, which is what the
failure-contract tests (tests/plugins/test_outcomes.py) need.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, task

from dicom_pipelines.operators import HealthcareDicomImportOperator
from dicom_pipelines.sensors import HealthcareOperationSensor

START = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

with DAG(
    "contract_import",
    schedule=None,
    start_date=START,
    tags=["test"],
    render_template_as_native_obj=True,
    params={
        "project_id": "p",
        "location": "l",
        "dataset_id": "d",
        "dicom_store_id": "s",
        "gcs_uri": "gs://b/x",
        "max_failures": None,
        "allow_empty": False,
        "earlier_try": None,
    },
) as contract_import:

    @task
    def earlier_try(**context) -> None:
        """Plays an earlier try of import_dicom that died: submits, then leaves the state store as it would.

        ``earlier_try``: None (no earlier try), ``before_post`` (died before its request left),
        ``unrecorded`` (died between the POST and recording the name), ``recorded`` (died while waiting),
        ``cleared`` (recorded in an older generation) or ``cancelled_elsewhere`` (recorded, and then another client
        cancelled the operation).
        """
        import json
        import time

        from airflow._shared.state import TaskScope
        from airflow.state import get_state_backend
        from airflow.utils.session import create_session

        from dicom_pipelines.hooks import CloudHealthcareDicomHook
        from dicom_pipelines.operators import OPERATION_STATE_KEY

        mode, p = context["params"]["earlier_try"], context["params"]
        if not mode:
            return
        store = (
            f"projects/{p['project_id']}/locations/{p['location']}/datasets/{p['dataset_id']}/dicomStores/"
            f"{p['dicom_store_id']}"
        )
        entry = {"generation": 1 if mode == "cleared" else 2, "submit_started": time.time()}  # max_tries: retries=2
        if mode != "before_post":
            name = CloudHealthcareDicomHook().import_dicom(store_name=store, gcs_uri=p["gcs_uri"])["name"]
            if mode != "unrecorded":
                entry["name"] = name
        if mode == "cancelled_elsewhere":
            from dicom_pipelines.polling import PollPlanner

            hook = CloudHealthcareDicomHook()
            hook.cancel_operation(name=entry["name"])
            hook.wait_for_operation(name=entry["name"], planner=PollPlanner(0.05, 0.1))
        scope = TaskScope(dag_id=context["dag"].dag_id, run_id=context["run_id"], task_id="import_dicom", map_index=-1)
        with create_session() as session:
            get_state_backend().set(scope, OPERATION_STATE_KEY, json.dumps(entry), expires_at=None, session=session)

    earlier_try() >> HealthcareDicomImportOperator(
        task_id="import_dicom",
        project_id="{{ params.project_id }}",
        location="{{ params.location }}",
        dataset_id="{{ params.dataset_id }}",
        dicom_store_id="{{ params.dicom_store_id }}",
        gcs_uri="{{ params.gcs_uri }}",
        max_failures="{{ params.max_failures }}",
        allow_empty_source="{{ params.allow_empty }}",
        retries=2,
        retry_delay=dt.timedelta(seconds=0),
        poll_interval=0.2,
        max_poll_interval=0.5,
        deferrable=False,
    )

with DAG(
    "contract_import_deadline",
    schedule=None,
    start_date=START,
    tags=["test"],
    params={"project_id": "p", "location": "l", "dataset_id": "d", "dicom_store_id": "s", "gcs_uri": "gs://b/x"},
) as contract_import_deadline:
    for cancel in (True, False):
        HealthcareDicomImportOperator(
            task_id=f"import_cancel_{str(cancel).lower()}",
            project_id="{{ params.project_id }}",
            location="{{ params.location }}",
            dataset_id="{{ params.dataset_id }}",
            dicom_store_id="{{ params.dicom_store_id }}",
            gcs_uri="{{ params.gcs_uri }}",
            retries=2,
            retry_delay=dt.timedelta(seconds=0),
            poll_interval=0.2,
            max_poll_interval=0.5,
            deferrable=True,
            operation_timeout=1.5,
            cancel_on_kill=cancel,
        )

with DAG(
    "contract_sensor",
    schedule=None,
    start_date=START,
    tags=["test"],
    params={"operation_name": "projects/p/locations/l/datasets/d/operations/1"},
) as contract_sensor:
    for soft_fail in (True, False):
        HealthcareOperationSensor(
            task_id=f"wait_soft_fail_{str(soft_fail).lower()}",
            operation_name="{{ params.operation_name }}",
            soft_fail=soft_fail,
            timeout=1.5,
            poke_interval=0.2,
            max_poll_interval=0.5,
            deferrable=True,
            retries=2,
            retry_delay=dt.timedelta(seconds=0),
        )

with DAG(
    "contract_sensor_reschedule",
    schedule=None,
    start_date=START,
    tags=["test"],
    params={"operation_name": "projects/p/locations/l/datasets/d/operations/1"},
) as contract_sensor_reschedule:
    HealthcareOperationSensor(
        task_id="wait",
        operation_name="{{ params.operation_name }}",
        mode="reschedule",
        deferrable=False,
        poke_interval=1,
        timeout=120,
        retries=1,
    )
