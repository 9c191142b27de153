"""Reliability drills: a real Airflow on PostgreSQL with the CeleryExecutor (Redis, two workers, two
triggerers) and the local stack, driven through the REST API.

Each drill breaks something the way production breaks (API faults, a killed triggerer or
scheduler, the Healthcare API restarting, a user acting on a deferred task) and checks the
failure contract: every run ends as documented, each task started exactly the operations the
contract allows, and for every import imported + failed = objects matching the pattern. Each
drill prints its figures. Every drill has its own store, so the local API's per-store operation
list counts exactly that drill's operations.
"""

from __future__ import annotations

import os
import signal
import time
import zlib
from pathlib import Path

import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from scripts.airflow_client import AirflowClient
from scripts.dicom_samples import make_study
from scripts.stack import (
    AIRFLOW_LOCAL_PASSWORD,
    AIRFLOW_USERNAME,
    DEMO_IDS,
    Stack,
    _group_members,
    one_night_catchup_start,
)
from tests.conftest import free_port_base

pytestmark = pytest.mark.drills

IMPORT, FILTERED, MAPPED = "dicom_nightly_import", "dicom_filtered_export", "mapped_import"
FIXTURES = Path(__file__).resolve().parents[1] / "dag_fixtures"
BUCKET = "dicom-drills"
CATCHUP_START = one_night_catchup_start()
STORE_PATH = (
    f"projects/{DEMO_IDS['GCP_PROJECT']}/locations/{DEMO_IDS['HEALTHCARE_LOCATION']}/datasets/"
    f"{DEMO_IDS['HEALTHCARE_DATASET']}/dicomStores/"
)


@pytest.fixture(scope="module")
def drill_env(tmp_path_factory):
    saved = dict(os.environ)
    os.environ["DICOM_IMPORT_START_DATE"] = CATCHUP_START
    stack = Stack(
        tmp_path_factory.mktemp("drills"),
        free_port_base(),
        db="postgres",
        latency=0.3,
        executor="celery",
        extra_dag_folders=(FIXTURES,),
    )
    try:
        stack.start_stack()
        stack.start_airflow()
        env = stack.stack_env()
        os.environ["STORAGE_EMULATOR_HOST"] = env["STORAGE_EMULATOR_HOST"]
        gcs = storage.Client(project=DEMO_IDS["GCP_PROJECT"], credentials=AnonymousCredentials())
        for name in (BUCKET, DEMO_IDS["SOURCE_BUCKET"], DEMO_IDS["EXPORT_BUCKET"]):
            gcs.create_bucket(name)
        client = AirflowClient(f"http://127.0.0.1:{stack.ports.airflow}", AIRFLOW_USERNAME, AIRFLOW_LOCAL_PASSWORD)
        client.wait_for_dags([IMPORT, FILTERED, MAPPED])
        for dag_id in (IMPORT, FILTERED, MAPPED):
            client.unpause(dag_id)
        # Catchup's own night (an empty folder of the default store) must not overlap the drills: a
        # concurrent import in the same dataset would make an ambiguous submission truly ambiguous.
        client.wait_runs(IMPORT, 1, run_type="scheduled")
        yield stack, client, gcs, env["HEALTHCARE_API_ENDPOINT"]
    finally:
        stack.stop_airflow()
        stack.stop_stack()
        os.environ.clear()
        os.environ.update(saved)


def seed_nights(gcs: storage.Client, drill: str, days: list[str], good: int = 3, bad: int = 1) -> dict[str, int]:
    """``good`` DICOM files and ``bad`` non-DICOM ``.dcm`` files per night, plus a ``.txt`` the pattern skips.

    Returns the number of objects each night's pattern (``**.dcm``) matches.
    """
    bucket = gcs.bucket(BUCKET)
    matched = {}
    for n, day in enumerate(days):
        study = make_study(
            "CT",
            day.replace("-", ""),
            per_series=good,
            patient_id=f"{drill}-{n}",
            seed=zlib.crc32(drill.encode()) % 1000 + n,
            deterministic=True,
        )
        for inst in study:
            bucket.blob(f"{drill}/{day}/{inst.sop}.dcm").upload_from_string(inst.data)
        for i in range(bad):
            bucket.blob(f"{drill}/{day}/broken-{i}.dcm").upload_from_string(b"not a DICOM file")
        bucket.blob(f"{drill}/{day}/readme.txt").upload_from_string(b"not matched")
        matched[day] = good + bad
    return matched


