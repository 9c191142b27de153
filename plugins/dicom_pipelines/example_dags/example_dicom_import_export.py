"""Example: the package's operators in a DAG of your own, without the shipped DAGs or their settings.

Import a day's folder into a store, then export the store as PNG, each operation waited for in the triggerer
(``deferrable=True``; a retry re-attaches to the running operation instead of sending a second one). Every argument
is a template, so the store and the folder may come from ``params`` or a run's ``conf``. Copy it into your DAGs folder
and change the names; ``airflow dags test example_dicom_import_export`` runs it once.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

from dicom_pipelines.operators import HealthcareDicomExportOperator, HealthcareDicomImportOperator

IDENTITY = {
    "gcp_conn_id": "hospital_gcp",
    "impersonation_chain": "dicom-pipelines@my-project.iam.gserviceaccount.com",
}
STORE = {
    "project_id": "my-project",
    "location": "europe-west4",
    "dataset_id": "imaging",
    "dicom_store_id": "pacs-archive",
}

with DAG(
    dag_id="example_dicom_import_export",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["dicom", "example"],
) as dag:
    import_day = HealthcareDicomImportOperator(
        task_id="import_dicom",
        **STORE,
        **IDENTITY,
        gcs_uri="gs://my-dicom-incoming/incoming/{{ ds }}/**.dcm",
        max_failures=0,
        deferrable=True,
    )
    export_png = HealthcareDicomExportOperator(
        task_id="export_png",
        **STORE,
        **IDENTITY,
        uri_prefix="gs://my-dicom-exports/png/{{ ds }}",
        mime_type="image/png",
        deferrable=True,
    )
    import_day >> export_png
