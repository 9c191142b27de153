"""OpenLineage datasets of the DICOM operators: naming, counts, and a task whose input was refused."""

from __future__ import annotations

import pytest

from dicom_pipelines.lineage import bigquery_dataset, gcs_dataset, store_dataset
from dicom_pipelines.operators import (
    HealthcareDicomDeidentifyOperator,
    HealthcareDicomExportOperator,
    HealthcareDicomExportToBigQueryOperator,
    HealthcareDicomImportOperator,
)

pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is an optional dependency")

STORE = {"project_id": "p", "location": "europe-west4", "dataset_id": "d", "dicom_store_id": "s"}
STORE_NAME = "projects/p/locations/europe-west4/datasets/d/dicomStores/s"


@pytest.mark.parametrize(
    "uri,name",
    [
        ("gs://incoming/2026-12-04/**", "2026-12-04"),
        ("gs://incoming/site-a/2026-12-04/*.dcm", "site-a/2026-12-04"),
        ("gs://incoming/a/b?.dcm", "a"),
        ("gs://incoming/**", "/"),
        ("gs://exports/run-1/", "run-1"),
        ("gs://exports", "/"),
        ("gs://exports/filters/run-1.txt", "filters/run-1.txt"),
    ],
)
def test_cloud_storage_is_named_by_bucket_and_the_folder_a_pattern_reads(uri, name):
    assert gcs_dataset(uri, "gcs_uri") == ("gs://" + uri[5:].partition("/")[0], name)


def test_stores_and_tables_are_named_as_their_resources():
    assert store_dataset(STORE_NAME) == ("healthcare", STORE_NAME)
    assert bigquery_dataset("bq://p.dicom_metadata.t") == ("bigquery", "p.dicom_metadata.t")


def pairs(datasets) -> list[tuple[str, str]]:
    return [(d.namespace, d.name) for d in datasets]


def test_each_operator_reports_its_inputs_and_outputs_with_the_operations_counts():
    imp = HealthcareDicomImportOperator(task_id="i", gcs_uri="gs://incoming/2026-12-04/**", **STORE)
    imp._result = {"operation_name": "projects/p/locations/l/datasets/d/operations/9", "success": 5, "failure": 2}
    lineage = imp.get_openlineage_facets_on_complete(None)
    assert pairs(lineage.inputs) == [("gs://incoming", "2026-12-04")]
    assert pairs(lineage.outputs) == [("healthcare", STORE_NAME)]
    assert lineage.outputs[0].outputFacets["outputStatistics"].rowCount == 5
    facet = lineage.run_facets["dicomOperation"]
    assert (facet.operationKind, facet.succeeded, facet.failed, facet.pending) == ("import", 5, 2, 0)

    export = HealthcareDicomExportOperator(
        task_id="e", uri_prefix="gs://exports/ct", filter_uri="gs://exports/filters/f.txt", **STORE
    )
    lineage = export.get_openlineage_facets_on_failure(None)
    assert pairs(lineage.inputs) == [("healthcare", STORE_NAME), ("gs://exports", "filters/f.txt")]
    assert pairs(lineage.outputs) == [("gs://exports", "ct")]
    assert lineage.outputs[0].outputFacets == {} and lineage.run_facets == {}  # no operation finished: no counts

    to_bq = HealthcareDicomExportToBigQueryOperator(task_id="b", table_uri="bq://p.dicom_metadata.t", **STORE)
    assert pairs(to_bq.get_openlineage_facets_on_complete(None).outputs) == [("bigquery", "p.dicom_metadata.t")]

    deid = HealthcareDicomDeidentifyOperator(task_id="x", destination_dicom_store_id="deid-1", **STORE)
    lineage = deid.get_openlineage_facets_on_complete(None)
    assert pairs(lineage.outputs) == [("healthcare", STORE_NAME.replace("/s", "/deid-1"))]


def test_a_refused_input_reports_no_dataset():
    imp = HealthcareDicomImportOperator(task_id="i", gcs_uri="s3://elsewhere/x", **STORE)
    lineage = imp.get_openlineage_facets_on_complete(None)
    assert lineage.inputs == [] and lineage.outputs == []
