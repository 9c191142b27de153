"""DAG ``params`` shared by the DICOM DAGs, and the rules that check a run's values in words.

The JSON schema gives the Trigger form its fields (dates, choices, one value per line) and a 400 for a wrong
type, a bad date or a value too long. What a schema can only say as a regex (ids, bucket names, ``gs://`` URIs,
wildcard rules) or cannot say at all (an unknown key, a backwards date range) is checked by
:func:`run_param_problems`, which the first task of every DAG runs before any API call. Each rule is a function
of :mod:`dicom_pipelines.validation`, so its message names the field, the value and the rule in words.

Defaults come from the deployment's settings (:mod:`dicom_pipelines.settings`), read when the DAG file is parsed
(no I/O). A param whose setting has no default and is unset has none either: a run that does not give it is refused,
naming the setting.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypedDict

import pendulum
from airflow.sdk import Param

from dicom_pipelines import settings
from dicom_pipelines.settings import GCP_CONN_ID, IMPERSONATION_CHAIN
from dicom_pipelines.validation import (
    DEID_PROFILES,
    MAX_LISTED,
    MIME_TYPES,
    MODALITIES,
    TEXT_REDACTION_MODES,
    ValidationError,
    check_bigquery_dataset,
    check_bigquery_location,
    check_bucket,
    check_choice,
    check_count,
    check_date,
    check_date_range,
    check_folder,
    check_gcs_prefix,
    check_hours,
    check_id,
    check_modalities,
    check_patient_ids,
    check_positive,
    check_ratio,
    check_source_pattern,
    check_tags,
    check_uids,
    parse_bigquery_table_uri,
    parse_bool,
    parse_gcs_uri,
    parse_import_uri,
    parse_mime_type,
    wildcard_regex,
)

DEFAULT_MAXIMUM_BYTES_BILLED = 100 * 1024**3
"""100 GiB: a filter query reads a few metadata columns, so more than this means a wrong table or criteria."""


class GoogleIdentity(TypedDict):
    gcp_conn_id: str
    impersonation_chain: list[str] | None


IMPORT_TIMEZONE = str(settings.value("DICOM_IMPORT_TIMEZONE"))
GOOGLE: GoogleIdentity = {"gcp_conn_id": GCP_CONN_ID, "impersonation_chain": IMPERSONATION_CHAIN}
"""Who every Google call of the shipped DAGs is made as: ``**GOOGLE`` in each operator, the settings' values."""
GCS_URI_MAX_LENGTH = 1100
"""``gs://`` + a bucket + an object name of at most 1,024 bytes; the form stops typing there."""
GRANULARITIES = ("study", "series", "instance")


def night_day(moment: Any, timezone: str | None = None) -> str:
    """The day (YYYY-MM-DD) of a night's folder: ``moment`` (a data interval's start, a run's time) in the time zone
    of the nightly cron (``timezone``, else ``DICOM_IMPORT_TIMEZONE``); a Jinja filter of the nightly import."""
    return pendulum.instance(moment).in_timezone(timezone or IMPORT_TIMEZONE).strftime("%Y-%m-%d")


