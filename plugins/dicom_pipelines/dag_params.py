"""DAG ``params`` (JSON schema) shared by the DICOM DAGs, so the UI shows a form and a bad ``conf`` gets a 400.

Defaults come from environment variables read when the DAG file is parsed (no I/O); the runtime
checks in :mod:`dicom_pipelines.validation` run again in the operators before any API call.
"""

from __future__ import annotations

import os
import re
from typing import TypedDict

from airflow.sdk import Param

from dicom_pipelines.validation import BUCKET_PATTERN, GCS_URI_PATTERN, ID_PATTERN, MIME_TYPES

GCP_CONN_ID = "google_cloud_default"
BQ_DATASET_PATTERN = r"^[A-Za-z0-9_]{1,1024}$"
DATE_PATTERN = r"^$|^[0-9]{4}-[0-9]{2}-[0-9]{2}$"


def safe_table_suffix(run_id: str) -> str:
    """A BigQuery-safe table suffix for a run (letters, digits and underscores)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", run_id)[:200]


def env(name: str, default: str) -> str:
    return os.environ.get(name, default)


class StoreKwargs(TypedDict):
    project_id: str
    location: str
    dataset_id: str
    dicom_store_id: str


STORE_FROM_PARAMS: StoreKwargs = {
    "project_id": "{{ params.project_id }}",
    "location": "{{ params.location }}",
    "dataset_id": "{{ params.dataset_id }}",
    "dicom_store_id": "{{ params.dicom_store_id }}",
}
"""Operator keyword arguments that take the store's coordinates from the params of :func:`store_params`."""


def store_params() -> dict[str, Param]:
    return {
        "project_id": Param(
            env("GCP_PROJECT", "demo-project"),
            type="string",
            pattern=ID_PATTERN,
            description="Google Cloud project of the Healthcare dataset.",
        ),
        "location": Param(
            env("HEALTHCARE_LOCATION", "us-central1"),
            type="string",
            pattern=ID_PATTERN,
            description="Region of the Healthcare dataset, e.g. us-central1.",
        ),
        "dataset_id": Param(
            env("HEALTHCARE_DATASET", "demo-dataset"),
            type="string",
            pattern=ID_PATTERN,
            description="Healthcare dataset id.",
        ),
        "dicom_store_id": Param(
            env("DICOM_STORE", "demo-store"), type="string", pattern=ID_PATTERN, description="DICOM store id."
        ),
    }


class ToleranceKwargs(TypedDict):
    max_failures: str
    max_failure_ratio: str


TOLERANCE_FROM_PARAMS: ToleranceKwargs = {
    "max_failures": "{{ params.max_failures }}",
    "max_failure_ratio": "{{ params.max_failure_ratio }}",
}
"""Operator keyword arguments that take the failure tolerance from the params of :func:`tolerance_params`."""


def tolerance_params() -> dict[str, Param]:
    return {
        "max_failures": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Failed instances tolerated (count). Empty: none unless a ratio is set.",
        ),
        "max_failure_ratio": Param(
            None,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            description="Failed instances tolerated, as a fraction of those processed (0-1).",
        ),
    }


def export_params() -> dict[str, Param]:
    return {
        "export_bucket": Param(
            env("EXPORT_BUCKET", "dicom-exports"),
            type="string",
            pattern=BUCKET_PATTERN,
            description="Bucket for the exported objects (and filter files) when no prefix is given.",
        ),
        "destination_prefix": Param(
            None,
            type=["null", "string"],
            pattern=GCS_URI_PATTERN,
            description="gs:// prefix for the exported objects. Empty: gs://<export bucket>/exports/<run id>.",
        ),
        "mime_type": Param(
            "",
            type="string",
            enum=["", *MIME_TYPES],
            description="Export format: empty keeps the stored DICOM; or one of the 24 documented MIME types.",
        ),
    }


EXPORT_PREFIX = "{{ params.destination_prefix or ('gs://' ~ params.export_bucket ~ '/exports/' ~ (run_id | bq_safe)) }}"
"""Where an export run writes, defined once: the export operator renders it and returns it as ``uri_prefix``."""
