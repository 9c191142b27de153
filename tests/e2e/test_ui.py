"""The Airflow UI as a user meets it, in a real browser: Debian's Chromium, driven by Playwright.

Playwright's own browser download is not used (``playwright install`` fetches a build of its own); the test
points Playwright at the system Chromium with ``executable_path``. Runs are checked through the REST API,
and screenshots of each step are kept under the test's temporary folder.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from scripts.demo_data import DAYS, seed
from scripts.stack import AIRFLOW_LOCAL_PASSWORD, AIRFLOW_USERNAME, DEMO_IDS
from tests.e2e.conftest import running_deployment

IMPORT, FILTERED, EXPORT = "dicom_nightly_import", "dicom_filtered_export", "dicom_export"
DEID = "dicom_deidentified_export"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    with running_deployment(tmp_path_factory.mktemp("ui"), "postgres", code="plugins-folder") as (stack, client, gcs):
        seeded = seed(gcs, DEMO_IDS["SOURCE_BUCKET"])
        gcs.create_bucket(DEMO_IDS["EXPORT_BUCKET"])
        client.wait_for_dags([IMPORT, FILTERED, EXPORT, DEID])
        yield client, gcs, seeded, stack


@pytest.fixture
def page(ui, tmp_path):
    from playwright.sync_api import sync_playwright

    client, *_ = ui
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        page.goto(client.base + "/")
        page.get_by_label("Username").fill(AIRFLOW_USERNAME)
        page.get_by_label("Password").fill(AIRFLOW_LOCAL_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(client.base + "/")
        yield page
        browser.close()


def open_trigger_dialog(page, base: str, dag_id: str):
    page.goto(f"{base}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.wait_for()
    return dialog


def set_configuration_json(page, dialog, conf: dict) -> None:
    """Type into the Configuration JSON editor, as a user pasting a conf would (no auto-closed brackets)."""
    if not dialog.locator(".monaco-editor").first.is_visible():
        dialog.get_by_text("Advanced Options").click()
    dialog.locator(".monaco-editor").first.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(json.dumps(conf))


def pick_date(page, dialog, label: str, day: str) -> None:
    """The backfill dialog's date-and-time picker: the date as YYYY/MM/DD, midnight UTC."""
    dialog.get_by_text(label, exact=True).locator("xpath=..").get_by_text("Select date and time").click()
    page.get_by_role("textbox", name=label).fill(day.replace("-", "/"))
    page.locator("input[placeholder='HH:mm']:visible").fill("00:00")
    page.keyboard.press("Escape")
    page.locator("input[placeholder='HH:mm']:visible").wait_for(state="detached")


