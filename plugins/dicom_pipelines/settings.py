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
import json
import os
import re
from dataclasses import dataclass
from typing import Any
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
        "DICOM_IMPORT_SITES",
        None,
        "One nightly import DAG per site, dicom_nightly_import__<site>: a JSON list of objects, each with site and "
        "any of the import's params as defaults (dicom_store_id, source_bucket...) and cron, timezone, start_date. "
        "Empty: one DAG, dicom_nightly_import.",
        required=False,
    ),
    Setting(
        "DICOM_IMPORT_DEADLINE",
        None,
        "HH:MM in DICOM_IMPORT_TIMEZONE: a scheduled night not finished by then (after its run starts) sends an "
        "alert. A site entry may set its own (deadline). Empty: no deadline.",
        required=False,
    ),
    Setting(
        "DICOM_ALERT_EMAILS",
        None,
        "Comma-separated addresses told of a failed run of any DICOM DAG and of a late night. Empty: no alerts.",
        required=False,
    ),
    Setting("DICOM_ALERT_SMTP_CONN_ID", "smtp_default", "SMTP connection of the alerts (SMTP provider)."),
    Setting(
        "DICOM_ALERT_FROM",
        None,
        "Sender of the alerts when the SMTP connection has no from_email extra (else airflow@localhost).",
        required=False,
    ),
    Setting(
        "DICOM_ARRIVAL_SUBSCRIPTION",
        None,
        "projects/PROJECT/subscriptions/ID: the Pub/Sub subscription of the source bucket's Cloud Storage "
        "notifications; dicom_arrival_import imports each file within a minute of its arrival. Empty: that DAG is "
        "not scheduled.",
        required=False,
    ),
    Setting(
        "DICOM_ARRIVAL_POLL_SECONDS",
        "5",
        "How often the triggerer pulls the arrivals' subscription when it was empty.",
    ),
    Setting(
        "DICOM_ARRIVAL_MAX_MESSAGES",
        "500",
        "Notifications one pull takes (one asset event), at most 1000.",
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
    setting = next((s for s in SETTINGS if s.variable == variable), None)
    if setting is None:
        raise KeyError(f"{variable} is not one of the settings: {', '.join(s.variable for s in SETTINGS)}")
    return os.environ.get(variable) or setting.default


def setting_of_param(param: str) -> Setting | None:
    return next((s for s in SETTINGS if s.param == param), None)


def impersonation_chain() -> list[str] | None:
    chain = [account.strip() for account in (value("DICOM_IMPERSONATION_CHAIN") or "").split(",") if account.strip()]
    return chain or None


def import_start_date(start: str | None = None, where: str = "DICOM_IMPORT_START_DATE") -> dt.date | None:
    """``start``, else the setting, as a date; None when neither is set."""
    start = start or value("DICOM_IMPORT_START_DATE")
    if start is None:
        return None
    try:
        return dt.date.fromisoformat(start)
    except ValueError:
        raise ValueError(f"{where}={start!r}: must be a date, YYYY-MM-DD, or unset") from None


def import_first_night(start: str | None = None, timezone: str | None = None) -> dt.datetime | None:
    """Midnight of the first night (``start``, else ``DICOM_IMPORT_START_DATE``) in ``timezone`` (else
    ``DICOM_IMPORT_TIMEZONE``), or None: no catch-up."""
    first = import_start_date(start, "start_date" if start else "DICOM_IMPORT_START_DATE")
    if first is None:
        return None
    return dt.datetime.combine(first, dt.time(), tzinfo=ZoneInfo(timezone or str(value("DICOM_IMPORT_TIMEZONE"))))


def arrival_subscription(value: str | None = None) -> tuple[str, str] | None:
    """(project, subscription id) of DICOM_ARRIVAL_SUBSCRIPTION, or None when unset; a malformed value is refused."""
    value = (value if value is not None else os.environ.get("DICOM_ARRIVAL_SUBSCRIPTION", "")).strip()
    if not value:
        return None
    found = re.fullmatch(r"projects/([a-z][a-z0-9.:-]{4,61}[a-z0-9])/subscriptions/([A-Za-z][\w.~+%-]{2,254})", value)
    if not found:
        raise ValueError(
            f"DICOM_ARRIVAL_SUBSCRIPTION={value!r} must be projects/PROJECT/subscriptions/SUBSCRIPTION (a project id "
            "and a subscription id of 3 to 255 letters, digits or -_.~+%, starting with a letter)"
        )
    return found.group(1), found.group(2)


def import_sites() -> list[dict[str, Any]]:
    """The entries of ``DICOM_IMPORT_SITES``, checked: a JSON list of objects, each with a distinct ``site``."""
    raw = value("DICOM_IMPORT_SITES")
    if not raw:
        return []
    example = '[{"site": "north", "dicom_store_id": "pacs-north", "source_bucket": "north-incoming"}]'
    try:
        sites = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"DICOM_IMPORT_SITES is not JSON ({exc.msg}, character {exc.pos}); e.g. {example}") from None
    if not isinstance(sites, list) or not all(isinstance(site, dict) for site in sites):
        raise ValueError(f"DICOM_IMPORT_SITES must be a JSON list of objects, one per site; e.g. {example}")
    seen: set[str] = set()
    for n, site in enumerate(sites):
        name = site.get("site")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,60}", name):
            raise ValueError(
                f"DICOM_IMPORT_SITES[{n}].site={name!r}: must be 1 to 60 letters, digits, '_' or '-' (it names the "
                "site's DAG, dicom_nightly_import__<site>)"
            )
        if name in seen:
            raise ValueError(f"DICOM_IMPORT_SITES[{n}].site={name!r}: given twice; each site needs its own name")
        seen.add(name)
    return sites


GCP_CONN_ID: str = str(value("DICOM_GCP_CONN_ID"))
IMPERSONATION_CHAIN: list[str] | None = impersonation_chain()
