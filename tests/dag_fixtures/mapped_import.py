"""Test fixture: the import task mapped over several Cloud Storage patterns, for the drills.

A user action on one mapped task instance (mark success, mark failed) must reach that instance's trigger only;
the drills run this DAG on the real deployment, where Airflow keys mapped instances by their map index.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from dicom_pipelines.dag_params import GOOGLE, STORE_FROM_PARAMS, store_params
from dicom_pipelines.operators import HealthcareDicomImportOperator, HealthcareEnsureDicomStoreOperator

with DAG(
    "mapped_import",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    tags=["test"],
    params={**store_params(), "gcs_uris": Param([], type="array", items={"type": "string"})},
) as mapped_import:

    @task
    def sources(**context) -> list[str]:
        return list(context["params"]["gcs_uris"])

    HealthcareEnsureDicomStoreOperator(
        task_id="ensure_store", **STORE_FROM_PARAMS, **GOOGLE, create_if_missing=True
    ) >> HealthcareDicomImportOperator.partial(
        task_id="import_dicom", **STORE_FROM_PARAMS, **GOOGLE, deferrable=True, retries=2
    ).expand(gcs_uri=sources())
