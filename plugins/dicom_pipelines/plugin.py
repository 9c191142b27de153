"""The Airflow plugin of the package: registers the Healthcare extra links (so the UI and API can show them) and
the nightly import's timetable (so Airflow can serialize the DAG that uses it).

An installed package registers it through its ``airflow.plugins`` entry point; a copy of ``plugins/`` registers it
through ``dicom_pipelines_plugin.py``. With both, Airflow keeps the first and reports the second as a plugin
import error, which is the hint to keep one of the two.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from dicom_pipelines.links import HealthcareDicomStoreLink, HealthcareOperationLink
from dicom_pipelines.timetables import NightlyImportTimetable


class DicomPipelinesPlugin(AirflowPlugin):
    name = "dicom_pipelines"
    operator_extra_links = [HealthcareDicomStoreLink(), HealthcareOperationLink()]
    timetables = [NightlyImportTimetable]