def night_conf(drill: str) -> dict:
    return {"dicom_store_id": drill, "source_bucket": BUCKET, "source_prefix": drill, "max_failure_ratio": 0.5}


def report(capsys: pytest.CaptureFixture, *lines: str) -> None:
    """Print a drill's figures in the test run's output, even when output is captured (``make test``)."""
    with capsys.disabled():
        print(*lines, sep="\n")


def operations(endpoint: str, store_id: str) -> list[dict]:
    resp = requests.get(f"{endpoint}/admin/operations", params={"store": STORE_PATH + store_id}, timeout=30)
    resp.raise_for_status()
    return resp.json()["operations"]


def imports_of(ops: list[dict]) -> list[dict]:
    return [o for o in ops if o["method"] == "ImportDicomData"]


def check_accounting(client: AirflowClient, runs: list[dict], matched: dict[str, int]) -> list[str]:
    """Every run succeeded and its import counted every matching object; returns printable lines.

    A backfill run imports its data interval's day; a drill's single manual run, its only seeded day.
    """
    lines = []
    for run in sorted(runs, key=lambda r: r["data_interval_start"]):
        assert run["state"] == "success", (run["dag_run_id"], client.task_states(IMPORT, run["dag_run_id"]))
        day = run["data_interval_start"][:10] if len(matched) > 1 else next(iter(matched))
        result = client.xcom(IMPORT, run["dag_run_id"], "import_dicom")
        assert result["success"] + result["failure"] == matched[day], (day, result)
        lines.append(f"  {day}: matched {matched[day]}, imported {result['success']} + failed {result['failure']}")
    return lines


def backfill_and_wait(
    client: AirflowClient, drill: str, days: list[str], timeout: float = 400, during=None
) -> list[dict]:
    client.backfill(IMPORT, f"{days[0]}T00:00:00Z", f"{days[-1]}T00:00:00Z", night_conf(drill), max_active_runs=1)
    if during:
        during()
    deadline = time.time() + timeout
    while time.time() < deadline:
        runs = [r for r in client.runs(IMPORT, run_type="backfill") if r["conf"].get("dicom_store_id") == drill]
        if len(runs) == len(days) and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(2)
    raise TimeoutError(f"{drill}: backfill not done: {[(r['dag_run_id'], r['state']) for r in runs]}")


def set_latency(endpoint: str, seconds: float) -> None:
    """The local Healthcare API's delay per instance an operation processes."""
    requests.post(f"{endpoint}/admin/settings", json={"latency_s": seconds}, timeout=30).raise_for_status()


def operation_polls(endpoint: str) -> int:
    return requests.get(f"{endpoint}/admin/stats", timeout=30).json()["requests"].get("operations.get", 0)


def deferred_import(
    client: AirflowClient, gcs: storage.Client, endpoint: str, drill: str, hour: int, good: int = 30, bad: int = 0
) -> tuple[str, dict[str, int]]:
    """A manual run of the nightly import on its own folder, waited for until its trigger polls in the triggerer.

    Deferred is not enough: a user action before a triggerer has picked the trigger up finds no trigger
    to call ``on_kill`` on (the README's contract says so).

    Its logical date must be after the DAG's start date (else Airflow creates no task instances): each
    drill takes its own hour of the catchup's night, after it. Returns the run id and what the folder's pattern
    matches.
    """
    day = f"2026-11-{10 + hour:02d}"
    matched = seed_nights(gcs, drill, [day], good=good, bad=bad)
    conf = {**night_conf(drill), "gcs_uri": f"gs://{BUCKET}/{drill}/{day}/**.dcm"}
    run_id = f"drill-{drill}"
    client.trigger(IMPORT, conf, run_id=run_id, logical_date=f"{CATCHUP_START}T{hour:02d}:00:00Z")
    client.wait_task_state(IMPORT, run_id, "import_dicom", ("deferred",))
    polls, deadline = operation_polls(endpoint), time.time() + 60
    while operation_polls(endpoint) == polls and time.time() < deadline:
        time.sleep(0.2)
    return run_id, matched


