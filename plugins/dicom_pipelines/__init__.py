"""Airflow hooks, operators, sensors and triggers for Cloud Healthcare API DICOM import/export."""
