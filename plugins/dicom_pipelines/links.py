"""Extra links on Healthcare tasks: the DICOM store and the operation in the Cloud Console.

They build on the Google provider's ``BaseGoogleLink``: the operator persists the parts (``persist``),
and the link is formatted when the UI asks. After a deferral Airflow stores the formatted URL under
the same key; ``BaseGoogleLink`` returns it as it is.
"""

from __future__ import annotations

from airflow.providers.google.cloud.links.base import BaseGoogleLink

CONSOLE = "https://console.cloud.google.com/healthcare/browser"


class HealthcareDicomStoreLink(BaseGoogleLink):
    name = "DICOM store"
    key = "healthcare_dicom_store_link"
    format_str = (
        CONSOLE + "/locations/{location}/datasets/{dataset_id}/dicomStores/{dicom_store_id}/details/overview"
        "?project={project_id}"
    )


class HealthcareOperationLink(BaseGoogleLink):
    name = "Healthcare operation"
    key = "healthcare_operation_link"
    format_str = CONSOLE + "/locations/{location}/datasets/{dataset_id}/operations/{operation_id}?project={project_id}"