def wait_until(predicate, timeout: float = 300, every: float = 2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(predicate.__doc__ or "condition not met")


def test_every_trigger_form_can_be_submitted_with_its_defaults(ui, page, tmp_path):
    client, *_ = ui
    for dag_id in (IMPORT, FILTERED, EXPORT, DEID):
        dialog = open_trigger_dialog(page, client.base, dag_id)
        page.screenshot(path=str(tmp_path / f"{dag_id}-form.png"))
        assert dialog.get_by_role("button", name="Trigger").is_enabled(), dag_id
        assert dialog.get_by_text("This field is required").count() == 0, dag_id
        if dag_id == DEID:  # the profiles and text modes show their readable names
            assert dialog.get_by_text("DICOM Basic Profile (PS3.15 Annex E)", exact=False).count() >= 1
        page.keyboard.press("Escape")


def test_bad_input_is_refused_with_a_readable_message(ui, page, tmp_path):
    client, *_ = ui
    refused = {
        "modalities": ({"modalities": ["ct"]}, "Invalid input for param modalities: 'ct' is not one of"),
        "date": ({"study_date_from": "2026-13-45"}, "Invalid input for param study_date_from: '2026-13-45' is not a"),
    }
    before = len(client.runs(FILTERED))
    for name, (conf, message) in refused.items():
        dialog = open_trigger_dialog(page, client.base, FILTERED)
        set_configuration_json(page, dialog, conf)
        dialog.get_by_role("button", name="Trigger").click()
        dialog.get_by_text(message).wait_for()
        page.screenshot(path=str(tmp_path / f"refused-{name}.png"))
        page.keyboard.press("Escape")
    assert len(client.runs(FILTERED)) == before, "a refused trigger created no run"

    before = len(client.runs(EXPORT))
    dialog = open_trigger_dialog(page, client.base, EXPORT)
    dialog.locator("input[name=element_max_failures]").fill("1.5")  # a count: not silently made 1
    dialog.get_by_role("button", name="Trigger").click()
    dialog.get_by_text("Invalid input for param max_failures: 1.5 is not of type").wait_for()
    page.screenshot(path=str(tmp_path / "refused-fraction.png"))
    assert len(client.runs(EXPORT)) == before


def test_backfill_from_the_dialog_then_a_filtered_export_from_the_form(ui, page, tmp_path):
    """Two nights, up to ten runs at once, from the backfill dialog; then CT of those two days, from the form."""
    client, gcs, seeded, stack = ui
    dialog = open_trigger_dialog(page, client.base, IMPORT)
    dialog.get_by_text("Backfill", exact=True).click()
    pick_date(page, dialog, "From", DAYS[0])
    pick_date(page, dialog, "To", DAYS[1])
    dialog.locator("input[name=max_active_runs]").fill("10")
    # Airflow 3.3.2's dialog sends the params only with this box ticked (README: "Backfills from the UI")
    dialog.get_by_text("Override parameters on existing runs").click()
    dialog.locator("input[name=element_max_failure_ratio]").fill("0.5")  # the demo nights hold bad files
    page.screenshot(path=str(tmp_path / "backfill-dialog.png"))
    dialog.get_by_role("button", name="Run Backfill").click()

    def backfill_done():
        """the two backfill runs finished"""
        runs = client.runs(IMPORT, run_type="backfill")
        return runs if len(runs) == 2 and all(r["state"] in ("success", "failed") for r in runs) else None

    try:
        runs = wait_until(backfill_done)
    except TimeoutError:
        states = {
            r["dag_run_id"]: (r["state"], client.task_states(IMPORT, r["dag_run_id"])) for r in client.runs(IMPORT)
        }
        logs = sorted((stack.dir / "airflow" / "logs").rglob("*wait_for_previous_run*/*.log"))
        tails = {str(p)[-90:]: p.read_text()[-1500:] for p in logs}
        raise AssertionError(f"backfill not finished: {states} {tails}") from None
    counts = {}
    for run in runs:
        assert run["state"] == "success", (run["conf"], client.task_states(IMPORT, run["dag_run_id"]))
        result = client.xcom(IMPORT, run["dag_run_id"], "import_dicom")
        counts[run["data_interval_start"][:10]] = (result["success"], result["failure"])
    assert counts == {day: seeded.expected[day] for day in DAYS[:2]}

    dialog = open_trigger_dialog(page, client.base, FILTERED)
    dialog.locator("#element_modalities").click()
    page.get_by_text("CT (Computed Tomography)", exact=True).click()
    dialog.get_by_text("Trigger Dag - dicom_filtered_export").click()  # closes the list, not the dialog
    dialog.locator("#element_study_date_from").fill(DAYS[0])
    dialog.locator("#element_study_date_to").fill(DAYS[1])
    page.screenshot(path=str(tmp_path / "filtered-export-form.png"))
    before = {r["dag_run_id"] for r in client.runs(FILTERED)}
    dialog.get_by_role("button", name="Trigger").click()

    def new_run():
        """the filtered export run started from the form"""
        return [r for r in client.runs(FILTERED) if r["dag_run_id"] not in before]

    run = wait_until(new_run, timeout=60)[0]
    assert run["conf"]["modalities"] == ["CT"] and run["conf"]["study_date_to"] == DAYS[1]
    done = client.wait_run(FILTERED, run["dag_run_id"])
    assert done["state"] == "success", client.task_states(FILTERED, run["dag_run_id"])
    result = client.xcom(FILTERED, run["dag_run_id"], "export_dicom")
    assert result["success"] == len(seeded.matching("CT", DAYS[0], DAYS[1])) == 4
    page.goto(f"{client.base}/dags/{FILTERED}/runs/{run['dag_run_id']}")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(tmp_path / "filtered-export-run.png"))
    assert Path(tmp_path / "filtered-export-run.png").stat().st_size > 0
