"""The deployment's settings for the shipped DAGs, in one place: environment variables read when a DAG file is
parsed (no I/O), so Cloud Composer's environment variables, the Helm chart's ``env`` and compose's ``.env`` all set
them the same way. The README's settings table is :data:`SETTINGS`; a test keeps the two in step.

Fail closed: where a wrong guess would send PHI somewhere (a bucket, a project, a region) there is no default, and
a run is refused before any API call, naming the setting, unless its ``conf`` gives the value. Nothing is created
unless asked for (``DICOM_CREATE_IF_MISSING``), and a first deploy imports the latest night only, unless
``DICOM_IMPORT_START_DATE`` asks for a catch-up.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Setting:
    variable: str
    default: str | None
    meaning: str
    param: str | None = None
    """The DAG param whose default it is, if any: a run's ``conf`` may give that param instead."""
    required: bool = True
    """With no default: a run must have a value (fail closed), unless the setting is optional."""


SETTINGS: tuple[Setting, ...] = (
    Setting("DICOM_GCP_CONN_ID", "google_cloud_default", "Airflow connection of every Google call."),
    Setting(
        "DICOM_IMPERSONATION_CHAIN",
        None,
        "Service account(s) every Google call impersonates, comma-separated (the last one acts), as the Google "
        "provider's impersonation_chain. Empty: the connection's own identity.",
    ),
    Setting("GCP_PROJECT", None, "Project of the Healthcare dataset.", "project_id"),
    Setting("HEALTHCARE_LOCATION", None, "Region of the Healthcare dataset; PHI stays in it.", "location"),
    Setting("HEALTHCARE_DATASET", None, "Healthcare dataset id.", "dataset_id"),
    Setting("DICOM_STORE", None, "DICOM store id.", "dicom_store_id"),
    Setting("SOURCE_BUCKET", None, "Bucket the nightly import reads (<prefix>/<day>/...).", "source_bucket"),
    Setting("EXPORT_BUCKET", None, "Bucket of the exports and filter files.", "export_bucket"),
    Setting("RESEARCH_BUCKET", None, "Bucket of the de-identified exports.", "research_bucket"),
    Setting(
        "BIGQUERY_DATASET", "dicom_metadata", "BigQuery dataset of the metadata and work tables.", "bigquery_dataset"
    ),
    Setting(
        "BIGQUERY_LOCATION",
        None,
        "Location of that dataset (it holds PatientName and PatientID). Empty: the Healthcare dataset's region; "
        "another location only to accept PHI leaving it.",
        "bigquery_location",
        required=False,
    ),
    Setting(
        "DICOM_CREATE_IF_MISSING",
        "false",
        "true: the nightly import creates a missing Healthcare dataset or store. false: it fails, naming it.",
        "create_if_missing",
    ),
    Setting("DICOM_IMPORT_CRON", "0 0 * * *", "When the nightly import runs, in DICOM_IMPORT_TIMEZONE."),
    Setting(
        "DICOM_IMPORT_TIMEZONE",
        "UTC",
        "Time zone of the nightly cron and of the day folders (an IANA name, e.g. Europe/Berlin).",
    ),
    Setting(
        "DICOM_IMPORT_START_DATE",
        None,
        "First night the scheduler imports (YYYY-MM-DD); it catches up every night since. Empty: no catch-up, "
        "the latest night only. Older nights: a backfill.",
    ),
)
"""Every setting, documented in the README's table."""


def value(variable: str) -> str | None:
    """The setting's value, else its default; an empty value counts as unset."""
    default = next(s.default for s in SETTINGS if s.variable == variable)
    return os.environ.get(variable) or default


def setting_of_param(param: str) -> Setting | None:
    return next((s for s in SETTINGS if s.param == param), None)


def impersonation_chain() -> list[str] | None:
    chain = [account.strip() for account in (value("DICOM_IMPERSONATION_CHAIN") or "").split(",") if account.strip()]
    return chain or None


def import_start_date() -> dt.date | None:
    start = value("DICOM_IMPORT_START_DATE")
    if start is None:
        return None
    try:
        return dt.date.fromisoformat(start)
    except ValueError:
        raise ValueError(f"DICOM_IMPORT_START_DATE={start!r}: must be a date, YYYY-MM-DD, or unset") from None


def import_first_night() -> dt.datetime | None:
    """Midnight of ``DICOM_IMPORT_START_DATE`` in ``DICOM_IMPORT_TIMEZONE``, or None (no catch-up)."""
    start = import_start_date()
    if start is None:
        return None
    return dt.datetime.combine(start, dt.time(), tzinfo=ZoneInfo(str(value("DICOM_IMPORT_TIMEZONE"))))


GCP_CONN_ID: str = str(value("DICOM_GCP_CONN_ID"))
IMPERSONATION_CHAIN: list[str] | None = impersonation_chain()
