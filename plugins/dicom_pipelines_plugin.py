"""Registers the Healthcare extra links (so the UI and API can show them) and the nightly import's timetable
(so Airflow can serialize the DAG that uses it)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from dicom_pipelines.links import HealthcareDicomStoreLink, HealthcareOperationLink
from dicom_pipelines.timetables import NightlyImportTimetable


class DicomPipelinesPlugin(AirflowPlugin):
    name = "dicom_pipelines"
    operator_extra_links = [HealthcareDicomStoreLink(), HealthcareOperationLink()]
    timetables = [NightlyImportTimetable]
