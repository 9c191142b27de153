"""OpenLineage for the DICOM operators: where a night's instances came from and went, with counts, never PHI.

The operators' ``get_openlineage_facets_on_complete`` / ``_on_failure`` call :func:`operator_lineage` when the
``apache-airflow-providers-openlineage`` listener asks, as a task ends. Only that function imports OpenLineage:
without the provider installed, the naming below is all that is loaded.

Dataset naming follows OpenLineage's conventions where it has one (https://openlineage.io/docs/spec/naming):

=====================  ==========================  =============================================================
what                   namespace                   name
=====================  ==========================  =============================================================
Cloud Storage          ``gs://<bucket>``           the object path; for a wildcard, the folder before it (``/``
                                                   for the bucket's root)
BigQuery table         ``bigquery``                ``<project>.<dataset>.<table>``
DICOM store            ``healthcare``              the store's resource name, ``projects/P/locations/L/datasets/
                                                   D/dicomStores/S``
=====================  ==========================  =============================================================

OpenLineage names no scheme for the Healthcare API. The DICOM store's is the asset URI these pipelines already
emit (``healthcare://<resource name>``) split at ``://``, as OpenLineage splits ``gs://`` and ``bigquery``: a
lineage graph and an asset-scheduled DAG name the same store the same way.

Facets carry counts only: the output's ``outputStatistics.rowCount`` is the instances written, and the
``dicomOperation`` run facet has the operation kind and its succeeded, failed and pending counters. No
failed file's path, no UID and no DICOM attribute is ever put in a facet.
"""

from __future__ import annotations

import functools
from typing import Any

from dicom_pipelines.validation import parse_gcs_uri

HEALTHCARE_NAMESPACE = "healthcare"
DicomDataset = tuple[str, str]
"""A dataset as (namespace, name): what the operators hand to :func:`operator_lineage`."""

SCHEMA_URL = "urn:airflow-provider-dicom-pipelines:openlineage:DicomOperationRunFacet:1-0-0"
"""The facet's ``_schemaURL``: a URN until the package has a published schema location; its fields are below."""


@functools.cache
def run_facet_class() -> type:
    """``DicomOperationRunFacet``: the counters of the operation a task ran, beside the datasets in a lineage graph.

    Fields: ``operation`` (its resource name), ``operationKind``, ``succeeded``, ``failed``, ``pending``. Made on
    first use, since its base class comes from OpenLineage.
    """
    import attrs
    from airflow.providers.common.compat.openlineage.facet import RunFacet

    @attrs.define
    class DicomOperationRunFacet(RunFacet):
        operation: str
        operationKind: str  # noqa: N815 - OpenLineage facets are camelCase
        succeeded: int
        failed: int
        pending: int

        @staticmethod
        def _get_schema() -> str:
            return SCHEMA_URL

    return DicomOperationRunFacet


def store_dataset(store_name: str) -> DicomDataset:
    return HEALTHCARE_NAMESPACE, store_name


def gcs_dataset(uri: str, field: str) -> DicomDataset:
    """``gs://bucket/a/b/**.dcm`` → (``gs://bucket``, ``a/b``): a pattern is named by the folder it reads."""
    location = parse_gcs_uri(uri, field, allow_empty_object=True)
    path = location.name
    if any(c in path for c in "*?["):
        path = path[: min(path.index(c) for c in "*?[" if c in path)].rpartition("/")[0]
    return f"gs://{location.bucket}", path.strip("/") or "/"


def bigquery_dataset(table_uri: str) -> DicomDataset:
    """``bq://project.dataset.table`` → (``bigquery``, ``project.dataset.table``)."""
    return "bigquery", table_uri.removeprefix("bq://")


def operator_lineage(
    inputs: list[DicomDataset],
    outputs: list[DicomDataset],
    kind: str,
    result: dict[str, Any] | None,
) -> Any:
    """The ``OperatorLineage`` of one finished (or failed) task; ``result`` has the operation's counters, or None."""
    from airflow.providers.common.compat.openlineage.facet import (
        InputDataset,
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )
    from airflow.providers.openlineage.extractors import OperatorLineage

    written = None if result is None else int(result.get("success") or 0)
    run_facets: dict[str, Any] = {}
    if result is not None:
        run_facets["dicomOperation"] = run_facet_class()(
            operation=str(result.get("operation_name") or ""),
            operationKind=kind,
            succeeded=int(result.get("success") or 0),
            failed=int(result.get("failure") or 0),
            pending=int(result.get("pending") or 0),
        )
    return OperatorLineage(
        inputs=[InputDataset(namespace=ns, name=name) for ns, name in inputs],
        outputs=[
            OutputDataset(
                namespace=ns,
                name=name,
                outputFacets={"outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=written)}
                if written is not None
                else {},
            )
            for ns, name in outputs
        ],
        run_facets=run_facets,
    )
