"""The package as a platform team installs it: the wheel built from this checkout, in a fresh virtual environment
with only Airflow (3.1.8, the oldest version ``pyproject.toml`` accepts) and its Google provider, outside the
repository (no ``plugins/`` or ``include/`` on the path). The end-to-end tests run 3.3.2 on the same wheel.

The environment is made once per session (about two minutes: pip downloads Airflow).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OLDEST_AIRFLOW = "3.1.8"
CONSTRAINTS = Path(__file__).with_name(f"constraints-airflow-{OLDEST_AIRFLOW}.txt")
DAG_IDS = [
    "dicom_arrival_import",
    "dicom_deidentified_export",
    "dicom_export",
    "dicom_filtered_export",
    "dicom_nightly_import",
]

pytestmark = pytest.mark.package


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(REPO)], check=True)
    return next(dist.glob("airflow_provider_dicom_pipelines-*.whl"))


@pytest.fixture(scope="session")
def oldest_airflow(tmp_path_factory, wheel) -> dict:
    """A fresh environment: Airflow, the wheel (its declared dependencies resolved by pip) and pytest."""
    root = tmp_path_factory.mktemp("oldest-airflow")
    venv.create(root / "venv", with_pip=True)
    python = root / "venv" / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(CONSTRAINTS),
         f"apache-airflow=={OLDEST_AIRFLOW}", str(wheel), "pytest", "pytest-timeout"],
        check=True,
    )  # fmt: skip
    home = root / "airflow-home"
    (home / "plugins").mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        }
    )
    return {"python": python, "bin": python.parent, "env": env, "cwd": root}


def run_in(environment: dict, *argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(argv), env=environment["env"], cwd=environment["cwd"], capture_output=True, text=True, **kw
    )


def test_the_wheel_carries_the_sql_the_entry_points_and_ranges_not_pins(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = whl.read(info).decode()
        entry_points = whl.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert "dicom_pipelines/include/sql/filter_paths.sql" in names
    assert "dicom_pipelines/example_dags/example_dicom_import_export.py" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not any(n.startswith(("tests/", "emulator/", "scripts/", "dags/")) for n in names), names
    assert "[apache_airflow_provider]" in entry_points and "[airflow.plugins]" in entry_points
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any(r.startswith("apache-airflow<4,>=3.1.0") or r.startswith("apache-airflow>=3.1.0") for r in requires)
    assert not any("==" in r.split(";")[0] for r in requires), requires
    extras = {r.split("extra ==")[1].strip(" \"'"): r.split(";")[0] for r in requires if "extra ==" in r}
    assert extras == {
        "openlineage": "apache-airflow-providers-openlineage>=2.20.3",
        "statsd": "statsd>=4.0.1",
        "alerts": "apache-airflow-providers-smtp>=3.2.0",
        "arrivals": "apache-airflow-providers-common-messaging>=2.1.2",
    }, extras
    assert not any(r.split()[0].startswith(("pytest", "ruff", "mypy", "duckdb", "playwright")) for r in requires)


def test_airflow_lists_the_provider(oldest_airflow, wheel):
    out = run_in(oldest_airflow, str(oldest_airflow["bin"] / "airflow"), "providers", "list", "-o", "json")
    assert out.returncode == 0, out.stderr[-3000:]
    providers = {p["package_name"]: p for p in json.loads(out.stdout[out.stdout.index("[") :])}
    assert providers["airflow-provider-dicom-pipelines"]["version"] == wheel.name.split("-")[1]


PARSE = """
import json, sys
from airflow.models.dagbag import DagBag
import dicom_pipelines
from dicom_pipelines.filter_chain import TEMPLATE_DIR

bag = DagBag(dag_folder=sys.argv[1], include_examples=False)
task = bag.dags["dicom_filtered_export"].get_task("build_filter_table")
params = {"modalities": ["XA"], "granularity": "series", "project_id": "p", "bigquery_dataset": "d",
          "dataset_id": "ds", "dicom_store_id": "s", "metadata_table": None}
examples = DagBag(dag_folder=TEMPLATE_DIR.replace("include", "example_dags"), include_examples=False)
sql = task.render_template(task.configuration["query"]["query"], {"params": params, **task.dag.user_defined_macros},
                           jinja_env=task.dag.get_template_env())
print(json.dumps({"dag_ids": sorted(bag.dag_ids), "errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()},
                  "package": dicom_pipelines.__file__, "templates": TEMPLATE_DIR, "sql": sql,
                  "examples": sorted(examples.dag_ids), "example_errors": len(examples.import_errors)}))
"""


def test_the_four_dags_parse_and_render_their_sql_from_the_installed_package(oldest_airflow):
    """As on Cloud Composer: the DAG files from ``dags/``, the operators and the SQL from the installed package."""
    out = run_in(oldest_airflow, str(oldest_airflow["python"]), "-c", PARSE, str(REPO / "dags"))
    assert out.returncode == 0, out.stderr[-3000:]
    parsed = json.loads(out.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {} and parsed["dag_ids"] == DAG_IDS, parsed["errors"]
    site = Path(oldest_airflow["python"]).parents[1]
    assert Path(parsed["package"]).is_relative_to(site) and Path(parsed["templates"]).is_relative_to(site)
    assert "SELECT" in parsed["sql"] and "Modality" in parsed["sql"] and "@modalities" in parsed["sql"]
    assert parsed["examples"] == ["example_dicom_export_consumer", "example_dicom_import_export"]
    assert parsed["example_errors"] == 0
    assert "XA" not in parsed["sql"], "criteria are query parameters, never rendered into the SQL"


def test_the_fast_tests_pass_on_the_oldest_airflow(oldest_airflow, tmp_path):
    """The tests that need no local stack, importing the installed wheel: the package's logic and the DAGs."""
    env = {**oldest_airflow["env"], "DICOM_TESTS_ON_INSTALLED_PACKAGE": "1"}
    out = subprocess.run(
        [str(oldest_airflow["python"]), "-m", "pytest", "-q", "-m", "not stack", "-o", "pythonpath=.",
         f"--basetemp={tmp_path / 'inner'}", "tests/plugins", "tests/dags"],
        env=env, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    summary = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-2000:]
    print(f"\n[Airflow {OLDEST_AIRFLOW}, installed wheel] {summary}")
    assert out.returncode == 0, out.stdout[-5000:]
    assert " passed" in summary and "failed" not in summary