def test_drill_api_faults_during_backfill_and_filtered_export(drill_env, capsys):
    """20 % of Healthcare API calls answer 429/503, a fifth of submissions only after the server acted."""
    stack, client, gcs, endpoint = drill_env
    drill, days = "faults", ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    matched = seed_nights(gcs, drill, days)
    requests.post(
        f"{endpoint}/admin/faults",
        timeout=30,
        json={
            "seed": 16,
            "*": {"rate": 0.2, "codes": [429, 503]},
            "dicomStores.import": {"rate": 0.2, "code": 503, "after": True},
            "dicomStores.export": {"rate": 0.2, "code": 503, "after": True},
        },
    ).raise_for_status()
    try:
        runs = backfill_and_wait(client, drill, days)
        lines = check_accounting(client, runs, matched)
        export = client.trigger(
            FILTERED,
            {
                "dicom_store_id": drill,
                "modalities": ["CT"],
                "destination_prefix": f"gs://{DEMO_IDS['EXPORT_BUCKET']}/drill-faults",
            },
        )
        exported = client.wait_run(FILTERED, export["dag_run_id"], timeout=400)
        injected = requests.get(f"{endpoint}/admin/stats", timeout=30).json()["injected"]
    finally:
        requests.post(f"{endpoint}/admin/faults", json={}, timeout=30)
    assert exported["state"] == "success", client.task_states(FILTERED, export["dag_run_id"])
    ops = operations(endpoint, drill)
    exports = [o for o in ops if o["method"] == "ExportDicomData"]
    report(
        capsys,
        f"\n[drill faults] {len(runs)} nights + 1 filtered export, {injected} faults injected; "
        f"operations: {len(imports_of(ops))} imports for {len(days)} import tasks, {len(exports)} exports "
        f"for 2 export tasks",
        *lines,
    )
    assert injected > 0
    assert len(imports_of(ops)) == len(days) and len(exports) == 2


def trigger_holder(stack: Stack, run_id: str, among: tuple[str, ...]) -> str | None:
    """The triggerer running the run's import trigger: a process of its group holds the trigger's log file open
    (``…/run_id=<run>/task_id=import_dicom/attempt=N.log.trigger.<triggerer job id>.log``)."""
    marker = f"/run_id={run_id}/task_id=import_dicom/"
    for name in among:
        pid = stack.pid(name)
        for member in _group_members({pid} if pid else set()):
            try:
                fds = list(Path(f"/proc/{member}/fd").iterdir())
            except OSError:
                continue
            for fd in fds:
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if marker in target and ".log.trigger." in target:
                    return name
    return None


TRIGGERERS = ("triggerer", "triggerer-2")


def holder_and_survivor(stack: Stack, run_id: str) -> tuple[str, str]:
    """The triggerer that runs the run's import trigger, and the other one."""
    holder, deadline = None, time.time() + 20
    while holder is None and time.time() < deadline:
        holder = trigger_holder(stack, run_id, TRIGGERERS)
        time.sleep(0.2)
    assert holder, "one triggerer holds the deferred import's trigger log open"
    return holder, next(t for t in TRIGGERERS if t != holder)


