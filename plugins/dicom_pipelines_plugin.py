"""Registers the package's plugin when ``plugins/`` is Airflow's plugins folder (the package not installed).

``plugins/.airflowignore`` keeps Airflow's plugin loader out of ``dicom_pipelines/``: it would import each of its
modules a second time under a bare name (``hooks``, ``operators``...).
"""

from __future__ import annotations

from dicom_pipelines.plugin import DicomPipelinesPlugin

__all__ = ["DicomPipelinesPlugin"]
