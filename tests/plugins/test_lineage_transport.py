"""The conf-redacting OpenLineage transport: a run's conf values never reach the wrapped transport."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("airflow.providers.openlineage", reason="the OpenLineage provider is an optional dependency")

from openlineage.client.event_v2 import Job, Run, RunEvent, RunState  # noqa: E402
from openlineage.client.transport import get_default_factory  # noqa: E402

from dicom_pipelines.lineage_transport import ConfRedactingTransport  # noqa: E402


def event_with_conf(conf: dict) -> RunEvent:
    from airflow.providers.openlineage.plugins.facets import AirflowDagRunFacet
    from airflow.providers.openlineage.utils.utils import DagRunInfo

    class DagRun:
        dag_id, run_id, run_type = "dicom_filtered_export", "manual__1", "manual"

    DagRun.conf = conf  # type: ignore[attr-defined]
    facet = AirflowDagRunFacet(dag={"dag_id": "dicom_filtered_export"}, dagRun=DagRunInfo(DagRun()))
    return RunEvent(
        eventType=RunState.START,
        eventTime="2026-12-05T10:00:00Z",
        run=Run(runId="01939a4e-0000-7000-8000-000000000001", facets={"airflowDagRun": facet}),
        job=Job(namespace="hospital-airflow", name="dicom_filtered_export"),
        producer="test",
    )


def test_conf_values_are_redacted_before_the_wrapped_transport_writes(tmp_path):
    out = tmp_path / "lineage.ndjson"
    transport = get_default_factory().create(
        {
            "type": "dicom_pipelines.lineage_transport.ConfRedactingTransport",
            "transport": {"type": "file", "log_file_path": str(out), "append": True},
        }
    )
    assert isinstance(transport, ConfRedactingTransport)
    transport.emit(event_with_conf({"patient_ids": ["P-003"], "modalities": ["CT"]}))
    written = out.read_text()
    assert "P-003" not in written and "CT" not in written
    assert json.loads(written)["run"]["facets"]["airflowDagRun"]["dagRun"]["conf"] == {
        "patient_ids": "***",
        "modalities": "***",
    }


def test_a_missing_wrapped_transport_is_refused_in_words():
    with pytest.raises(ValueError, match="'transport' must be the wrapped transport's configuration"):
        get_default_factory().create({"type": "dicom_pipelines.lineage_transport.ConfRedactingTransport"})