def test_drill_one_of_two_triggerers_killed_while_an_import_is_deferred(drill_env, capsys):
    """Triggerer HA: the triggerer running a deferred import's trigger dies; the other takes the trigger over once
    the dead one's heartbeat is older than triggerer_health_check_threshold, and the import completes on its one
    operation, never cancelled (a triggerer that dies is not a user's kill). One import at a time: the import task
    has max_active_tis_per_dag=1."""
    stack, client, gcs, endpoint = drill_env
    drill = "triggerer-ha"
    run_id, matched = deferred_import(client, gcs, endpoint, drill, 1, good=80)
    holder, survivor = holder_and_survivor(stack, run_id)
    polls_before = operation_polls(endpoint)
    stack.stop(holder, signal.SIGKILL)
    killed_at = time.time()
    run = client.wait_run(IMPORT, run_id, timeout=300)
    done_s = time.time() - killed_at
    ops = imports_of(operations(endpoint, drill))
    lines = check_accounting(client, [run], matched)
    logs = stack.dir / "airflow" / "logs" / f"dag_id={IMPORT}" / f"run_id={run_id}" / "task_id=import_dicom"
    trigger_logs = sorted(p.name for p in logs.glob("attempt=1.log.trigger.*.log"))
    stack.start_airflow()  # the killed triggerer comes back for the drills that follow
    report(
        capsys,
        f"\n[drill triggerer HA] {holder} killed with SIGKILL while the import was deferred; {survivor} took the "
        f"trigger over; run {run['state']} {done_s:.0f}s after the kill; {len(ops)} import operation(s), "
        f"cancelled: {[o['cancelRequested'] for o in ops]}; {operation_polls(endpoint) - polls_before} polls after "
        f"the kill; trigger logs: {trigger_logs}",
        *lines,
    )
    assert len(ops) == 1 and not ops[0]["cancelRequested"], ops
    assert len(trigger_logs) == 2, "the trigger ran in one triggerer, then in the other"


def test_drill_healthcare_api_restarts_while_an_import_runs(drill_env, capsys):
    """The operation ends ABORTED; Airflow retries the task, which submits again; nothing is lost."""
    stack, client, gcs, endpoint = drill_env
    drill = "restart"
    run_id, matched = deferred_import(client, gcs, endpoint, drill, 2, bad=2)
    stack.stop("healthcare", signal.SIGKILL)
    time.sleep(2)
    stack.start_stack()
    run = client.wait_run(IMPORT, run_id, timeout=400)
    ops = imports_of(operations(endpoint, drill))
    ti = client.task_instance(IMPORT, run_id, "import_dicom")
    lines = check_accounting(client, [run], matched)
    report(
        capsys,
        f"\n[drill api restart] run {run['state']} after {ti['try_number']} tries; operations: "
        f"{[(o['error'] or {}).get('code', 0) for o in ops]} (10 = ABORTED by the restart)",
        *lines,
    )
    assert [(o["error"] or {}).get("code", 0) for o in ops] == [10, 3] and ti["try_number"] == 2  # 3: 2 bad files


def test_drill_scheduler_killed_twice_during_a_backfill(drill_env, capsys):
    stack, client, gcs, endpoint = drill_env
    drill, days = "scheduler", ["2026-11-05", "2026-11-06", "2026-11-07"]
    matched = seed_nights(gcs, drill, days)
    kills = []

    def kill_twice() -> None:
        for wait in (6, 12):
            time.sleep(wait)
            stack.stop("scheduler", signal.SIGKILL)
            kills.append(time.strftime("%H:%M:%S"))
            time.sleep(2)
            stack.start_airflow()

    runs = backfill_and_wait(client, drill, days, during=kill_twice)
    lines = check_accounting(client, runs, matched)
    ops = imports_of(operations(endpoint, drill))
    tries = [client.task_instance(IMPORT, r["dag_run_id"], "import_dicom")["try_number"] for r in runs]
    report(
        capsys,
        f"\n[drill scheduler] killed with SIGKILL at {kills}; {len(runs)} nights, import tries {tries}, "
        f"{len(ops)} import operations",
        *lines,
    )
    assert len(runs) == len(days) and len(ops) == len(days)


