"""Airflow hooks, operators, sensors and triggers for Cloud Healthcare API DICOM import/export."""

__version__ = "0.1.0"
