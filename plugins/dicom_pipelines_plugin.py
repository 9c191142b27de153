"""Registers the Healthcare extra links with Airflow, so the UI and API can show them."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from dicom_pipelines.links import HealthcareDicomStoreLink, HealthcareOperationLink


class DicomPipelinesPlugin(AirflowPlugin):
    name = "dicom_pipelines"
    operator_extra_links = [HealthcareDicomStoreLink(), HealthcareOperationLink()]
