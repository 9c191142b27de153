"""Bad input to the three DAGs is refused before any API call, with a message that names the field in words.

Each case is one kind of bad input, as a user would send it (the Trigger form's conf, or the REST API's). It is
refused at one of two places, and the test finds which the way Airflow does:

- the params' JSON schema (types, real dates, lengths, choices): the trigger answers 400;
- ``run_param_problems``, which the first task (``check_params``) runs: unknown keys, ids, bucket names,
  ``gs://`` URIs and wildcard rules, backwards date ranges. That task fails without a retry.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from dicom_pipelines.dag_params import PARAM_RULES, run_param_problems
from tests.helpers import dag_bag

DAGS = Path(__file__).resolve().parents[2] / "dags"
NIGHTLY, FILTERED, EXPORT = "dicom_nightly_import", "dicom_filtered_export", "dicom_export"
ARRIVALS = "dicom_arrival_import"
LONG = "x" * 100_000

# (dag, conf, the field the message must name, words the message must hold)
BAD_INPUTS = [
    (NIGHTLY, {"dicom_store_id": "demo-store\n"}, "dicom_store_id", "letters, digits"),
    (NIGHTLY, {"dicom_store_id": ""}, "dicom_store_id", "non-empty"),
    (NIGHTLY, {"dicom_store_id": "s" * 300}, "dicom_store_id", "too long"),
    (NIGHTLY, {"project_id": "my project"}, "project_id", "letters, digits"),
    (NIGHTLY, {"location": "us/central1"}, "location", "letters, digits"),
    (NIGHTLY, {"dataset_id": "a/b"}, "dataset_id", "letters, digits"),
    (NIGHTLY, {"source_bucket": "gs://dicom-incoming"}, "source_bucket", "without gs://"),
    (NIGHTLY, {"source_bucket": "Dicom_Incoming"}, "source_bucket", "lowercase letters"),
    (NIGHTLY, {"source_bucket": "ab"}, "source_bucket", "too short"),
    (NIGHTLY, {"source_prefix": "incoming/"}, "source_prefix", "must not start or end with '/'"),
    (NIGHTLY, {"source_prefix": "in*coming"}, "source_prefix", "no wildcards"),
    (NIGHTLY, {"source_prefix": "p" * 1000}, "source_prefix", "too long"),
    (NIGHTLY, {"source_pattern": "a/**/b.dcm"}, "source_pattern", "end of the path"),
    (NIGHTLY, {"source_pattern": "/**.dcm"}, "source_pattern", "must not start with '/'"),
    (NIGHTLY, {"source_pattern": "**a/**"}, "source_pattern", "only once"),
    (NIGHTLY, {"source_pattern": ""}, "source_pattern", "non-empty"),
    (NIGHTLY, {"day": "2026-13-45"}, "day", "is not a 'date'"),
    (NIGHTLY, {"day": "2026-02-30"}, "day", "is not a 'date'"),
    (NIGHTLY, {"day": 20261124}, "day", "is not of type"),
    (NIGHTLY, {"gcs_uri": "s3://bucket/x.dcm"}, "gcs_uri", "must start with gs://"),
    (NIGHTLY, {"gcs_uri": "gs://bucket/folder/"}, "gcs_uri", "a folder is not imported by itself"),
    (NIGHTLY, {"gcs_uri": "gs://bucket/x.dcm\n"}, "gcs_uri", "line breaks"),
    (NIGHTLY, {"gcs_uri": "gs://bucket/" + "é" * 600}, "gcs_uri", "at most 1024 bytes"),
    (NIGHTLY, {"gcs_uri": "gs://bucket/" + LONG}, "gcs_uri", "too long"),
    (NIGHTLY, {"gcs_uri": "gs://Bucket/x.dcm"}, "gcs_uri", "bucket name"),
    (NIGHTLY, {"allow_empty": "False"}, "allow_empty", "is not of type 'boolean'"),
    (NIGHTLY, {"max_failures": -1}, "max_failures", "less than the minimum of 0"),
    (NIGHTLY, {"max_failures": 1.5}, "max_failures", "is not of type"),
    (NIGHTLY, {"max_failure_ratio": 1.5}, "max_failure_ratio", "greater than the maximum of 1"),
    (NIGHTLY, {"gcs_url": "gs://bucket/x.dcm"}, "gcs_url", "Did you mean 'gcs_uri'?"),
    (NIGHTLY, {"gcs_uri": "gs://dicom-incoming/**"}, "gcs_uri", "which the next night would import"),
    (
        NIGHTLY,
        {
            "gcs_uri": "gs://dicom-incoming/**",
            "failure_report_prefix": "gs://dicom-reports/x",
            "quarantine_prefix": "gs://dicom-incoming/held",
        },
        "gcs_uri",
        "quarantine_prefix",
    ),
    (
        NIGHTLY,
        {"gcs_uri": "gs://dicom-incoming/**.dcm", "quarantine_prefix": "gs://dicom-incoming/held"},
        "gcs_uri",
        "quarantine_prefix",
    ),
    (NIGHTLY, {"failure_report_prefix": "s3://reports"}, "failure_report_prefix", "must start with gs://"),
    (FILTERED, {"modalities": None}, "modalities", "No criterion given"),
    (FILTERED, {"modalities": [], "patient_ids": []}, "dicom_export", "No criterion given"),
    (FILTERED, {"filter_uri": "", "modalities": ["CT"]}, "filter_uri", "or null (left out)"),
    (NIGHTLY, {"quarantine_prefix": "gs://Held"}, "quarantine_prefix", "bucket name"),
    (NIGHTLY, {"create_if_missing": "no"}, "create_if_missing", "is not of type 'boolean'"),
    (FILTERED, {"modality": ["US"]}, "modality", "Did you mean 'modalities'?"),
    (FILTERED, {"modalities": ["ct"]}, "modalities", "is not one of"),
    (FILTERED, {"modalities": "CT"}, "modalities", "is not of type"),
    (FILTERED, {"modalities": ["CT", "CT"]}, "modalities", "non-unique"),
    (FILTERED, {"study_date_from": "2026-11-20", "study_date_to": "2026-11-01"}, "study_date_to", "match nothing"),
    (FILTERED, {"study_date_to": "2026/11/01"}, "study_date_to", "is not a 'date'"),
    (FILTERED, {"patient_ids": ["P,001"]}, "patient_ids[0]", "without commas"),
    (FILTERED, {"patient_ids": ["P" * 65]}, "patient_ids[0]", "1-64 characters"),
    (FILTERED, {"patient_ids": "P-001"}, "patient_ids", "is not of type"),
    (FILTERED, {"study_uids": ["1.2;DROP"]}, "study_uids[0]", "digits and dots"),
    (FILTERED, {"study_uids": ["1." + "2" * 100_000]}, "study_uids[0]", "at most 64"),
    (FILTERED, {"study_uids": ["1.02.3"]}, "study_uids[0]", "no leading zeros"),
    (FILTERED, {"granularity": "frame"}, "granularity", "is not one of"),
    (FILTERED, {"bigquery_dataset": "my-dataset"}, "bigquery_dataset", "letters, digits or '_'"),
    (FILTERED, {"filter_uri": "gs://bucket/"}, "filter_uri", "must name an object"),
    (FILTERED, {"filter_url": "gs://bucket/f.txt"}, "filter_url", "Did you mean 'filter_uri'?"),
    (FILTERED, {"metadata_table": "my-project.dataset.table"}, "metadata_table", "bq://PROJECT.DATASET.TABLE"),
    (NIGHTLY, {"metadata_stream_table": "bq://p.data-set.t"}, "metadata_stream_table", "dataset: letters, digits"),
    (FILTERED, {"maximum_bytes_billed": 0}, "maximum_bytes_billed", "less than the minimum of 1"),
    (FILTERED, {"work_table_expiration_hours": 1000}, "work_table_expiration_hours", "greater than the maximum"),
    (EXPORT, {"mimetype": "image/png"}, "mimetype", "Did you mean 'mime_type'?"),
    (EXPORT, {"mime_type": "image/gif"}, "mime_type", "is not one of"),
    (EXPORT, {"destination_prefix": "gs://dicom-exports/a*"}, "destination_prefix", "not a pattern"),
    (EXPORT, {"destination_prefix": "s3://x/y"}, "destination_prefix", "must start with gs://"),
    (EXPORT, {"destination_prefix": "gs://b" + LONG}, "destination_prefix", "too long"),
    (EXPORT, {"export_bucket": "Exports"}, "export_bucket", "lowercase letters"),
    (EXPORT, {"max_failure_ratio": "5%"}, "max_failure_ratio", "is not of type"),
    (EXPORT, {"dicom_store_id": "demo store"}, "dicom_store_id", "letters, digits"),
    (ARRIVALS, {"staging_prefix": "dicom-incoming/_staging"}, "staging_prefix", "must start with gs://"),
    (ARRIVALS, {"staging_prefix": "gs://Staging"}, "staging_prefix", "bucket name"),
    (ARRIVALS, {"source_pattern": "a/**/b.dcm"}, "source_pattern", "end of the path"),
    (ARRIVALS, {"day": "2026-12-05"}, "day", "is not a parameter of this DAG"),
]


@pytest.fixture(scope="module")
def dags():
    return dag_bag(DAGS).dags


def refusal(dag, conf: dict) -> str | None:
    """What the user is told: the trigger's 400 if the schema refuses, else the first task's failure message."""
    from airflow.providers.common.compat.sdk import ParamValidationError

    params = copy.deepcopy(dag.params)
    try:
        params.update(conf)
        values = params.validate()
    except ParamValidationError as exc:
        return str(exc).split("\n", 1)[0]  # the line the dialog and the 400 lead with
    problems = run_param_problems(dag.params, values, conf)
    return "\n".join(problems) or None


@pytest.mark.parametrize("dag_id,conf,field,words", BAD_INPUTS, ids=[f"{c[0][6:]}-{c[2]}" for c in BAD_INPUTS])
def test_bad_input_is_refused_in_words(dags, dag_id, conf, field, words):
    message = refusal(dags[dag_id], conf)
    assert message is not None, f"{conf} was accepted"
    assert field in message and words in message, message
    assert not any(regex in message for regex in ("^", "$'", "does not match", "[A-Z")), message
    if not message.startswith("Invalid input for param"):  # Airflow's 400 repeats what the caller sent
        assert len(message) < 2_000, "a long value is shortened in our messages, not repeated"


def test_patient_ids_are_never_repeated_in_a_refusal(dags):
    message = refusal(dags[FILTERED], {"patient_ids": ["P-001", "Doe,Jane"]})
    assert message and "patient_ids[1]" in message and "withheld" in message
    assert "Doe" not in message and "P-001" not in message


def test_how_many_kinds_of_bad_input_are_refused(capsys):
    kinds = len(BAD_INPUTS)
    per_dag = {d: sum(1 for c in BAD_INPUTS if c[0] == d) for d in (NIGHTLY, FILTERED, EXPORT)}
    with capsys.disabled():
        print(f"\n{kinds} kinds of bad input refused before any API call: {per_dag}")
    assert kinds >= 40 and all(per_dag.values())


@pytest.mark.parametrize("dag_id", [NIGHTLY, FILTERED, EXPORT, ARRIVALS])
def test_defaults_pass_and_every_param_has_a_rule_in_words(dags, dag_id):
    """The filtered export's defaults name no criterion: they would select the whole store, so they are refused."""
    dag = dags[dag_id]
    assert set(dag.params) <= set(PARAM_RULES), set(dag.params) - set(PARAM_RULES)
    if dag_id == FILTERED:
        assert refusal(dag, {}).startswith("No criterion given")
    else:
        assert refusal(dag, {}) is None