def safe_table_suffix(run_id: str) -> str:
    """A BigQuery-safe table suffix for a run (letters, digits and underscores)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", run_id)[:200]


def env(name: str, default: str | None = None) -> str | None:
    """A setting's value (:mod:`dicom_pipelines.settings`), else ``default``, else the setting's own default."""
    return os.environ.get(name) or default or settings.value(name)


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


def bigquery_location_param() -> Param:
    """Where the BigQuery dataset that holds metadata (PatientName and PatientID among it) must be."""
    return Param(
        env("BIGQUERY_LOCATION"),
        type=["null", "string"],
        maxLength=64,
        description="BigQuery location of the dataset that holds the metadata (with PatientName and PatientID). "
        "Empty: the Healthcare dataset's region, so PHI stays in it; name another location only to accept it.",
    )


def store_params() -> dict[str, Param]:
    return {
        "project_id": Param(
            env("GCP_PROJECT"),
            type=["null", "string"],
            minLength=1,
            maxLength=256,
            description="Google Cloud project of the Healthcare dataset.",
        ),
        "location": Param(
            env("HEALTHCARE_LOCATION"),
            type=["null", "string"],
            minLength=1,
            maxLength=256,
            description="Region of the Healthcare dataset, e.g. us-central1.",
        ),
        "dataset_id": Param(
            env("HEALTHCARE_DATASET"),
            type=["null", "string"],
            minLength=1,
            maxLength=256,
            description="Healthcare dataset id.",
        ),
        "dicom_store_id": Param(
            env("DICOM_STORE"),
            type=["null", "string"],
            minLength=1,
            maxLength=256,
            description="DICOM store id (letters, digits, '_', '-' or '.').",
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
            env("EXPORT_BUCKET"),
            type=["null", "string"],
            minLength=3,
            maxLength=222,
            description="Bucket for the exported objects (and filter files) when no prefix is given.",
        ),
        "destination_prefix": Param(
            None,
            type=["null", "string"],
            maxLength=GCS_URI_MAX_LENGTH,
            description="gs:// prefix for the exported objects. Empty: gs://<export bucket>/exports/<run id>.",
        ),
        "mime_type": Param(
            None,
            type=["null", "string"],
            enum=[None, *MIME_TYPES],
            values_display={"None": "As stored (DICOM, original transfer syntax)", **MIME_DISPLAY},
            description="Export format. Empty: the stored DICOM as it is.",
        ),
    }


MIME_DISPLAY = {
    "application/dicom; transfer-syntax=*": "DICOM, original transfer syntax",
    "application/dicom; transfer-syntax=1.2.840.10008.1.2.1": "DICOM, Explicit VR Little Endian",
    "application/dicom; transfer-syntax=1.2.840.10008.1.2": "DICOM, Implicit VR Little Endian",
    "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50": "DICOM, JPEG Baseline",
    "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90": "DICOM, JPEG 2000 lossless",
    "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.80": "DICOM, JPEG-LS lossless",
    "application/dicom; transfer-syntax=1.2.840.10008.1.2.5": "DICOM, RLE lossless",
    "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1": "Raw pixel data, one object per frame",
    "application/octet-stream; transfer-syntax=*": "Raw pixel data as stored, one object per frame",
    "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50": "JPEG images, one per frame",
    "image/png": "PNG images, one per frame",
}
"""Readable names in the form for the common export formats; the others show their MIME type."""


def filter_params() -> dict[str, Param]:
    """Criteria of the filtered export; every one is optional, and empty means any."""
    return {
        "modalities": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "enum": list(MODALITIES)},
            examples=list(MODALITIES),
            uniqueItems=True,
            values_display={code: f"{code} ({name})" for code, name in MODALITIES.items()},
            description="Modalities to export, picked from the list (e.g. CT and MR). Empty: any.",
        ),
        "study_date_from": Param(
            None,
            type=["null", "string"],
            format="date",
            description="First StudyDate to export. Empty: no lower bound.",
        ),
        "study_date_to": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Last StudyDate to export (on or after the first). Empty: no upper bound.",
        ),
        "patient_ids": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            maxItems=1000,
            description="Only these PatientIDs, one per line. Empty: any.",
        ),
        "study_uids": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            maxItems=1000,
            description="Only these StudyInstanceUIDs, one per line. Empty: any.",
        ),
        "granularity": Param(
            "series",
            type="string",
            enum=list(GRANULARITIES),
            values_display={
                "study": "Whole studies",
                "series": "Whole series (default)",
                "instance": "Single instances",
            },
            description="Whether a match exports its whole study, its series, or only the matching instances.",
        ),
        "bigquery_dataset": Param(
            env("BIGQUERY_DATASET"),
            type="string",
            minLength=1,
            maxLength=1024,
            description="BigQuery dataset for the work tables (letters, digits and '_').",
        ),
        "filter_uri": Param(
            None,
            type=["null", "string"],
            maxLength=GCS_URI_MAX_LENGTH,
            description="gs:// URI of a filter file you uploaded yourself; skips the BigQuery steps.",
        ),
        "bigquery_location": bigquery_location_param(),
        "metadata_table": Param(
            None,
            type=["null", "string"],
            maxLength=2000,
            description="bq://PROJECT.DATASET.TABLE that the store streams its metadata to (the nightly import's "
            "metadata_stream_table): queried directly, instead of exporting the whole store's metadata on each run.",
        ),
        "maximum_bytes_billed": Param(
            DEFAULT_MAXIMUM_BYTES_BILLED,
            type="integer",
            minimum=1,
            description="Cost guard: the filter query fails rather than bill more bytes than this (default 100 GiB).",
        ),
        "work_table_expiration_hours": Param(
            24,
            type="integer",
            minimum=1,
            maximum=720,
            description="The BigQuery work tables (they hold PatientName and PatientID) expire after this many "
            "hours if the run does not drop them; a successful run drops them at its end.",
        ),
        "metadata_max_age_hours": Param(
            0,
            type="number",
            minimum=0,
            maximum=720,
            description="Without metadata_table: reuse the store's metadata table while its last refresh is younger "
            "than this many hours (it is kept, with an expiry of at least as long). 0: refresh it on every run "
            "and drop it at the end.",
        ),
    }


DEID_PROFILE_DISPLAY = {
    "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE": "DICOM Basic Profile (PS3.15 Annex E): remove or empty identifying "
    "attributes, drop private tags",
    "MINIMAL_KEEP_LIST_PROFILE": "Minimal: keep only what a valid DICOM instance needs",
    "KEEP_ALL_PROFILE": "Keep all attributes (only the UIDs are replaced)",
    "DEIDENTIFY_TAG_CONTENTS": "Inspect text attributes and replace sensitive text (Google only)",
}
TEXT_REDACTION_DISPLAY = {
    "REDACT_NO_TEXT": "Leave the pixels as they are",
    "REDACT_SENSITIVE_TEXT": "Redact burnt-in sensitive text (Google only)",
    "REDACT_ALL_TEXT": "Redact all burnt-in text (Google only)",
}


def deidentify_params() -> dict[str, Param]:
    """How the cohort is de-identified, and where it goes."""
    return {
        "filter_profile": Param(
            "ATTRIBUTE_CONFIDENTIALITY_BASIC_PROFILE",
            type="string",
            enum=list(DEID_PROFILES),
            values_display=DEID_PROFILE_DISPLAY,
            description="Which attributes are kept, emptied or removed. Ignored when keep_tags or remove_tags is set.",
        ),
        "keep_tags": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "maxLength": 64},
            maxItems=MAX_LISTED,
            description="Instead of a profile: keep only these attributes (keywords such as Modality, or tags "
            "such as 00080060), one per line.",
        ),
        "remove_tags": Param(
            None,
            type=["null", "array"],
            items={"type": "string", "maxLength": 64},
            maxItems=MAX_LISTED,
            description="Instead of a profile: remove these attributes and keep the rest, one per line.",
        ),
        "skip_id_redaction": Param(
            False,
            type="boolean",
            description="Keep the Study, Series and SOP Instance UIDs. Off (recommended): they are replaced by new "
            "ones, consistently within the run.",
        ),
        "text_redaction_mode": Param(
            "REDACT_NO_TEXT",
            type="string",
            enum=list(TEXT_REDACTION_MODES),
            values_display=TEXT_REDACTION_DISPLAY,
            description="Text burnt into the pixels.",
        ),
        "destination_dicom_store_id": Param(
            None,
            type=["null", "string"],
            maxLength=256,
            description="The store that receives the de-identified copies, in the source's dataset; it must be "
            "new or empty. Empty: deid-<run id>, one per run.",
        ),
        "research_bucket": Param(
            env("RESEARCH_BUCKET"),
            type=["null", "string"],
            minLength=3,
            maxLength=222,
            description="Bucket the de-identified cohort is exported to.",
        ),
        "research_prefix": Param(
            None,
            type=["null", "string"],
            maxLength=GCS_URI_MAX_LENGTH,
            description="gs:// prefix for the de-identified objects. Empty: "
            "gs://<research bucket>/deidentified/<run id>.",
        ),
    }


DEID_STORE = "{{ params.destination_dicom_store_id or ('deid-' ~ (run_id | bq_safe)) }}"
"""The store a de-identification run writes to, defined once."""
RESEARCH_PREFIX = (
    "{{ params.research_prefix or ('gs://' ~ params.research_bucket ~ '/deidentified/' ~ (run_id | bq_safe)) }}"
)


def import_params() -> dict[str, Param]:
    return {
        "source_bucket": Param(
            env("SOURCE_BUCKET"),
            type=["null", "string"],
            minLength=3,
            maxLength=222,
            description="Bucket that receives the DICOM files (its name, without gs://).",
        ),
        "source_prefix": Param(
            "incoming",
            type=["null", "string"],
            maxLength=900,
            description="Folder in the bucket; each day's files are under <folder>/<YYYY-MM-DD>/. Empty: the "
            "bucket's root.",
        ),
        "source_pattern": Param(
            "**.dcm",
            type="string",
            minLength=1,
            maxLength=100,
            description="Files under the day's folder: '**.dcm' (all .dcm files, in subfolders too), '*.dcm' "
            "(that folder only) or '**' (everything).",
        ),
        "day": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Day to import. Empty: the run's data interval, or yesterday (UTC) for a run started "
            "without a logical date.",
        ),
        "gcs_uri": Param(
            None,
            type=["null", "string"],
            maxLength=GCS_URI_MAX_LENGTH,
            description="Override: import exactly this gs:// URI or pattern instead of the day's folder.",
        ),
        "allow_empty": Param(
            True, type="boolean", description="Skip (rather than fail) a night with no files to import."
        ),
        "bigquery_location": bigquery_location_param(),
        "metadata_stream_table": Param(
            None,
            type=["null", "string"],
            maxLength=2000,
            description="bq://PROJECT.DATASET.TABLE: the store streams the metadata of every instance it receives "
            "there (streamConfigs), for the filtered export's metadata_table. Empty: no stream is added.",
        ),
        "create_if_missing": Param(
            env("DICOM_CREATE_IF_MISSING") == "true",
            type="boolean",
            description="Create the dataset and the DICOM store when they do not exist. Off (the default unless "
            "DICOM_CREATE_IF_MISSING=true): fail instead, naming what is missing, so a typo in an id never imports "
            "into a new store.",
        ),
        "failure_report_prefix": Param(
            None,
            type=["null", "string"],
            maxLength=900,
            description="gs://bucket/folder for the failure reports: a night with failed files writes "
            "<folder>/<dag_id>/<run_id>.ndjson, one {source, code, message} per line. Empty: "
            "gs://<source_bucket>/import-failures.",
        ),
        "quarantine_prefix": Param(
            None,
            type=["null", "string"],
            maxLength=900,
            description="gs://bucket/folder: copy each failed file under it (keeping its bucket and path), to set "
            "it aside for a fix. Empty: off.",
        ),
    }


FAILURE_REPORT_URI = (
    "{{ (params.failure_report_prefix or ('gs://' ~ params.source_bucket ~ '/import-failures')).rstrip('/') ~ '/' "
    "~ dag.dag_id ~ '/' ~ run_id ~ '.ndjson' }}"
)
"""Where a night's failure report goes, defined once."""


