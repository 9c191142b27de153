"""Example: a DAG of your own that runs after each verified DICOM export, scheduled on the exports' asset alias.

Every export DAG (whole store, filtered, de-identified) emits an event on ``AssetAlias("dicom_exports")`` for the
``gs://`` prefix it wrote, once its objects were counted; the event's ``extra`` holds the counts, the MIME type and
the operation's name, never a path under the prefix or a patient identifier. A consumer reads the prefix and starts
its own work on it (a training job, a transfer to a partner, a notification).
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import DAG, AssetAlias, task

log = logging.getLogger(__name__)

with DAG(
    dag_id="example_dicom_export_consumer",
    schedule=AssetAlias("dicom_exports"),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["dicom", "example"],
) as dag:

    @task
    def arrived(**context) -> list[dict]:
        """The prefixes the triggering exports wrote, with their counts."""
        exports = [
            {
                "prefix": event.asset.uri,
                "instances": event.extra.get("instances"),
                "mime_type": event.extra.get("mime_type"),
            }
            for events in context["triggering_asset_events"].values()
            for event in events
        ]
        for export in exports:
            log.info("%(instances)s instances exported to %(prefix)s as %(mime_type)s", export)
        return exports

    arrived()