def test_a_de_identification_with_no_criterion_is_refused(dags):
    message = refusal(dags["dicom_deidentified_export"], {"modalities": None, "filter_uri": None})
    assert message and message.startswith("No criterion given") and "filter file (filter_uri)" in message
    assert refusal(dags["dicom_deidentified_export"], {"study_uids": ["1.2.3"]}) is None


@pytest.mark.parametrize(
    "dag_id,conf",
    [
        (NIGHTLY, {"source_pattern": "*.dcm"}),
        (NIGHTLY, {"source_prefix": None, "day": "2026-11-24"}),
        (NIGHTLY, {"gcs_uri": "gs://dicom-incoming/site-a/**.dcm", "max_failures": 3}),
        (NIGHTLY, {"gcs_uri": "gs://dicom-incoming/**", "failure_report_prefix": "gs://dicom-reports/nightly"}),
        (NIGHTLY, {"quarantine_prefix": "gs://dicom-incoming/held", "create_if_missing": False}),
        (FILTERED, {"modalities": ["CT", "MR"], "study_date_from": "2026-11-01", "study_date_to": "2026-11-01"}),
        (FILTERED, {"patient_ids": ["P-001"], "study_uids": ["1.2.840.113619.2.55.3"], "granularity": "instance"}),
        (EXPORT, {"mime_type": "image/png", "destination_prefix": "gs://dicom-exports/research/png"}),
        (EXPORT, {"mime_type": None, "max_failure_ratio": 0.05}),
    ],
)
def test_good_input_passes(dags, dag_id, conf):
    assert refusal(dags[dag_id], conf) is None
