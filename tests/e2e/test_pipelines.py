"""End to end: a real Airflow (api-server, scheduler, dag-processor, triggerer) with the local stack on
PostgreSQL, driven through the REST API only.

Not on SQLite: under load Airflow 3.3 refuses a backfill there ("Backfill creation is not supported on SQLite
under concurrent access. Please use PostgreSQL or MySQL."), and the scheduler's catchup runs alongside.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

import dicom_pipelines
from scripts.demo_data import DAYS, seed
from scripts.stack import DEMO_IDS
from tests.e2e.conftest import running_deployment
from tests.listeners import LineageListener, SmtpListener, StatsdListener, wait_until

IMPORT, FILTERED, EXPORT = "dicom_nightly_import", "dicom_filtered_export", "dicom_export"
DEID = "dicom_deidentified_export"


ALERT_TO = "imaging-oncall@hospital.example"
DEADLINE = "00:01"
"""The nightly deadline of this deployment: a minute after the default midnight cron, so the scheduled night (of
yesterday, started when the DAG is unpaused) is late from its start, as a night still running at 06:00 would be."""


@pytest.fixture(scope="module")
def listeners():
    statsd, lineage, smtp = StatsdListener(), LineageListener(), SmtpListener()
    yield statsd, lineage, smtp
    for listener in (statsd, lineage, smtp):
        listener.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, listeners):
    """The local stack and Airflow, sending metrics, lineage and alerts to the listeners, as a production
    deployment is told to (README, "Watching it run")."""
    statsd, lineage, smtp = listeners
    watched = {
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": lineage.transport(),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "hospital-airflow",
        "AIRFLOW_CONN_SMTP_DEFAULT": smtp.connection("airflow@hospital.example"),
        "DICOM_ALERT_EMAILS": ALERT_TO,
        "DICOM_IMPORT_DEADLINE": DEADLINE,
    }
    with running_deployment(tmp_path_factory.mktemp("e2e"), "postgres", extra_env=watched) as running:
        yield running


def test_airflow_runs_the_installed_package_not_the_repository(deployment):
    """The deployment's Airflow has the built wheel on its path and an empty plugins folder: the provider and the
    plugin it lists come from the package's entry points, and the DAG files import the installed modules."""
    stack, client, _ = deployment
    env = stack.airflow_environment()
    assert "plugins" not in env["PYTHONPATH"] and not any(Path(env["AIRFLOW__CORE__PLUGINS_FOLDER"]).iterdir())
    providers = {p["package_name"]: p for p in client.ok("GET", "/providers")["providers"]}
    assert providers["airflow-provider-dicom-pipelines"]["version"] == dicom_pipelines.__version__
    plugins = {p["name"]: p for p in client.ok("GET", "/plugins")["plugins"]}
    assert plugins["dicom_pipelines"]["source"].startswith("airflow-provider-dicom-pipelines=="), plugins
    assert plugins["dicom_pipelines"]["timetables"] == ["dicom_pipelines.timetables.NightlyImportTimetable"]
    where = subprocess.run(
        [str(Path(sys.executable).parent / "python"), "-c", "import dicom_pipelines; print(dicom_pipelines.__file__)"],
        env=env,
        cwd=stack.dir,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(stack.package_dir), where.stdout


def test_nightly_backfill_filtered_export_full_export_and_api_errors(deployment):
    stack, client, gcs = deployment
    addresses = stack.listening_addresses()
    assert len(addresses) >= 4 and all(a.startswith("127.0.0.1:") for a in addresses), addresses
    seeded = seed(gcs, DEMO_IDS["SOURCE_BUCKET"])
    gcs.create_bucket(DEMO_IDS["EXPORT_BUCKET"])
    gcs.create_bucket(DEMO_IDS["RESEARCH_BUCKET"])
    client.wait_for_dags([IMPORT, FILTERED, EXPORT, DEID])
    for dag_id in (IMPORT, FILTERED, EXPORT, DEID):
        client.unpause(dag_id)

    # 1. backfill the three days of nightly import, up to ten runs at once: the nights still import in date
    #    order (they share a store, and day 3 sends a changed copy of a day-1 instance), so the per-night counts
    #    are those of a serial backfill
    #    The store streams its metadata to BigQuery from then on (streamConfigs, added to the existing store); the
    #    stream's dataset is made in the Healthcare dataset's region, and the table by the Healthcare API.
    bq = f"{stack.stack_env()['BIGQUERY_EMULATOR_HOST']}/bigquery/v2/projects/{DEMO_IDS['GCP_PROJECT']}/datasets"
    stream_table = f"bq://{DEMO_IDS['GCP_PROJECT']}.dicom_metadata.stream_demo_store"
    night = {"max_failure_ratio": 0.5, "metadata_stream_table": stream_table}
    client.backfill(IMPORT, f"{DAYS[0]}T00:00:00Z", f"{DAYS[-1]}T00:00:00Z", night, max_active_runs=10)
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = client.runs(IMPORT, run_type="backfill")
        if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(2)
    assert len(runs) == 3, runs
    seen = {}
    for run in runs:
        assert run["state"] == "success", (run, client.task_states(IMPORT, run["dag_run_id"]))
        day = run["data_interval_start"][:10]
        result = client.xcom(IMPORT, run["dag_run_id"], "import_dicom")
        seen[day] = (result["success"], result["failure"])
        verify = client.xcom(IMPORT, run["dag_run_id"], "verify")
        assert verify["imported"] == result["success"]
        # every failed file is named, read through Cloud Logging, and listed in the night's failure report
        assert len(result["failed_sources"]) == result["failure"]
        assert all(f["source"].startswith(f"gs://{DEMO_IDS['SOURCE_BUCKET']}/") for f in result["failed_sources"])
        if result["failure"]:
            report = result["failure_report_uri"]
            assert report == (f"gs://{DEMO_IDS['SOURCE_BUCKET']}/import-failures/{IMPORT}/{run['dag_run_id']}.ndjson")
            bucket, _, name = report.removeprefix("gs://").partition("/")
            lines = [json.loads(x) for x in gcs.bucket(bucket).blob(name).download_as_text().splitlines()]
            assert sorted(x["source"] for x in lines) == sorted(f["source"] for f in result["failed_sources"])
            logs = task_log_text(stack, IMPORT, run["dag_run_id"], "import_dicom")
            assert all(f"Failed: {x['source']}: code {x['code']}" in logs for x in lines)
        else:
            assert result["failure_report_uri"] is None
    assert seen == seeded.expected
    # the asset events name the store each night really imported into (rendered from params, not the environment)
    events = client.ok("GET", "/assets/events", params={"source_dag_id": IMPORT, "limit": 100})["asset_events"]
    store_uri = "healthcare://projects/{GCP_PROJECT}/locations/{HEALTHCARE_LOCATION}/datasets/{HEALTHCARE_DATASET}"
    assert {e["uri"] for e in events} == {store_uri.format(**DEMO_IDS) + f"/dicomStores/{DEMO_IDS['DICOM_STORE']}"}
    # every consumer of the asset reads its events: counts and the report's URI, never failed paths or errors
    assert all("failed_sources" not in e["extra"] and "failed" in e["extra"] for e in events)
    assert sorted(e["extra"]["imported"] for e in events if e["source_run_id"].startswith("backfill")) == sorted(
        success for success, _ in seeded.expected.values()
    )

    # 1b. runs started by hand with no logical date: the `day` param, else yesterday (UTC); never a template error
    by_day = client.trigger(IMPORT, {"day": DAYS[0], "max_failure_ratio": 0.5})
    yesterday = client.trigger(IMPORT, {})
    assert client.wait_run(IMPORT, by_day["dag_run_id"])["state"] == "success"
    result = client.xcom(IMPORT, by_day["dag_run_id"], "import_dicom")
    assert (result["success"], result["failure"]) == seeded.expected[DAYS[0]]  # identical re-sends count as success
    assert client.wait_run(IMPORT, yesterday["dag_run_id"])["state"] == "success"
    assert client.task_states(IMPORT, yesterday["dag_run_id"])["import_dicom"] == "skipped"  # no folder for that day

    # 1c. a run of a night before the schedule's first night, triggered with a logical date: it gets its tasks
    #     (Airflow creates none before a DAG's start_date) and imports the night of its data interval
    older = client.trigger(IMPORT, {"max_failure_ratio": 0.5}, logical_date=f"{DAYS[1]}T06:00:00Z")
    assert client.wait_run(IMPORT, older["dag_run_id"])["state"] == "success"
    result = client.xcom(IMPORT, older["dag_run_id"], "import_dicom")
    assert (result["success"], result["failure"]) == seeded.expected[DAYS[0]]

    # 2. filtered export of CT between the first two days, triggered with conf
    prefix = "exports/e2e-ct"
    run = client.trigger(
        FILTERED,
        {
            "modalities": ["CT"],
            "study_date_from": DAYS[0],
            "study_date_to": DAYS[1],
            "granularity": "series",
            "destination_prefix": f"gs://{DEMO_IDS['EXPORT_BUCKET']}/{prefix}",
            "metadata_table": stream_table,  # the streamed table: no per-run metadata export
        },
    )
    done = client.wait_run(FILTERED, run["dag_run_id"])
    states = client.task_states(FILTERED, run["dag_run_id"])
    assert states["export_metadata"] == "skipped" and states["build_filter_table"] == "success", states
    assert done["state"] == "success", client.task_states(FILTERED, run["dag_run_id"])
    got = sorted(b.name for b in gcs.list_blobs(DEMO_IDS["EXPORT_BUCKET"], prefix=prefix + "/"))
    expected = sorted(f"{prefix}/{i.path}.dcm" for i in seeded.matching("CT", DAYS[0], DAYS[1]))
    assert got == expected and len(expected) == 4
    links = client.ok("GET", f"/dags/{FILTERED}/dagRuns/{run['dag_run_id']}/taskInstances/export_dicom/links")
    assert set(links["extra_links"]) == {"DICOM store", "Healthcare operation", "Operation log"}
    api, logging_api = (stack.stack_env()[k] for k in ("HEALTHCARE_API_ENDPOINT", "LOGGING_API_ENDPOINT"))
    for name, url in links["extra_links"].items():  # the local APIs' own views: the Console knows no local store
        assert url.startswith((logging_api if name == "Operation log" else api) + "/"), (name, url)
        assert requests.get(url, timeout=30).status_code == 200, (name, url)
    for inst in seeded.matching("CT", DAYS[0], DAYS[1]):
        assert gcs.bucket(DEMO_IDS["EXPORT_BUCKET"]).blob(f"{prefix}/{inst.path}.dcm").download_as_bytes() == inst.data

    # 3. full export as PNG
    run = client.trigger(
        EXPORT, {"mime_type": "image/png", "destination_prefix": f"gs://{DEMO_IDS['EXPORT_BUCKET']}/exports/e2e-png"}
    )
    assert client.wait_run(EXPORT, run["dag_run_id"])["state"] == "success"
    pngs = [b.name for b in gcs.list_blobs(DEMO_IDS["EXPORT_BUCKET"], prefix="exports/e2e-png/")]
    assert len(pngs) == len(seeded.instances) == 9 and all(n.endswith(".png") for n in pngs)
    # the export's asset event: its gs:// prefix (alias dicom_exports), with counts and no path under it
    events = asset_events(client, EXPORT, run["dag_run_id"])
    assert [e["uri"] for e in events] == [f"gs://{DEMO_IDS['EXPORT_BUCKET']}/exports/e2e-png"], events
    assert events[0]["extra"]["instances"] == 9 and events[0]["extra"]["mime_type"] == "image/png", events
    assert not any(".png" in json.dumps(e["extra"]) for e in events)
    # the same prefix again, for the one US instance: the check counts what this export wrote, not the 9 there
    again = client.trigger(
        FILTERED,
        {
            "modalities": ["US"],
            "mime_type": "image/png",
            "destination_prefix": f"gs://{DEMO_IDS['EXPORT_BUCKET']}/exports/e2e-png",
        },
    )
    assert client.wait_run(FILTERED, again["dag_run_id"])["state"] == "success"
    assert client.xcom(FILTERED, again["dag_run_id"], "verify_export")["instances"] == 1

    # 3b. a hand-written filter file (as uploaded with gsutil cp) skips the BigQuery steps
    us = [i for i in seeded.instances if i.modality == "US"][0]
    gcs.bucket(DEMO_IDS["EXPORT_BUCKET"]).blob("filters/by-hand.txt").upload_from_string(
        f"/studies/{us.study}/series/{us.series}\r\n\r\n"
    )
    run = client.trigger(
        FILTERED,
        {
            "filter_uri": f"gs://{DEMO_IDS['EXPORT_BUCKET']}/filters/by-hand.txt",
            "destination_prefix": f"gs://{DEMO_IDS['EXPORT_BUCKET']}/exports/e2e-hand",
        },
    )
    assert client.wait_run(FILTERED, run["dag_run_id"])["state"] == "success"
    states = client.task_states(FILTERED, run["dag_run_id"])
    assert states["export_metadata"] == "skipped" and states["export_dicom"] == "success"
    assert [b.name for b in gcs.list_blobs(DEMO_IDS["EXPORT_BUCKET"], prefix="exports/e2e-hand/")] == [
        f"exports/e2e-hand/{us.path}.dcm"
    ]

    # 3b'. a run with no logical date of the whole-store export works on the demo data with its defaults; the
    #      filtered export's defaults name no criterion, so its first task refuses them and names dicom_export
    run = client.trigger(EXPORT, {})
    assert client.wait_run(EXPORT, run["dag_run_id"])["state"] == "success", client.task_states(
        EXPORT, run["dag_run_id"]
    )
    refused_by_check_params(stack, client, {}, "No criterion given", "trigger dicom_export instead")

    # 3b''. by PatientID: no PatientID or PatientName reaches a task log, a rendered field or an XCom, and
    #       no work table outlives a successful run
    patients = {f"P-00{n}" for n in range(1, 7)}  # scripts/demo_data.py: P-003 is day 2's CT study, 2 instances
    run = client.trigger(FILTERED, {"patient_ids": ["P-003"], "granularity": "instance"})
    assert client.wait_run(FILTERED, run["dag_run_id"])["state"] == "success", client.task_states(
        FILTERED, run["dag_run_id"]
    )
    assert client.xcom(FILTERED, run["dag_run_id"], "export_dicom")["success"] == 2
    assert_no_phi(stack, client, FILTERED, run["dag_run_id"], patients)
    tables = requests.get(f"{bq}/dicom_metadata/tables", timeout=30).json()
    assert [t["tableReference"]["tableId"] for t in tables.get("tables", [])] == ["stream_demo_store"], tables

    # 3d. a de-identified research export of the CT studies of the first two days: the cohort arrives in the
    #     research bucket with new UIDs and with no PatientName, PatientID or BirthDate in any file
    cohort = seeded.matching("CT", DAYS[0], DAYS[1])
    run = client.trigger(DEID, {"modalities": ["CT"], "study_date_from": DAYS[0], "study_date_to": DAYS[1]})
    assert client.wait_run(DEID, run["dag_run_id"])["state"] == "success", client.task_states(DEID, run["dag_run_id"])
    summary = client.xcom(DEID, run["dag_run_id"], "check_cohort")
    assert summary["instances"] == len(cohort) == 4
    assert "/dicomStores/deid-" in summary["destination_store"]
    events = asset_events(client, DEID, run["dag_run_id"])
    assert sorted(e["uri"] for e in events) == sorted(
        [f"healthcare://{summary['destination_store']}", summary["uri_prefix"].rstrip("/")]
    ), events
    assert all(e["extra"]["instances"] == len(cohort) for e in events), events
    prefix = summary["uri_prefix"].removeprefix(f"gs://{DEMO_IDS['RESEARCH_BUCKET']}/")
    blobs = list(gcs.list_blobs(DEMO_IDS["RESEARCH_BUCKET"], prefix=prefix + "/"))
    assert len(blobs) == len(cohort)
    source_uids = {u for i in cohort for u in (i.study, i.series, i.sop)}
    for blob in blobs:
        data = blob.download_as_bytes()
        ds = pydicom.dcmread(io.BytesIO(data))
        for keyword in ("PatientName", "PatientID", "PatientBirthDate"):
            assert not ds.get(keyword), (blob.name, keyword)
        assert not [p for p in (*patients, "Synthetic^Patient") if p.encode() in data], blob.name
        assert ds.Modality == "CT" and source_uids.isdisjoint({ds.StudyInstanceUID, ds.SeriesInstanceUID})
    assert_no_phi(stack, client, DEID, run["dag_run_id"], patients)
    # the de-identified store itself, read back as a viewer would, with a third-party DICOMweb client
    web = DICOMwebClient(f"{stack.stack_env()['HEALTHCARE_API_ENDPOINT']}/v1/{summary['destination_store']}/dicomWeb")
    found = web.search_for_instances(fields=["PatientID", "PatientName"])
    assert len(found) == len(cohort) and all(not i.get("00100020", {}).get("Value") for i in found)
    tables = requests.get(f"{bq}/dicom_metadata/tables", timeout=30).json()
    assert [t["tableReference"]["tableId"] for t in tables.get("tables", [])] == ["stream_demo_store"], tables

    # 3c. criteria that match nothing: the export is skipped with a clear message, the run succeeds. Its new work
    #     dataset (PatientName and PatientID go there) is made in the Healthcare dataset's region
    kept = {"modalities": ["PT"], "bigquery_dataset": "work_in_region", "metadata_max_age_hours": 24}
    run = client.trigger(FILTERED, kept)
    assert client.wait_run(FILTERED, run["dag_run_id"])["state"] == "success"
    states = client.task_states(FILTERED, run["dag_run_id"])
    assert states["check_filter"] == "skipped" and states["export_dicom"] == "skipped"
    made = requests.get(f"{bq}/work_in_region", timeout=30).json()
    assert made["location"] == DEMO_IDS["HEALTHCARE_LOCATION"], made
    #     run again within metadata_max_age_hours, the store's metadata table just exported is reused
    run = client.trigger(FILTERED, kept)
    assert client.wait_run(FILTERED, run["dag_run_id"])["state"] == "success"
    assert client.task_states(FILTERED, run["dag_run_id"])["reuse_store_metadata"] == "success"
    #     a work dataset in another location is refused before any query, naming both locations
    requests.post(bq, json={"datasetReference": {"datasetId": "work_in_us"}}, timeout=30).raise_for_status()
    run = client.trigger(FILTERED, {"modalities": ["CT"], "bigquery_dataset": "work_in_us"})
    assert client.wait_run(FILTERED, run["dag_run_id"])["state"] == "failed"
    assert client.task_states(FILTERED, run["dag_run_id"])["ensure_work_dataset"] == "failed"
    words = task_log_text(stack, FILTERED, run["dag_run_id"], "ensure_work_dataset")
    assert f"is in location US, but the work tables must stay in {DEMO_IDS['HEALTHCARE_LOCATION']}" in words

    # the waits went through the real triggerer, which loaded the trigger from the plugins folder; the BigQuery
    # steps deferred to the provider's own trigger, polling the local BigQuery; the nights' order to the standard
    # provider's DagStateTrigger
    trigger_logs = list((stack.dir / "airflow" / "logs").rglob("*.log.trigger.*.log"))
    fired = {p: p.read_text(errors="replace") for p in trigger_logs}
    fired = {p: text for p, text in fired.items() if "Trigger fired event" in text}
    kinds = {"bigquery": ("task_id=build_filter_table", "task_id=extract"), "waits": ("task_id=wait_for_previous_run",)}
    by_kind: dict[str, list[str]] = {"healthcare": [], "bigquery": [], "waits": []}
    for path, text in fired.items():
        kind = next((k for k, marks in kinds.items() if any(m in str(path) for m in marks)), "healthcare")
        by_kind[kind].append(text)
    assert by_kind["healthcare"] and all("'status': 'done'" in t for t in by_kind["healthcare"])
    assert by_kind["bigquery"] and all("'status': 'success'" in t for t in by_kind["bigquery"])
    # the backfill's later nights waited for the earlier ones in the triggerer, holding no worker slot
    assert by_kind["waits"] and all("DagStateTrigger" in t for t in by_kind["waits"])
    assert "failed to load" not in (stack.dir / "logs" / "triggerer.log").read_text(errors="replace")

    # 4. a bad conf is refused with 400 and a reason; a typo in a key fails the first task, which names it, and
    #    nothing else runs; no token is 401
    bad = client.request(
        "POST", f"/dags/{FILTERED}/dagRuns", json={"logical_date": None, "conf": {"granularity": "frame"}}
    )
    assert bad.status_code == 400 and "granularity" in bad.text
    refused_by_check_params(
        stack, client, {"modality": ["US"]}, "'modality' is not a parameter of this DAG", "Did you mean 'modalities'?"
    )
    anon = requests.post(
        f"{client.base}/api/v2/dags/{FILTERED}/dagRuns", json={"logical_date": None, "conf": {}}, timeout=30
    )
    assert anon.status_code == 401

    # 5. no task log of a successful run holds an ERROR line
    errors = {}
    for dag_id in (IMPORT, FILTERED, EXPORT, DEID):
        for run in client.runs(dag_id, state="success"):
            for path in run_logs(stack, dag_id, run["dag_run_id"]):
                lines = [line for line in path.read_text(errors="replace").splitlines() if is_error(line)]
                if lines:
                    errors[str(path)] = lines[:3]
    assert not errors, errors


def test_watching_it_run_metrics_lineage_and_alerts(deployment, listeners):
    """What the platform team watches, from the runs above plus one failed night: StatsD metrics, OpenLineage
    events and e-mail alerts reach their listeners, agree with the runs' own results, and carry no patient data."""
    stack, client, _ = deployment
    statsd, lineage, smtp = listeners
    store = f"projects/{DEMO_IDS['GCP_PROJECT']}/locations/{DEMO_IDS['HEALTHCARE_LOCATION']}/datasets/"
    store += f"{DEMO_IDS['HEALTHCARE_DATASET']}/dicomStores/{DEMO_IDS['DICOM_STORE']}"
    on_store = {"operation": "import", "store": DEMO_IDS["DICOM_STORE"]}

    def total(name: str, tags: dict) -> int:
        return int(sum(v for t, v, _ in statsd.metrics(name) if tags.items() <= t.items()))

    # 1. metrics: every import counted once, the same instances as the runs' results say
    imported = []
    for run in client.runs(IMPORT, state="success"):
        if client.task_states(IMPORT, run["dag_run_id"]).get("import_dicom") == "success":
            imported.append(client.xcom(IMPORT, run["dag_run_id"], "import_dicom"))
    assert len(imported) >= 5, imported  # the three backfilled nights and two runs by hand
    assert total("dicom.operation.instances_succeeded", on_store) == sum(r["success"] for r in imported)
    assert total("dicom.operation.instances_failed", on_store) == sum(r["failure"] for r in imported)
    assert total("dicom.operation.finished", on_store) >= len(imported)
    assert all(kind == "ms" for _, _, kind in statsd.metrics("dicom.operation.duration"))
    assert total("dicom.operation.duration", on_store) > 0 and total("dicom.operation.polls", on_store) >= len(imported)
    exports = [
        client.xcom(dag_id, run["dag_run_id"], "export_dicom")
        for dag_id in (EXPORT, FILTERED)
        for run in client.runs(dag_id, state="success")
        if client.task_states(dag_id, run["dag_run_id"]).get("export_dicom") == "success"
    ]
    on_export = {"operation": "export", "store": DEMO_IDS["DICOM_STORE"]}
    assert total("dicom.operation.instances_succeeded", on_export) == sum(r["success"] for r in exports) >= 9 + 4

    # 2. a failed night: the night of day 1 with no failure allowed (it has one bad file); its counts are recorded,
    #    its lineage has them, and the on-call address is told, with the night and the link
    #    The local API is slowed to 2 s an instance, so the task's log shows the progress with its predicted end.
    before = len(statsd.lines)
    settings = f"{stack.stack_env()['HEALTHCARE_API_ENDPOINT']}/admin/settings"
    requests.post(settings, json={"latency_s": 2.0}, timeout=30).raise_for_status()
    try:
        night = client.trigger(IMPORT, {}, logical_date=f"{DAYS[1]}T07:00:00Z")  # the night of day 1, as in 1c
        assert client.wait_run(IMPORT, night["dag_run_id"])["state"] == "failed"
    finally:
        requests.post(settings, json={"latency_s": stack.latency}, timeout=30).raise_for_status()
    assert client.task_states(IMPORT, night["dag_run_id"])["import_dicom"] == "failed"
    progress = re.findall(
        r"Operation \S+: (\d+)% done \((\d+) succeeded, (\d+) failed, (\d+) pending\); "
        r"predicted end \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in \d+ s\)",
        task_log_text(stack, IMPORT, night["dag_run_id"], "import_dicom"),
    )
    assert progress and all(0 < int(share) < 100 and int(pending) > 0 for share, _, _, pending in progress), progress
    after = [line for line in statsd.lines[before:] if "dicom.operation.instances_" in line]
    assert sorted(after) == sorted(
        [
            f"airflow.dicom.operation.instances_succeeded,operation=import,store={DEMO_IDS['DICOM_STORE']}:3|c",
            f"airflow.dicom.operation.instances_failed,operation=import,store={DEMO_IDS['DICOM_STORE']}:1|c",
        ]
    ), after
    failed_mail = wait_until(
        "the failed night's alert",
        lambda: [m for m in smtp.messages if m["Subject"] == f"[Airflow] {IMPORT}: night {DAYS[0]} failed"],
    )
    body = failed_mail[0].get_body().get_content()
    assert failed_mail[0]["To"] == ALERT_TO and f"Run: {night['dag_run_id']}" in body
    assert f"{client.base}/dags/{IMPORT}/runs/" in body
    assert requests.utils.quote(night["dag_run_id"], safe="") in body

    # 3. the scheduled night was late from its start: one deadline alert, for it only (a backfill or a run by hand
    #    starts past its night's deadline, and is not watched). A night scheduled after midnight UTC, while this
    #    test ran, is not due yet.
    due = [
        r
        for r in client.runs(IMPORT, run_type="scheduled")
        if dt.datetime.fromisoformat(r["data_interval_end"]) + dt.timedelta(minutes=1) < dt.datetime.now(dt.UTC)
    ]
    assert len(due) == 1, due
    late = wait_until("the deadline alert", lambda: [m for m in smtp.messages if "not finished by" in m["Subject"]])
    assert len(late) == 1, [m["Subject"] for m in late]
    day = due[0]["data_interval_start"][:10]
    assert late[0]["Subject"] == f"[Airflow] {IMPORT}: night {day} not finished by {DEADLINE}"
    assert due[0]["dag_run_id"] in late[0].get_body().get_content()

    # 4. lineage: a night read its day folder into the store, with its counts; the filtered export read the store
    #    and its filter file into the export prefix; the provider's BigQuery-to-GCS step wrote that file's shards
    def completes(job: str) -> list[dict]:
        return [e for e in lineage.events if e["job"]["name"] == job and e["eventType"] in ("COMPLETE", "FAIL")]

    nights = wait_until("the import's lineage", lambda: completes(f"{IMPORT}.import_dicom"))
    source = (f"gs://{DEMO_IDS['SOURCE_BUCKET']}", f"incoming/{DAYS[0]}")
    day1 = [e for e in nights if [(i["namespace"], i["name"]) for i in e["inputs"]] == [source]]
    assert day1, [e["inputs"] for e in nights]
    for event in day1:  # the backfilled night, the run of that night started by hand, the failed night
        assert [(o["namespace"], o["name"]) for o in event["outputs"]] == [("healthcare", store)]
        assert event["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 3
        counts = event["run"]["facets"]["dicomOperation"]
        assert (counts["operationKind"], counts["succeeded"], counts["failed"]) == ("import", 3, 1)
    assert "FAIL" in {e["eventType"] for e in day1}
    exports = completes(f"{FILTERED}.export_dicom")
    ct = [e for e in exports if any(o["name"] == "exports/e2e-ct" for o in e["outputs"])]
    assert len(ct) == 1, [e["outputs"] for e in exports]
    assert ct[0]["outputs"][0]["namespace"] == f"gs://{DEMO_IDS['EXPORT_BUCKET']}"
    assert ct[0]["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] == 4
    inputs = {(i["namespace"], i["name"]) for i in ct[0]["inputs"]}
    filter_files = {name for ns, name in inputs if ns == f"gs://{DEMO_IDS['EXPORT_BUCKET']}"}
    assert ("healthcare", store) in inputs and len(filter_files) == 1, inputs
    extracts = [o["name"] for e in completes(f"{FILTERED}.extract_filter") for o in e["outputs"]]
    # the provider's extract wrote the shards under filters/<run>/ (its dataset: that folder); compose_filter, a
    # Python task with no lineage of its own, joined them into filters/<run>.txt
    assert {name.removesuffix(".txt") for name in filter_files} <= set(extracts), (filter_files, extracts)

    # 5. no patient data in any metric, lineage event or alert; the run given PatientIDs shows only their key
    phi = {f"P-00{n}" for n in range(1, 7)} | {"Synthetic^Patient", "Synthetic Patient"}
    for what, text in (
        ("a metric", "\n".join(statsd.lines)),
        ("a lineage event", json.dumps(lineage.events)),
        ("an alert", "\n".join(m.as_string() for m in smtp.messages)),
    ):
        assert not [p for p in phi if p in text], f"patient data in {what}"
    confs = [
        facet["dagRun"]["conf"]
        for e in lineage.events
        for facet in e["run"].get("facets", {}).values()
        if isinstance(facet, dict) and isinstance(facet.get("dagRun"), dict) and facet["dagRun"].get("conf")
    ]
    assert {"patient_ids": "***", "granularity": "***"} in confs, confs[:5]


def assert_no_phi(stack, client, dag_id: str, run_id: str, patient_ids: set[str]) -> None:
    """Grep every log file of the deployment, and the run's rendered fields and XComs, for patient data."""
    phi = {*patient_ids, "Synthetic^Patient", "Synthetic Patient"}
    for path in (stack.dir / "airflow" / "logs").rglob("*.log"):
        text = path.read_text(errors="replace")
        assert not [p for p in phi if p in text], f"patient data in {path}"
    tis = client.ok("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    assert any(ti.get("rendered_fields") for ti in tis), "the rendered fields were read"
    for ti in tis:
        rendered = json.dumps(ti.get("rendered_fields") or {})
        assert not [p for p in phi if p in rendered], f"patient data in the rendered fields of {ti['task_id']}"
    for event in asset_events(client, dag_id, run_id):
        assert not [p for p in phi if p in json.dumps(event)], f"patient data in the asset event {event['uri']}"
    xcoms = client.ok("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/~/xcomEntries", params={"limit": 100})
    for entry in xcoms["xcom_entries"]:
        value = client.xcom(dag_id, run_id, entry["task_id"], entry["key"])
        assert not [p for p in phi if p in json.dumps(value)], f"patient data in XCom {entry['task_id']}.{entry['key']}"


def asset_events(client, dag_id: str, run_id: str) -> list[dict]:
    """The asset events a run emitted, through the REST API."""
    events = client.ok("GET", "/assets/events", params={"source_dag_id": dag_id, "limit": 100})["asset_events"]
    return [e for e in events if e["source_run_id"] == run_id]


def run_logs(stack, dag_id: str, run_id: str) -> list:
    return sorted((stack.dir / "airflow" / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}").rglob("*.log"))


def refused_by_check_params(stack, client, conf: dict, *phrases: str) -> None:
    """A filtered export run with ``conf`` fails in its first task, once, whose log says each of ``phrases``;
    nothing after it runs."""
    run = client.trigger(FILTERED, conf)
    assert client.wait_run(FILTERED, run["dag_run_id"])["state"] == "failed"
    states = client.task_states(FILTERED, run["dag_run_id"])
    assert states["check_params"] == "failed" and states["export_dicom"] == "upstream_failed", states
    assert client.task_instance(FILTERED, run["dag_run_id"], "check_params")["try_number"] == 1
    log = task_log_text(stack, FILTERED, run["dag_run_id"], "check_params")
    assert all(phrase in log for phrase in phrases), log[-2000:]


def task_log_text(stack, dag_id: str, run_id: str, task_id: str) -> str:
    paths = [p for p in run_logs(stack, dag_id, run_id) if f"task_id={task_id}" in str(p)]
    return "\n".join(p.read_text(errors="replace") for p in paths)


def is_error(line: str) -> bool:
    """A task log line at level error or above, in the JSON lines Airflow 3 writes or in plain text."""
    try:
        record = json.loads(line)
    except ValueError:
        return " ERROR " in line or "[error" in line
    return isinstance(record, dict) and str(record.get("level", "")).lower() in ("error", "critical")