def settled_imports(endpoint: str, store_id: str, timeout: float = 60) -> list[dict]:
    """The store's import operations once all are done: ``on_kill`` runs in the triggerer after the run ends."""
    deadline = time.time() + timeout
    while True:
        ops = imports_of(operations(endpoint, store_id))
        if all(o["done"] for o in ops) or time.time() > deadline:
            return ops
        time.sleep(0.5)


def test_drill_user_actions_on_a_deferred_import(drill_env, capsys):
    """Mark failed cancels; mark success leaves it running to completion; clear cancels and submits anew."""
    stack, client, gcs, endpoint = drill_env
    outcomes = {}
    for n, action in enumerate(("failed", "success", "clear")):
        drill = f"user-{action}"
        run_id, _ = deferred_import(client, gcs, endpoint, drill, 3 + n)
        if action == "clear":
            client.clear_task(IMPORT, run_id, "import_dicom")
        else:
            client.set_task_state(IMPORT, run_id, "import_dicom", action)
        client.wait_run(IMPORT, run_id, timeout=300)
        state = client.task_instance(IMPORT, run_id, "import_dicom")["state"]
        outcomes[action] = (state, [(o["error"] or {}).get("code", 0) for o in settled_imports(endpoint, drill)])
        if action == "success":  # no counters to check, said in words rather than a TypeError and 3 tries
            assert client.task_states(IMPORT, run_id)["verify"] == "skipped"
    report(
        capsys, f"\n[drill user actions] import task state and each operation's end code (1 = CANCELLED): {outcomes}"
    )
    assert outcomes == {"failed": ("failed", [1]), "success": ("success", [0]), "clear": ("success", [1, 0])}


def test_drill_a_stalled_triggerer_hands_its_trigger_over_without_cancelling(drill_env, capsys):
    """The triggerer running a deferred import's trigger stalls (SIGSTOP, as a blocked event loop or a lost database
    connection looks to Airflow) until the other takes the trigger over, then resumes (SIGCONT). On resuming,
    Airflow 3.3 cancels the trigger it no longer owns and calls its on_kill: the task is still deferred, so the
    operation is left running. One operation, never cancelled; the night succeeds."""
    stack, client, gcs, endpoint = drill_env
    drill = "triggerer-stall"
    # slow enough that the import still runs when the trigger moves and when the stalled triggerer resumes
    set_latency(endpoint, 4.0)
    try:
        run_id, matched = deferred_import(client, gcs, endpoint, drill, 6, good=80)
    finally:
        set_latency(endpoint, 0.3)
    holder, survivor = holder_and_survivor(stack, run_id)
    logs = stack.dir / "airflow" / "logs" / f"dag_id={IMPORT}" / f"run_id={run_id}" / "task_id=import_dicom"
    stalled = sorted(_group_members({stack.pid(holder)}))
    for pid in stalled:
        os.kill(pid, signal.SIGSTOP)
    stopped_at = time.time()
    try:
        deadline = time.time() + 120
        while time.time() < deadline and trigger_holder(stack, run_id, (survivor,)) is None:
            time.sleep(0.5)
        handed_over_s = time.time() - stopped_at
        running_at_handover = not imports_of(operations(endpoint, drill))[0]["done"]
    finally:
        for pid in stalled:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    run = client.wait_run(IMPORT, run_id, timeout=300)
    ops = settled_imports(endpoint, drill)
    lines = check_accounting(client, [run], matched)
    trigger_logs = sorted(p.name for p in logs.glob("attempt=1.log.trigger.*.log"))
    report(
        capsys,
        f"\n[drill triggerer stall] {holder} stopped with SIGSTOP; {survivor} held the trigger after "
        f"{handed_over_s:.0f}s, the import still running: {running_at_handover}; SIGCONT; run {run['state']}; "
        f"{len(ops)} import operation(s), cancelled: "
        f"{[o['cancelRequested'] for o in ops]}; trigger logs: {trigger_logs}",
        *lines,
    )
    assert running_at_handover, "the drill must move the trigger while the import runs"
    assert len(ops) == 1 and not ops[0]["cancelRequested"], ops
    assert len(trigger_logs) == 2, "the trigger ran in one triggerer, then in the other"


