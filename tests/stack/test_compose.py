"""docker-compose.yaml and its images, checked without a Docker engine: Debian's Compose v1 validates the file
offline, and the structure a Celery deployment needs is read from its resolved form."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = (
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-triggerer-2",
)
STAND_INS = ("bigquery", "logging", "healthcare")


def compose(*args: str, env_file: Path = REPO / ".env.example") -> subprocess.CompletedProcess:
    """Compose v1 with ``env_file`` in place of a user's ``.env`` (and no AIRFLOW_* variable inherited)."""
    assert shutil.which("docker-compose"), "make setup installs Debian's docker-compose (Compose v1)"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yaml"), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=clean,
    )


@pytest.fixture(scope="module")
def resolved() -> dict:
    out = compose("config")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_the_compose_file_validates_with_the_documented_env_file(resolved):
    assert {"postgres", "redis", "gcs", "airflow-init", *AIRFLOW_SERVICES, *STAND_INS} <= set(resolved["services"])


def test_without_the_secrets_it_refuses_to_start_and_says_where_they_go(tmp_path):
    (tmp_path / "empty.env").write_text("AIRFLOW_UID=50000\n")
    out = compose("config", "-q", env_file=tmp_path / "empty.env")
    assert out.returncode != 0
    assert re.search(r"set AIRFLOW_(JWT_SECRET|FERNET_KEY) in \.env \(see \.env\.example\)", out.stderr), out.stderr


def test_no_secret_or_quick_check_install_is_written_in_the_file():
    raw = (REPO / "docker-compose.yaml").read_text()
    assert "_PIP_ADDITIONAL_REQUIREMENTS" not in raw
    assert "pip install" not in raw, "images are built once, not installed into at every start"
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"):
        assert re.search(rf"{key}: \$\{{AIRFLOW_\w+:\?", raw), f"{key} comes from .env"
    example = (REPO / ".env.example").read_text()
    assert "AIRFLOW_JWT_SECRET=" in example and "AIRFLOW_FERNET_KEY=" in example


def test_airflow_runs_the_celery_executor_on_the_built_image(resolved):
    services = resolved["services"]
    for name in ("airflow-init", *AIRFLOW_SERVICES):
        service = services[name]
        assert service["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert service["environment"]["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name
        assert service["build"]["dockerfile"] == "docker/airflow.Dockerfile", name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy", name
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy", name
        if name != "airflow-init":
            assert service["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name
    assert services["airflow-worker"]["command"] == ["celery", "worker"]
    assert services["airflow-triggerer"]["command"] == services["airflow-triggerer-2"]["command"] == ["triggerer"]
    assert "container_name" not in services["airflow-worker"], "a worker with a fixed name cannot be scaled"
    dockerfile = (REPO / "docker/airflow.Dockerfile").read_text()
    assert re.search(r"^FROM apache/airflow:3\.3\.2-python3\.11$", dockerfile, re.M)
    assert re.search(r"pip install .*-r \S*requirements\.txt -c \S*constraints\.txt", dockerfile)


def test_every_long_running_service_has_a_healthcheck_and_ports_stay_on_loopback(resolved):
    for name, service in resolved["services"].items():
        if name not in ("airflow-init", "gcs"):
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", (name, port)


def test_the_stand_ins_image_holds_what_the_stand_ins_import(resolved):
    for name in STAND_INS:
        assert resolved["services"][name]["build"]["dockerfile"] == "docker/stand-ins.Dockerfile", name
        assert "pip" not in " ".join(resolved["services"][name]["command"]), name
    dockerfile = (REPO / "docker/stand-ins.Dockerfile").read_text()
    assert re.search(r"pip install .*-r requirements\.txt -c constraints\.txt", dockerfile)
    listed = {
        line.strip().lower()
        for line in (REPO / "emulator/requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    distributions = {"PIL": "pillow"}
    imported = set()
    for path in (REPO / "emulator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = {m for m in imported if m not in __import__("sys").stdlib_module_names and m != "emulator"}
    assert {distributions.get(m, m).lower() for m in third_party} <= listed, third_party
