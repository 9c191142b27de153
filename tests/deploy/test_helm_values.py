"""The Helm values are consistent with the package, its settings and the deployments the drills proved."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dicom_pipelines import __version__, settings
from scripts.stack import Stack

REPO = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())


def test_the_image_is_the_dockerfiles_with_the_package_version():
    dockerfile = (REPO / "docker" / "airflow.Dockerfile").read_text()
    base = re.search(r"^FROM apache/airflow:(\S+)-python", dockerfile, re.M)
    assert base and VALUES["airflowVersion"] == base.group(1)
    assert VALUES["images"]["airflow"]["tag"] == __version__
    assert "pip install --no-cache-dir --no-deps /opt/airflow/project" in dockerfile


def test_every_setting_without_a_default_is_given_and_every_env_is_a_setting():
    given = {e["name"]: e["value"] for e in VALUES["env"]}
    known = {s.variable for s in settings.SETTINGS}
    assert set(given) <= known, set(given) - known
    for s in settings.SETTINGS:
        if s.default is None and s.param and s.required:
            assert given.get(s.variable), f"{s.variable} has no default: the values must set it"
    assert given["DICOM_CREATE_IF_MISSING"] == "false"


def test_the_airflow_settings_are_those_the_drills_proved(tmp_path):
    local = Stack(tmp_path / "s", 30000).airflow_environment()
    for section, options in VALUES["config"].items():
        for option, value in options.items():
            variable = f"AIRFLOW__{section.upper()}__{option.upper()}"
            if variable in local:
                assert str(value) == local[variable], variable
    assert VALUES["config"]["triggerer"]["triggerer_health_check_threshold"] == 15
    assert VALUES["executor"] == "CeleryExecutor" and VALUES["triggerer"]["replicas"] >= 2


def test_the_readmes_composer_steps_name_the_package_and_its_version():
    readme = (REPO / "README.md").read_text()
    composer = readme[readme.index("**Cloud Composer 3.**") : readme.index("**The official Helm chart.**")]
    assert f'--update-pypi-package "airflow-provider-dicom-pipelines=={__version__}"' in composer
    for path in ("plugins/dicom_pipelines/", "plugins/dicom_pipelines_plugin.py", "plugins/.airflowignore"):
        assert path in composer and (REPO / path).exists(), path
    assert "dags/*.py" in composer and "include/" not in composer.replace("include/sql", "")