def _optional(rule: Callable[[Any, str], object]) -> Callable[[Any, str], object]:
    return lambda value, field: None if value is None or value == "" else rule(value, field)


PARAM_RULES: dict[str, Callable[[Any, str], object]] = {
    "project_id": check_id,
    "location": check_id,
    "dataset_id": check_id,
    "dicom_store_id": check_id,
    "max_failures": check_count,
    "max_failure_ratio": check_ratio,
    "export_bucket": check_bucket,
    "destination_prefix": _optional(check_gcs_prefix),
    "mime_type": parse_mime_type,
    "modalities": check_modalities,
    "study_date_from": _optional(check_date),
    "study_date_to": _optional(check_date),
    "patient_ids": check_patient_ids,
    "study_uids": check_uids,
    "granularity": lambda value, field: check_choice(value, field, GRANULARITIES),
    "bigquery_dataset": check_bigquery_dataset,
    "filter_uri": lambda value, field: None if value is None else check_filter_uri(value, field),
    "metadata_table": _optional(parse_bigquery_table_uri),
    "metadata_stream_table": _optional(parse_bigquery_table_uri),
    "bigquery_location": _optional(check_bigquery_location),
    "maximum_bytes_billed": check_positive,
    "work_table_expiration_hours": check_positive,
    "metadata_max_age_hours": check_hours,
    "source_bucket": check_bucket,
    "source_prefix": check_folder,
    "source_pattern": check_source_pattern,
    "day": _optional(check_date),
    "gcs_uri": _optional(parse_import_uri),
    "allow_empty": parse_bool,
    "create_if_missing": parse_bool,
    "filter_profile": lambda value, field: check_choice(value, field, DEID_PROFILES),
    "keep_tags": _optional(check_tags),
    "remove_tags": _optional(check_tags),
    "skip_id_redaction": parse_bool,
    "text_redaction_mode": lambda value, field: check_choice(value, field, TEXT_REDACTION_MODES),
    "destination_dicom_store_id": _optional(check_id),
    "research_bucket": check_bucket,
    "research_prefix": _optional(check_gcs_prefix),
    "failure_report_prefix": _optional(check_gcs_prefix),
    "quarantine_prefix": _optional(check_gcs_prefix),
    "staging_prefix": _optional(check_gcs_prefix),
}
"""The rule in words for every param of the DAGs; a DAG-integrity test checks that none is missing."""


