"""An OpenLineage transport that keeps a run's ``conf`` out of lineage: the filtered export's criteria are PatientIDs.

The OpenLineage provider puts every DAG run's ``conf`` into the ``airflowDagRun`` and ``airflow`` run facets of
its events. Its redactor hides secrets by key name, but does not look inside those facets (they are dict subclasses
that it walks as objects), and a PatientID is no secret by name anyway. A run of ``dicom_filtered_export`` or
``dicom_deidentified_export`` started with ``{"patient_ids": [...]}`` would hand them to the lineage backend.

Configure it around the transport you would use, in ``[openlineage] transport``::

    {"type": "dicom_pipelines.lineage_transport.ConfRedactingTransport",
     "transport": {"type": "http", "url": "https://lineage.example", "endpoint": "api/v1/lineage"}}

Every key of the conf stays (a graph still shows that a run was given ``patient_ids``); every value becomes
``***``. Imported by the OpenLineage client only, so it may import OpenLineage at the top.
"""

from __future__ import annotations

from typing import Any

import attrs
from openlineage.client.transport import get_default_factory
from openlineage.client.transport.transport import Config, Transport

REDACTED = "***"


@attrs.define
class ConfRedactingConfig(Config):
    transport: dict[str, Any] = attrs.field(factory=dict)
    """The configuration of the transport that sends the redacted events (http, file, kafka, ...)."""

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> ConfRedactingConfig:
        inner = params.get("transport")
        if not isinstance(inner, dict) or "type" not in inner:
            raise ValueError(
                "ConfRedactingTransport: 'transport' must be the wrapped transport's configuration, with its 'type' "
                '(e.g. {"type": "http", "url": "..."})'
            )
        return cls(transport=dict(inner))


def redact_run_conf(event: Any) -> Any:
    """Replace every value of the run's ``conf`` in the event's run facets by ``***``, in place."""
    facets = getattr(getattr(event, "run", None), "facets", None) or {}
    for facet in facets.values():
        dag_run = getattr(facet, "dagRun", None)
        if isinstance(dag_run, dict) and isinstance(dag_run.get("conf"), dict):
            dag_run["conf"] = {key: REDACTED for key in dag_run["conf"]}
    return event


class ConfRedactingTransport(Transport):
    kind = "dicom_pipelines_conf_redacting"
    config_class = ConfRedactingConfig

    def __init__(self, config: ConfRedactingConfig) -> None:
        self.config = config
        self.inner = get_default_factory().create(dict(config.transport))

    def emit(self, event: Any) -> Any:
        return self.inner.emit(redact_run_conf(event))

    def close(self, timeout: float = -1) -> bool:
        return self.inner.close(timeout)
