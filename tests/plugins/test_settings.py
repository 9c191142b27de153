"""The deployment's settings: one place, documented in the README, failing closed, and threaded through every
Google call (connection and impersonation chain)."""

from __future__ import annotations

import ast
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dicom_pipelines import settings
from dicom_pipelines.dag_params import (
    deidentify_params,
    export_params,
    import_params,
    night_day,
    run_param_problems,
    store_params,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [*sorted((REPO / "plugins" / "dicom_pipelines").glob("*.py")), *sorted((REPO / "dags").glob("*.py"))]
NO_DEFAULT = [s for s in settings.SETTINGS if s.default is None and s.param and s.required]


def test_the_readme_documents_every_setting_with_its_default():
    readme = (REPO / "README.md").read_text()
    rows = {m[0]: m[1] for m in re.findall(r"^\| `(\w+)` \| ([^|]*) \|", readme, re.M)}
    for s in settings.SETTINGS:
        assert s.variable in rows, f"README's settings table lacks {s.variable}"
        assert rows[s.variable].strip().strip("`") == (s.default or "(none)"), s.variable


def test_no_shipped_file_names_the_default_connection_or_a_bucket_outside_the_settings():
    literal = re.compile(r"google_cloud_default|['\"]dicom-(incoming|exports|research)['\"]")
    offenders = [p.name for p in SHIPPED if p.name != "settings.py" and literal.search(p.read_text())]
    assert offenders == []


def _passes_connection(call: ast.Call) -> bool:
    names = {"GCP_CONN_ID", "gcp_conn_id"}
    positional = any(
        (isinstance(a, ast.Name) and a.id in names) or (isinstance(a, ast.Attribute) and a.attr == "gcp_conn_id")
        for a in call.args
    )
    return positional or any(k.arg == "gcp_conn_id" for k in call.keywords)


def test_every_call_that_names_the_connection_names_the_impersonation_chain_too():
    """A hook, operator or helper given the connection but not the chain would act as the connection's own
    identity (the environment's account on Composer). ``**GOOGLE`` carries both."""
    missing = []
    for path in SHIPPED:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _passes_connection(node):
                has_chain = any(k.arg in ("impersonation_chain", None) for k in node.keywords) or len(node.args) >= 2
                if not has_chain:
                    missing.append(f"{path.name}:{node.lineno}")
    assert missing == []


PARSE = """
import json, sys
from tests.helpers import dag_bag
bag = dag_bag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
seen = []
for dag in bag.dags.values():
    for task in dag.tasks:
        kwargs = getattr(task, "op_kwargs", {}) or {}
        conn = getattr(task, "gcp_conn_id", kwargs.get("gcp_conn_id"))
        chain = getattr(task, "impersonation_chain", kwargs.get("impersonation_chain", "absent"))
        seen.append([dag.dag_id, task.task_id, conn, chain])
nightly = bag.dags["dicom_nightly_import"]
print(json.dumps({"tasks": seen, "catchup": nightly.catchup, "timezone": str(nightly.timetable._timezone)}))
"""


def parse_dags(**variables: str) -> dict:
    env = {**os.environ, **variables, "PYTHONPATH": os.pathsep.join(sys.path)}
    env = {k: v for k, v in env.items() if v is not None}
    out = subprocess.run(
        [sys.executable, "-c", PARSE, str(REPO / "dags")], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_google_task_of_the_shipped_dags_takes_the_configured_connection_and_chain():
    chain = "dicom-pipelines@hospital-prod.iam.gserviceaccount.com"
    parsed = parse_dags(DICOM_GCP_CONN_ID="hospital_gcp", DICOM_IMPERSONATION_CHAIN=f" {chain} ,")
    google = [t for t in parsed["tasks"] if t[2] is not None]
    assert len(google) >= 12, google
    wrong = [t for t in google if t[2] != "hospital_gcp" or t[3] != [chain]]
    assert wrong == []


def test_a_first_deploy_catches_up_nothing_and_days_follow_the_configured_time_zone():
    parsed = parse_dags(DICOM_IMPORT_START_DATE="", DICOM_IMPORT_TIMEZONE="Europe/Berlin")
    assert parsed["catchup"] is False and parsed["timezone"] == "Europe/Berlin"
    assert parse_dags(DICOM_IMPORT_START_DATE="2026-11-01")["catchup"] is True


def test_a_night_folder_is_the_local_day_of_the_nights_start(monkeypatch):
    monkeypatch.setattr("dicom_pipelines.dag_params.IMPORT_TIMEZONE", "Europe/Berlin")
    assert night_day(dt.datetime(2026, 11, 24, 23, 0, tzinfo=dt.UTC)) == "2026-11-25"
    monkeypatch.setattr("dicom_pipelines.dag_params.IMPORT_TIMEZONE", "UTC")
    assert night_day(dt.datetime(2026, 11, 24, 23, 0, tzinfo=dt.UTC)) == "2026-11-24"


def test_without_the_settings_a_run_is_refused_naming_each_setting(monkeypatch):
    """Fail closed: no guessed bucket, project, region, dataset or store."""
    for s in NO_DEFAULT:
        monkeypatch.delenv(s.variable, raising=False)
    params = {**store_params(), **import_params(), **export_params(), **deidentify_params()}
    values = {name: param.value if hasattr(param, "value") else param for name, param in params.items()}
    problems = run_param_problems(params, values, {})
    for s in NO_DEFAULT:
        assert any(p.startswith(f"{s.param}: no value") and s.variable in p for p in problems), (s, problems)
    given = {s.param: "x" for s in NO_DEFAULT}
    assert not any("no value" in p for p in run_param_problems(params, {**values, **given}, given))


def test_nothing_is_created_unless_the_deployment_asks(monkeypatch):
    monkeypatch.delenv("DICOM_CREATE_IF_MISSING", raising=False)
    assert import_params()["create_if_missing"].value is False
    monkeypatch.setenv("DICOM_CREATE_IF_MISSING", "true")
    assert import_params()["create_if_missing"].value is True


def test_values_in_words(monkeypatch):
    monkeypatch.setenv("DICOM_IMPERSONATION_CHAIN", "a@p.iam.gserviceaccount.com, b@p.iam.gserviceaccount.com")
    assert settings.impersonation_chain() == ["a@p.iam.gserviceaccount.com", "b@p.iam.gserviceaccount.com"]
    monkeypatch.setenv("DICOM_IMPERSONATION_CHAIN", "")
    assert settings.impersonation_chain() is None
    with pytest.raises(KeyError, match="DICOM_STORE_ID is not one of the settings: DICOM_GCP_CONN_ID"):
        settings.value("DICOM_STORE_ID")
    monkeypatch.setenv("DICOM_IMPORT_START_DATE", "1.11.2026")
    with pytest.raises(ValueError, match=r"DICOM_IMPORT_START_DATE='1.11.2026': must be a date, YYYY-MM-DD"):
        settings.import_start_date()
    monkeypatch.setenv("DICOM_IMPORT_START_DATE", "2026-11-01")
    monkeypatch.setenv("DICOM_IMPORT_TIMEZONE", "America/New_York")
    first = settings.import_first_night()
    assert first is not None and first.utcoffset() == dt.timedelta(hours=-4)


SITES_PARSE = """
import json, sys
from tests.helpers import dag_bag
bag = dag_bag(sys.argv[1])
dags = {}
for dag_id, dag in bag.dags.items():
    if dag_id.startswith("dicom_nightly_import"):
        params = dag.params
        dags[dag_id] = {"store": params["dicom_store_id"], "bucket": params["source_bucket"],
                        "catchup": dag.catchup, "timezone": str(dag.timetable._timezone),
                        "cron": dag.timetable._expression}
print(json.dumps({"dags": dags, "errors": [str(e)[-400:] for e in bag.import_errors.values()]}))
"""


def parse_sites(value: str) -> dict:
    env = {**os.environ, "DICOM_IMPORT_SITES": value, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("DICOM_IMPORT_START_DATE", None)
    out = subprocess.run(
        [sys.executable, "-c", SITES_PARSE, str(REPO / "dags" / "dicom_nightly_import.py")],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_one_nightly_dag_per_site_from_one_dag_file():
    sites = [
        {
            "site": "north",
            "dicom_store_id": "pacs-north",
            "source_bucket": "north-incoming",
            "cron": "0 2 * * *",
            "timezone": "Europe/Berlin",
            "start_date": "2026-11-01",
        },
        {"site": "south", "dicom_store_id": "pacs-south", "source_bucket": "south-incoming"},
    ]
    parsed = parse_sites(json.dumps(sites))
    assert parsed["errors"] == []
    assert parsed["dags"] == {
        "dicom_nightly_import__north": {
            "store": "pacs-north",
            "bucket": "north-incoming",
            "catchup": True,
            "timezone": "Europe/Berlin",
            "cron": "0 2 * * *",
        },
        "dicom_nightly_import__south": {
            "store": "pacs-south",
            "bucket": "south-incoming",
            "catchup": False,
            "timezone": "UTC",
            "cron": "0 0 * * *",
        },
    }


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('[{"site": "north", "dicom_store": "x"}]', "site 'north': dicom_store is not a param of the nightly import"),
        ('[{"site": "north"}, {"site": "north"}]', "DICOM_IMPORT_SITES[1].site='north': given twice"),
        ('[{"site": "no rth"}]', "DICOM_IMPORT_SITES[0].site='no rth': must be 1 to 60 letters, digits"),
        ('{"site": "north"}', "DICOM_IMPORT_SITES must be a JSON list of objects"),
        ("[{site: north}]", "DICOM_IMPORT_SITES is not JSON"),
        ('[{"site": "north", "start_date": "1.11.2026"}]', "start_date='1.11.2026': must be a date, YYYY-MM-DD"),
    ],
)
def test_a_wrong_site_entry_is_the_dag_files_import_error_in_words(value, words):
    parsed = parse_sites(value)
    assert parsed["dags"] == {} and len(parsed["errors"]) == 1 and words in parsed["errors"][0], parsed["errors"]