FILTER_CRITERIA = ("modalities", "study_date_from", "study_date_to", "patient_ids", "study_uids", "filter_uri")
"""What selects a filtered or de-identified export's cohort: with none of them, it would be the whole store."""


def check_filter_uri(value: Any, field: str) -> None:
    """A filter file's URI; an empty string is refused rather than read as "build the filter from the criteria"."""
    if value == "":
        raise ValidationError(
            field,
            value,
            "must be a gs:// URI of a filter file, or null (left out) to build the filter from the criteria",
        )
    parse_gcs_uri(value, field)


def check_some_criterion(names: Iterable[str], values: Mapping[str, Any]) -> str | None:
    """The problem of a cohort export whose criteria are all empty (it would export the whole store), or None."""
    declared = set(names)
    if not declared.issuperset(FILTER_CRITERIA):
        return None
    if any(values.get(name) not in (None, "", []) for name in FILTER_CRITERIA):
        return None
    instead = (
        "to de-identify a whole store, list its studies in a filter file (filter_uri)"
        if "destination_dicom_store_id" in declared
        else "to export the whole store, trigger dicom_export instead"
    )
    return (
        f"No criterion given: {', '.join(FILTER_CRITERIA)} are all empty, so this would select the whole store. "
        f"Give at least one; {instead}."
    )


