"""What ``airflow providers list`` and Airflow's providers manager read about this package.

Named by the package's ``apache_airflow_provider`` entry point, as the community providers do; the plugin (timetable
and links for the UI) has its own ``airflow.plugins`` entry point, since Airflow loads provider-declared plugins
only with ``[core] lazy_discover_providers`` off.
"""

from __future__ import annotations

from typing import Any

from dicom_pipelines import __version__

PACKAGE_NAME = "airflow-provider-dicom-pipelines"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": PACKAGE_NAME,
        "name": "DICOM pipelines for the Cloud Healthcare API",
        "description": "Import DICOM from Cloud Storage into a Healthcare DICOM store, export a store (all of it, "
        "by BigQuery criteria or de-identified) to Cloud Storage, with the operations polled in the triggerer.",
        "versions": [__version__],
        "extra-links": [
            "dicom_pipelines.links.HealthcareDicomStoreLink",
            "dicom_pipelines.links.HealthcareOperationLink",
        ],
    }