def test_drill_a_connection_dropped_after_the_import_was_accepted(drill_env, capsys):
    """The local API starts the import, then closes the connection without answering. The task's submission is
    sent once (no transport resend), looked up, and the one operation adopted: the night succeeds on it."""
    stack, client, gcs, endpoint = drill_env
    drill = "dropped"
    requests.post(
        f"{endpoint}/admin/faults", json={"dicomStores.import": {"rate": 1.0, "drop": True}}, timeout=30
    ).raise_for_status()
    try:
        run_id, matched = deferred_import(client, gcs, endpoint, drill, 7, good=5, bad=1)
    finally:
        requests.post(f"{endpoint}/admin/faults", json={}, timeout=30)
    run = client.wait_run(IMPORT, run_id, timeout=300)
    ops = imports_of(operations(endpoint, drill))
    lines = check_accounting(client, [run], matched)
    ti = client.task_instance(IMPORT, run_id, "import_dicom")
    report(
        capsys,
        f"\n[drill dropped connection] every import POST answered by a closed connection; run {run['state']} on "
        f"try {ti['try_number']}; {len(ops)} import operation(s)",
        *lines,
    )
    assert len(ops) == 1 and ti["try_number"] == 1


def test_drill_user_actions_on_mapped_deferred_imports(drill_env, capsys):
    """Two mapped imports wait in the triggerer; the user marks the first success and the second failed. Airflow
    keys a mapped instance's state by its map index: each trigger must read its own instance's state (a lookup
    that fails is never taken for a kill), so the first operation runs to completion and only the second is
    cancelled."""
    stack, client, gcs, endpoint = drill_env
    drill, days = "mapped", ["2026-11-24", "2026-11-25"]
    seed_nights(gcs, drill, days, good=40, bad=0)
    uris = [f"gs://{BUCKET}/{drill}/{day}/**.dcm" for day in days]
    # Slow enough (80 s an import) that neither import ends before the user's marks reach the triggerer on a
    # loaded CI machine; once the second is seen cancelled, back to normal speed so the first completes soon.
    set_latency(endpoint, 2.0)
    try:
        run_id = client.trigger(MAPPED, {"dicom_store_id": drill, "gcs_uris": uris}, run_id=f"drill-{drill}")[
            "dag_run_id"
        ]
        for index in (0, 1):
            client.wait_task_state(MAPPED, run_id, "import_dicom", ("deferred",), map_index=index)
        polls, deadline = operation_polls(endpoint), time.time() + 60
        while operation_polls(endpoint) < polls + 2 and time.time() < deadline:
            time.sleep(0.2)
        client.set_task_state(MAPPED, run_id, "import_dicom", "success", map_index=0)
        client.set_task_state(MAPPED, run_id, "import_dicom", "failed", map_index=1)
        deadline = time.time() + 60
        while time.time() < deadline and not any(o["cancelRequested"] for o in imports_of(operations(endpoint, drill))):
            time.sleep(0.5)
    finally:
        set_latency(endpoint, 0.3)
    run = client.wait_run(MAPPED, run_id, timeout=300)
    by_source = {o["request"]["gcsSource"]["uri"]: o for o in settled_imports(endpoint, drill)}
    ends = {uri: (by_source[uri]["error"] or {}).get("code", 0) for uri in uris}
    report(
        capsys,
        f"\n[drill mapped user actions] map index 0 marked success, 1 marked failed, both deferred; run "
        f"{run['state']}; each operation's end code (1 = CANCELLED): {list(ends.values())}",
    )
    assert len(by_source) == 2 and all(o["done"] for o in by_source.values()), by_source
    assert list(ends.values()) == [0, 1]