def run_param_problems(declared: Iterable[str], values: Mapping[str, Any], conf: Mapping[str, Any] | None) -> list[str]:
    """Every problem with a run's values, in words: unknown keys first, then each declared param, then ranges.

    ``declared`` are the DAG's own params: Airflow adds any other key of ``conf`` to a run's params, so the
    run's params alone cannot tell a typo from a param.
    """
    names = list(declared)
    problems = []
    for key in sorted(set(conf or {}) - set(names)):
        close = difflib.get_close_matches(key, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        problems.append(
            f"{key!r} is not a parameter of this DAG, so it would be ignored.{hint} Known: {', '.join(sorted(names))}."
        )
    for name in names:
        rule = PARAM_RULES.get(name)
        setting = settings.setting_of_param(name)
        if values.get(name) is None and setting is not None and setting.default is None and setting.required:
            problems.append(
                f"{name}: no value. Give {name} in the run's conf, or set {setting.variable} in the deployment's "
                f"environment (see the README's settings): there is no default, so nothing goes to a guessed place."
            )
            continue
        try:
            if rule is not None:
                rule(values.get(name), name)
            if name == "study_date_to" and values.get("study_date_from") and values.get(name):
                check_date_range(values["study_date_from"], values[name], "study_date_from", name)
            if name == "gcs_uri" and values.get(name):
                check_outside_import(values, name)
            if name == "remove_tags" and values.get(name) and values.get("keep_tags"):
                raise ValidationError(
                    name, values[name], "cannot be combined with keep_tags: give one list or the other"
                )
        except ValidationError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
    if not problems:
        whole_store = check_some_criterion(names, values)
        if whole_store:
            problems.append(whole_store)
    return problems


def check_outside_import(values: Mapping[str, Any], field: str) -> None:
    """A failure report or quarantined copy that the import pattern matches would be imported the next night
    and fail there: refuse such a pattern."""
    pattern = parse_import_uri(values[field], field)
    rx = wildcard_regex(pattern.name)
    for other in ("failure_report_prefix", "quarantine_prefix"):
        where = values.get(other) or (
            f"gs://{values.get('source_bucket')}/import-failures" if other == "failure_report_prefix" else None
        )
        if not where:
            continue
        target = parse_gcs_uri(where, other, allow_empty_object=True)
        if other == "failure_report_prefix":
            sample = f"{target.name.rstrip('/')}/dicom_nightly_import/run.ndjson".lstrip("/")
        else:  # a quarantined copy keeps the source's bucket and path: <prefix>/<bucket>/<path that matched>
            matched = pattern.name.replace("**", "a/b").replace("*", "a").replace("?", "a")
            sample = f"{target.name.rstrip('/')}/{pattern.bucket}/{matched}".lstrip("/")
        if target.bucket == pattern.bucket and rx.match(sample):
            raise ValidationError(
                field,
                values[field],
                f"matches the files written under {other}={where!r}, which the next night would import; narrow "
                f"the pattern or set {other} elsewhere",
            )


EXPORT_PREFIX = "{{ params.destination_prefix or ('gs://' ~ params.export_bucket ~ '/exports/' ~ (run_id | bq_safe)) }}"
"""Where an export run writes, defined once: the export operator renders it and returns it as ``uri_prefix``."""
